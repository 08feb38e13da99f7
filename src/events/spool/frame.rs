//! Record framing: how one payload is laid out in a segment, and how a
//! segment's bytes are read back, stepping over whatever does not check out.
//!
//! Pure functions over byte slices, so the rules for torn and corrupt data
//! can be tested (and fuzzed) without touching a disk.

/// Marks the start of a record. 0xFF never occurs in UTF-8, so a text payload
/// (JSON) cannot contain it, which keeps resynchronisation after corruption
/// from stopping inside a payload.
pub(super) const MAGIC: [u8; 4] = [0xFF, b'L', b'C', b'S'];

/// magic, length, CRC32.
pub(super) const HEADER_LEN: usize = 12;

/// The CRC covers the length field too, so a flipped length bit is caught
/// even when the wrong length still fits in the file.
fn checksum(len_be: [u8; 4], parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_be);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// The header of the record whose payload is `parts` one after the other
/// (`len` bytes in all): written before them, so that a payload of several
/// megabytes is never copied into a frame.
pub(super) fn header(parts: &[&[u8]], len: u32) -> [u8; HEADER_LEN] {
    let len_be = len.to_be_bytes();
    let mut header = [0; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&len_be);
    header[8..].copy_from_slice(&checksum(len_be, parts).to_be_bytes());
    header
}

/// The framed record for `payload`, in one buffer.
#[cfg(test)]
pub(super) fn encode(payload: &[u8], len: u32) -> Vec<u8> {
    let mut frame = header(&[payload], len).to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// The payload of a whole, intact record starting at `pos`, and where it ends.
/// Every length read here is checked against `buf`, never allocated.
fn decode_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = buf.get(pos..pos.checked_add(HEADER_LEN)?)?;
    let (magic, rest) = header.split_at(4);
    let (len_be, crc_be) = rest.split_at(4);
    if magic != MAGIC {
        return None;
    }
    let len_be: [u8; 4] = len_be.try_into().ok()?;
    let crc = u32::from_be_bytes(crc_be.try_into().ok()?);
    let start = pos + HEADER_LEN;
    let end = start.checked_add(usize::try_from(u32::from_be_bytes(len_be)).ok()?)?;
    let payload = buf.get(start..end)?;
    (checksum(len_be, &[payload]) == crc).then_some((payload, end))
}

/// The first offset at or after `from` where an intact record starts, or the
/// end of `buf`. A candidate must carry the magic *and* a matching CRC, so
/// landing inside garbage does not yield a record.
fn resync(buf: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(rest) = buf.get(at..) {
        let Some(found) = rest.windows(MAGIC.len()).position(|w| w == MAGIC) else {
            break;
        };
        if decode_at(buf, at + found).is_some() {
            return at + found;
        }
        at += found + 1;
    }
    buf.len()
}

/// One step through a segment; `end` is the offset just after it.
#[derive(Debug, PartialEq)]
pub(super) enum Item<'a> {
    Record {
        payload: &'a [u8],
        end: usize,
    },
    /// Bytes that are not an intact record (torn write, flipped bits, zeros a
    /// crash left behind), up to the next intact record or the end.
    Corrupt {
        end: usize,
    },
}

/// Walks a segment's bytes as records and corrupt stretches, in order.
///
/// On a bad record it resynchronises on the next intact one rather than
/// trusting the (possibly corrupt) length or giving up on the segment: a bad
/// sector in the middle of a segment costs the records in it, not the rest.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        if let Some((payload, end)) = decode_at(self.buf, self.pos) {
            self.pos = end;
            return Some(Item::Record { payload, end });
        }
        let end = resync(self.buf, self.pos + 1);
        self.pos = end;
        Some(Item::Corrupt { end })
    }
}

/// Where the last intact record of a segment ends. What follows it is a torn
/// tail (a write the process or the disk did not finish).
pub(super) fn valid_end(buf: &[u8]) -> usize {
    Reader::new(buf)
        .filter_map(|item| match item {
            Item::Record { end, .. } => Some(end),
            Item::Corrupt { .. } => None,
        })
        .last()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(buf: &[u8]) -> Vec<&[u8]> {
        Reader::new(buf)
            .filter_map(|item| match item {
                Item::Record { payload, .. } => Some(payload),
                Item::Corrupt { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_length_claim_larger_than_the_file_is_corrupt_not_allocated() {
        let mut buf = encode(b"hello", 5);
        buf[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Reader::new(&buf).collect::<Vec<_>>(),
            vec![Item::Corrupt { end: buf.len() }]
        );
        assert_eq!(valid_end(&buf), 0);
    }

    #[test]
    fn a_corrupt_length_does_not_hide_the_records_after_it() {
        let mut buf = encode(b"first", 5);
        let second_at = buf.len();
        buf.extend(encode(b"second", 6));
        buf.extend(encode(b"third", 5));
        buf[second_at + 7] ^= 0x01;
        assert_eq!(records(&buf), vec![&b"first"[..], b"third"]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_items_move_forward(
            buf in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut last = 0;
            for item in Reader::new(&buf) {
                let end = match item { Item::Record { end, .. } | Item::Corrupt { end } => end };
                prop_assert!(end > last && end <= buf.len());
                last = end;
            }
            prop_assert!(valid_end(&buf) <= buf.len());
        }

        #[test]
        fn framed_payloads_read_back_exactly(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)
        ) {
            let buf: Vec<u8> = payloads
                .iter()
                .flat_map(|p| encode(p, u32::try_from(p.len()).expect("test payloads are small")))
                .collect();
            let read: Vec<Vec<u8>> = records(&buf).into_iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(read, payloads);
            prop_assert_eq!(valid_end(&buf), buf.len());
        }
    }
}
