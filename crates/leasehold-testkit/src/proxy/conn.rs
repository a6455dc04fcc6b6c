//! One proxied connection: client→server command reader and writer (the
//! writer applies command holds), server→client reply reader, and the reply
//! writer that applies reply verdicts.
//!
//! Invariants: every command is delivered to the server, in the order the
//! client sent it, unless the connection is torn down first (a held command
//! is discarded if the server closed the connection before its hold ended);
//! commands are matched against the rules when the proxy reads them, and
//! before a command's bytes are written upstream the verdict for its reply is
//! queued in the connection's FIFO, so the reply reader always finds it; a
//! held command holds back the commands after it, never the replies;
//! replies are written to the client in the order the server sent them (a
//! delayed reply holds back the ones after it). When the client closes, the
//! commands already read (held ones after their hold) are still delivered
//! before the server connection is closed; when the server closes, the
//! replies already read are still delivered (unless a held command's hold
//! ends first, which closes both sides at once). A command that breaks the one-reply-per-
//! command pairing (`SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE`, `MONITOR`,
//! `CLIENT REPLY`) or bytes the parser does not understand switch the
//! connection to pass-through for replies from that point on; stalls still
//! apply. Both sockets are only read and written through `&TcpStream`, so
//! closing them is a single drop (with `SO_LINGER` 0 for a reset) and never a
//! half-close.

use std::{
    collections::VecDeque,
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use tokio::{
    net::TcpStream,
    sync::mpsc,
    time::{timeout, Instant},
};

use super::{
    resp::{self, Invalid},
    Shared, Sockets,
};
use crate::proxy::Verdict;

/// How long connecting upstream may take before the client is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes reserved per read.
const READ_CHUNK: usize = 16 * 1024;
/// Reply batches queued between the reader and the writer; beyond that the
/// reader stops reading and TCP back-pressure applies.
const REPLY_QUEUE: usize = 1024;
/// Command batches queued between the reader and the writer, likewise.
const COMMAND_QUEUE: usize = 1024;

/// What the reply reader does with the next reply.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// A reply to a command, with its verdict.
    Reply(Verdict),
    /// From this reply on, replies are no longer paired with commands.
    Unmatched,
}

/// How the command pump treats the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Parse commands and assign verdicts.
    Matching,
    /// Parse commands (to count them) but assign no verdicts.
    Unmatched,
    /// Forward bytes without parsing.
    Raw,
}

/// Bytes for the client, with what to do with them.
#[derive(Debug)]
struct Outgoing {
    bytes: Vec<u8>,
    verdict: Verdict,
    arrived: Instant,
}

/// Bytes for the server, written not before `hold_until` if set.
#[derive(Debug)]
struct Forward {
    bytes: Vec<u8>,
    hold_until: Option<Instant>,
}

/// How the reply side of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// The server closed or failed and the replies read are delivered; close
    /// normally.
    Closed,
    /// Writing to the client failed: it is gone. Deliver the commands already
    /// read, then close normally.
    ClientGone,
    /// A `Reset` verdict fired; close both sides with RST.
    Reset,
}

/// Serves one accepted client until either side closes or a reset.
pub(super) async fn serve(shared: &Shared, sockets: &Sockets) {
    let client = &sockets.client;
    let Ok(Ok(upstream)) = timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.upstream)).await
    else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let upstream = sockets.upstream.get_or_init(|| upstream);
    let pending = Mutex::new(VecDeque::new());
    let upstream_closed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel(REPLY_QUEUE);
    let commands = pump_commands(shared, client, upstream, &pending, &upstream_closed);
    let replies = pump_replies(shared, client, upstream, &pending, &upstream_closed, tx, rx);
    tokio::pin!(commands, replies);
    let exit = tokio::select! {
        () = &mut commands => Exit::Closed,
        exit = &mut replies => exit,
    };
    match exit {
        Exit::Closed => {}
        // The client's reads fail too, so this ends once the commands read
        // are delivered (held ones when their hold ends).
        Exit::ClientGone => commands.await,
        Exit::Reset => sockets.reset(),
    }
}

fn lock(pending: &Mutex<VecDeque<Pending>>) -> MutexGuard<'_, VecDeque<Pending>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Client → server: a reader that parses commands and queues their verdicts
/// and a writer that applies command holds, running concurrently so the
/// connection keeps reading (and claiming) while a command is held.
///
/// Returns when the client closed and everything read from it is delivered,
/// when writing upstream fails, or when a hold ends after the server closed
/// the connection (the held bytes and those behind them are discarded).
async fn pump_commands(
    shared: &Shared,
    client: &TcpStream,
    upstream: &TcpStream,
    pending: &Mutex<VecDeque<Pending>>,
    upstream_closed: &AtomicBool,
) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let reader = read_commands(shared, client, pending, tx);
    let writer = write_commands(shared, upstream, upstream_closed, rx);
    tokio::pin!(reader, writer);
    tokio::select! {
        () = &mut writer => {}
        // The reader dropped its sender: the writer delivers what is queued.
        () = &mut reader => writer.await,
    }
}

async fn read_commands(
    shared: &Shared,
    client: &TcpStream,
    pending: &Mutex<VecDeque<Pending>>,
    tx: mpsc::Sender<Forward>,
) {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut mode = Mode::Matching;
    loop {
        match read_some(client, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let arrived = Instant::now();
        let mut batch: Vec<Forward> = Vec::new();
        // `buf[..batched]` is in `batch`; `buf[..ready]` is complete commands.
        let mut batched = 0;
        let mut ready = 0;
        while mode != Mode::Raw {
            match resp::parse_command(&buf[ready..]) {
                Ok(Some(command)) => {
                    let start = ready;
                    ready += command.len;
                    if let Some(hold) = note_command(shared, pending, &command.args, &mut mode) {
                        push_forward(&mut batch, &buf[batched..start], None);
                        push_forward(&mut batch, &buf[start..ready], Some(arrived + hold));
                        batched = ready;
                    }
                }
                Ok(None) => break,
                Err(Invalid) => {
                    if mode == Mode::Matching {
                        lock(pending).push_back(Pending::Unmatched);
                    }
                    mode = Mode::Raw;
                }
            }
        }
        if mode == Mode::Raw {
            ready = buf.len();
        }
        push_forward(&mut batch, &buf[batched..ready], None);
        buf.drain(..ready);
        for item in batch {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// Appends bytes for the server to the batch, merging consecutive bytes
/// that are not held.
fn push_forward(batch: &mut Vec<Forward>, bytes: &[u8], hold_until: Option<Instant>) {
    if bytes.is_empty() {
        return;
    }
    if hold_until.is_none() {
        if let Some(last) = batch.last_mut().filter(|last| last.hold_until.is_none()) {
            last.bytes.extend_from_slice(bytes);
            return;
        }
    }
    batch.push(Forward {
        bytes: bytes.to_vec(),
        hold_until,
    });
}

/// Writes commands upstream in order, each held one not before its hold
/// ends; after a hold, discards everything if the server closed meanwhile.
async fn write_commands(
    shared: &Shared,
    upstream: &TcpStream,
    upstream_closed: &AtomicBool,
    mut rx: mpsc::Receiver<Forward>,
) {
    while let Some(item) = rx.recv().await {
        if let Some(hold_until) = item.hold_until {
            tokio::time::sleep_until(hold_until).await;
            if upstream_closed.load(Ordering::Acquire) {
                return;
            }
        }
        shared.wait_unstalled().await;
        if write_all(upstream, &item.bytes).await.is_err() {
            return;
        }
    }
}

/// Counts a command, queues what to do with its reply, and returns how long
/// to hold the command itself, if at all.
fn note_command(
    shared: &Shared,
    pending: &Mutex<VecDeque<Pending>>,
    args: &[Vec<u8>],
    mode: &mut Mode,
) -> Option<Duration> {
    if args.is_empty() {
        return None; // Redis answers nothing to `*0` or a blank line.
    }
    shared.stats.commands_seen.fetch_add(1, Ordering::Relaxed);
    if *mode != Mode::Matching {
        return None;
    }
    let (entry, hold) = if breaks_reply_pairing(args) {
        *mode = Mode::Unmatched;
        (Pending::Unmatched, None)
    } else {
        match shared.rules.claim(args) {
            Verdict::HoldCommand(hold) => (Pending::Reply(Verdict::Pass), Some(hold)),
            verdict => (Pending::Reply(verdict), None),
        }
    };
    lock(pending).push_back(entry);
    hold
}

/// Commands after which replies no longer pair one-to-one with commands.
fn breaks_reply_pairing(args: &[Vec<u8>]) -> bool {
    let name = &args[0];
    ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR"]
        .iter()
        .any(|command| name.eq_ignore_ascii_case(command.as_bytes()))
        || (name.eq_ignore_ascii_case(b"CLIENT")
            && args
                .get(1)
                .is_some_and(|sub| sub.eq_ignore_ascii_case(b"REPLY")))
}

/// Server → client: a reader that pairs replies with verdicts and a writer
/// that applies them, running concurrently so the connection keeps reading
/// while a reply is held back.
async fn pump_replies(
    shared: &Shared,
    client: &TcpStream,
    upstream: &TcpStream,
    pending: &Mutex<VecDeque<Pending>>,
    upstream_closed: &AtomicBool,
    tx: mpsc::Sender<Outgoing>,
    rx: mpsc::Receiver<Outgoing>,
) -> Exit {
    let reader = read_replies(shared, upstream, pending, upstream_closed, tx);
    let writer = write_replies(shared, client, rx);
    tokio::pin!(reader, writer);
    tokio::select! {
        exit = &mut writer => exit,
        // The reader dropped its sender: the writer drains what is queued.
        () = &mut reader => writer.await,
    }
}

/// Reads replies until the server closes (which it records in
/// `upstream_closed`) or the writer is gone. Once replies can no longer be
/// paired with commands (a subscribed connection), frames still pass one by
/// one, so that pub/sub messages can be discarded; bytes that do not parse
/// pass raw from then on.
async fn read_replies(
    shared: &Shared,
    upstream: &TcpStream,
    pending: &Mutex<VecDeque<Pending>>,
    upstream_closed: &AtomicBool,
    tx: mpsc::Sender<Outgoing>,
) {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut matching = true;
    let mut raw = false;
    loop {
        match read_some(upstream, &mut buf).await {
            Ok(0) | Err(_) => {
                upstream_closed.store(true, Ordering::Release);
                return;
            }
            Ok(_) => {}
        }
        let arrived = Instant::now();
        let mut batch: Vec<Outgoing> = Vec::new();
        let mut consumed = 0;
        while !raw {
            match resp::reply_len(&buf[consumed..]) {
                Ok(Some(len)) => {
                    let frame = &buf[consumed..consumed + len];
                    consumed += len;
                    // A pub/sub message: a push, or any frame once unpaired.
                    let message = (!matching || resp::is_push(frame)) && resp::is_message(frame);
                    if message && shared.take_message_drop() {
                        continue;
                    }
                    let verdict = if matching {
                        next_verdict(pending, frame, &mut matching)
                    } else {
                        Verdict::Pass
                    };
                    push_outgoing(&mut batch, frame, verdict, arrived);
                }
                Ok(None) => break,
                Err(Invalid) => raw = true,
            }
        }
        if raw {
            push_outgoing(&mut batch, &buf[consumed..], Verdict::Pass, arrived);
            consumed = buf.len();
        }
        buf.drain(..consumed);
        for item in batch {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// The verdict for the next complete reply frame.
fn next_verdict(pending: &Mutex<VecDeque<Pending>>, frame: &[u8], matching: &mut bool) -> Verdict {
    let mut queue = lock(pending);
    if resp::is_push(frame) {
        // Out-of-band: answers no command, except a RESP3 (S|P)SUBSCRIBE.
        if matches!(queue.front(), Some(Pending::Unmatched)) {
            queue.pop_front();
            *matching = false;
        }
        return Verdict::Pass;
    }
    match queue.pop_front() {
        Some(Pending::Reply(verdict)) => verdict,
        Some(Pending::Unmatched) => {
            *matching = false;
            Verdict::Pass
        }
        None => Verdict::Pass,
    }
}

/// Appends bytes to the batch, merging consecutive passed bytes.
fn push_outgoing(batch: &mut Vec<Outgoing>, bytes: &[u8], verdict: Verdict, arrived: Instant) {
    if bytes.is_empty() {
        return;
    }
    if verdict == Verdict::Pass {
        if let Some(last) = batch
            .last_mut()
            .filter(|last| last.verdict == Verdict::Pass)
        {
            last.bytes.extend_from_slice(bytes);
            return;
        }
    }
    batch.push(Outgoing {
        bytes: bytes.to_vec(),
        verdict,
        arrived,
    });
}

async fn write_replies(
    shared: &Shared,
    client: &TcpStream,
    mut rx: mpsc::Receiver<Outgoing>,
) -> Exit {
    while let Some(item) = rx.recv().await {
        match item.verdict {
            // Commands' verdicts never reach replies (see `note_command`).
            Verdict::Pass | Verdict::HoldCommand(_) => {}
            Verdict::Delay(delay) => tokio::time::sleep_until(item.arrived + delay).await,
            Verdict::Drop => {
                shared.stats.replies_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Verdict::Reset => return Exit::Reset,
        }
        shared.wait_unstalled().await;
        if write_all(client, &item.bytes).await.is_err() {
            return Exit::ClientGone;
        }
    }
    Exit::Closed
}

/// Appends what one read returns; `Ok(0)` at end of stream.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    // Each iteration waits for a readiness event; spurious wake-ups retry.
    loop {
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => data = &data[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
