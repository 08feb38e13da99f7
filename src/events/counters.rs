//! Analytics counters summed in process between flushes, so that a product
//! returned by a thousand searches costs one `ZINCRBY`, not a thousand
//! (docs/contract.md section 5: shared counters "may be summed in process").
//!
//! Counters are grouped by UTC day (the day number, formatted only when
//! written), and looked up by `&str`, so adding an event allocates only for
//! members not seen before in the window.
//!
//! Adding a search is cheaper still: searches are first grouped by the
//! answer they got (the `Arc` of its [`SearchMeta`], which every hit of one
//! cached answer shares) and their normalized query, and a group's products,
//! suppliers and intent are counted once when the group is folded into the
//! day's maps (before a flush), not once per search. A hit of a popular
//! answer then costs one lookup on two integers and a short string compare
//! instead of one map update per product and supplier.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

use super::SearchEvent;
use crate::answer::SearchMeta;
use crate::answer::facts::LogFacts;
use crate::redis::keys::{self, Prefix};
use crate::time::DAY_MS;

type Map<V> = HashMap<String, V, RandomState>;

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

impl Day {
    fn is_empty(&self) -> bool {
        self.hourly.iter().all(|n| *n == 0)
            && self.cache.iter().all(|n| *n == 0)
            && self.intents.is_empty()
            && self.products.is_empty()
            && self.suppliers.is_empty()
            && self.queries.is_empty()
            && self.zero.is_empty()
    }
}

/// Increments waiting to be written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Keyed by days since the Unix epoch.
    days: HashMap<u64, Day, RandomState>,
    /// Searches not yet folded into `days`. Never serialized: [`Counters::fold`]
    /// runs before a spool write, and [`Counters::for_each_write`] folds a copy.
    #[serde(skip)]
    groups: HashMap<GroupKey, Group, RandomState>,
    /// Distinct members held in `days`, weighed by length, to bound memory.
    entries: usize,
    /// What `groups` holds, counted the same way.
    #[serde(skip)]
    group_entries: usize,
}

/// Searches of one day that got one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    day: u64,
    /// The address of the answer's `Arc<SearchMeta>`, which the group holds,
    /// so the address cannot be reused while the key exists.
    meta: usize,
}

#[derive(Clone, Debug, PartialEq)]
struct Group {
    meta: Arc<SearchMeta>,
    /// Normalized query → searches (almost always one query per answer).
    queries: Vec<(String, i64)>,
}

/// Searches of one day and query whose answers count the same (see
/// [`Counters::fold`]): the same intent, the same distinct products and
/// suppliers, and both found something or both nothing.
#[derive(Clone, Copy)]
struct Alike<'a> {
    day: u64,
    query: &'a str,
    intent: Option<&'a str>,
    zero: bool,
    facts: &'a LogFacts,
}

impl Hash for Alike<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.day);
        state.write_u64(self.facts.fingerprint);
        self.query.hash(state);
    }
}

impl PartialEq for Alike<'_> {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.facts, other.facts);
        self.day == other.day
            && self.query == other.query
            && self.intent == other.intent
            && self.zero == other.zero
            && a.fingerprint == b.fingerprint
            && (std::ptr::eq(a, b)
                || (a.product_ids_json == b.product_ids_json
                    && a.supplier_ids_json == b.supplier_ids_json))
    }
}

impl Eq for Alike<'_> {}

fn incr(map: &mut Map<i64>, member: &str, by: i64, entries: &mut usize) {
    if let Some(n) = map.get_mut(member) {
        *n += by;
    } else {
        map.insert(member.to_owned(), by);
        *entries += weight(member);
    }
}

/// What a member counts toward [`Counters::entries`]: one, and one more for
/// every [`MEMBER_UNIT`] bytes of its text, so that the bound on entries is
/// a bound on bytes too (search texts run up to `max_request_body`).
fn weight(member: &str) -> usize {
    1 + member.len() / MEMBER_UNIT
}

/// The member length one entry stands for.
const MEMBER_UNIT: usize = 64;

impl Counters {
    pub fn is_empty(&self) -> bool {
        self.days.is_empty() && self.groups.is_empty()
    }

    /// Distinct members held, and groups and queries not yet folded, each
    /// weighed by its length (one entry more per 64 bytes).
    pub fn entries(&self) -> usize {
        self.entries + self.group_entries
    }

    /// Adds one search's increments.
    pub fn add(&mut self, ev: &SearchEvent) {
        let day_number = ev.timestamp_ms / DAY_MS;
        let day = self.days.entry(day_number).or_default();
        day.hourly[((ev.timestamp_ms / HOUR_MS) % 24) as usize] += 1;
        if let Some(i) = CACHE_RESULTS.iter().position(|c| *c == ev.cache.as_str()) {
            day.cache[i] += 1;
        }
        let key = GroupKey {
            day: day_number,
            meta: Arc::as_ptr(&ev.meta) as usize,
        };
        let group = self.groups.entry(key).or_insert_with(|| {
            // What a group holds: an entry and a share of an answer the
            // cache holds anyway. What folding adds to the day's maps is
            // counted there, per distinct member.
            self.group_entries += 1;
            Group {
                meta: ev.meta.clone(),
                queries: Vec::with_capacity(1),
            }
        });
        match group
            .queries
            .iter_mut()
            .find(|(q, _)| *q == ev.query_normalized)
        {
            Some((_, n)) => *n += 1,
            None => {
                self.group_entries += weight(&ev.query_normalized);
                group.queries.push((ev.query_normalized.clone(), 1));
            }
        }
    }

    /// Moves the grouped searches into the per-day maps.
    pub fn fold(&mut self) {
        let groups = std::mem::take(&mut self.groups);
        let entries = &mut self.entries;
        // Searches alike (the same query, answered with the same intent,
        // products and suppliers: one query's answers to many users, each
        // an entry of its own) count the same. They are summed first, with
        // one lookup each on the answer's precomputed fingerprint, and each
        // kind then updates the day's maps once.
        let mut alike: HashMap<Alike<'_>, (i64, &SearchMeta), RandomState> =
            HashMap::with_capacity_and_hasher(groups.len(), RandomState::default());
        for (key, group) in &groups {
            let meta: &SearchMeta = &group.meta;
            let facts = meta.log_facts();
            for (query, n) in &group.queries {
                let kind = Alike {
                    day: key.day,
                    query,
                    intent: meta.intent.as_deref(),
                    zero: meta.results_count == 0,
                    facts,
                };
                alike.entry(kind).or_insert((0, meta)).0 += *n;
            }
        }
        for (a, (n, meta)) in alike {
            let day = self.days.entry(a.day).or_default();
            if let Some(intent) = a.intent {
                incr(&mut day.intents, intent, n, entries);
            }
            incr(&mut day.queries, a.query, n, entries);
            if a.zero {
                incr(&mut day.zero, a.query, n, entries);
            }
            for product in meta.product_ids() {
                incr(&mut day.products, product, n, entries);
            }
            for supplier in meta.supplier_ids() {
                let queries = match day.suppliers.get_mut(supplier) {
                    Some(q) => q,
                    None => day.suppliers.entry(supplier.to_owned()).or_default(),
                };
                incr(queries, a.query, n, entries);
            }
        }
        self.group_entries = 0;
    }

    /// Moves about `max` members (at least one key's, and a supplier's
    /// queries together), with the days' hourly and cache counts, out into
    /// a part of their own, so that a large flush reaches Redis a part at a
    /// time between batches of records rather than holding them up.
    pub fn take_part(&mut self, max: usize) -> Counters {
        self.fold();
        let mut part = Counters::default();
        let max = max.max(1);
        let mut moved = 0;
        for (&number, day) in &mut self.days {
            if moved >= max {
                break;
            }
            let into = part.days.entry(number).or_default();
            into.hourly = std::mem::take(&mut day.hourly);
            into.cache = std::mem::take(&mut day.cache);
            for (from, to) in [
                (&mut day.intents, &mut into.intents),
                (&mut day.queries, &mut into.queries),
                (&mut day.zero, &mut into.zero),
                (&mut day.products, &mut into.products),
            ] {
                let before = to.len();
                to.extend(from.extract_if(|_, _| true).take(max.saturating_sub(moved)));
                moved += to.len() - before;
            }
            let mut suppliers = day.suppliers.extract_if(|_, _| true);
            while moved < max {
                let Some((supplier, queries)) = suppliers.next() else {
                    break;
                };
                moved += queries.len();
                into.suppliers.insert(supplier, queries);
            }
        }
        self.days.retain(|_, day| !day.is_empty());
        part.entries = moved;
        self.entries = self.entries.saturating_sub(moved);
        part
    }

    /// Calls `f` with every counter key that has increments, whether it is
    /// a hash (`HINCRBY`) or a sorted set (`ZINCRBY`), and its increments
    /// by member, in a stable order (days, then keys, then members sorted).
    /// Members are lent, not copied: a flush writes tens of thousands.
    pub fn for_each_write(&self, prefix: &Prefix, mut f: impl FnMut(&str, bool, &[(&str, i64)])) {
        if !self.groups.is_empty() {
            let mut folded = self.clone();
            folded.fold();
            return folded.for_each_write(prefix, f);
        }
        let mut days: Vec<_> = self.days.iter().collect();
        days.sort_by_key(|(d, _)| **d);
        let mut increments: Vec<(&str, i64)> = Vec::new();
        let mut emit = |key: String, is_hash: bool, increments: &[(&str, i64)]| {
            if !increments.is_empty() {
                f(&key, is_hash, increments);
            }
        };
        fn sorted<'a>(into: &mut Vec<(&'a str, i64)>, map: &'a Map<i64>) {
            into.clear();
            into.extend(map.iter().map(|(member, n)| (member.as_str(), *n)));
            into.sort_unstable();
        }
        /// The fields of a fixed set (hours, cache results) that counted.
        fn nonzero(into: &mut Vec<(&str, i64)>, names: &[&'static str], counts: &[i64]) {
            into.clear();
            into.extend(
                names
                    .iter()
                    .zip(counts)
                    .filter(|(_, n)| **n != 0)
                    .map(|(name, n)| (*name, *n)),
            );
        }
        for (&day_number, day) in days {
            let date = date_of(day_number);
            nonzero(&mut increments, &HOURS, &day.hourly);
            emit(keys::searches_hourly(prefix, &date), true, &increments);
            nonzero(&mut increments, &CACHE_RESULTS, &day.cache);
            emit(keys::cache_stats(prefix, &date), true, &increments);
            sorted(&mut increments, &day.intents);
            emit(keys::intent_stats(prefix, &date), true, &increments);
            sorted(&mut increments, &day.products);
            emit(keys::products_popular(prefix, &date), false, &increments);
            let mut suppliers: Vec<_> = day.suppliers.iter().collect();
            suppliers.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (supplier, queries) in suppliers {
                sorted(&mut increments, queries);
                emit(
                    keys::supplier_queries(prefix, supplier, &date),
                    false,
                    &increments,
                );
            }
            sorted(&mut increments, &day.queries);
            emit(keys::queries_popular(prefix, &date), false, &increments);
            sorted(&mut increments, &day.zero);
            emit(keys::queries_zero(prefix, &date), false, &increments);
        }
    }
}

/// The fields of `searches:hourly:<date>`.
const HOURS: [&str; 24] = [
    "00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15",
    "16", "17", "18", "19", "20", "21", "22", "23",
];

/// `YYYY-MM-DD` of a day number (days since 1970-01-01, UTC).
pub fn date_of(day_number: u64) -> String {
    crate::time::utc_date(day_number * DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::SearchMeta;
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
                ..SearchMeta::default()
            }),
            response_time_ms: 1.0,
            cache,
            status: 200,
            route: "search".into(),
        }
    }

    /// What a flush would write: increments by member, by key.
    fn written(c: &Counters) -> HashMap<String, HashMap<String, i64>> {
        let mut out = HashMap::new();
        c.for_each_write(&Prefix::default(), |key, _, increments| {
            let members = increments.iter().map(|(m, n)| ((*m).to_owned(), *n));
            out.insert(key.to_owned(), members.collect());
        });
        out
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
    fn hits_of_one_answer_count_like_separate_searches() {
        let shared = event("milk", &[("p1", "s1"), ("p2", "s2")], CacheResult::Miss);
        let mut grouped = Counters::default();
        let mut separate = Counters::default();
        for i in 0..5 {
            let mut hit = shared.clone(); // same Arc<SearchMeta>
            hit.cache = CacheResult::Hit;
            if i == 3 {
                hit.query_normalized = "whole milk".into(); // same answer, other query
            }
            grouped.add(&hit);
            let mut copy = hit.clone();
            copy.meta = Arc::new(SearchMeta::clone(&hit.meta)); // its own Arc
            separate.add(&copy);
        }
        assert_eq!(written(&grouped), written(&separate));
        let w = written(&grouped);
        assert_eq!(w["products:popular:2025-11-25"]["p1"], 5);
        assert_eq!(w["supplier:s2:queries:2025-11-25"]["milk"], 4);
        assert_eq!(w["supplier:s2:queries:2025-11-25"]["whole milk"], 1);
        assert_eq!(w["queries:popular:2025-11-25"]["milk"], 4);
        assert_eq!(w["intent:stats:2025-11-25"]["product_search"], 5);
    }

    #[test]
    fn long_members_weigh_by_their_length() {
        let mut short = Counters::default();
        short.add(&event("milk", &[], CacheResult::Miss));
        let mut long = Counters::default();
        let text = "m".repeat(64 * 1024);
        let mut ev = event("milk", &[], CacheResult::Miss);
        ev.query_normalized = text.clone();
        long.add(&ev);
        assert_eq!(short.entries(), 2, "a group and its query");
        assert_eq!(long.entries(), 2 + 1024, "one entry per 64 bytes");
        long.fold();
        assert!(
            long.entries() >= 2 * 1024,
            "queries and zero results: {}",
            long.entries()
        );
    }

    #[test]
    fn folding_keeps_the_counts_and_empties_the_groups() {
        let mut c = Counters::default();
        c.add(&event("milk", &[("p1", "s1")], CacheResult::Hit));
        let before = written(&c);
        assert!(c.entries() > 0);
        c.fold();
        assert_eq!(written(&c), before);
        assert!(!c.is_empty());
        assert_eq!(c.entries(), 4, "intent, product, supplier query, query");
    }

    #[test]
    fn parts_hold_every_increment_once_and_about_max_members_each() {
        let mut c = Counters::default();
        for i in 0..50 {
            let products: Vec<(String, String)> = (0..10)
                .map(|p| (format!("p{i}-{p}"), format!("s{}", p % 3)))
                .collect();
            let products: Vec<(&str, &str)> = products
                .iter()
                .map(|(p, s)| (p.as_str(), s.as_str()))
                .collect();
            let mut ev = event(&format!("q{i}"), &products, CacheResult::Hit);
            ev.timestamp_ms += (i % 2) * DAY_MS;
            c.add(&ev);
        }
        let whole = written(&c);
        let members = c.entries();
        let mut merged: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let mut parts = 0;
        while !c.is_empty() {
            let part = c.take_part(64);
            assert!(part.entries() <= 64 + 50, "a part is about max members");
            assert!(part.entries() > 0 || parts == 0);
            for (key, by_member) in written(&part) {
                let into = merged.entry(key).or_default();
                for (member, n) in by_member {
                    assert!(
                        into.insert(member, n).is_none(),
                        "an increment in two parts"
                    );
                }
            }
            parts += 1;
            assert!(parts < 100);
        }
        assert_eq!(merged, whole);
        assert!(parts >= members / (64 + 50), "{parts} parts of {members}");
        assert_eq!(c.entries(), 0);
    }

    #[test]
    fn survives_a_round_trip_through_the_spool_encoding() {
        let mut c = Counters::default();
        c.add(&event("milk", &[("p1", "s1")], CacheResult::Hit));
        c.fold();
        let bytes = serde_json::to_vec(&c).unwrap();
        let back: Counters = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, c);
    }

    /// Answers that count alike or not: 1 is 0's content in an `Arc` of
    /// its own; 2, 3 and 5 each differ from 0 in one thing (intent, a
    /// supplier, finding nothing); 4 lists a product twice and a product
    /// without a supplier.
    fn answers() -> Vec<Arc<SearchMeta>> {
        let meta = |intent: Option<&str>, products: &[(&str, Option<&str>)], count: u32| {
            Arc::new(SearchMeta {
                intent: intent.map(str::to_owned),
                results_count: count,
                products: products
                    .iter()
                    .map(|(p, s)| (p.to_string(), s.map(str::to_owned)))
                    .collect(),
                ..SearchMeta::default()
            })
        };
        let both = [("p1", Some("s1")), ("p2", Some("s1"))];
        vec![
            meta(Some("a"), &both, 2),
            meta(Some("a"), &both, 2),
            meta(Some("b"), &both, 2),
            meta(Some("a"), &[("p1", Some("s1")), ("p2", Some("s2"))], 2),
            meta(
                None,
                &[("p1", Some("s2")), ("p1", Some("s2")), ("p3", None)],
                3,
            ),
            meta(Some("a"), &both, 0),
        ]
    }

    proptest::proptest! {
        /// However searches are grouped and folded, the counts are those
        /// of adding every search on its own.
        #[test]
        fn folded_counts_are_the_sum_of_every_search(
            searches in proptest::collection::vec((0usize..6, 0usize..3, 0u64..2, proptest::bool::ANY), 1..80),
            fold_at in 0usize..80,
        ) {
            let answers = answers();
            let mut c = Counters::default();
            let mut expected: HashMap<String, HashMap<String, i64>> = HashMap::new();
            let mut bump = |key: String, member: &str| {
                *expected.entry(key).or_default().entry(member.to_owned()).or_default() += 1;
            };
            for (i, &(answer, query, day, own_arc)) in searches.iter().enumerate() {
                if i == fold_at {
                    c.fold();
                }
                let query = ["milk", "bread", "eggs"][query];
                let mut ev = event(query, &[], CacheResult::Hit);
                ev.timestamp_ms += day * DAY_MS;
                ev.meta = if own_arc {
                    Arc::new(SearchMeta::clone(&answers[answer]))
                } else {
                    answers[answer].clone()
                };
                c.add(&ev);
                let date = ["2025-11-25", "2025-11-26"][day as usize];
                let m = &ev.meta;
                if let Some(intent) = &m.intent {
                    bump(format!("intent:stats:{date}"), intent);
                }
                bump(format!("queries:popular:{date}"), query);
                if m.results_count == 0 {
                    bump(format!("queries:zero:{date}"), query);
                }
                for p in m.product_ids() {
                    bump(format!("products:popular:{date}"), p);
                }
                for s in m.supplier_ids() {
                    bump(format!("supplier:{s}:queries:{date}"), query);
                }
            }
            let mut got = written(&c);
            got.retain(|k, _| !k.starts_with("searches:hourly:") && !k.starts_with("cache:stats:"));
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
