#!/usr/bin/env python3
"""The Vault fleet section of bench/run (issue 18): rotations written to
OpenBao, and what the broker's and OpenBao's own records say of them.

  fleet.py seed ADDR TOKEN_FILE N           one secret per workload, app/fleet-I
  fleet.py rotate ADDR TOKEN_FILE N PERIOD SECONDS OUT
                                            every PERIOD s, each of the N secrets
                                            gets a new random value, spread over
                                            the period; OUT: "i version t" lines
  fleet.py report ROTATIONS AUDIT BAO_AUDIT TTL NOW
                                            how long each rotation written before
                                            NOW - TTL took to reach its workload
                                            (the broker's first grant or renew
                                            record carrying that version or a
                                            later one), and OpenBao reads per
                                            refresh

Values are random, sent in request bodies, and never printed or kept.
"""
import datetime
import json
import os
import sys
import time
import urllib.request


def put(addr, token, i):
    body = json.dumps({"data": {"password": os.urandom(18).hex()}}).encode()
    req = urllib.request.Request(
        f"{addr}/v1/secret/data/app/fleet-{i}",
        data=body,
        method="POST",
        headers={"X-Vault-Token": token, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["data"]["version"]


def seed(addr, token_file, n):
    token = open(token_file).read().strip()
    for i in range(int(n)):
        put(addr, token, i)


def rotate(addr, token_file, n, period, seconds, out):
    token = open(token_file).read().strip()
    n, period, seconds = int(n), float(period), float(seconds)
    start = time.time()
    with open(out, "w") as f:
        k = 0
        while time.time() - start < seconds:
            i = k % n
            due = start + (k // n) * period + (k % n) * period / n
            time.sleep(max(0.0, due - time.time()))
            t = time.time()
            f.write(f"{i} {put(addr, token, i)} {t:.6f}\n")
            k += 1


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def report(rotations, audit, bao_audit, ttl, now):
    ttl, now = float(ttl), float(now)
    seen = {}  # workload index -> [(ts, version)]
    refreshes = {}
    for line in open(audit):
        r = json.loads(line)
        w = r.get("workload", "")
        if r.get("event") not in ("grant", "renew") or not w.startswith("fleet-"):
            continue
        i = int(w[len("fleet-"):])
        for s in r.get("secrets", []):
            seen.setdefault(i, []).append((ts(r["ts"]), s["version"]))
        refreshes[i] = refreshes.get(i, 0) + 1
    delays, late, missing = [], 0, 0
    for line in open(rotations):
        i, v, t = line.split()
        i, v, t = int(i), int(v), float(t)
        if t > now - ttl:
            continue
        first = [a for a, ver in seen.get(i, []) if ver >= v and a >= t - 0.5]
        if not first:
            missing += 1
            continue
        d = min(first) - t
        delays.append(d)
        late += d > ttl
    reads = 0
    for line in open(bao_audit):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        q = e.get("request", {})
        if e.get("type") == "request" and q.get("operation") == "read" and q.get("path", "").startswith("secret/data/app/fleet-"):
            reads += 1
    delays.sort()
    p = lambda x: delays[min(len(delays) - 1, int(x * len(delays)))] if delays else float("nan")
    print(
        f"rotations={len(delays) + missing} reached={len(delays)} late={late} missing={missing} "
        f"p50_s={p(0.5):.2f} p99_s={p(0.99):.2f} max_s={(delays[-1] if delays else float('nan')):.2f} "
        f"bao_reads={reads} refreshes={sum(refreshes.values())}"
    )


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"seed": seed, "rotate": rotate, "report": report}[cmd](*args)
