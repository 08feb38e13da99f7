//! The record of one logged search, `search:<search_id>` (docs/contract.md section 4):
//! one string of compact JSON, written with `SET .. EX` in one command.
//!
//! The record is the largest thing the search log keeps (one per search, for
//! `record_retention`), so it is stored as small as it reads back exactly:
//! a JSON array of the values in a fixed order, without member names (they
//! took a sixth of it), with trailing absent values left off:
//!
//! | position | field | note |
//! |---|---|---|
//! | (key) | `search_id` | the key names it |
//! | 0 | `timestamp` | epoch milliseconds; read back as RFC 3339 |
//! | 1 | `query` | as received |
//! | 2, 3 | `user_id`, `session_id` | null when none |
//! | 4, 5 | `intent`, `confidence` | null when none |
//! | 6 | `results_count` | |
//! | 7 | `product_ids` | distinct, first listing first |
//! | 8 | `supplier_ids` | distinct, first listing first |
//! | 9 | `product_suppliers` | per product, the index in `supplier_ids` of its supplier, or null |
//! | 10 | `response_time_ms` | |
//! | 11 | `cache` | |
//! | 12 | `route` | |
//! | 13 | `status` | null (or left off) when 200 |
//! | 14 | `user_uuid` | null (or left off) when none |
//! | 15 | `query_normalized` | null (or left off) when it equals `query` |
//! | 16 | `answer_unreadable` | why the answer could not be read; left off when it could |
//!
//! For example `[1764106056927,"Milk",null,"s-1","product_search",0.9,2,
//! ["p1","p2"],["dairy-co"],[0,null],12.5,"hit","search",null,null,"milk"]`.
//! A later version may add values at the end; readers ignore what they do
//! not know.
//!
//! Feedback counts (`clicks`, `orders`, `purchases`) are not stored here:
//! they are counted from `search:<id>:feedback` when the record is read.
//! Records written by earlier versions, hashes with the fields under their
//! full names, still read ([`Record::from_hash`]).
//!
//! Readers get a [`Record`] and turn it into the export's JSON object
//! ([`Record::write_line`]): `GET /v1/searches/<id>` and `export` answer the
//! same fields, in the same order, whichever way the record was stored.
//!
//! The line ends with what ranking tools read: `impressions`, the search's
//! `product_ids` with their 1-based positions in result order, and `ubi`,
//! the search and its feedback in the shape of OpenSearch User Behavior
//! Insights (a `ubi_queries` document and `ubi_events` documents;
//! docs/operations.md, "Search quality", gives the mapping).

use std::collections::HashMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::{Deserialize, Serialize as DeriveSerialize};
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
    out.push('[');
    out.push_str(n.format(ev.timestamp_ms));
    out.push(',');
    write_json_str(out, &ev.query);
    out.push(',');
    opt_str(out, ev.user_id.as_deref());
    out.push(',');
    opt_str(out, ev.session_id.as_deref());
    out.push(',');
    opt_str(out, ev.meta.intent.as_deref());
    out.push(',');
    // A confidence that is not a finite number is not JSON: null.
    match ev.meta.confidence {
        Some(c) if c.is_finite() && !v.confidence.is_empty() => out.push_str(v.confidence),
        _ => out.push_str("null"),
    }
    out.push(',');
    out.push_str(n.format(ev.meta.results_count));
    out.push(',');
    out.push_str(&facts.product_ids_json);
    out.push(',');
    out.push_str(&facts.supplier_ids_json);
    out.push(',');
    out.push_str(&facts.supplier_of_json);
    out.push(',');
    if ev.response_time_ms.is_finite() {
        out.push_str(v.response_time);
    } else {
        out.push_str("null");
    }
    out.push_str(",\"");
    out.push_str(ev.cache.as_str());
    out.push_str("\",");
    write_json_str(out, &ev.route);
    // The rarely present ones, last: left off when absent.
    let normalized = (ev.query_normalized != ev.query).then_some(ev.query_normalized.as_str());
    let uuid = ev.user_uuid.as_deref();
    let unreadable = ev.meta.unreadable.map(|u| u.as_str());
    // Each one present needs every one before it written, null or not.
    let tail = [
        (ev.status != 200).then(|| n.format(ev.status).to_owned()),
        uuid.map(json_text),
        normalized.map(json_text),
        unreadable.map(json_text),
    ];
    let last = tail.iter().rposition(Option::is_some);
    for value in tail.iter().take(last.map_or(0, |i| i + 1)) {
        out.push(',');
        out.push_str(value.as_deref().unwrap_or("null"));
    }
    out.push(']');
}

fn json_text(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    write_json_str(&mut out, v);
    out
}

fn opt_str(out: &mut String, v: Option<&str>) {
    match v {
        Some(v) => write_json_str(out, v),
        None => out.push_str("null"),
    }
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
const FIELDS: [(&str, Kind); 18] = [
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
    ("answer_unreadable", Kind::Text),
];

/// The feedback counts, by the `event` of a feedback entry.
const COUNTS: [(&str, &str); 3] = [
    ("clicks", "click"),
    ("orders", "add_to_order"),
    ("purchases", "purchase"),
];

/// One entry of `search:<id>:feedback` (docs/contract.md section 4), as
/// `POST /v1/feedback` writes it and the quality report reads it.
#[derive(Clone, Debug, PartialEq, DeriveSerialize, Deserialize)]
pub struct FeedbackEntry {
    /// `click`, `add_to_order` or `purchase`.
    pub event: String,
    pub product_id: String,
    /// The result's position: as the application sent it, or, when it sent
    /// none, the product's place among the search's impressions (1-based);
    /// null when neither is known.
    pub position: Option<u64>,
    /// RFC 3339, milliseconds, UTC.
    pub timestamp: String,
}

impl FeedbackEntry {
    /// The entry as stored; `None` for an entry something else wrote.
    pub fn parse(raw: &[u8]) -> Option<FeedbackEntry> {
        serde_json::from_slice(raw).ok()
    }

    /// The compact JSON stored in the feedback list.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The field name UBI's `object_id_field` gives for our result ids.
const OBJECT_ID_FIELD: &str = "product_id";

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
        let bad = |reason: String| BadRecord {
            id: search_id.to_owned(),
            reason,
        };
        let mut at: Vec<Value> = serde_json::from_slice(stored).map_err(|e| bad(e.to_string()))?;
        // Values left off at the end are absent.
        at.resize(at.len().max(17), Value::Null);
        let mut take = |i: usize| std::mem::take(&mut at[i]);
        let text = |v: Value| match v {
            Value::String(_) => Ok(v),
            Value::Null => Ok(Value::Null),
            other => Err(format!("{other} is not text")),
        };
        let timestamp = take(0).as_u64().ok_or_else(|| bad("no timestamp".into()))?;
        let required = |v: Value, name: &str| match v {
            Value::String(_) => Ok(v),
            _ => Err(bad(format!("no {name}"))),
        };
        let query = required(take(1), "query")?;
        let user_id = text(take(2)).map_err(bad)?;
        let session_id = text(take(3)).map_err(bad)?;
        let intent = text(take(4)).map_err(bad)?;
        let confidence = float(take(5));
        let results_count = match take(6) {
            Value::Number(n) if n.is_u64() => Value::Number(n),
            _ => return Err(bad("no results_count".into())),
        };
        let strings = |v: Value| -> Result<Vec<String>, String> {
            match v {
                Value::Null => Ok(Vec::new()),
                v => serde_json::from_value(v).map_err(|e| e.to_string()),
            }
        };
        let product_ids = strings(take(7)).map_err(bad)?;
        let supplier_ids = strings(take(8)).map_err(bad)?;
        let supplier_of: Vec<Option<usize>> = match take(9) {
            Value::Null => Vec::new(),
            v => serde_json::from_value(v).map_err(|e| bad(e.to_string()))?,
        };
        let product_suppliers: serde_json::Map<String, Value> = product_ids
            .iter()
            .zip(&supplier_of)
            .filter_map(|(p, i)| Some((p.clone(), Value::String(supplier_ids.get((*i)?)?.clone()))))
            .collect();
        let response_time = float(take(10));
        let cache = required(take(11), "cache")?;
        let route = required(take(12), "route")?;
        let status = match take(13) {
            Value::Null => Value::from(200),
            v => v,
        };
        let user_uuid = text(take(14)).map_err(bad)?;
        let query_normalized = match text(take(15)).map_err(bad)? {
            Value::Null => query.clone(),
            v => v,
        };
        let answer_unreadable = text(take(16)).map_err(bad)?;
        let values = vec![
            Value::String(search_id.to_owned()),
            Value::String(crate::time::rfc3339_ms(timestamp)),
            user_id,
            user_uuid,
            session_id,
            query,
            query_normalized,
            intent,
            confidence,
            results_count,
            Value::from(product_ids),
            Value::from(supplier_ids),
            Value::Object(product_suppliers),
            response_time,
            cache,
            status,
            route,
            answer_unreadable,
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

    /// The search's results as logged (`product_ids`): distinct product
    /// ids, in result order.
    pub fn product_ids(&self) -> impl Iterator<Item = &str> {
        self.get("product_ids")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }

    /// Where the search showed `product_id`: its 1-based place in
    /// `product_ids` (its impression), `None` when it did not show it.
    pub fn impression_position(&self, product_id: &str) -> Option<u64> {
        self.product_ids()
            .position(|p| p == product_id)
            .map(|i| i as u64 + 1)
    }

    /// The position a feedback event on `product_id` counts at (UBI's
    /// ordinal, the quality report's click position): the recorded one
    /// when it is a position (positions count from 1), else the product's
    /// impression; `None` when neither is known.
    pub fn feedback_position(&self, recorded: Option<u64>, product_id: &str) -> Option<u64> {
        recorded
            .filter(|p| *p >= 1)
            .or_else(|| self.impression_position(product_id))
    }

    /// The epoch milliseconds of the search, `None` when the record's
    /// timestamp does not read as RFC 3339 (a hash record's odd value).
    pub fn timestamp_ms(&self) -> Option<u64> {
        millis_of(self.get("timestamp").as_str()?)
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

/// A stored number as the export gives it: parsed by `str::parse`, which
/// rounds exactly (the stored text may carry trailing zeros, and serde_json's
/// own float reading may be one bit off); null when it is not a number.
fn float(v: Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(Number::from_f64)
            .map_or(Value::Null, Value::Number),
        _ => Value::Null,
    }
}

/// An RFC 3339 time as epoch milliseconds.
pub fn millis_of(rfc3339: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(rfc3339).ok()?;
    u64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
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
/// counts, any field the layout does not name as text, `feedback`, then
/// `impressions` and `ubi`.
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
        let r = self.record;
        let impressions: Vec<Impression<'_>> = r
            .product_ids()
            .enumerate()
            .map(|(i, product_id)| Impression {
                product_id,
                position: i as u64 + 1,
            })
            .collect();
        map.serialize_entry("impressions", &impressions)?;
        let events: Vec<UbiEvent<'_>> = feedback
            .iter()
            .filter(|f| f.is_object())
            .map(|f| {
                let product_id = f.get("product_id").unwrap_or(&Value::Null);
                let recorded = f.get("position").and_then(Value::as_u64);
                let ordinal = r.feedback_position(recorded, product_id.as_str().unwrap_or(""));
                UbiEvent {
                    application: r.get("route"),
                    action_name: f.get("event").unwrap_or(&Value::Null),
                    query_id: r.get("search_id"),
                    client_id: r.get("user_id"),
                    session_id: r.get("session_id"),
                    user_query: r.get("query"),
                    timestamp: f.get("timestamp").unwrap_or(&Value::Null),
                    event_attributes: EventAttributes {
                        object: UbiObject {
                            object_id: product_id,
                            object_id_field: OBJECT_ID_FIELD,
                        },
                        position: ordinal.map(|ordinal| Ordinal { ordinal }),
                    },
                }
            })
            .collect();
        let query = UbiQuery {
            application: r.get("route"),
            query_id: r.get("search_id"),
            client_id: r.get("user_id"),
            user_query: r.get("query"),
            timestamp: r.get("timestamp"),
            object_id_field: OBJECT_ID_FIELD,
            query_response_id: r.get("search_id"),
            query_response_hit_ids: r.get("product_ids"),
            query_attributes: QueryAttributes {
                session_id: r.get("session_id"),
                query_normalized: r.get("query_normalized"),
                intent: r.get("intent"),
                results_count: r.get("results_count"),
            },
        };
        map.serialize_entry("ubi", &Ubi { query, events })?;
        map.end()
    }
}

/// A result the search showed, at its 1-based place in result order.
#[derive(DeriveSerialize)]
struct Impression<'a> {
    product_id: &'a str,
    position: u64,
}

/// The search and its feedback as OpenSearch UBI documents: `query` is a
/// `ubi_queries` document, each of `events` a `ubi_events` one.
#[derive(DeriveSerialize)]
struct Ubi<'a> {
    query: UbiQuery<'a>,
    events: Vec<UbiEvent<'a>>,
}

#[derive(DeriveSerialize)]
struct UbiQuery<'a> {
    /// The route: which search the application ran.
    application: &'a Value,
    /// The search id, as `X-Search-Id` gave it to the application.
    query_id: &'a Value,
    client_id: &'a Value,
    user_query: &'a Value,
    timestamp: &'a Value,
    object_id_field: &'static str,
    /// One answer per search: its id again.
    query_response_id: &'a Value,
    query_response_hit_ids: &'a Value,
    query_attributes: QueryAttributes<'a>,
}

#[derive(DeriveSerialize)]
struct QueryAttributes<'a> {
    session_id: &'a Value,
    query_normalized: &'a Value,
    intent: &'a Value,
    results_count: &'a Value,
}

#[derive(DeriveSerialize)]
struct UbiEvent<'a> {
    application: &'a Value,
    /// The feedback's `event`: click, add_to_order or purchase.
    action_name: &'a Value,
    query_id: &'a Value,
    client_id: &'a Value,
    session_id: &'a Value,
    user_query: &'a Value,
    timestamp: &'a Value,
    event_attributes: EventAttributes<'a>,
}

#[derive(DeriveSerialize)]
struct EventAttributes<'a> {
    object: UbiObject<'a>,
    /// Left out when the position is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<Ordinal>,
}

#[derive(DeriveSerialize)]
struct UbiObject<'a> {
    object_id: &'a Value,
    object_id_field: &'static str,
}

#[derive(DeriveSerialize)]
struct Ordinal {
    ordinal: u64,
}

#[cfg(test)]
mod tests;
