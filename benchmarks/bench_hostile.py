"""Other clients' pings while ``cronwatch serve`` is under slowloris and held bodies.

    python benchmarks/bench_hostile.py [--slowloris 1000] [--held 300] [--seconds 20]
                                       [--nofile 1024] [-- extra serve options]

Starts the real server with its defaults (plus the extra options) under a descriptor
limit of ``--nofile`` (the soft limit; systemd's default is 1024, with a hard limit of 524288), then opens:

- ``--slowloris`` connections that send part of a ping's head and then one more header
  line every 5 s (the classic attack: each line resets an idle timer, not a deadline);
- ``--held`` connections that declare a 1 MiB ping body, send all of it but one byte
  and hold.

The attackers come from 127.0.1.x and 127.0.2.x, 100 connections an address (a spread
attack: the per-address cap alone would refuse most of them). Meanwhile a client at
127.0.3.1 sends a ping on a new connection every 50 ms; the script prints that client's
latency (p50, p99, max, failures), the server's RSS (server and ping writer, VmRSS),
how many attacker connections the server closed, and whether every acknowledged ping
was stored.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20


def rss_mb(pid: int) -> float:
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def attacker(port: int, source: str) -> socket.socket | None:
    s = socket.socket()
    s.setblocking(False)
    try:
        s.bind((source, 0))
        s.connect_ex(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s


def ping(port: int, key: str, rid: str) -> float | None:
    """Seconds for one ping on a new connection from 127.0.3.1; None if it failed."""
    t = time.monotonic()
    try:
        with socket.socket() as s:
            s.settimeout(30)
            s.bind(("127.0.3.1", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET /ping/{key}?rid={rid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                return None
    except OSError:
        return None
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slowloris", type=int, default=1000)
    ap.add_argument("--held", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--nofile", type=int, default=1024)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    from cronwatch.store import open_store

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # for the attackers
    tmp = tempfile.mkdtemp(prefix="cw-hostile-")
    db = os.path.join(tmp, "h.db")
    with open_store(db) as st:
        key = st.ensure_ping_key("victim", now=time.time())
    cmd = [sys.executable, "-m", "cronwatch.main", "serve", "--port", "0", "--db", db,
           *args.extra]  # fmt: skip
    server = subprocess.Popen(
        ["sh", "-c", f'ulimit -Sn {args.nofile} && exec "$@"', "sh", *cmd],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    line = server.stderr.readline().decode()  # type: ignore[union-attr]
    port = int(line.strip().rsplit(":", 1)[1])
    time.sleep(1)
    base = rss_mb(server.pid)
    rid = 0
    assert ping(port, key, "warm") is not None

    sel = selectors.DefaultSelector()
    socks: dict[socket.socket, list[object]] = {}  # sock -> [kind, bytes left to send, last]
    head = f"GET /ping/{key} HTTP/1.1\r\nHost: x\r\n".encode()
    post = f"POST /ping/{key}/log HTTP/1.1\r\nHost: x\r\nContent-Length: {MIB}\r\n\r\n".encode()
    for i in range(args.slowloris):
        s = attacker(port, f"127.0.1.{i // 100 + 1}")
        if s is not None:
            socks[s] = ["loris", head, time.monotonic()]
    for i in range(args.held):
        s = attacker(port, f"127.0.2.{i // 100 + 1}")
        if s is not None:
            socks[s] = ["held", post + b"h" * (MIB - 1), time.monotonic()]
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)
    closed = {"loris": 0, "held": 0}
    answers: dict[bytes, int] = {}
    lat: list[float] = []
    failed = 0
    acked: list[str] = []
    peak = base
    start = time.monotonic()
    next_ping = start
    while time.monotonic() - start < args.seconds:
        for k, ev in sel.select(0.01):
            s = k.fileobj  # type: ignore[assignment]
            kind, left, _last = socks[s]  # type: ignore[index]
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if data:
                    code = data[9:12]
                    answers[code] = answers.get(code, 0) + 1
                if not data:
                    closed[kind] += 1  # type: ignore[index]
                    sel.unregister(s)
                    s.close()  # type: ignore[union-attr]
                    del socks[s]  # type: ignore[arg-type]
                    continue
            if ev & selectors.EVENT_WRITE and left:
                try:
                    n = s.send(left[: 1 << 16])  # type: ignore[union-attr, index]
                    socks[s][1] = left[n:]  # type: ignore[index]
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.ENOTCONN):
                        closed[kind] += 1  # type: ignore[index]
                        sel.unregister(s)
                        s.close()  # type: ignore[union-attr]
                        del socks[s]  # type: ignore[arg-type]
                        continue
                if not socks[s][1]:  # type: ignore[index]
                    sel.modify(s, selectors.EVENT_READ)
        now = time.monotonic()
        for s, state in list(socks.items()):  # slowloris: one more header line every 5 s
            if state[0] == "loris" and not state[1] and now - state[2] > 5:  # type: ignore[operator]
                state[1], state[2] = b"X-a: b\r\n", now
                sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        if now >= next_ping:
            next_ping = now + 0.05
            rid += 1
            took = ping(port, key, f"r{rid}")
            if took is None:
                failed += 1
            else:
                lat.append(took)
                acked.append(f"r{rid}")
            peak = max(peak, rss_mb(server.pid))
    end_rss = rss_mb(server.pid)
    for s in socks:
        s.close()
    time.sleep(1)
    after = rss_mb(server.pid)
    server.terminate()
    server.wait()
    with open_store(db) as st:
        stored = {r.id for r in st.list_runs(job="victim", limit=1_000_000)}
    lost = [r for r in acked if r not in stored]
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    print(f"serve {' '.join(args.extra) or '(defaults)'}, ulimit -Sn {args.nofile}; "
          f"{args.slowloris} slowloris + {args.held} held 1 MiB bodies for {args.seconds:.0f} s; "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    p50 = statistics.median(lat) if lat else float("nan")
    worst = lat[-1] if lat else float("nan")
    print(f"other client: {len(lat)} pings, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {worst * 1000:.1f} ms, {failed} failed")  # fmt: skip
    print(f"server RSS: {base:.0f} MB before, peak {peak:.0f} MB, {end_rss:.0f} MB at the end, "
          f"{after:.0f} MB after the attackers left")  # fmt: skip
    print(f"attacker connections closed by the server: {closed}; answers {answers}; "
          f"still open at the end: {len(socks)}")  # fmt: skip
    print(f"acknowledged {len(acked)}, lost {len(lost)}")
    del soft


if __name__ == "__main__":
    main()
