//! The stored form of a cached answer: a small versioned binary envelope.
//!
//! Layout (all integers big endian):
//!
//! ```text
//! "LC" version:u8 status:u16 stored_at_ms:u64 fresh_ms:u64
//! [v2: initial_age_ms:u64 variant_flag:u8
//!      [generation:u64 vary_count:u16 { name:str16 present:u8 [value:bytes32] }*]]
//! header_count:u16 { name:str16 value:bytes32 }*
//! meta_flags:u8 [intent:str32] [confidence:f64] results_count:u32
//! product_count:u32 { product_id:str32 supplier_flag:u8 [supplier:str32] }*
//! body:bytes32 [unreadable:u8]
//! ```
//!
//! Version 1 is what "route" routes write (and what older releases wrote);
//! version 2 adds what RFC 9111 needs on origin routes: the age the answer
//! already had when it arrived (section 4.2.3) and the request header values
//! its `Vary` selected it by. Both versions decode. The last byte, written
//! only for an answer whose search facts could not be read, says why
//! ([`Unreadable::tag`]); readers that predate it stop before it.
//!
//! Anything that does not decode (another version, truncation) reads as a miss,
//! never as an error the client sees. The search facts of the answer (intent,
//! confidence, products and their suppliers) travel with it, so a hit can be
//! logged without parsing the body again.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::answer::{SearchMeta, Unreadable, alloc_size};

const MAGIC: &[u8; 2] = b"LC";
/// The version "route" entries are written in.
pub const VERSION: u8 = 1;
/// The version origin-route entries are written in.
pub const VERSION_HTTP: u8 = 2;

/// A cached answer.
#[derive(Clone, Debug)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the answer was stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// How long after `stored_at_ms` it is fresh.
    pub fresh_for: Duration,
    /// Shared with the search events of every hit, not copied.
    pub meta: Arc<SearchMeta>,
    /// How old the answer already was when it arrived (RFC 9111 section
    /// 4.2.3 `corrected_initial_age`); zero on "route" routes.
    pub initial_age: Duration,
    /// Origin routes: which variant of its URI this entry is.
    pub variant: Option<Arc<Variant>>,
}

/// A stored variant (RFC 9111 section 4.1): the request header values its
/// `Vary` named, and the generation of the URI's variants it belongs to
/// (a new generation after an invalidation makes older variants unreachable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub generation: u64,
    pub selection: crate::http_cache::vary::Selection,
}

impl Entry {
    /// The answer's current age: its age on arrival plus the time since it
    /// was stored (RFC 9111 section 4.2.3 `current_age`).
    pub fn age(&self, now_ms: u64) -> Duration {
        self.initial_age.saturating_add(Duration::from_millis(
            now_ms.saturating_sub(self.stored_at_ms),
        ))
    }

    /// Freshness left, zero when stale.
    pub fn remaining(&self, now_ms: u64) -> Duration {
        self.fresh_for.saturating_sub(self.age(now_ms))
    }

    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.age(now_ms) < self.fresh_for
    }

    /// The memory the entry holds, for the L1 byte budget: what each part
    /// allocated (capacity, rounded to the allocator's size classes), not
    /// only its length. Measured with heaptrack, a ~3 KB answer's product
    /// list took 1.7 KB and its derived log facts 0.8 KB, which a count of
    /// lengths put at 0.6 KB and nothing.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + alloc_size(v.len()) + 48)
            .sum();
        alloc_size(self.body.len()) + headers + self.meta.heap_bytes() + 192
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a leafcache envelope")]
    Magic,
    #[error("envelope version {0} is not known")]
    Version(u8),
    #[error("truncated envelope")]
    Truncated,
    #[error("invalid field in envelope")]
    Invalid,
}

pub fn encode(entry: &Entry) -> Bytes {
    let mut out = BytesMut::with_capacity(entry.weight() + 64);
    let http = !entry.initial_age.is_zero() || entry.variant.is_some();
    out.put_slice(MAGIC);
    out.put_u8(if http { VERSION_HTTP } else { VERSION });
    out.put_u16(entry.status.as_u16());
    out.put_u64(entry.stored_at_ms);
    out.put_u64(entry.fresh_for.as_millis() as u64);
    if http {
        out.put_u64(entry.initial_age.as_millis() as u64);
        match &entry.variant {
            None => out.put_u8(0),
            Some(v) => {
                out.put_u8(1);
                out.put_u64(v.generation);
                out.put_u16(v.selection.len().min(u16::MAX as usize) as u16);
                for (name, value) in v.selection.iter().take(u16::MAX as usize) {
                    out.put_u16(name.as_str().len() as u16);
                    out.put_slice(name.as_str().as_bytes());
                    match value {
                        Some(value) => {
                            out.put_u8(1);
                            put_bytes(&mut out, value);
                        }
                        None => out.put_u8(0),
                    }
                }
            }
        }
    }
    out.put_u16(entry.headers.len().min(u16::MAX as usize) as u16);
    for (name, value) in entry.headers.iter().take(u16::MAX as usize) {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    let meta = &entry.meta;
    let flags = u8::from(meta.intent.is_some()) | (u8::from(meta.confidence.is_some()) << 1);
    out.put_u8(flags);
    if let Some(intent) = &meta.intent {
        put_bytes(&mut out, intent.as_bytes());
    }
    if let Some(c) = meta.confidence {
        out.put_f64(c);
    }
    out.put_u32(meta.results_count);
    out.put_u32(meta.products.len() as u32);
    for (product, supplier) in &meta.products {
        put_bytes(&mut out, product.as_bytes());
        match supplier {
            Some(s) => {
                out.put_u8(1);
                put_bytes(&mut out, s.as_bytes());
            }
            None => out.put_u8(0),
        }
    }
    put_bytes(&mut out, &entry.body);
    if let Some(why) = meta.unreadable {
        out.put_u8(why.tag());
    }
    out.freeze()
}

/// Where `fresh_ms` sits: after the magic, version, status and stored time.
const FRESH_AT: usize = 2 + 1 + 2 + 8;

/// A stored envelope with no freshness left, everything else as it was (a
/// soft purge); `None` for what is not an envelope this release reads.
pub fn marked_stale(raw: &[u8]) -> Option<Vec<u8>> {
    let known = raw
        .get(..3)
        .is_some_and(|head| &head[..2] == MAGIC && (head[2] == VERSION || head[2] == VERSION_HTTP));
    if !known || raw.len() < FRESH_AT + 8 {
        return None;
    }
    let mut out = raw.to_vec();
    out[FRESH_AT..FRESH_AT + 8].fill(0);
    Some(out)
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

/// Decodes an envelope; the body is a slice of `input`, not a copy.
pub fn decode(input: Bytes) -> Result<Entry, DecodeError> {
    let mut r = Reader { buf: input };
    if r.take(2)?.as_ref() != MAGIC {
        return Err(DecodeError::Magic);
    }
    let version = r.u8()?;
    if version != VERSION && version != VERSION_HTTP {
        return Err(DecodeError::Version(version));
    }
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Invalid)?;
    let stored_at_ms = r.u64()?;
    let fresh_for = Duration::from_millis(r.u64()?);
    let (initial_age, variant) = if version == VERSION_HTTP {
        let initial_age = Duration::from_millis(r.u64()?);
        let variant = match r.u8()? {
            0 => None,
            _ => {
                let generation = r.u64()?;
                let count = r.u16()? as usize;
                // Each member takes at least 3 bytes.
                if count > r.buf.remaining() / 3 {
                    return Err(DecodeError::Truncated);
                }
                let mut selection = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = r.u16()? as usize;
                    let name =
                        HeaderName::from_bytes(&r.take(len)?).map_err(|_| DecodeError::Invalid)?;
                    let value = match r.u8()? {
                        0 => None,
                        _ => Some(r.bytes32()?),
                    };
                    selection.push((name, value));
                }
                Some(Arc::new(Variant {
                    generation,
                    selection,
                }))
            }
        };
        (initial_age, variant)
    } else {
        (Duration::ZERO, None)
    };
    let header_count = r.u16()? as usize;
    // Each header takes at least 7 bytes; a count the input cannot hold is
    // corruption (and HeaderMap::with_capacity panics past 32768).
    if header_count > r.buf.remaining() / 7 {
        return Err(DecodeError::Truncated);
    }
    let mut headers = HeaderMap::with_capacity(header_count.min(64));
    for _ in 0..header_count {
        let len = r.u16()? as usize;
        let name = HeaderName::from_bytes(&r.take(len)?).map_err(|_| DecodeError::Invalid)?;
        let value = r.bytes32()?;
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| DecodeError::Invalid)?;
        headers.append(name, value);
    }
    let flags = r.u8()?;
    let intent = if flags & 1 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let confidence = if flags & 2 != 0 { Some(r.f64()?) } else { None };
    let results_count = r.u32()?;
    let product_count = r.u32()? as usize;
    // Each product takes at least 5 bytes; refuse counts the input cannot hold.
    if product_count > r.buf.remaining() / 5 {
        return Err(DecodeError::Truncated);
    }
    let mut products = Vec::with_capacity(product_count);
    for _ in 0..product_count {
        let product = r.string()?;
        let supplier = if r.u8()? == 1 {
            Some(r.string()?)
        } else {
            None
        };
        products.push((product, supplier));
    }
    let body = r.bytes32()?;
    let unreadable = match r.buf.remaining() {
        0 => None,
        _ => Unreadable::from_tag(r.u8()?),
    };
    Ok(Entry {
        status,
        headers,
        body,
        stored_at_ms,
        fresh_for,
        meta: Arc::new(SearchMeta {
            intent,
            confidence,
            results_count,
            products,
            unreadable,
            facts: Default::default(),
        }),
        initial_age,
        variant,
    })
}

struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_f64())
    }
    fn bytes32(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes32()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(br#"{"products":[]}"#),
            stored_at_ms: 1_700_000_000_123,
            fresh_for: Duration::from_secs(3600),
            meta: Arc::new(SearchMeta {
                intent: Some("product_search".into()),
                confidence: Some(0.92),
                results_count: 2,
                products: vec![("p1".into(), Some("s1".into())), ("p2".into(), None)],
                ..SearchMeta::default()
            }),
            initial_age: Duration::ZERO,
            variant: None,
        }
    }

    fn sample_http() -> Entry {
        Entry {
            initial_age: Duration::from_millis(30_500),
            variant: Some(Arc::new(Variant {
                generation: 0xfeed_beef,
                selection: vec![
                    (
                        HeaderName::from_static("accept-language"),
                        Some(Bytes::from_static(b"en,fr")),
                    ),
                    (HeaderName::from_static("x-absent"), None),
                ],
            })),
            ..sample()
        }
    }

    #[test]
    fn a_soft_purged_entry_is_stale_and_otherwise_the_same() {
        for e in [sample(), sample_http()] {
            let stale = marked_stale(&encode(&e)).unwrap();
            let d = decode(Bytes::from(stale)).unwrap();
            assert_eq!(d.fresh_for, Duration::ZERO);
            assert!(!d.is_fresh(e.stored_at_ms));
            assert_eq!((d.stored_at_ms, d.status), (e.stored_at_ms, e.status));
            assert_eq!((d.body, d.headers), (e.body, e.headers));
            assert_eq!(d.meta.products, e.meta.products);
        }
        assert_eq!(marked_stale(b"LC\x09xxxxxxxxxxxxxxxxxxxxxx"), None);
        assert_eq!(marked_stale(b"LC\x01xx"), None);
    }

    #[test]
    fn route_entries_stay_version_1_and_origin_entries_are_version_2() {
        assert_eq!(encode(&sample())[2], VERSION);
        assert_eq!(encode(&sample_http())[2], VERSION_HTTP);
    }

    #[test]
    fn version_2_round_trips_age_and_variant() {
        let e = sample_http();
        let d = decode(encode(&e)).unwrap();
        assert_eq!(d.initial_age, e.initial_age);
        assert_eq!(d.variant, e.variant);
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.body, e.body);
        assert_eq!(d.meta, e.meta);
        let raw = encode(&e);
        for n in 0..raw.len() {
            assert!(
                decode(raw.slice(..n)).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn age_counts_the_age_on_arrival() {
        let e = sample_http();
        assert_eq!(e.age(e.stored_at_ms + 1000), Duration::from_millis(31_500));
        assert!(e.is_fresh(e.stored_at_ms));
        assert!(!e.is_fresh(e.stored_at_ms + 3_600_000 - 30_000));
    }

    #[test]
    fn round_trips_every_field() {
        let e = sample();
        let d = decode(encode(&e)).unwrap();
        assert_eq!(d.status, e.status);
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.body, e.body);
        assert_eq!(d.stored_at_ms, e.stored_at_ms);
        assert_eq!(d.fresh_for, e.fresh_for);
        assert_eq!(d.meta, e.meta);
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut raw = encode(&sample()).to_vec();
        raw[2] = 99;
        assert_eq!(
            decode(Bytes::from(raw)).unwrap_err(),
            DecodeError::Version(99)
        );
    }

    #[test]
    fn truncation_is_refused_at_every_length() {
        let raw = encode(&sample());
        for n in 0..raw.len() {
            assert!(
                decode(raw.slice(..n)).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn freshness_arithmetic() {
        let e = sample();
        let t = e.stored_at_ms + 1000;
        assert_eq!(e.age(t), Duration::from_secs(1));
        assert_eq!(e.remaining(t), Duration::from_secs(3599));
        assert!(e.is_fresh(t));
        assert!(!e.is_fresh(e.stored_at_ms + 3_600_000));
        assert_eq!(e.remaining(e.stored_at_ms + 9_999_999), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut with_magic = b"LC\x01".to_vec();
            with_magic.extend_from_slice(&raw);
            let mut v2 = b"LC\x02".to_vec();
            v2.extend_from_slice(&raw);
            let _ = decode(Bytes::from(raw));
            let _ = decode(Bytes::from(with_magic));
            let _ = decode(Bytes::from(v2));
        }
    }
}
