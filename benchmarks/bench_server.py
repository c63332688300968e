"""Acknowledged pings/s and latency of ``cronwatch serve``, against hello world.

    python benchmarks/bench_server.py [--duration 10] [--connections 64] [--rounds 3]
                                      [--ping-writer process[,thread]] [--streams 200]
                                      [--front fast|uvicorn]

The server's benchmark, on the default stack (cronwatch's ping front before uvicorn with
``server.limits``) or with ``--front uvicorn`` (every request through uvicorn's httptools
protocol); bench_stacks.py compares the stacks side by side.

Starts the real server (uvicorn, uvloop; one server per ping-writer mode) on 127.0.0.1 and
two hello worlds: a raw ASGI app on uvicorn (httptools), and the stack that serves pings,
uvicorn running cronwatch's HTTP front with an app that answers each ping at once (the
ratio the goal is about: "× hello (front)"); then, round after round,
drives each with wrk (2 threads) for a bounded time, so that hello world and the server
see the same machine load. Prints the median of the rounds: req/s, p50, p99, errors, the
ratio to hello world of the same round, and the CPU time the server's processes spent
per request (all threads and child processes, from /proc). Afterwards counts the runs in
the database: "acked" means committed, so stored >= acknowledged.

With ``--streams N`` (default 200; 0: none), each round also drives ``/ping/{key}`` while N
Server-Sent Event streams are open (``/api/v1/stream``, 10 a token as the default cap
allows), read by a separate client process that counts what it receives and reopens a
dropped stream (``--stream-encoding``: gzip, as browsers ask, or identity); the rate is
compared with the same round's rate without streams.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HELLO = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"OK"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, lifespan="off", loop="auto", http="auto")
"""


# Hello world on the stack that serves the pings: uvicorn running cronwatch's HTTP front
# (server.front.PingFront), with an app that answers every ping at once instead of
# forwarding it to the ping writer. Same parsing, same answer bytes, same writes.
HELLO_FRONT = """
import sys, uvicorn
from collections import Counter
from cronwatch.server.front import PingFront as Front
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from cronwatch.server.limits import Caps, Limits

class Fallback(HttpToolsProtocol):  # what is not a whole plain ping (none of wrk's requests)
    caps = Caps(Limits())  # the front admits its connections under the default caps

class PingFront(Front):
    fallback = Fallback

class Config:
    body_limit = 100_000

class Hello:
    config = Config()
    counters = Counter()
    ok_headers = [(b"ping-body-limit", b"100000"), (b"content-type", b"text/plain; charset=utf-8"),
                  (b"content-length", b"2")]

    def submit_ping(self, path, query, body, done, affinity=0):
        done((0, 200, b"OK", False, "", "", False))

    def ping_answer(self, head, reply):
        return 200, b"" if head else b"OK", self.ok_headers

    plain = (None, b"")

    def ping_bytes(self, default, head, close, reply):  # as cronwatch's Server builds it
        if self.plain[0] is default and not head and not close:
            return self.plain[1]
        status, body, headers = self.ping_answer(head, reply)
        data = b"HTTP/1.1 200 OK\\r\\n" + b"".join(b"%s: %s\\r\\n" % kv for kv in [*default, *headers])
        data += (b"connection: close\\r\\n" if close else b"") + b"\\r\\n" + body
        if not head and not close:
            self.plain = (default, data)
        return data

    async def __call__(self, scope, receive, send):
        pass

uvicorn.run(Hello(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, lifespan="off", loop="auto", http=PingFront)
"""


# N event streams on raw sockets, read by one asyncio process (the client side, like wrk):
# prints "ready" once every stream is subscribed, and on EOF of stdin the bytes received,
# the events of stream 0 (decoded: de-chunked and, with gzip, inflated; the others are
# only counted in bytes, so that the client's work stays small beside the server's on
# this shared machine), the streams dropped and reopened, and how many were open.
STREAMS = r"""
import asyncio, json, sys, zlib
host, port, n, encoding = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tokens = sys.argv[5:]
stats = {"bytes": 0, "events0": 0, "reopened": 0, "open": 0}
stopping = False

class Stream(asyncio.Protocol):
    def __init__(self, i, ready):
        self.i, self.ready, self.up, self.buf = i, ready, False, b""
        self.body = False
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    def connection_made(self, transport):
        transport.write(f"GET /api/v1/stream HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer "
                        f"{tokens[self.i % len(tokens)]}\r\nAccept-Encoding: {encoding}"
                        f"\r\n\r\n".encode())
    def data_received(self, data):
        stats["bytes"] += len(data)
        if not self.up:
            self.up = True
            stats["open"] += 1
            if not self.ready.done():
                self.ready.set_result(None)
        if self.i == 0:
            self.decode(data)
    def decode(self, data):
        self.buf += data
        if not self.body:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            self.body, self.buf = True, rest
        while True:
            line, sep, rest = self.buf.partition(b"\r\n")
            if not sep:
                return
            size = int(line, 16)
            if len(rest) < size + 2:
                return
            chunk, self.buf = rest[:size], rest[size + 2:]
            text = self.inflate.decompress(chunk) if self.inflate else chunk
            stats["events0"] += text.count(b"\nevent: ")
    def connection_lost(self, exc):
        stats["open"] -= 1
        if not stopping:
            stats["reopened"] += 1
            asyncio.ensure_future(open_stream(self.i))

async def open_stream(i):
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    await loop.create_connection(lambda: Stream(i, ready), host, port)
    return ready

async def main():
    global stopping
    loop = asyncio.get_running_loop()
    readies = [await open_stream(i) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*readies), 60)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    stopping = True
    print(json.dumps(stats), flush=True)

asyncio.run(main())
"""


def wait_up(url: str) -> None:
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def wrk(url: str, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    errors = bad + (sum(map(int, sock.groups())) if sock else 0)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "total": total,
            "ok": total - bad, "errors": errors}  # fmt: skip


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU of ``pid`` and of its child processes (the ping writer), threads
    included."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(p: int) -> tuple[int, float]:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick

    own = children = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid, used = stat(int(entry))
            except OSError:
                continue
            if int(entry) == pid:
                own += used
            elif ppid == pid:
                children += used
    return own, children


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ping-writer", default="process")
    ap.add_argument("--front", choices=("fast", "uvicorn"), default="fast",
                    help="the server's HTTP front: fast (the default) or uvicorn")  # fmt: skip
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--stream-encoding", choices=("gzip", "identity"), default="gzip")
    args = ap.parse_args()
    from cronwatch.store import open_store

    modes = args.ping_writer.split(",")
    tmp = tempfile.mkdtemp(prefix="cw-bench-")
    servers: dict[str, tuple[str, subprocess.Popen[bytes], str, dict[str, str]]] = {}
    tokens: dict[str, list[str]] = {}
    hello = subprocess.Popen([sys.executable, "-c", HELLO, "8799"])
    front = subprocess.Popen([sys.executable, "-c", HELLO_FRONT, "8798"])
    try:
        for mode in modes:
            db = os.path.join(tmp, f"{mode}.db")
            with open_store(db) as s:
                keys = {n: s.ensure_ping_key(n, now=time.time()) for n in ("hc", "simob")}
                now = time.time()
                tokens[mode] = [s.create_token(f"sse-{i}", read_only=True, now=now)
                                for i in range(max(1, math.ceil(args.streams / 10)))]  # fmt: skip
            proc = subprocess.Popen(
                [sys.executable, "-m", "cronwatch.main", "serve", "--port", "0", "--db", db,
                 "--ping-writer", mode, "--front", args.front,
                 # wrk's connections and the streams all come from 127.0.0.1: over the
                 # per-address default (256) with 200 streams, an artefact of the bench
                 "--max-connections-per-address", "1024"],
                stderr=subprocess.PIPE,
            )  # fmt: skip
            line = proc.stderr.readline().decode()  # type: ignore[union-attr]
            servers[mode] = (line.strip().rsplit(" ", 1)[-1], proc, db, keys)
        wait_up("http://127.0.0.1:8799/")
        wait_up("http://127.0.0.1:8798/ping/hello")
        targets: list[tuple[str, str, int, str | None, str | None, int]] = [
            ("hello world (raw ASGI on uvicorn)", "http://127.0.0.1:8799/", hello.pid, None, None,
             0),
            ("hello world (the ping front)", "http://127.0.0.1:8798/ping/hello", front.pid, None,
             None, 0),
        ]  # fmt: skip
        for mode, (url, proc, _db, keys) in servers.items():
            wait_up(url + "/healthz")
            wrk(url + "/healthz", 2, args.connections)  # warm up
            mode_label = f"{mode}, front {args.front}"
            targets.append((f"/ping/{{key}} ({mode_label})", f"{url}/ping/{keys['hc']}", proc.pid,
                            mode, "hc", 0))  # fmt: skip
            if args.streams:
                targets.append((f"/ping/{{key}} ({mode_label}), {args.streams} SSE streams open",
                                f"{url}/ping/{keys['hc']}", proc.pid, mode, "hc",
                                args.streams))  # fmt: skip
            targets.append((f"/jobs/p/{{key}}?state=complete ({mode_label})",
                            f"{url}/jobs/p/{keys['simob']}?state=complete", proc.pid, mode,
                            "simob", 0))  # fmt: skip
        results: dict[str, list[dict[str, float]]] = {t[0]: [] for t in targets}
        stream_stats: dict[str, list[dict[str, int]]] = {t[0]: [] for t in targets if t[5]}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            asgi_rps = front_rps = 0.0
            alone: dict[str, float] = {}  # the round's /ping rate of each server, no streams
            for label, url, pid, target_mode, _job, streams in targets:
                readers = None
                if streams:
                    host, port = url.split("/")[2].split(":")
                    readers = subprocess.Popen(
                        [sys.executable, "-c", STREAMS, host, port, str(streams),
                         args.stream_encoding, *tokens[str(target_mode)]],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    )  # fmt: skip
                    assert readers.stdout is not None and readers.stdin is not None
                    if readers.stdout.readline().strip() != "ready":
                        raise SystemExit("the event streams did not open")
                before = cpu_seconds(pid)
                r = wrk(url, args.duration, args.connections)
                after = cpu_seconds(pid)
                if readers is not None:
                    assert readers.stdout is not None and readers.stdin is not None
                    readers.stdin.close()
                    stream_stats[label].append(json.loads(readers.stdout.readline()))
                    readers.wait()
                    r["vs_alone"] = r["rps"] / alone[url]
                else:
                    alone[url] = r["rps"]
                per = 1e6 / max(1, r["total"])
                r["cpu_front"] = (after[0] - before[0]) * per  # the HTTP process
                r["cpu_writer"] = (after[1] - before[1]) * per  # the ping writer child
                r["cpu_us"] = r["cpu_front"] + r["cpu_writer"]
                if pid == hello.pid:
                    asgi_rps = r["rps"]
                elif pid == front.pid:
                    front_rps = r["rps"]
                r["ratio"] = r["rps"] / front_rps if front_rps else float("nan")
                r["ratio_asgi"] = r["rps"] / asgi_rps
                results[label].append(r)
    finally:
        for p in [hello, front, *(s[1] for s in servers.values())]:
            p.terminate()
            p.wait()
    acked: dict[tuple[str, str], int] = {}
    for label, _url, _pid, mode, job, _streams in targets:
        if mode is not None and job is not None:
            ok = int(sum(r["ok"] for r in results[label]))
            acked[(mode, job)] = acked.get((mode, job), 0) + ok
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} rounds (medians), "
          f"server and wrk on the same {os.cpu_count()}-core machine, 127.0.0.1, "
          f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")  # fmt: skip
    print("| target | req/s | p50 ms | p99 ms | errors | × hello (front) | × hello (ASGI) "
          "| server CPU µs/req (HTTP + writer) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, rs in results.items():

        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        # the ASGI hello world runs before the front's in a round: no ratio of its own
        front_ratio = "—" if any(math.isnan(r["ratio"]) for r in rs) else f"{med('ratio'):.2f}"
        print(f"| {label} | {med('rps'):,.0f} | {med('p50'):.2f} | {med('p99'):.2f} | "
              f"{int(sum(r['errors'] for r in rs))} | {front_ratio} | "
              f"{med('ratio_asgi'):.2f} | {med('cpu_us'):.0f} ({med('cpu_front'):.0f} + "
              f"{med('cpu_writer'):.0f}) |")  # fmt: skip
    print()
    for label, ss in stream_stats.items():
        ratios = ", ".join(f"{r['vs_alone']:.2f}" for r in results[label])
        events = ", ".join(f"{x['events0']:,}" for x in ss)
        mb = ", ".join(f"{x['bytes'] / 1e6:,.0f}" for x in ss)
        reopened = ", ".join(str(x["reopened"]) for x in ss)
        median = statistics.median(r["vs_alone"] for r in results[label])
        print(f"{label} ({args.stream_encoding}): {median:.2f}× the rate with no streams "
              f"(rounds: {ratios}); per round, stream 0 got {events} events, all streams "
              f"{mb} MB on the wire; streams dropped and reopened: {reopened}")  # fmt: skip
    print()
    for mode, (_url, _proc, db, _keys) in servers.items():
        with open_store(db) as s:
            for job in ("hc", "simob"):
                stored = s.job_stats(job)["runs"]
                ok = acked[(mode, job)]
                verdict = "ok" if stored >= ok else "LOST ACKNOWLEDGED PINGS"
                print(f"{mode} {job}: {ok:,} acknowledged, {stored:,} stored: {verdict}")


if __name__ == "__main__":
    main()
