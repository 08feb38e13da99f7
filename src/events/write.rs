//! The Redis commands that record searches (docs/contract.md section 4), for a batch of
//! records or a counter flush; the writer sends them as transactions of a
//! bounded size ([`crate::redis::log_target::TRANSACTION_MAX`]).
//!
//! Per batch, commands that many events share are merged: a `ZADD` per day
//! for the daily index, an `LPUSH` (of all of a user's searches) plus
//! `LTRIM` and `EXPIRE` per user, and the profile updates per user. No
//! command carries more than [`MEMBERS_MAX`] members, so that none keeps
//! Redis busy for long. Each search itself costs one `SET .. EX` of its
//! record ([`super::record`]).
//!
//! The commands are appended to any [`Commands`]: the writer's raw RESP
//! buffer on the hot path, or a redis-rs pipeline for replay.

use std::collections::BTreeMap;

use super::SearchEvent;
use super::counters::Counters;
use super::record::{self, Values};
use crate::answer::facts::write_json_str;
use crate::redis::Commands;
use crate::redis::keys::{self, Prefix};
use crate::redis::log_target::{Pipeline, pipeline};

/// What the writer needs to know to name and expire keys.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `key_prefix`, and whether per-user keys carry cluster hash tags.
    pub prefix: Prefix,
    /// `EXPIRE` for history, counter and feedback keys, in seconds.
    pub retention_secs: u64,
    /// `EXPIRE` for `search:<id>` and `searches:daily:<date>`, in seconds.
    pub record_retention_secs: u64,
    /// `user:<id>:searches` keeps this many entries.
    pub history_limit: usize,
}

impl Layout {
    /// The layout `config` asks for.
    pub fn new(config: &crate::config::Config) -> Layout {
        let ev = &config.events;
        Layout {
            prefix: config.redis.key_prefix.clone(),
            retention_secs: ev.retention.as_secs().max(1),
            record_retention_secs: ev.record_retention.as_secs().max(1),
            history_limit: ev.history_limit,
        }
    }
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

/// The members of one `ZADD` or `LPUSH` at most.
pub const MEMBERS_MAX: usize = 64;

/// The stored record of a search, `search:<search_id>`'s value.
pub fn record_json(ev: &SearchEvent) -> String {
    let mut text = String::new();
    let prepared = prepare(std::slice::from_ref(ev), &mut text);
    let mut out = String::new();
    record::write_compact(&mut out, &prepared[0].values());
    out
}

impl Prepared<'_> {
    fn values(&self) -> Values<'_> {
        Values {
            ev: self.ev,
            confidence: self.confidence,
            response_time: self.response_time,
        }
    }
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
    let mut record_ttl_buf = itoa::Buffer::new();
    let record_ttl = record_ttl_buf
        .format(layout.record_retention_secs)
        .as_bytes();

    let mut text = String::new();
    let prepared = prepare(events, &mut text);
    let mut daily: BTreeMap<&str, Vec<&Prepared<'_>>> = BTreeMap::new();
    let mut users: BTreeMap<&str, Vec<&Prepared<'_>>> = BTreeMap::new();
    let mut json = String::with_capacity(512);
    for pr in &prepared {
        json.clear();
        record::write_compact(&mut json, &pr.values());
        let key = keys::search(p, pr.id);
        out.command(&[b"SET", key.as_bytes(), json.as_bytes(), b"EX", record_ttl]);
        let date = pr.timestamp.get(..10).unwrap_or_default();
        daily.entry(date).or_default().push(pr);
        if let Some(user) = pr.ev.user_id.as_deref() {
            users.entry(user).or_default().push(pr);
        }
    }

    for (date, members) in &daily {
        daily_index(out, &keys::searches_daily(p, date), members, record_ttl);
    }
    let keep = layout.history_limit.max(1) - 1;
    let mut keep_buf = itoa::Buffer::new();
    let keep = keep_buf.format(keep).as_bytes();
    for (user, searches) in &users {
        user_history(out, p, user, searches, ttl, keep);
        user_profile(out, &keys::user_profile(p, user), searches, ttl);
    }
}

/// `searches:daily:<date>`: ZADDs of the day's searches, scored by time.
fn daily_index(out: &mut impl Commands, key: &str, members: &[&Prepared<'_>], ttl: &[u8]) {
    for members in members.chunks(MEMBERS_MAX) {
        daily_zadd(out, key, members);
    }
    out.command(&[b"EXPIRE", key.as_bytes(), ttl]);
}

fn daily_zadd(out: &mut impl Commands, key: &str, members: &[&Prepared<'_>]) {
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
    for entries in entries.chunks(MEMBERS_MAX) {
        let mut lpush: Vec<&[u8]> = Vec::with_capacity(2 + entries.len());
        lpush.push(b"LPUSH");
        lpush.push(history.as_bytes());
        lpush.extend(entries.iter().map(|e| e.as_bytes()));
        out.command(&lpush);
    }
    out.command(&[b"LTRIM", history.as_bytes(), b"0", keep]);
    out.command(&[b"EXPIRE", history.as_bytes(), ttl]);
}

/// `user:<id>:profile`: first and last seen, the latest uuid and session,
/// the search count and the intents; it expires `ttl` (`events.retention`)
/// after its user's last search, as their history does, so ids that are
/// seen once do not stay in Redis for good.
fn user_profile(out: &mut impl Commands, profile: &str, searches: &[&Prepared<'_>], ttl: &[u8]) {
    // The profile is shared with the application: only our fields are
    // written.
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
    out.command(&[b"EXPIRE", profile.as_bytes(), ttl]);
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
            record_retention_secs: 30,
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
