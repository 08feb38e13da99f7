//! The Redis wire protocol (RESP2), as much as the event writer needs: it
//! encodes commands straight into one reusable buffer and checks replies
//! without building values.
//!
//! Why not redis-rs here: a logged search costs the writer two or three
//! commands, and redis-rs builds each as its own `Cmd` (two allocations),
//! copies it again into the packed pipeline, and parses every `QUEUED` and
//! every reply into a `Value` through a parser combinator. On a hit-heavy
//! load that was most of the proxy's CPU spent on logging. Everything else
//! (lookups, stores, batch commands) stays on redis-rs.

use std::fmt;

/// Something commands can be appended to: the raw buffer of the event
/// writer, or a redis-rs pipeline (for replay and the batch commands).
pub trait Commands {
    /// Appends one command, given as its arguments (name first).
    fn command(&mut self, args: &[&[u8]]);
}

/// Commands encoded as RESP, ready to be written to the socket.
#[derive(Default)]
pub struct RespBuf {
    buf: Vec<u8>,
    /// Where each command ends in `buf`.
    ends: Vec<usize>,
}

impl RespBuf {
    /// Empties the buffer, keeping its memory for the next batch.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    pub fn commands(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The commands in runs of at most `max` (the last may be shorter):
    /// each run's bytes and how many commands it holds.
    pub fn parts(&self, max: usize) -> impl Iterator<Item = (&[u8], usize)> {
        let max = max.max(1);
        let mut start = 0;
        self.ends.chunks(max).map(move |run| {
            let end = run[run.len() - 1];
            let bytes = &self.buf[start..end];
            start = end;
            (bytes, run.len())
        })
    }
}

impl Commands for RespBuf {
    fn command(&mut self, args: &[&[u8]]) {
        // One reservation for the whole command: `$<len>\r\n<arg>\r\n` is
        // at most 25 bytes of framing per argument.
        let size: usize = args.iter().map(|a| a.len() + 25).sum();
        self.buf.reserve(size + 25);
        let mut n = itoa::Buffer::new();
        self.buf.push(b'*');
        self.buf.extend_from_slice(n.format(args.len()).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        for arg in args {
            self.buf.push(b'$');
            self.buf.extend_from_slice(n.format(arg.len()).as_bytes());
            self.buf.extend_from_slice(b"\r\n");
            self.buf.extend_from_slice(arg);
            self.buf.extend_from_slice(b"\r\n");
        }
        self.ends.push(self.buf.len());
    }
}

impl Commands for redis::Pipeline {
    fn command(&mut self, args: &[&[u8]]) {
        let Some((name, rest)) = args.split_first() else {
            return;
        };
        let cmd = self.cmd(&String::from_utf8_lossy(name));
        for arg in rest {
            cmd.arg(*arg);
        }
        self.ignore();
    }
}

/// What one reply was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+...` (`OK`, `QUEUED`): the writer needs only to know it is not an
    /// error, so the text is not kept (one reply per command of a batch).
    Status,
    /// `-...`: the error text.
    Error(String),
    /// `*n` with n >= 0: the number of elements, and the first error among
    /// them (at any depth), if any.
    Array(usize, Option<String>),
    /// `*-1` or `$-1`.
    Nil,
    /// An integer or a bulk string: the writer never needs their values.
    Value,
}

/// A reply that is not valid RESP: the connection cannot be trusted after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Deepest nesting accepted in a reply (the writer's replies nest once).
const MAX_DEPTH: usize = 8;

/// Reads one reply from the start of `buf`: `Ok(None)` when more bytes are
/// needed, else the reply and how many bytes it took.
pub fn read_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    read_at(buf, 0, 0)
}

fn read_at(
    buf: &[u8],
    start: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some(line_end) = find_crlf(buf, start + 1) else {
        if buf.len() > start && !b"+-:$*".contains(&buf[start]) {
            return Err(ProtocolError(format!(
                "unexpected reply type {:?}",
                buf[start] as char
            )));
        }
        return Ok(None);
    };
    let line = &buf[start + 1..line_end];
    let next = line_end + 2;
    match buf[start] {
        b'+' => Ok(Some((Reply::Status, next - start))),
        b'-' => Ok(Some((
            Reply::Error(String::from_utf8_lossy(line).into_owned()),
            next - start,
        ))),
        b':' => {
            parse_int(line)?;
            Ok(Some((Reply::Value, next - start)))
        }
        b'$' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Nil, next - start)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string without CRLF".into()));
            }
            Ok(Some((Reply::Value, end + 2 - start)))
        }
        b'*' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Nil, next - start)));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("reply nested too deep".into()));
            }
            let mut at = next;
            let mut first_error = None;
            for _ in 0..len {
                let Some((reply, used)) = read_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                at += used;
                if first_error.is_none() {
                    first_error = match reply {
                        Reply::Error(e) => Some(e),
                        Reply::Array(_, e) => e,
                        _ => None,
                    };
                }
            }
            Ok(Some((Reply::Array(len as usize, first_error), at - start)))
        }
        other => Err(ProtocolError(format!(
            "unexpected reply type {:?}",
            other as char
        ))),
    }
}

/// The element count when `buf` starts with an array header (`*n`, `n` >=
/// 0), so that a long array can be read one element at a time: `Ok(None)`
/// when more bytes are needed, `Some((None, 0))` when the reply is not such
/// an array.
pub fn read_array_header(buf: &[u8]) -> Result<Option<(Option<usize>, usize)>, ProtocolError> {
    if buf.first() != Some(&b'*') {
        return Ok(if buf.is_empty() {
            None
        } else {
            Some((None, 0))
        });
    }
    let Some(line_end) = find_crlf(buf, 1) else {
        return Ok(None);
    };
    let n = parse_int(&buf[1..line_end])?;
    Ok(Some(if n < 0 {
        (None, 0)
    } else {
        (Some(n as usize), line_end + 2)
    }))
}

pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

pub(crate) fn parse_int(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("bad length {:?}", String::from_utf8_lossy(line))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cut_between_commands_and_cover_every_byte() {
        let mut buf = RespBuf::default();
        for i in 0..7 {
            buf.command(&[b"INCR", format!("k{i}").as_bytes()]);
        }
        let parts: Vec<(&[u8], usize)> = buf.parts(3).collect();
        assert_eq!(parts.iter().map(|p| p.1).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(parts.concat_bytes(), buf.as_bytes());
        assert!(parts[1].0.starts_with(b"*2\r\n$4\r\nINCR\r\n$2\r\nk3\r\n"));
        assert_eq!(RespBuf::default().parts(3).count(), 0);
    }

    trait ConcatBytes {
        fn concat_bytes(&self) -> Vec<u8>;
    }

    impl ConcatBytes for Vec<(&[u8], usize)> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|(b, _)| b.iter().copied()).collect()
        }
    }

    #[test]
    fn encodes_commands_as_resp_arrays_of_bulk_strings() {
        let mut b = RespBuf::default();
        b.command(&[b"HSET", b"k", b"f", b""]);
        b.command(&[b"EXPIRE", b"k", b"60"]);
        assert_eq!(
            b.as_bytes(),
            b"*4\r\n$4\r\nHSET\r\n$1\r\nk\r\n$1\r\nf\r\n$0\r\n\r\n*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n60\r\n"
        );
        assert_eq!(b.commands(), 2);
        b.clear();
        assert!(b.is_empty() && b.as_bytes().is_empty());
    }

    #[test]
    fn the_same_commands_go_into_a_redis_rs_pipeline() {
        let mut raw = RespBuf::default();
        let mut pipe = redis::pipe();
        for c in [&mut raw as &mut dyn Commands, &mut pipe] {
            c.command(&[b"SET", b"k", b"v\r\n\x00"]);
            c.command(&[b"DEL", b"k"]);
        }
        assert_eq!(raw.as_bytes(), &pipe.get_packed_pipeline()[..]);
    }

    #[test]
    fn reads_every_reply_type() {
        let cases: [(&[u8], Reply); 7] = [
            (b"+OK\r\n", Reply::Status),
            (b"-ERR wrong\r\n", Reply::Error("ERR wrong".into())),
            (b":42\r\n", Reply::Value),
            (b"$3\r\nabc\r\n", Reply::Value),
            (b"$-1\r\n", Reply::Nil),
            (b"*-1\r\n", Reply::Nil),
            (b"*2\r\n:1\r\n$1\r\nx\r\n", Reply::Array(2, None)),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                read_reply(bytes),
                Ok(Some((want, bytes.len()))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn finds_an_error_inside_an_exec_reply() {
        let bytes = b"*3\r\n:1\r\n*1\r\n-WRONGTYPE nope\r\n:2\r\n";
        assert_eq!(
            read_reply(bytes),
            Ok(Some((
                Reply::Array(3, Some("WRONGTYPE nope".into())),
                bytes.len()
            )))
        );
    }

    #[test]
    fn waits_for_the_rest_of_a_split_reply() {
        let whole = b"*2\r\n$5\r\nhello\r\n:7\r\n+OK\r\n";
        let first_len = whole.len() - 5;
        for cut in 0..first_len {
            assert_eq!(read_reply(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            read_reply(whole),
            Ok(Some((Reply::Array(2, None), first_len)))
        );
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        for bad in [
            &b"?what\r\n"[..],
            b":notanumber\r\n",
            b"$3\r\nabcd\r\n",
            b"*x\r\n",
            b"HTTP/1.1 400\r\n",
        ] {
            assert!(read_reply(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn array_headers_are_read_apart_from_their_elements() {
        assert_eq!(read_array_header(b"*3\r\n:1\r\n"), Ok(Some((Some(3), 4))));
        assert_eq!(read_array_header(b"*3"), Ok(None));
        assert_eq!(read_array_header(b""), Ok(None));
        assert_eq!(read_array_header(b"*-1\r\n"), Ok(Some((None, 0))));
        assert_eq!(read_array_header(b"-EXECABORT x\r\n"), Ok(Some((None, 0))));
        assert!(read_array_header(b"*z\r\n").is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = Vec::new();
        for _ in 0..=MAX_DEPTH {
            bytes.extend_from_slice(b"*1\r\n");
        }
        bytes.extend_from_slice(b":1\r\n");
        assert!(read_reply(&bytes).is_err());
    }
}
