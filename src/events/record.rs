//! The record of one logged search, `search:<search_id>` (SPEC section 4):
//! one string of compact JSON, written with `SET .. EX` in one command.
//!
//! The record is the largest thing the search log keeps (one per search, for
//! `record_retention`), so it is stored as small as it reads back exactly:
//!
//! | stored | field | note |
//! |---|---|---|
//! | (key) | `search_id` | the key names it |
//! | `t` | `timestamp` | epoch milliseconds; read back as RFC 3339 |
//! | `u`, `uu`, `se` | `user_id`, `user_uuid`, `session_id` | absent when none |
//! | `q` | `query` | as received |
//! | `qn` | `query_normalized` | absent when it equals `q` |
//! | `i`, `c` | `intent`, `confidence` | absent when none |
//! | `n` | `results_count` | |
//! | `p` | `product_ids` | distinct, first listing first |
//! | `s` | `supplier_ids` | distinct, first listing first; absent when none |
//! | `ps` | `product_suppliers` | per `p`, the index in `s` of its supplier, or null |
//! | `ms` | `response_time_ms` | |
//! | `x` | `cache` | |
//! | `st` | `status` | absent when 200 |
//! | `r` | `route` | |
//!
//! Feedback counts (`clicks`, `orders`, `purchases`) are not stored here:
//! they are counted from `search:<id>:feedback` when the record is read.
//! Records written by earlier versions, hashes with the fields under their
//! full names, still read ([`Record::from_hash`]).
//!
//! Readers get a [`Record`] and turn it into the export's JSON object
//! ([`Record::write_line`]): `GET /v1/searches/<id>` and `export` answer the
//! same fields, in the same order, whichever way the record was stored.

use std::collections::HashMap;

use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Number, Value};

use crate::answer::facts::write_json_str;

/// The JSON of a record, written by the log writer: `values` are the
/// search's values formatted once (see `write::prepare`).
pub(crate) struct Values<'a> {
    pub ev: &'a super::SearchEvent,
    pub confidence: &'a str,
    pub response_time: &'a str,
}

/// Appends the record of a search to `out`.
pub(crate) fn write_compact(out: &mut String, v: &Values<'_>) {
    let ev = v.ev;
    let facts = ev.meta.log_facts();
    let mut n = itoa::Buffer::new();
    out.push_str("{\"t\":");
    out.push_str(n.format(ev.timestamp_ms));
    for (name, value) in [
        ("u", &ev.user_id),
        ("uu", &ev.user_uuid),
        ("se", &ev.session_id),
    ] {
        if let Some(value) = value {
            field(out, name);
            write_json_str(out, value);
        }
    }
    field(out, "q");
    write_json_str(out, &ev.query);
    if ev.query_normalized != ev.query {
        field(out, "qn");
        write_json_str(out, &ev.query_normalized);
    }
    if let Some(intent) = &ev.meta.intent {
        field(out, "i");
        write_json_str(out, intent);
    }
    // A confidence that is not a finite number is not JSON: left out.
    if !v.confidence.is_empty() && ev.meta.confidence.is_some_and(f64::is_finite) {
        field(out, "c");
        out.push_str(v.confidence);
    }
    field(out, "n");
    out.push_str(n.format(ev.meta.results_count));
    field(out, "p");
    out.push_str(&facts.product_ids_json);
    if facts.supplier_ids_json.len() > 2 {
        field(out, "s");
        out.push_str(&facts.supplier_ids_json);
        field(out, "ps");
        out.push_str(&facts.supplier_of_json);
    }
    if ev.response_time_ms.is_finite() {
        field(out, "ms");
        out.push_str(v.response_time);
    }
    field(out, "x");
    out.push('"');
    out.push_str(ev.cache.as_str());
    out.push('"');
    if ev.status != 200 {
        field(out, "st");
        out.push_str(n.format(ev.status));
    }
    field(out, "r");
    write_json_str(out, &ev.route);
    out.push('}');
}

fn field(out: &mut String, name: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
}

/// The stored form, as [`write_compact`] writes it. Unknown members are
/// ignored, so a later version may add some.
#[derive(Deserialize)]
struct Stored {
    t: u64,
    u: Option<String>,
    uu: Option<String>,
    se: Option<String>,
    q: String,
    qn: Option<String>,
    i: Option<String>,
    // Numbers with a fraction are read as `Number`s and parsed by
    // `str::parse`, which rounds exactly (serde_json's own float reading
    // may be one bit off).
    c: Option<Number>,
    n: u64,
    #[serde(default)]
    p: Vec<String>,
    #[serde(default)]
    s: Vec<String>,
    #[serde(default)]
    ps: Vec<Option<usize>>,
    ms: Option<Number>,
    x: String,
    st: Option<u16>,
    r: String,
}

/// A logged search as read back from Redis.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Each field of the export, by name, in [`FIELDS`] order (null when
    /// absent), without the feedback counts.
    values: Vec<Value>,
    /// Fields of a hash record that this layout does not name (something
    /// else wrote them), exported as text after the named ones.
    extra: Vec<(String, String)>,
}

/// How a field is exported.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Float,
    /// Stored as JSON text in a hash record (lists and maps).
    Json,
}

/// The fields of a record, in the order they are exported (then the
/// feedback counts and `feedback`).
const FIELDS: [(&str, Kind); 17] = [
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
];

/// The feedback counts, by the `event` of a feedback entry.
const COUNTS: [(&str, &str); 3] = [
    ("clicks", "click"),
    ("orders", "add_to_order"),
    ("purchases", "purchase"),
];

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("search record {id} is not a record leafcache wrote: {reason}")]
pub struct BadRecord {
    id: String,
    reason: String,
}

impl Record {
    /// The record of `search_id` from its stored JSON.
    pub fn from_compact(search_id: &str, stored: &[u8]) -> Result<Record, BadRecord> {
        let s: Stored = serde_json::from_slice(stored).map_err(|e| BadRecord {
            id: search_id.to_owned(),
            reason: e.to_string(),
        })?;
        let text = |v: Option<String>| v.map_or(Value::Null, Value::String);
        let float = |v: Option<Number>| {
            v.and_then(|n| n.as_f64())
                .and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number)
        };
        let product_suppliers: serde_json::Map<String, Value> =
            s.p.iter()
                .zip(&s.ps)
                .filter_map(|(p, i)| Some((p.clone(), Value::String(s.s.get((*i)?)?.clone()))))
                .collect();
        let query_normalized = s.qn.unwrap_or_else(|| s.q.clone());
        let values = vec![
            Value::String(search_id.to_owned()),
            Value::String(crate::time::rfc3339_ms(s.t)),
            text(s.u),
            text(s.uu),
            text(s.se),
            Value::String(s.q),
            Value::String(query_normalized),
            text(s.i),
            float(s.c),
            Value::from(s.n),
            Value::from(s.p),
            Value::from(s.s),
            Value::Object(product_suppliers),
            float(s.ms),
            Value::String(s.x),
            Value::from(s.st.unwrap_or(200)),
            Value::String(s.r),
        ];
        Ok(Record {
            values,
            extra: Vec::new(),
        })
    }

    /// The record of a search written by an earlier version: a hash of its
    /// fields under their full names (empty when the key was missing).
    pub fn from_hash(mut fields: HashMap<String, Vec<u8>>) -> Option<Record> {
        if fields.is_empty() {
            return None;
        }
        let values = FIELDS
            .iter()
            .map(|(name, kind)| value_of(*kind, fields.remove(*name).as_deref()))
            .collect();
        // The feedback counters earlier versions kept on the record: now
        // counted from the feedback list.
        for (counter, _) in COUNTS {
            fields.remove(counter);
        }
        let mut extra: Vec<(String, String)> =
            fields.into_iter().map(|(k, v)| (k, text(&v))).collect();
        extra.sort();
        Some(Record { values, extra })
    }

    /// A field's value as exported (null when absent).
    pub fn get(&self, name: &str) -> &Value {
        FIELDS
            .iter()
            .position(|(n, _)| *n == name)
            .and_then(|i| self.values.get(i))
            .unwrap_or(&Value::Null)
    }

    /// Appends the export's JSON line for this record with its feedback
    /// list (`search:<id>:feedback`, oldest first), `\n`-terminated.
    pub fn write_line(&self, feedback: &[Vec<u8>], out: &mut Vec<u8>) {
        // Serializing strings and `Value`s into a Vec cannot fail.
        let _ = serde_json::to_writer(
            &mut *out,
            &Line {
                record: self,
                feedback,
            },
        );
        out.push(b'\n');
    }
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// A hash record's field, typed as the export gives it; text that does not
/// read as its type is given as text.
fn value_of(kind: Kind, raw: Option<&[u8]>) -> Value {
    let Some(raw) = raw else {
        return Value::Null;
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
        Kind::Integer => number().unwrap_or(Value::String(s)),
        Kind::Float => s
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(s.clone()), Value::Number),
        Kind::Json => serde_json::from_str(&s).unwrap_or(Value::String(s)),
    }
}

/// One export line: the record's fields in a stable order, the feedback
/// counts, any field the layout does not name as text, then `feedback`.
struct Line<'a> {
    record: &'a Record,
    feedback: &'a [Vec<u8>],
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for ((name, _), value) in FIELDS.iter().zip(&self.record.values) {
            map.serialize_entry(name, value)?;
        }
        let feedback: Vec<Value> = self
            .feedback
            .iter()
            .map(|raw| serde_json::from_slice(raw).unwrap_or_else(|_| Value::String(text(raw))))
            .collect();
        for (counter, event) in COUNTS {
            let n = feedback
                .iter()
                .filter(|f| f.get("event").and_then(Value::as_str) == Some(event))
                .count();
            map.serialize_entry(counter, &n)?;
        }
        for (k, v) in &self.record.extra {
            if k != "feedback" {
                map.serialize_entry(k, v)?;
            }
        }
        map.serialize_entry("feedback", &feedback)?;
        map.end()
    }
}

#[cfg(test)]
mod tests;
