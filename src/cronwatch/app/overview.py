"""Every job at a glance (the console's jobs page): health, last run, next expected run,
success rate and p95 of recent runs, and their durations for a small chart.

One query a job (its newest runs) plus one for every open run: the health is the same
``core.health.evaluate`` the CLI, the API and the dashboard use, fed from those rows
instead of the five queries ``app.evaluate.describe`` makes, so that 1,000 jobs stay
well under the page's budget (benchmarks/bench_console.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cronwatch.core.health import evaluate
from cronwatch.core.model import Job, Run, Status
from cronwatch.core.stats import percentile

RECENT = 30  # runs behind each row's numbers and chart


@dataclass(slots=True)
class JobRow:
    job: Job
    health: str
    reason: str
    next_expected: float | None
    last: Run | None
    runs: list[Run] = field(default_factory=list)  # newest first
    success_rate: float | None = None  # percent of the finished ones among ``runs``
    p95: float | None = None
    envs: list[str] = field(default_factory=list)


def job_row(store: Any, job: Job, open_runs: list[Run], *, now: float) -> JobRow:
    runs = store.list_runs(job=job.name, limit=RECENT)
    finished = [r for r in runs if r.status is not Status.RUNNING]
    last_finished = finished[0] if finished else None
    if last_finished is None and len(runs) == RECENT:  # all open: look further back
        last_finished = store.last_run(
            job.name, statuses=[s for s in Status if s is not Status.RUNNING]
        )
    anchor = runs[0].started_at if runs else job.created_at
    if job.resumed_at is not None:
        anchor = max(anchor, job.resumed_at)
    report = evaluate(job, last_finished=last_finished, open_runs=open_runs, anchor=anchor,
                      now=now)  # fmt: skip
    row = JobRow(job, str(report.health), report.reason, report.next_expected,
                 runs[0] if runs else None, runs)  # fmt: skip
    if finished:
        ok = sum(1 for r in finished if r.status is Status.SUCCESS)
        row.success_rate = 100.0 * ok / len(finished)
        durations = sorted(r.duration for r in finished if r.duration is not None)
        row.p95 = percentile(durations, 95) if durations else None
    row.envs = sorted({r.env for r in runs if r.env})
    return row


def job_rows(store: Any, *, now: float) -> list[JobRow]:
    open_by_job: dict[str, list[Run]] = {}
    for r in store.open_runs():
        open_by_job.setdefault(r.job, []).append(r)
    return [job_row(store, job, open_by_job.get(job.name, []), now=now)
            for job in store.list_jobs()]  # fmt: skip


def matches(row: JobRow, *, q: str = "", health: str = "", tag: str = "", env: str = "") -> bool:
    """The jobs page's search and filters."""
    if q and q.lower() not in row.job.name.lower():
        return False
    if health and row.health != health:
        return False
    if tag and tag not in row.job.tags:
        return False
    return not (env and env not in row.envs)
