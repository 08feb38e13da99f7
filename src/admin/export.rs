//! Export of logged searches as JSONL (SPEC section 1: `leafcache export`,
//! and `GET /v1/export`), the training data of the ranking model.
//!
//! The export is pulled a page at a time: each day's `searches:daily:<date>`
//! index is read [`PAGE`] ids at a time, and one pipelined round trip fetches
//! the records of a page, their feedback lists, and the ids of the next page.
//! Memory stays flat however many records a range holds.

use std::collections::HashMap;
use std::time::Duration;

use bb8_redis::redis::{self, FromRedisValue};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Number, Value};
use tokio::time::Instant;

use super::dates;
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
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL").arg(keys::search(&self.prefix, id));
                pipe.cmd("LRANGE")
                    .arg(keys::search_feedback(&self.prefix, id))
                    .arg(0)
                    .arg(-1);
            }
            if more {
                self.page_of_ids(&mut pipe, self.offset);
            }
            let values: Vec<redis::Value> = self
                .redis
                .query(Command::Pipe(&pipe), Instant::now() + DEADLINE)
                .await?;
            let mut values = values.into_iter();
            let mut page = Page {
                day: self.day,
                jsonl: Vec::with_capacity(ids.len() * 512),
                records: 0,
                scanned: ids.len(),
            };
            for _ in &ids {
                let record: HashMap<String, Vec<u8>> = take(values.next())?;
                let feedback: Vec<Vec<u8>> = take(values.next())?;
                // An id whose record expired before its index entry.
                if record.is_empty() || !self.wanted(&record) {
                    continue;
                }
                write_line(&record, &feedback, &mut page.jsonl);
                page.records += 1;
            }
            self.next_ids = Some(if more {
                take(values.next())?
            } else {
                Vec::new()
            });
            return Ok(Some(page));
        }
    }

    fn wanted(&self, record: &HashMap<String, Vec<u8>>) -> bool {
        self.range.intents.is_empty()
            || record.get("intent").is_some_and(|i| {
                self.range
                    .intents
                    .iter()
                    .any(|w| w.as_bytes() == i.as_slice())
            })
    }
}

fn take<T: FromRedisValue>(value: Option<redis::Value>) -> Result<T, RedisFailure> {
    let value = value.unwrap_or(redis::Value::Nil);
    redis::from_redis_value(value).map_err(|e| RedisFailure::Redis(e.into()))
}

/// How a field of `search:<id>` is exported.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Float,
    /// Stored as JSON text (lists and maps): exported as JSON.
    Json,
    /// A feedback counter: 0 when absent.
    Counter,
}

/// The fields of a record, in the order they are exported.
const FIELDS: [(&str, Kind); 20] = [
    ("search_id", Kind::Text),
    ("timestamp", Kind::Text),
    ("user_id", Kind::Text),
    ("user_uuid", Kind::Text),
    ("session_id", Kind::Text),
    ("query", Kind::Text),
    ("query_normalized", Kind::Text),
    ("intent", Kind::Text),
    ("confidence", Kind::Float),
    ("results_count", Kind::Integer),
    ("product_ids", Kind::Json),
    ("supplier_ids", Kind::Json),
    ("product_suppliers", Kind::Json),
    ("response_time_ms", Kind::Float),
    ("cache", Kind::Text),
    ("status", Kind::Integer),
    ("route", Kind::Text),
    ("clicks", Kind::Counter),
    ("orders", Kind::Counter),
    ("purchases", Kind::Counter),
];

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn value_of(kind: Kind, raw: Option<&[u8]>) -> Value {
    let Some(raw) = raw else {
        return match kind {
            Kind::Counter => Value::from(0),
            _ => Value::Null,
        };
    };
    let s = text(raw);
    let number = || {
        s.parse::<i64>().ok().map(Value::from).or_else(|| {
            s.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
        })
    };
    match kind {
        Kind::Text => Value::String(s),
        Kind::Integer | Kind::Counter => number().unwrap_or(Value::String(s)),
        Kind::Float => s
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(s.clone()), Value::Number),
        Kind::Json => serde_json::from_str(&s).unwrap_or(Value::String(s)),
    }
}

/// One export line: the record's fields in a stable order, any field the
/// layout does not name after them as text, then `feedback`.
struct Line<'a> {
    record: &'a HashMap<String, Vec<u8>>,
    feedback: &'a [Vec<u8>],
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (name, kind) in FIELDS {
            map.serialize_entry(
                name,
                &value_of(kind, self.record.get(name).map(Vec::as_slice)),
            )?;
        }
        let mut extra: Vec<(&String, &Vec<u8>)> = self
            .record
            .iter()
            .filter(|(k, _)| !FIELDS.iter().any(|(n, _)| n == k) && k.as_str() != "feedback")
            .collect();
        extra.sort();
        for (k, v) in extra {
            map.serialize_entry(k, &text(v))?;
        }
        let feedback: Vec<Value> = self
            .feedback
            .iter()
            .map(|raw| serde_json::from_slice(raw).unwrap_or_else(|_| Value::String(text(raw))))
            .collect();
        map.serialize_entry("feedback", &feedback)?;
        map.end()
    }
}

/// Appends one JSON line for a record and its feedback list.
pub fn write_line(record: &HashMap<String, Vec<u8>>, feedback: &[Vec<u8>], out: &mut Vec<u8>) {
    // Serializing maps of strings and `Value`s into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &Line { record, feedback });
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_json_fields_are_typed_and_absent_optionals_are_null() {
        let record: HashMap<String, Vec<u8>> = [
            ("search_id", "s1"),
            ("query", "milk"),
            ("confidence", "0.9"),
            ("results_count", "3"),
            ("product_ids", "[\"p1\"]"),
            ("product_suppliers", "{\"p1\":\"s1\"}"),
            ("response_time_ms", "12.500"),
            ("status", "200"),
            ("clicks", "2"),
            ("app_field", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        let feedback =
            vec![br#"{"event":"click","product_id":"p1","position":1,"timestamp":"t"}"#.to_vec()];
        let mut out = Vec::new();
        write_line(&record, &feedback, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["confidence"], 0.9);
        assert_eq!(v["results_count"], 3);
        assert_eq!(v["response_time_ms"], 12.5);
        assert_eq!(v["product_ids"][0], "p1");
        assert_eq!(v["product_suppliers"]["p1"], "s1");
        assert_eq!(v["user_id"], Value::Null);
        assert_eq!(v["intent"], Value::Null);
        assert_eq!(v["clicks"], 2);
        assert_eq!(v["orders"], 0);
        assert_eq!(v["app_field"], "x");
        assert_eq!(v["feedback"][0]["position"], 1);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("{\"search_id\":\"s1\",\"timestamp\":null"),
            "{text}"
        );
    }
}
