"""After the child exits: record the run, replay the spool, refresh the dashboard.

Everything here may fail (locked, corrupt or read-only database, full disk, bad config);
whatever fails, the run is spooled and one warning line goes to stderr. The job's exit
code has already been decided by then and is never changed here.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import sys
import time
from typing import TYPE_CHECKING

from . import spool
from ._utils import default_db_path
from .models import Run, Status

if TYPE_CHECKING:
    from .runner import Options, Result

DB_TIMEOUT = float(os.environ.get("CRONWATCH_DB_TIMEOUT", "30"))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


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
        job=o.name,
        started_at=res.started_at,
        status=status,
        ended_at=res.ended_at,
        duration=res.duration,
        exit_code=res.exit_code,
        signal=res.signal,
        stdout=res.stdout,
        stderr=res.stderr,
        host=socket.gethostname(),
        user=_user(),
        command=shlex.join(o.command),
        env=o.env,
        message=message,
        source="wrapper",
    )


def dashboard_path(o: Options | None, db_path: str) -> str | None:
    """Where the static dashboard goes; None when turned off."""
    value = (o.dashboard if o is not None else None) or os.environ.get("CRONWATCH_DASHBOARD")
    if (o is not None and o.no_dashboard) or value in ("off", "none", "0"):
        return None
    return value or os.path.join(os.path.dirname(os.path.abspath(db_path)), "dashboard.html")


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"cronwatch: warning: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def after_run(o: Options, res: Result) -> None:
    run = build_run(o, res)
    db_path = o.db or default_db_path()
    now = time.time()
    try:
        from .store import open_store

        store = open_store(db_path, timeout=DB_TIMEOUT)
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
    try:
        if spool.has_spooled(db_path):
            spool.replay(store, db_path, now)
        _after_record(store, o, run, db_path, now)
    except Exception as e:
        warn(str(e))
    finally:
        store.close()


def _after_record(store: object, o: Options, run: Run, db_path: str, now: float) -> None:
    """Post-run hooks: alert evaluation and the dashboard. Each failure is one warning."""
    try:
        from . import checks

        checks.after_run(store, run, now=now, config=o.config)
    except Exception as e:
        warn(f"alert evaluation failed: {e}")
    path = dashboard_path(o, db_path)
    if path is not None:
        try:
            from .dashboard import write_dashboard

            write_dashboard(store, path, now=now)  # type: ignore[arg-type]
        except Exception as e:
            warn(f"dashboard not written: {e}")
