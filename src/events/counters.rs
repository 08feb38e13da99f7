//! Analytics counters summed in process between flushes, so that a product
//! returned by a thousand searches costs one `ZINCRBY`, not a thousand
//! (SPEC section 5: shared counters "may be summed in process").

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{CacheResult, SearchEvent, date_and_hour};
use crate::redis::keys;

/// One counter key of SPEC section 4.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Counter {
    /// `searches:hourly:<date>` (hash)
    Hourly(String),
    /// `intent:stats:<date>` (hash)
    Intents(String),
    /// `cache:stats:<date>` (hash)
    Cache(String),
    /// `products:popular:<date>` (zset)
    Products(String),
    /// `supplier:<id>:queries:<date>` (zset)
    SupplierQueries { supplier: String, date: String },
    /// `queries:popular:<date>` (zset)
    Queries(String),
    /// `queries:zero:<date>` (zset)
    ZeroQueries(String),
}

impl Counter {
    pub fn redis_key(&self, prefix: &str) -> String {
        match self {
            Counter::Hourly(d) => keys::searches_hourly(prefix, d),
            Counter::Intents(d) => keys::intent_stats(prefix, d),
            Counter::Cache(d) => keys::cache_stats(prefix, d),
            Counter::Products(d) => keys::products_popular(prefix, d),
            Counter::SupplierQueries { supplier, date } => {
                keys::supplier_queries(prefix, supplier, date)
            }
            Counter::Queries(d) => keys::queries_popular(prefix, d),
            Counter::ZeroQueries(d) => keys::queries_zero(prefix, d),
        }
    }

    /// Hash counters use HINCRBY, sorted sets ZINCRBY.
    pub fn is_hash(&self) -> bool {
        matches!(
            self,
            Counter::Hourly(_) | Counter::Intents(_) | Counter::Cache(_)
        )
    }
}

/// Increments waiting to be written: counter → member → amount.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    map: HashMap<Counter, HashMap<String, i64>>,
    /// Distinct (counter, member) pairs held, to bound memory.
    entries: usize,
}

impl Counters {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    fn bump(&mut self, counter: Counter, member: &str, by: i64) {
        let members = self.map.entry(counter).or_default();
        match members.get_mut(member) {
            Some(n) => *n += by,
            None => {
                members.insert(member.to_owned(), by);
                self.entries += 1;
            }
        }
    }

    /// Adds one search's increments.
    pub fn add(&mut self, ev: &SearchEvent) {
        let (date, hour) = date_and_hour(ev.timestamp_ms);
        self.bump(Counter::Hourly(date.clone()), &hour, 1);
        if let Some(intent) = &ev.meta.intent {
            self.bump(Counter::Intents(date.clone()), intent, 1);
        }
        if ev.cache != CacheResult::None {
            self.bump(Counter::Cache(date.clone()), ev.cache.as_str(), 1);
        }
        for product in ev.product_ids() {
            self.bump(Counter::Products(date.clone()), product, 1);
        }
        for supplier in ev.supplier_ids() {
            let counter = Counter::SupplierQueries {
                supplier: supplier.to_owned(),
                date: date.clone(),
            };
            self.bump(counter, &ev.query_normalized, 1);
        }
        self.bump(Counter::Queries(date.clone()), &ev.query_normalized, 1);
        if ev.meta.results_count == 0 {
            self.bump(Counter::ZeroQueries(date), &ev.query_normalized, 1);
        }
    }

    /// Every increment, sorted by counter for a stable command order.
    pub fn iter(&self) -> impl Iterator<Item = (&Counter, &HashMap<String, i64>)> {
        let mut all: Vec<_> = self.map.iter().collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// Total of one member, for tests.
    pub fn get(&self, counter: &Counter, member: &str) -> i64 {
        self.map
            .get(counter)
            .and_then(|m| m.get(member))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::envelope::SearchMeta;
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

    #[test]
    fn sums_shared_counters_across_events() {
        let mut c = Counters::default();
        let d = "2025-11-25".to_string();
        c.add(&event(
            "milk",
            &[("p1", "s1"), ("p2", "s1")],
            CacheResult::Miss,
        ));
        c.add(&event("milk", &[("p1", "s1")], CacheResult::Hit));
        c.add(&event("nothing", &[], CacheResult::None));
        assert_eq!(c.get(&Counter::Hourly(d.clone()), "21"), 3);
        assert_eq!(c.get(&Counter::Products(d.clone()), "p1"), 2);
        assert_eq!(c.get(&Counter::Products(d.clone()), "p2"), 1);
        let s1 = Counter::SupplierQueries {
            supplier: "s1".into(),
            date: d.clone(),
        };
        assert_eq!(c.get(&s1, "milk"), 2, "a supplier counts once per search");
        assert_eq!(c.get(&Counter::Queries(d.clone()), "milk"), 2);
        assert_eq!(c.get(&Counter::ZeroQueries(d.clone()), "nothing"), 1);
        assert_eq!(c.get(&Counter::Cache(d.clone()), "hit"), 1);
        assert_eq!(
            c.get(&Counter::Cache(d.clone()), "none"),
            0,
            "manual searches are not cache traffic"
        );
        assert_eq!(c.get(&Counter::Intents(d), "product_search"), 3);
    }
}
