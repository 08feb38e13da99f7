//! The spool as the writer's two tasks share it: the queue task appends
//! what it spills, the Redis task appends what Redis did not take and
//! replays the rest. Every spool call runs on a blocking thread, and the
//! lock is never held across a Redis round trip.
//!
//! A record the disk does not take (the spool is at `spool_max_bytes`, or
//! the disk is full or failing) is not dropped: it waits in memory, after
//! everything on disk, and every later append tries the disk again, oldest
//! first; once the disk is empty the Redis task replays waiting records
//! straight to Redis. The events waiting count against the queue's
//! capacity ([`EventStats::held`]), so an event is dropped only when the
//! queue is full too (docs/contract.md sections 5 and 7). The sink learns of a refused
//! record only after the append, so what the writer had taken from the
//! queue meanwhile can wait too: at most twice the queue's capacity.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::EventStats;
use crate::events::SearchEvent;
use crate::events::counters::Counters;
use crate::events::spool::{Chunk, Position, Spool, SpoolError};
use crate::events::write::{self, Layout};
use crate::redis::{Commands, RespBuf};

/// What goes into one spool record.
#[derive(Serialize, Deserialize)]
pub(super) enum SpoolRecord {
    Records(Vec<SearchEvent>),
    Counters(Counters),
}

/// A spool record of searches as the Redis commands that write them starts
/// with this, then the number of searches (10 ASCII digits), then the
/// commands as RESP. Any other record is a [`SpoolRecord`] in JSON (which
/// starts with `{`). Both are UTF-8 text, as the spool's framing expects.
///
/// Searches spilled while Redis is behind are spooled as their commands
/// when the writer has its own connection: encoding them is work the
/// writer does anyway, and their replay is then a check and a send, where
/// JSON cost a serialization, a deserialization and the encoding besides.
/// The commands carry the key prefix and retention of the proxy that
/// spooled them.
const ENCODED: &[u8; 4] = b"\0CMD";
const ENCODED_HEAD: usize = ENCODED.len() + 10;

/// A record's payload, in the parts it is written in.
pub(super) enum Payload<'a> {
    Json(Vec<u8>),
    /// The head (magic and count), then the commands: appended as two
    /// parts, so megabytes of commands are not copied behind the head.
    Commands([u8; ENCODED_HEAD], &'a RespBuf),
}

impl Payload<'_> {
    pub(super) fn parts(&self) -> [&[u8]; 2] {
        match self {
            Payload::Json(json) => [&[], json],
            Payload::Commands(head, commands) => [head, commands.as_bytes()],
        }
    }
}

impl SpoolRecord {
    /// Searches it carries.
    pub(super) fn events(&self) -> u64 {
        match self {
            SpoolRecord::Records(evs) => evs.len() as u64,
            SpoolRecord::Counters(_) => 0,
        }
    }

    /// The payload to spool: searches as their commands when `commands`
    /// gives the layout to encode them with (into `scratch`, emptied
    /// first), everything else as JSON.
    pub(super) fn to_payload<'a>(
        &self,
        commands: Option<&Layout>,
        scratch: &'a mut RespBuf,
    ) -> Result<Payload<'a>, String> {
        match (self, commands) {
            (SpoolRecord::Records(evs), Some(layout)) => {
                let mut head = [0; ENCODED_HEAD];
                head[..ENCODED.len()].copy_from_slice(ENCODED);
                let count = format!("{:010}", evs.len());
                if count.len() != 10 {
                    return Err(format!("{count} searches do not fit one record"));
                }
                head[ENCODED.len()..].copy_from_slice(count.as_bytes());
                scratch.clear();
                write::records_into(layout, evs, scratch);
                Ok(Payload::Commands(head, scratch))
            }
            _ => serde_json::to_vec(self)
                .map(Payload::Json)
                .map_err(|e| e.to_string()),
        }
    }
}

/// A spool record read back.
pub(super) enum Spooled<'a> {
    /// Written as JSON: encoded with the replaying writer's layout.
    Json(SpoolRecord),
    /// Written as commands: sent as they are.
    Commands { events: u64, resp: &'a [u8] },
}

impl<'a> Spooled<'a> {
    /// Reads a payload; `Err` when it is neither form (another version's).
    pub(super) fn decode(payload: &'a [u8]) -> Result<Spooled<'a>, String> {
        match payload.strip_prefix(ENCODED) {
            Some(rest) => {
                let (count, resp) = rest
                    .split_first_chunk::<10>()
                    .ok_or("a record of commands without its count")?;
                let events = std::str::from_utf8(count)
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .ok_or("a record of commands with a bad count")?;
                Ok(Spooled::Commands { events, resp })
            }
            None => serde_json::from_slice(payload)
                .map(Spooled::Json)
                .map_err(|e| e.to_string()),
        }
    }

    /// Searches it carries.
    pub(super) fn events(&self) -> u64 {
        match self {
            Spooled::Json(record) => record.events(),
            Spooled::Commands { events, .. } => *events,
        }
    }

    /// Appends its commands to `out`. Nothing is appended unless the whole
    /// record reads as commands.
    pub(super) fn encode(&self, layout: &Layout, out: &mut impl Commands) -> Result<(), String> {
        match self {
            Spooled::Json(SpoolRecord::Records(evs)) => write::records_into(layout, evs, out),
            Spooled::Json(SpoolRecord::Counters(c)) => write::counters_into(layout, c, out),
            Spooled::Commands { resp, .. } => out.encoded(resp).map_err(|e| e.to_string())?,
        }
        Ok(())
    }
}

/// A round trip of replay sends up to this many bytes of spooled records
/// (at least one record): after an outage the spool holds one record per
/// batch of `batch_max` searches, and a round trip and a checkpoint for
/// each would make replay slower than searches arrive.
pub(super) const REPLAY_BYTES: usize = 4 << 20;

/// What [`Target::replay`] took from a chunk.
#[derive(Debug, Default)]
pub(super) struct Taken {
    /// The index after the last record taken.
    pub(super) end: usize,
    /// What to confirm once they are sent: the end of the last one.
    pub(super) done: Option<Position>,
    /// Records whose commands were encoded, and the searches they carry.
    pub(super) records: u64,
    pub(super) events: u64,
}

/// Encodes the commands of the chunk's records from `from` on into `out`,
/// up to [`REPLAY_BYTES`] of them. Records that do not decode (written by
/// another version) are taken and skipped with a warning.
pub(super) fn take_records(
    layout: &Layout,
    chunk: &Chunk,
    from: usize,
    out: &mut impl Commands,
) -> Taken {
    let mut taken = Taken {
        end: from,
        ..Taken::default()
    };
    let mut bytes = 0;
    while let Some(record) = chunk.get(taken.end) {
        if bytes > 0 && bytes + record.payload.len() > REPLAY_BYTES {
            break;
        }
        bytes += record.payload.len();
        taken.end += 1;
        taken.done = Some(record.done);
        let encoded = Spooled::decode(record.payload).and_then(|r| {
            r.encode(layout, out)?;
            Ok(r.events())
        });
        match encoded {
            Ok(events) => {
                taken.records += 1;
                taken.events += events;
            }
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable spool record"),
        }
    }
    taken
}

/// The spool, and the buffer spilled searches are encoded into: one buffer,
/// reused, rather than a fresh one of megabytes for each record, which the
/// allocator would keep (per blocking thread) long after a spill.
struct Held {
    spool: Spool,
    scratch: RespBuf,
    /// Records the disk did not take, oldest first: newer than all on disk.
    waiting: VecDeque<SpoolRecord>,
}

/// What an append did with the records waiting in memory.
struct Appended {
    /// Events written to disk.
    spooled: u64,
    /// Events of records that cannot be encoded at all (never retried).
    unencodable: u64,
    /// Events still waiting.
    waiting: u64,
    /// Why the disk stopped taking them.
    error: Option<String>,
}

impl Held {
    /// Writes waiting records to disk, oldest first, until one fails.
    fn write_waiting(&mut self, commands: Option<&Layout>) -> Appended {
        let mut out = Appended {
            spooled: 0,
            unencodable: 0,
            waiting: 0,
            error: None,
        };
        while let Some(record) = self.waiting.front() {
            let payload = match record.to_payload(commands, &mut self.scratch) {
                Ok(payload) => payload,
                Err(e) => {
                    tracing::error!(error = %e, "a spool record cannot be encoded; dropped");
                    out.unencodable += record.events();
                    self.waiting.pop_front();
                    continue;
                }
            };
            match self.spool.append_parts(&payload.parts()) {
                Ok(()) => {
                    out.spooled += record.events();
                    self.waiting.pop_front();
                }
                Err(e) => {
                    out.error = Some(match e {
                        SpoolError::Full { .. } => format!("redis unreachable or behind, and {e}"),
                        SpoolError::Io { .. } => format!("cannot write the spool: {e}"),
                    });
                    break;
                }
            }
        }
        out.waiting = self.waiting_events();
        out
    }

    fn waiting_events(&self) -> u64 {
        self.waiting.iter().map(SpoolRecord::events).sum()
    }
}

#[derive(Clone)]
pub(super) struct SharedSpool {
    /// `None` only where losing events is acceptable (benchmarks): what
    /// would be spooled is dropped and counted.
    spool: Option<Arc<Mutex<Held>>>,
    stats: Arc<EventStats>,
    /// Set while the spool refuses records, to warn once per episode.
    full: Arc<AtomicBool>,
    /// With the writer's own connection: searches are spooled as their
    /// commands, encoded with this layout.
    commands: Option<Arc<Layout>>,
}

impl SharedSpool {
    pub(super) fn new(
        spool: Option<Spool>,
        stats: Arc<EventStats>,
        commands: Option<Layout>,
    ) -> SharedSpool {
        if let Some(s) = &spool {
            stats.spool_bytes.store(s.bytes(), Ordering::Relaxed);
        }
        SharedSpool {
            spool: spool.map(|spool| {
                Arc::new(Mutex::new(Held {
                    spool,
                    scratch: RespBuf::default(),
                    waiting: VecDeque::new(),
                }))
            }),
            stats,
            full: Arc::new(AtomicBool::new(false)),
            commands: commands.map(Arc::new),
        }
    }

    /// Whether records wait to be replayed: while they do, newer ones queue
    /// up behind them, so replay keeps the order searches happened in.
    pub(super) fn pending(&self) -> bool {
        self.stats.spool_bytes.load(Ordering::Relaxed) > 0
            || self.stats.held.load(Ordering::Relaxed) > 0
    }

    /// Whether the disk holds nothing to replay, so that records waiting in
    /// memory are the oldest.
    pub(super) fn disk_empty(&self) -> bool {
        self.stats.spool_bytes.load(Ordering::Relaxed) == 0
    }

    /// Runs `f` on the spool on a blocking thread; `None` without a spool
    /// or when the thread failed.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Held) -> T + Send + 'static,
    ) -> Option<T> {
        let held = self.spool.clone()?;
        let stats = self.stats.clone();
        // Spool work logs as the spool's, inside the writer's span.
        let span = tracing::info_span!("spool");
        let result = tokio::task::spawn_blocking(move || {
            let _span = span.entered();
            // std Mutex: only ever locked on blocking threads.
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            let out = f(&mut held);
            stats
                .spool_bytes
                .store(held.spool.bytes(), Ordering::Relaxed);
            out
        })
        .await;
        match result {
            Ok(out) => Some(out),
            Err(e) => {
                tracing::error!(error = %e, "spool task failed");
                None
            }
        }
    }

    /// Appends a record (encoding it on the blocking thread) after any that
    /// wait in memory, writing as many of them to disk as it takes, oldest
    /// first; counts the events written as spooled. What the disk does not
    /// take waits ([`SharedSpool`]'s module doc).
    pub(super) async fn append(&self, record: SpoolRecord) {
        let events = record.events();
        let commands = self.commands.clone();
        let appended = self
            .with(move |held| {
                held.waiting.push_back(record);
                held.write_waiting(commands.as_deref())
            })
            .await;
        let Some(outcome) = appended else {
            self.stats.dropped.fetch_add(events, Ordering::Relaxed);
            return;
        };
        self.stats
            .spooled
            .fetch_add(outcome.spooled, Ordering::Relaxed);
        self.stats
            .dropped
            .fetch_add(outcome.unencodable, Ordering::Relaxed);
        self.stats.held.store(outcome.waiting, Ordering::Relaxed);
        match outcome.error {
            None => {
                if self.full.swap(false, Ordering::Relaxed) {
                    tracing::info!("spool is accepting events again");
                }
            }
            Some(e) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        waiting = outcome.waiting,
                        "the spool takes no more: search events wait in memory (counted against queue_capacity) until it or redis does"
                    );
                }
            }
        }
    }

    /// The oldest record waiting in memory, once nothing older is on disk.
    pub(super) async fn take_waiting(&self) -> Option<SpoolRecord> {
        if !self.disk_empty() {
            return None;
        }
        self.take_waiting_at_exit().await
    }

    /// The oldest record waiting in memory, whatever is on disk: at exit.
    pub(super) async fn take_waiting_at_exit(&self) -> Option<SpoolRecord> {
        if self.stats.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let stats = self.stats.clone();
        self.with(move |held| {
            let record = held.waiting.pop_front();
            stats.held.store(held.waiting_events(), Ordering::Relaxed);
            record
        })
        .await
        .flatten()
    }

    /// Puts back a record [`SharedSpool::take_waiting`] gave, first in line.
    pub(super) async fn put_back(&self, record: SpoolRecord) {
        let stats = self.stats.clone();
        let _ = self
            .with(move |held| {
                held.waiting.push_front(record);
                stats.held.store(held.waiting_events(), Ordering::Relaxed);
            })
            .await;
    }

    /// The next records to replay, if any; `spent` is the chunk replayed
    /// before, whose buffer the read reuses.
    pub(super) async fn read_next(&self, spent: Option<Chunk>) -> Option<Chunk> {
        let read = self.with(|held| {
            if let Some(chunk) = spent {
                held.spool.recycle(chunk);
            }
            held.spool.read_next()
        });
        match read.await? {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                None
            }
        }
    }

    /// Forgets what was replayed up to `done`.
    pub(super) async fn confirm(&self, done: Position) {
        let confirmed = self.with(move |held| {
            let confirmed = held.spool.confirm(done);
            if held.spool.is_empty() {
                held.scratch = RespBuf::default(); // the spill is over
            }
            confirmed
        });
        if let Some(Err(e)) = confirmed.await {
            // The record stays on disk and comes again after a restart:
            // at least once.
            tracing::error!(error = %e, "cannot record spool replay progress");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::SearchMeta;
    use crate::events::{CacheResult, new_search_id};
    use crate::redis::keys::Prefix;

    fn event(user: Option<&str>, query: &str) -> SearchEvent {
        SearchEvent {
            search_id: new_search_id(),
            timestamp_ms: 1_764_106_056_927,
            user_id: user.map(str::to_owned),
            user_uuid: None,
            session_id: Some("s".into()),
            query: query.into(),
            query_normalized: query.to_lowercase(),
            meta: Arc::new(SearchMeta {
                intent: Some("product_search".into()),
                results_count: 2,
                products: vec![("p1".into(), Some("s1".into())), ("p2".into(), None)],
                ..SearchMeta::default()
            }),
            response_time_ms: 0.5,
            cache: CacheResult::Hit,
            status: 200,
            route: "search".into(),
        }
    }

    /// The payload as the spool stores it: its parts joined.
    fn payload(record: &SpoolRecord, commands: Option<&Layout>) -> Vec<u8> {
        let mut scratch = RespBuf::default();
        let payload = record.to_payload(commands, &mut scratch).expect("encodes");
        let bytes = payload.parts().concat();
        assert!(std::str::from_utf8(&bytes).is_ok(), "UTF-8 text");
        bytes
    }

    fn layout() -> Layout {
        Layout {
            prefix: Prefix::single_node("t:"),
            retention_secs: 60,
            record_retention_secs: 30,
            history_limit: 10,
        }
    }

    #[test]
    fn searches_spooled_as_commands_replay_as_the_same_commands_as_json() {
        let record = SpoolRecord::Records(vec![
            event(Some("u1"), "Milk \"2%\"\r\n"),
            event(None, "bread"),
            event(Some("u1"), "eggs"),
        ]);
        let json = payload(&record, None);
        let commands = payload(&record, Some(&layout()));
        assert!(json.starts_with(b"{"), "without a layout: JSON");
        assert!(commands.starts_with(ENCODED));

        // A JSON record (also what earlier versions spooled) replays as before.
        let from_json = Spooled::decode(&json).expect("decodes");
        let mut expected = RespBuf::default();
        from_json.encode(&layout(), &mut expected).expect("encodes");
        assert_eq!(from_json.events(), 3);

        let from_commands = Spooled::decode(&commands).expect("decodes");
        assert_eq!(from_commands.events(), 3);
        let mut raw = RespBuf::default();
        from_commands.encode(&layout(), &mut raw).expect("encodes");
        assert_eq!(raw.as_bytes(), expected.as_bytes());
        assert_eq!(raw.commands(), expected.commands());
        // Through the pool (a cluster, `leafcache replay`): the same commands.
        let mut pipe = crate::redis::log_target::pipeline();
        from_commands.encode(&layout(), &mut pipe).expect("encodes");
        assert_eq!(&pipe.get_packed_pipeline()[..], expected.as_bytes());
    }

    #[test]
    fn counters_stay_json_and_a_damaged_record_of_commands_adds_nothing() {
        let mut counters = Counters::default();
        counters.add(&event(Some("u1"), "milk"));
        let counters = payload(&SpoolRecord::Counters(counters), Some(&layout()));
        assert!(matches!(
            Spooled::decode(&counters),
            Ok(Spooled::Json(SpoolRecord::Counters(_)))
        ));

        let mut commands = payload(
            &SpoolRecord::Records(vec![event(Some("u1"), "milk")]),
            Some(&layout()),
        );
        commands.truncate(commands.len() - 3);
        let mut out = RespBuf::default();
        let damaged = Spooled::decode(&commands).expect("the header reads");
        assert!(damaged.encode(&layout(), &mut out).is_err());
        assert!(out.is_empty(), "no command of a damaged record is sent");
        assert!(Spooled::decode(&ENCODED[..3]).is_err());
        assert!(Spooled::decode(b"\0CMD00001").is_err(), "count cut short");
        assert!(
            Spooled::decode(b"\0CMD00000000x1*1\r\n").is_err(),
            "count not a number"
        );
        assert!(Spooled::decode(b"not json").is_err());
    }

    /// Appends `records` to a fresh spool and reads them back as one chunk.
    fn chunk_of(records: &[Vec<u8>]) -> (tempfile::TempDir, Chunk) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut spool = Spool::open(dir.path(), 1 << 30).expect("opens");
        for r in records {
            spool.append(r).expect("appends");
        }
        let chunk = spool.read_next().expect("reads").expect("a chunk");
        assert_eq!(chunk.len(), records.len());
        (dir, chunk)
    }

    #[test]
    fn replay_takes_records_up_to_its_round_trip_size_and_skips_unreadable_ones() {
        // Records of ~1.5 MiB: two fit a round trip, a third does not.
        // Upper case: the normalized query differs, and is stored too.
        let long = "Q".repeat(1500);
        let big = SpoolRecord::Records((0..300).map(|_| event(Some("u1"), &long)).collect());
        let big = payload(&big, Some(&layout()));
        assert!(big.len() > REPLAY_BYTES / 3 && big.len() < REPLAY_BYTES / 2);
        let small = payload(
            &SpoolRecord::Records(vec![event(None, "milk")]),
            Some(&layout()),
        );
        let (_dir, chunk) = chunk_of(&[
            big.clone(),
            big.clone(),
            big.clone(),
            b"not a record".to_vec(),
            small,
        ]);

        let mut out = RespBuf::default();
        let first = take_records(&layout(), &chunk, 0, &mut out);
        assert_eq!((first.end, first.records, first.events), (2, 2, 600));
        assert_eq!(first.done, chunk.get(1).map(|r| r.done));
        let mut expected = RespBuf::default();
        for record in [&big, &big] {
            Spooled::decode(record)
                .and_then(|r| r.encode(&layout(), &mut expected))
                .expect("encodes");
        }
        assert_eq!(out.as_bytes(), expected.as_bytes(), "both records, whole");

        // The rest: the third, the unreadable one (taken, so that its
        // position is confirmed, but adding nothing) and the last.
        let mut out = RespBuf::default();
        let rest = take_records(&layout(), &chunk, first.end, &mut out);
        assert_eq!((rest.end, rest.records, rest.events), (5, 2, 301));
        assert_eq!(rest.done, chunk.get(4).map(|r| r.done));

        // A record larger than a round trip still goes, alone.
        let huge = SpoolRecord::Records((0..1000).map(|_| event(Some("u1"), &long)).collect());
        let huge = payload(&huge, Some(&layout()));
        assert!(huge.len() > REPLAY_BYTES);
        let small = payload(
            &SpoolRecord::Records(vec![event(None, "eggs")]),
            Some(&layout()),
        );
        let (_dir, chunk) = chunk_of(&[huge, small]);
        let mut out = RespBuf::default();
        let one = take_records(&layout(), &chunk, 0, &mut out);
        assert_eq!((one.end, one.records), (1, 1));
        let past = take_records(&layout(), &chunk, 2, &mut RespBuf::default());
        assert_eq!((past.end, past.records, past.done), (2, 0, None));
    }
}
