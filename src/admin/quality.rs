//! The search quality report of a day (docs/contract.md section 9), computed from the
//! day's logged searches and their feedback. Pure: [`Tally`] is fed one
//! search at a time (by [`super::stats`], which reads them a page at a
//! time) and keeps only small facts of each, never records.
//!
//! The definitions, over the searches of the day's `searches:daily:<date>`
//! index whose records could still be read:
//!
//! - a search *has results* when its `results_count` is above 0;
//! - a *click* is a feedback event `click`; its *position* is the one
//!   recorded when it is 1 or more, else the clicked product's impression
//!   (its 1-based place in the search's `product_ids`), else unknown;
//! - `zero_result_rate` = searches without results / searches;
//! - `click_through_rate` = searches with results and at least one click /
//!   searches with results; `no_click_rate` = 1 − that, computed as
//!   searches with results and no click / searches with results;
//! - `add_to_order_rate`, `purchase_rate` = searches with results and at
//!   least one `add_to_order` (`purchase`) event / searches with results;
//! - `mean_click_position` = the sum of the known positions of the clicks
//!   on searches with results / the number of those clicks;
//! - `mean_reciprocal_rank` = the sum over searches with results of 1 / the
//!   position of its first click with a known position (0 when it has none)
//!   / searches with results;
//! - `reformulation_rate` = searches that carry a session id and are
//!   followed by the next search of the same session (by timestamp) within
//!   60 s (≤ 60,000 ms), with no click of that session in between / searches
//!   that carry a session id. A click is in between when its time is from
//!   the search's to the next one's; at the same millisecond as a search,
//!   a click on an earlier search is taken to come before it and a click on
//!   that search or a later one after it (a click cannot precede its own
//!   search). Sessions are taken within the day: the day's last search of a
//!   session is not followed.
//! - `top_queries_without_clicks`: normalized queries searched with results
//!   whose searches with results were never clicked, most searched first.
//!
//! A rate whose denominator is 0 is `None` (JSON null), not 0. Feedback
//! counts for the search it names, whatever day it was sent on.
//!
//! Memory: about 24 bytes per search and per click (for the reformulation
//! sweep), plus one entry per distinct session and per distinct query with
//! results; a day of 1,000,000 searches needs tens of megabytes, not its
//! records.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::feedback::Action;
use crate::events::record::{FeedbackEntry, Record, millis_of};

/// A query and how often it was searched (the report's query lists).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryCount {
    pub query: String,
    pub count: u64,
}

/// The longest pause between a search and the next of its session for the
/// first to count as reformulated.
pub const REFORMULATION_WINDOW_MS: u64 = 60_000;

/// The quality part of the stats report (`"quality"` in `stats --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Searches whose records were read: the denominator of
    /// `zero_result_rate`. Can be below `total_searches`, whose counters
    /// outlive the records (`record_retention`).
    pub searches: u64,
    /// Searches with `results_count` > 0: the denominator of the click,
    /// add-to-order, purchase and reciprocal-rank figures.
    pub searches_with_results: u64,
    /// Searches that carry a session id (and a timestamp): the denominator
    /// of `reformulation_rate`.
    pub searches_with_session: u64,
    /// Clicks with a known position on searches with results: the
    /// denominator of `mean_click_position`.
    pub clicks_with_position: u64,
    pub click_through_rate: Option<f64>,
    pub no_click_rate: Option<f64>,
    pub zero_result_rate: Option<f64>,
    pub mean_click_position: Option<f64>,
    pub mean_reciprocal_rank: Option<f64>,
    pub add_to_order_rate: Option<f64>,
    pub purchase_rate: Option<f64>,
    pub reformulation_rate: Option<f64>,
    /// Capped by `--top`.
    pub top_queries_without_clicks: Vec<QueryCount>,
}

/// What the report needs of one search.
#[derive(Clone, Debug, PartialEq)]
pub struct Search<'a> {
    pub session_id: Option<&'a str>,
    /// `None` when the record's timestamp does not read (the search is
    /// then left out of the reformulation figures only).
    pub timestamp_ms: Option<u64>,
    pub query_normalized: &'a str,
    pub results_count: u64,
    /// Oldest first, as the feedback list keeps them.
    pub feedback: Vec<Event>,
}

/// One feedback event of a search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    pub action: Action,
    /// Known position (see the module's definitions), from 1.
    pub position: Option<u64>,
    pub timestamp_ms: Option<u64>,
}

impl<'a> Search<'a> {
    /// The facts of a logged search; feedback entries something else wrote
    /// are left out.
    pub fn of(record: &'a Record, feedback: &[Vec<u8>]) -> Search<'a> {
        let feedback = feedback
            .iter()
            .filter_map(|raw| {
                let entry = FeedbackEntry::parse(raw)?;
                Some(Event {
                    action: Action::parse(&entry.event)?,
                    position: record.feedback_position(entry.position, &entry.product_id),
                    timestamp_ms: millis_of(&entry.timestamp),
                })
            })
            .collect();
        Search {
            session_id: record.get("session_id").as_str(),
            timestamp_ms: record.timestamp_ms(),
            query_normalized: record
                .get("query_normalized")
                .as_str()
                .or_else(|| record.get("query").as_str())
                .unwrap_or_default(),
            results_count: record.get("results_count").as_u64().unwrap_or(0),
            feedback,
        }
    }
}

/// A search or a click placed in its session, for the reformulation sweep.
#[derive(Clone, Copy)]
struct Moment {
    session: u32,
    click: bool,
    at_ms: u64,
    /// The order its search was added in (the day index's, by time): at
    /// the same millisecond, orders a click against searches.
    search: u64,
}

impl Moment {
    fn when(&self) -> (u64, u64) {
        (self.at_ms, self.search)
    }
}

/// The running counts of a day; [`Tally::finish`] makes the report.
#[derive(Default)]
pub struct Tally {
    searches: u64,
    with_results: u64,
    clicked: u64,
    ordered: u64,
    purchased: u64,
    clicks_with_position: u64,
    position_sum: u64,
    /// Searches with results by the position of their first positioned
    /// click; summed in position order at the end, so the mean reciprocal
    /// rank does not depend on the order searches were read in.
    first_click_at: BTreeMap<u64, u64>,
    with_session: u64,
    sessions: HashMap<Box<str>, u32>,
    moments: Vec<Moment>,
    /// Normalized query → (searches with results, any of them clicked).
    queries: HashMap<Box<str>, (u64, bool)>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally::default()
    }

    pub fn add(&mut self, search: &Search<'_>) {
        let seq = self.searches;
        self.searches += 1;
        let clicks = || search.feedback.iter().filter(|e| e.action == Action::Click);
        let clicked = clicks().next().is_some();
        if search.results_count > 0 {
            self.with_results += 1;
            let did = |a: Action| search.feedback.iter().any(|e| e.action == a);
            self.clicked += u64::from(clicked);
            self.ordered += u64::from(did(Action::AddToOrder));
            self.purchased += u64::from(did(Action::Purchase));
            let positions = clicks().filter_map(|e| e.position);
            for p in positions.clone() {
                self.clicks_with_position += 1;
                self.position_sum += p;
            }
            if let Some(first) = positions.clone().next() {
                *self.first_click_at.entry(first).or_default() += 1;
            }
            match self.queries.get_mut(search.query_normalized) {
                Some((n, any)) => {
                    *n += 1;
                    *any |= clicked;
                }
                None => {
                    self.queries
                        .insert(search.query_normalized.into(), (1, clicked));
                }
            }
        }
        if let (Some(session), Some(at_ms)) = (search.session_id, search.timestamp_ms) {
            self.with_session += 1;
            let next = self.sessions.len() as u32;
            let session = match self.sessions.get(session) {
                Some(i) => *i,
                None => {
                    self.sessions.insert(session.into(), next);
                    next
                }
            };
            self.moments.push(Moment {
                session,
                click: false,
                at_ms,
                search: seq,
            });
            for at_ms in clicks().filter_map(|e| e.timestamp_ms) {
                self.moments.push(Moment {
                    session,
                    click: true,
                    at_ms,
                    search: seq,
                });
            }
        }
    }

    /// The report; `top` caps `top_queries_without_clicks`.
    pub fn finish(mut self, top: usize) -> Quality {
        let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
        let r = self.with_results;
        let reciprocal_sum: f64 = self
            .first_click_at
            .iter()
            .map(|(position, n)| *n as f64 / *position as f64)
            .sum();
        let mut unclicked: Vec<QueryCount> = self
            .queries
            .drain()
            .filter(|(_, (_, clicked))| !clicked)
            .map(|(query, (count, _))| QueryCount {
                query: query.into(),
                count,
            })
            .collect();
        unclicked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.query.cmp(&b.query)));
        unclicked.truncate(top);
        Quality {
            searches: self.searches,
            searches_with_results: r,
            searches_with_session: self.with_session,
            clicks_with_position: self.clicks_with_position,
            click_through_rate: ratio(self.clicked, r),
            no_click_rate: ratio(r - self.clicked, r),
            zero_result_rate: ratio(self.searches - r, self.searches),
            mean_click_position: ratio(self.position_sum, self.clicks_with_position),
            mean_reciprocal_rank: (r > 0).then(|| reciprocal_sum / r as f64),
            add_to_order_rate: ratio(self.ordered, r),
            purchase_rate: ratio(self.purchased, r),
            reformulation_rate: ratio(reformulated(&mut self.moments), self.with_session),
            top_queries_without_clicks: unclicked,
        }
    }
}

/// How many searches are followed by the next search of their session
/// within [`REFORMULATION_WINDOW_MS`] with no click of the session in
/// between: from the search (inclusive) to the next (exclusive), ordered
/// by time, then by the order of the searches ([`Moment::when`]).
fn reformulated(moments: &mut [Moment]) -> u64 {
    moments.sort_unstable_by_key(|m| (m.session, m.click, m.when()));
    let mut count = 0;
    for session in moments.chunk_by(|a, b| a.session == b.session) {
        let split = session.partition_point(|m| !m.click);
        let (searches, clicks) = session.split_at(split);
        for pair in searches.windows(2) {
            let (from, to) = (&pair[0], &pair[1]);
            let first_click = clicks.partition_point(|c| c.when() < from.when());
            let clicked_between = clicks
                .get(first_click)
                .is_some_and(|c| c.when() < to.when());
            if to.at_ms - from.at_ms <= REFORMULATION_WINDOW_MS && !clicked_between {
                count += 1;
            }
        }
    }
    count
}

#[cfg(test)]
mod tests;
