"""The Store interface every backend implements, as Protocols by concern.

Semantics shared by all backends (see ../shared/design.md, "Run semantics"):

* ``record_run`` stores a run as given (the wrapper, import, the spool); idempotent by run id,
  except that a run its wrapper opened and never closed (``owner`` set) is overwritten by
  the run's end. The wrapper records a run twice: open, with its ``owner`` (the process,
  see ``system.process_token``), right after the child started; then finished, ``pending``
  the post-run evaluation (``pending_runs``, ``claim_pending``: app.evaluate.settle).
* ``start_run`` opens a run. A start without a client run id marks the job's open runs
  that have no client run id as timed out first; a start with a run id never touches
  other runs (they are concurrent).
* ``finish_run`` closes the open run (matched by client run id when given, else the newest
  open run without one); with no open run it records a synthetic, already-finished run.
  Finishing a run id that is already finished is a no-op (delivery is at-least-once).
* Retention runs as part of every write: run records older than ``keep_days`` go, and
  captured output is kept for the newest ``keep_output`` runs and the newest
  ``keep_failed_output`` failed runs of each job.
* Stats are exact whatever happens to runs (store/rollup.py keeps the per-day rollup).
* Methods raise ``NotFound`` for unknown jobs or runs, ``StoreError`` (``StoreBusy``
  when another writer holds the database) for a database that cannot be used.

Code on the wrapper's path imports this module only under TYPE_CHECKING (it imports
``typing``); the runtime pieces every backend shares are in base.py. Callers are typed
against ``Store`` (or a narrower Protocol); mypy checks that each backend satisfies it
(see the end of sqlite/backend.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from cronwatch.core.model import Job, Run, Status
from cronwatch.store.base import run_row
from cronwatch.store.rollup import Rollup

__all__ = [
    "AlertStore",
    "BatchWriter",
    "EventStore",
    "IncidentStore",
    "JobStore",
    "LeaderStore",
    "Maintenance",
    "MetaStore",
    "RunStore",
    "StatsStore",
    "Store",
    "TokenStore",
    "UserStore",
    "run_row",
]


class JobStore(Protocol):
    def get_job(self, name: str) -> Job: ...
    def find_job(self, name: str) -> Job | None: ...
    def job_by_key(self, ping_key: str) -> Job | None: ...
    def ensure_job(self, name: str, *, now: float) -> Job: ...
    def save_job(self, job: Job, *, now: float) -> Job:
        """Insert or update ``job`` (all settings and its ping key)."""
        ...

    def delete_job(self, name: str) -> None:
        """The job and everything of it (runs, output, rollup, alert state, incidents)."""
        ...

    def list_jobs(self) -> list[Job]: ...
    def forget_job_ids(self) -> None:
        """Drop any cached name -> id mapping (another connection changed the jobs)."""
        ...

    def ensure_ping_key(self, name: str, *, now: float) -> str:
        """The job's ping key, made and stored on first need (the job is created if new)."""
        ...

    def set_ping_key(self, name: str, key: str) -> None:
        """Give a job an explicit ping key (ValidationError if another job holds it)."""
        ...

    def project_ping_key(self) -> str:
        """The project-wide ping key for slug URLs, made on first use."""
        ...

    # the check schedule: which jobs can have changed health by now
    def due_jobs(self, *, now: float) -> list[str]:
        """Jobs whose next look (``set_next_check``) is due by ``now``, or unknown: every
        write that can move a job's deadline (a run recorded, started or finished, its
        settings saved) resets it, so that the scheduler's leader, on whichever replica,
        finds the jobs that changed through another process."""
        ...

    def set_next_checks(self, items: list[tuple[str, float | None]]) -> None: ...
    def set_next_check(self, job: str, at: float | None) -> None: ...


class RunStore(Protocol):
    def record_run(
        self, run: Run, *, now: float, owner: str | None = None, pending: bool = False
    ) -> bool:
        """Store a run as given; False if a run with that id already exists, unless that
        run still has an ``owner`` (its wrapper opened it and never closed it): then it is
        overwritten with this one. ``owner``: the wrapper process holding an open run (None
        once it is closed). ``pending``: the run's evaluation (assertions, alerts) is still
        to do (``pending_runs``)."""
        ...

    def owned_open_runs(self) -> list[tuple[Run, str]]:
        """Open runs that a wrapper holds, with its owner token (is it still alive?)."""
        ...

    def pending_runs(self, *, limit: int = 100) -> list[Run]:
        """Finished runs whose evaluation is still to do, oldest first, with output."""
        ...

    def claim_pending(self, run_id: str) -> bool:
        """Take a pending run's evaluation: True for exactly one caller. In the caller's
        transaction, so that an evaluation that fails or is killed leaves it pending."""
        ...

    def record_runs(self, runs: Iterable[Run], *, now: float) -> tuple[int, int]:
        """Bulk insert (import, spool replay). Returns (inserted, skipped)."""
        ...

    def import_rows(
        self, rows: list[tuple[Any, ...]], *, now: float, days: dict[str, set[int]] | None = None
    ) -> int:
        """`cronwatch import`'s bulk path: rows as ``run_row`` makes them, one transaction.
        Returns how many were new (idempotent by run id). ``days``: the UTC days
        (started_at / 86400) the rows start on, by job name, if the caller knows them."""
        ...

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
        ...

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
        merged: bool = False,
    ) -> Run:
        """Finish a run: the open one ``run_id`` names in (job, env) (its client rid, or its
        own id), or without ``run_id`` the newest open run of (job, env) that has no client
        rid; with none open, a synthetic already-finished run is recorded (started
        ``duration`` before ``now``). Never dropped, with one exception, at-least-once
        delivery: a finish with the rid of a finished run that repeats its outcome within
        ``core.runs.REPEAT_WINDOW`` (or any finish of a finished ULID rid) returns that
        run unchanged (so its ``ended_at`` is not ``now``: callers do not evaluate it
        again). Another outcome, or the same one later, is a new synthetic run.
        ``merged``: the output was captured as one stream (``Run.merged``).
        """
        ...

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
        ...

    def update_run(self, run: Run, *, now: float) -> None:
        """Overwrite a stored run's fields (status, times, output...)."""
        ...

    def close_open_run(self, run: Run, *, now: float) -> bool:
        """Store the end of a run that is still open (its status, ``ended_at``,
        ``duration``, ``exit_code``, ``signal``, ``message``): a conditional update, True
        for exactly one caller; False, and nothing written, when the run is no longer
        open (a ping on another replica finished it, another checker timed it out).
        PostgreSQL: ``UPDATE runs SET ... WHERE uid=%s AND status='running' RETURNING id``.
        """
        ...

    def get_run(self, run_id: str, *, output: bool = True) -> Run: ...
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
    ) -> list[Run]: ...

    def newest_runs(self) -> dict[str, Run]:
        """Every job's newest run (any status), by job name (the console's jobs page)."""
        ...

    def iter_runs(
        self, *, job: str | None = None, since: float | None = None, output: bool = True
    ) -> Iterator[Run]:
        """Every matching run, oldest first, streamed (export)."""
        ...

    def open_runs(self) -> list[Run]: ...
    def open_runs_of(self, job: str, env: str | None = None) -> list[Run]:
        """The job's open runs (of ``env`` if given), oldest first."""
        ...

    def last_run(
        self, job: str, *, statuses: Iterable[Status] | None = None, env: str | None = None
    ) -> Run | None: ...
    def newest_start(self, job: str, env: str | None = None) -> float | None:
        """Start time of the job's newest run (any status; of ``env`` if given), or None."""
        ...

    def recent_durations(self, job: str, n: int, env: str | None = None) -> list[tuple[float, str]]:
        """(duration, status) of the newest ``n`` finished runs (of ``env``), newest first."""
        ...

    def forget_run(self, run_id: str) -> None:
        """Delete a run (a disabled job's, which records nothing): its output and links
        too, its day's rollup recomputed. Nothing happens for an unknown id."""
        ...

    def set_crash_event(self, run_id: str, crash_event_id: str) -> None:
        """Link a run to a crash report (Loom's ``crash_event_id``); NotFound if no such run."""
        ...

    def crash_events(self, run_ids: list[str]) -> dict[str, str]:
        """The crash report ids linked to these runs (those that have one)."""
        ...

    # the server's ping writer: a whole batch of pings in a few statements (server/apply.py)
    def ping_job_id(self, name: str, *, now: float) -> int:
        """The job's row id (created if missing), from this connection's cache."""
        ...

    def has_open_run(self, jid: int, env: str) -> bool:
        """Whether a run without a client run id is open (what finish_run would close)."""
        ...

    def add_finished_runs(
        self, rows: list[tuple[Any, ...]], jids: Iterable[int], *, now: float
    ) -> None:
        """Insert already-finished runs without output: rows are (uid, job id, env, status,
        started_at, ended_at, duration, exit_code, host, message, source)."""
        ...

    def add_quick_rows(
        self,
        runs: list[tuple[Any, ...]],
        jids: Iterable[int],
        events: list[tuple[float, str, str]],
        *,
        now: float,
    ) -> None:
        """The ping writer's buffered rows: ``add_finished_runs`` then ``add_event_rows``,
        together (a backend may write them with one statement). May raise ``StaleCache``
        when the backend checks the writer's caches only now (``data_version``)."""
        ...

    # Whether the ping writer should write its buffered rows while it waits for the rest
    # of a batch (SQLite: the inserts overlap the wait) or only once, at the end (a
    # database server: each statement is a round trip and a fixed cost of its own).
    flush_early: bool


class StatsStore(Protocol):
    # The per-day rollup, written once for every backend (store/rollup.py); the contract
    # tests read and move its seal through it.
    rollup: Rollup

    def job_stats(
        self, job: str, *, since: float | None = None, env: str | None = None
    ) -> dict[str, Any]:
        """Counts by status, success rate, p50/p95/max/avg duration, last success/failure,
        current streak. Computed in the database: fast over a year of minutely runs. With
        ``env``: that environment's runs only (read from the runs themselves)."""
        ...

    def run_counts(self) -> dict[str, dict[str, int]]:
        """Stored runs of every job by status: ``{job: {status: n}}`` (zero counts left out)."""
        ...

    def jobs_last_finished(self) -> list[tuple[str, tuple[str, float, float | None] | None]]:
        """Every job by name, with (status, started_at, duration) of its newest finished
        run, or None (the /metrics gauges)."""
        ...


class AlertStore(Protocol):
    def get_alert_state(self, job: str, env: str = "") -> dict[str, Any] | None:
        """The job's alert state (``alerting.AlertState.to_dict``), None before its first."""
        ...

    def set_alert_state(self, job: str, env: str, state: dict[str, Any]) -> None:
        """Store a state unconditionally (tests, repairs); evaluation uses the claim."""
        ...

    def read_alert_state(self, job: str, env: str = "") -> tuple[dict[str, Any] | None, int]:
        """The alert state and its version: 0 before the first state is stored; every
        stored state has a higher one (``claim_alert_state``)."""
        ...

    def claim_alert_state(self, job: str, env: str, state: dict[str, Any], *, version: int) -> bool:
        """Store ``state`` only if the stored version is still ``version`` (0: none is
        stored yet), bumping it: of several processes that read the same version, exactly
        one succeeds; the others get False, write nothing, and retry their transaction
        (``core.errors.LostClaim``). So a transition, with the incident and notifications
        it causes, happens once however many replicas evaluate the job at the same time.
        PostgreSQL: ``UPDATE alert_state SET state=%s, version=version+1 WHERE job_id=%s
        AND env=%s AND version=%s RETURNING version``, and for version 0 ``INSERT ... ON
        CONFLICT DO NOTHING RETURNING version``; the UPDATE waits for a concurrent
        writer of the row and then matches nothing, under READ COMMITTED as well."""
        ...

    def alert_summary(self, job: str, env: str = "") -> dict[str, Any] | None:
        """At least ``down``, ``fail_streak``, ``ok_streak`` and ``incident_open`` of the
        alert state (what ``checks.steady`` reads); a backend may read just those."""
        ...

    # the notification outbox
    def enqueue_notification(
        self,
        *,
        job: str,
        incident_id: int | None,
        kind: str,
        channel: str,
        payload: dict[str, Any],
        at: float,
    ) -> int: ...
    def due_notifications(self, *, now: float, limit: int = 50) -> list[dict[str, Any]]: ...
    def claim_notification(self, nid: int, *, attempts: int, now: float, lease: float) -> bool:
        """Take one delivery attempt (exactly one claimant wins)."""
        ...

    def finish_notification(
        self, nid: int, *, ok: bool, now: float, error: str = "", retry_at: float | None = None
    ) -> None: ...


class IncidentStore(Protocol):
    def open_incident(
        self, job: str, env: str, *, at: float, cause: str, run_id: str | None
    ) -> int:
        """A new open incident. At most one is open per (job, env): the database refuses a
        second one (a unique index over the open ones), as a StoreError."""
        ...

    def close_incident(self, job: str, env: str, *, at: float, run_id: str | None) -> int | None:
        """Close the open incident of (job, env): its id, or None when none was open (or
        another process closed it first: ``UPDATE ... WHERE closed_at IS NULL``)."""
        ...

    def current_incident(self, job: str, env: str = "") -> int | None: ...
    def list_incidents(
        self, *, job: str | None = None, limit: int = 50, open_only: bool = False
    ) -> list[dict[str, Any]]: ...
    def get_incident(self, incident_id: int) -> dict[str, Any]: ...


class EventStore(Protocol):
    def add_event(self, type: str, data: dict[str, Any], *, now: float) -> int:
        """Append to the event log; returns the event's (increasing) id."""
        ...

    def add_events(self, rows: list[tuple[float, str, str]]) -> None:
        """Append (at, type, data JSON) rows in order."""
        ...

    def add_event_rows(self, rows: list[tuple[float, str, str]]) -> None:
        """``add_events`` for the ping writer's batches."""
        ...

    def events_since(self, last_id: int, *, limit: int = 500) -> list[tuple[int, float, str, str]]:
        """(id, at, type, data JSON) of the events after ``last_id``, oldest first.

        Ids are global to the database (every replica, the wrapper and the CLI write the
        same log), so a stream resumes on any replica with ``Last-Event-ID``. They must
        become visible in id order: once an id is returned, no event with a smaller id
        may appear later (a reader would skip it). SQLite has one writer at a time, so
        its rowids are committed in order. PostgreSQL's identity ids are not: its backend
        stops before a missing id while a transaction that may hold it is still running
        (store/postgres/eventlog.py)."""
        ...

    def last_event_id(self) -> int:
        """The newest event's id: a stream that goes on from it misses nothing committed
        after the call returned (PostgreSQL waits, briefly, for the transactions that
        may hold smaller ids)."""
        ...


@runtime_checkable
class EventWaker(Protocol):
    """Optional (PostgreSQL): tells this process when any process committed events, so
    that its event streams need not wait for their next poll."""

    def listen_events(self, wake: Callable[[], None]) -> Closable:
        """Call ``wake`` (from another thread) after other processes' commits of events,
        until the returned object is closed."""
        ...


class Closable(Protocol):
    def close(self) -> None: ...


class TokenStore(Protocol):
    def create_token(
        self, name: str, *, read_only: bool, now: float, secret: str | None = None
    ) -> str:
        """A new API token (``secret``: one carried over from another system); only its
        sha256 is stored. Returned once."""
        ...

    def check_token(self, token: str) -> dict[str, Any] | None: ...
    def touch_token(self, name: str, *, now: float) -> None: ...
    def list_tokens(self) -> list[dict[str, Any]]: ...
    def delete_token(self, name: str) -> None: ...


class UserStore(Protocol):
    """People who sign in to the console, and their sessions. Passwords arrive hashed
    (app/users.py makes the hash); a session is named by the sha256 of its id."""

    def create_user(self, name: str, *, role: str, password_hash: str, now: float) -> None:
        """ValidationError if the name is taken."""
        ...

    def get_user(self, name: str) -> dict[str, Any] | None:
        """{name, role, password, created_at, last_login_at} or None."""
        ...

    def list_users(self) -> list[dict[str, Any]]:
        """Every user without the password hash, by name."""
        ...

    def set_user(
        self, name: str, *, role: str | None = None, password_hash: str | None = None
    ) -> None:
        """Change a user's role or password (NotFound if unknown). A new password ends
        the user's sessions."""
        ...

    def delete_user(self, name: str) -> None:
        """The user and their sessions (NotFound if unknown)."""
        ...

    def count_users(self) -> int: ...
    def create_session(
        self, digest: str, user: str, *, csrf: str, now: float, expires_at: float
    ) -> None: ...
    def get_session(self, digest: str, *, now: float) -> dict[str, Any] | None:
        """{user, role, csrf, created_at, expires_at} of a live session, else None."""
        ...

    def delete_session(self, digest: str) -> None: ...
    def delete_expired_sessions(self, *, now: float) -> int: ...
    def add_sign_in_failure(
        self, keys: list[tuple[str, str]], *, at: float, forget_before: float
    ) -> None:
        """Record a failed sign-in under each (kind, value) key (kind: "user" or
        "address"), and forget every failure older than ``forget_before``."""
        ...

    def sign_in_failures(
        self, keys: list[tuple[str, str]], *, since: float
    ) -> dict[tuple[str, str], tuple[int, float]]:
        """For each key with failures since ``since``: (how many, when the oldest was)."""
        ...


class MetaStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def add_meta(self, key: str, value: str) -> str:
        """``value`` stored under ``key`` unless one is there already: the value kept."""
        ...


class LeaderStore(Protocol):
    """A lease that one process at a time holds per ``role`` (the server's scheduler:
    missed and timed-out runs). ``holder``: the replica's id, unique per process.

    Call these on a store of their own (not the writer's): a backend may tie the lease
    to a connection. SQLite keeps a row per role with an expiry (``now + ttl``, wall
    clock), taken by a conditional update; when the holder dies, another process takes
    the lease once it has expired. PostgreSQL uses ``pg_try_advisory_lock`` on a
    connection the store opens for the role (never a pooled one) and keeps open while
    it holds the lock: the lock lasts as long as the session, and the server drops it
    when the holder's connection ends (a killed process at once; a dead host within
    about ``ttl`` + 3 s, by keepalives), so another process takes it at its next try.
    ``renew_lead`` checks that the session still holds it (a lost connection: False,
    never a silent reconnect), and ``lead_holder`` reads ``pg_locks`` joined with
    ``pg_stat_activity`` (the holder id as ``application_name``, at most 63 ASCII
    bytes). SQLite: at most one holder for ``ttl`` after its last successful acquire or
    renew, as its own clock counts. PostgreSQL: one session holds the lock; a holder
    whose session the server ended while its host still runs (``pg_terminate_backend``,
    a failover) learns it at its next renew, so two processes may act for up to that
    long (the claims, conditional updates, keep it harmless); a holder cut off from the
    server stops acting (its renewals fail) before keepalives end its session."""

    def acquire_lead(self, role: str, holder: str, *, now: float, ttl: float) -> bool:
        """Take the lease if it is free or expired (or already ``holder``'s): True if
        ``holder`` holds it now, until ``now + ttl``."""
        ...

    def renew_lead(self, role: str, holder: str, *, now: float, ttl: float) -> bool:
        """Extend ``holder``'s lease to ``now + ttl``; False if it holds it no longer
        (another process took it over): then it must stop acting as the leader."""
        ...

    def release_lead(self, role: str, holder: str) -> None:
        """Give the lease up (a clean shutdown): another process takes it at once."""
        ...

    def lead_holder(self, role: str, *, now: float) -> str | None:
        """Who holds the lease now (None: nobody, or it expired)."""
        ...


class AlertingStore(Protocol):
    """What alerts are sent with, configured once: notification lists (a name for several
    channels), integrations (the SMTP server, Slack webhooks, ...), and the keys of jobs
    in another system's spelling (Cronitor's monitor keys) with that system's attributes."""

    def notification_lists(self) -> dict[str, list[str]]: ...
    def set_notification_list(self, name: str, channels: list[str]) -> None: ...
    def delete_notification_list(self, name: str) -> None:
        """NotFound when there is no such list."""
        ...

    def integrations(self) -> dict[str, dict[str, str]]: ...
    def set_integration(self, name: str, config: dict[str, str]) -> None: ...
    def delete_integration(self, name: str) -> None:
        """NotFound when it is not configured."""
        ...

    def set_project_ping_key(self, key: str) -> None:
        """Use ``key`` as the project ping key (a key carried over from another system)."""
        ...

    def set_job_key(self, name: str, key: str, attrs: dict[str, Any]) -> None:
        """Keep another system's key of a job and its attributes (name, note, type)."""
        ...

    def job_keys(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every job's key in another system's spelling: job name -> (key, attributes)."""
        ...


class Maintenance(Protocol):
    """Housekeeping beside a busy writer (SQLite: WAL checkpoints; others: nothing)."""

    def committed(self) -> None: ...
    def stop(self) -> None: ...


class BatchWriter(Protocol):
    """What the server's group commit (server/ingest.py) needs of its connection."""

    def changes(self) -> int:
        """Rows changed by this connection so far (an op that changed none can fail alone)."""
        ...

    def in_transaction(self) -> bool: ...
    def savepoint(self) -> None: ...
    def rollback_to_savepoint(self) -> None: ...
    def release_savepoint(self) -> None: ...
    def data_version(self) -> int:
        """Changes when ANOTHER connection committed: caches may be stale. Read inside
        the writer's transaction; with several replicas it is what keeps a replica's
        caches (jobs, alert states: the quick path of a steady ping) from missing what
        another replica changed, so a backend without SQLite's PRAGMA needs an
        equivalent (a counter every write bumps, or one raised by a notification). For
        the ping writer's store (``writer_maintenance``) a backend may count only the
        changes to what the writer caches, and may make the look with the batch's
        writes, raising ``StaleCache`` there (PostgreSQL: ``cache_epoch``)."""
        ...

    def writer_maintenance(self) -> Maintenance:
        """Set this connection up as the long-lived writer; the housekeeping to run beside
        it (``committed()`` after each commit, ``stop()`` at the end)."""
        ...


class Store(
    JobStore,
    RunStore,
    StatsStore,
    AlertStore,
    IncidentStore,
    EventStore,
    TokenStore,
    UserStore,
    MetaStore,
    AlertingStore,
    BatchWriter,
    LeaderStore,
    Protocol,
):
    """A whole store: every concern, plus its lifecycle and transactions."""

    url: str

    def close(self) -> None: ...
    def set_timeout(self, seconds: float) -> None:
        """How long this connection's next writes wait for another writer before StoreBusy
        (the wrapper keeps one connection from a run's start to its end, and waits less
        at the start)."""
        ...

    def transaction(self) -> Any:
        """Context manager: store writes inside it share one transaction (group commit)."""
        ...

    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> None: ...
