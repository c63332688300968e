"""`cronwatch check` over 10,000 scheduled jobs (target: well under a second).

Builds a database of N jobs with a mix of schedules (cron, intervals, times of day,
OnCalendar; several time zones), each with a recent successful run, then measures:

  cold   the first check after every job changed (each job evaluated once, its next
         deadline computed and remembered)
  warm   a check a minute later, when nothing is due (the common case under cron)
  due    a check after 10% of the jobs missed a run (records missed runs, alert state)
  cli    `cronwatch check` end to end, warm, minus `cronwatch --version` (start-up)

Usage: python benchmarks/bench_check.py [--jobs 10000] [--quick]
"""

# ruff: noqa: B023  (each lambda is called at once, inside its loop iteration)
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from cronwatch.app.evaluate import check_all
from cronwatch.core.model import Job, Run, Status
from cronwatch.store import open_store

SCHEDULES = [
    ("*/5 * * * *", "UTC"),
    ("30 2 * * *", "Europe/Berlin"),
    ("every 15m", "UTC"),
    ("at 08:00, 20:00", "America/New_York"),
    ("Mon..Fri *-*-* 09:00:00", "Asia/Tokyo"),
    ("@hourly", "UTC"),
]


def build(path: str, n: int, now: float) -> None:
    store = open_store(path)
    with store.transaction():
        for i in range(n):
            sched, tz = SCHEDULES[i % len(SCHEDULES)]
            store.save_job(Job(name=f"job-{i:05d}", created_at=now - 86400, schedule=sched,
                               tz=tz, grace=300), now=now)  # fmt: skip
            store.record_run(Run(job=f"job-{i:05d}", started_at=now - 30, status=Status.SUCCESS,
                                 ended_at=now - 29, duration=1.0), now=now)  # fmt: skip
    store.close()


def timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="1,000 jobs, fewer rounds")
    args = ap.parse_args()
    n = 1000 if args.quick else args.jobs
    rounds = 3 if args.quick else 5
    now = time.time()
    results: dict[str, list[float]] = {"cold": [], "warm": [], "due": [], "cli": []}
    events = 0
    cw = os.path.join(os.path.dirname(sys.executable), "cronwatch")
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base.db")
        t = time.perf_counter()
        build(base, n, now)
        print(f"built {n} jobs in {time.perf_counter() - t:.1f}s")
        for _ in range(rounds):  # the lambdas below run at once, inside their iteration
            path = os.path.join(tmp, "h.db")
            subprocess.run(["cp", base, path], check=True)
            store = open_store(path)
            results["cold"].append(timed(lambda: check_all(store, now=now)))
            results["warm"].append(timed(lambda: check_all(store, now=now + 60)))
            # 10% of jobs: mark their deadline due by moving their last run back a day
            with store.transaction():
                store.db.execute(  # type: ignore[attr-defined]
                    "UPDATE runs SET started_at=started_at-86400 WHERE job_id % 10 = 0"
                )
                store.db.execute("UPDATE jobs SET next_check=NULL WHERE id % 10 = 0")  # type: ignore[attr-defined]
            out: list[dict[str, object]] = []
            results["due"].append(timed(lambda: out.extend(check_all(store, now=now + 120))))
            events = len(out)
            store.close()
            env = dict(os.environ, CRONWATCH_DB=path)
            start = [timed(lambda: subprocess.run([cw, "--version"], env=env, capture_output=True))
                     for _ in range(3)]  # fmt: skip
            run = [timed(lambda: subprocess.run([cw, "check"], env=env, capture_output=True))
                   for _ in range(3)]  # fmt: skip
            results["cli"].append(statistics.median(run) - statistics.median(start))
    print(f"\ncheck over {n} scheduled jobs, median of {rounds} rounds (target: well under 1 s)")
    for key, label in (("cold", "cold (every job evaluated)"), ("warm", "warm (nothing due)"),
                       ("due", f"10% due ({events} events)"), ("cli", "cli warm, beyond start-up")):  # fmt: skip
        med = statistics.median(results[key])
        print(f"  {label:<34} {med * 1000:8.1f} ms   {'PASS' if med < 1.0 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
