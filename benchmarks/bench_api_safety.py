"""What the management API's safety costs and saves: the answer to a bad body, reads of
jobs with and without ping keys, /metrics with a token.

    python benchmarks/bench_api_safety.py [--src DIR] [--rounds 15]

Starts the real ``cronwatch serve`` (``--src``: run another tree's ``src``, e.g. an
unpacked ``git archive`` of the commit before, to compare) on a fresh database holding
100 jobs recorded by the wrapper (no ping keys yet), then measures over HTTP:

- a PUT whose ``grace`` is a 1 / 5 / 20 MiB string: status, answer bytes, median time;
- GET /api/v1/jobs with a read-only token: the first call, then the median of the rest;
- GET /metrics with a read-only token (median).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", help="the src directory of the tree to run (default: this one)")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    env = dict(os.environ)
    env.pop("CRONWATCH_DB", None)
    if args.src:
        env["PYTHONPATH"] = args.src
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "h.db")
        from cronwatch.core.model import Run, Status
        from cronwatch.store import open_store

        now = time.time()
        with open_store(db) as s:
            s.record_runs([Run(job=f"job-{i:03d}", started_at=now - 60, status=Status.SUCCESS,
                               ended_at=now - 59, duration=1.0) for i in range(100)], now=now)  # fmt: skip
            rw = s.create_token("bench", read_only=False, now=now)
            ro = s.create_token("viewer", read_only=True, now=now)
        proc = subprocess.Popen([sys.executable, "-m", "cronwatch.main", "serve", "--port", "0",
                                 "--db", db], stderr=subprocess.PIPE, env=env)  # fmt: skip
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline().decode()
            url = re.search(r"http://\S+", line)
            assert url, line
            run(url[0], rw, ro, args.rounds)
        finally:
            proc.terminate()
            proc.wait(10)


def timed(call) -> tuple[float, httpx.Response]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    r = call()
    return (time.perf_counter() - t) * 1000, r


def run(url: str, rw: str, ro: str, rounds: int) -> None:
    c = httpx.Client(base_url=url, timeout=60)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if c.get("/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    w = {"Authorization": f"Bearer {rw}", "Content-Type": "application/json"}
    r_ = {"Authorization": f"Bearer {ro}"}
    for mib in (1, 5, 20):
        body = b'{"grace": "' + b"x" * (mib << 20) + b'"}'
        times, last = [], None
        for _ in range(max(3, rounds // 3)):
            ms, last = timed(lambda body=body: c.put("/api/v1/jobs/big", content=body, headers=w))
            times.append(ms)
        assert last is not None
        print(f"bad {mib:2d} MiB body: {last.status_code}, answer {len(last.content):,} bytes, "
              f"median {statistics.median(times):.1f} ms")  # fmt: skip
    first, r = timed(lambda: c.get("/api/v1/jobs", headers=r_))
    keys = sum(1 for j in r.json() if j.get("ping_key"))
    rest = [timed(lambda: c.get("/api/v1/jobs", headers=r_))[0] for _ in range(rounds)]
    print(f"GET /api/v1/jobs (100 jobs, read-only): first {first:.1f} ms, then median "
          f"{statistics.median(rest):.1f} ms; ping keys shown: {keys}")  # fmt: skip
    m = [timed(lambda: c.get("/metrics", headers=r_)) for _ in range(rounds)]
    print(f"GET /metrics (token): {m[-1][1].status_code}, median "
          f"{statistics.median(t for t, _ in m):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
