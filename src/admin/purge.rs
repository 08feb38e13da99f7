//! Purging cache entries (docs/contract.md sections 1 and 6): from Redis, and from the
//! L1 of every running proxy through the `leafcache:invalidate` channel.
//!
//! The message on the channel is the purge request itself, as JSON (see
//! [`PurgeRequest`]); each proxy drops the L1 copies it names. A purge by
//! product or supplier reads the tag indexes of [`crate::cache::tags`] and
//! checks each entry's answer before it touches it.

use std::collections::HashSet;
use std::time::Duration;

use bb8_redis::redis;
use bytes::Bytes;
use tokio::time::Instant;

use super::fields::{self, BadField};
use crate::cache::envelope::{self, Entry};
use crate::cache::invalidation;
pub use crate::cache::invalidation::PurgeRequest;
use crate::cache::l1::L1;
pub use crate::cache::tags::Tagged;
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
    /// Every entry, in any scope, whose answer shows these products or
    /// products of these suppliers (docs/contract.md section 9).
    Tagged(Tagged),
}

/// A purge: what, and whether its entries are removed or marked stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purge {
    pub target: Target,
    /// Mark stale instead of removing: the next request revalidates or
    /// refetches, and a failing backend still has the stale copy to serve.
    pub soft: bool,
}

/// What a purge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub removed: u64,
    pub marked_stale: u64,
}

impl Outcome {
    /// The entries the purge touched.
    pub fn touched(&self) -> u64 {
        self.removed + self.marked_stale
    }
}

impl Purge {
    /// Checks a purge request: it names exactly one target (a user and a
    /// hash together name one entry of the user).
    pub fn new(request: PurgeRequest) -> Result<Purge, BadField> {
        let PurgeRequest {
            user_id,
            hash,
            all_global,
            product_ids,
            supplier_ids,
            soft,
        } = request;
        let by_tag = usize::from(product_ids.is_some()) + usize::from(supplier_ids.is_some());
        if by_tag > 1 || (by_tag == 1 && (user_id.is_some() || hash.is_some() || all_global)) {
            let field = if product_ids.is_some() {
                "product_ids"
            } else {
                "supplier_ids"
            };
            return Err(BadField::new(
                field,
                "cannot be combined with another target",
            ));
        }
        let ids = |name: &str, ids: Vec<String>| -> Result<Vec<String>, BadField> {
            if ids.is_empty() {
                return Err(BadField::new(name, "must name at least one id"));
            }
            ids.into_iter()
                .map(|id| fields::user_id(name, id))
                .collect()
        };
        let target = match (product_ids, supplier_ids) {
            (Some(p), _) => Target::Tagged(Tagged::Products(ids("product_ids", p)?)),
            (_, Some(s)) => Target::Tagged(Tagged::Suppliers(ids("supplier_ids", s)?)),
            (None, None) => Target::new(user_id, hash, all_global)?,
        };
        Ok(Purge { target, soft })
    }

    /// The wire form: the invalidation message and the API body.
    pub fn request(&self) -> PurgeRequest {
        let mut r = match self.target.clone() {
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
            Target::Tagged(Tagged::Products(ids)) => PurgeRequest {
                product_ids: Some(ids),
                ..Default::default()
            },
            Target::Tagged(Tagged::Suppliers(ids)) => PurgeRequest {
                supplier_ids: Some(ids),
                ..Default::default()
            },
        };
        r.soft = self.soft;
        r
    }
}

impl Target {
    fn new(
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
                "or hash, all_global, product_ids or supplier_ids is required",
            )),
        }
    }

    /// Whether `key` (a full key, with the prefix) is one this purge removes.
    /// A user purge takes only keys of exactly the shape
    /// `user:<U>:cache:<64 hex>`, so user `a` never takes `a:cache:b`'s entries
    /// and the pattern match of SCAN is only a first filter. A tag purge
    /// goes by the answer, not the key: see [`Target::covers_entry`].
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
            Target::Tagged(_) => false,
        }
    }

    /// Whether an L1 copy stored under `key` is one this purge drops.
    fn covers_entry(&self, prefix: &Prefix, key: &str, entry: &Entry) -> bool {
        match self {
            Target::Tagged(tagged) => tagged.shown_by(&entry.meta),
            _ => self.covers(prefix, key.as_bytes()),
        }
    }

    /// The SCAN pattern of a purge over many keys, glob characters of the
    /// prefix and user id escaped.
    fn pattern(&self, prefix: &Prefix) -> Option<String> {
        let head = match self {
            Target::User(u) => keys::user_cache_head(prefix, u),
            Target::AllGlobal => keys::global_cache_head(prefix),
            Target::UserEntry(..) | Target::Global(_) | Target::Tagged(_) => return None,
        };
        Some(format!("{}*", glob_escape(&head)))
    }

    /// The one key of a single-entry purge.
    fn single_key(&self, prefix: &Prefix) -> Option<String> {
        match self {
            Target::UserEntry(u, h) => Some(keys::user_cache_head(prefix, u) + h),
            Target::Global(h) => Some(keys::global_cache_head(prefix) + h),
            Target::User(_) | Target::AllGlobal | Target::Tagged(_) => None,
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

/// Removes the target's entries from Redis (or marks them stale), then
/// tells every proxy to drop its L1 copies.
pub async fn purge(
    redis: &RedisPool,
    prefix: &Prefix,
    purge: &Purge,
) -> Result<Outcome, RedisFailure> {
    let target = &purge.target;
    let mut outcome = Outcome::default();
    if let Some(key) = target.single_key(prefix) {
        apply(redis, purge.soft, &[key.into_bytes()], &mut outcome).await?;
    } else if let Some(pattern) = target.pattern(prefix) {
        for node in redis.nodes(Instant::now() + DEADLINE).await? {
            scan_on(redis, &node, prefix, purge, &pattern, &mut outcome).await?;
        }
    } else if let Target::Tagged(tagged) = target {
        let mut seen = HashSet::new();
        for index in tagged.index_keys(prefix) {
            purge_index(redis, &index, tagged, purge.soft, &mut seen, &mut outcome).await?;
        }
    }
    let (channel, message) = invalidation::notice(prefix, &purge.request());
    let publish = redis::cmd("PUBLISH").arg(channel).arg(message).to_owned();
    redis
        .query::<i64>(Command::Cmd(&publish), Instant::now() + DEADLINE)
        .await?;
    Ok(outcome)
}

/// SCANs one node (each master of a cluster, in turn) for the target's keys
/// and purges them in batches.
async fn scan_on(
    redis: &RedisPool,
    node: &Node,
    prefix: &Prefix,
    purge: &Purge,
    pattern: &str,
    outcome: &mut Outcome,
) -> Result<(), RedisFailure> {
    let mut cursor: u64 = 0;
    let mut doomed: Vec<Vec<u8>> = Vec::new();
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
        doomed.extend(found.into_iter().filter(|k| purge.target.covers(prefix, k)));
        if doomed.len() >= UNLINK_BATCH || (next == 0 && !doomed.is_empty()) {
            apply(redis, purge.soft, &doomed, outcome).await?;
            doomed.clear();
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Purges the entries one tag index names whose stored answer still shows
/// what is purged, and drops from the index every member it read that does
/// not (expired, re-stored with other results) or that is gone now.
async fn purge_index(
    redis: &RedisPool,
    index: &str,
    tagged: &Tagged,
    soft: bool,
    seen: &mut HashSet<Vec<u8>>,
    outcome: &mut Outcome,
) -> Result<(), RedisFailure> {
    let now = crate::time::now_ms();
    let trim = redis::cmd("ZREMRANGEBYSCORE")
        .arg(index)
        .arg("-inf")
        .arg(format!("({now}"))
        .to_owned();
    redis
        .query::<i64>(Command::Cmd(&trim), Instant::now() + DEADLINE)
        .await?;
    let mut cursor: u64 = 0;
    loop {
        let scan = redis::cmd("ZSCAN")
            .arg(index)
            .arg(cursor)
            .arg("COUNT")
            .arg(UNLINK_BATCH)
            .to_owned();
        let (next, found): (u64, Vec<(Vec<u8>, f64)>) = redis
            .query(Command::Cmd(&scan), Instant::now() + DEADLINE)
            .await?;
        // ZSCAN may return a member twice; an entry is purged once.
        let members: Vec<Vec<u8>> = found
            .into_iter()
            .map(|(member, _)| member)
            .filter(|m| seen.insert(m.clone()))
            .collect();
        if !members.is_empty() {
            let values = stored(redis, &members).await?;
            let mut doomed: Vec<(Vec<u8>, Bytes)> = Vec::new();
            let mut unlisted: Vec<Vec<u8>> = Vec::new();
            for (key, raw) in members.into_iter().zip(values) {
                let shows = |raw: &Bytes| {
                    envelope::decode(raw.clone()).is_ok_and(|entry| tagged.shown_by(&entry.meta))
                };
                match raw.filter(shows) {
                    Some(raw) => doomed.push((key, raw)),
                    None => unlisted.push(key),
                }
            }
            if soft {
                mark_stale(redis, &doomed, outcome).await?;
            } else {
                let keys: Vec<Vec<u8>> = doomed.into_iter().map(|(key, _)| key).collect();
                outcome.removed += unlink(redis, &keys).await?;
                unlisted.extend(keys);
            }
            if !unlisted.is_empty() {
                let zrem = redis::cmd("ZREM").arg(index).arg(&unlisted).to_owned();
                redis
                    .query::<i64>(Command::Cmd(&zrem), Instant::now() + DEADLINE)
                    .await?;
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The stored values of `keys`, one pipelined GET each (in a cluster the
/// keys live in many slots).
async fn stored(redis: &RedisPool, keys: &[Vec<u8>]) -> Result<Vec<Option<Bytes>>, RedisFailure> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("GET").arg(key);
    }
    let values: Vec<Option<Vec<u8>>> = redis
        .query(Command::Pipe(&pipe), Instant::now() + DEADLINE)
        .await?;
    Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
}

/// Removes `keys`, or marks their entries stale.
async fn apply(
    redis: &RedisPool,
    soft: bool,
    keys: &[Vec<u8>],
    outcome: &mut Outcome,
) -> Result<(), RedisFailure> {
    if !soft {
        outcome.removed += unlink(redis, keys).await?;
        return Ok(());
    }
    let values = stored(redis, keys).await?;
    let found: Vec<(Vec<u8>, Bytes)> = keys
        .iter()
        .zip(values)
        .filter_map(|(key, raw)| Some((key.clone(), raw?)))
        .collect();
    mark_stale(redis, &found, outcome).await
}

/// Rewrites each entry (key and the value just read) with no freshness
/// left, keeping its expiry (`SET .. XX KEEPTTL`, so an entry that expired
/// meanwhile is not brought back).
async fn mark_stale(
    redis: &RedisPool,
    entries: &[(Vec<u8>, Bytes)],
    outcome: &mut Outcome,
) -> Result<(), RedisFailure> {
    let mut pipe = redis::pipe();
    let mut sets = 0;
    for (key, raw) in entries {
        if let Some(stale) = envelope::marked_stale(raw) {
            pipe.cmd("SET").arg(key).arg(stale).arg("XX").arg("KEEPTTL");
            sets += 1;
        }
    }
    if sets > 0 {
        let replies: Vec<Option<String>> = redis
            .query(Command::Pipe(&pipe), Instant::now() + DEADLINE)
            .await?;
        outcome.marked_stale += replies.iter().filter(|r| r.is_some()).count() as u64;
    }
    Ok(())
}

/// One `UNLINK`; in a cluster redis-rs splits it by slot and sums the counts.
async fn unlink(redis: &RedisPool, keys: &[Vec<u8>]) -> Result<u64, RedisFailure> {
    if keys.is_empty() {
        return Ok(0);
    }
    let cmd = redis::cmd("UNLINK").arg(keys).to_owned();
    redis
        .query::<u64>(Command::Cmd(&cmd), Instant::now() + DEADLINE)
        .await
}

/// Drops this process's L1 copies of the target (a soft purge too: a
/// purge runs through Redis, which keeps the stale one).
pub fn forget_local(l1: &L1, prefix: &Prefix, target: &Target) {
    match target.single_key(prefix) {
        Some(key) => l1.remove(&key),
        None => l1.remove_matching(|k, entry| target.covers_entry(prefix, k, entry)),
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
            .and_then(|r| Purge::new(r).ok());
        match parsed {
            Some(purge) => forget_local(l1, prefix, &purge.target),
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
    fn a_purge_names_one_kind_of_target_and_real_ids() {
        let both = PurgeRequest {
            product_ids: Some(vec!["p".into()]),
            supplier_ids: Some(vec!["s".into()]),
            ..Default::default()
        };
        assert!(Purge::new(both).is_err());
        let with_user = PurgeRequest {
            user_id: Some("u".into()),
            product_ids: Some(vec!["p".into()]),
            ..Default::default()
        };
        assert!(Purge::new(with_user).is_err());
        for bad in [vec![], vec![" ".to_string()]] {
            let r = PurgeRequest {
                product_ids: Some(bad),
                ..Default::default()
            };
            assert_eq!(Purge::new(r).unwrap_err().field, "product_ids");
        }
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
        let p = Purge {
            target: Target::UserEntry("u".into(), H.into()),
            soft: true,
        };
        assert_eq!(Purge::new(p.request()), Ok(p));
        let p = Purge {
            target: Target::Tagged(Tagged::Suppliers(vec!["s".into(), "*".into()])),
            soft: false,
        };
        assert_eq!(Purge::new(p.request()), Ok(p));
    }
}
