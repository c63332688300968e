"""After the child exits: record the run, replay the spool, refresh the dashboard.

Everything here may fail (locked, corrupt or read-only database, full disk, bad config);
whatever fails, the run is spooled and one warning line goes to stderr. The job's exit
code has already been decided by then and is never changed here.
"""

from __future__ import annotations

import os
import sys
import time

from cronwatch.core.model import Run, Status
from cronwatch.system import data_dir, default_db_path, user, warn
from cronwatch.wrapper import spool

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from collections.abc import Callable

    from cronwatch.wrapper.options import Options, Result


def _db_timeout() -> float:
    """Seconds to wait for a locked database ($CRONWATCH_DB_TIMEOUT, default 30).

    A bad value must not lose the run: it falls back to the default (with a warning)."""
    text = os.environ.get("CRONWATCH_DB_TIMEOUT", "")
    if not text:
        return 30.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 86400:  # also rejects nan and inf
        warn(f"ignoring CRONWATCH_DB_TIMEOUT={text!r}: expected seconds, such as 30")
        return 30.0
    return value


def _join(argv: list[str]) -> str:
    """The command line as a shell would take it back (shlex.join, without importing shlex
    and re on every wrapped run)."""
    safe = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")
    return " ".join(
        a if a and all(c in safe for c in a) else "'" + a.replace("'", "'\"'\"'") + "'"
        for a in argv
    )


def build_run(o: Options, res: Result) -> Run:
    if res.timed_out:
        status = Status.TIMEOUT
    elif res.exit_code == 0 and res.signal is None:
        status = Status.SUCCESS
    else:
        status = Status.FAILED
    message = ""
    if res.spawn_error:
        message = res.spawn_error
    elif res.timed_out:
        message = f"killed after the {o.timeout:g}s timeout"
    elif res.signal is not None:
        message = f"killed by signal {res.signal}"
    return Run(
        id=res.run_id,  # shared with the server when reporting remotely ("" = make one)
        job=o.name,
        started_at=res.started_at,
        status=status,
        ended_at=res.ended_at,
        duration=res.duration,
        exit_code=res.exit_code,
        signal=res.signal,
        stdout=res.stdout,
        stderr=res.stderr,
        merged=res.merged,
        host=os.uname().nodename,
        user=user(),
        # argv may hold bytes that are not UTF-8 (surrogate-escaped): store them visibly
        command=_join(o.command)
        .encode("utf-8", "surrogateescape")
        .decode("utf-8", "backslashreplace"),
        env=o.env,
        message=message,
        source="wrapper",
    )


def dashboard_path(o: Options | None, db_path: str) -> str | None:
    """Where the static dashboard goes; None when turned off."""
    value = (o.dashboard if o is not None else None) or os.environ.get("CRONWATCH_DASHBOARD")
    if (o is not None and o.no_dashboard) or value in ("off", "none", "0"):
        return None
    if value:
        return value
    if db_path.startswith("sqlite://"):
        db_path = db_path[len("sqlite://") :]
    elif "://" in db_path:  # a database server: the default data directory, not ./postgresql:
        return os.path.join(data_dir(), "dashboard.html")
    return os.path.join(os.path.dirname(os.path.abspath(db_path)), "dashboard.html")


def after_run(o: Options, res: Result) -> None:
    """Record locally and/or report to the server; never raises, never changes the exit."""
    from cronwatch.wrapper.options import remote_wanted

    run = build_run(o, res)
    remote = remote_wanted(o)
    if o.local or not remote:
        if not o.local:
            warn("--no-local needs a server (--server/--key or CRONWATCH_URL/CRONWATCH_KEY); "
                 "recorded locally")  # fmt: skip
        db_path = o.db or default_db_path()
        record_local(db_path, run, page=dashboard_path(o, db_path), config=o.config)
    if remote:
        from cronwatch.remote.hooks import on_finish

        on_finish(o, run, res)


def record_local(
    db_path: str,
    run: Run,
    *,
    page: str | None,
    config: str | None = None,
    warn: Callable[[str], None] = warn,
) -> None:
    """Record a finished run in the local database, or spool it when that fails; then merge
    earlier spooled runs, evaluate the job's alerts and refresh the page. Every local path
    (the wrapper, the SDK without a server) records through here. Never raises: each
    failure is one ``warn`` line, and a run that could not be stored is in the spool."""
    now = time.time()
    try:
        _load_sqlite()
        from cronwatch.store import open_store

        store = open_store(db_path, timeout=_db_timeout())
        try:
            store.record_run(run, now=now)
        except BaseException:
            store.close()
            raise
    except Exception as e:
        try:
            where = spool.spool_run(db_path, run)
            warn(f"{e}; run {run.id} spooled to {where}")
        except OSError as e2:
            warn(f"{e}; and the run could not be spooled either: {e2}")
        return
    inline = page is not None and os.environ.get("CRONWATCH_DASHBOARD_SYNC") == "1"
    try:
        try:
            if spool.has_spooled(db_path):
                spool.replay(store, db_path, now)
        except Exception as e:  # they stay in the spool for the next run
            warn(f"spooled runs not merged yet: {e}")
        _evaluate(store, run, now, config, warn)
        if page is not None and inline:
            _dashboard(db_path, page, now, warn, store)
    finally:
        store.close()
    if page is not None and not inline:  # after the close: the renderer never competes
        _dashboard(db_path, page, now, warn)  # with our last writes


def _load_sqlite() -> None:
    """Import SQLite's C module for this one-run process without its statement cache.

    ``_sqlite3`` imports ``functools`` (and with it ``collections``, ``operator``,
    ``reprlib``, ``keyword``...) only to give each connection an ``lru_cache`` of prepared
    statements: 2.5-3 ms of CPU on every wrapped run (benchmarks/README.md), for one
    connection that runs each of its few statements once or twice. With a no-op
    ``lru_cache`` in place while the module initialises, statements are prepared at each
    use instead. The stand-in is removed right after, so anything that imports
    ``functools`` later gets the real one. Only the wrapper's process does this: the
    server, ``import`` and the CLI import ``_sqlite3`` as usual and keep the cache.
    """
    if "_sqlite3" in sys.modules or "functools" in sys.modules:
        return
    stub = type(sys)("functools")
    stub.lru_cache = _no_statement_cache  # type: ignore[attr-defined]
    sys.modules["functools"] = stub
    try:
        import _sqlite3  # noqa: F401
    except ImportError:
        pass  # open_store reports it
    finally:
        if sys.modules.get("functools") is stub:
            del sys.modules["functools"]


def _no_statement_cache(maxsize: int = 128) -> object:
    # _sqlite3 calls lru_cache(maxsize)(connection) and then cache(sql) for a statement;
    # the connection itself, called with sql, prepares one.
    return lambda connection: connection


def _evaluate(
    store: object, run: Run, now: float, config: str | None, warn: Callable[[str], None]
) -> None:
    """Alert evaluation of the run's job; a failure is one warning."""
    try:
        from cronwatch.app import evaluate as checks

        checks.after_run(store, run, now=now, config=config)
    except Exception as e:
        warn(f"alert evaluation failed: {e}")


def _dashboard(
    db_path: str, page: str, now: float, warn: Callable[[str], None], store: object | None = None
) -> None:
    """Regenerate the page: with ``store``, inline (CRONWATCH_DASHBOARD_SYNC=1, handy when
    debugging); else by a detached process, so that the job's scheduler does not wait for
    it. A failure is one warning."""
    try:
        if store is not None:
            from cronwatch.app.dashboard import write_dashboard

            write_dashboard(store, page, now=now)  # type: ignore[arg-type]
        else:
            from cronwatch.app.regen import request

            request(os.path.abspath(db_path), os.path.abspath(page))
    except Exception as e:
        warn(f"dashboard not written: {e}")
