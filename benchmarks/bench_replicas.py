"""One replica against two replicas side by side on one database: acknowledged pings/s.

    python benchmarks/bench_replicas.py [--duration 8] [--connections 64] [--rounds 3]

Three ``cronwatch serve`` processes, each with its ping writer process and scheduler, on
127.0.0.1: one alone on its own SQLite file, and two sharing another file (as several
workers on one host would, behind a load balancer). Round after round, so that both
targets see the same machine load: wrk -t2 -c64 against the single replica; then two wrk
at once, -t1 with half the connections each, one against each of the two replicas (the
load balancer's share, without a balancer's own cost in the figures). Prints the medians:
req/s (summed over the two), p50, p99 (the worse of the two), errors; then checks that
every acknowledged ping is stored. Last, ``--takeovers`` times: two fresh replicas, the
leader killed with SIGKILL, the seconds until the other one leads (its /healthz).
``--postgres-takeovers``: only those times, on a throwaway PostgreSQL cluster.

The two replicas share one SQLite writer lock: their group commits take turns, so the
pair cannot commit more than one writer does; what it buys is a second process to
answer while the other is down or restarting. PostgreSQL (several writers) is where
replicas can add throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import wait_up  # noqa: E402


def wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return parse(out)


def parse(out: str) -> dict[str, float]:
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
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "ok": total - bad, "errors": errors}


def serve(db: str, name: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cronwatch.main", "serve", "--port", "0", "--db", db,
         "--replica-id", name],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    url = proc.stderr.readline().decode().strip().rsplit(" ", 1)[-1]
    wait_up(url + "/healthz")
    return proc, url


def side_by_side(urls: list[str], duration: int, connections: int) -> dict[str, float]:
    """wrk -t1 against each url at once, ``connections`` shared out; the sums / worst."""
    each = connections // len(urls)
    procs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{each}", f"-d{duration}s", "--latency", url],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for url in urls
    ]
    rs = [parse(p.communicate()[0]) for p in procs]
    return {"rps": sum(r["rps"] for r in rs), "p50": max(r["p50"] for r in rs),
            "p99": max(r["p99"] for r in rs), "ok": sum(r["ok"] for r in rs),
            "errors": sum(r["errors"] for r in rs)}  # fmt: skip


def leads(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return bool(json.loads(r.read())["leader"])
    except OSError:
        return False


def takeover(tmp: str, n: int, new_db: Callable[[int], str] | None = None) -> list[float]:
    """Seconds from the leader's SIGKILL to the other replica leading, ``n`` times (on a
    new database each time: a SQLite file, or ``new_db(i)``)."""
    out = []
    for i in range(n):
        db = new_db(i) if new_db is not None else os.path.join(tmp, f"takeover-{i}.db")
        a, a_url = serve(db, "a")
        deadline = time.monotonic() + 30
        while not leads(a_url) and time.monotonic() < deadline:
            time.sleep(0.05)
        b, b_url = serve(db, "b")
        time.sleep(1.0 + i * 0.4)  # different moments of the renewal cycle
        a.kill()
        killed = time.monotonic()
        while not leads(b_url) and time.monotonic() - killed < 60:
            time.sleep(0.05)
        out.append(time.monotonic() - killed)
        for p in (a, b):
            p.kill()
            p.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--takeovers", type=int, default=5)
    ap.add_argument("--postgres-stream", type=int, default=0, metavar="PINGS",
                    help="only this: PINGS pings at one PostgreSQL replica, the seconds until "
                         "each event reaches a stream at the other (its poll made 60 s)")  # fmt: skip
    ap.add_argument("--postgres-notify-ab", action="store_true",
                    help="only this: two replicas side by side on a PostgreSQL database with "
                         "the events' notify trigger, and two on one without it, in turn")  # fmt: skip
    ap.add_argument("--postgres-takeovers", action="store_true",
                    help="only the takeover times, on PostgreSQL (a throwaway cluster, "
                         "tests/pg.py): its leader is an advisory lock, not a lease")  # fmt: skip
    args = ap.parse_args()
    from cronwatch.store import open_store

    tmp = tempfile.mkdtemp(prefix="cw-replicas-")
    if args.postgres_takeovers:
        postgres_takeovers(tmp, args.takeovers)
        return
    if args.postgres_stream:
        postgres_stream(args.postgres_stream)
        return
    if args.postgres_notify_ab:
        postgres_notify_ab(args.duration, args.connections, args.rounds)
        return
    one_db, two_db = os.path.join(tmp, "one.db"), os.path.join(tmp, "two.db")
    keys = {}
    for db in (one_db, two_db):
        with open_store(db) as s:
            keys[db] = s.ensure_ping_key("hc", now=time.time())
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[dict[str, float]]] = {"one replica": [], "two replicas": []}
    try:
        single, single_url = serve(one_db, "solo")
        a, a_url = serve(two_db, "a")
        b, b_url = serve(two_db, "b")
        procs += [single, a, b]
        one = f"{single_url}/ping/{keys[one_db]}"
        two = [f"{a_url}/ping/{keys[two_db]}", f"{b_url}/ping/{keys[two_db]}"]
        wrk(one, 2, args.connections, 2)  # warm up
        side_by_side(two, 2, args.connections)
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            results["one replica"].append(wrk(one, args.duration, args.connections, 2))
            results["two replicas"].append(side_by_side(two, args.duration, args.connections))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    print(f"wrk -c{args.connections} -d{args.duration}s, {args.rounds} rounds (medians), "
          f"servers and wrk on the same {os.cpu_count()}-core machine, 127.0.0.1, load "
          f"average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")  # fmt: skip
    print("| target | req/s | p50 ms | p99 ms | errors | × one replica |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(r["rps"] for r in results["one replica"])
    for label, rs in results.items():

        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        print(f"| {label} | {med('rps'):,.0f} | {med('p50'):.2f} | {med('p99'):.2f} "
              f"| {int(sum(r['errors'] for r in rs))} | {med('rps') / base:.2f} |")  # fmt: skip
    print()
    taken = takeover(tmp, args.takeovers)
    print(f"scheduler takeover after kill -9 of the leader (--leader-ttl 5): "
          f"{', '.join(f'{t:.1f}' for t in taken)} s (median {statistics.median(taken):.1f})\n")  # fmt: skip
    for label, db in (("one replica", one_db), ("two replicas", two_db)):
        acked = int(sum(r["ok"] for r in results[label]))
        with open_store(db) as s:
            stored = s.job_stats("hc")["runs"]
        verdict = "ok" if stored >= acked else "LOST ACKNOWLEDGED PINGS"
        print(f"{label}: {acked:,} acknowledged, {stored:,} stored: {verdict}")


def postgres_takeovers(tmp: str, n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pg import migrated_template, start_cluster

    cluster = start_cluster(fsync=True)
    try:
        template = migrated_template(cluster)
        taken = takeover(tmp, n, lambda i: cluster.new_database("takeover", template=template))
    finally:
        cluster.stop()
    print(f"PostgreSQL: scheduler takeover after kill -9 of the leader (advisory lock, "
          f"--leader-ttl 5): {', '.join(f'{t:.2f}' for t in taken)} s "
          f"(median {statistics.median(taken):.2f})")  # fmt: skip


def serve_env(db: str, name: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cronwatch.main", "serve", "--port", "0", "--db", db,
         "--replica-id", name],
        stderr=subprocess.PIPE, env={**os.environ, **env},
    )  # fmt: skip
    assert proc.stderr is not None
    url = proc.stderr.readline().decode().strip().rsplit(" ", 1)[-1]
    wait_up(url + "/healthz")
    return proc, url


def postgres_stream(n: int) -> None:
    """Pings at replica a, one every 0.1 s; the seconds from each ping's answer to its
    event on a stream at replica b, which polls once a minute: what notifications do."""
    import threading
    import urllib.request

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from cronwatch.store import open_store
    from pg import migrated_template, start_cluster

    cluster = start_cluster(fsync=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db = cluster.new_database("stream", template=migrated_template(cluster))
        with open_store(db) as s:
            key = s.ensure_ping_key("streamed", now=time.time())
            token = s.create_token("bench", read_only=True, now=time.time())
        a, a_url = serve_env(db, "a", {})
        b, b_url = serve_env(db, "b", {"CRONWATCH_EVENT_POLL": "60"})
        procs += [a, b]
        arrived: list[float] = []

        def read() -> None:
            req = urllib.request.Request(b_url + "/api/v1/stream",
                                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=120) as r:
                for line in r:
                    if line.startswith(b"event: run.ok"):
                        arrived.append(time.monotonic())
                        if len(arrived) == n:
                            return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(1.0)
        sent: list[float] = []
        for _ in range(n):
            with urllib.request.urlopen(f"{a_url}/ping/{key}", timeout=10) as r:
                r.read()
            sent.append(time.monotonic())
            time.sleep(0.1)
        reader.join(90)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        cluster.stop()
    lat = sorted(x - y for x, y in zip(arrived, sent, strict=False))
    if len(lat) < n:
        print(f"only {len(lat)} of {n} events arrived within 90 s")
    if lat:
        print(f"PostgreSQL: {len(lat)} events pinged at replica a, on a stream at replica b "
              f"(poll 60 s): median {statistics.median(lat) * 1000:.0f} ms, "
              f"p90 {lat[int(len(lat) * 0.9) - 1] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")  # fmt: skip


def postgres_notify_ab(duration: int, connections: int, rounds: int) -> None:
    """Two replicas writing at once, on a database whose event inserts notify (migration
    15's trigger) and on one without the trigger: their commits take turns on
    PostgreSQL's notification queue lock, which one writer alone never waits for."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import psycopg

    from cronwatch.store import open_store
    from pg import migrated_template, start_cluster

    cluster = start_cluster(fsync=True)
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[dict[str, float]]] = {"notify trigger": [], "no trigger": []}
    try:
        template = migrated_template(cluster)
        urls: dict[str, list[str]] = {}
        for label in results:
            name = cluster.new_database("ab", template=template).rsplit("/", 1)[1]
            db = cluster.url(name, unix=True)  # the local socket, as a local deployment
            if label == "no trigger":
                with psycopg.connect(db, autocommit=True) as c:
                    c.execute("DROP TRIGGER events_notify ON events")
            with open_store(db) as s:
                key = s.ensure_ping_key("hc", now=time.time())
            pair = [serve(db, "a"), serve(db, "b")]
            procs += [p for p, _ in pair]
            urls[label] = [f"{u}/ping/{key}" for _, u in pair]
        for label in results:
            side_by_side(urls[label], 2, connections)  # warm up
        load = os.getloadavg()[0]
        for _ in range(rounds):
            for label in results:
                results[label].append(side_by_side(urls[label], duration, connections))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        cluster.stop()
    print(f"two replicas on one PostgreSQL database, wrk -t1 -c{connections // 2} at each, "
          f"-d{duration}s, {rounds} rounds (medians), load average {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end\n")  # fmt: skip
    print("| events | req/s (sum) | p50 ms | p99 ms (worse) | errors |")
    print("|---|---:|---:|---:|---:|")
    for label, rs in results.items():

        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        print(f"| {label} | {med('rps'):,.0f} | {med('p50'):.2f} | {med('p99'):.2f} "
              f"| {int(sum(r['errors'] for r in rs))} |")  # fmt: skip


if __name__ == "__main__":
    main()
