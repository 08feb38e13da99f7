//! A user's recent searches (`user:<id>:searches`), newest first, for
//! `leafcache history` and `GET /v1/users/<id>/history`.

use std::time::Duration;

use bb8_redis::redis;
use serde_json::Value;
use tokio::time::Instant;

use crate::redis::RedisFailure;
use crate::redis::RedisPool;
use crate::redis::keys::{self, Prefix};
use crate::redis::pool::Command;

pub const DEFAULT_LIMIT: usize = 50;

/// Up to `limit` entries, newest first. An entry that is not JSON (written
/// by something else) is returned as a string rather than hidden.
pub async fn read(
    redis: &RedisPool,
    prefix: &Prefix,
    user_id: &str,
    limit: usize,
) -> Result<Vec<Value>, RedisFailure> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let cmd = redis::cmd("LRANGE")
        .arg(keys::user_searches(prefix, user_id))
        .arg(0)
        .arg(limit as i64 - 1)
        .to_owned();
    let raw: Vec<String> = redis
        .query(Command::Cmd(&cmd), Instant::now() + Duration::from_secs(5))
        .await?;
    Ok(raw
        .into_iter()
        .map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)))
        .collect())
}
