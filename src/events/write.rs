//! The Redis commands that record searches (SPEC section 4): one
//! MULTI/EXEC pipeline per batch of records, one per counter flush.
//!
//! Per batch, commands that many events share are merged: one `ZADD` per
//! day for the daily index, one `LPUSH` (of all of a user's searches) plus
//! `LTRIM` and `EXPIRE` per user, and the profile updates per user. Each search
//! itself costs an `HSET` and an `EXPIRE`.
//!
//! The commands are appended to any [`Commands`]: the writer's raw RESP
//! buffer on the hot path, or a redis-rs pipeline for replay.

use std::collections::BTreeMap;

use super::SearchEvent;
use super::counters::Counters;
use crate::answer::facts::write_json_str;
use crate::redis::Commands;
use crate::redis::keys::{self, Prefix};
use crate::redis::log_target::{Pipeline, pipeline};

/// What the writer needs to know to name and expire keys.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `key_prefix`, and whether per-user keys carry cluster hash tags.
    pub prefix: Prefix,
    /// `EXPIRE` for every log and analytics key, in seconds.
    pub retention_secs: u64,
    /// `user:<id>:searches` keeps this many entries.
    pub history_limit: usize,
}

/// The values of one search that several commands need, formatted once:
/// this runs for every logged search.
struct Prepared<'a> {
    ev: &'a SearchEvent,
    id: &'a str,
    timestamp: &'a str,
    /// Empty when the answer has none.
    confidence: &'a str,
    response_time: &'a str,
}

/// Formats the values of every search of `events` into `text` (one
/// allocation for a whole batch, each value validated once) and returns
/// them.
fn prepare<'a>(events: &'a [SearchEvent], text: &'a mut String) -> Vec<Prepared<'a>> {
    use std::fmt::Write as _;
    text.clear();
    text.reserve(events.len() * 80);
    let mut spans = Vec::with_capacity(events.len());
    for ev in events {
        let start = text.len();
        let mut id = uuid::Uuid::encode_buffer();
        text.push_str(ev.search_id.hyphenated().encode_lower(&mut id));
        let id_end = text.len();
        let mut ts = [0; crate::time::RFC3339_MS_LEN];
        match crate::time::rfc3339_ms_into(ev.timestamp_ms, &mut ts) {
            Some(t) => text.push_str(t),
            None => text.push_str(&ev.timestamp()),
        }
        let ts_end = text.len();
        if let Some(c) = ev.meta.confidence {
            let _ = write!(text, "{c}");
        }
        let confidence_end = text.len();
        push_millis(text, ev.response_time_ms);
        spans.push([start, id_end, ts_end, confidence_end, text.len()]);
    }
    let text: &'a str = text;
    events
        .iter()
        .zip(spans)
        .map(|(ev, [a, b, c, d, e])| Prepared {
            ev,
            id: &text[a..b],
            timestamp: &text[b..c],
            confidence: &text[c..d],
            response_time: &text[d..e],
        })
        .collect()
}

/// Appends `ms` as `format!("{ms:.3}")` would, without the formatting
/// machinery (a third of the cost of encoding a search) where the result is
/// certainly the same: `ms * 1000` computed in floating point rounds to the
/// same integer as the exact value unless it lies next to a tie, and those
/// (and anything negative, huge or not finite) go the formatted way.
fn push_millis(text: &mut String, ms: f64) {
    use std::fmt::Write as _;
    let thousandths = ms * 1000.0;
    let fraction = thousandths - thousandths.trunc();
    if ms.is_sign_positive() && thousandths < 1e12 && (fraction - 0.5).abs() > 1e-3 {
        let n = thousandths.round() as u64;
        let mut digits = itoa::Buffer::new();
        text.push_str(digits.format(n / 1000));
        text.push('.');
        let frac = (n % 1000) as u16;
        text.push(char::from(b'0' + (frac / 100) as u8));
        text.push(char::from(b'0' + (frac / 10 % 10) as u8));
        text.push(char::from(b'0' + (frac % 10) as u8));
    } else {
        let _ = write!(text, "{ms:.3}");
    }
}

/// The fields of `search:<search_id>`, in a stable order.
pub fn record_fields(ev: &SearchEvent) -> Vec<(&'static str, String)> {
    let mut text = String::new();
    let prepared = prepare(std::slice::from_ref(ev), &mut text);
    with_fields(&prepared[0], |fields| {
        fields
            .iter()
            .map(|(k, v)| (*k, String::from_utf8_lossy(v).into_owned()))
            .collect()
    })
}

/// Calls `f` with the fields of the search's record.
fn with_fields<R>(p: &Prepared<'_>, f: impl FnOnce(&[(&'static str, &[u8])]) -> R) -> R {
    let ev = p.ev;
    // Derived once per answer and shared by all its hits.
    let facts = ev.meta.log_facts();
    let mut results = itoa::Buffer::new();
    let mut status = itoa::Buffer::new();
    // Absent optional values are left out rather than stored as "": fewer
    // fields make the record cheaper for Redis, and readers see "missing".
    let all: [(&'static str, &[u8], bool); RECORD_FIELDS] = [
        ("search_id", p.id.as_bytes(), true),
        ("timestamp", p.timestamp.as_bytes(), true),
        ("user_id", opt(&ev.user_id), false),
        ("user_uuid", opt(&ev.user_uuid), false),
        ("session_id", opt(&ev.session_id), false),
        ("query", ev.query.as_bytes(), true),
        ("query_normalized", ev.query_normalized.as_bytes(), true),
        ("intent", opt(&ev.meta.intent), false),
        ("confidence", p.confidence.as_bytes(), false),
        (
            "results_count",
            results.format(ev.meta.results_count).as_bytes(),
            true,
        ),
        ("product_ids", facts.product_ids_json.as_bytes(), true),
        ("supplier_ids", facts.supplier_ids_json.as_bytes(), true),
        (
            "product_suppliers",
            facts.product_suppliers_json.as_bytes(),
            true,
        ),
        ("response_time_ms", p.response_time.as_bytes(), true),
        ("cache", ev.cache.as_str().as_bytes(), true),
        ("status", status.format(ev.status).as_bytes(), true),
        ("route", ev.route.as_bytes(), true),
    ];
    let mut fields: [(&'static str, &[u8]); RECORD_FIELDS] = [("", &[]); RECORD_FIELDS];
    let mut n = 0;
    for (k, v, required) in all {
        if required || !v.is_empty() {
            fields[n] = (k, v);
            n += 1;
        }
    }
    f(&fields[..n])
}

const RECORD_FIELDS: usize = 17;

fn opt(v: &Option<String>) -> &[u8] {
    v.as_deref().unwrap_or("").as_bytes()
}

/// The compact JSON entry of `user:<id>:searches`.
pub fn history_entry(ev: &SearchEvent) -> String {
    let mut text = String::new();
    history_json(&prepare(std::slice::from_ref(ev), &mut text)[0])
}

fn history_json(p: &Prepared<'_>) -> String {
    let ev = p.ev;
    let mut out = String::with_capacity(128 + ev.query.len());
    // The id (hex and hyphens), the timestamp (digits and punctuation) and
    // the cache result (a fixed word) need no escaping.
    out.push_str("{\"search_id\":\"");
    out.push_str(p.id);
    out.push_str("\",\"timestamp\":\"");
    out.push_str(p.timestamp);
    out.push_str("\",\"query\":");
    write_json_str(&mut out, &ev.query);
    out.push_str(",\"intent\":");
    match &ev.meta.intent {
        Some(i) => write_json_str(&mut out, i),
        None => out.push_str("null"),
    }
    out.push_str(",\"results_count\":");
    out.push_str(itoa::Buffer::new().format(ev.meta.results_count));
    out.push_str(",\"cache\":\"");
    out.push_str(ev.cache.as_str());
    out.push_str("\"}");
    out
}

/// One transaction writing the records of a batch of searches.
pub fn records(layout: &Layout, events: &[SearchEvent]) -> Pipeline {
    let mut pipe = pipeline();
    pipe.atomic();
    records_into(layout, events, &mut pipe);
    pipe
}

/// One transaction adding the summed counters.
pub fn counters(layout: &Layout, counters: &Counters) -> Pipeline {
    let mut pipe = pipeline();
    pipe.atomic();
    counters_into(layout, counters, &mut pipe);
    pipe
}

/// Appends the commands recording a batch of searches.
pub fn records_into(layout: &Layout, events: &[SearchEvent], out: &mut impl Commands) {
    let p = &layout.prefix;
    let mut ttl_buf = itoa::Buffer::new();
    let ttl = ttl_buf.format(layout.retention_secs).as_bytes();

    let mut text = String::new();
    let prepared = prepare(events, &mut text);
    let mut daily: BTreeMap<&str, Vec<&Prepared<'_>>> = BTreeMap::new();
    let mut users: BTreeMap<&str, Vec<&Prepared<'_>>> = BTreeMap::new();
    for pr in &prepared {
        let key = keys::search(p, pr.id);
        with_fields(pr, |fields| {
            let mut args: [&[u8]; 2 + 2 * RECORD_FIELDS] = [&[]; 2 + 2 * RECORD_FIELDS];
            args[0] = b"HSET";
            args[1] = key.as_bytes();
            for (i, (k, v)) in fields.iter().enumerate() {
                args[2 + 2 * i] = k.as_bytes();
                args[3 + 2 * i] = v;
            }
            out.command(&args[..2 + 2 * fields.len()]);
        });
        out.command(&[b"EXPIRE", key.as_bytes(), ttl]);
        let date = pr.timestamp.get(..10).unwrap_or_default();
        daily.entry(date).or_default().push(pr);
        if let Some(user) = pr.ev.user_id.as_deref() {
            users.entry(user).or_default().push(pr);
        }
    }

    for (date, members) in &daily {
        daily_index(out, &keys::searches_daily(p, date), members, ttl);
    }
    let keep = layout.history_limit.max(1) - 1;
    let mut keep_buf = itoa::Buffer::new();
    let keep = keep_buf.format(keep).as_bytes();
    for (user, searches) in &users {
        user_history(out, p, user, searches, ttl, keep);
        user_profile(out, &keys::user_profile(p, user), searches);
    }
}

/// `searches:daily:<date>`: one ZADD of the day's searches, scored by time.
fn daily_index(out: &mut impl Commands, key: &str, members: &[&Prepared<'_>], ttl: &[u8]) {
    // All scores formatted into one string, then sliced.
    let mut scores = String::with_capacity(14 * members.len());
    let mut ends = Vec::with_capacity(members.len());
    for pr in members {
        scores.push_str(itoa::Buffer::new().format(pr.ev.timestamp_ms));
        ends.push(scores.len());
    }
    let mut args: Vec<&[u8]> = Vec::with_capacity(2 + 2 * members.len());
    args.push(b"ZADD");
    args.push(key.as_bytes());
    let mut start = 0;
    for (end, pr) in ends.iter().zip(members) {
        args.push(&scores.as_bytes()[start..*end]);
        args.push(pr.id.as_bytes());
        start = *end;
    }
    out.command(&args);
    out.command(&[b"EXPIRE", key.as_bytes(), ttl]);
}

/// `user:<id>:searches`: the user's newest searches, capped at `keep` + 1.
fn user_history(
    out: &mut impl Commands,
    p: &Prefix,
    user: &str,
    searches: &[&Prepared<'_>],
    ttl: &[u8],
    keep: &[u8],
) {
    let history = keys::user_searches(p, user);
    // LPUSH of several values leaves the last one at the head: push
    // oldest first so the list reads newest first.
    let entries: Vec<String> = searches.iter().map(|pr| history_json(pr)).collect();
    let mut lpush: Vec<&[u8]> = Vec::with_capacity(2 + entries.len());
    lpush.push(b"LPUSH");
    lpush.push(history.as_bytes());
    lpush.extend(entries.iter().map(|e| e.as_bytes()));
    out.command(&lpush);
    out.command(&[b"LTRIM", history.as_bytes(), b"0", keep]);
    out.command(&[b"EXPIRE", history.as_bytes(), ttl]);
}

/// `user:<id>:profile`: first and last seen, the latest uuid and session,
/// the search count and the intents.
fn user_profile(out: &mut impl Commands, profile: &str, searches: &[&Prepared<'_>]) {
    // The profile is shared with the application: only our fields are
    // written, and it never expires.
    let (first, last) = (searches[0], searches[searches.len() - 1]);
    out.command(&[
        b"HSETNX",
        profile.as_bytes(),
        b"first_seen",
        first.timestamp.as_bytes(),
    ]);
    let latest =
        |f: fn(&SearchEvent) -> Option<&str>| searches.iter().rev().find_map(|pr| f(pr.ev));
    let mut hset: Vec<&[u8]> = vec![
        b"HSET",
        profile.as_bytes(),
        b"last_seen",
        last.timestamp.as_bytes(),
    ];
    if let Some(uuid) = latest(|e| e.user_uuid.as_deref()) {
        hset.extend([&b"user_uuid"[..], uuid.as_bytes()]);
    }
    if let Some(session) = latest(|e| e.session_id.as_deref()) {
        hset.extend([&b"last_session_id"[..], session.as_bytes()]);
    }
    out.command(&hset);
    let mut count = itoa::Buffer::new();
    out.command(&[
        b"HINCRBY",
        profile.as_bytes(),
        b"search_count",
        count.format(searches.len()).as_bytes(),
    ]);
    let mut intents: BTreeMap<&str, u64> = BTreeMap::new();
    for pr in searches {
        if let Some(i) = pr.ev.meta.intent.as_deref() {
            *intents.entry(i).or_default() += 1;
        }
    }
    for (intent, n) in intents {
        let field = format!("intent:{intent}");
        out.command(&[
            b"HINCRBY",
            profile.as_bytes(),
            field.as_bytes(),
            count.format(n).as_bytes(),
        ]);
    }
}

/// Appends the commands adding the summed counters.
pub fn counters_into(layout: &Layout, counters: &Counters, out: &mut impl Commands) {
    let mut ttl_buf = itoa::Buffer::new();
    let ttl = ttl_buf.format(layout.retention_secs).as_bytes();
    let mut by = itoa::Buffer::new();
    counters.for_each_write(&layout.prefix, |key, is_hash, increments| {
        for (member, n) in increments {
            if is_hash {
                out.command(&[
                    b"HINCRBY",
                    key.as_bytes(),
                    member.as_bytes(),
                    by.format(*n).as_bytes(),
                ]);
            } else {
                out.command(&[
                    b"ZINCRBY",
                    key.as_bytes(),
                    by.format(*n).as_bytes(),
                    member.as_bytes(),
                ]);
            }
        }
        out.command(&[b"EXPIRE", key.as_bytes(), ttl]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::SearchMeta;
    use crate::events::CacheResult;
    use crate::redis::RespBuf;
    use std::sync::Arc;

    fn event(user: Option<&str>, query: &str) -> SearchEvent {
        SearchEvent {
            search_id: crate::events::new_search_id(),
            timestamp_ms: 1_764_106_056_927,
            user_id: user.map(str::to_owned),
            user_uuid: Some("uu".into()),
            session_id: None,
            query: query.into(),
            query_normalized: query.to_lowercase(),
            meta: Arc::new(SearchMeta {
                intent: Some("product_search".into()),
                confidence: Some(0.5),
                results_count: 1,
                products: vec![("p1".into(), Some("s1".into()))],
                ..SearchMeta::default()
            }),
            response_time_ms: 1.25,
            cache: CacheResult::Hit,
            status: 200,
            route: "search".into(),
        }
    }

    #[test]
    fn the_raw_batch_and_the_pipeline_carry_the_same_commands() {
        let layout = Layout {
            prefix: Prefix::single_node("t:"),
            retention_secs: 60,
            history_limit: 10,
        };
        let events = [
            event(Some("u1"), "Milk \"2%\""),
            event(Some("u1"), "bread"),
            event(None, "eggs\n"),
        ];
        let mut raw = RespBuf::default();
        records_into(&layout, &events, &mut raw);
        let mut pipe = pipeline();
        records_into(&layout, &events, &mut pipe);
        assert_eq!(raw.as_bytes(), &pipe.get_packed_pipeline()[..]);

        let mut c = Counters::default();
        events.iter().for_each(|e| c.add(e));
        let mut raw = RespBuf::default();
        counters_into(&layout, &c, &mut raw);
        let mut pipe = pipeline();
        counters_into(&layout, &c, &mut pipe);
        assert_eq!(raw.as_bytes(), &pipe.get_packed_pipeline()[..]);
    }

    #[test]
    fn response_times_read_as_formatted_to_three_decimals() {
        let mut probes = vec![
            0.0,
            -0.0,
            0.0004,
            0.0005,
            0.0015,
            0.4,
            1.25,
            1.2345,
            1.2355,
            2.675,
            999.9995,
            1e11,
            1e12 - 0.001,
            1e13,
            -1.5,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
        ];
        // Many ordinary values, and every tie of thousandths below 100 ms.
        let mut x: f64 = 0.000_123_4;
        while x < 1e9 {
            probes.push(x);
            x = x * 1.37 + 0.000_77;
        }
        probes.extend((0..200_000).map(|i| f64::from(i) / 2000.0));
        for ms in probes {
            let mut text = String::new();
            push_millis(&mut text, ms);
            assert_eq!(text, format!("{ms:.3}"), "{ms:e}");
        }
    }

    #[test]
    fn history_entries_are_the_json_serde_would_write() {
        let mut ev = event(Some("u"), "quo\"te\\");
        let entry: serde_json::Value = serde_json::from_str(&history_entry(&ev)).unwrap();
        assert_eq!(
            entry,
            serde_json::json!({
                "search_id": ev.search_id.to_string(),
                "timestamp": ev.timestamp(),
                "query": "quo\"te\\",
                "intent": "product_search",
                "results_count": 1,
                "cache": "hit",
            })
        );
        Arc::make_mut(&mut ev.meta).intent = None;
        let entry: serde_json::Value = serde_json::from_str(&history_entry(&ev)).unwrap();
        assert_eq!(entry["intent"], serde_json::Value::Null);
    }
}
