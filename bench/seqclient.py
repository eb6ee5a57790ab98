#!/usr/bin/env python3
"""One plain client fetching sequentially over the broker's unix socket.

The issue's second row: a single keep-alive connection, each fetch sent
only after the previous answer was read, so the broker finds one request
per wake-up and nothing batches (what a shim or a sidecar looks like to
it, minus the connection). Python's http.client, no pipelining: the
client is slow on purpose, the broker idles between requests.

    seqclient.py SOCKET WORKLOAD SECONDS BROKER_PID

Prints one line of key=value fields, like bench/loadgen:
fetches, rps, p50_us, p99_us, broker_cpu_us_per_req, errors.
"""

import http.client
import os
import socket
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("unbaked")
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        self.sock = s


def cpu_us(pid):
    """utime + stime of a process in microseconds (USER_HZ ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) * 1_000_000 // os.sysconf("SC_CLK_TCK")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    path, workload, seconds, pid = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    body = ('{"workload":"%s","kinds":["file"]}' % workload).encode()
    headers = {"Content-Type": "application/json"}
    conn = UnixConnection(path)

    def fetch():
        conn.request("POST", "/v1/fetch", body, headers)
        r = conn.getresponse()
        r.read()
        return r.status

    # Warm-up: the connection, the broker's first-request paths.
    for _ in range(50):
        if fetch() != 200:
            sys.exit("seqclient: the warm-up fetch was refused")
    lat, errors = [], 0
    cpu0 = cpu_us(pid)
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        a = time.perf_counter_ns()
        status = fetch()
        lat.append((time.perf_counter_ns() - a) // 1000)
        errors += status != 200
        if time.monotonic() >= end:
            break
    wall = time.monotonic() - t0
    cpu = cpu_us(pid) - cpu0
    lat.sort()
    n = len(lat)
    print(
        f"fetches={n} rps={n / wall:.0f} p50_us={lat[n // 2]} "
        f"p99_us={lat[min(n - 1, n * 99 // 100)]} "
        f"broker_cpu_us_per_req={cpu / n:.1f} errors={errors}"
    )


if __name__ == "__main__":
    main()
