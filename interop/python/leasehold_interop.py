"""A second, minimal leasehold client in Python, written from PROTOCOL.md alone.

It implements acquire (with waiting), release and fencing tokens for plain locks, and
speaks the same keys and scripts as the Rust library, so the two contend on one lock:

- scripts are assembled as PROTOCOL.md's "Script assembly" says: the PUBLISH line, the
  prelude, the script's own file;
- every list reply carries the reply tag that was sent as the last argument;
- a grant is a lease valid until send time + ttl - drift (drift = ttl/100 + 2 ms);
- a waiter subscribes to PREFIX:{NAME}:released, waits for the confirmation, retries at
  once, then sleeps until a message, its fallback timer (the pttl of the refusal) or its
  deadline; a waiter that gives up leaves the queue with leave.lua (which also ends a
  grant made to it meanwhile);
- a release may make the oldest waiter the holder and publish "REQ TOKEN TRY [NEXT]":
  this client confirms such a grant with one more try (which reports it with the full
  ttl), and the waiter named NEXT retries after the claim window.
"""

import json
import os
import random
import secrets
import time

import redis

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "leasehold", "src", "protocol", "scripts")
RESERVATION_MS = 100
CLAIM_MS = 250


def assemble(name, cluster=False, with_prelude=True):
    """The script as sent: publish line, prelude, the script's own file."""
    def read(file):
        with open(os.path.join(SCRIPTS, file), encoding="utf-8") as f:
            return f.read()

    publish = "SPUBLISH" if cluster else "PUBLISH"
    prelude = read("prelude.lua") if with_prelude else ""
    return f"local PUBLISH = '{publish}'\n" + prelude + read(name)


class TagMismatch(Exception):
    """A reply that does not carry this request's tag: not ours."""


class Grant:
    """One hold: the token, and the lease's local deadline (monotonic clock)."""

    def __init__(self, name, owner, req, token, sent_at, ttl_ms):
        self.name = name
        self.owner = owner
        self.req = req
        self.token = token
        drift = ttl_ms / 100.0 + 2.0
        self.valid_until = sent_at + (ttl_ms - drift) / 1000.0

    def valid(self):
        return time.monotonic() < self.valid_until


class Client:
    def __init__(self, url, prefix="leasehold", with_prelude=True):
        self.r = redis.Redis.from_url(url)
        self.prefix = prefix
        self.acquire_script = self.r.register_script(assemble("acquire.lua", with_prelude=with_prelude))
        self.release_script = self.r.register_script(assemble("release.lua", with_prelude=with_prelude))
        self.leave_script = self.r.register_script(assemble("leave.lua", with_prelude=with_prelude))
        host = os.uname().nodename
        self.meta = json.dumps({"host": host, "pid": os.getpid(), "label": "python"})

    def keys(self, name):
        base = f"{self.prefix}:{{{name}}}"
        return base, [
            base, base + ":fence", base + ":waiters", base + ":waiters:exp", base + ":next",
            base + ":waiters:info",
        ]

    @staticmethod
    def tagged(script, keys, args):
        tag = random.getrandbits(47) | 1
        reply = script(keys=keys, args=list(args) + [tag])
        if not reply or int(reply[-1]) != tag:
            raise TagMismatch(reply)
        return [int(x) for x in reply[:-1]]

    def acquire(self, name, ttl_ms, wait_s):
        """Take `name` for ttl_ms, waiting up to wait_s; a Grant, or None if not acquired."""
        base, keys = self.keys(name)
        owner, req = secrets.token_hex(16), secrets.token_hex(16)
        deadline = time.monotonic() + wait_s
        wait_lease = max(1, int(wait_s * 1000))
        queued = False
        pubsub = None
        tries = 0
        try:
            while True:
                sent = time.monotonic()
                tries += 1
                reply = self.tagged(
                    self.acquire_script,
                    keys,
                    [owner, req, ttl_ms, "0", wait_lease, "1" if queued else "0", self.meta, "0", tries],
                )
                if reply[0] == 1:
                    return Grant(name, owner, req, reply[1], sent, ttl_ms)
                queued = queued or wait_lease > 0
                if time.monotonic() >= deadline:
                    self.leave(keys, req)
                    return None
                if pubsub is None:
                    # Subscribe, wait for the confirmation, then retry at once.
                    pubsub = self.r.pubsub()
                    pubsub.subscribe(base + ":released")
                    while True:
                        m = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                        if m is None or m["type"] == "subscribe":
                            break
                    continue
                fallback = reply[1] / 1000.0 if reply[1] > 0 else 0.05
                until = min(deadline, time.monotonic() + fallback)
                while True:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    m = pubsub.get_message(timeout=left)
                    if m is None or m["type"] != "message":
                        continue
                    parts = m["data"].decode().split(" ")
                    if parts[0] == req or parts[0] == "":
                        # Named (reserved for this waiter), or made the holder: the next
                        # try takes the lock, or confirms the grant (a lease from its send).
                        break
                    if len(parts) == 1:
                        # Reserved for another waiter: retry when its reservation would lapse.
                        until = min(until, time.monotonic() + RESERVATION_MS / 1000.0)
                    elif len(parts) == 4 and parts[3] == req:
                        # Granted to the waiter ahead: take the lock if it never confirms.
                        until = min(until, time.monotonic() + CLAIM_MS / 1000.0)
        finally:
            if pubsub is not None:
                pubsub.close()

    def leave(self, keys, req):
        """Give up the place; ends a grant a release made meanwhile (the reply is then 2)."""
        return self.leave_script(
            keys=[keys[0], keys[2], keys[3], keys[4], keys[1], keys[5]],
            args=[req, RESERVATION_MS, CLAIM_MS],
        )

    def release(self, grant):
        """1 released (free), 2 released this hold, 0 expired, -1 held by another."""
        _, keys = self.keys(grant.name)
        reply = self.tagged(
            self.release_script,
            [keys[0], keys[2], keys[3], keys[4], keys[1], keys[5]],
            [grant.owner, grant.req, RESERVATION_MS, CLAIM_MS],
        )
        return reply[0]
