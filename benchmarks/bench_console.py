"""The console's pages on big databases, through a real `cronwatch serve`.

Scenarios (each database built once through the store API, cached under
$CRONWATCH_BENCH_CACHE, /tmp/cronwatch-bench):
  many   1,000 jobs with a schedule, 40 runs each            -> the jobs page (/)
  long   1 job with 1,000,000 runs (one every 30 s, 347 days) -> its job page (/job/long)
Targets:
  jobs page, 1,000 jobs          < 150 ms server time
  job page, 1,000,000 runs       < 100 ms server time
  every page                     < 200 KB before compression
The jobs page is measured twice: on a quiet database (what it computed for every job is
reused until the data or the clock changes it) and with a ping recorded before each
request (everything computed again).
Server time is the time from sending the request to the last byte of the answer, over
loopback with a kept-alive connection (the client's own cost, ~0.3 ms, included), median
of warm requests after a few to warm up.

    python benchmarks/bench_console.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import _common as c


def build(path: Path, jobs: dict[str, tuple[int, float]]) -> None:
    if path.exists():
        return
    t0 = time.perf_counter()
    now = time.time()
    c.build_db(path, jobs, now)
    from cronwatch.app.users import hash_password
    from cronwatch.core.model import Job
    from cronwatch.store import open_store

    with open_store(str(path)) as s:
        for i, name in enumerate(jobs):
            job = s.get_job(name)
            job.schedule = "*/15 * * * *" if i % 2 else "0 3 * * *"
            job.tags = [f"team-{i % 7}"]
            s.save_job(job, now=now)
        s.save_job(Job(name="zz-empty"), now=now)
        s.create_user("bench", role="admin", password_hash=hash_password("bench password"),
                      now=now)  # fmt: skip
    print(f"  built {path.name} in {time.perf_counter() - t0:.0f} s")


def serve(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([c.CRONWATCH, "serve", "--port", "0", "--db", str(db)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env=c.bench_env())  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    return proc, line.strip().rsplit(" ", 1)[-1]


def measure(url: str, path: str, rounds: int, ping: str = "") -> tuple[list[float], int]:
    """``ping``: a ping URL sent (untimed) before each request, so that the database has
    changed every time (a busy server: nothing the page computed before can be reused)."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        deadline = time.time() + 30
        while True:
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        r = client.post("/login", data={"name": "bench", "password": "bench password"})
        assert r.status_code == 303, r.text
        for _ in range(3):  # templates compiled, caches warm
            client.get(path)
        times = []
        size = 0
        for _ in range(rounds):
            if ping:
                assert client.get(ping).status_code == 200
            t0 = time.perf_counter()
            r = client.get(path)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.status_code
            size = len(r.content)
        return times, size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="100k runs instead of 1M")
    args = ap.parse_args()
    c.check_tools()
    print(f"bench_console: {c.conditions()}")
    tag = c.schema_tag()
    many = c.CACHE / f"console-many-{tag}.db"
    build(many, {f"job-{i:04d}": (40, 900.0) for i in range(1000)})
    n = 100_000 if args.quick else 1_000_000
    long = c.CACHE / f"console-long-{n}-{tag}.db"
    build(long, {"long": (n, 30.0)})
    for label, db, path, target in (("jobs page, 1,000 jobs", many, "/", 0.150),
                                    (f"job page, {n} runs", long, "/job/long", 0.100),
                                    ("job page, 40 runs", many, "/job/job-0500", 0.100),
                                    ("jobs page filtered", many, "/?health=failing", 0.150),
                                    ("jobs page, a ping before each", many, "/", 0.150)):  # fmt: skip
        proc, url = serve(db)
        try:
            ping = ""
            if "ping" in label:
                from cronwatch.store import open_store

                with open_store(str(db)) as s:
                    ping = f"/ping/{s.project_ping_key()}/job-0001"
            times, size = measure(url, path, args.rounds, ping)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"  {label}: {c.summary(times)}, {size / 1024:.0f} KB")
        c.verdict(f"{label}: server time", c.median(times) * 1000, target * 1000, unit=" ms")
        c.verdict(f"{label}: size", size / 1024, 200, unit=" KB")
    return c.finish()


if __name__ == "__main__":
    raise SystemExit(main())
