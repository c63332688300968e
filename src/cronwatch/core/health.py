"""A job's health from its runs, its schedule and the clock (like healthchecks' get_status).

The pure part takes plain values and ``now``; the store-facing adapter lives at the bottom.

Precedence, most urgent first, and why:

    disabled the job is switched off: it records nothing and alerts nothing
    paused   the user said "don't bother me"; nothing else is reported or alerted
    timeout  an open run is past max_runtime: something is stuck right now
    missed   an expected run's deadline passed with no run started (or the newest
             recorded outcome is a missed run)
    failing  the newest finished run failed (a newest run that timed out or was
             missed reports ``timeout`` / ``missed`` instead: the word says what broke)
    late     past the expected time but within grace: not yet bad, and it resolves on
             its own, so a known failure outranks it
    healthy  the newest finished run succeeded and nothing is overdue
    unknown  no finished run yet and nothing overdue
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cronwatch.core.model import Job, Run, Status
from cronwatch.core.schedule import parse_schedule
from cronwatch.core.values import format_duration, format_time

# Cron starts jobs a moment after the minute and a start ping needs time to arrive: a
# deadline at the very expected instant would record false misses, so grace has a floor.
MIN_GRACE = 60.0


class Health(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    FAILING = "failing"
    LATE = "late"
    MISSED = "missed"
    TIMEOUT = "timeout"
    PAUSED = "paused"
    DISABLED = "disabled"

    @property
    def is_bad(self) -> bool:
        return self in (Health.FAILING, Health.MISSED, Health.TIMEOUT)


@dataclass(slots=True)
class HealthReport:
    health: Health
    reason: str
    next_expected: float | None = None
    deadline: float | None = None
    overdue_runs: list[Run] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON shape: health, reason, next_expected, deadline, overdue_runs (run ids)."""
        return {
            "health": self.health.value,
            "reason": self.reason,
            "next_expected": self.next_expected,
            "deadline": self.deadline,
            "overdue_runs": [r.id for r in self.overdue_runs],
        }


def effective_grace(job: Job) -> float:
    """The grace actually applied: the job's, but at least MIN_GRACE seconds.

    Adapters that call :func:`cronwatch.core.schedule.missed_deadlines` pass this, so the
    scheduler and the status display agree.
    """
    return max(float(job.grace or 0.0), MIN_GRACE)


def expected_after(job: Job, anchor: float | None) -> tuple[float | None, float | None]:
    """(next expected time, deadline) after ``anchor``; (None, None) without a schedule.

    A schedule with no later occurrence also gives (None, None).
    """
    if not job.schedule or anchor is None:
        return None, None
    expected = parse_schedule(job.schedule).next_after(anchor, job.tz or "UTC")
    if math.isinf(expected):
        return None, None
    return expected, expected + effective_grace(job)


def overdue(job: Job, open_runs: Sequence[Run], now: float) -> list[Run]:
    """Open runs that have been running for max_runtime or longer, oldest first."""
    if job.max_runtime is None:
        return []
    limit = job.max_runtime
    late = [r for r in open_runs if r.status is Status.RUNNING and now >= r.started_at + limit]
    return sorted(late, key=lambda r: r.started_at)


def evaluate(
    job: Job,
    *,
    last_finished: Run | None,
    open_runs: Sequence[Run],
    anchor: float | None,
    now: float,
) -> HealthReport:
    """The job's health at ``now``.

    ``anchor`` is the start time of the newest run (open or finished), or the job's
    creation time when it has none; the next expected run is the schedule's first time
    after it. Missed detection ignores open runs on purpose: a run still going when the
    next one was due means the next one did not happen (a hung job with no max_runtime
    would otherwise hide forever).
    """
    expected, deadline = expected_after(job, anchor)
    stuck = overdue(job, open_runs, now)
    report = HealthReport(Health.UNKNOWN, "", expected, deadline, stuck)

    if job.disabled:
        report.health, report.reason = Health.DISABLED, "disabled"
    elif job.paused_at(now):  # a timed pause past its end is over, resumed or not yet
        report.health, report.reason = Health.PAUSED, "paused"
    elif stuck and job.max_runtime is not None:
        run = stuck[0]
        report.health = Health.TIMEOUT
        report.reason = (
            f"run {run.id} started {format_time(run.started_at)} has been running "
            f"{format_duration(now - run.started_at)}, over the max runtime "
            f"{format_duration(job.max_runtime)}"
        )
    elif expected is not None and deadline is not None and now >= deadline:
        report.health = Health.MISSED
        report.reason = (
            f"expected at {format_time(expected)}, no run started by "
            f"{format_time(deadline)} (grace {format_duration(effective_grace(job))})"
        )
    elif last_finished is not None and last_finished.status.is_failure:
        report.health, report.reason = _from_failure(last_finished)
    elif expected is not None and now >= expected:
        report.health = Health.LATE
        report.reason = (
            f"expected at {format_time(expected)}, within grace until {format_time(deadline)}"
        )
    elif last_finished is not None:
        report.health = Health.HEALTHY
        report.reason = f"last run succeeded at {format_time(last_finished.ended_at or last_finished.started_at)}"
    else:
        report.reason = "running, no finished run yet" if open_runs else "no runs yet"
    return report


def _from_failure(run: Run) -> tuple[Health, str]:
    when = format_time(run.ended_at or run.started_at)
    if run.status is Status.MISSED:
        return Health.MISSED, f"the run expected at {format_time(run.started_at)} was missed"
    if run.status is Status.TIMEOUT:
        return Health.TIMEOUT, f"the last run timed out at {when}"
    detail = run.message or (
        f"exit code {run.exit_code}"
        if run.exit_code is not None
        else (f"signal {run.signal}" if run.signal is not None else "failed")
    )
    return Health.FAILING, f"the last run failed at {when}: {detail}"


def next_deadline(job: Job, anchor: float | None, open_runs: Sequence[Run]) -> float | None:
    """The earliest instant at which the clock alone can make this job missed or timeout.

    That is the missed deadline (next expected + grace) or an open run's max-runtime
    expiry, whichever is first; None when neither applies (no schedule, paused). The
    instant may already be past: the caller acts on it (records the missed run, which
    moves the anchor; closes the timed-out run, which leaves ``open_runs``), after which
    the next call returns a later instant. ``late`` is not a deadline: nothing acts on it.
    """
    if job.paused or job.disabled:
        return None
    _, deadline = expected_after(job, anchor)
    candidates = [] if deadline is None else [deadline]
    if job.max_runtime is not None:
        candidates += [
            r.started_at + job.max_runtime for r in open_runs if r.status is Status.RUNNING
        ]
    return min(candidates, default=None)
