//! The Redis commands that record searches (SPEC section 4): one
//! MULTI/EXEC pipeline per batch of records, one per counter flush.
//!
//! Per batch, commands that many events share are merged: one `ZADD` per
//! day for the daily index, one `LPUSH` (of all of a user's searches) plus
//! `LTRIM` and `EXPIRE` per user, and the profile updates per user. Each search
//! itself costs an `HSET` and an `EXPIRE`.

use std::collections::BTreeMap;

use bb8_redis::redis::{self, Pipeline};
use serde_json::json;

use super::counters::Counters;
use super::{SearchEvent, date_and_hour};
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

/// The fields of `search:<search_id>`, in a stable order.
pub fn record_fields(ev: &SearchEvent) -> Vec<(&'static str, String)> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let product_suppliers: serde_json::Map<String, serde_json::Value> = ev
        .meta
        .products
        .iter()
        .filter_map(|(p, s)| Some((p.clone(), json!(s.as_ref()?))))
        .collect();
    vec![
        ("search_id", ev.search_id.to_string()),
        ("timestamp", ev.timestamp()),
        ("user_id", opt(&ev.user_id)),
        ("user_uuid", opt(&ev.user_uuid)),
        ("session_id", opt(&ev.session_id)),
        ("query", ev.query.clone()),
        ("query_normalized", ev.query_normalized.clone()),
        ("intent", opt(&ev.meta.intent)),
        (
            "confidence",
            ev.meta
                .confidence
                .map(|c| c.to_string())
                .unwrap_or_default(),
        ),
        ("results_count", ev.meta.results_count.to_string()),
        ("product_ids", json!(ev.product_ids()).to_string()),
        ("supplier_ids", json!(ev.supplier_ids()).to_string()),
        (
            "product_suppliers",
            serde_json::Value::Object(product_suppliers).to_string(),
        ),
        ("response_time_ms", format!("{:.3}", ev.response_time_ms)),
        ("cache", ev.cache.as_str().to_string()),
        ("status", ev.status.to_string()),
        ("route", ev.route.to_string()),
    ]
}

/// The compact JSON entry of `user:<id>:searches`.
pub fn history_entry(ev: &SearchEvent) -> String {
    json!({
        "search_id": ev.search_id.to_string(),
        "timestamp": ev.timestamp(),
        "query": ev.query,
        "intent": ev.meta.intent,
        "results_count": ev.meta.results_count,
        "cache": ev.cache.as_str(),
    })
    .to_string()
}

/// One transaction writing the records of a batch of searches.
pub fn records(layout: &Layout, events: &[SearchEvent]) -> Pipeline {
    let p = &layout.prefix;
    let ttl = layout.retention_secs;
    let mut pipe = redis::pipe();
    pipe.atomic();

    let mut daily: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let mut users: BTreeMap<&str, Vec<&SearchEvent>> = BTreeMap::new();
    for ev in events {
        let key = keys::search(p, &ev.search_id.to_string());
        pipe.cmd("HSET").arg(&key);
        for (field, value) in record_fields(ev) {
            pipe.arg(field).arg(value);
        }
        pipe.ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
        let (date, _) = date_and_hour(ev.timestamp_ms);
        daily
            .entry(date)
            .or_default()
            .push((ev.timestamp_ms, ev.search_id.to_string()));
        if let Some(user) = ev.user_id.as_deref() {
            users.entry(user).or_default().push(ev);
        }
    }

    for (date, members) in &daily {
        let key = keys::searches_daily(p, date);
        pipe.cmd("ZADD").arg(&key);
        for (score, member) in members {
            pipe.arg(*score).arg(member);
        }
        pipe.ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
    }

    for (user, searches) in &users {
        let history = keys::user_searches(p, user);
        // LPUSH of several values leaves the last one at the head: push
        // oldest first so the list reads newest first.
        pipe.cmd("LPUSH").arg(&history);
        for ev in searches {
            pipe.arg(history_entry(ev));
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
            .arg(first.timestamp())
            .ignore();
        pipe.cmd("HSET")
            .arg(&profile)
            .arg("last_seen")
            .arg(last.timestamp());
        if let Some(uuid) = searches.iter().rev().find_map(|e| e.user_uuid.as_deref()) {
            pipe.arg("user_uuid").arg(uuid);
        }
        if let Some(session) = searches.iter().rev().find_map(|e| e.session_id.as_deref()) {
            pipe.arg("last_session_id").arg(session);
        }
        pipe.ignore();
        pipe.cmd("HINCRBY")
            .arg(&profile)
            .arg("search_count")
            .arg(searches.len())
            .ignore();
        let mut intents: BTreeMap<&str, u64> = BTreeMap::new();
        for ev in searches {
            if let Some(i) = ev.meta.intent.as_deref() {
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
    for (counter, members) in counters.iter() {
        let key = counter.redis_key(&layout.prefix);
        let cmd = if counter.is_hash() {
            "HINCRBY"
        } else {
            "ZINCRBY"
        };
        let mut sorted: Vec<_> = members.iter().collect();
        sorted.sort();
        for (member, by) in sorted {
            if counter.is_hash() {
                pipe.cmd(cmd).arg(&key).arg(member).arg(*by).ignore();
            } else {
                pipe.cmd(cmd).arg(&key).arg(*by).arg(member).ignore();
            }
        }
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(layout.retention_secs)
            .ignore();
    }
    pipe
}
