//! A logged search's record (`search:<search_id>`, SPEC section 4): what a
//! search id is, whether one names a logged search, and the record with its
//! feedback as `GET /v1/searches/<id>` answers it. Feedback and that endpoint
//! both go through here, so an id that is not a logged search is "unknown"
//! (404) in one way, and never reaches Redis as a key it was not meant to be.

use std::collections::HashMap;
use std::time::Duration;

use bb8_redis::redis;
use tokio::time::Instant;
use uuid::Uuid;

use super::export;
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

/// Whether `id` names a logged search: its record exists and is a hash, as
/// the writer lays it out. Any other type (something else wrote the key) is
/// "not a logged search" rather than a Redis type error later.
pub async fn is_logged(
    redis: &RedisPool,
    prefix: &Prefix,
    id: SearchId,
) -> Result<bool, RedisFailure> {
    let cmd = redis::cmd("TYPE").arg(id.record_key(prefix)).to_owned();
    let kind: String = redis
        .query(Command::Cmd(&cmd), Instant::now() + DEADLINE)
        .await?;
    Ok(kind == "hash")
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
    let (record, feedback) = (id.record_key(prefix), id.feedback_key(prefix));
    let deadline = Instant::now() + DEADLINE;
    let mut types = redis::pipe();
    types.cmd("TYPE").arg(&record).cmd("TYPE").arg(&feedback);
    let (record_type, feedback_type): (String, String) =
        redis.query(Command::Pipe(&types), deadline).await?;
    if record_type != "hash" {
        return Ok(None);
    }
    // A feedback key of another type was not written by us: read as none.
    let mut read = redis::pipe();
    read.cmd("HGETALL").arg(&record);
    let (fields, events): (HashMap<String, Vec<u8>>, Vec<Vec<u8>>) = if feedback_type == "list" {
        read.cmd("LRANGE").arg(&feedback).arg(0).arg(-1);
        redis.query(Command::Pipe(&read), deadline).await?
    } else {
        let (fields,): (HashMap<String, Vec<u8>>,) =
            redis.query(Command::Pipe(&read), deadline).await?;
        (fields, Vec::new())
    };
    // Expired between the two round trips.
    if fields.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(512);
    export::write_line(&fields, &events, &mut out);
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    // serde_json writes UTF-8; the fallback only keeps this total.
    Ok(Some(String::from_utf8(out).unwrap_or_else(|e| {
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    })))
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
