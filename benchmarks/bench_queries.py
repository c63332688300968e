"""Queries and import on a database of about 1,000,000 runs.

Scenarios (each its own database of ~1M runs, built by the measured import):
  spread   100 jobs x 10,000 runs                     (query job-042)
  minutely 1 job x 525,600 runs, a run every minute for a year, plus 99 jobs x 4,792 runs
Targets:
  import of the generated JSONL into a fresh database   >= 50,000 runs/s (end to end)
  ``cronwatch stats JOB`` and ``cronwatch history JOB``  < 100 ms beyond start-up, i.e.
  median(command) - median(``cronwatch --version``), interleaved rounds.
The store calls are also timed in-process. Generated JSONL and the databases are cached
under $CRONWATCH_BENCH_CACHE (/tmp/cronwatch-bench); --reuse-db skips the imports.

    python benchmarks/bench_queries.py [--quick] [--rounds N] [--reuse-db]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import _common as c

SPAN = 350 * c.DAY  # runs end now and start within the 365-day retention window


def scenarios(quick: bool) -> dict[str, tuple[str, dict[str, int]]]:
    k = 10 if quick else 1
    spread = {f"job-{i:03d}": 10_000 // k for i in range(100)}
    minutely = {"every-minute": 525_600 // k} | {f"job-{i:03d}": 4_792 // k for i in range(99)}
    return {"spread": ("job-042", spread), "minutely": ("every-minute", minutely)}


def jsonl(name: str, jobs: dict[str, int]) -> tuple[Path, int]:
    """The cached JSONL (regenerated after a day, so that retention keeps every run)."""
    total = sum(jobs.values())
    path = c.CACHE / f"queries-{name}-{total}.jsonl"
    if path.exists() and time.time() - path.stat().st_mtime < c.DAY:
        return path, total
    t0 = time.perf_counter()
    now = time.time()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for job, n in jobs.items():
            every = 60.0 if job == "every-minute" else SPAN / n
            for run in c.make_runs(job, n, now=now, every=every):
                f.write(json.dumps(run.to_dict(exact=True)) + "\n")
    tmp.replace(path)
    print(f"  generated {path} ({total} runs, {path.stat().st_size / 1e6:.0f} MB) "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    return path, total


def import_runs(src: Path, total: int, db: Path, rounds: int, env: dict[str, str]) -> None:
    rates = []
    for _ in range(rounds):
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            p.unlink(missing_ok=True)
        t0 = time.perf_counter()
        rss = c.max_rss([c.CRONWATCH, "import", str(src), "--db", str(db)], env, label="import")
        rates.append(total / (time.perf_counter() - t0))
    cpu = c.median(c.CPU.pop("import"))
    print(f"  import {total} runs: {c.summary(rates, 1.0, 'runs/s')}, max RSS {rss or 0:.0f} MiB")
    print(f"  (by CPU time: {total / cpu:,.0f} runs per CPU second)")
    label = src.stem.split("-")[1]
    c.verdict(f"{label}: import runs/s", c.median(rates), 50_000, higher_is_better=True, unit="")


def in_process(db: Path, job: str, rounds: int) -> None:
    """The store calls alone: first call on a fresh connection, then the warm median."""
    from cronwatch.store import open_store

    calls = {
        "job_stats": lambda s: s.job_stats(job),
        "job_stats --since 7d": lambda s: s.job_stats(job, since=time.time() - 7 * c.DAY),
        "list_runs(limit=20, output)": lambda s: s.list_runs(job=job, limit=20, output=True),
    }
    for name, fn in calls.items():
        store = open_store(str(db), create=False)
        t0 = time.perf_counter()
        fn(store)
        first = time.perf_counter() - t0
        warm = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn(store)
            warm.append(time.perf_counter() - t0)
        store.close()
        print(f"  in-process {name:28s} first {first * 1000:6.1f} ms, warm {c.summary(warm)}")


def queries(scenario: str, db: Path, job: str, rounds: int, env: dict[str, str]) -> None:
    on = ["--db", str(db)]
    cases = {
        "cronwatch --version (start-up)": [c.CRONWATCH, "--version"],
        f"cronwatch stats {job}": [c.CRONWATCH, "stats", job, *on],
        f"cronwatch history {job}": [c.CRONWATCH, "history", job, *on],
        f"cronwatch stats {job} --since 7d": [c.CRONWATCH, "stats", job, "--since", "7d", *on],
    }
    for argv in cases.values():
        c.timed(argv, env)  # warm-up (byte-code, page cache)
    c.CPU.clear()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        names = list(cases)
        random.shuffle(names)
        for name in names:
            times[name].append(c.timed(cases[name], env, label=name))
    start = c.median(times["cronwatch --version (start-up)"])
    cpu0 = c.median(c.CPU["cronwatch --version (start-up)"])
    for name, v in times.items():
        extra = ""
        if "version" not in name:
            cpu = (c.median(c.CPU[name]) - cpu0) * 1000
            extra = f"  work {(c.median(v) - start) * 1000:6.1f} ms (CPU {cpu:.1f} ms)"
        print(f"  {name:34s} {c.summary(v)}{extra}")
    for name in list(cases)[1:3]:
        work = (c.median(times[name]) - start) * 1000
        c.verdict(f"{scenario}: {name.split()[1]} beyond start-up", work, 100.0, unit=" ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 runs a scenario, fewer rounds")
    ap.add_argument("--rounds", type=int, help="query rounds (default 30; 8 with --quick)")
    ap.add_argument("--import-rounds", type=int, help="imports a scenario (default 3; 1 quick)")
    ap.add_argument("--reuse-db", action="store_true", help="query cached databases, no import")
    args = ap.parse_args()
    rounds = args.rounds or (8 if args.quick else 30)
    c.check_tools()
    print(f"bench_queries: {c.conditions()}")
    env = c.bench_env()
    for name, (job, jobs) in scenarios(args.quick).items():
        print(f"\n[{name}] {len(jobs)} jobs, {sum(jobs.values())} runs; query job {job}")
        src, total = jsonl(name, jobs)
        db = c.CACHE / f"queries-{name}-{total}-{c.schema_tag()}.db"
        if not (args.reuse_db and db.exists()):
            import_runs(src, total, db, args.import_rounds or (1 if args.quick else 3), env)
        wal = Path(f"{db}-wal")
        size = os.path.getsize(db) + (wal.stat().st_size if wal.exists() else 0)
        print(f"  database {size / 1e6:.0f} MB ({size / total:.0f} bytes a run)")
        queries(name, db, job, rounds, env)
        in_process(db, job, rounds)
    return c.finish()


if __name__ == "__main__":
    raise SystemExit(main())
