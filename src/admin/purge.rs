//! Purging cache entries (SPEC sections 1 and 6): from Redis, and from the
//! L1 of every running proxy through the `leafcache:invalidate` channel.
//!
//! The message on the channel is the purge request itself, as JSON
//! (`{"user_id": "u"}`, `{"hash": "…"}`, `{"user_id": "u", "hash": "…"}`,
//! `{"all_global": true}`); each proxy drops the L1 copies it names.

use std::time::Duration;

use bb8_redis::redis;
use tokio::time::Instant;

use super::fields::{self, BadField};
use crate::cache::invalidation;
pub use crate::cache::invalidation::PurgeRequest;
use crate::cache::l1::L1;
use crate::redis::RedisFailure;
use crate::redis::keys::{self, Prefix};
use crate::redis::pool::Command;
use crate::redis::{Node, RedisPool};

/// Keys removed per `UNLINK`.
const UNLINK_BATCH: usize = 500;
const SCAN_COUNT: usize = 1000;
const DEADLINE: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What to purge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every entry of a user.
    User(String),
    /// One entry of a user: `user:<id>:cache:<hash>`.
    UserEntry(String, String),
    /// One global entry: `cache:global:<hash>`.
    Global(String),
    /// Every global entry.
    AllGlobal,
}

impl Target {
    pub fn new(
        user_id: Option<String>,
        hash: Option<String>,
        all_global: bool,
    ) -> Result<Target, BadField> {
        let hash = match hash {
            Some(h) if is_hash(&h.to_ascii_lowercase()) => Some(h.to_ascii_lowercase()),
            Some(_) => {
                return Err(BadField::new(
                    "hash",
                    "must be 64 hex digits (the key in Cache-Status)",
                ));
            }
            None => None,
        };
        // Taken literally (`a:cache:x` and `*` are ids like any other); a
        // blank one names no user.
        let user_id = user_id.map(|u| fields::user_id("user_id", u)).transpose()?;
        match (user_id, hash, all_global) {
            (Some(u), None, false) => Ok(Target::User(u)),
            (Some(u), Some(h), false) => Ok(Target::UserEntry(u, h)),
            (None, Some(h), false) => Ok(Target::Global(h)),
            (None, None, true) => Ok(Target::AllGlobal),
            (_, _, true) => Err(BadField::new(
                "all_global",
                "cannot be combined with user_id or hash",
            )),
            (None, None, false) => Err(BadField::new(
                "user_id",
                "or hash or all_global is required",
            )),
        }
    }

    pub fn request(&self) -> PurgeRequest {
        match self.clone() {
            Target::User(u) => PurgeRequest {
                user_id: Some(u),
                ..Default::default()
            },
            Target::UserEntry(u, h) => PurgeRequest {
                user_id: Some(u),
                hash: Some(h),
                ..Default::default()
            },
            Target::Global(h) => PurgeRequest {
                hash: Some(h),
                ..Default::default()
            },
            Target::AllGlobal => PurgeRequest {
                all_global: true,
                ..Default::default()
            },
        }
    }

    /// Whether `key` (a full key, with the prefix) is one this purge removes.
    /// A user purge takes only keys of exactly the shape
    /// `user:<U>:cache:<64 hex>`, so user `a` never takes `a:cache:b`'s entries
    /// and the pattern match of SCAN is only a first filter.
    pub fn covers(&self, prefix: &Prefix, key: &[u8]) -> bool {
        let hash_after = |head: String| {
            key.strip_prefix(head.as_bytes())
                .and_then(|h| std::str::from_utf8(h).ok())
                .is_some_and(is_hash)
        };
        match self {
            Target::User(u) => hash_after(keys::user_cache_head(prefix, u)),
            Target::AllGlobal => hash_after(keys::global_cache_head(prefix)),
            Target::UserEntry(..) | Target::Global(_) => {
                self.single_key(prefix).is_some_and(|k| k.as_bytes() == key)
            }
        }
    }

    /// The SCAN pattern of a purge over many keys, glob characters of the
    /// prefix and user id escaped.
    fn pattern(&self, prefix: &Prefix) -> Option<String> {
        let head = match self {
            Target::User(u) => keys::user_cache_head(prefix, u),
            Target::AllGlobal => keys::global_cache_head(prefix),
            Target::UserEntry(..) | Target::Global(_) => return None,
        };
        Some(format!("{}*", glob_escape(&head)))
    }

    /// The one key of a single-entry purge.
    fn single_key(&self, prefix: &Prefix) -> Option<String> {
        match self {
            Target::UserEntry(u, h) => Some(keys::user_cache_head(prefix, u) + h),
            Target::Global(h) => Some(keys::global_cache_head(prefix) + h),
            Target::User(_) | Target::AllGlobal => None,
        }
    }
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Removes the target's entries from Redis, then tells every proxy to drop
/// its L1 copies. Returns how many keys were removed.
pub async fn purge(
    redis: &RedisPool,
    prefix: &Prefix,
    target: &Target,
) -> Result<u64, RedisFailure> {
    let removed = match (target.single_key(prefix), target.pattern(prefix)) {
        (Some(key), _) => unlink(redis, &[key.into_bytes()]).await?,
        (None, Some(pattern)) => scan_unlink(redis, prefix, target, &pattern).await?,
        (None, None) => 0,
    };
    let (channel, message) = invalidation::notice(prefix, &target.request());
    let publish = redis::cmd("PUBLISH").arg(channel).arg(message).to_owned();
    redis
        .query::<i64>(Command::Cmd(&publish), Instant::now() + DEADLINE)
        .await?;
    Ok(removed)
}

/// SCANs every node (each master of a cluster) for the target's keys and
/// unlinks them in batches.
async fn scan_unlink(
    redis: &RedisPool,
    prefix: &Prefix,
    target: &Target,
    pattern: &str,
) -> Result<u64, RedisFailure> {
    let mut removed = 0;
    for node in redis.nodes(Instant::now() + DEADLINE).await? {
        removed += scan_unlink_on(redis, &node, prefix, target, pattern).await?;
    }
    Ok(removed)
}

async fn scan_unlink_on(
    redis: &RedisPool,
    node: &Node,
    prefix: &Prefix,
    target: &Target,
    pattern: &str,
) -> Result<u64, RedisFailure> {
    let mut cursor: u64 = 0;
    let mut doomed: Vec<Vec<u8>> = Vec::new();
    let mut removed = 0;
    loop {
        let scan = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .to_owned();
        let (next, found): (u64, Vec<Vec<u8>>) = redis
            .query_on(node, &scan, Instant::now() + DEADLINE)
            .await?;
        doomed.extend(found.into_iter().filter(|k| target.covers(prefix, k)));
        if doomed.len() >= UNLINK_BATCH || (next == 0 && !doomed.is_empty()) {
            removed += unlink(redis, &doomed).await?;
            doomed.clear();
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// One `UNLINK`; in a cluster redis-rs splits it by slot and sums the counts.
async fn unlink(redis: &RedisPool, keys: &[Vec<u8>]) -> Result<u64, RedisFailure> {
    let cmd = redis::cmd("UNLINK").arg(keys).to_owned();
    redis
        .query::<u64>(Command::Cmd(&cmd), Instant::now() + DEADLINE)
        .await
}

/// Drops this process's L1 copies of the target.
pub fn forget_local(l1: &L1, prefix: &Prefix, target: &Target) {
    match target.single_key(prefix) {
        Some(key) => l1.remove(&key),
        None => l1.remove_matching(|k| target.covers(prefix, k.as_bytes())),
    }
}

/// Listens on the invalidation channel for as long as the process runs and
/// drops the L1 copies each message names; reconnects with a backoff. After a
/// lost connection L1 is cleared, since messages may have been missed. In a
/// cluster the subscription is on one master, another after a failure: a
/// `PUBLISH` on any node reaches every node's subscribers.
pub fn spawn_invalidation_listener(
    redis: RedisPool,
    prefix: Prefix,
    l1: L1,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("invalidation");
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let channel = keys::invalidate_channel(&prefix);
            let mut backoff = BACKOFF_MIN;
            let mut lost = false;
            loop {
                match listen(&redis, &channel, &prefix, &l1, &mut lost, &mut backoff).await {
                    Ok(()) => tracing::debug!("invalidation channel closed; resubscribing"),
                    Err(e) => tracing::debug!(error = %e, "invalidation channel unavailable"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        },
        span,
    ))
}

async fn listen(
    redis: &RedisPool,
    channel: &str,
    prefix: &Prefix,
    l1: &L1,
    lost: &mut bool,
    backoff: &mut Duration,
) -> Result<(), RedisFailure> {
    use futures_util::StreamExt;

    let mut pubsub = redis.pubsub(Instant::now() + DEADLINE).await?;
    pubsub.subscribe(channel).await?;
    if std::mem::replace(lost, true) {
        l1.clear();
    }
    *backoff = BACKOFF_MIN;
    let mut messages = pubsub.into_on_message();
    while let Some(msg) = messages.next().await {
        let parsed = serde_json::from_slice::<PurgeRequest>(msg.get_payload_bytes())
            .ok()
            .and_then(|r| Target::new(r.user_id, r.hash, r.all_global).ok());
        match parsed {
            Some(target) => forget_local(l1, prefix, &target),
            None => tracing::warn!("unreadable invalidation message ignored"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_user_purge_never_takes_a_user_whose_id_only_starts_the_same() {
        let t = Target::User("a".into());
        let (none, p) = (Prefix::single_node(""), Prefix::single_node("p:"));
        assert!(t.covers(&none, format!("user:a:cache:{H}").as_bytes()));
        assert!(!t.covers(&none, format!("user:ab:cache:{H}").as_bytes()));
        assert!(!t.covers(&none, format!("user:a:cache:x:cache:{H}").as_bytes()));
        assert!(!t.covers(&none, b"user:a:searches"));
        assert!(t.covers(&p, format!("p:user:a:cache:{H}").as_bytes()));
        assert!(!t.covers(&p, format!("user:a:cache:{H}").as_bytes()));
    }

    #[test]
    fn in_cluster_mode_a_user_purge_takes_the_tagged_keys() {
        let t = Target::User("a".into());
        let tagged = Prefix::new("", true);
        assert!(t.covers(&tagged, format!("user:{{a}}:cache:{H}").as_bytes()));
        assert!(!t.covers(&tagged, format!("user:a:cache:{H}").as_bytes()));
        assert!(!t.covers(&tagged, format!("user:{{ab}}:cache:{H}").as_bytes()));
        assert!(!t.covers(&tagged, format!("user:{{a}}b}}:cache:{H}").as_bytes()));
        assert_eq!(t.pattern(&tagged).unwrap(), "user:{a}:cache:*");
    }

    #[test]
    fn glob_characters_are_escaped() {
        let t = Target::User("a*[b]?\\".into());
        assert_eq!(
            t.pattern(&Prefix::single_node("x*")).unwrap(),
            "x\\*user:a\\*\\[b\\]\\?\\\\:cache:*"
        );
    }

    #[test]
    fn requests_name_one_target() {
        assert_eq!(
            Target::new(None, Some(H.to_uppercase()), false),
            Ok(Target::Global(H.into()))
        );
        assert!(Target::new(None, None, false).is_err());
        for blank in ["", " "] {
            let e = Target::new(Some(blank.into()), None, false).unwrap_err();
            assert_eq!(e.field, "user_id");
        }
        assert!(Target::new(Some("u".into()), None, true).is_err());
        assert_eq!(
            Target::new(None, Some("abc".into()), false)
                .unwrap_err()
                .field,
            "hash"
        );
        let t = Target::UserEntry("u".into(), H.into());
        let r = t.request();
        assert_eq!(Target::new(r.user_id, r.hash, r.all_global), Ok(t));
    }
}
