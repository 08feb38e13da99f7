//! A logged search's record (`search:<search_id>`, docs/contract.md section 4): what a
//! search id is, and reading records with their feedback, for
//! `GET /v1/searches/<id>`, feedback and the export. Feedback and that
//! endpoint both go through here, so an id that is not a logged search is
//! "unknown" (404) in one way, and never reaches Redis as a key it was not
//! meant to be. How a record is stored is [`crate::events::record`]'s.

use std::collections::HashMap;
use std::time::Duration;

use bb8_redis::redis;
use tokio::time::Instant;
use uuid::Uuid;

use crate::events::record::Record;
use crate::redis::RedisFailure;
use crate::redis::RedisPool;
use crate::redis::keys::{self, Prefix};
use crate::redis::pool::Command;

const DEADLINE: Duration = Duration::from_secs(5);

/// A search id as the proxy makes them ([`crate::events::new_search_id`]):
/// a UUID v7 in its hyphenated form, kept lowercase as the record's key
/// holds it. Anything else (`<id>:feedback`, a pattern, another UUID
/// version) names no logged search, whatever key it would spell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchId(Uuid);

impl SearchId {
    /// `None` for text that is not a hyphenated UUID v7 (either case).
    pub fn parse(text: &str) -> Option<SearchId> {
        // 36 characters: the hyphenated form only, not the simple, braced
        // or URN forms the parser also takes.
        if text.len() != 36 {
            return None;
        }
        let id = Uuid::try_parse(text).ok()?;
        (id.get_version_num() == 7).then_some(SearchId(id))
    }

    /// `search:<id>`.
    pub fn record_key(self, prefix: &Prefix) -> String {
        keys::search(prefix, &self.to_string())
    }

    /// `search:<id>:feedback`.
    pub fn feedback_key(self, prefix: &Prefix) -> String {
        keys::search_feedback(prefix, &self.to_string())
    }
}

impl std::fmt::Display for SearchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = Uuid::encode_buffer();
        f.write_str(self.0.hyphenated().encode_lower(&mut buf))
    }
}

/// A logged search read back: its record and its feedback list (the
/// entries of `search:<id>:feedback`, oldest first).
pub struct Logged {
    pub record: Record,
    pub feedback: Vec<Vec<u8>>,
}

impl Logged {
    /// The export's JSON object for this search, without a newline.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(512);
        self.record.write_line(&self.feedback, &mut out);
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        // serde_json writes UTF-8; the fallback only keeps this total.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// Adds to `pipe` what [`take_records`] reads of each of `ids`: its record
/// and its feedback list. The pipeline must ignore errors (a record
/// written by an earlier version is a hash, which `GET` refuses).
pub fn queue_reads(pipe: &mut redis::Pipeline, prefix: &Prefix, ids: &[String]) {
    for id in ids {
        pipe.cmd("GET").arg(keys::search(prefix, id));
        pipe.cmd("LRANGE")
            .arg(keys::search_feedback(prefix, id))
            .arg(0)
            .arg(-1);
    }
}

/// Reads the answers [`queue_reads`] asked for, one per id in order
/// (`None` where there is no record, or none that leafcache wrote), then
/// reads the records earlier versions wrote as hashes, in a second round
/// trip when there are any.
pub async fn take_records(
    redis: &RedisPool,
    prefix: &Prefix,
    ids: &[String],
    values: &mut impl Iterator<Item = redis::Value>,
    deadline: Instant,
) -> Result<Vec<Option<Logged>>, RedisFailure> {
    let mut found = Vec::with_capacity(ids.len());
    let mut hashes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let record = values.next().unwrap_or(redis::Value::Nil);
        let feedback = match values.next() {
            Some(redis::Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| redis::from_redis_value::<Vec<u8>>(v).ok())
                .collect(),
            // Nil, or a key of another type: something else wrote it.
            _ => Vec::new(),
        };
        let record = match record {
            redis::Value::BulkString(stored) => match Record::from_compact(id, &stored) {
                Ok(record) => Some(record),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a search record");
                    None
                }
            },
            redis::Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                hashes.push((i, feedback));
                found.push(None);
                continue;
            }
            redis::Value::ServerError(e) => return Err(RedisFailure::Redis(e.into())),
            _ => None,
        };
        found.push(record.map(|record| Logged { record, feedback }));
    }
    if !hashes.is_empty() {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (i, _) in &hashes {
            pipe.cmd("HGETALL").arg(keys::search(prefix, &ids[*i]));
        }
        let values: Vec<redis::Value> = redis.query(Command::Pipe(&pipe), deadline).await?;
        for ((i, feedback), value) in hashes.into_iter().zip(values) {
            let fields: HashMap<String, Vec<u8>> =
                redis::from_redis_value(value).unwrap_or_default();
            found[i] = Record::from_hash(fields).map(|record| Logged { record, feedback });
        }
    }
    Ok(found)
}

/// The search `id` names, with its feedback, or `None` when it is not a
/// logged search.
pub async fn read_one(
    redis: &RedisPool,
    prefix: &Prefix,
    id: SearchId,
) -> Result<Option<Logged>, RedisFailure> {
    let deadline = Instant::now() + DEADLINE;
    let ids = [id.to_string()];
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    queue_reads(&mut pipe, prefix, &ids);
    let values: Vec<redis::Value> = redis.query(Command::Pipe(&pipe), deadline).await?;
    let mut found = take_records(redis, prefix, &ids, &mut values.into_iter(), deadline).await?;
    Ok(found.pop().flatten())
}

/// The record of the search `text` names with its feedback list, as one
/// JSON object (the fields and types of an export line), or `None` when
/// `text` is not a logged search.
pub async fn read(
    redis: &RedisPool,
    prefix: &Prefix,
    text: &str,
) -> Result<Option<String>, RedisFailure> {
    let Some(id) = SearchId::parse(text) else {
        return Ok(None);
    };
    Ok(read_one(redis, prefix, id).await?.map(|l| l.to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hyphenated_uuid_v7_is_a_search_id() {
        let made = crate::events::new_search_id().to_string();
        let id = SearchId::parse(&made).unwrap();
        assert_eq!(id.to_string(), made);
        let upper = SearchId::parse(&made.to_uppercase()).unwrap();
        assert_eq!(upper, id, "either case names the same search");
        assert_eq!(
            id.record_key(&Prefix::single_node("p:")),
            format!("p:search:{made}")
        );
        for bad in [
            "".to_string(),
            format!("{made}:feedback"),
            made.replace('-', ""),
            format!("{{{made}}}"),
            format!("urn:uuid:{made}"),
            "*".into(),
            "search:*".into(),
            // A UUID v4.
            "0190b7e2-0000-4000-8000-000000000000".into(),
        ] {
            assert_eq!(SearchId::parse(&bad), None, "{bad:?}");
        }
    }
}
