"""The wrapper's record of a run: opened right after the spawn, closed after the exit.

The run is written twice: open (``running``, naming this process so that `check` can tell
later if it was killed) as soon as the child has started, and finished once it has
exited, marked pending its evaluation. Everything else (merging the spool, assertions,
alerts, notifications, the dashboard) is the post-run step (wrapper/postrun.py): a
detached process, so that cron never waits for it, or, where a detached process would be
killed with the rest of the run (a systemd service), the same step before exit within a
small time budget. Whatever fails here, the run is spooled and one warning line goes to
stderr; the job's exit code has been decided already and is never changed here.
"""

from __future__ import annotations

import os
import sys
import time

from cronwatch.core.model import Run, Status, env_key
from cronwatch.system import data_dir, default_db_path, user, warn

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from cronwatch.store.interface import Store
    from cronwatch.wrapper.options import Options, Result

# Seconds the open record waits for a locked database (on its thread: nothing else
# waits). Short, because a short job's end waits for it, within its own ~1 s.
START_TIMEOUT = 0.2


def _db_timeout() -> float:
    """Seconds the final record waits for a locked database before the run is spooled
    ($CRONWATCH_DB_TIMEOUT, default 1: cron waits for our exit, and the spool loses
    nothing). A bad value must not lose the run: it falls back to the default (with a
    warning)."""
    return _seconds("CRONWATCH_DB_TIMEOUT", 1.0, "1")


def _seconds(name: str, default: float, example: str) -> float:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 86400:  # also rejects nan and inf
        warn(f"ignoring {name}={text!r}: expected seconds, such as {example}")
        return default
    return value


def _join(argv: list[str]) -> str:
    """The command line as a shell would take it back (shlex.join, without importing shlex
    and re on every wrapped run)."""
    safe = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")
    return " ".join(
        a if a and all(c in safe for c in a) else "'" + a.replace("'", "'\"'\"'") + "'"
        for a in argv
    )


def _command(o: Options) -> str:
    # argv may hold bytes that are not UTF-8 (surrogate-escaped): store them visibly
    return _join(o.command).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
        command=_command(o),
        env=env_key(o.env),
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


# The open record's thread, as a lock it holds until done; and the connection it opened,
# kept for the end (one open and one close a run: the last close checkpoints the WAL).
_opening: list[object] = []
_kept: list[Store] = []


def _db_path(o: Options) -> str:
    """The run's database, resolved once: the config file's [database] is read once a run,
    and the open record and the finished run go to the same place."""
    if not o.db:
        o.db = default_db_path()
    return o.db


def on_start(o: Options, res: Result) -> None:
    """Right after the spawn: give the run its id, put it on record as open (on a thread,
    so that the wrapper is back relaying output and sees the child's exit at once, and
    a short job's duration is not ours), send the start ping. Never raises."""
    from cronwatch.core.model import new_run_id
    from cronwatch.wrapper.options import remote_wanted

    res.run_id = new_run_id(res.started_at)
    remote = remote_wanted(o)
    if o.local or not remote:
        if not _on_server(_db_path(o)):
            _load_sqlite()  # not on the thread: it swaps functools in sys.modules for a moment
            _on_thread(lambda: _open_local(o, res), instead=True)
        else:  # without a thread, the run is on record when it ends
            _on_thread(lambda: _open_on_server(o, res), instead=False)
    if remote:
        from cronwatch.remote.hooks import on_start as remote_start

        remote_start(o, res.run_id, res.started_at)


def _on_thread(work: Callable[[], None], *, instead: bool) -> None:
    """Run ``work`` on a thread that the end waits for (``_opening``); when no thread is
    to be had, here ``instead`` (or not at all)."""
    import _thread  # the C module: `threading` costs imports that this does not need

    done = _thread.allocate_lock()
    done.acquire()

    # The thread holds the GIL while it imports; the wrapper's loop, woken by the
    # child's exit or output, should get it back at once rather than after 5 ms.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)

    def run() -> None:
        try:
            work()
        finally:
            sys.setswitchinterval(interval)
            done.release()

    try:
        _thread.start_new_thread(run, ())
        _opening.append(done)
    except RuntimeError:
        sys.setswitchinterval(interval)
        done.release()
        if instead:
            work()


def _open_run(o: Options, res: Result) -> Run:
    """The run as it is on record while the job runs (its end replaces it)."""
    return Run(id=res.run_id, job=o.name, started_at=res.started_at, status=Status.RUNNING,
               host=os.uname().nodename, user=user(), command=_command(o), env=env_key(o.env),
               source="wrapper")  # fmt: skip


def _open_local(o: Options, res: Result) -> None:
    run = _open_run(o, res)
    try:
        _load_sqlite()
        from cronwatch.store import open_store
        from cronwatch.system import process_token

        store = open_store(_db_path(o), timeout=START_TIMEOUT)
    except Exception:
        return  # unusable: the end records the whole run, or spools it and says why
    try:
        store.record_run(run, now=time.time(), owner=process_token(o.timeout))
    except Exception:
        pass  # locked: the same
    _kept.append(store)


def _open_on_server(o: Options, res: Result) -> None:
    """A database server (PostgreSQL): the open run goes to the spool and a detached
    post-run step puts it on record (running, its owner this wrapper: a hung run times
    out, an abandoned one is closed by `check`), as the end's step does the finished run.
    The wrapper imports no driver and waits for no connection. Never raises: the end
    records the whole run anyway."""
    try:
        from cronwatch.system import process_token
        from cronwatch.wrapper import spool

        db_path = _db_path(o)
        spool.spool_run(db_path, _open_run(o, res), owner=process_token(o.timeout))
        _spawn_detached(db_path, None)
    except Exception:
        pass


def after_run(o: Options, res: Result, *, own_process: bool = False) -> None:
    """Record locally and/or report to the server; never raises, never changes the exit.

    ``own_process``: this is a wrapper process of its own, which a post-run step before
    exit may end (with the job's exit code) when it outlasts its budget."""
    from cronwatch.wrapper.options import remote_wanted

    run = build_run(o, res)
    remote = remote_wanted(o)
    if o.local or not remote:
        if not o.local:
            warn("--no-local needs a server (--server/--key or CRONWATCH_URL/CRONWATCH_KEY); "
                 "recorded locally")  # fmt: skip
        db_path = _db_path(o)
        record_local(db_path, run, page=dashboard_path(o, db_path), leave_open=True,
                     exit_code=res.wrapper_exit if own_process else None)  # fmt: skip
    if remote:
        from cronwatch.remote.hooks import on_finish

        on_finish(o, run, res)


def record_local(
    db_path: str,
    run: Run,
    *,
    page: str | None,
    warn: Callable[[str], None] = warn,
    leave_open: bool = False,
    exit_code: int | None = None,
) -> None:
    """Record a finished run in the local database (closing its open record, if any),
    pending its evaluation, or spool it when that fails; then the post-run step. Every
    local path (the wrapper, the SDK without a server) records through here. Never
    raises: each failure is one ``warn`` line, and a run that could not be stored is in
    the spool.

    ``leave_open``: the process ends right after (the wrapper, which skips the
    interpreter's teardown): the connection is left to the exit, without the WAL
    checkpoint and its fsync that closing the last connection makes; the post-run step's
    connection, or the next, checkpoints.

    ``exit_code``: the wrapper's; given, a post-run step before exit that outlasts its
    budget ends the process with it (see post_run)."""
    if _on_server(db_path):
        for done in _opening:  # the open run's file first: no half-written file at exit
            done.acquire(timeout=1.0)  # type: ignore[attr-defined]
        _spool_for_server(db_path, run, warn)
        post_run(db_path, page, stored=True, warn=warn, exit_code=exit_code)
        return
    timeout = _db_timeout()
    t0 = time.monotonic()
    for done in _opening:  # the open record first (its wait for a lock counts in ours)
        done.acquire(timeout=timeout)  # type: ignore[attr-defined]
    store = _kept.pop() if _kept else None
    stored = True
    try:
        left = max(0.0, timeout - (time.monotonic() - t0))
        if store is None:
            _load_sqlite()
            from cronwatch.store import open_store

            store = open_store(db_path, timeout=left)
        else:
            store.set_timeout(left)
        try:
            store.record_run(run, now=time.time(), pending=True)
        finally:
            if leave_open:
                _kept.append(store)  # referenced until the exit: a dropped one is closed
            else:
                store.close()
    except Exception as e:
        stored = False
        try:
            from cronwatch.wrapper import spool

            where = spool.spool_run(db_path, run)
            warn(f"{e}; run {run.id} spooled to {where}")
        except OSError as e2:
            warn(f"{e}; and the run could not be spooled either: {e2}")
    post_run(db_path, page, stored=stored, warn=warn, exit_code=exit_code)


def _on_server(db_path: str) -> bool:
    from cronwatch.store import is_server_url

    return is_server_url(db_path)


def _spool_for_server(db_path: str, run: Run, warn: Callable[[str], None]) -> None:
    """A database server (PostgreSQL): the run goes to the spool, a local file, and the
    post-run step merges it (detached: nobody waits for the server; before exit: within
    its budget). The wrapper never imports the driver, never waits for a connection, and
    the run is on disk before the job's exit code is returned."""
    from cronwatch.wrapper import spool

    try:
        spool.spool_run(db_path, run)
    except OSError as e:
        warn(f"run {run.id} could not be spooled for {_redacted(db_path)}: {e}")


def _redacted(url: str) -> str:
    head, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{head}{sep}{userinfo.split(':', 1)[0]}@{host}" if at else url


def postrun_mode() -> str:
    """``detached`` or ``before-exit`` ($CRONWATCH_POSTRUN; by default before exit only
    where a detached process would be killed with the run: see system.in_service_unit)."""
    value = os.environ.get("CRONWATCH_POSTRUN", "")
    if value in ("detached", "before-exit"):
        return value
    if value:
        warn(f"ignoring CRONWATCH_POSTRUN={value!r}: expected detached or before-exit")
    from cronwatch.system import in_service_unit

    return "before-exit" if in_service_unit() else "detached"


def post_run(
    db_path: str,
    page: str | None,
    *,
    stored: bool,
    warn: Callable[[str], None] = warn,
    exit_code: int | None = None,
) -> None:
    """Start the post-run step: detached, or here within $CRONWATCH_POSTRUN_BUDGET seconds
    (default 1). What it leaves undone stays recorded (a pending run, a pending
    notification, the page's ``.pending`` marker) for the next run, `check` or the server.

    ``exit_code``: the wrapper's own process ends with it once the budget (and a margin)
    is over, whatever the step is waiting for."""
    if page is not None:
        page = _request_page(page, warn)
    if postrun_mode() == "detached":
        try:
            _spawn_detached(db_path, page)
            return
        except OSError as e:
            warn(f"could not start the post-run step ({e}); running it now")
    elif not stored:
        return  # the database is unusable right now: the next run or `check` merges the spool
    from cronwatch.wrapper.postrun import run_steps

    budget = _seconds("CRONWATCH_POSTRUN_BUDGET", 1.0, "1")
    done = None if exit_code is None else _deadline(budget + POSTRUN_MARGIN, exit_code, warn)
    try:
        run_steps(db_path, page, budget=budget, warn=warn)
    finally:  # a step that raised must not leave the watchdog to end what follows it
        if done is not None:
            done.release()


# The budget is checked between the post-run step's parts, and a database can hold one
# forever (a server that accepts the connection and never answers: no timeout of the
# driver's covers that). Past the budget and this margin the wrapper exits anyway.
POSTRUN_MARGIN = 0.5


def _deadline(seconds: float, code: int, warn: Callable[[str], None]) -> Any:
    """A lock to release within ``seconds``, or the process exits with ``code`` then.
    Nothing is lost: the run is recorded or spooled already, and each part of the step
    is committed as it is done, so the next run, `check` or the server finishes it."""
    import _thread

    done = _thread.allocate_lock()
    done.acquire()

    def watch() -> None:
        if done.acquire(timeout=seconds):
            return
        warn(f"the post-run step outlasted its {seconds - POSTRUN_MARGIN:g}s budget; "
             "exiting: the next run or `cronwatch check` finishes it")  # fmt: skip
        try:
            sys.stdout.flush()
        except Exception:
            pass
        os._exit(code)

    try:
        _thread.start_new_thread(watch, ())
    except RuntimeError:
        return None
    return done


def _request_page(page: str, warn: Callable[[str], None]) -> str | None:
    """Drop the page's ``.pending`` marker (regen.py coalesces requests with it), making
    its directory if missing; None (with a warning) if that cannot be done."""
    page = os.path.abspath(page)
    try:
        os.makedirs(os.path.dirname(page), exist_ok=True)
        os.close(os.open(page + ".pending", os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as e:
        warn(f"dashboard not written: {e}")
        return None
    return page


def _spawn_detached(db_path: str, page: str | None) -> None:
    """``python -m cronwatch.wrapper.postrun DB [PAGE]`` in a session of its own (a
    process group kill of the run does not reach it), stdio on /dev/null (cron mails what
    the job's stdout gets and waits for that pipe to close): the wrapper does not wait."""
    devnull = os.devnull
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
    ]
    target = db_path if _on_server(db_path) else os.path.abspath(db_path)
    argv = [sys.executable, "-m", "cronwatch.wrapper.postrun", target]
    if page is not None:
        argv.append(page)
    import _signal as signal  # the C module: `signal` would import enum and more

    # Not the wrapper's mask, which blocks the signals it forwards while the job runs
    # (runner._Forwarder): kept across exec, only SIGKILL would stop this step. Nor an
    # ignored SIGTERM or SIGHUP inherited from the wrapper's own parent.
    stoppers = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
    os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions, setsid=True,
                   setsigmask=(), setsigdef=stoppers)  # fmt: skip


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
