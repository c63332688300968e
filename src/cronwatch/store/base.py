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
