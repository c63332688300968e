"""Every job at a glance (the console's jobs page): health, last run, next expected run,
success rate and p95 of recent runs, and their durations for a small chart.

The health of every job (for the filters and the counts) costs one small query a job
(its newest run) plus one for every open run: the same ``core.health.evaluate`` the CLI,
the API and the dashboard use, fed from those rows instead of the five queries
``app.evaluate.describe`` makes. The recent runs behind the numbers and the chart are
read only for the rows a page shows, so 1,000 jobs stay within the page's budget
(benchmarks/bench_console.py).
"""

from __future__ import annotations

import math
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
    changes_at: float = math.inf  # when the clock alone can change the health next
    open_ids: tuple[str, ...] = ()


def job_row(store: Any, job: Job, last: Run | None, open_runs: list[Run], *,
            now: float) -> JobRow:  # fmt: skip
    """A job's health, from its newest run (and its newest finished one when the newest
    is still going): the numbers and the chart are ``add_recent``'s, for shown rows only."""
    last_finished = last
    if last is not None and last.status is Status.RUNNING:
        last_finished = store.last_run(
            job.name, statuses=[s for s in Status if s is not Status.RUNNING]
        )
    anchor = last.started_at if last is not None else job.created_at
    if job.resumed_at is not None:
        anchor = max(anchor, job.resumed_at)
    report = evaluate(job, last_finished=last_finished, open_runs=open_runs, anchor=anchor,
                      now=now)  # fmt: skip
    row = JobRow(job, str(report.health), report.reason, report.next_expected, last)
    row.envs = [last.env] if last is not None and last.env else []
    row.open_ids = tuple(r.id for r in open_runs)
    later = [t for t in (report.next_expected, report.deadline) if t is not None and t > now]
    if job.max_runtime is not None:
        later += [r.started_at + job.max_runtime for r in open_runs]
    row.changes_at = min((t for t in later if t > now), default=math.inf)
    return row


def add_recent(store: Any, row: JobRow) -> JobRow:
    """The row's newest RECENT runs: the chart, the success rate and p95 over them."""
    row.runs = store.list_runs(job=row.job.name, limit=RECENT)
    finished = [r for r in row.runs if r.status is not Status.RUNNING]
    if finished:
        ok = sum(1 for r in finished if r.status is Status.SUCCESS)
        row.success_rate = 100.0 * ok / len(finished)
        durations = sorted(r.duration for r in finished if r.duration is not None)
        row.p95 = percentile(durations, 0.95) if durations else None
    return row


def job_rows(store: Any, *, now: float, previous: dict[str, JobRow] | None = None) -> list[JobRow]:
    """Every job's row, by name, without the recent runs (``add_recent``). A row of
    ``previous`` whose job, newest run and open runs are unchanged, and whose health the
    clock cannot have changed yet, is reused as it is (recent runs included)."""
    open_by_job: dict[str, list[Run]] = {}
    for r in store.open_runs():
        open_by_job.setdefault(r.job, []).append(r)
    newest = store.newest_runs()
    rows = []
    for job in store.list_jobs():
        last = newest.get(job.name)
        mine = open_by_job.get(job.name, [])
        old = previous.get(job.name) if previous else None
        if (old is not None and now < old.changes_at and old.last == last and old.job == job
                and old.open_ids == tuple(r.id for r in mine)):  # fmt: skip
            rows.append(old)
        else:
            rows.append(job_row(store, job, last, mine, now=now))
    return rows


def in_env(store: Any, row: JobRow, env: str) -> bool:
    """Whether the job has ever run in ``env``."""
    return env in row.envs or bool(store.list_runs(job=row.job.name, env=env, limit=1))


def matches(row: JobRow, *, q: str = "", health: str = "", tag: str = "") -> bool:
    """The jobs page's search and filters (the environment's is ``in_env``)."""
    if q and q.lower() not in row.job.name.lower():
        return False
    if health and row.health != health:
        return False
    return not (tag and tag not in row.job.tags)
