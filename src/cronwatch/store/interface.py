"""The Store interface every backend implements.

Semantics shared by all backends (see ../shared/design.md, "Run semantics"):

* ``record_run`` stores a run as given (the wrapper, import, the spool); idempotent by run id.
* ``start_run`` opens a run. A start without a client run id marks the job's open runs
  that have no client run id as timed out first; a start with a run id never touches
  other runs (they are concurrent).
* ``finish_run`` closes the open run (matched by client run id when given, else the newest
  open run without one); with no open run it records a synthetic, already-finished run.
  Finishing a run id that is already finished is a no-op (delivery is at-least-once).
* Retention runs as part of every write: run records older than ``keep_days`` go, and
  captured output is kept for the newest ``keep_output`` runs and the newest
  ``keep_failed_output`` failed runs of each job.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from cronwatch.core.model import Job, Run, Status


def run_row(run: Run) -> tuple[Any, ...]:
    """A run as a row for ``Store.import_rows``: (id, job, env, status, started_at,
    ended_at, duration, exit_code, signal, host, user, command, message, source, failed,
    stdout, stderr), the output already compressed (None: not captured)."""
    from cronwatch.core.values import compress

    return (
        run.id, run.job, run.env, run.status.value, run.started_at, run.ended_at,
        run.duration, run.exit_code, run.signal, run.host, run.user, run.command, run.message,
        run.source, run.status.is_failure, compress(run.stdout), compress(run.stderr),
    )  # fmt: skip


class Store:
    """Abstract base. Methods raise ``NotFound`` for unknown jobs or runs."""

    url: str = ""

    # --- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        raise NotImplementedError

    def transaction(self) -> Any:
        """Context manager: store writes inside it share one transaction (group commit)."""
        raise NotImplementedError

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- jobs --------------------------------------------------------------------
    def get_job(self, name: str) -> Job:
        raise NotImplementedError

    def find_job(self, name: str) -> Job | None:
        raise NotImplementedError

    def job_by_key(self, ping_key: str) -> Job | None:
        raise NotImplementedError

    def ensure_job(self, name: str, *, now: float) -> Job:
        raise NotImplementedError

    def save_job(self, job: Job, *, now: float) -> Job:
        """Insert or update ``job`` (all settings and its ping key)."""
        raise NotImplementedError

    def delete_job(self, name: str) -> None:
        raise NotImplementedError

    def list_jobs(self) -> list[Job]:
        raise NotImplementedError

    # --- runs --------------------------------------------------------------------
    def record_run(self, run: Run, *, now: float) -> bool:
        """Store a run as given; False if a run with that id already exists."""
        return self.record_runs([run], now=now)[0] == 1

    def record_runs(self, runs: Iterable[Run], *, now: float) -> tuple[int, int]:
        """Bulk insert (import, spool replay). Returns (inserted, skipped)."""
        raise NotImplementedError

    def import_rows(
        self,
        rows: list[tuple[Any, ...]],
        *,
        now: float,
        days: dict[str, set[int]] | None = None,
    ) -> int:
        """`cronwatch import`'s bulk path: rows as ``run_row`` makes them, one transaction.
        Returns how many were new (idempotent by run id). ``days``: the UTC days
        (started_at / 86400) the rows start on, by job name, if the caller knows them."""
        raise NotImplementedError

    def start_run(
        self,
        job: str,
        *,
        now: float,
        run_id: str | None = None,
        env: str = "",
        host: str = "",
        user: str = "",
        command: str = "",
        source: str = "ping",
    ) -> tuple[Run, list[Run]]:
        """Open a run. Returns (the run, the runs it marked timed out).

        Without ``run_id``, a start times out the open runs of (job, env) that have no
        client run id. With one (a client's rid, scoped to its job and env: other jobs and
        envs may use the same rid), see ``cronwatch.core.runs``: while the rid's run is
        open, a start again is a repeat and returns it; once it finished, a start opens a
        new run (rids are reused: ``nightly``, a date), unless the rid is a ULID, which
        names one run forever (a start again is a repeated delivery: the run is returned).
        The new run's id is the rid if no run has that id yet, else a new id: the id
        returned is what ``get_run`` and ``update_run`` take.
        """
        raise NotImplementedError

    def finish_run(
        self,
        job: str,
        status: Status,
        *,
        now: float,
        run_id: str | None = None,
        env: str = "",
        exit_code: int | None = None,
        duration: float | None = None,
        stdout: bytes | None = None,
        stderr: bytes | None = None,
        message: str = "",
        host: str = "",
        source: str = "ping",
    ) -> Run:
        """Finish a run: the open one ``run_id`` names in (job, env) (its client rid, or its
        own id), or without ``run_id`` the newest open run of (job, env) that has no client
        rid; with none open, a synthetic already-finished run is recorded (started
        ``duration`` before ``now``). Never dropped, with one exception, at-least-once
        delivery: a finish with the rid of a finished run that repeats its outcome within
        ``core.runs.REPEAT_WINDOW`` (or any finish of a finished ULID rid) returns that
        run unchanged (so its ``ended_at`` is not ``now``: callers do not evaluate it
        again). Another outcome, or the same one later, is a new synthetic run.
        """
        raise NotImplementedError

    def update_run(self, run: Run, *, now: float) -> None:
        """Overwrite a stored run's fields (status, times, output...)."""
        raise NotImplementedError

    def get_run(self, run_id: str, *, output: bool = True) -> Run:
        raise NotImplementedError

    def list_runs(
        self,
        *,
        job: str | None = None,
        since: float | None = None,
        until: float | None = None,
        status: Status | None = None,
        env: str | None = None,
        limit: int | None = None,
        output: bool = False,
        oldest_first: bool = False,
    ) -> list[Run]:
        raise NotImplementedError

    def iter_runs(
        self, *, job: str | None = None, since: float | None = None, output: bool = True
    ) -> Iterator[Run]:
        """Every matching run, oldest first, streamed (export)."""
        raise NotImplementedError

    def open_runs(self) -> list[Run]:
        raise NotImplementedError

    def last_run(self, job: str, *, statuses: Iterable[Status] | None = None) -> Run | None:
        raise NotImplementedError

    # --- aggregates ----------------------------------------------------------------
    def job_stats(self, job: str, *, since: float | None = None) -> dict[str, Any]:
        """Counts by status, success rate, p50/p95/max/avg duration, last success/failure,
        current streak. Computed in the database: fast over a year of minutely runs."""
        raise NotImplementedError

    def run_counts(self) -> dict[str, dict[str, int]]:
        """Stored runs of every job by status: ``{job: {status: n}}`` (zero counts left out)."""
        raise NotImplementedError

    def recent_durations(self, job: str, n: int) -> list[tuple[float, str]]:
        """(duration, status) of the newest ``n`` finished runs, newest first."""
        raise NotImplementedError

    # --- alerting -----------------------------------------------------------------------
    def get_alert_state(self, job: str, env: str = "") -> dict[str, Any] | None:
        """The job's alert state (``alerting.AlertState.to_dict``), None before its first."""
        raise NotImplementedError

    def set_alert_state(self, job: str, env: str, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def alert_summary(self, job: str, env: str = "") -> dict[str, Any] | None:
        """At least ``down``, ``fail_streak``, ``ok_streak`` and ``incident_open`` of the
        alert state (what ``checks.steady`` reads); a backend may read just those."""
        return self.get_alert_state(job, env)

    # --- key/value ---------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        raise NotImplementedError

    def set_meta(self, key: str, value: str) -> None:
        raise NotImplementedError

    # --- server: ping keys, tokens, the event log, incidents, log output ------------------
    def ensure_ping_key(self, name: str, *, now: float) -> str:
        """The job's ping key, made and stored on first need (the job is created if new)."""
        raise NotImplementedError

    def set_ping_key(self, name: str, key: str) -> None:
        """Give a job an explicit ping key (ValidationError if another job holds it)."""
        raise NotImplementedError

    def project_ping_key(self) -> str:
        """The project-wide ping key for slug URLs, made on first use."""
        raise NotImplementedError

    def create_token(self, name: str, *, read_only: bool, now: float) -> str:
        """A new API token; only its sha256 is stored. Returned once."""
        raise NotImplementedError

    def check_token(self, token: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def touch_token(self, name: str, *, now: float) -> None:
        raise NotImplementedError

    def list_tokens(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def delete_token(self, name: str) -> None:
        raise NotImplementedError

    def add_event(self, type: str, data: dict[str, Any], *, now: float) -> int:
        """Append to the event log; returns the event's (increasing) id."""
        raise NotImplementedError

    def events_since(self, last_id: int, *, limit: int = 500) -> list[tuple[int, float, str, str]]:
        raise NotImplementedError

    def last_event_id(self) -> int:
        raise NotImplementedError

    def list_incidents(
        self, *, job: str | None = None, open_only: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def get_incident(self, incident_id: int) -> dict[str, Any]:
        raise NotImplementedError

    def append_output(
        self,
        job: str,
        data: bytes,
        *,
        now: float,
        run_id: str | None = None,
        env: str = "",
        limit: int = 1_000_000,
    ) -> str | None:
        """Append to a run's stdout (a log ping): the run ``run_id`` names in (job, env), as
        for ``finish_run`` (finished or not), or without one the newest open run of (job,
        env) without a client rid. Returns the run's id, or None if there is no such run."""
        raise NotImplementedError

    def forget_job_ids(self) -> None:
        """Drop any cached name -> id mapping (another connection changed the jobs)."""
