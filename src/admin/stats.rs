//! The daily statistics report (docs/contract.md section 1: `leafcache stats`, and
//! `GET /v1/stats`), read from the analytics counters of one day, and its
//! search quality part (docs/contract.md section 9), computed by [`super::quality`]
//! from the day's records, read a page at a time by [`super::pages`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bb8_redis::redis;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::dates;
use super::pages::Pages;
pub use super::quality::QueryCount;
use super::quality::{Quality, Search, Tally};
use crate::redis::RedisFailure;
use crate::redis::RedisPool;
use crate::redis::keys::{self, Prefix};
use crate::redis::pool::Command;

const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub date: String,
    pub total_searches: u64,
    /// All 24 hours, `00`..`23`.
    pub hourly: BTreeMap<String, u64>,
    pub intents: BTreeMap<String, u64>,
    pub top_products: Vec<ProductCount>,
    pub top_queries: Vec<QueryCount>,
    pub zero_result_queries: Vec<QueryCount>,
    pub cache: CacheCounts,
    /// Click-through, conversion, reformulation: how the searches served
    /// their users (the definitions are [`super::quality`]'s).
    pub quality: Quality,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductCount {
    pub id: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheCounts {
    pub hit: u64,
    pub miss: u64,
    pub bypass: u64,
    pub stale: u64,
    /// (hit + stale) / (hit + miss + stale); 0 when nothing was looked up.
    pub hit_ratio: f64,
}

impl CacheCounts {
    fn new(counts: &HashMap<String, i64>) -> CacheCounts {
        let get = |k: &str| counts.get(k).map_or(0, |n| (*n).max(0) as u64);
        let (hit, miss, bypass, stale) = (get("hit"), get("miss"), get("bypass"), get("stale"));
        let looked_up = hit + miss + stale;
        let hit_ratio = if looked_up == 0 {
            0.0
        } else {
            (hit + stale) as f64 / looked_up as f64
        };
        CacheCounts {
            hit,
            miss,
            bypass,
            stale,
            hit_ratio,
        }
    }
}

type Ranked = Vec<(String, f64)>;
type Counts = (
    HashMap<String, i64>,
    HashMap<String, i64>,
    Ranked,
    Ranked,
    Ranked,
    HashMap<String, i64>,
);

/// Reads the report of `day` (a day number, [`dates`]); `top` caps the
/// lists. The counters take one round trip; the quality part reads every
/// record of the day, a page at a time (about as fast as the export).
pub async fn read(
    redis: &RedisPool,
    prefix: &Prefix,
    day: u64,
    top: usize,
) -> Result<Stats, RedisFailure> {
    let date = &dates::format(day);
    let stop = top.max(1) as i64 - 1;
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL").arg(keys::searches_hourly(prefix, date));
    pipe.cmd("HGETALL").arg(keys::intent_stats(prefix, date));
    for key in [
        keys::products_popular(prefix, date),
        keys::queries_popular(prefix, date),
        keys::queries_zero(prefix, date),
    ] {
        pipe.cmd("ZREVRANGE")
            .arg(key)
            .arg(0)
            .arg(stop)
            .arg("WITHSCORES");
    }
    pipe.cmd("HGETALL").arg(keys::cache_stats(prefix, date));
    let (hourly, intents, products, queries, zero, cache): Counts = redis
        .query(Command::Pipe(&pipe), Instant::now() + DEADLINE)
        .await?;

    let count = |n: i64| n.max(0) as u64;
    let hourly: BTreeMap<String, u64> = (0..24)
        .map(|h| {
            let hour = format!("{h:02}");
            let n = hourly.get(&hour).copied().map_or(0, count);
            (hour, n)
        })
        .collect();
    let ranked = |list: Ranked| -> Vec<(String, u64)> {
        list.into_iter()
            .take(top)
            .map(|(m, score)| (m, score.max(0.0).round() as u64))
            .collect()
    };
    let queries_of = |list: Ranked| {
        ranked(list)
            .into_iter()
            .map(|(query, count)| QueryCount { query, count })
            .collect()
    };
    let quality = quality(redis, prefix, day, top).await?;
    Ok(Stats {
        date: date.to_owned(),
        total_searches: hourly.values().sum(),
        hourly,
        intents: intents.into_iter().map(|(k, n)| (k, count(n))).collect(),
        top_products: ranked(products)
            .into_iter()
            .map(|(id, count)| ProductCount { id, count })
            .collect(),
        top_queries: queries_of(queries),
        zero_result_queries: queries_of(zero),
        cache: CacheCounts::new(&cache),
        quality,
    })
}

/// The quality report of `day`, from its records: only each search's facts
/// are kept, one page of records at a time.
async fn quality(
    redis: &RedisPool,
    prefix: &Prefix,
    day: u64,
    top: usize,
) -> Result<Quality, RedisFailure> {
    let mut pages = Pages::new(redis.clone(), prefix.clone(), day, day);
    let mut tally = Tally::new();
    while let Some(page) = pages.next_page().await? {
        for logged in &page.searches {
            tally.add(&Search::of(&logged.record, &logged.feedback));
        }
    }
    Ok(tally.finish(top))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_ratio_counts_stale_as_served_and_ignores_bypass() {
        let counts: HashMap<String, i64> = [("hit", 6), ("stale", 2), ("miss", 2), ("bypass", 90)]
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        assert_eq!(CacheCounts::new(&counts).hit_ratio, 0.8);
        assert_eq!(CacheCounts::new(&HashMap::new()).hit_ratio, 0.0);
    }
}
