"""Output pass-through of ``cronwatch run``: throughput and the wrapper's memory.

Target: ``cronwatch run x -- sh -c 'head -c 1G /dev/zero'`` with stdout to /dev/null runs
at >= 50% of the throughput of ``sh -c 'head -c 1G /dev/zero | cat'`` to /dev/null (the
same bytes through one pipe and one copying process), with the streams apart (stderr to a
log) and merged (``>/dev/null 2>&1``: the job gets one pipe for both, and writes half of
the bytes to each). Throughput is bytes / median wall time, interleaved rounds; the
wrapper's start-up and recording are included.

The capture is capped (1 MiB per stream by default), so the wrapper's max RSS must not grow
with the output: it is reported for an empty run and for the full run (wait4 rusage of
the wrapper, which covers it and its reaped children; the shell and head are tiny).

    python benchmarks/bench_passthrough.py [--quick] [--rounds N] [--size 1G]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3

import _common as c

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
WRAPPED = "cronwatch run -- sh -c 'head'"
MERGED = "cronwatch run -- sh -c 'head; head >&2' 2>&1"


def parse_size(text: str) -> int:
    text = text.upper().removesuffix("B")
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="256M, 3 rounds")
    ap.add_argument("--size", help="bytes to pass through (default 1G; 256M with --quick)")
    ap.add_argument("--rounds", type=int, help="rounds of each command (default 5)")
    args = ap.parse_args()
    size_text = args.size or ("256M" if args.quick else "1G")
    size = parse_size(size_text)
    rounds = args.rounds or (3 if args.quick else 5)
    c.check_tools()
    print(f"bench_passthrough: {c.conditions()}")
    work = c.CACHE / "passthrough-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    db = str(work / "history.db")
    env = c.bench_env()
    gen = f"head -c {size} /dev/zero"
    wrap = [c.CRONWATCH, "run", "pass", "--db", db, "--"]
    half, rest = f"head -c {size // 2} /dev/zero", f"head -c {size - size // 2} /dev/zero"
    cases = {
        "sh -c 'head | cat' (baseline)": ["/bin/sh", "-c", f"{gen} | cat"],
        WRAPPED: wrap + ["/bin/sh", "-c", gen],
        # the wrapper's stderr made the same open file as its stdout, as a crontab's 2>&1
        MERGED: ["/bin/sh", "-c", 'exec "$@" 2>&1', "sh"]
        + wrap
        + ["/bin/sh", "-c", f"{half}; {rest} >&2"],
        "sh -c 'head' (no pipe, reference)": ["/bin/sh", "-c", gen],
    }
    empty = [c.CRONWATCH, "run", "empty", "--db", db, "--", "true"]
    c.timed(empty, env)  # create the database, warm the byte-code caches
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        names = list(cases)
        random.shuffle(names)
        for name in names:
            times[name].append(c.timed(cases[name], env, label=name))
    print(f"\n{size_text} ({size} bytes) to /dev/null, {rounds} interleaved rounds")
    mbps = {}
    for name, v in times.items():
        mbps[name] = size / c.median(v) / 1e6
        cpu = c.median(c.CPU[name]) * 1000
        print(f"  {name:44s} {c.summary(v)}  {mbps[name]:7.0f} MB/s, CPU {cpu:.0f} ms")
    rss: dict[str, list[float]] = {"cronwatch run -- true": [], WRAPPED: []}
    for _ in range(3):
        for name, argv in zip(rss, (empty, cases[WRAPPED]), strict=True):
            mib = c.max_rss(argv, env)
            if mib is not None:  # None: no GNU time here
                rss[name].append(mib)
    print("\nmax RSS of the wrapper and its children (GNU time %M, 3 runs):")
    for name, v in rss.items():
        if v:
            print(f"  {name:44s} median {c.median(v):6.1f} MiB, max {max(v):6.1f} MiB")
    con = sqlite3.connect(db)
    # the newest run of each kind (SQLite takes the bare columns from the max row)
    rows = con.execute("SELECT length(o.stdout), r.status, o.merged, max(r.started_at) FROM "
                       "outputs o JOIN runs r ON r.id=o.run_id JOIN jobs j ON j.id=r.job_id "
                       "WHERE j.name='pass' GROUP BY o.merged").fetchall()  # fmt: skip
    con.close()
    for length, status, merged, _ in rows:
        kind = "merged" if merged else "separate"
        print(f"  recorded run ({kind}): status {status}, stored stdout {length} bytes (zlib)")
    print()
    base = mbps["sh -c 'head | cat' (baseline)"]
    for name, kind in ((WRAPPED, "separate"), (MERGED, "merged")):
        c.verdict(f"throughput wrapper ({kind}) / head|cat", mbps[name] / base, 0.5,
                  higher_is_better=True)  # fmt: skip
    small, big = rss["cronwatch run -- true"], rss[WRAPPED]
    if small and big:
        grow = c.median(big) - c.median(small)
        c.verdict("max RSS growth with output (own bound)", grow, 16.0, unit=" MiB")
    return c.finish()


if __name__ == "__main__":
    raise SystemExit(main())
