"""What every backend shares at runtime: the import row format and the default methods.

The wrapper imports this on every run (through the SQLite backend), so it stays cheap: the
Protocols that describe a store are in interface.py, which runtime code on the wrapper's
path imports only under TYPE_CHECKING.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from typing import Any

    from cronwatch.core.model import Run


def run_row(run: Run) -> tuple[Any, ...]:
    """A run as a row for ``Store.import_rows``: (id, job, env, status, started_at,
    ended_at, duration, exit_code, signal, host, user, command, message, source, failed,
    stdout, stderr, merged), the output already compressed (None: not captured)."""
    from cronwatch.core.values import compress

    return (
        run.id, run.job, run.env, run.status.value, run.started_at, run.ended_at,
        run.duration, run.exit_code, run.signal, run.host, run.user, run.command, run.message,
        run.source, run.status.is_failure, compress(run.stdout), compress(run.stderr),
        run.merged,
    )  # fmt: skip


def stats_of_runs(job: str, since: float | None, rows: Any) -> dict[str, Any]:
    """``job_stats``'s answer from (status, started_at, duration) rows, oldest first: the
    stats of one environment, which the per-day rollup (all environments) cannot give."""
    from cronwatch.core.stats import percentile

    counts = {"running": 0, "success": 0, "failed": 0, "timeout": 0, "missed": 0}
    durations: list[float] = []
    last_success = last_failure = None
    streak: dict[str, Any] = {"status": None, "count": 0}
    for status, started, duration in rows:
        counts[status] = counts.get(status, 0) + 1
        if duration is not None:
            durations.append(duration)
        if status == "running":
            continue
        kind = "success" if status == "success" else "failure"
        if kind == "success":
            last_success = started
        else:
            last_failure = started
        streak = ({"status": kind, "count": streak["count"] + 1} if streak["status"] == kind
                  else {"status": kind, "count": 1})  # fmt: skip
    durations.sort()
    total = sum(counts.values())
    finished = total - counts["running"]
    return {
        "job": job, "since": since, "runs": total, "finished": finished,
        "running": counts["running"], "success": counts["success"], "failed": counts["failed"],
        "timeout": counts["timeout"], "missed": counts["missed"],
        "success_rate": counts["success"] / finished if finished else None,
        "duration_avg": sum(durations) / len(durations) if durations else None,
        "duration_p50": percentile(durations, 0.50), "duration_p95": percentile(durations, 0.95),
        "duration_max": durations[-1] if durations else None,
        "last_success": last_success, "last_failure": last_failure, "streak": streak,
    }  # fmt: skip


class StoreBase:
    """Methods a backend may take as they are (each written in terms of the others)."""

    url: str = ""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record_run(self, run: Run, *, now: float) -> bool:
        """Store a run as given; False if a run with that id already exists."""
        return self.record_runs([run], now=now)[0] == 1

    def record_runs(self, runs: Any, *, now: float) -> tuple[int, int]:
        raise NotImplementedError

    def get_alert_state(self, job: str, env: str = "") -> dict[str, Any] | None:
        raise NotImplementedError

    def alert_summary(self, job: str, env: str = "") -> dict[str, Any] | None:
        """At least ``down``, ``fail_streak``, ``ok_streak`` and ``incident_open`` of the
        alert state (what ``checks.steady`` reads); a backend may read just those."""
        return self.get_alert_state(job, env)
