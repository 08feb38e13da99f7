//! Analytics counters summed in process between flushes, so that a product
//! returned by a thousand searches costs one `ZINCRBY`, not a thousand
//! (SPEC section 5: shared counters "may be summed in process").
//!
//! Counters are grouped by UTC day (the day number, formatted only when
//! written), and looked up by `&str`, so adding an event allocates only for
//! members not seen before in the window.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

use super::SearchEvent;
use crate::redis::keys;

type Map<V> = HashMap<String, V, RandomState>;

const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
const CACHE_RESULTS: [&str; 4] = ["hit", "miss", "bypass", "stale"];

/// One day's increments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Day {
    /// `searches:hourly:<date>`, by hour.
    hourly: [i64; 24],
    /// `cache:stats:<date>`: hit, miss, bypass, stale.
    cache: [i64; 4],
    /// `intent:stats:<date>`
    intents: Map<i64>,
    /// `products:popular:<date>`
    products: Map<i64>,
    /// `supplier:<id>:queries:<date>`: supplier → query → count.
    suppliers: Map<Map<i64>>,
    /// `queries:popular:<date>`
    queries: Map<i64>,
    /// `queries:zero:<date>`
    zero: Map<i64>,
}

/// Increments waiting to be written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Keyed by days since the Unix epoch.
    days: HashMap<u64, Day, RandomState>,
    /// Distinct members held, to bound memory.
    entries: usize,
}

/// One counter key with its increments, as written to Redis.
pub struct CounterWrite {
    pub key: String,
    /// HINCRBY (hash) or ZINCRBY (sorted set).
    pub is_hash: bool,
    pub increments: Vec<(String, i64)>,
}

fn incr(map: &mut Map<i64>, member: &str, by: i64, entries: &mut usize) {
    if let Some(n) = map.get_mut(member) {
        *n += by;
    } else {
        map.insert(member.to_owned(), by);
        *entries += 1;
    }
}

impl Counters {
    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Adds one search's increments.
    pub fn add(&mut self, ev: &SearchEvent) {
        let entries = &mut self.entries;
        let day = self.days.entry(ev.timestamp_ms / DAY_MS).or_default();
        day.hourly[((ev.timestamp_ms / HOUR_MS) % 24) as usize] += 1;
        if let Some(i) = CACHE_RESULTS.iter().position(|c| *c == ev.cache.as_str()) {
            day.cache[i] += 1;
        }
        if let Some(intent) = &ev.meta.intent {
            incr(&mut day.intents, intent, 1, entries);
        }
        for product in ev.product_ids() {
            incr(&mut day.products, product, 1, entries);
        }
        for supplier in ev.supplier_ids() {
            let queries = match day.suppliers.get_mut(supplier) {
                Some(q) => q,
                None => day.suppliers.entry(supplier.to_owned()).or_default(),
            };
            incr(queries, &ev.query_normalized, 1, entries);
        }
        incr(&mut day.queries, &ev.query_normalized, 1, entries);
        if ev.meta.results_count == 0 {
            incr(&mut day.zero, &ev.query_normalized, 1, entries);
        }
    }

    /// Every counter key with its increments, in a stable order.
    pub fn writes(&self, prefix: &str) -> Vec<CounterWrite> {
        let mut out = Vec::new();
        let mut days: Vec<_> = self.days.iter().collect();
        days.sort_by_key(|(d, _)| **d);
        for (&day_number, day) in days {
            let date = date_of(day_number);
            let sorted = |m: &Map<i64>| {
                let mut v: Vec<(String, i64)> = m.iter().map(|(k, n)| (k.clone(), *n)).collect();
                v.sort();
                v
            };
            let hourly: Vec<(String, i64)> = (0..24)
                .filter(|h| day.hourly[*h] != 0)
                .map(|h| (format!("{h:02}"), day.hourly[h]))
                .collect();
            let cache: Vec<(String, i64)> = (0..4)
                .filter(|i| day.cache[*i] != 0)
                .map(|i| (CACHE_RESULTS[i].to_string(), day.cache[i]))
                .collect();
            let mut push = |key: String, is_hash: bool, increments: Vec<(String, i64)>| {
                if !increments.is_empty() {
                    out.push(CounterWrite {
                        key,
                        is_hash,
                        increments,
                    });
                }
            };
            push(keys::searches_hourly(prefix, &date), true, hourly);
            push(keys::cache_stats(prefix, &date), true, cache);
            push(
                keys::intent_stats(prefix, &date),
                true,
                sorted(&day.intents),
            );
            push(
                keys::products_popular(prefix, &date),
                false,
                sorted(&day.products),
            );
            let mut suppliers: Vec<_> = day.suppliers.iter().collect();
            suppliers.sort_by(|a, b| a.0.cmp(b.0));
            for (supplier, queries) in suppliers {
                push(
                    keys::supplier_queries(prefix, supplier, &date),
                    false,
                    sorted(queries),
                );
            }
            push(
                keys::queries_popular(prefix, &date),
                false,
                sorted(&day.queries),
            );
            push(keys::queries_zero(prefix, &date), false, sorted(&day.zero));
        }
        out
    }
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01, UTC).
pub fn date_of(day_number: u64) -> String {
    super::rfc3339_ms(day_number * DAY_MS)[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::envelope::SearchMeta;
    use crate::events::CacheResult;
    use std::sync::Arc;

    fn event(q: &str, products: &[(&str, &str)], cache: CacheResult) -> SearchEvent {
        SearchEvent {
            search_id: super::super::new_search_id(),
            timestamp_ms: 1_764_106_056_927, // 2025-11-25T21:27:36.927Z
            user_id: Some("u".into()),
            user_uuid: None,
            session_id: None,
            query: q.into(),
            query_normalized: q.into(),
            meta: Arc::new(SearchMeta {
                intent: Some("product_search".into()),
                confidence: Some(0.9),
                results_count: products.len() as u32,
                products: products
                    .iter()
                    .map(|(p, s)| (p.to_string(), Some(s.to_string())))
                    .collect(),
            }),
            response_time_ms: 1.0,
            cache,
            status: 200,
            route: "search".into(),
        }
    }

    fn written(c: &Counters) -> HashMap<String, HashMap<String, i64>> {
        c.writes("")
            .into_iter()
            .map(|w| (w.key, w.increments.into_iter().collect()))
            .collect()
    }

    #[test]
    fn sums_shared_counters_across_events() {
        let mut c = Counters::default();
        c.add(&event(
            "milk",
            &[("p1", "s1"), ("p2", "s1")],
            CacheResult::Miss,
        ));
        c.add(&event("milk", &[("p1", "s1")], CacheResult::Hit));
        c.add(&event("nothing", &[], CacheResult::None));
        let w = written(&c);
        let get = |k: &str, m: &str| w.get(k).and_then(|x| x.get(m)).copied().unwrap_or(0);
        assert_eq!(get("searches:hourly:2025-11-25", "21"), 3);
        assert_eq!(get("products:popular:2025-11-25", "p1"), 2);
        assert_eq!(get("products:popular:2025-11-25", "p2"), 1);
        assert_eq!(
            get("supplier:s1:queries:2025-11-25", "milk"),
            2,
            "a supplier counts once per search"
        );
        assert_eq!(get("queries:popular:2025-11-25", "milk"), 2);
        assert_eq!(get("queries:zero:2025-11-25", "nothing"), 1);
        assert_eq!(get("cache:stats:2025-11-25", "hit"), 1);
        assert_eq!(get("cache:stats:2025-11-25", "miss"), 1);
        assert!(
            !w["cache:stats:2025-11-25"].contains_key("none"),
            "manual searches are not cache traffic"
        );
        assert_eq!(get("intent:stats:2025-11-25", "product_search"), 3);
    }

    #[test]
    fn days_are_kept_apart() {
        let mut c = Counters::default();
        let mut a = event("milk", &[], CacheResult::Miss);
        a.timestamp_ms = 1_764_115_199_999; // 23:59:59.999
        let mut b = a.clone();
        b.timestamp_ms += 1; // next day, 00:00
        c.add(&a);
        c.add(&b);
        let w = written(&c);
        assert_eq!(w["searches:hourly:2025-11-25"]["23"], 1);
        assert_eq!(w["searches:hourly:2025-11-26"]["00"], 1);
    }

    #[test]
    fn survives_a_round_trip_through_the_spool_encoding() {
        let mut c = Counters::default();
        c.add(&event("milk", &[("p1", "s1")], CacheResult::Hit));
        let bytes = serde_json::to_vec(&c).unwrap();
        let back: Counters = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, c);
    }
}
