use std::convert::Infallible;
use std::fs;
use std::path::Path;

use proptest::prelude::*;

use super::frame::HEADER_LEN;
use super::*;

/// A payload that says which record it is, padded to `len` bytes.
fn payload(id: u32, len: usize) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.resize(len.max(4), b'x');
    p
}

fn id_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("test payloads carry an id"))
}

fn record_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

/// Replays everything, returning the ids delivered.
fn drain(spool: &mut Spool) -> (Vec<u32>, ReplayStats) {
    let mut ids = Vec::new();
    let stats = spool
        .replay(|p| {
            ids.push(id_of(p));
            Ok::<(), Infallible>(())
        })
        .expect("delivery never fails here");
    (ids, stats)
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("test dir is readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "spool"))
        .collect();
    names.sort();
    names
}

#[test]
fn records_come_back_in_order_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(dir.path(), 8192).expect("open");
    for id in 0..100 {
        spool.append(&payload(id, 60)).expect("append");
    }
    assert!(segment_files(dir.path()).len() > 3, "segments rotate");
    assert_eq!(spool.bytes(), 100 * record_len(60));
    let (ids, stats) = drain(&mut spool);
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    assert_eq!(
        stats,
        ReplayStats {
            records: 100,
            bytes: 6000,
            torn: 0
        }
    );
    assert!(spool.is_empty());
    assert!(
        segment_files(dir.path()).is_empty(),
        "replayed segments are deleted"
    );
}

#[test]
fn a_full_spool_refuses_the_record_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max = 2 * record_len(50) + 20;
    let mut spool = Spool::open(dir.path(), max).expect("open");
    spool.append(&payload(1, 50)).expect("first fits");
    spool.append(&payload(2, 50)).expect("second fits");
    let used = 2 * record_len(50);
    match spool.append(&payload(3, 50)) {
        Err(SpoolError::Full { used: u, max: m }) => assert_eq!((u, m), (used, max)),
        other => panic!("expected Full, got {other:?}"),
    }
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .sum();
    assert_eq!(on_disk, used);
    assert_eq!(spool.bytes(), used);
    spool
        .append(&payload(4, 5))
        .expect("a smaller record still fits");
    assert_eq!(drain(&mut spool).0, vec![1, 2, 4]);
}

#[test]
fn existing_data_counts_toward_the_bound_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max = record_len(50) + 10;
    Spool::open(dir.path(), max)
        .expect("open")
        .append(&payload(1, 50))
        .expect("fits");
    let mut spool = Spool::open(dir.path(), max).expect("reopen");
    assert!(matches!(
        spool.append(&payload(2, 50)),
        Err(SpoolError::Full { .. })
    ));
}

#[test]
fn reopening_keeps_records_and_byte_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
    for id in 0..5 {
        spool.append(&payload(id, 100)).expect("append");
    }
    let bytes = spool.bytes();
    drop(spool);
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(spool.bytes(), bytes);
    spool.append(&payload(5, 100)).expect("append after reopen");
    assert_eq!(drain(&mut spool).0, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_failed_delivery_keeps_it_and_everything_after_and_confirmed_ones_stay_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small segments, so the failure falls in a later segment than the start.
    let mut spool = Spool::open(dir.path(), 4096).expect("open");
    for id in 0..40 {
        spool.append(&payload(id, 40)).expect("append");
    }
    let mut delivered = Vec::new();
    let outcome = spool.replay(|p| {
        let id = id_of(p);
        if id == 25 {
            return Err("redis went away");
        }
        delivered.push(id);
        Ok(())
    });
    assert!(matches!(
        outcome,
        Err(ReplayError::Deliver("redis went away"))
    ));
    assert_eq!(delivered, (0..25).collect::<Vec<_>>());
    assert_eq!(spool.bytes(), 15 * record_len(40));

    drop(spool);
    let mut spool = Spool::open(dir.path(), 4096).expect("reopen");
    assert_eq!(spool.bytes(), 15 * record_len(40));
    assert_eq!(drain(&mut spool).0, (25..40).collect::<Vec<_>>());
}

#[test]
fn a_torn_last_record_is_cut_at_every_offset_and_the_rest_replays() {
    let len = 30;
    let last_start = 2 * record_len(len);
    for cut in last_start + 1..3 * record_len(len) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
        for id in 0..3 {
            spool.append(&payload(id, len)).expect("append");
        }
        drop(spool);
        let files = segment_files(dir.path());
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&files[0])
            .expect("open segment");
        file.set_len(cut).expect("truncate");
        drop(file);

        let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(spool.bytes(), last_start, "cut at {cut}");
        spool
            .append(&payload(3, len))
            .expect("append after a torn tail");
        let (ids, stats) = drain(&mut spool);
        assert_eq!(ids, vec![0, 1, 3], "cut at {cut}");
        assert_eq!(stats.torn, 1, "cut at {cut}");

        spool.append(&payload(4, len)).expect("append after replay");
        let (ids, stats) = drain(&mut spool);
        assert_eq!((ids, stats.torn), (vec![4], 0));
    }
}

#[test]
fn a_flipped_byte_in_a_middle_record_skips_only_that_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
    for id in 0..5 {
        spool.append(&payload(id, 30)).expect("append");
    }
    drop(spool);
    let path = &segment_files(dir.path())[0];
    let mut bytes = fs::read(path).expect("read");
    let at = usize::try_from(2 * record_len(30)).expect("small") + HEADER_LEN + 10;
    bytes[at] ^= 0x40;
    fs::write(path, bytes).expect("write");

    let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    let (ids, stats) = drain(&mut spool);
    assert_eq!(ids, vec![0, 1, 3, 4]);
    assert_eq!(stats.torn, 1);
}

#[test]
fn a_garbage_segment_neither_panics_nor_delivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut garbage = vec![0xFF, b'L', b'C', b'S', 0xFF, 0xFF, 0xFF, 0xF0];
    garbage.extend(std::iter::repeat_n(0xAB, 300));
    fs::write(dir.path().join("00000000000000000001.spool"), &garbage).expect("write");
    fs::write(dir.path().join("00000000000000000000.spool"), [0u8; 64]).expect("write");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
    spool.append(&payload(7, 10)).expect("append");
    let (ids, stats) = drain(&mut spool);
    assert_eq!(ids, vec![7]);
    assert_eq!(stats.torn, 2);
}

#[test]
fn files_that_are_not_segments_are_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let others = [
        "notes.txt",
        "42.spool",
        "0000000000000000000a.spool",
        "00000000000000000001.spool.tmp",
        "00000000000000000001.spool2",
    ];
    for name in others {
        fs::write(dir.path().join(name), b"not a record").expect("write");
    }
    fs::create_dir(dir.path().join("00000000000000000003.spool")).expect("mkdir");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
    assert!(spool.is_empty());
    spool.append(&payload(1, 10)).expect("append");
    let (ids, stats) = drain(&mut spool);
    assert_eq!((ids, stats.torn), (vec![1], 0));
    for name in others {
        assert_eq!(
            fs::read(dir.path().join(name)).expect("still there"),
            b"not a record"
        );
    }
}

#[test]
fn a_damaged_checkpoint_replays_from_the_start_rather_than_losing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
    for id in 0..4 {
        spool.append(&payload(id, 10)).expect("append");
    }
    let _ = spool.replay(|p| if id_of(p) == 2 { Err(()) } else { Ok(()) });
    drop(spool);
    fs::write(dir.path().join("replay.checkpoint"), b"junk").expect("write");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(drain(&mut spool).0, vec![0, 1, 2, 3]);
}

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    /// Fail the delivery attempt with this index, if there are that many.
    Replay(Option<usize>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..200).prop_map(Op::Append),
        2 => proptest::option::of(0usize..12).prop_map(Op::Replay),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every appended record is delivered, in order, and a record comes twice
    /// only when its delivery failed the first time.
    #[test]
    fn every_record_is_delivered_in_order_and_only_failed_ones_repeat(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 2048;
        let mut spool = Spool::open(dir.path(), max).expect("open");
        let mut next_id = 0u32;
        // Accepted, not yet confirmed, oldest first.
        let mut pending = std::collections::VecDeque::new();
        for op in ops.into_iter().chain([Op::Reopen, Op::Replay(None)]) {
            match op {
                Op::Append(len) => {
                    let p = payload(next_id, len);
                    let before = spool.disk_bytes();
                    match spool.append(&p) {
                        Ok(()) => pending.push_back(next_id),
                        Err(SpoolError::Full { .. }) => {
                            prop_assert!(before + record_len(p.len()) > max);
                            prop_assert_eq!(spool.disk_bytes(), before);
                        }
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    }
                    next_id += 1;
                }
                Op::Replay(fail_at) => {
                    let mut attempt = 0;
                    let mut order_error = None;
                    let outcome = spool.replay(|p| {
                        let id = id_of(p);
                        if pending.front() != Some(&id) && order_error.is_none() {
                            order_error = Some((id, pending.front().copied()));
                        }
                        let fail = fail_at == Some(attempt);
                        attempt += 1;
                        if fail {
                            return Err("refused");
                        }
                        pending.pop_front();
                        Ok(())
                    });
                    prop_assert_eq!(order_error, None);
                    match outcome {
                        Ok(stats) => {
                            prop_assert!(pending.is_empty());
                            prop_assert_eq!(stats.torn, 0);
                            prop_assert!(spool.is_empty());
                        }
                        Err(ReplayError::Deliver(_)) => prop_assert!(!pending.is_empty()),
                        Err(ReplayError::Spool(e)) => return Err(TestCaseError::fail(e.to_string())),
                    }
                }
                Op::Reopen => {
                    let bytes = spool.bytes();
                    drop(spool);
                    spool = Spool::open(dir.path(), max).expect("reopen");
                    prop_assert_eq!(spool.bytes(), bytes);
                }
            }
            prop_assert_eq!(spool.is_empty(), pending.is_empty());
        }
        prop_assert!(pending.is_empty());
    }
}

/// The writer appends while its replay delivers what it read earlier:
/// nothing is skipped, nothing comes twice, and a restart resumes after the
/// last confirmed record.
#[test]
fn appends_between_a_read_and_its_confirmations_are_read_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
    spool.append(&payload(1, 40)).expect("append");
    spool.append(&payload(2, 40)).expect("append");
    let first = spool.read_next().expect("read").expect("two records");
    spool
        .append(&payload(3, 40))
        .expect("append while delivering");
    let ids: Vec<u32> = first.records().map(|r| id_of(r.payload)).collect();
    assert_eq!(ids, [1, 2]);
    let one = first.get(0).expect("record 1");
    spool.confirm(one.done).expect("confirm 1");
    assert_eq!(spool.bytes(), 2 * record_len(40));

    // A restart here delivers 2 again (it was never confirmed), then 3.
    drop(spool);
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("reopen");
    let again = spool.read_next().expect("read").expect("records 2 and 3");
    let ids: Vec<u32> = again.records().map(|r| id_of(r.payload)).collect();
    assert_eq!(ids, [2, 3]);
    for record in again.records() {
        spool.confirm(record.done).expect("confirm");
    }
    assert!(spool.is_empty());
    assert!(spool.read_next().expect("read").is_none());
    assert!(
        segment_files(dir.path()).is_empty(),
        "replayed segments are deleted"
    );
    // A stale confirmation (of a deleted segment) changes nothing.
    spool.confirm(one.done).expect("stale confirm");
    spool
        .append(&payload(4, 40))
        .expect("append after draining");
    assert_eq!(drain(&mut spool).0, [4]);
}

#[test]
fn a_record_appended_in_parts_reads_back_as_one_payload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(dir.path(), 1 << 20).expect("open");
    let whole = payload(7, 100);
    let (head, rest) = whole.split_at(30);
    spool.append_parts(&[head, &[], rest]).expect("append");
    spool.append(&payload(8, 10)).expect("append");
    assert_eq!(spool.bytes(), record_len(100) + record_len(10));
    let mut payloads = Vec::new();
    spool
        .replay(|p| {
            payloads.push(p.to_vec());
            Ok::<(), Infallible>(())
        })
        .expect("delivery never fails here");
    assert_eq!(payloads, [whole, payload(8, 10)]);
}
