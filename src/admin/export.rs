//! Export of logged searches as JSONL (SPEC section 1: `leafcache export`,
//! and `GET /v1/export`), the training data of the ranking model.
//!
//! The export is pulled a page at a time: each day's `searches:daily:<date>`
//! index is read [`PAGE`] ids at a time, and one pipelined round trip fetches
//! the records of a page, their feedback lists, and the ids of the next page.
//! Memory stays flat however many records a range holds.

use std::time::Duration;

use bb8_redis::redis::{self, FromRedisValue};
use tokio::time::Instant;

use super::{dates, record};
use crate::events::record::Record;
use crate::redis::RedisFailure;
use crate::redis::RedisPool;
use crate::redis::keys::{self, Prefix};
use crate::redis::pool::Command;

/// Records per round trip.
pub const PAGE: usize = 500;
const DEADLINE: Duration = Duration::from_secs(30);

/// Which searches to export: the inclusive UTC days `from..=to` (day
/// numbers), and, when `intents` is not empty, only searches with one of them.
#[derive(Clone, Debug)]
pub struct ExportRange {
    pub from: u64,
    pub to: u64,
    pub intents: Vec<String>,
}

/// One page of the export.
pub struct Page {
    /// The day the records belong to.
    pub day: u64,
    /// One JSON object per line.
    pub jsonl: Vec<u8>,
    /// Records written to `jsonl`.
    pub records: usize,
    /// Ids read from the index (written, filtered out or expired).
    pub scanned: usize,
}

pub struct Exporter {
    redis: RedisPool,
    prefix: Prefix,
    range: ExportRange,
    day: u64,
    offset: usize,
    /// The ids of the next page of `day`, fetched with the previous page.
    next_ids: Option<Vec<String>>,
}

impl Exporter {
    pub fn new(redis: RedisPool, prefix: Prefix, range: ExportRange) -> Exporter {
        Exporter {
            redis,
            prefix,
            day: range.from,
            range,
            offset: 0,
            next_ids: None,
        }
    }

    /// How many searches the range's daily indexes hold (before the intent
    /// filter), for a progress bar.
    pub async fn total(&self) -> Result<u64, RedisFailure> {
        let mut pipe = redis::pipe();
        for day in self.range.from..=self.range.to {
            pipe.cmd("ZCARD")
                .arg(keys::searches_daily(&self.prefix, &dates::format(day)));
        }
        let counts: Vec<u64> = self
            .redis
            .query(Command::Pipe(&pipe), Instant::now() + DEADLINE)
            .await?;
        Ok(counts.iter().sum())
    }

    fn page_of_ids(&self, pipe: &mut redis::Pipeline, offset: usize) {
        let key = keys::searches_daily(&self.prefix, &dates::format(self.day));
        pipe.cmd("ZRANGE")
            .arg(key)
            .arg(offset)
            .arg(offset + PAGE - 1);
    }

    /// The next page, `None` once the range is done.
    pub async fn next_page(&mut self) -> Result<Option<Page>, RedisFailure> {
        loop {
            if self.day > self.range.to {
                return Ok(None);
            }
            let ids = match self.next_ids.take() {
                Some(ids) => ids,
                None => {
                    let mut pipe = redis::pipe();
                    self.page_of_ids(&mut pipe, self.offset);
                    let (ids,): (Vec<String>,) = self
                        .redis
                        .query(Command::Pipe(&pipe), Instant::now() + DEADLINE)
                        .await?;
                    ids
                }
            };
            if ids.is_empty() {
                self.day += 1;
                self.offset = 0;
                continue;
            }
            self.offset += ids.len();
            let more = ids.len() == PAGE;
            let deadline = Instant::now() + DEADLINE;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            record::queue_reads(&mut pipe, &self.prefix, &ids);
            if more {
                self.page_of_ids(&mut pipe, self.offset);
            }
            let values: Vec<redis::Value> =
                self.redis.query(Command::Pipe(&pipe), deadline).await?;
            let mut values = values.into_iter();
            let found =
                record::take_records(&self.redis, &self.prefix, &ids, &mut values, deadline)
                    .await?;
            let mut page = Page {
                day: self.day,
                jsonl: Vec::with_capacity(ids.len() * 512),
                records: 0,
                scanned: ids.len(),
            };
            // `None`: an id whose record expired before its index entry.
            for logged in found.into_iter().flatten() {
                if self.wanted(&logged.record) {
                    logged.record.write_line(&logged.feedback, &mut page.jsonl);
                    page.records += 1;
                }
            }
            self.next_ids = Some(if more {
                match values.next() {
                    Some(redis::Value::ServerError(e)) => {
                        return Err(RedisFailure::Redis(e.into()));
                    }
                    v => take(v)?,
                }
            } else {
                Vec::new()
            });
            return Ok(Some(page));
        }
    }

    fn wanted(&self, record: &Record) -> bool {
        self.range.intents.is_empty()
            || record
                .get("intent")
                .as_str()
                .is_some_and(|i| self.range.intents.iter().any(|w| w == i))
    }
}

fn take<T: FromRedisValue>(value: Option<redis::Value>) -> Result<T, RedisFailure> {
    let value = value.unwrap_or(redis::Value::Nil);
    redis::from_redis_value(value).map_err(|e| RedisFailure::Redis(e.into()))
}
