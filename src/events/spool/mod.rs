//! The disk spool: where event batches wait while Redis is unreachable
//! (docs/contract.md section 5), to be replayed in order once it answers again.
//!
//! Delivery is at least once. A record is forgotten only after the caller
//! confirms it reached Redis; a crash may re-send the one record whose
//! confirmation was in flight, never lose one. Torn or corrupt records are
//! skipped and counted, never handed out as garbage.
//!
//! # On disk
//!
//! ```text
//! <spool_dir>/00000000000000000042.spool   segments, named by a sequence number
//!                                          (20 digits, so lexical order = write order)
//!   record: magic FF 4C 43 53 ("\xFFLCS") | len:u32 BE | crc32(len bytes ++ payload):u32 BE | payload
//! <spool_dir>/replay.checkpoint            replay progress: two 32-byte slots, written in turn
//!   slot: magic FF 4C 43 4B ("\xFFLCK") | generation:u64 BE | segment seq:u64 BE
//!         | offset:u64 BE | crc32(previous 28 bytes):u32 BE   (newest valid generation wins)
//! ```
//!
//! - Appends go to the newest segment and are fsynced before `append`
//!   returns. A segment is closed at min(8 MiB, max_bytes / 4); each process
//!   start and each failed write begins a new one, so an append never follows
//!   bytes whose fate is unknown.
//! - Replay reads segments oldest first. After each confirmed record the
//!   checkpoint moves past it; a segment read to its end is deleted (and the
//!   directory fsynced), so everything before the checkpoint is done.
//! - A record that does not check out (bad magic, length past the end of the
//!   file, CRC mismatch) is skipped up to the next intact record, found by
//!   its magic and CRC; each stretch skipped counts as one torn record. A
//!   torn tail of the newest segment (a crash or a full disk mid-write) is
//!   truncated away at open.
//! - Files not named like a segment are ignored. A future format must use a
//!   new suffix, so that versions never misread each other's records.

mod files;
mod frame;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use files::{Checkpoint, CheckpointFile, io_error, segment_path};
use frame::{HEADER_LEN, Item, Reader};

/// Segments stay small enough to read whole into memory during replay, and
/// many enough under a small `max_bytes` that replay frees space as it goes.
const SEGMENT_MAX_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("spool I/O error in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a [`Spool::replay`] stopped early. The caller reacts differently: a
/// failed delivery means Redis is gone again, a spool error means the disk
/// is in trouble.
#[cfg(test)]
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    /// `deliver` refused a record; it and everything after it stay spooled.
    #[error("delivering a spooled record failed: {0}")]
    Deliver(E),
    /// Reading a segment, saving progress or deleting a replayed segment
    /// failed; records not yet confirmed stay spooled.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// What one [`Spool::replay`] did.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records delivered and confirmed.
    pub records: u64,
    /// Payload bytes of those records.
    pub bytes: u64,
    /// Torn or corrupt records skipped (including a torn tail cut at open).
    pub torn: u64,
}

/// A place in the spool: everything before it is delivered once confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    seq: u64,
    offset: u64,
}

/// Records read by [`Spool::read_next`], oldest first.
#[derive(Debug)]
pub struct Chunk {
    seq: u64,
    /// Where `buf` starts in the segment.
    start: u64,
    buf: Vec<u8>,
    /// Each record's payload in `buf`, and its end in the segment.
    records: Vec<(std::ops::Range<usize>, u64)>,
    /// Torn or corrupt stretches skipped while reading.
    pub torn: u64,
}

/// One record of a [`Chunk`].
#[derive(Clone, Copy, Debug)]
pub struct ChunkRecord<'a> {
    pub payload: &'a [u8],
    /// What to confirm once the record is delivered.
    pub done: Position,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<ChunkRecord<'_>> {
        let (range, end) = self.records.get(i)?;
        Some(ChunkRecord {
            payload: &self.buf[range.clone()],
            done: Position {
                seq: self.seq,
                offset: self.start + end,
            },
        })
    }

    #[cfg(test)]
    pub fn records(&self) -> impl Iterator<Item = ChunkRecord<'_>> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    seq: u64,
    /// Bytes on disk.
    len: u64,
}

/// Append-only, fsynced, bounded storage of opaque records. Synchronous: run
/// it on a blocking thread.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max_bytes: u64,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// Offset in the oldest segment before which every record is confirmed.
    replayed: u64,
    next_seq: u64,
    /// Open handle of the newest segment. `None` makes the next append start
    /// a new segment.
    writer: Option<File>,
    checkpoint: CheckpointFile,
    /// A torn tail cut at open, counted by the next read.
    torn_at_open: u64,
    /// Torn or corrupt stretches skipped by reads so far.
    torn: u64,
    /// The buffer of a replayed chunk, for the next read: replay after an
    /// outage reads segment after segment, and a fresh multi-megabyte
    /// buffer each time is memory the allocator may keep long after.
    spare: Vec<u8>,
}

impl Spool {
    /// Opens (creating the directory if needed) and scans what is there;
    /// existing data counts toward `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let (checkpoint_file, checkpoint) = CheckpointFile::open(dir)?;
        let mut segments = VecDeque::new();
        for seq in files::list_segments(dir)? {
            let path = segment_path(dir, seq);
            let len = fs::metadata(&path).map_err(io_error(&path))?.len();
            segments.push_back(Segment { seq, len });
        }
        let torn_at_open = match segments.back_mut() {
            Some(newest) => u64::from(cut_torn_tail(dir, newest)?),
            None => 0,
        };
        let replayed = match (checkpoint, segments.front()) {
            (Some(c), Some(oldest)) if c.seq == oldest.seq && c.offset <= oldest.len => c.offset,
            _ => 0,
        };
        let next_seq = segments
            .back()
            .map(|s| s.seq)
            .into_iter()
            .chain(checkpoint.map(|c| c.seq))
            .max()
            .map_or(0, |seq| seq.saturating_add(1));
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_max_bytes: SEGMENT_MAX_BYTES.min(max_bytes / 4).max(1),
            segments,
            replayed,
            next_seq,
            writer: None,
            checkpoint: checkpoint_file,
            torn_at_open,
            torn: 0,
            spare: Vec::new(),
        })
    }

    /// Appends one record and fsyncs before returning. `Err(Full)` when the
    /// record would take the spool past `max_bytes` (nothing written then).
    pub fn append(&mut self, payload: &[u8]) -> Result<(), SpoolError> {
        self.append_parts(&[payload])
    }

    /// [`Spool::append`] of the record whose payload is `parts` one after
    /// the other, written without joining them first.
    pub fn append_parts(&mut self, parts: &[&[u8]]) -> Result<(), SpoolError> {
        let used = self.disk_bytes();
        let full = SpoolError::Full {
            used,
            max: self.max_bytes,
        };
        let Ok(len) = u32::try_from(parts.iter().map(|p| p.len()).sum::<usize>()) else {
            return Err(full);
        };
        let record_len = HEADER_LEN as u64 + u64::from(len);
        if used.saturating_add(record_len) > self.max_bytes {
            return Err(full);
        }
        let rotate = match (&self.writer, self.segments.back()) {
            (Some(_), Some(newest)) => {
                newest.len > 0 && newest.len + record_len > self.segment_max_bytes
            }
            _ => true,
        };
        if rotate {
            self.start_segment()?;
        }
        let (Some(file), Some(newest)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            unreachable!("start_segment leaves an open newest segment");
        };
        let written = file
            .write_all(&frame::header(parts, len))
            .and_then(|()| parts.iter().try_for_each(|p| file.write_all(p)))
            .and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                newest.len += record_len;
                Ok(())
            }
            Err(source) => {
                // Part of the record may be on disk. Cut it if the disk lets
                // us; either way the next append starts a new segment, and
                // replay skips whatever is left as torn.
                let _ = file.set_len(newest.len).and_then(|()| file.sync_data());
                let path = segment_path(&self.dir, newest.seq);
                if let Ok(meta) = fs::metadata(&path) {
                    newest.len = meta.len();
                }
                self.writer = None;
                Err(SpoolError::Io { path, source })
            }
        }
    }

    /// Bytes on disk that are still to replay (for /readyz and metrics).
    pub fn bytes(&self) -> u64 {
        self.disk_bytes().saturating_sub(self.replayed)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes() == 0
    }

    /// Delivers records oldest first to `deliver`. A record is removed
    /// (durably: after a restart it is not delivered again) only once
    /// `deliver` returned Ok; on the first Err, replay stops, that record and
    /// all after it stay for next time, and the error is returned. Torn or
    /// corrupt records are skipped and counted, with one warning per replay.
    ///
    /// The writer and `leafcache replay` drive [`Spool::read_next`],
    /// [`Spool::confirm`] and [`Spool::recycle`] themselves, several records
    /// per round trip; this record-by-record loop over the same calls is
    /// what the tests pin the spool's delivery guarantees with.
    #[cfg(test)]
    pub fn replay<E>(
        &mut self,
        mut deliver: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<ReplayStats, ReplayError<E>> {
        let mut stats = ReplayStats::default();
        let torn_before = self.torn;
        while let Some(chunk) = self.read_next()? {
            stats.torn = self.torn - torn_before;
            for record in chunk.records() {
                deliver(record.payload).map_err(ReplayError::Deliver)?;
                stats.records += 1;
                stats.bytes += record.payload.len() as u64;
                self.confirm(record.done)?;
            }
            self.recycle(chunk);
        }
        stats.torn = self.torn - torn_before;
        Ok(stats)
    }

    /// Reads what is left to replay of the oldest segment that still holds
    /// a record, for the caller to deliver (without holding the spool, so
    /// appends go on meanwhile) and [`Spool::confirm`] record by record.
    /// Segments that hold nothing more are deleted on the way. `None` when
    /// nothing is left. Torn or corrupt stretches are skipped, counted in
    /// the chunk and warned about.
    pub fn read_next(&mut self) -> Result<Option<Chunk>, SpoolError> {
        while let Some(&segment) = self.segments.front() {
            let path = segment_path(&self.dir, segment.seq);
            let start = self.replayed;
            let buf = match read_from(&path, start, std::mem::take(&mut self.spare)) {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), "spool segment vanished before replay");
                    self.forget_oldest();
                    continue;
                }
                Err(e) => return Err(io_error(&path)(e)),
            };
            let mut chunk = Chunk {
                seq: segment.seq,
                start,
                buf: Vec::new(),
                records: Vec::new(),
                torn: std::mem::take(&mut self.torn_at_open),
            };
            let mut end = 0;
            for item in Reader::new(&buf) {
                match item {
                    Item::Record { payload, end: e } => {
                        let from = payload.as_ptr() as usize - buf.as_ptr() as usize;
                        chunk.records.push((from..from + payload.len(), e as u64));
                        end = e;
                    }
                    Item::Corrupt { end: e } => {
                        chunk.torn += 1;
                        end = e;
                    }
                }
            }
            self.torn += chunk.torn;
            if chunk.torn > 0 {
                tracing::warn!(
                    dir = %self.dir.display(),
                    torn = chunk.torn,
                    "skipped torn or corrupt spool records"
                );
            }
            if chunk.records.is_empty() {
                self.spare = buf;
                // Nothing to deliver here: forget what was skipped (and the
                // segment, when that was all of it).
                self.confirm(Position {
                    seq: segment.seq,
                    offset: start + end as u64,
                })?;
                if self.segments.front().is_some_and(|s| s.seq == segment.seq) {
                    return Ok(None); // the open segment, read to its end
                }
                continue;
            }
            chunk.buf = buf;
            return Ok(Some(chunk));
        }
        Ok(None)
    }

    /// Takes back the buffer of a chunk that was delivered, for the next
    /// [`Spool::read_next`].
    pub fn recycle(&mut self, chunk: Chunk) {
        if chunk.buf.capacity() > self.spare.capacity() {
            self.spare = chunk.buf;
        }
    }

    /// Marks everything before `done` as delivered: the checkpoint moves
    /// there, and a segment delivered to its end is deleted (the directory
    /// fsynced). A position in a segment already gone is ignored.
    pub fn confirm(&mut self, done: Position) -> Result<(), SpoolError> {
        let Some(&oldest) = self.segments.front() else {
            return Ok(());
        };
        if oldest.seq != done.seq || done.offset < self.replayed {
            return Ok(());
        }
        self.replayed = done.offset;
        if done.offset < oldest.len {
            return self.checkpoint.save(Checkpoint {
                seq: done.seq,
                offset: done.offset,
            });
        }
        let path = segment_path(&self.dir, oldest.seq);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
        files::sync_dir(&self.dir)?;
        self.forget_oldest();
        Ok(())
    }

    fn forget_oldest(&mut self) {
        self.segments.pop_front();
        self.replayed = 0;
        if self.segments.is_empty() {
            self.writer = None;
            self.spare = Vec::new(); // nothing left to read
        }
    }

    /// Everything on disk, replayed or not: what `max_bytes` bounds.
    fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        self.writer = None;
        let seq = self.next_seq;
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(&path))?;
        self.next_seq = seq.saturating_add(1);
        self.segments.push_back(Segment { seq, len: 0 });
        files::sync_dir(&self.dir)?;
        self.writer = Some(file);
        Ok(())
    }
}

/// A segment's bytes from `offset` to its end, read into `buf` (emptied
/// first). The buffer is sized by the file, never by a length read from
/// inside it.
fn read_from(path: &Path, offset: u64, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    buf.clear();
    buf.reserve(usize::try_from(len.saturating_sub(offset)).unwrap_or(0));
    file.seek(SeekFrom::Start(offset))?;
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Truncates the newest segment after its last intact record, so that
/// nothing read later mistakes a half-written record for data. Returns
/// whether there was a torn tail.
fn cut_torn_tail(dir: &Path, newest: &mut Segment) -> Result<bool, SpoolError> {
    let path = segment_path(dir, newest.seq);
    let buf = read_from(&path, 0, Vec::new()).map_err(io_error(&path))?;
    let valid_end = frame::valid_end(&buf) as u64;
    if valid_end == buf.len() as u64 {
        return Ok(false);
    }
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| {
            file.set_len(valid_end)?;
            file.sync_all()
        })
        .map_err(io_error(&path))?;
    tracing::warn!(
        path = %path.display(),
        cut_bytes = buf.len() as u64 - valid_end,
        "cut a torn record from the end of the spool"
    );
    newest.len = valid_end;
    Ok(true)
}
