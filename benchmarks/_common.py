"""Shared helpers for the benchmarks: locate the tools, spawn and time, build databases, report.

Stdlib only. The benchmarks run the installed ``cronwatch`` script that sits next to the
interpreter running them (``python benchmarks/bench_x.py`` with the venv's python).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
CRONWATCH = str(Path(sys.executable).parent / "cronwatch")
CACHE = Path(os.environ.get("CRONWATCH_BENCH_CACHE", "/tmp/cronwatch-bench"))
DAY = 86400.0

sys.path.insert(0, str(ROOT / "src"))  # the store API, when building databases in-process


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for measured commands.

    Byte-code caches are allowed (an installed package has them; PYTHONDONTWRITEBYTECODE=1
    would recompile every module on every run) but kept out of the repository.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(CACHE / "pycache"))
    for key in ("CRONWATCH_DB", "CRONWATCH_DASHBOARD", "CRONWATCH_CONFIG"):
        env.pop(key, None)
    env.update(extra)
    return env


STDERR_LOG = CACHE / f"{Path(sys.argv[0]).stem}.stderr.log"


def check_tools() -> None:
    if not os.access(CRONWATCH, os.X_OK):
        sys.exit(f"no cronwatch script next to {PYTHON}: run with the venv's python")
    CACHE.mkdir(parents=True, exist_ok=True)
    STDERR_LOG.write_bytes(b"")


def spawn(argv: list[str], env: dict[str, str], stdout: str = "/dev/null") -> int:
    """posix_spawn: stdin from /dev/null, stdout to ``stdout``, stderr to STDERR_LOG."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, str(STDERR_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
    ]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions)


def wait(pid: int, argv: list[str] | None = None) -> tuple[int, float]:
    """Reap ``pid``: (exit code, CPU seconds it and its children used). A non-zero exit
    aborts when ``argv`` is given."""
    _, status, ru = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and argv is not None:
        sys.exit(f"command failed with exit {code}: {' '.join(argv)}")
    return code, ru.ru_utime + ru.ru_stime


CPU: dict[str, list[float]] = {}  # label -> CPU seconds of each timed() run with that label


def timed(
    argv: list[str], env: dict[str, str], stdout: str = "/dev/null", label: str = ""
) -> float:
    """Wall time of one run, spawn to exit (its CPU time is kept in CPU[label])."""
    t0 = time.perf_counter()
    pid = spawn(argv, env, stdout)
    _, cpu = wait(pid, argv)
    wall = time.perf_counter() - t0
    CPU.setdefault(label or argv[0], []).append(cpu)
    return wall


def max_rss(
    argv: list[str], env: dict[str, str], stdout: str = "/dev/null", label: str = ""
) -> float | None:
    """Max RSS (MiB) of one run of ``argv`` and its reaped children, via GNU time.

    Not from our own wait4: a child created by a large parent (fork or posix_spawn)
    starts its ru_maxrss at the parent's RSS, which would be charged to the command.
    """
    gnu_time = "/usr/bin/time"
    if not os.access(gnu_time, os.X_OK):
        return None
    out = CACHE / "maxrss.txt"
    _, cpu = wait(spawn([gnu_time, "-f", "%M", "-o", str(out), *argv], env, stdout), argv)
    CPU.setdefault(label or argv[0], []).append(cpu)
    return int(out.read_text().split()[-1]) / 1024


def summary(values: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    """``median (p25-p75, min, n)`` of ``values`` scaled (seconds to ms by default)."""
    v = sorted(x * scale for x in values)
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0], v[0], v[0]]
    return (f"median {statistics.median(v):8.1f} {unit}  (p25-p75 {q[0]:.1f}-{q[2]:.1f}, "
            f"min {v[0]:.1f}, n={len(v)})")  # fmt: skip


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


RESULTS: list[tuple[str, bool]] = []


def verdict(label: str, value: float, target: float, *, higher_is_better: bool = False,
            unit: str = "x") -> bool:  # fmt: skip
    """Print one target line: measured value, target, value/target, PASS or FAIL."""
    ok = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    print(f"  TARGET {label}: {value:.3g}{unit} (target {sign} {target:g}{unit}, "
          f"{value / target:.2f} of target) {'PASS' if ok else 'FAIL'}")  # fmt: skip
    RESULTS.append((label, ok))
    return ok


def finish() -> int:
    """Print the overall line; exit status 1 if any target failed."""
    lines = STDERR_LOG.read_text(errors="replace").splitlines() if STDERR_LOG.exists() else []
    if lines:
        print(f"\nthe measured commands wrote {len(lines)} lines to stderr ({STDERR_LOG}):")
        for line in sorted(set(lines))[:5]:
            print(f"    {line[:160]}")
    failed = [label for label, ok in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} targets met"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


def conditions() -> str:
    load = os.getloadavg()
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs, load "
            f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, python {sys.version.split()[0]}")  # fmt: skip


def schema_tag() -> str:
    """A short hash of the SQLite migrations: cached databases are rebuilt when it changes."""
    import hashlib

    from cronwatch.store.sqlite import migrations

    return hashlib.sha1("".join(migrations.SQLITE).encode()).hexdigest()[:8]


def make_runs(job: str, n: int, *, now: float, every: float, with_output: int = 1000,
              fail_every: int = 50) -> list:  # fmt: skip
    """``n`` finished runs of ``job``, one every ``every`` seconds ending just before ``now``.

    Like a history where retention already ran: only the newest ``with_output`` runs (and
    every failed run) carry captured output. Every ``fail_every``-th run failed.
    """
    from cronwatch.core.model import Run, Status

    runs = []
    first = now - n * every
    for i in range(n):
        started = first + i * every
        failed = i % fail_every == fail_every - 1
        keep = i >= n - with_output or failed
        dur = 1.0 + (i * 7919 % 1000) / 100.0
        runs.append(Run(
            job=job, started_at=started, status=Status.FAILED if failed else Status.SUCCESS,
            ended_at=started + dur, duration=dur, exit_code=1 if failed else 0,
            stdout=(b"processed %d items\n" % i) if keep else None,
            stderr=(b"error: upstream timed out\n" if failed else b"") if keep else None,
            host="bench-host", user="bench", command=f"/usr/local/bin/{job}.sh",
            source="wrapper"))  # fmt: skip
    return runs


def build_db(path: Path, jobs: dict[str, tuple[int, float]], now: float) -> None:
    """Build a database through the store API: ``jobs`` maps name -> (runs, interval)."""
    from cronwatch.store import open_store

    tmp = path.with_suffix(".building")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    store = open_store(str(tmp))
    try:
        for name, (n, every) in jobs.items():
            runs = make_runs(name, n, now=now, every=every)
            for i in range(0, n, 20000):
                store.record_runs(runs[i : i + 20000], now=now)
    finally:
        store.close()
    tmp.replace(path)
