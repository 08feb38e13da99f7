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

    /// Appends commands already encoded as RESP (a spool record of
    /// commands), all of them or, when `resp` does not read as whole
    /// commands, none.
    fn encoded(&mut self, resp: &[u8]) -> Result<(), ProtocolError> {
        for_each_command(resp, |_, _| {})?;
        for_each_command(resp, |args, _| self.command(args))?;
        Ok(())
    }
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

    /// The commands in runs of at most `max` commands and `max_bytes`
    /// bytes (a single longer command is a run of its own): each run's
    /// bytes and how many commands it holds.
    pub fn parts(&self, max: usize, max_bytes: usize) -> impl Iterator<Item = (&[u8], usize)> {
        let max = max.max(1);
        let (mut start, mut i) = (0, 0);
        std::iter::from_fn(move || {
            let first = i;
            while i < self.ends.len()
                && (i == first || (i - first < max && self.ends[i] - start <= max_bytes))
            {
                i += 1;
            }
            (i > first).then(|| {
                let end = self.ends[i - 1];
                let bytes = &self.buf[start..end];
                start = end;
                (bytes, i - first)
            })
        })
    }
}

impl Commands for RespBuf {
    fn command(&mut self, args: &[&[u8]]) {
        // One reservation for the whole command: `$<len>\r\n<arg>\r\n` is
        // at most 25 bytes of framing per argument.
        let size: usize = args.iter().map(|a| a.len() + 25).sum();
        self.buf.reserve(size + 25);
        header(&mut self.buf, b'*', args.len());
        for arg in args {
            header(&mut self.buf, b'$', arg.len());
            self.buf.extend_from_slice(arg);
            self.buf.extend_from_slice(b"\r\n");
        }
        self.ends.push(self.buf.len());
    }

    /// Takes the bytes as they are: one copy, no encoding.
    fn encoded(&mut self, resp: &[u8]) -> Result<(), ProtocolError> {
        let (base, known) = (self.buf.len(), self.ends.len());
        if let Err(e) = for_each_command(resp, |_, end| self.ends.push(base + end)) {
            self.ends.truncate(known);
            return Err(e);
        }
        self.buf.extend_from_slice(resp);
        Ok(())
    }
}

/// Appends `*<n>\r\n` or `$<n>\r\n`. A logged search takes ~40 of them:
/// lengths under 1000 are written as one fixed-size copy (plain stores)
/// rather than formatted and copied piecewise.
#[inline(always)]
fn header(buf: &mut Vec<u8>, kind: u8, n: usize) {
    let digit = |d: usize| b'0' + (d % 10) as u8;
    match n {
        0..=9 => buf.extend_from_slice(&[kind, digit(n), b'\r', b'\n']),
        10..=99 => buf.extend_from_slice(&[kind, digit(n / 10), digit(n), b'\r', b'\n']),
        100..=999 => {
            buf.extend_from_slice(&[kind, digit(n / 100), digit(n / 10), digit(n), b'\r', b'\n'])
        }
        _ => {
            buf.push(kind);
            buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
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

/// Calls `each` with the arguments of every command in `buf`, and where in
/// `buf` the command ends; `buf` holds commands as [`RespBuf`] encodes them
/// (arrays of bulk strings, as a spool record of commands keeps them).
/// Returns how many there were.
/// Anything else, or a command cut short, is an error: nothing is called
/// for a command that is not whole.
pub fn for_each_command<'a>(
    buf: &'a [u8],
    mut each: impl FnMut(&[&'a [u8]], usize),
) -> Result<usize, ProtocolError> {
    let mut args: Vec<&'a [u8]> = Vec::new();
    let mut at = 0;
    let mut commands = 0;
    while at < buf.len() {
        args.clear();
        let count = command_header(buf, &mut at, b'*')?;
        for _ in 0..count {
            let len = command_header(buf, &mut at, b'$')?;
            let end = at
                .checked_add(len)
                .filter(|&end| {
                    end.checked_add(2).and_then(|after| buf.get(end..after)) == Some(&b"\r\n"[..])
                })
                .ok_or_else(|| ProtocolError(format!("argument at byte {at} cut short")))?;
            args.push(&buf[at..end]);
            at = end + 2;
        }
        each(&args, at);
        commands += 1;
    }
    Ok(commands)
}

/// Reads `*<n>\r\n` or `$<n>\r\n` at `at` (moving past it): `n`.
fn command_header(buf: &[u8], at: &mut usize, kind: u8) -> Result<usize, ProtocolError> {
    if buf.get(*at) != Some(&kind) {
        return Err(ProtocolError(format!(
            "expected {:?} at byte {}",
            kind as char, *at
        )));
    }
    let line_end = find_crlf(buf, *at + 1)
        .ok_or_else(|| ProtocolError(format!("header at byte {} cut short", *at)))?;
    let n = usize::try_from(parse_int(&buf[*at + 1..line_end])?)
        .map_err(|_| ProtocolError(format!("negative length at byte {}", *at)))?;
    *at = line_end + 2;
    Ok(n)
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
        let parts: Vec<(&[u8], usize)> = buf.parts(3, usize::MAX).collect();
        assert_eq!(parts.iter().map(|p| p.1).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(parts.concat_bytes(), buf.as_bytes());
        assert!(parts[1].0.starts_with(b"*2\r\n$4\r\nINCR\r\n$2\r\nk3\r\n"));
        assert_eq!(RespBuf::default().parts(3, usize::MAX).count(), 0);

        // Cut by bytes too: each INCR here is 22 bytes; one longer than the
        // limit is a run of its own.
        let by_bytes: Vec<usize> = buf.parts(100, 50).map(|p| p.1).collect();
        assert_eq!(by_bytes, [2, 2, 2, 1]);
        let mut long = RespBuf::default();
        long.command(&[b"SET", b"k", &[b'x'; 100]]);
        long.command(&[b"INCR", b"k"]);
        let runs: Vec<usize> = long.parts(100, 50).map(|p| p.1).collect();
        assert_eq!(runs, [1, 1]);
        assert_eq!(
            buf.parts(3, 50).map(|p| p.0.len()).sum::<usize>(),
            buf.as_bytes().len()
        );
    }

    #[test]
    fn lengths_of_every_width_are_framed_as_redis_rs_frames_them() {
        for len in [0, 1, 9, 10, 99, 100, 999, 1000, 12_345] {
            let arg = vec![b'x'; len];
            let mut raw = RespBuf::default();
            raw.command(&[b"SET", b"k", &arg]);
            let mut pipe = redis::pipe();
            pipe.command(&[b"SET", b"k", &arg]);
            assert_eq!(raw.as_bytes(), &pipe.get_packed_pipeline()[..], "{len}");
        }
    }

    #[test]
    fn encoded_commands_read_back_as_their_arguments() {
        let commands: [&[&[u8]]; 3] = [
            &[b"HSET", b"k", b"f", b"with \r\n inside"],
            &[b"EXPIRE", b"k", b"60"],
            &[b"LPUSH", b"l", b""],
        ];
        let mut buf = RespBuf::default();
        for c in commands {
            buf.command(c);
        }
        let mut read: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut ends = Vec::new();
        let n = for_each_command(buf.as_bytes(), |args, end| {
            read.push(args.iter().map(|a| a.to_vec()).collect());
            ends.push(end);
        })
        .expect("valid");
        assert_eq!(n, 3);
        let expected: Vec<Vec<Vec<u8>>> = commands
            .iter()
            .map(|c| c.iter().map(|a| a.to_vec()).collect())
            .collect();
        assert_eq!(read, expected);
        assert_eq!(ends, buf.ends);
        assert_eq!(for_each_command(b"", |_, _| unreachable!()), Ok(0));

        // Taken as they are, or re-encoded into a pipeline: the same.
        let mut copy = RespBuf::default();
        copy.command(&[b"PING"]);
        copy.encoded(buf.as_bytes()).expect("whole commands");
        assert_eq!(copy.as_bytes()[14..], *buf.as_bytes());
        assert_eq!(copy.commands(), 4);
        assert_eq!(
            copy.parts(1, usize::MAX).nth(1).map(|p| p.0),
            buf.parts(1, usize::MAX).next().map(|p| p.0)
        );
        let mut pipe = redis::pipe();
        pipe.encoded(buf.as_bytes()).expect("whole commands");
        assert_eq!(pipe.get_packed_pipeline(), buf.as_bytes());
    }

    #[test]
    fn a_cut_or_foreign_command_stream_is_an_error_and_nothing_partial_is_read() {
        let mut buf = RespBuf::default();
        buf.command(&[b"INCR", b"a"]);
        buf.command(&[b"INCR", b"b"]);
        let bytes = buf.as_bytes();
        for cut in 1..bytes.len() {
            if cut == bytes.len() / 2 {
                continue; // between the two commands: a whole first one
            }
            let mut whole = 0;
            let result = for_each_command(&bytes[..cut], |_, _| whole += 1);
            assert!(result.is_err(), "cut at {cut}");
            assert_eq!(whole, usize::from(cut > bytes.len() / 2), "cut at {cut}");
            let mut raw = RespBuf::default();
            assert!(raw.encoded(&bytes[..cut]).is_err());
            assert!(raw.is_empty() && raw.as_bytes().is_empty(), "none of it");
            let mut pipe = redis::pipe();
            assert!(pipe.encoded(&bytes[..cut]).is_err());
            assert!(pipe.get_packed_pipeline().is_empty(), "none of it");
        }
        for foreign in [
            &b"+OK\r\n"[..],
            b"*1\r\n:5\r\n",
            b"*-1\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
        ] {
            assert!(for_each_command(foreign, |_, _| {}).is_err(), "{foreign:?}");
        }
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
