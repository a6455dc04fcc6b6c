"""Contend for one lock from Python (threads), running critical sections that a broken
mutual exclusion would corrupt, and print a JSON summary.

Each section, while the lease is valid: INCR interop:inside (must answer 1, else an
overlap), GET/SET interop:counter (a read-modify-write that loses updates under
overlap), RPUSH interop:log "<token> <who>", DECR interop:inside; then release.

With --overrun-every N, every Nth hold is a short lease (--overrun-ttl-ms) that the worker
outlives after its section, before releasing: the release must then answer "expired" (0)
or "held by another" (-1) and leave the lock alone, whoever holds it by then. A release
without the token check would delete the next holder's lock, which the other side sees.
"""

import argparse
import json
import sys
import threading
import time

import redis

from leasehold_interop import Client


def worker(args, who, out):
    client = Client(args.url, with_prelude=not args.skip_prelude)
    r = redis.Redis.from_url(args.url)
    stats = {"sections": 0, "overlaps": 0, "errors": [], "expired_before_work": 0}
    stats["late_releases"] = 0
    end = time.monotonic() + args.secs
    holds = 0
    while time.monotonic() < end:
        try:
            holds += 1
            overrun = args.overrun_every > 0 and holds % args.overrun_every == 0
            ttl_ms = args.overrun_ttl_ms if overrun else args.ttl_ms
            grant = client.acquire(args.name, ttl_ms, wait_s=2.0)
            if grant is None:
                continue
            if not grant.valid():
                stats["expired_before_work"] += 1
            else:
                if r.incr("interop:inside") != 1:
                    stats["overlaps"] += 1
                value = int(r.get("interop:counter") or 0)
                time.sleep(args.work_ms / 1000.0)
                r.set("interop:counter", value + 1)
                r.rpush("interop:log", f"{grant.token} {who}")
                r.decr("interop:inside")
                stats["sections"] += 1
            if overrun:
                # Outlive the lease (the server expires it) before releasing.
                time.sleep(args.overrun_ttl_ms / 1000.0 + 0.1)
                outcome = client.release(grant)
                if outcome in (0, -1):
                    stats["late_releases"] += 1
                else:
                    stats["errors"].append(f"release of a lapsed lease answered {outcome}")
                continue
            outcome = client.release(grant)
            if outcome != 1:
                stats["errors"].append(f"release answered {outcome}")
        except Exception as e:  # report, never hide
            stats["errors"].append(repr(e))
            time.sleep(0.05)
    out.append(stats)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--secs", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ttl-ms", type=int, default=2000)
    p.add_argument("--work-ms", type=float, default=2.0)
    p.add_argument("--overrun-every", type=int, default=0,
                   help="every Nth hold outlives its lease before releasing (0: never)")
    p.add_argument("--overrun-ttl-ms", type=int, default=300)
    p.add_argument("--skip-prelude", action="store_true",
                   help="send the scripts without the prelude (a broken client, for the test of the test)")
    args = p.parse_args()
    out = []
    threads = [threading.Thread(target=worker, args=(args, f"py-{i}", out)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = {
        "sections": sum(s["sections"] for s in out),
        "overlaps": sum(s["overlaps"] for s in out),
        "expired_before_work": sum(s["expired_before_work"] for s in out),
        "late_releases": sum(s["late_releases"] for s in out),
        "errors": [e for s in out for e in s["errors"]][:20],
        "error_count": sum(len(s["errors"]) for s in out),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
