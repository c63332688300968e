"""Loom's event stream (/api/crons/stream) on the one broadcaster: what a batch of events
costs to encode in Loom's dialect, and that it is paid once per batch, not per stream.

    python benchmarks/bench_loom_stream.py [events] [streams]

Builds a database with ``events`` run.ok events of 50 jobs, publishes them through a
``Broadcaster`` with ``streams`` subscribers on Loom's dialect (and as many on ours), and
hands every stream its batches as the pump does. Prints medians over 7 rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts src/ on the path)

from cronwatch.core import events as ev
from cronwatch.core.model import Job, Run, Status
from cronwatch.server.events import Broadcaster, StreamLimits
from cronwatch.server.loom_events import dialect
from cronwatch.store import open_store


def build(path: str, n: int) -> None:
    with open_store(path) as s:
        now = time.time()
        for j in range(50):
            s.save_job(Job(name=f"job-{j}", title=f"Job {j}"), now=now)
        rows = []
        for i in range(n):
            run = Run(job=f"job-{i % 50}", started_at=now + i, status=Status.SUCCESS,
                      ended_at=now + i + 1.5, duration=1.5, exit_code=0)  # fmt: skip
            rows.append((now + i, "run.ok", ev.to_json(ev.run_finished(run))))
        s.add_events(rows)


async def round_(path: str, streams: int) -> tuple[float, float, int]:
    with open_store(path) as store:
        hub = Broadcaster(store, StreamLimits(per_token=streams * 2, total=streams * 2,
                                              backlog=1 << 30), page=1 << 20)  # fmt: skip
        hub.dialects["loom"] = dialect(store)
        subs = [hub.subscribe("t", "loom") for _ in range(streams)]
        subs += [hub.subscribe("t") for _ in range(streams)]
        hub.last = 0
        t0 = time.perf_counter()
        hub.publish()
        t1 = time.perf_counter()
        encoded = 0
        for sub in subs:  # what each pump does with its queue
            for item in sub.queue:
                if sub.dialect and not isinstance(item, bytes):
                    before = len(item.alt)
                    item.in_dialect("loom", hub.dialects["loom"])
                    encoded += len(item.alt) - before
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, encoded


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    streams = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "h.db")
        build(path, n)
        results = [asyncio.run(round_(path, streams)) for _ in range(7)]
    ours = statistics.median(r[0] for r in results)
    loom = statistics.median(r[1] for r in results)
    print(f"{n} events, {streams} Loom streams + {streams} of ours")
    print(f"read + encode once (ours):      {ours * 1000:.1f} ms ({ours / n * 1e6:.1f} us/event)")
    print(f"Loom's encoding, all streams:   {loom * 1000:.1f} ms ({loom / n * 1e6:.1f} us/event)")
    print(f"Loom encodings per batch:       {results[-1][2]} (for {streams} streams)")


if __name__ == "__main__":
    main()
