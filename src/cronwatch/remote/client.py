"""The Python SDK: report runs of code that is not wrapped by ``cronwatch run``.

    from cronwatch import finish_job, monitor, start_job

    handle = start_job("daily-report")
    ...
    finish_job(handle, "success")           # or "failed", message="..."

    with monitor("daily-report"):           # success, or failed with the exception's text
        ...                                 # (the exception is always re-raised)

    @monitor("nightly-sync", schedule="0 3 * * *")
    async def sync() -> None: ...

Settings come from the arguments, else $CRONWATCH_URL, $CRONWATCH_KEY (the project ping
key: the job name picks the job, created on first use), $CRONWATCH_TOKEN, $CRONWATCH_TIMEOUT,
else the ``[server]`` table of the config file. With no server the run goes to the local
database, so the same code works on a laptop and in production. Pings go out at once (no
batching) through a ``Transport`` (urllib.request by default, stdlib only); one that cannot
be delivered within the timeout waits in the outbox. A failure of ours is logged (logger
``cronwatch``), never raised into the job. See docs/sdk.md.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Job, Run, Status, new_run_id, validate_name
from cronwatch.core.settings import normalize_all, timed_pause
from cronwatch.remote import outbox
from cronwatch.remote.ping import Ping, api_base
from cronwatch.remote.transport import Settings, Transport, upsert_job
from cronwatch.store import open_store
from cronwatch.system import default_db_path, user
from cronwatch.wrapper.record import dashboard_path, record_local

__all__ = ["JobHandle", "Monitor", "Settings", "Transport", "finish_job", "monitor", "start_job"]

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("cronwatch")
_declared: set[tuple[str, str, str]] = set()


@dataclass(slots=True)
class JobHandle:
    """A run that has started; give it to ``finish_job``."""

    name: str
    run_id: str
    started_at: float  # seconds since the epoch
    settings: Settings
    db: str | None = None
    env: str = ""
    finished: bool = False
    clock: float = field(default_factory=time.monotonic, repr=False)


def start_job(
    name: str, *, server: str | None = None, key: str | None = None, token: str | None = None,
    db: str | None = None, env: str = "", timeout: float | None = None,
    schedule: str | None = None, tz: str | None = None, grace: float | str | None = None,
    transport: Transport | None = None,
) -> JobHandle:  # fmt: skip
    """Start a run of job ``name`` and send its start ping now (or, with no server
    configured, prepare a local record). Raises ValidationError for a bad name; any other
    failure is logged (logger ``cronwatch``) and the ping kept in the outbox, never raised.

    ``schedule``/``tz``/``grace`` declare the job's settings: on the server (needs an API
    token: ``token=`` or $CRONWATCH_TOKEN) or, with no server, in the local database.
    """
    validate_name(name)
    declared = _job_settings(schedule, tz, grace)
    settings = Settings.resolve(server=server, key=key, token=token, timeout=timeout,
                                transport=transport)  # fmt: skip
    if settings.server and not settings.key:
        log.warning("%s: a server is set but no ping key (key= or $CRONWATCH_KEY): "
                    "recording locally", name)  # fmt: skip
        settings.server = ""
    now = time.time()
    h = JobHandle(name, new_run_id(now), now, settings, db=db, env=env)
    if declared:
        try:
            _declare(h, declared)
        except Exception as e:
            log.warning("settings of %s not saved: %s", name, e)
    if settings.server:
        try:
            _ping(h, "run")
        except Exception as e:
            log.warning("could not report the start of %s: %s", name, e)
    return h


def _job_settings(
    schedule: str | None, tz: str | None, grace: float | str | None
) -> dict[str, Any]:
    """The declared settings, validated (ValidationError names the bad one)."""
    given = {"schedule": schedule, "tz": tz, "grace": grace}
    return normalize_all({k: v for k, v in given.items() if v is not None})


def finish_job(
    handle: JobHandle, status: str = "success", message: str | None = None, *,
    output: str | bytes | None = None, exit_code: int | None = None,
) -> None:  # fmt: skip
    """Finish the run: ``status`` is "success" or "failed". Sends the ping now (or records
    the run locally). Never raises for a failure of its own; it logs and keeps the ping."""
    if status not in ("success", "failed"):
        raise ValidationError(f"invalid status {status!r}: expected 'success' or 'failed'")
    if handle.finished:
        log.warning("run %s of %s is already finished", handle.run_id, handle.name)
        return
    handle.finished = True
    duration = max(0.0, time.monotonic() - handle.clock)
    data = output.encode("utf-8", "surrogateescape") if isinstance(output, str) else output
    try:
        if handle.settings.server:
            if data is None and message:  # Healthchecks-style routes keep only the body
                data = message.encode()
            _ping(handle, "complete" if status == "success" else "fail", exit_code=exit_code,
                  duration=duration, message=message or "", body=data)  # fmt: skip
        else:
            _record(handle, status, message or "", data, exit_code, duration)
    except Exception as e:
        log.warning("could not report the end of %s: %s", handle.name, e)


def _ping(h: JobHandle, state: str, **fields: Any) -> None:
    s = h.settings
    p = Ping(server=s.server, key=s.key, state=state, rid=h.run_id, slug=h.name,
             dialect=s.dialect, env=h.env, at=time.time(), **fields)  # fmt: skip
    outcome, detail = outbox.submit(p, transport=s.transport, timeout=s.timeout)
    what = "start" if state == "run" else "finish"
    if outcome == "rejected":
        log.warning("%s refused the %s ping of %s (%s); kept aside in %s",
                    s.server, what, h.name, detail, outbox.directory())  # fmt: skip
    elif outcome != "sent":
        log.warning("%s ping of %s not delivered yet (%s); it waits in %s",
                    what, h.name, detail, outbox.directory())  # fmt: skip


def _record(
    h: JobHandle, status: str, message: str, output: bytes | None, exit_code: int | None,
    duration: float,
) -> None:  # fmt: skip
    run = Run(job=h.name, started_at=h.started_at, status=Status(status), id=h.run_id,
              ended_at=h.started_at + duration, duration=duration, exit_code=exit_code,
              stdout=output, host=os.uname().nodename, user=user(),
              command=" ".join(sys.argv), env=h.env, message=message, source="sdk")  # fmt: skip
    db_path = h.db or default_db_path()
    # The wrapper's own path: stored or spooled, the spool merged, alerts, the page.
    record_local(db_path, run, page=dashboard_path(None, db_path), warn=log.warning)


def _declare(h: JobHandle, settings: dict[str, Any]) -> None:
    """Create or update the job's settings, once per process."""
    clean = settings
    s = h.settings
    marker = (s.server or h.db or "", h.name, json.dumps(clean, sort_keys=True))
    if marker in _declared:
        return
    if not s.server:
        with open_store(h.db) as store:
            job = store.find_job(h.name) or Job(name=h.name, created_at=time.time())
            for k, v in clean.items():
                setattr(job, k, v)
            timed_pause(job, clean)
            store.save_job(job, now=time.time())
    elif not s.token:
        log.warning("%s: schedule= needs an API token (token= or $CRONWATCH_TOKEN) "
                    "to change the server's settings; not sent", h.name)  # fmt: skip
    else:
        upsert_job(s, api_base(s.server), h.name, clean)
    _declared.add(marker)


class Monitor:
    """``with monitor(name):`` / ``async with`` / ``@monitor(name)`` on sync and async
    functions. Success on a normal exit; failed with the exception's text on an error,
    which is always re-raised."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = validate_name(name)
        _job_settings(options.get("schedule"), options.get("tz"), options.get("grace"))
        self.options = options
        self._handles: list[JobHandle] = []

    def __enter__(self) -> JobHandle:
        h = start_job(self.name, **self.options)
        self._handles.append(h)
        return h

    def __exit__(self, et: object, e: BaseException | None, tb: object) -> Literal[False]:
        _finish_for(self._handles.pop(), e)
        return False

    async def __aenter__(self) -> JobHandle:
        import asyncio  # heavy, and `with monitor(...)` and a sync function never need it

        h = await asyncio.to_thread(start_job, self.name, **self.options)
        self._handles.append(h)
        return h

    async def __aexit__(self, et: object, e: BaseException | None, tb: object) -> Literal[False]:
        import asyncio  # as in __aenter__

        await asyncio.to_thread(_finish_for, self._handles.pop(), e)
        return False

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with Monitor(self.name, self.options):
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with Monitor(self.name, self.options):
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]


def monitor(
    name: str, *, server: str | None = None, key: str | None = None, token: str | None = None,
    db: str | None = None, env: str = "", timeout: float | None = None,
    schedule: str | None = None, tz: str | None = None, grace: float | str | None = None,
    transport: Transport | None = None,
) -> Monitor:  # fmt: skip
    """Monitor a block or a function as a run of job ``name`` (options as ``start_job``)::

    with monitor("daily-report"):
        build_report()

    @monitor("nightly-sync", schedule="0 3 * * *")
    async def sync() -> None: ...
    """
    options = {"server": server, "key": key, "token": token, "db": db, "env": env,
               "timeout": timeout, "schedule": schedule, "tz": tz, "grace": grace,
               "transport": transport}  # fmt: skip
    return Monitor(name, options)


def _finish_for(h: JobHandle, e: BaseException | None) -> None:
    if e is None or (isinstance(e, SystemExit) and e.code in (0, None)):
        finish_job(h, "success")
        return
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    finish_job(h, "failed", f"{type(e).__name__}: {e}".rstrip(": "), output=text)
