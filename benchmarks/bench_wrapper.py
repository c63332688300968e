"""Wrapper overhead of ``cronwatch run``: time until the child starts, and total wall time.

Targets (ratios of medians measured in the same, interleaved run):
  a. spawn of ``cronwatch run x -- CHILD`` until CHILD has started  <= 1.2 x ``python -c pass``
  b. ``cronwatch run x -- true`` on a 100 jobs x 1,000 runs database,
     dashboard on (the default)                                       <= 2 x ``python -c pass``
  c. the same for a configured job (schedule, grace, channel, assertion), healthy   <= 2 x
  d. the same when an alert fires and its channel never answers                      <= 2 x

Child start is detected with a FIFO: the child is ``sh -c 'exec 3>FIFO'`` and the benchmark
blocks in open(FIFO, O_RDONLY), which returns the moment the child opens the write end.
``sh`` spawned directly the same way is reported too (the child's own start-up, ~1 ms).
The post-run step (evaluation, the page, notifications) runs in a detached process
(cronwatch.wrapper.postrun); the benchmark waits for it after every command (except for
its notifications to the channel that never answers), reports how long it ran on, and
times one dashboard regeneration alone.

    python benchmarks/bench_wrapper.py [--quick] [--rounds N] [--no-breakdown]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import _common as c

JOBS, RUNS = 100, 1000

# One wrapped run in-process, split into phases: (CPU ms, wall ms) each, printed as JSON.
# The post-exit steps are timed by wrapping the functions record.after_run calls.
PHASES = """
import gc; gc.disable()  # as in a wrapper process (cli._wrap)
import json, os, sys, time
T, W = time.process_time, time.perf_counter
out, t = {}, [T(), W()]
def lap(label):
    out[label] = [(T() - t[0]) * 1000, (W() - t[1]) * 1000]
    t[:] = [T(), W()]
def wrap(label, owner, attr):
    def timed(*a, fn=getattr(owner, attr), **k):
        t0 = [T(), W()]
        try:
            return fn(*a, **k)
        finally:
            out["  of which " + label] = [(T() - t0[0]) * 1000, (W() - t0[1]) * 1000]
    setattr(owner, attr, timed)
import cronwatch.main, cronwatch.wrapper.runner as R
lap("imports before the spawn (cli, runner)")
o = R.parse_run_args(["job-000", "--db", sys.argv[1], "--", "true"], name_form=False)
res = R.execute(o)
lap("spawn, open record (on a thread), wait for `true`")
import cronwatch.wrapper.record as rec, cronwatch.store as st, cronwatch.store.sqlite.backend as sq
lap("imports after the exit")
wrap("open_store", st, "open_store")
wrap("record_run (close the open run, retention)", sq.SQLiteStore, "record_run")
wrap("post-run step started (detached)", rec, "_spawn_detached")
wrap("store.close", sq.SQLiteStore, "close")
rec.after_run(o, res)
lap("after_run in all")
print(json.dumps(out))
"""


def database() -> str:
    """A fresh copy of the cached 100 x 1,000 database (built once through the store API)."""
    cached = c.CACHE / f"wrapper-{JOBS}x{RUNS}-{c.schema_tag()}.db"
    if not cached.exists():
        t0 = time.perf_counter()
        jobs = {f"job-{i:03d}": (RUNS, 3600.0) for i in range(JOBS)}
        c.build_db(cached, jobs, time.time() - 60)
        print(f"built {cached} in {time.perf_counter() - t0:.1f} s")
    work = c.CACHE / "wrapper-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copy(cached, work / "history.db")
    return str(work / "history.db")


def until_open(argv: list[str], fifo: str, env: dict[str, str]) -> tuple[float, float]:
    """(time until ``argv``'s child opens ``fifo`` for writing, total wall time)."""

    def alarm(*_: object) -> None:
        raise TimeoutError(f"child never opened the FIFO: {' '.join(argv)}")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    try:
        t0 = time.perf_counter()
        pid = c.spawn(argv, env)
        fd = os.open(fifo, os.O_RDONLY)
        t1 = time.perf_counter()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    os.close(fd)
    c.wait(pid, argv)
    return t1 - t0, time.perf_counter() - t0


def importtime(db: str, env: dict[str, str]) -> None:
    """Top-level imports of the run path (median of 5 runs of python -X importtime)."""
    argv = [c.PYTHON, "-X", "importtime", c.CRONWATCH, "run", "job-000", "--db", db, "--", "true"]
    per: dict[str, list[int]] = {}
    order: list[str] = []
    for _ in range(5):
        err = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stderr
        for line in err.splitlines():
            if not line.startswith("import time:") or "|" not in line[13:]:
                continue
            _, cum, name = line[12:].split("|")
            if name.startswith("  ") or not cum.strip().isdigit():
                continue  # nested, or the header
            name = name.strip()
            if name not in per:
                order.append(name)
            per.setdefault(name, []).append(int(cum))
    total = sum(c.median(v) for v in per.values()) / 1000
    print(f"\nimports of `cronwatch run` (python -X importtime, top level, median of 5; "
          f"importtime inflates them): {total:.1f} ms in all")  # fmt: skip
    for name in order:
        ms = c.median(per[name]) / 1000
        if ms >= 0.5:
            print(f"    {ms:6.1f} ms  {name}")


def post_runs(db: str) -> list[int]:
    """Pids of the detached post-run steps working on ``db``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"cronwatch.wrapper.postrun" in argv and db.encode() in argv:
            found.append(int(name))
    return found


def settle(db: str, timeout: float = 60.0, deliveries: bool = True) -> float:
    """Wait for the detached post-run step a run started, so that it never overlaps the
    next measured command; return the seconds waited. ``deliveries=False``: only until
    the page is written (the step then sends notifications, which may wait on a channel
    that never answers, asleep)."""
    import fcntl

    page, t0 = os.path.join(os.path.dirname(db), "dashboard.html"), time.perf_counter()
    while deliveries and post_runs(db):
        if time.perf_counter() - t0 > timeout:
            sys.exit("a post-run step is still running after a minute")
        time.sleep(0.01)  # a scan of /proc costs about a millisecond: not in a tight loop
    while os.path.exists(page + ".pending"):  # the renderer removes it as it starts
        if time.perf_counter() - t0 > timeout:
            sys.exit(f"the dashboard regeneration never started ({page}.pending stays)")
        time.sleep(0.001)
    if os.path.exists(page + ".lock"):  # held while it renders
        fd = os.open(page + ".lock", os.O_WRONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.close(fd)
    return time.perf_counter() - t0


def phases(db: str, env: dict[str, str], n: int = 9) -> None:
    """Where one wrapped run spends its time after interpreter start-up (medians of n)."""
    runs = []
    for _ in range(n):
        out = subprocess.run([c.PYTHON, "-c", PHASES, db], env=env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        settle(db)
        runs.append(json.loads(out))
    print(f"phases of one `cronwatch run job-000 -- true` in-process (medians of {n} processes):")
    for label in runs[0]:
        cpu, wall = (c.median([r[label][i] for r in runs]) for i in (0, 1))
        print(f"    {cpu:7.1f} ms CPU {wall:7.1f} ms wall  {label}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 rounds, no breakdown")
    ap.add_argument("--rounds", type=int, help="rounds of each measured command (default 30)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip importtime and phases")
    args = ap.parse_args()
    rounds = args.rounds or (8 if args.quick else 30)
    c.check_tools()
    print(f"bench_wrapper: {c.conditions()}")
    db = database()
    env = c.bench_env()
    fifo = str(c.CACHE / "wrapper-work" / "started.fifo")
    os.mkfifo(fifo)
    run = [c.CRONWATCH, "run", "job-000", "--db", db]
    # A job as users configure one: a schedule, a grace, a channel and an assertion. It
    # stays healthy, so nothing is sent; what it costs is the evaluation after the run.
    configured = [c.CRONWATCH, "run", "job-001", "--db", db, "--", "true"]
    setup = [c.CRONWATCH, "job", "set", "job-001", "--db", db, "--schedule", "*/5 * * * *",
             "--grace", "5m", "--notify", "https://127.0.0.1:9/hook", "--assert",
             "duration < 1h"]  # fmt: skip
    subprocess.run(setup, env=env, check=True, stdout=subprocess.DEVNULL)
    # The same, with a channel that accepts connections and never answers, alternately
    # failing and succeeding: every run fires an alert (or a recovery) for it.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1024)
    hook = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    setup = [c.CRONWATCH, "job", "set", "job-002", "--db", db, "--schedule", "*/5 * * * *",
             "--grace", "5m", "--notify", hook, "--assert", "duration < 1h",
             "--alert-after", "1"]  # fmt: skip
    subprocess.run(setup, env=env, check=True, stdout=subprocess.DEVNULL)
    outcome = ["true"]

    def alerting() -> float:
        outcome[0] = "false" if outcome[0] == "true" else "true"
        argv = [c.CRONWATCH, "run", "job-002", "--db", db, "--", outcome[0]]
        t0 = time.perf_counter()
        code, cpu = c.wait(c.spawn(argv, env))  # `false` exits 1: not a failure here
        wall = time.perf_counter() - t0
        if code != (1 if outcome[0] == "false" else 0):
            sys.exit(f"unexpected exit {code}: {' '.join(argv)}")
        c.CPU.setdefault("alert", []).append(cpu)
        settle(db, deliveries=False)
        return wall

    child = ["/bin/sh", "-c", f"exec 3>{fifo}"]
    page = os.path.join(os.path.dirname(db), "dashboard.html")
    detached = True
    regen = [c.PYTHON, "-m", "cronwatch.app.regen", db, page]
    lag: list[float] = []

    def run_true() -> float:
        t = c.timed(run + ["--", "true"], env, label="run")
        lag.append(settle(db))  # how long the page kept rendering after the wrapper exited
        return t

    def regenerate() -> float:  # one detached regeneration, run in the foreground
        open(page + ".pending", "w").close()
        return c.timed(regen, env, label="regen")

    cases = {
        "python -c pass": lambda: c.timed([c.PYTHON, "-c", "pass"], env, label="pass"),
        "sh child start, direct": lambda: until_open(child, fifo, env)[0],
        "child start under cronwatch": lambda: until_open(run + ["--"] + child, fifo, env)[0],
        "cronwatch run -- true": run_true,
        "... --no-dashboard": lambda: c.timed(
            run + ["--no-dashboard", "--", "true"], env, label="nodash"
        ),
        "configured job: run -- true": lambda: c.timed(configured, env, label="configured"),
        "alert to a silent channel": alerting,
    }
    if detached:
        cases["dashboard regeneration alone"] = regenerate
    for fn in cases.values():  # warm-up: byte-code caches, page cache
        fn()
        fn()
    c.CPU.clear()
    lag.clear()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        names = list(cases)
        random.shuffle(names)  # interleaved, in a fresh order each round
        for name in names:
            times[name].append(cases[name]())
            settle(db)
    print(f"\n{rounds} interleaved rounds; database {JOBS} jobs x {RUNS} runs "
          f"({os.path.getsize(db) / 1e6:.1f} MB); wall time:")  # fmt: skip
    for name, v in times.items():
        print(f"  {name:30s} {c.summary(v)}")
    cpu = {k: c.median(v) for k, v in c.CPU.items()}
    print(f"  CPU time (user+sys, medians, less sensitive to load): python -c pass "
          f"{cpu['pass'] * 1000:.1f} ms, run {cpu['run'] * 1000:.1f} ms "
          f"({cpu['run'] / cpu['pass']:.2f}x), --no-dashboard {cpu['nodash'] * 1000:.1f} ms "
          f"({cpu['nodash'] / cpu['pass']:.2f}x)")  # fmt: skip
    if detached:
        print(f"  the dashboard is rendered by a detached process: it finished a median "
              f"{c.median(lag) * 1000:.1f} ms after the wrapper exited; one regeneration "
              f"alone costs {c.median(c.CPU['regen']) * 1000:.1f} ms CPU (not in the run's)")  # fmt: skip
    med = {name: c.median(v) for name, v in times.items()}
    base = med["python -c pass"]
    print()
    c.verdict("a. child start / python -c pass", med["child start under cronwatch"] / base, 1.2)
    c.verdict("b. run -- true / python -c pass", med["cronwatch run -- true"] / base, 2.0)
    c.verdict("c. configured job / python -c pass", med["configured job: run -- true"] / base,
              2.0)  # fmt: skip
    c.verdict("d. alert, silent channel / python -c pass",
              med["alert to a silent channel"] / base, 2.0)  # fmt: skip
    print(
        f"  (CPU: configured job {cpu['configured'] / cpu['pass']:.2f}x, "
        f"alert {cpu['alert'] / cpu['pass']:.2f}x)"
    )
    start = med["child start under cronwatch"] - med["sh child start, direct"]
    print(
        f"  (--no-dashboard: {med['... --no-dashboard'] / base:.2f}x; "
        f"child start minus sh's own start-up: {start / base:.2f}x)"
    )
    if not (args.quick or args.no_breakdown):
        importtime(db, env)
        print()
        phases(db, env)
    return c.finish()


if __name__ == "__main__":
    raise SystemExit(main())
