"""Acknowledged pings/s and latency of ``cronwatch serve``, against hello world.

    python benchmarks/bench_server.py [--duration 10] [--connections 64]

Starts the real server (uvicorn, uvloop, httptools) on 127.0.0.1 and, in the same run,
a hello-world raw ASGI app on the same stack; drives each with wrk (2 threads, 64
connections) for a bounded time; then counts the runs in the database, so "acked" means
committed. Prints a Markdown table (benchmarks/README.md, section "Server").
"""

from __future__ import annotations

import argparse
import os
import re
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
            access_log=False, lifespan="off")
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
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "total": total, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    from cronwatch.store import open_store

    tmp = tempfile.mkdtemp(prefix="cw-bench-")
    db = os.path.join(tmp, "history.db")
    with open_store(db) as s:
        keys = {n: s.ensure_ping_key(n, now=time.time()) for n in ("hc", "simob")}
    server = subprocess.Popen(
        [sys.executable, "-m", "cronwatch.cli", "serve", "--port", "0", "--db", db],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = server.stderr.readline().decode().strip().rsplit(" ", 1)[-1]  # type: ignore[union-attr]
    hello = subprocess.Popen([sys.executable, "-c", HELLO, "8799"])
    rows = []
    try:
        wait_up(url + "/healthz")
        wait_up("http://127.0.0.1:8799/")
        wrk(url + "/healthz", 2, args.connections)  # warm up
        targets = [
            ("hello world (raw ASGI, same stack)", "http://127.0.0.1:8799/", None),
            ("/ping/{key}", f"{url}/ping/{keys['hc']}", "hc"),
            (
                "/jobs/p/{key}?state=complete",
                f"{url}/jobs/p/{keys['simob']}?state=complete",
                "simob",
            ),
        ]
        hello_rps = 0.0
        for label, target, job in targets:
            r = wrk(target, args.duration, args.connections)
            stored = None
            if job is not None:
                with open_store(db) as s:
                    stored = s.job_stats(job)["runs"]
            else:
                hello_rps = r["rps"]
            rows.append((label, r, stored))
    finally:
        for p in (server, hello):
            p.terminate()
            p.wait()
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, server and wrk on the same "
          f"{os.cpu_count()}-core machine, 127.0.0.1\n")  # fmt: skip
    print("| target | req/s | p50 ms | p99 ms | errors | runs stored | × hello |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r, stored in rows:
        ratio = r["rps"] / hello_rps if hello_rps else float("nan")
        kept = "-" if stored is None else f"{stored:,} of {r['total']:,}"
        print(f"| {label} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | "
              f"{kept} | {ratio:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
