//! The spool directory: segment names, the replay checkpoint, and the fsyncs
//! that make creating, renaming and deleting files durable.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::SpoolError;

const SEGMENT_SUFFIX: &str = ".spool";
/// Twenty digits hold any u64, so lexical order of names is write order.
const SEQ_DIGITS: usize = 20;
const CHECKPOINT: &str = "replay.checkpoint";
const CHECKPOINT_MAGIC: [u8; 4] = [0xFF, b'L', b'C', b'K'];
const SLOT_LEN: usize = 32;

/// Attaches the path to an I/O error, the one thing an operator needs to act.
pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:0SEQ_DIGITS$}{SEGMENT_SUFFIX}"))
}

/// The sequence number of a segment file name; anything else in the
/// directory (other versions, an operator's notes) is not ours to read.
fn parse_segment_name(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Sequence numbers of the segments in `dir`, oldest first.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let Some(seq) = parse_segment_name(&entry.file_name()) else {
            continue;
        };
        if entry
            .file_type()
            .map_err(io_error(&entry.path()))?
            .is_file()
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Makes a file's creation, rename or removal in `dir` survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Replay progress: in segment `seq`, every record before `offset` was
/// confirmed delivered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Checkpoint {
    pub seq: u64,
    pub offset: u64,
}

/// One of the two slots of the checkpoint file; the higher generation wins.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Slot {
    generation: u64,
    checkpoint: Checkpoint,
}

impl Slot {
    fn encode(self) -> [u8; SLOT_LEN] {
        let mut out = [0; SLOT_LEN];
        out[..4].copy_from_slice(&CHECKPOINT_MAGIC);
        out[4..12].copy_from_slice(&self.generation.to_be_bytes());
        out[12..20].copy_from_slice(&self.checkpoint.seq.to_be_bytes());
        out[20..28].copy_from_slice(&self.checkpoint.offset.to_be_bytes());
        let crc = crc32fast::hash(&out[..28]);
        out[28..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Slot> {
        let bytes: &[u8; SLOT_LEN] = bytes.try_into().ok()?;
        let word = |at: usize| Some(u64::from_be_bytes(bytes[at..at + 8].try_into().ok()?));
        let crc = u32::from_be_bytes(bytes[28..].try_into().ok()?);
        if bytes[..4] != CHECKPOINT_MAGIC || crc32fast::hash(&bytes[..28]) != crc {
            return None;
        }
        Some(Slot {
            generation: word(4)?,
            checkpoint: Checkpoint {
                seq: word(12)?,
                offset: word(20)?,
            },
        })
    }
}

/// The replay checkpoint: a file of two slots written in turn, in place.
///
/// Saving progress costs one fdatasync per confirmed record, where a
/// write-temp-and-rename would cost two fsyncs and a directory update. A
/// write torn by a crash can only damage the slot being written; the other
/// still holds the previous checkpoint, which at worst re-sends one record.
#[derive(Debug)]
pub(super) struct CheckpointFile {
    path: PathBuf,
    file: Option<File>,
    generation: u64,
}

impl CheckpointFile {
    /// Reads the newest valid slot. Without one, replay starts from the
    /// beginning: records are re-sent, never lost.
    pub(super) fn open(dir: &Path) -> Result<(CheckpointFile, Option<Checkpoint>), SpoolError> {
        let path = dir.join(CHECKPOINT);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let newest = bytes
            .chunks(SLOT_LEN)
            .take(2)
            .filter_map(Slot::decode)
            .max_by_key(|slot| slot.generation);
        if newest.is_none() && !bytes.is_empty() {
            tracing::warn!(
                path = %path.display(),
                "spool checkpoint is damaged; replaying the spool from its start"
            );
        }
        let file = CheckpointFile {
            path,
            file: None,
            generation: newest.map_or(0, |slot| slot.generation),
        };
        Ok((file, newest.map(|slot| slot.checkpoint)))
    }

    /// Durably records `checkpoint`.
    pub(super) fn save(&mut self, checkpoint: Checkpoint) -> Result<(), SpoolError> {
        let created = self.file.is_none() && !self.path.exists();
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.path)
                    .map_err(io_error(&self.path))?,
            ),
        };
        let generation = self.generation.wrapping_add(1);
        let slot = Slot {
            generation,
            checkpoint,
        };
        let at = (generation % 2) * SLOT_LEN as u64;
        let written = file
            .seek(SeekFrom::Start(at))
            .and_then(|_| file.write_all(&slot.encode()))
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // The handle's state after a failed fsync is unknown; reopen.
            self.file = None;
            return Err(io_error(&self.path)(e));
        }
        self.generation = generation;
        if created {
            sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_segment_names_parse() {
        let name = |s: &str| parse_segment_name(OsStr::new(s));
        assert_eq!(name("00000000000000000042.spool"), Some(42));
        assert_eq!(name("18446744073709551615.spool"), Some(u64::MAX));
        assert_eq!(name("99999999999999999999.spool"), None);
        assert_eq!(name("42.spool"), None);
        assert_eq!(name("0000000000000000004a.spool"), None);
        assert_eq!(name("00000000000000000042.spool.tmp"), None);
        assert_eq!(name("+0000000000000000042.spool"), None);
        assert_eq!(name("replay.checkpoint"), None);
    }

    #[test]
    fn segment_names_sort_in_write_order() {
        let a = segment_path(Path::new("d"), 9);
        let b = segment_path(Path::new("d"), 10);
        assert!(a < b);
    }

    #[test]
    fn a_checkpoint_slot_round_trips_and_a_damaged_one_is_rejected() {
        let slot = Slot {
            generation: 3,
            checkpoint: Checkpoint {
                seq: 7,
                offset: 1234,
            },
        };
        let mut bytes = slot.encode();
        assert_eq!(Slot::decode(&bytes), Some(slot));
        bytes[13] ^= 0x10;
        assert_eq!(Slot::decode(&bytes), None);
        assert_eq!(Slot::decode(&bytes[..10]), None);
    }

    #[test]
    fn a_torn_checkpoint_write_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut file, none) = CheckpointFile::open(dir.path()).expect("open");
        assert_eq!(none, None);
        let first = Checkpoint { seq: 1, offset: 10 };
        let second = Checkpoint { seq: 1, offset: 20 };
        file.save(first).expect("save");
        file.save(second).expect("save");
        assert_eq!(
            CheckpointFile::open(dir.path()).expect("open").1,
            Some(second)
        );

        let path = dir.path().join(CHECKPOINT);
        let mut bytes = fs::read(&path).expect("read");
        bytes[5] ^= 0xFF; // generation 2 lives in slot 0
        fs::write(&path, bytes).expect("write");
        let (mut file, found) = CheckpointFile::open(dir.path()).expect("open");
        assert_eq!(found, Some(first));

        let third = Checkpoint { seq: 2, offset: 5 };
        file.save(third).expect("save");
        assert_eq!(
            CheckpointFile::open(dir.path()).expect("open").1,
            Some(third)
        );
    }
}
