//! The Redis commands that record searches (SPEC section 4): one
//! MULTI/EXEC pipeline per batch of records, one per counter flush.
//!
//! Per batch, commands that many events share are merged: one `ZADD` per
//! day for the daily index, one `LPUSH` (of all of a user's searches) plus
//! `LTRIM` and `EXPIRE` per user, and the profile updates per user. Each search
//! itself costs an `HSET` and an `EXPIRE`.

use std::collections::BTreeMap;

use bb8_redis::redis::{self, Pipeline};
use serde::Serialize;

use super::SearchEvent;
use super::counters::Counters;
use crate::redis::keys;

/// What the writer needs to know to name and expire keys.
#[derive(Clone, Debug)]
pub struct Layout {
    pub prefix: String,
    /// `EXPIRE` for every log and analytics key, in seconds.
    pub retention_secs: u64,
    /// `user:<id>:searches` keeps this many entries.
    pub history_limit: usize,
}

/// The values of one search that several commands need, computed once.
struct Prepared<'a> {
    ev: &'a SearchEvent,
    id: String,
    timestamp: String,
}

impl<'a> Prepared<'a> {
    fn new(ev: &'a SearchEvent) -> Self {
        Prepared {
            ev,
            id: ev.search_id.to_string(),
            timestamp: ev.timestamp(),
        }
    }
}

/// The fields of `search:<search_id>`, in a stable order.
pub fn record_fields(ev: &SearchEvent) -> Vec<(&'static str, String)> {
    let p = Prepared::new(ev);
    let mut out = Vec::with_capacity(17);
    each_field(&p, |k, v| {
        out.push((k, String::from_utf8_lossy(v).into_owned()))
    });
    out
}

fn each_field(p: &Prepared<'_>, mut f: impl FnMut(&'static str, &[u8])) {
    let ev = p.ev;
    // Derived once per answer and shared by all its hits.
    let facts = ev.meta.log_facts();
    let mut num = itoa::Buffer::new();
    let confidence = ev
        .meta
        .confidence
        .map(|c| c.to_string())
        .unwrap_or_default();
    let response_time = format!("{:.3}", ev.response_time_ms);

    let results = num.format(ev.meta.results_count);
    let mut status = itoa::Buffer::new();
    // Absent optional values are left out rather than stored as "": fewer
    // fields make the record cheaper for Redis, and readers see "missing".
    let fields: [(&'static str, &[u8], bool); 17] = [
        ("search_id", p.id.as_bytes(), true),
        ("timestamp", p.timestamp.as_bytes(), true),
        ("user_id", opt(&ev.user_id), false),
        ("user_uuid", opt(&ev.user_uuid), false),
        ("session_id", opt(&ev.session_id), false),
        ("query", ev.query.as_bytes(), true),
        ("query_normalized", ev.query_normalized.as_bytes(), true),
        ("intent", opt(&ev.meta.intent), false),
        ("confidence", confidence.as_bytes(), false),
        ("results_count", results.as_bytes(), true),
        ("product_ids", facts.product_ids_json.as_bytes(), true),
        ("supplier_ids", facts.supplier_ids_json.as_bytes(), true),
        (
            "product_suppliers",
            facts.product_suppliers_json.as_bytes(),
            true,
        ),
        ("response_time_ms", response_time.as_bytes(), true),
        ("cache", ev.cache.as_str().as_bytes(), true),
        ("status", status.format(ev.status).as_bytes(), true),
        ("route", ev.route.as_bytes(), true),
    ];
    for (k, v, required) in fields {
        if required || !v.is_empty() {
            f(k, v);
        }
    }
}

fn opt(v: &Option<String>) -> &[u8] {
    v.as_deref().unwrap_or("").as_bytes()
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    search_id: &'a str,
    timestamp: &'a str,
    query: &'a str,
    intent: Option<&'a str>,
    results_count: u32,
    cache: &'a str,
}

/// The compact JSON entry of `user:<id>:searches`.
pub fn history_entry(ev: &SearchEvent) -> String {
    history_json(&Prepared::new(ev))
}

fn history_json(p: &Prepared<'_>) -> String {
    let entry = HistoryEntry {
        search_id: &p.id,
        timestamp: &p.timestamp,
        query: &p.ev.query,
        intent: p.ev.meta.intent.as_deref(),
        results_count: p.ev.meta.results_count,
        cache: p.ev.cache.as_str(),
    };
    serde_json::to_string(&entry).unwrap_or_default()
}

/// One transaction writing the records of a batch of searches.
pub fn records(layout: &Layout, events: &[SearchEvent]) -> Pipeline {
    let p = &layout.prefix;
    let ttl = layout.retention_secs;
    let mut pipe = redis::pipe();
    pipe.atomic();

    let prepared: Vec<Prepared<'_>> = events.iter().map(Prepared::new).collect();
    let mut daily: BTreeMap<&str, Vec<&Prepared<'_>>> = BTreeMap::new();
    let mut users: BTreeMap<&str, Vec<&Prepared<'_>>> = BTreeMap::new();
    for pr in &prepared {
        let key = keys::search(p, &pr.id);
        pipe.cmd("HSET").arg(&key);
        each_field(pr, |field, value| {
            pipe.arg(field).arg(value);
        });
        pipe.ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
        daily.entry(&pr.timestamp[..10]).or_default().push(pr);
        if let Some(user) = pr.ev.user_id.as_deref() {
            users.entry(user).or_default().push(pr);
        }
    }

    for (date, members) in &daily {
        let key = keys::searches_daily(p, date);
        pipe.cmd("ZADD").arg(&key);
        for pr in members {
            pipe.arg(pr.ev.timestamp_ms).arg(&pr.id);
        }
        pipe.ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
    }

    for (user, searches) in &users {
        let history = keys::user_searches(p, user);
        // LPUSH of several values leaves the last one at the head: push
        // oldest first so the list reads newest first.
        pipe.cmd("LPUSH").arg(&history);
        for pr in searches {
            pipe.arg(history_json(pr));
        }
        pipe.ignore();
        let keep = layout.history_limit.max(1) as i64;
        pipe.cmd("LTRIM")
            .arg(&history)
            .arg(0)
            .arg(keep - 1)
            .ignore();
        pipe.cmd("EXPIRE").arg(&history).arg(ttl).ignore();

        // The profile is shared with the application: only our fields are
        // written, and it never expires.
        let profile = keys::user_profile(p, user);
        let (first, last) = (searches[0], searches[searches.len() - 1]);
        pipe.cmd("HSETNX")
            .arg(&profile)
            .arg("first_seen")
            .arg(&first.timestamp)
            .ignore();
        pipe.cmd("HSET")
            .arg(&profile)
            .arg("last_seen")
            .arg(&last.timestamp);
        let latest =
            |f: fn(&SearchEvent) -> Option<&str>| searches.iter().rev().find_map(|pr| f(pr.ev));
        if let Some(uuid) = latest(|e| e.user_uuid.as_deref()) {
            pipe.arg("user_uuid").arg(uuid);
        }
        if let Some(session) = latest(|e| e.session_id.as_deref()) {
            pipe.arg("last_session_id").arg(session);
        }
        pipe.ignore();
        pipe.cmd("HINCRBY")
            .arg(&profile)
            .arg("search_count")
            .arg(searches.len())
            .ignore();
        let mut intents: BTreeMap<&str, u64> = BTreeMap::new();
        for pr in searches {
            if let Some(i) = pr.ev.meta.intent.as_deref() {
                *intents.entry(i).or_default() += 1;
            }
        }
        for (intent, n) in intents {
            pipe.cmd("HINCRBY")
                .arg(&profile)
                .arg(format!("intent:{intent}"))
                .arg(n)
                .ignore();
        }
    }
    pipe
}

/// One transaction adding the summed counters.
pub fn counters(layout: &Layout, counters: &Counters) -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for w in counters.writes(&layout.prefix) {
        for (member, by) in &w.increments {
            if w.is_hash {
                pipe.cmd("HINCRBY")
                    .arg(&w.key)
                    .arg(member)
                    .arg(*by)
                    .ignore();
            } else {
                pipe.cmd("ZINCRBY")
                    .arg(&w.key)
                    .arg(*by)
                    .arg(member)
                    .ignore();
            }
        }
        pipe.cmd("EXPIRE")
            .arg(&w.key)
            .arg(layout.retention_secs)
            .ignore();
    }
    pipe
}
