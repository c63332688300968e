"""PostgreSQL: ``migrate-db`` of a large history, and acknowledged pings/s next to SQLite.

    python benchmarks/bench_postgres.py [--runs 1000000] [--duration 8] [--connections 64]
                                        [--rounds 3] [--url postgresql://...] [--skip-migrate]
                                        [--cold] [--no-sync] [--sustained 60]

Without ``--url`` a throwaway cluster is started from Debian's binaries (tests/pg.py; fsync
on, the server's defaults otherwise) and removed at the end. Before the pings it is warmed
like a server that has been running a while (``warm_wal``; ``--cold`` skips it): a cluster
minutes old has no WAL files to recycle, so every 16 MB of WAL the backend that needs a
new file zero-fills and fsyncs it first, and the pings waiting on that commit wait ~14 ms
more. Before each row the page cache is written back (``os.sync``; ``--no-sync`` does
not), so that the kernel's periodic flush of what one row wrote does not stall another
row's commits. What a row's own writes cost once the kernel flushes them (~30 s after
they were written) is in the sustained rows: after the rounds, the SQLite server and the
one-replica PostgreSQL server are each driven ``--sustained`` seconds without a pause
(0: not), and their p99 is that whole run's.

1. migrate-db: a SQLite history of ``--runs`` runs over 50 jobs (one in ten with captured
   output), built once and cached in $CRONWATCH_BENCH_CACHE, copied by the real
   ``cronwatch migrate-db --to URL`` into an empty database: runs/s over the whole
   command (COPY of every table, sequences, the count check).
2. pings: one ``cronwatch serve`` (the defaults: the ping front, one ping writer process
   on SQLite, two on PostgreSQL) on a SQLite file, one on a PostgreSQL database, two
   replicas side by side on another PostgreSQL database (each driven by its own wrk with
   half the connections, at the same time: their sum is the row's rate), and two
   replicas with one writer each (``--ping-writers 1``) on a fourth, driven in turn,
   round after round, by wrk -t2
   at ``/ping/{key}``: req/s, p50, p99, errors (medians of the rounds, and each round
   below the table); then the runs
   stored are counted against the pings acknowledged (stored >= acknowledged). Also the
   CPU each acknowledged ping cost: cronwatch's processes (the HTTP server and its ping
   writers), and PostgreSQL's backends of that database. ``--notify-ab``: one server on a
   PostgreSQL database with the events' notify trigger (migration 15) and one on a
   database without it, instead, to see what the notifications cost the ping writer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import CACHE, CRONWATCH, ROOT, bench_env, check_tools

sys.path.insert(0, str(ROOT / "tests"))  # the throwaway cluster of the tests
from bench_server import cpu_seconds, wait_up, wrk  # noqa: E402

T0 = 1_760_000_000.0


def history(runs: int) -> Path:
    """A SQLite database of ``runs`` runs (cached)."""
    from cronwatch.core.values import compress
    from cronwatch.store import open_store

    path = CACHE / f"pg-source-{runs}.db"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    for p in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        p.unlink(missing_ok=True)
    rng = random.Random(1)
    out = compress(b"processed 1234 items\n" * 20)
    with open_store(str(tmp)) as s:
        batch: list[tuple[object, ...]] = []
        for i in range(runs):
            t = T0 + i * 30.0
            failed = rng.random() < 0.05
            dur = rng.uniform(0.1, 60.0)
            captured = i % 10 == 0
            batch.append((
                f"r{i:09d}", f"job-{i % 50}", "", "failed" if failed else "success", t,
                t + dur, dur, 1 if failed else 0, None, "host-1", "cron", "/usr/bin/job",
                "", "wrapper", failed, out if captured else None, None, False,
            ))  # fmt: skip
            if len(batch) == 20_000:
                s.import_rows(batch, now=T0 + runs * 30.0)
                batch = []
        if batch:
            s.import_rows(batch, now=T0 + runs * 30.0)
    os.replace(tmp, path)
    return path


def bench_migrate(cluster: object, url_for: object, runs: int) -> dict[str, float]:
    src = history(runs)
    url = url_for()  # type: ignore[operator]
    t0 = time.perf_counter()
    p = subprocess.run([CRONWATCH, "migrate-db", "--db", str(src), "--to", url, "--json"],
                       capture_output=True, text=True, env=bench_env())  # fmt: skip
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"migrate-db failed: {p.stderr}")
    tables = json.loads(p.stdout)["tables"]
    n = tables["runs"]["postgresql"]
    return {"runs": n, "seconds": elapsed, "runs_per_s": n / elapsed,
            "outputs": tables["outputs"]["postgresql"]}  # fmt: skip


def serve(db: str, *extra: str) -> tuple[str, subprocess.Popen[bytes], str]:
    from cronwatch.store import open_store

    with open_store(db) as s:
        key = s.ensure_ping_key("bench", now=time.time())
    proc = subprocess.Popen([CRONWATCH, "serve", "--port", "0", "--db", db, *extra],
                            stderr=subprocess.PIPE, env=bench_env())  # fmt: skip
    line = proc.stderr.readline().decode()  # type: ignore[union-attr]
    if "serving on" not in line:
        raise SystemExit(f"the server did not start: {line}")
    url = line.strip().rsplit(" ", 1)[-1]
    wait_up(url + "/healthz")
    return url, proc, key


def backend_cpu(dbname: str) -> float:
    """CPU seconds used so far by PostgreSQL's backends of ``dbname`` (their process titles
    name it: ``postgres: USER DBNAME ...``)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().decode(errors="replace").split()
            if len(title) < 3 or title[0] != "postgres:" or title[2] != dbname:
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            used += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return used


def drive(
    group: list[tuple[str, subprocess.Popen[bytes], str]],
    dbname: str | None,
    duration: int,
    connections: int,
) -> dict[str, float]:
    """wrk at each server of ``group`` at once (``connections`` shared out): the sum of
    their rates, the worst p50/p99, and the CPU per acknowledged ping."""
    import threading

    def used() -> tuple[float, float]:
        ours = sum(sum(cpu_seconds(proc.pid)) for _u, proc, _k in group)
        return ours, backend_cpu(dbname) if dbname else 0.0

    results: list[dict[str, float]] = []
    before = used()
    threads = [
        threading.Thread(
            target=lambda u=u, k=k: results.append(
                wrk(f"{u}/ping/{k}", duration, connections // len(group))
            )
        )
        for u, _p, k in group
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = used()
    ok = sum(r["ok"] for r in results)
    return {"rps": sum(r["rps"] for r in results), "p50": max(r["p50"] for r in results),
            "p99": max(r["p99"] for r in results), "ok": ok,
            "errors": sum(r["errors"] for r in results),
            "cw_us": (after[0] - before[0]) / max(ok, 1) * 1e6,
            "pg_us": (after[1] - before[1]) / max(ok, 1) * 1e6}  # fmt: skip


def warm_wal(cluster: Any) -> None:
    """``pg_wal`` as a server that has been running holds it: about ``max_wal_size`` of
    recycled segments. At each checkpoint PostgreSQL keeps as many old segments as it
    expects to fill before the next one (its estimate of the distance between checkpoints,
    capped by max_wal_size) and renames them for reuse; a new cluster has none, so each
    16 MB segment a ping writer fills is created and zero-filled on its commit's time (a
    ~14 ms fsync, every second at 20,000 pings/s). One max_wal_size of WAL, checkpointed,
    sets that estimate."""
    import psycopg

    with psycopg.connect(cluster.url(), autocommit=True) as c:
        row = c.execute("SELECT pg_size_bytes(current_setting('max_wal_size'))").fetchone()
    rows = int(row[0]) // 1100 if row else 300_000  # ~1.1 kB of WAL a row of 1,000 bytes
    cluster.sql(
        "CREATE TABLE wal_warmup AS SELECT g, repeat('x', 1000) AS pad "
        f"FROM generate_series(1, {rows}) g"
    )
    cluster.sql("DROP TABLE wal_warmup")
    cluster.sql("CHECKPOINT")


def without_notify_trigger(db: str) -> None:
    """Migrate ``db``, then drop the events' notify trigger (what it costs: --notify-ab)."""
    import psycopg

    from cronwatch.store import open_store

    open_store(db).close()
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("DROP TRIGGER events_notify ON events")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-sync", action="store_true",
                    help="do not write the page cache back before each row")  # fmt: skip
    ap.add_argument("--url", help="an existing PostgreSQL server's database (default: a "
                    "throwaway cluster); databases are created beside it")  # fmt: skip
    ap.add_argument("--skip-migrate", action="store_true")
    ap.add_argument("--skip-pings", action="store_true")
    ap.add_argument("--sustained", type=int, default=60,
                    help="seconds of one uninterrupted run each for SQLite and one "
                         "PostgreSQL replica after the rounds (0: none)")  # fmt: skip
    ap.add_argument("--cold", action="store_true",
                    help="no WAL warm-up of the throwaway cluster before the pings")  # fmt: skip
    ap.add_argument("--notify-ab", action="store_true",
                    help="pings on two PostgreSQL databases instead: with the events' notify "
                         "trigger (migration 15) and with it dropped")  # fmt: skip
    args = ap.parse_args()
    check_tools()
    cluster = None
    if args.url:
        import psycopg

        base = args.url

        def url_for() -> str:
            name = f"cw_bench_{os.getpid()}_{time.time_ns()}"
            with psycopg.connect(base, autocommit=True) as c:
                c.execute(f"CREATE DATABASE {name}")
            return base.rsplit("/", 1)[0] + "/" + name
    else:
        from pg import start_cluster

        cluster = start_cluster(fsync=True)

        def url_for() -> str:
            return cluster.new_database("bench")  # type: ignore[union-attr]

    try:
        if not args.skip_migrate:
            m = bench_migrate(cluster, url_for, args.runs)
            print(f"migrate-db: {m['runs']:,} runs ({m['outputs']:,} with output) in "
                  f"{m['seconds']:.1f}s = {m['runs_per_s']:,.0f} runs/s\n")  # fmt: skip
        if args.skip_pings:
            return
        tmp = tempfile.mkdtemp(prefix="cw-bench-pg-")
        if cluster is not None and not args.cold:
            warm_wal(cluster)

        def pg_db() -> str:
            url = url_for()
            if cluster is not None:  # a local server: its socket, as a deployment would
                url = cluster.url(url.rsplit("/", 1)[1], unix=True)
            return url

        if args.notify_ab:
            targets = {"postgresql, notify trigger": pg_db(), "postgresql, no trigger": pg_db()}
            without_notify_trigger(targets["postgresql, no trigger"])
            groups = {name: [serve(db)] for name, db in targets.items()}
        else:
            two, thin = "postgresql, 2 replicas", "postgresql, 2 replicas, 1 writer each"
            targets = {"sqlite": os.path.join(tmp, "h.db"), "postgresql": pg_db(),
                       two: pg_db(), thin: pg_db()}  # fmt: skip
            groups = {name: [serve(db)] for name, db in targets.items() if name != thin}
            groups[two].append(serve(targets[two]))
            # Two replicas on one small host: four writers (two each, the default) split
            # the pings into batches too small for their statements' fixed cost.
            groups[thin] = [serve(targets[thin], "--ping-writers", "1") for _ in range(2)]
        results: dict[str, list[dict[str, float]]] = {name: [] for name in groups}
        load = os.getloadavg()[0]
        try:
            for group in groups.values():
                for url, _proc, _key in group:
                    wrk(url + "/healthz", 2, args.connections)  # warm up
            for _ in range(args.rounds):
                for name, group in groups.items():
                    if not args.no_sync:
                        # Each row starts with the page cache written back: the kernel
                        # flushes dirty pages ~30 s after they were written, and a flush
                        # of what the previous rows wrote (SQLite's WAL, PostgreSQL's new
                        # pages) stalls this row's commits behind it. A row's own flush
                        # is in its figures only if it runs long enough (--duration 40).
                        os.sync()
                    db = targets[name]
                    dbname = None if name == "sqlite" else db.split("?")[0].rsplit("/", 1)[1]
                    results[name].append(drive(group, dbname, args.duration,
                                               args.connections))  # fmt: skip
            sustained: dict[str, dict[str, float]] = {}
            for name in ("sqlite", "postgresql") if args.sustained > 0 else ():
                if name not in groups:
                    continue
                if not args.no_sync:
                    os.sync()  # what the rounds left; from here on, the row's own
                db = targets[name]
                dbname = None if name == "sqlite" else db.split("?")[0].rsplit("/", 1)[1]
                sustained[name] = drive(groups[name], dbname, args.sustained, args.connections)
        finally:
            for group in groups.values():
                for _url, proc, _key in group:
                    proc.terminate()
                    proc.wait()
        from cronwatch.store import open_store

        warm = "" if cluster is None else (", cold cluster" if args.cold else ", WAL warmed")
        warm += "" if args.no_sync else ", page cache written back before each row"
        print(f"wrk -t2 -c{args.connections} -d{args.duration}s at /ping/{{key}}, "
              f"{args.rounds} rounds (medians), server, PostgreSQL and wrk on the same "
              f"{os.cpu_count()}-core machine{warm}, load average {load:.1f} at start, "
              f"{os.getloadavg()[0]:.1f} at end\n")  # fmt: skip
        print(
            "| store | pings/s | p50 ms | p99 ms | errors | acknowledged | stored "
            "| CPU us/ping: cronwatch | PostgreSQL |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        each: list[str] = []
        for name, rs in results.items():
            with open_store(targets[name]) as s:
                stored = int(s.job_stats("bench")["runs"])
            acked = int(sum(r["ok"] for r in rs))
            if name in sustained:
                acked += int(sustained[name]["ok"])

            def med(key: str, rs: list[dict[str, float]] = rs) -> float:
                return statistics.median(r[key] for r in rs)

            print(f"| {name} | {med('rps'):,.0f} | {med('p50'):.1f} | {med('p99'):.1f} | "
                  f"{int(sum(r['errors'] for r in rs))} | {acked:,} | {stored:,} | "
                  f"{med('cw_us'):.0f} | {med('pg_us'):.0f} |")  # fmt: skip
            each.append(f"- {name}: " + ", ".join(f"{r['rps']:,.0f}/s p99 {r['p99']:.1f}"
                                                  for r in rs))  # fmt: skip
            if name in sustained:
                r = sustained[name]
                print(f"| {name}, {args.sustained} s without a pause | {r['rps']:,.0f} | "
                      f"{r['p50']:.1f} | {r['p99']:.1f} | {int(r['errors'])} | "
                      f"(in the row above) | | {r['cw_us']:.0f} | {r['pg_us']:.0f} |")  # fmt: skip
            if stored < acked:
                print(f"  LOST: {acked - stored} acknowledged pings are not stored")
        print("\nround by round (pings/s, p99 ms):")
        print("\n".join(each))
    finally:
        if cluster is not None:
            from cronwatch.store.postgres.backend import close_pools

            close_pools()
            cluster.stop()


if __name__ == "__main__":
    main()
