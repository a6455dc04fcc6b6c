//! Incremental RESP framing for the proxy: where does the next complete
//! command or reply end, and what are a command's arguments.
//!
//! Invariants: the functions only look at the start of the buffer they are
//! given and never consume anything; `Ok(None)` means "incomplete, read more";
//! `Err(Invalid)` means the bytes are not RESP we understand (the caller then
//! falls back to pass-through for the rest of the connection). Work is bounded:
//! nesting depth, line length, element counts and bulk lengths are capped, so
//! a hostile or corrupt stream cannot make the parser recurse or allocate
//! without limit. RESP2 and RESP3 reply types are understood; streamed RESP3
//! aggregates (`$?`, `*?`) are not (Redis does not send them).

/// The bytes at the start of the buffer are not a frame we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

/// A complete command at the start of a client's buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Command {
    /// Bytes the command occupies.
    pub(crate) len: usize,
    /// Its arguments; empty for frames Redis answers with nothing (`*0`, a
    /// blank inline line).
    pub(crate) args: Vec<Vec<u8>>,
}

/// Longest header or inline line (Redis allows 64 KiB inline commands).
const MAX_LINE: usize = 1 << 20;
/// Largest bulk string (Redis's own `proto-max-bulk-len` default).
const MAX_BULK: i64 = 512 << 20;
/// Most elements in one aggregate.
const MAX_ELEMENTS: i64 = 1 << 24;
/// Deepest aggregate nesting.
const MAX_DEPTH: usize = 32;

/// The length of the complete reply frame at the start of `buf` (an attribute
/// `|` together with the value it annotates counts as one frame).
pub(crate) fn reply_len(buf: &[u8]) -> Result<Option<usize>, Invalid> {
    frame_end(buf, 0, 0)
}

/// Whether a complete reply frame is a pub/sub message: an array or push whose first
/// element is `message`, `smessage` or `pmessage`.
pub(crate) fn is_message(frame: &[u8]) -> bool {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return false;
    }
    let Some(eol) = frame.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let rest = &frame[eol + 2..];
    [
        &b"$7\r\nmessage\r\n"[..],
        &b"$8\r\nsmessage\r\n"[..],
        &b"$8\r\npmessage\r\n"[..],
    ]
    .iter()
    .any(|kind| rest.starts_with(kind))
}

/// Whether a complete reply frame is an out-of-band RESP3 push (`>`).
pub(crate) fn is_push(frame: &[u8]) -> bool {
    frame.first() == Some(&b'>')
}

/// The complete command at the start of `buf`: an array of bulk strings, or
/// an inline command (a line not starting with `*`).
pub(crate) fn parse_command(buf: &[u8]) -> Result<Option<Command>, Invalid> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf),
        Some(_) => parse_inline(buf),
    }
}

fn parse_multibulk(buf: &[u8]) -> Result<Option<Command>, Invalid> {
    let Some((count, mut pos)) = header(buf, 0)? else {
        return Ok(None);
    };
    if count <= 0 {
        return Ok(Some(Command {
            len: pos,
            args: Vec::new(),
        }));
    }
    if count > MAX_ELEMENTS {
        return Err(Invalid);
    }
    let mut args = Vec::new();
    for _ in 0..count {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(Invalid);
        }
        let Some(end) = bulk_end(buf, pos)? else {
            return Ok(None);
        };
        let Some((len, data_start)) = header(buf, pos)? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| Invalid)?;
        args.push(buf[data_start..data_start + len].to_vec());
        pos = end;
    }
    Ok(Some(Command { len: pos, args }))
}

fn parse_inline(buf: &[u8]) -> Result<Option<Command>, Invalid> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    let Some(newline) = window.iter().position(|byte| *byte == b'\n') else {
        return if buf.len() >= MAX_LINE {
            Err(Invalid)
        } else {
            Ok(None)
        };
    };
    let args = buf[..newline]
        .split(|byte| byte.is_ascii_whitespace())
        .filter(|word| !word.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Some(Command {
        len: newline + 1,
        args,
    }))
}

/// End (exclusive) of the frame starting at `pos`.
fn frame_end(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(line_end(buf, pos + 1)?),
        b'$' | b'=' | b'!' => bulk_end(buf, pos),
        b'*' | b'~' | b'>' => aggregate_end(buf, pos, 1, depth),
        b'%' => aggregate_end(buf, pos, 2, depth),
        b'|' => match aggregate_end(buf, pos, 2, depth)? {
            Some(end) => frame_end(buf, end, depth + 1),
            None => Ok(None),
        },
        _ => Err(Invalid),
    }
}

fn bulk_end(buf: &[u8], pos: usize) -> Result<Option<usize>, Invalid> {
    let Some((len, data_start)) = header(buf, pos)? else {
        return Ok(None);
    };
    if len == -1 {
        return Ok(Some(data_start));
    }
    if !(0..=MAX_BULK).contains(&len) {
        return Err(Invalid);
    }
    let end = data_start + usize::try_from(len).map_err(|_| Invalid)? + 2;
    if buf.len() < end {
        return Ok(None);
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Err(Invalid);
    }
    Ok(Some(end))
}

fn aggregate_end(
    buf: &[u8],
    pos: usize,
    per_entry: i64,
    depth: usize,
) -> Result<Option<usize>, Invalid> {
    let Some((count, mut next)) = header(buf, pos)? else {
        return Ok(None);
    };
    if count == -1 {
        return Ok(Some(next));
    }
    if !(0..=MAX_ELEMENTS).contains(&count) {
        return Err(Invalid);
    }
    for _ in 0..count * per_entry {
        match frame_end(buf, next, depth + 1)? {
            Some(end) => next = end,
            None => return Ok(None),
        }
    }
    Ok(Some(next))
}

/// The integer in the header line starting at `pos` (after its type byte) and
/// the position after the line.
fn header(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, Invalid> {
    let Some(end) = line_end(buf, pos + 1)? else {
        return Ok(None);
    };
    let digits = std::str::from_utf8(&buf[pos + 1..end - 2]).map_err(|_| Invalid)?;
    let value = digits.parse::<i64>().map_err(|_| Invalid)?;
    Ok(Some((value, end)))
}

/// End (exclusive, after `\r\n`) of the line starting at `start`.
fn line_end(buf: &[u8], start: usize) -> Result<Option<usize>, Invalid> {
    let rest = buf.get(start..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(MAX_LINE)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(offset) => Ok(Some(start + offset + 2)),
        None if rest.len() >= MAX_LINE => Err(Invalid),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    #[test]
    fn command_split_at_every_byte_is_incomplete_until_the_end() {
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nx!\r\n";
        for cut in 0..frame.len() {
            assert_eq!(parse_command(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse_command(frame),
            Ok(Some(Command {
                len: frame.len(),
                args: args(&["SET", "k", "v\r\nx!"]),
            }))
        );
    }

    #[test]
    fn pipelined_commands_are_parsed_one_at_a_time() {
        let buf = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n";
        let first = parse_command(buf).unwrap().unwrap();
        assert_eq!(first.args, args(&["PING"]));
        let second = parse_command(&buf[first.len..]).unwrap().unwrap();
        assert_eq!(second.args, args(&["GET", "a"]));
        assert_eq!(first.len + second.len, buf.len());
    }

    #[test]
    fn inline_and_empty_commands_are_recognised() {
        let inline = parse_command(b"PING  hello\r\nrest").unwrap().unwrap();
        assert_eq!(inline.args, args(&["PING", "hello"]));
        assert_eq!(inline.len, 13);
        assert!(parse_command(b"\r\n").unwrap().unwrap().args.is_empty());
        assert!(parse_command(b"*0\r\n").unwrap().unwrap().args.is_empty());
        assert_eq!(parse_command(b"PING"), Ok(None));
    }

    #[test]
    fn malformed_commands_are_invalid() {
        assert_eq!(parse_command(b"*1\r\n:4\r\n"), Err(Invalid));
        assert_eq!(parse_command(b"*x\r\n"), Err(Invalid));
        assert_eq!(parse_command(b"*1\r\n$2\r\nabcd\r\n"), Err(Invalid));
        assert_eq!(parse_command(b"*1\r\n$-5\r\n"), Err(Invalid));
    }

    #[test]
    fn resp2_replies_have_the_right_length() {
        for reply in [
            &b"+OK\r\n"[..],
            b"-ERR wrong\r\n",
            b":42\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$3\r\nfoo\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
        ] {
            assert_eq!(reply_len(reply), Ok(Some(reply.len())), "{reply:?}");
            for cut in 0..reply.len() {
                assert_eq!(reply_len(&reply[..cut]), Ok(None), "{reply:?} cut {cut}");
            }
        }
    }

    #[test]
    fn resp3_replies_have_the_right_length() {
        for reply in [
            &b"_\r\n"[..],
            b",3.14\r\n",
            b"#t\r\n",
            b"(123456789012345678901234567890\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"!3\r\nERR\r\n",
            b"%1\r\n+k\r\n:1\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n",
            b"|1\r\n+ttl\r\n:3\r\n+value\r\n",
        ] {
            assert_eq!(reply_len(reply), Ok(Some(reply.len())), "{reply:?}");
            for cut in 0..reply.len() {
                assert_eq!(reply_len(&reply[..cut]), Ok(None), "{reply:?} cut {cut}");
            }
        }
        assert!(is_push(b">1\r\n+x\r\n"));
        assert!(is_message(
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"
        ));
        assert!(is_message(
            b">3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"
        ));
        assert!(!is_message(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"));
        assert!(!is_message(b"$7\r\nmessage\r\n"));
        assert!(!is_push(b"*1\r\n+x\r\n"));
    }

    #[test]
    fn unknown_or_too_deep_replies_are_invalid() {
        assert_eq!(reply_len(b"?what\r\n"), Err(Invalid));
        assert_eq!(reply_len(b"$?\r\n"), Err(Invalid));
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        assert_eq!(reply_len(&deep), Err(Invalid));
    }
}
