//! The answer as a client reads it: its content codings undone, within a
//! bound on the decoded size (docs/keys-and-security.md, "Compressed answers").
//!
//! A backend that compresses sends the search facts inside the coded bytes,
//! so the intent, results and products are read from the decoded body. Every
//! step refuses what a client might read otherwise: an unknown coding, bytes
//! after a gzip member, a decoded size past the bound. The caller treats a
//! refusal as an answer it cannot read ([`Unreadable`]) and fails closed.

use std::borrow::Cow;
use std::io::Read;

use http::HeaderMap;
use http::header::CONTENT_ENCODING;

use super::Unreadable;

/// One content coding of `Content-Encoding` that leafcache undoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn parse(name: &str) -> Option<Option<Coding>> {
        let coding = match name.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            "identity" => return Some(None),
            _ => return None,
        };
        Some(Some(coding))
    }
}

/// The body of an answer with its `Content-Encoding` undone, in the reverse
/// of the order the codings were applied; at most `limit` decoded bytes.
pub fn decoded<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, Unreadable> {
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = value.to_str().map_err(|_| Unreadable::Coding)?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if let Some(coding) = Coding::parse(name).ok_or(Unreadable::Coding)? {
                codings.push(coding);
            }
        }
    }
    let mut out = Cow::Borrowed(body);
    for coding in codings.into_iter().rev() {
        out = Cow::Owned(decode_one(coding, &out, limit)?);
    }
    if out.len() > limit {
        return Err(Unreadable::TooLarge);
    }
    Ok(out)
}

fn decode_one(coding: Coding, input: &[u8], limit: usize) -> Result<Vec<u8>, Unreadable> {
    match coding {
        Coding::Gzip => {
            // One member, and nothing after it: a client that stops at the
            // first member and one that reads on would differ.
            let mut d = flate2::bufread::GzDecoder::new(input);
            let out = bounded(&mut d, limit)?;
            if !d.into_inner().is_empty() {
                return Err(Unreadable::Coding);
            }
            Ok(out)
        }
        Coding::Deflate => {
            // RFC 9110 section 8.4.1.2: "deflate" is the zlib format; some
            // servers send the raw stream, which browsers and httpx read
            // too. Either must use the whole input.
            let mut z = flate2::bufread::ZlibDecoder::new(input);
            match bounded(&mut z, limit) {
                Ok(out) if z.into_inner().is_empty() => Ok(out),
                Err(Unreadable::TooLarge) => Err(Unreadable::TooLarge),
                _ => {
                    let mut raw = flate2::bufread::DeflateDecoder::new(input);
                    let out = bounded(&mut raw, limit)?;
                    if !raw.into_inner().is_empty() {
                        return Err(Unreadable::Coding);
                    }
                    Ok(out)
                }
            }
        }
        Coding::Brotli => {
            let mut d = brotli_decompressor::Decompressor::new(input, 4096);
            bounded(&mut d, limit)
        }
        Coding::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|_| Unreadable::Coding)?
                .single_frame();
            bounded(&mut d, limit)
        }
    }
}

/// Reads `r` to its end, refusing more than `limit` bytes: a small bomb
/// costs at most `limit` bytes of memory and the time to inflate them.
fn bounded(r: &mut impl Read, limit: usize) -> Result<Vec<u8>, Unreadable> {
    let mut out = Vec::new();
    let read = r
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Unreadable::Coding)?;
    if read > limit {
        return Err(Unreadable::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    fn headers(coding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, coding.parse().expect("a header value"));
        h
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).expect("in memory");
        e.finish().expect("in memory")
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).expect("in memory");
        e.finish().expect("in memory")
    }

    fn raw_deflate(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).expect("in memory");
        e.finish().expect("in memory")
    }

    const DOC: &[u8] = br#"{"intent":"add_to_order","products":[]}"#;

    #[test]
    fn every_coding_reads_back() {
        let zstd = zstd::encode_all(DOC, 3).expect("in memory");
        for (name, coded) in [
            ("gzip", gzip(DOC)),
            ("x-gzip", gzip(DOC)),
            ("GZIP", gzip(DOC)),
            ("deflate", zlib(DOC)),
            ("deflate", raw_deflate(DOC)),
            ("zstd", zstd),
            ("identity", DOC.to_vec()),
        ] {
            let out = decoded(&headers(name), &coded, 1 << 20).expect(name);
            assert_eq!(&*out, DOC, "{name}");
        }
    }

    #[test]
    fn codings_in_turn_are_undone_last_first() {
        let twice = zstd::encode_all(&gzip(DOC)[..], 3).expect("in memory");
        let out = decoded(&headers("gzip, zstd"), &twice, 1 << 20).expect("decodes");
        assert_eq!(&*out, DOC);
        let mut h = headers("gzip");
        h.append(CONTENT_ENCODING, "zstd".parse().expect("value"));
        assert_eq!(&*decoded(&h, &twice, 1 << 20).expect("decodes"), DOC);
        assert_eq!(
            decoded(&headers("zstd, gzip"), &twice, 1 << 20),
            Err(Unreadable::Coding)
        );
    }

    #[test]
    fn unknown_broken_and_trailing_codings_are_unreadable() {
        assert_eq!(
            decoded(&headers("compress"), DOC, 1 << 20),
            Err(Unreadable::Coding)
        );
        assert_eq!(
            decoded(&headers("gzip"), DOC, 1 << 20),
            Err(Unreadable::Coding)
        );
        let mut two = gzip(DOC);
        two.extend_from_slice(&gzip(br#"{"intent":"x"}"#));
        assert_eq!(
            decoded(&headers("gzip"), &two, 1 << 20),
            Err(Unreadable::Coding)
        );
        let mut cut = gzip(DOC);
        cut.truncate(cut.len() - 4);
        assert_eq!(
            decoded(&headers("gzip"), &cut, 1 << 20),
            Err(Unreadable::Coding)
        );
    }

    #[test]
    fn a_bomb_stops_at_the_bound() {
        let big = vec![b' '; 8 << 20];
        let bomb = gzip(&big);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            decoded(&headers("gzip"), &bomb, 1 << 20),
            Err(Unreadable::TooLarge)
        );
        assert_eq!(
            decoded(&headers("deflate"), &zlib(&big), 1 << 20),
            Err(Unreadable::TooLarge)
        );
        assert_eq!(
            decoded(&HeaderMap::new(), &big, 1 << 20),
            Err(Unreadable::TooLarge)
        );
    }
}
