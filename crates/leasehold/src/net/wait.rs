//! Waking waiters: one shared pub/sub connection per client, plus local wake-ups.
//!
//! A release hands the free lock (a permit, the write lock) to the oldest live waiter and
//! publishes what it did; waiters see the payload and only the named one acts (no
//! thundering herd). It makes that waiter the holder and publishes `REQ TOKEN TRY[:WAITED]
//! [NEXT]` (the grantee holds at once; NEXT, the waiter after it, retries if the grant is
//! never confirmed); to a waiter of an older client it publishes the request id alone, and
//! that waiter retries at once. An empty payload means "everyone retry".
//!
//! A waiter subscribes to its lock's `…:released` channel before it retries after
//! contention, so a release that happens after its failed attempt is never missed: every
//! message bumps a per-channel version, and a waiter compares the version it saw before the
//! attempt with the current one. The subscription is shared by all waiters of a channel in
//! this client and lingers for [`LINGER`] after the last of them left (at most
//! [`MAX_IDLE`] channels linger): a busy lock's next waiter finds it confirmed, reads the
//! version before its first try and needs no SUBSCRIBE, UNSUBSCRIBE or extra try. If the pub/sub connection breaks, every
//! channel is bumped (waiters retry at once instead of trusting a dead subscription), the
//! connection is re-established with backoff and every live channel re-subscribed; while it
//! is down, waiters fall back to short jittered timers. On Cluster, a node that loses a
//! channel's slot (failover, slot migration) ends its sharded subscriptions with a
//! server-sent `SUNSUBSCRIBE`: the channel's waiters retry at once and the channel is
//! subscribed again on the slot's new owner. Releases made by this client bump
//! the channel locally too, so a waiter in the same process does not wait for the
//! round trip through Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::net::endpoint::Endpoint;

enum Cmd {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String),
}

/// A channel's state as waiters see it: a version bumped by every message, and the
/// payloads of the last [`RECENT`] messages with their versions (the request id the lock
/// or permit was handed to; empty = everyone retry), so that a waiter named by one of
/// several messages in quick succession still sees its name.
#[derive(Default)]
pub(crate) struct Wake {
    version: u64,
    recent: std::collections::VecDeque<(u64, Arc<str>)>,
}

/// How many recent payloads a channel keeps for its waiters.
const RECENT: usize = 32;

impl Wake {
    fn push(&mut self, payload: &str) {
        self.version += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((self.version, Arc::from(payload)));
    }
}

/// What the messages after a version said to one waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// A release made this waiter the holder, with this fencing token, using the details
    /// its try number `try_no` left; `waited_ms`: the server time from that try to the
    /// grant, when the message says.
    Granted {
        token: u64,
        try_no: u32,
        waited_ms: Option<u64>,
    },
    /// One named this waiter (or more messages came than are kept: it may have been).
    Named,
    /// A release made another waiter the holder and named this one as the next: if that
    /// grant is never confirmed, this waiter takes the lock once the claim window is over.
    Next,
    /// One told every waiter to retry.
    Everyone,
    /// A release made another waiter the holder.
    OthersGranted,
    /// Only other waiters were named.
    Others,
}

impl Heard {
    /// What one message says to waiter `who`.
    fn of(payload: &str, who: &str) -> Heard {
        if payload.is_empty() {
            return Heard::Everyone;
        }
        let mut parts = payload.split(' ');
        let req = parts.next().unwrap_or_default();
        let (token, try_no, next) = (parts.next(), parts.next(), parts.next());
        let Some(token) = token else {
            return if req == who {
                Heard::Named
            } else {
                Heard::Others
            };
        };
        if req == who {
            // TRY is "N" or "N:WAITED".
            let try_field = try_no.unwrap_or_default();
            let (n, waited) = match try_field.split_once(':') {
                Some((n, w)) => (n, Some(w)),
                None => (try_field, None),
            };
            return match (token.parse(), n.parse(), waited.map(str::parse).transpose()) {
                (Ok(token), Ok(try_no), Ok(waited_ms)) => Heard::Granted {
                    token,
                    try_no,
                    waited_ms,
                },
                // A grant of a shape this client does not know: confirm it with a try.
                _ => Heard::Named,
            };
        }
        if next == Some(who) {
            Heard::Next
        } else {
            Heard::OthersGranted
        }
    }

    /// Which of two messages matters more to the waiter (the later one of equal rank wins).
    fn rank(self) -> u8 {
        match self {
            Heard::Granted { .. } => 5,
            Heard::Named => 4,
            Heard::Next => 3,
            Heard::Everyone => 2,
            Heard::OthersGranted => 1,
            Heard::Others => 0,
        }
    }
}

struct Chan {
    tx: watch::Sender<Wake>,
    refs: usize,
    confirmed: bool,
    /// When the last waiter left (`None` while waiters are there).
    idle_at: Option<Instant>,
    /// A linger timer is running for this channel (at most one at a time).
    timer: bool,
}

struct State {
    channels: HashMap<String, Chan>,
    cmd_tx: Option<mpsc::UnboundedSender<Cmd>>,
    /// Channels nobody waits on that are still subscribed (lingering).
    idle: usize,
}

/// How long a channel stays subscribed after its last waiter left, so that the next
/// contended acquire of a busy lock finds it confirmed (no SUBSCRIBE, UNSUBSCRIBE and
/// extra try per contended acquire).
pub(crate) const LINGER: Duration = Duration::from_secs(5);

/// The most lingering channels per client; past it, a channel is unsubscribed at once.
pub(crate) const MAX_IDLE: usize = 256;

/// The shared waker of one client.
pub(crate) struct Waker {
    endpoint: Arc<Endpoint>,
    connect_timeout: Duration,
    response_timeout: Duration,
    handle: tokio::runtime::Handle,
    state: Mutex<State>,
}

impl Waker {
    pub(crate) fn new(
        endpoint: Arc<Endpoint>,
        connect_timeout: Duration,
        response_timeout: Duration,
        handle: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Waker {
            endpoint,
            connect_timeout,
            response_timeout,
            handle,
            state: Mutex::new(State {
                channels: HashMap::new(),
                cmd_tx: None,
                idle: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribe to `channel`, waiting for the server's confirmation until `deadline`.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        deadline: Instant,
    ) -> Subscription {
        let (rx, ack) = {
            let mut st = self.lock();
            if let Some(rx) = st.take_ref(channel) {
                (rx, None)
            } else {
                let (tx, rx) = watch::channel(Wake::default());
                st.channels.insert(
                    channel.to_string(),
                    Chan {
                        tx,
                        refs: 1,
                        confirmed: false,
                        idle_at: None,
                        timer: false,
                    },
                );
                let (ack_tx, ack_rx) = oneshot::channel();
                self.command(&mut st, Cmd::Subscribe(channel.to_string(), ack_tx));
                (rx, Some(ack_rx))
            }
        };
        let sub = Subscription {
            waker: Arc::downgrade(self),
            channel: channel.to_string(),
            rx,
        };
        if let Some(ack) = ack {
            let limit = Instant::now() + self.response_timeout.max(self.connect_timeout);
            let _ = tokio::time::timeout_at(deadline.min(limit), ack).await;
        } else {
            // Someone else's subscribe may still be in flight: give it the same chance.
            let limit = Instant::now() + self.response_timeout;
            let mut probe = sub.rx.clone();
            let _ = tokio::time::timeout_at(deadline.min(limit), async {
                while !sub.is_confirmed() {
                    if probe.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
        sub
    }

    /// A subscription to `channel` at once, if one is confirmed already (held by other
    /// waiters, or lingering after the last left): a version read before a try is then
    /// enough to see every release after it, so no extra try is needed.
    pub(crate) fn ready(self: &Arc<Self>, channel: &str) -> Option<Subscription> {
        let mut st = self.lock();
        if !st.channels.get(channel).is_some_and(|c| c.confirmed) {
            return None;
        }
        let rx = st.take_ref(channel)?;
        Some(Subscription {
            waker: Arc::downgrade(self),
            channel: channel.to_string(),
            rx,
        })
    }

    /// The last waiter of `channel` left: keep it subscribed for [`LINGER`] (unless too
    /// many linger already), then unsubscribe if nobody came back.
    fn went_idle(self: &Arc<Self>, st: &mut State, channel: &str) {
        if st.idle >= MAX_IDLE {
            st.channels.remove(channel);
            self.command(st, Cmd::Unsubscribe(channel.to_string()));
            return;
        }
        let Some(chan) = st.channels.get_mut(channel) else {
            return;
        };
        chan.idle_at = Some(Instant::now());
        st.idle += 1;
        if std::mem::replace(&mut chan.timer, true) {
            return; // the running timer sees the new idle time
        }
        let waker = Arc::downgrade(self);
        let channel = channel.to_string();
        self.handle.spawn(async move {
            let mut until = Instant::now() + LINGER;
            loop {
                sleep_until(until).await;
                let Some(w) = waker.upgrade() else { return };
                let mut st = w.lock();
                let Some(chan) = st.channels.get_mut(&channel) else {
                    return;
                };
                match chan.idle_at {
                    // In use again: the next idle time starts a timer of its own.
                    None => {
                        chan.timer = false;
                        return;
                    }
                    // Idle again since this timer started: wait out the newer idle time.
                    Some(at) if at + LINGER > Instant::now() => until = at + LINGER,
                    Some(_) => {
                        st.channels.remove(&channel);
                        st.idle = st.idle.saturating_sub(1);
                        w.command(&mut st, Cmd::Unsubscribe(channel));
                        return;
                    }
                }
            }
        });
    }

    fn command(self: &Arc<Self>, st: &mut State, cmd: Cmd) {
        let tx = st.cmd_tx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.handle.spawn(run(Arc::downgrade(self), rx));
            tx
        });
        if let Err(mpsc::error::SendError(cmd)) = tx.send(cmd) {
            // The task ended (it never should while the waker lives); start a new one.
            let (tx, rx) = mpsc::unbounded_channel();
            self.handle.spawn(run(Arc::downgrade(self), rx));
            let _ = tx.send(cmd);
            st.cmd_tx = Some(tx);
        }
    }

    /// Wake local waiters of `channel` (a release made by this client freed the lock).
    pub(crate) fn notify_local(&self, channel: &str) {
        self.bump(channel, "");
    }

    fn bump(&self, channel: &str, payload: &str) {
        let st = self.lock();
        if let Some(chan) = st.channels.get(channel) {
            chan.tx.send_modify(|w| w.push(payload));
        }
    }

    fn bump_all(&self, confirmed: bool) {
        let mut st = self.lock();
        for chan in st.channels.values_mut() {
            chan.confirmed = confirmed;
            chan.tx.send_modify(|w| w.push(""));
        }
    }

    fn set_confirmed(&self, channel: &str) {
        let mut st = self.lock();
        if let Some(chan) = st.channels.get_mut(channel) {
            chan.confirmed = true;
            // Wake anyone waiting for the confirmation itself (they retry: a release may
            // have happened before the subscription).
            chan.tx.send_modify(|w| w.push(""));
        }
    }

    /// A live channel lost its subscription: mark it unconfirmed and wake its waiters.
    /// Returns false for a channel nobody waits on any more.
    fn unconfirm(&self, channel: &str) -> bool {
        let mut st = self.lock();
        match st.channels.get_mut(channel) {
            Some(chan) => {
                chan.confirmed = false;
                chan.tx.send_modify(|w| w.push(""));
                true
            }
            None => false,
        }
    }

    fn live_channels(&self) -> Vec<String> {
        self.lock().channels.keys().cloned().collect()
    }

    fn is_live(&self, channel: &str) -> bool {
        self.lock().channels.contains_key(channel)
    }
}

impl State {
    /// One more waiter on a known channel (a lingering one is live again).
    fn take_ref(&mut self, channel: &str) -> Option<watch::Receiver<Wake>> {
        let chan = self.channels.get_mut(channel)?;
        if chan.refs == 0 && chan.idle_at.take().is_some() {
            self.idle = self.idle.saturating_sub(1);
        }
        chan.refs += 1;
        Some(chan.tx.subscribe())
    }
}

/// One waiter's interest in a channel; dropping the last lets the channel linger.
pub(crate) struct Subscription {
    waker: Weak<Waker>,
    channel: String,
    rx: watch::Receiver<Wake>,
}

impl Subscription {
    /// The current version; compare with [`changed_since`](Self::changed_since).
    pub(crate) fn version(&self) -> u64 {
        self.rx.borrow().version
    }

    /// The current version, and what the messages after `seen` said to waiter `who`.
    pub(crate) fn heard_since(&self, seen: u64, who: &str) -> (u64, Heard) {
        let w = self.rx.borrow();
        let oldest_kept = w.recent.front().map_or(w.version + 1, |(v, _)| *v);
        if seen + 1 < oldest_kept && w.version > seen {
            // Messages were dropped from the record: this waiter may have been named.
            return (w.version, Heard::Named);
        }
        let mut heard = Heard::Others;
        for payload in w
            .recent
            .iter()
            .filter_map(|(v, p)| (*v > seen).then_some(p))
        {
            let this = Heard::of(payload, who);
            if this.rank() >= heard.rank() {
                heard = this;
            }
        }
        (w.version, heard)
    }

    /// Whether the server confirmed the subscription (so releases will be announced).
    pub(crate) fn is_confirmed(&self) -> bool {
        self.waker.upgrade().is_some_and(|w| {
            w.lock()
                .channels
                .get(&self.channel)
                .is_some_and(|c| c.confirmed)
        })
    }

    /// Resolve once the version differs from `seen`.
    pub(crate) async fn changed_since(&mut self, seen: u64) {
        loop {
            if self.rx.borrow_and_update().version != seen {
                return;
            }
            if self.rx.changed().await.is_err() {
                // The waker is gone; never resolve (the caller's timers decide).
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(waker) = self.waker.upgrade() else {
            return;
        };
        let mut st = waker.lock();
        let last = match st.channels.get_mut(&self.channel) {
            Some(chan) => {
                chan.refs -= 1;
                chan.refs == 0
            }
            None => false,
        };
        if last {
            waker.went_idle(&mut st, &self.channel);
        }
    }
}

/// The pub/sub task: owns the connection, applies (un)subscriptions, bumps versions.
async fn run(waker: Weak<Waker>, rx: mpsc::UnboundedReceiver<Cmd>) {
    let cluster = waker.upgrade().and_then(|w| w.endpoint.cluster().cloned());
    match cluster {
        Some(nodes) => run_sharded(waker, rx, nodes).await,
        None => run_single(waker, rx).await,
    }
}

/// Wait out `backoff` while answering subscriptions with "failed".
async fn drain_for(rx: &mut mpsc::UnboundedReceiver<Cmd>, backoff: Duration) -> bool {
    let until = Instant::now() + backoff;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return false,
                Some(Cmd::Subscribe(_, ack)) => { let _ = ack.send(false); }
                Some(Cmd::Unsubscribe(_)) => {}
            },
            _ = tokio::time::sleep_until(until) => return true,
        }
    }
}

/// Redis Cluster: one RESP3 cluster connection whose sharded subscriptions (`SSUBSCRIBE`)
/// go to the node owning each channel's slot; redis-rs re-subscribes after reconnecting
/// or when slots move, and reports each (re)subscription, which re-confirms the channel.
async fn run_sharded(
    waker: Weak<Waker>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    seeds: crate::net::endpoint::ClusterSeeds,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let Some(w) = waker.upgrade() else { return };
        let (ct, rt) = (w.connect_timeout, w.response_timeout);
        drop(w);
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<redis::PushInfo>();
        let client = seeds
            .builder()
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push_tx)
            .connection_timeout(ct)
            .response_timeout(rt)
            .build();
        let con = match client {
            Ok(c) => timeout(ct, c.get_async_connection())
                .await
                .ok()
                .and_then(Result::ok),
            Err(e) => {
                tracing::debug!(error = %e, "leasehold sharded pub/sub client failed");
                None
            }
        };
        let Some(mut con) = con else {
            if !drain_for(&mut rx, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let live = match waker.upgrade() {
            Some(w) => w.live_channels(),
            None => return,
        };
        let mut ok = true;
        for ch in &live {
            ok &= matches!(timeout(rt, con.ssubscribe(ch)).await, Ok(Ok(())));
        }
        if !ok {
            sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        if let Some(w) = waker.upgrade() {
            for ch in &live {
                w.set_confirmed(ch);
            }
        }
        backoff = Duration::from_millis(20);
        // Channels to subscribe again at these times (after the server ended them).
        let mut again: Vec<(Instant, String)> = Vec::new();
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Subscribe(ch, ack)) => {
                        let ok = matches!(timeout(rt, con.ssubscribe(&ch)).await, Ok(Ok(())));
                        if ok {
                            if let Some(w) = waker.upgrade() { w.set_confirmed(&ch); }
                        }
                        let _ = ack.send(ok);
                        if !ok { break; }
                    }
                    Some(Cmd::Unsubscribe(ch)) => {
                        let still_live = waker.upgrade().is_some_and(|w| w.is_live(&ch));
                        if !still_live && timeout(rt, con.sunsubscribe(&ch)).await.is_err() {
                            break;
                        }
                    }
                },
                push = pushes.recv() => {
                    let Some(push) = push else { break };
                    let Some(w) = waker.upgrade() else { return };
                    let Some(ch) = on_sharded_push(&w, push) else { continue };
                    drop(w);
                    // The server ended a subscription we still need (its slot moved away
                    // from that node): subscribe again now, and a few more times while
                    // the cluster's nodes may still disagree on the slot's owner (a
                    // subscription that lands on a demoted primary, now a replica, would
                    // never hear the release). Each confirmation makes waiters retry.
                    if !resubscribe(&mut con, &ch, rt, &waker).await {
                        break;
                    }
                    let now = Instant::now();
                    for ms in RESUBSCRIBE_AGAIN_MS {
                        again.push((now + Duration::from_millis(ms), ch.clone()));
                    }
                }
                _ = sleep_until_first(&again), if !again.is_empty() => {
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) = again.drain(..).partition(|(at, _)| *at <= now);
                    again = later;
                    for (_, ch) in due {
                        let live = waker.upgrade().is_some_and(|w| w.is_live(&ch));
                        if live && !resubscribe(&mut con, &ch, rt, &waker).await {
                            break;
                        }
                    }
                }
            }
        }
        tracing::debug!("leasehold sharded pub/sub connection lost; reconnecting");
        match waker.upgrade() {
            Some(w) => w.bump_all(false),
            None => return,
        }
        sleep(backoff).await;
    }
}

/// After the server ended a sharded subscription, it is made again at once and after these
/// delays (ms), while the nodes may still disagree on who owns the channel's slot.
const RESUBSCRIBE_AGAIN_MS: [u64; 3] = [250, 750, 2_000];

/// Subscribe `ch` again on the node that owns its slot: first a read routed by the slot,
/// which a node that lost the slot answers with MOVED (so the cluster client refreshes its
/// slot map and moves its tracked subscriptions), then `SSUBSCRIBE`. False if it failed
/// (the connection is then rebuilt).
async fn resubscribe(
    con: &mut redis::cluster_async::ClusterConnection,
    ch: &str,
    rt: Duration,
    waker: &Weak<Waker>,
) -> bool {
    let _ = timeout(rt, redis::cmd("EXISTS").arg(ch).query_async::<i64>(con)).await;
    let ok = matches!(timeout(rt, con.ssubscribe(ch)).await, Ok(Ok(())));
    match waker.upgrade() {
        Some(w) if ok => {
            w.set_confirmed(ch);
            true
        }
        Some(_) => {
            tracing::debug!(channel = %ch, "leasehold sharded re-subscription failed; reconnecting");
            false
        }
        None => false,
    }
}

/// Sleep until the earliest of `again`'s times.
async fn sleep_until_first(again: &[(Instant, String)]) {
    match again.iter().map(|(at, _)| *at).min() {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Apply one push of the sharded connection; returns a channel to subscribe again.
fn on_sharded_push(w: &Waker, push: redis::PushInfo) -> Option<String> {
    let text = |v: Option<&redis::Value>| -> String {
        v.and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .unwrap_or_default()
    };
    match push.kind {
        redis::PushKind::SMessage => {
            w.bump(&text(push.data.first()), &text(push.data.get(1)));
        }
        // A (re)subscription after a reconnect or a slot move: releases may have been
        // missed meanwhile, so its waiters retry.
        redis::PushKind::SSubscribe => w.set_confirmed(&text(push.data.first())),
        // The end of a subscription. Ours (the last waiter left) is already forgotten;
        // one the server ended — the node no longer owns the channel's slot after a
        // failover or a slot migration — leaves waiters without wake-ups: they retry now
        // (a release may have gone to the new owner already) and the channel is
        // subscribed again.
        redis::PushKind::SUnsubscribe => {
            let ch = text(push.data.first());
            if w.unconfirm(&ch) {
                tracing::debug!(channel = %ch, "the server ended a sharded subscription; subscribing again");
                return Some(ch);
            }
        }
        // A node connection broke; until it is re-subscribed, its waiters poll.
        redis::PushKind::Disconnection => w.bump_all(false),
        _ => {}
    }
    None
}

async fn run_single(waker: Weak<Waker>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let Some(w) = waker.upgrade() else { return };
        let (endpoint, ct, rt) = (w.endpoint.clone(), w.connect_timeout, w.response_timeout);
        drop(w);
        let started = Instant::now();
        let connect = async {
            let info = endpoint.resolve(ct).await.map_err(|f| {
                f.into_redis()
                    .unwrap_or_else(|| std::io::Error::other("no master known").into())
            })?;
            let left = ct.saturating_sub(started.elapsed());
            timeout(left, redis::Client::open(info)?.get_async_pubsub())
                .await
                .map_err(|_| redis::RedisError::from(std::io::Error::other("timed out")))?
        };
        let pubsub = match connect.await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!(error = %e, "leasehold pub/sub connection failed");
                None
            }
        };
        let Some(pubsub) = pubsub else {
            // Wait out the backoff, still draining commands (their acks report failure).
            if !drain_for(&mut rx, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let (mut sink, mut stream) = pubsub.split();
        let live = match waker.upgrade() {
            Some(w) => w.live_channels(),
            None => return,
        };
        if !live.is_empty() {
            match timeout(rt, sink.subscribe(&live)).await {
                Ok(Ok(())) => {
                    if let Some(w) = waker.upgrade() {
                        // Releases may have been missed while disconnected: wake everyone.
                        for ch in &live {
                            w.set_confirmed(ch);
                        }
                    }
                }
                _ => {
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        backoff = Duration::from_millis(20);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Subscribe(ch, ack)) => {
                        let ok = matches!(timeout(rt, sink.subscribe(&ch)).await, Ok(Ok(())));
                        if ok {
                            if let Some(w) = waker.upgrade() { w.set_confirmed(&ch); }
                        }
                        let _ = ack.send(ok);
                        if !ok { break; }
                    }
                    Some(Cmd::Unsubscribe(ch)) => {
                        let still_live = waker.upgrade().is_some_and(|w| w.is_live(&ch));
                        if !still_live && timeout(rt, sink.unsubscribe(&ch)).await.is_err() {
                            break;
                        }
                    }
                },
                msg = stream.next() => match msg {
                    Some(msg) => {
                        if let Some(w) = waker.upgrade() {
                            let payload: String = msg.get_payload().unwrap_or_default();
                            w.bump(msg.get_channel_name(), &payload);
                        }
                    }
                    None => break,
                },
            }
        }
        tracing::debug!("leasehold pub/sub connection lost; reconnecting");
        match waker.upgrade() {
            Some(w) => w.bump_all(false),
            None => return,
        }
        sleep(backoff).await;
    }
}

#[cfg(test)]
mod heard_tests {
    use super::*;

    fn heard(w: Wake, seen: u64, who: &str) -> Heard {
        let (_tx, rx) = watch::channel(w);
        let sub = Subscription {
            waker: Weak::new(),
            channel: String::new(),
            rx,
        };
        sub.heard_since(seen, who).1
    }

    #[test]
    fn a_waiter_named_before_another_message_still_hears_its_name() {
        let mut w = Wake::default();
        w.push("a");
        w.push("b");
        assert_eq!(heard(w, 0, "a"), Heard::Named);
    }

    #[test]
    fn names_before_the_version_seen_and_of_others_are_not_this_waiters() {
        let mut w = Wake::default();
        w.push("a");
        w.push("b");
        w.push("c");
        assert_eq!(heard(w, 1, "a"), Heard::Others);
        let mut w = Wake::default();
        w.push("b");
        w.push("");
        assert_eq!(heard(w, 0, "a"), Heard::Everyone);
    }

    #[test]
    fn grants_name_their_holder_and_the_next_waiter() {
        let mut w = Wake::default();
        w.push("a 17 3 b");
        w.push("c");
        assert_eq!(
            heard(w, 0, "a"),
            Heard::Granted {
                token: 17,
                try_no: 3,
                waited_ms: None
            }
        );
        let mut w = Wake::default();
        w.push("a 17 3:1250 b");
        assert_eq!(
            heard(w, 0, "a"),
            Heard::Granted {
                token: 17,
                try_no: 3,
                waited_ms: Some(1250)
            }
        );
        let mut w = Wake::default();
        w.push("a 17 3:1250 b");
        assert_eq!(heard(w, 0, "b"), Heard::Next);
        let mut w = Wake::default();
        w.push("a 17 3:x");
        assert_eq!(heard(w, 0, "a"), Heard::Named);
        let mut w = Wake::default();
        w.push("a 17 3 b");
        assert_eq!(heard(w, 0, "b"), Heard::Next);
        let mut w = Wake::default();
        w.push("a 17 3 b");
        w.push("");
        assert_eq!(heard(w, 0, "z"), Heard::Everyone);
        let mut w = Wake::default();
        w.push("a 17 3");
        assert_eq!(heard(w, 0, "z"), Heard::OthersGranted);
        let mut w = Wake::default();
        w.push("a 17 x");
        assert_eq!(heard(w, 0, "a"), Heard::Named);
    }

    #[test]
    fn more_messages_than_are_kept_count_as_named() {
        let mut w = Wake::default();
        w.push("a");
        for _ in 0..RECENT {
            w.push("b");
        }
        assert_eq!(heard(w, 0, "a"), Heard::Named);
    }
}
