"""Loom's cron monitoring API (``/api/crons``): monitors, check-ins, stats, in Loom's words.

A thin adapter: Loom's fields are mapped onto the one settings schema (core/settings.py,
normalised by ``api.check_settings``) and its check-ins onto the run semantics every
ingest path shares (``runs_api``). Nothing is decided here that /api/v1 decides otherwise.

    Loom                      cronwatch
    monitor slug / name       job name / ``title``
    schedule cron|interval    ``schedule`` ("0 0 * * *" | "every 30m")
    timezone                  ``tz``
    checkin_margin_minutes    ``grace`` (seconds)
    max_runtime_minutes       ``max_runtime`` (seconds)
    environments              ``environments`` ("production": the default one)
    status active|paused|disabled   ``paused`` / ``disabled``
    check-in in_progress|ok|error|missed|timeout   run running|success|failed|missed|timeout

The event stream (``/api/crons/stream``) is the server's one broadcaster in Loom's
dialect (server/events.py: ``loom_frame``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from cronwatch.app.evaluate import describe
from cronwatch.core.errors import Conflict, NotFound, ValidationError
from cronwatch.core.model import (
    DEFAULT_ENV,
    ENV_PATTERN,
    NAME_PATTERN,
    NAME_RULE,
    RUN_ID_PATTERN,
    Job,
    Run,
    Status,
    env_key,
    env_label,
)
from cronwatch.core.schedule import parse_schedule
from cronwatch.core.settings import LINE_PATTERN
from cronwatch.core.values import iso
from cronwatch.server.api import ERRORS, PERIODS, check_settings, install_error_handlers
from cronwatch.server.api_models import RunCreate, RunPatch, integral
from cronwatch.server.auth import authorize
from cronwatch.server.runs_api import create_run_op, patch_run_op
from cronwatch.store.interface import Store

T = TypeVar("T")
# Loom keeps at most 10 KB of a check-in's output: its head and tail, and the line that
# says how much was cut in between (values.cap_bytes) within the 10 KB
OUTPUT_LIMIT = 10 * 1024 - 64
MINUTES_MAX = 525_600  # a year
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
BEARER = HTTPBearer(auto_error=False, description="a token from: cronwatch token create NAME")

# Loom's words for a run's status, both ways
CHECKIN_STATUS = {Status.RUNNING: "in_progress", Status.SUCCESS: "ok", Status.FAILED: "error",
                  Status.MISSED: "missed", Status.TIMEOUT: "timeout"}  # fmt: skip
RUN_STATUS = {v: k for k, v in CHECKIN_STATUS.items()}
CheckinStatus = Literal["in_progress", "ok", "error", "missed", "timeout"]
MonitorStatus = Literal["active", "paused", "disabled"]
MonitorHealth = Literal["healthy", "failing", "missed", "timeout", "unknown"]
Slug = Annotated[str, Path(pattern=NAME_PATTERN, description=NAME_RULE)]
EnvQuery = Annotated[
    str | None,
    Query(pattern=ENV_PATTERN, max_length=64,
          description=f"one environment's check-ins ('{DEFAULT_ENV}': those that name none)"),
]  # fmt: skip
Minutes = Annotated[int, Field(ge=1, le=MINUTES_MAX), BeforeValidator(integral)]
Margin = Annotated[int, Field(ge=0, le=MINUTES_MAX), BeforeValidator(integral)]
Millis = Annotated[int, Field(ge=0, le=10**12), BeforeValidator(integral)]
ExitCode = Annotated[int, Field(ge=-1000, le=1000), BeforeValidator(integral)]
# A time as RFC 3339 says (JSON Schema's date-time); one without an offset is UTC
IsoTime = Annotated[
    datetime, Field(strict=False, description="ISO 8601, such as 2026-01-18T12:00:00Z")
]


class CronSchedule(BaseModel):
    model_config = _STRICT
    type: Literal["cron"]
    expression: Annotated[str, Field(min_length=1, max_length=500)]


class IntervalSchedule(BaseModel):
    model_config = _STRICT
    type: Literal["interval"]
    minutes: Minutes


Schedule = Annotated[CronSchedule | IntervalSchedule, Field(discriminator="type")]


class MonitorPatch(BaseModel):
    """A monitor's fields; only those sent change."""

    model_config = _STRICT
    name: Annotated[str, Field(max_length=200, pattern=LINE_PATTERN)] | None = None
    schedule: Schedule | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    checkin_margin_minutes: Margin | None = None
    max_runtime_minutes: Minutes | None = None
    environments: (
        Annotated[list[Annotated[str, Field(pattern=ENV_PATTERN)]], Field(max_length=20)] | None
    ) = None
    status: MonitorStatus | None = None


class MonitorCreate(MonitorPatch):
    """A new monitor (``checkin_margin_minutes`` defaults to 5, as in Loom)."""

    slug: Annotated[str, Field(pattern=NAME_PATTERN, description=NAME_RULE)]
    schedule: Schedule | None = None


class CheckinCreate(BaseModel):
    """A check-in from an SDK: in_progress opens one, ok/error records a finished one."""

    model_config = _STRICT
    status: Literal["in_progress", "ok", "error"]
    started_at: IsoTime | None = None
    finished_at: IsoTime | None = None
    duration_ms: Millis | None = None
    exit_code: ExitCode | None = None
    output: Annotated[str, Field(max_length=1_000_000)] | None = None
    crash_event_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    environment: Annotated[str, Field(pattern=ENV_PATTERN)] | None = None


class CheckinPatch(BaseModel):
    """Finish a check-in (or amend a finished one)."""

    model_config = _STRICT
    status: Literal["ok", "error"] | None = None
    finished_at: IsoTime | None = None
    duration_ms: Millis | None = None
    exit_code: ExitCode | None = None
    output: Annotated[str, Field(max_length=1_000_000)] | None = None
    crash_event_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


def build_loom(server: Any) -> FastAPI:
    def auth(request: Request, _: Annotated[Any, Depends(BEARER)] = None) -> None:
        token = authorize(server, request.headers.get("authorization"),
                          write=request.method not in ("GET", "HEAD"))  # fmt: skip
        request.state.read_only = bool(token["read_only"])

    api = FastAPI(
        title="cronwatch: Loom's cron monitoring API", version="1",
        servers=[{"url": "/api/crons"}], openapi_url="/openapi.json", docs_url=None,
        redoc_url=None, dependencies=[Depends(auth)], responses=ERRORS,
    )  # fmt: skip
    install_error_handlers(api, server)
    reader: Store = server.reader

    async def write(op: Callable[[Store], T], touch: str | None = None) -> T:
        # a check-in may queue an alert: it goes out now
        result: T = await server.write(op, touch, deliver=True)
        return result

    def monitor(request: Request, job: Job, env: str | None = None) -> dict[str, Any]:
        return monitor_view(reader, job, base_url(request),
                            secrets=not getattr(request.state, "read_only", True), env=env)  # fmt: skip

    # --- monitors -------------------------------------------------------------------------
    @api.get("/monitors")
    async def list_monitors(
        request: Request,
        status: MonitorStatus | None = None,
        health: MonitorHealth | None = None,
        env: EnvQuery = None,
    ) -> dict[str, Any]:
        out = []
        for job in reader.list_jobs():
            m = monitor(request, job, env)
            if (status is None or m["status"] == status) and (
                health is None or m["health"] == health
            ):
                out.append(m)
        return {"monitors": out}

    @api.post("/monitors", status_code=201)
    async def create_monitor(request: Request, body: MonitorCreate) -> dict[str, Any]:
        fields = body.model_dump(exclude_unset=True)
        fields.setdefault("checkin_margin_minutes", 5)
        settings = check_settings(to_settings(fields))

        def op(store: Store) -> Job:
            if store.find_job(body.slug) is not None:
                raise Conflict(f"monitor {body.slug!r} already exists")
            return save(store, Job(name=body.slug), settings)

        return {"monitor": monitor(request, await write(op, body.slug))}

    @api.get("/monitors/{slug}")
    async def get_monitor(request: Request, slug: Slug, env: EnvQuery = None) -> dict[str, Any]:
        return {"monitor": monitor(request, reader.get_job(slug), env)}

    @api.patch("/monitors/{slug}")
    async def patch_monitor(request: Request, slug: Slug, body: MonitorPatch) -> dict[str, Any]:
        settings = check_settings(to_settings(body.model_dump(exclude_unset=True)))
        job = await write(lambda s: save(s, s.get_job(slug), settings), slug)
        return {"monitor": monitor(request, job)}

    @api.delete("/monitors/{slug}", status_code=204)
    async def delete_monitor(slug: Slug) -> Response:
        await write(lambda s: s.delete_job(slug), slug)
        reader.forget_job_ids()
        return Response(status_code=204)

    @api.post("/monitors/{slug}/pause")
    async def pause(request: Request, slug: Slug) -> dict[str, Any]:
        job = await write(lambda s: save(s, s.get_job(slug), {"paused": True}), slug)
        return {"monitor": monitor(request, job)}

    @api.post("/monitors/{slug}/resume")
    async def resume(request: Request, slug: Slug) -> dict[str, Any]:
        job = await write(lambda s: save(s, s.get_job(slug), {"paused": False}), slug)
        return {"monitor": monitor(request, job)}

    # --- check-ins -------------------------------------------------------------------------
    @api.post("/monitors/{slug}/checkins", status_code=201)
    async def create_checkin(slug: Slug, body: CheckinCreate) -> dict[str, Any]:
        reader.get_job(slug)  # Loom's check-ins are for monitors that exist: 404 otherwise
        now = time.time()
        started = _time("started_at", body.started_at, now)
        finished = _time("finished_at", body.finished_at, now)

        def op(store: Store) -> Run:
            run = create_checkin_op(store, slug, body, started, finished, now)
            if body.crash_event_id:
                store.set_crash_event(run.id, body.crash_event_id)
            return run

        run = await write(op, slug)
        view = checkin_view(run, body.crash_event_id)
        return {"checkin_id": run.id, "checkin": view}

    @api.patch("/checkins/{checkin_id}")
    async def patch_checkin(
        checkin_id: Annotated[str, Path(pattern=RUN_ID_PATTERN)], body: CheckinPatch
    ) -> dict[str, Any]:
        now = time.time()
        finished = _time("finished_at", body.finished_at, now)
        sent = body.model_dump(exclude_unset=True)
        sent.pop("crash_event_id", None)
        if "finished_at" in sent:
            sent["finished_at"] = finished
        patch = RunPatch.model_validate(sent)

        def op(store: Store) -> Run:
            run = patch_run_op(store, checkin_id, patch, now, OUTPUT_LIMIT)
            if body.crash_event_id:
                store.set_crash_event(run.id, body.crash_event_id)
            return run

        run = await write(op)
        if server.scheduler is not None:
            server.scheduler.touch(run.job)
        crash = reader.crash_events([run.id]).get(run.id)
        return {"checkin": checkin_view(run, crash)}

    @api.get("/monitors/{slug}/checkins")
    async def list_checkins(
        slug: Slug,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        status: CheckinStatus | None = None,
        env: EnvQuery = None,
    ) -> dict[str, Any]:
        reader.get_job(slug)
        wanted = None if status is None else RUN_STATUS[status]
        runs = reader.list_runs(job=slug, limit=limit, status=wanted, output=True,
                                env=None if env is None else env_key(env))  # fmt: skip
        crashes = reader.crash_events([r.id for r in runs])
        return {"checkins": [checkin_view(r, crashes.get(r.id)) for r in runs]}

    # --- stats -----------------------------------------------------------------------------
    @api.get("/monitors/{slug}/stats")
    async def stats(
        slug: Slug, period: Literal["day", "week", "month"] = "day", env: EnvQuery = None
    ) -> dict[str, Any]:
        reader.get_job(slug)
        s = reader.job_stats(slug, since=time.time() - PERIODS[period],
                             env=None if env is None else env_key(env))  # fmt: skip
        return loom_stats(s)

    return api


# --- mapping ---------------------------------------------------------------------------------


def to_settings(fields: dict[str, Any]) -> dict[str, Any]:
    """Loom's monitor fields as job settings (not yet normalised)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "slug":
            continue
        if key == "name":
            out["title"] = value or ""
        elif key == "schedule":
            if value is None:
                out["schedule"] = ""
            elif value["type"] == "cron":
                out["schedule"] = value["expression"]
            else:
                out["schedule"] = f"every {value['minutes']}m"
        elif key == "timezone":
            if value is not None:
                out["tz"] = value
        elif key == "checkin_margin_minutes":
            out["grace"] = 0.0 if value is None else value * 60.0
        elif key == "max_runtime_minutes":
            out["max_runtime"] = None if value is None else value * 60.0
        elif key == "environments":
            out["environments"] = value or []
        elif key == "status" and value is not None:
            out["paused"] = value == "paused"
            out["disabled"] = value == "disabled"
    return out


def save(store: Store, job: Job, settings: dict[str, Any]) -> Job:
    for k, v in settings.items():
        setattr(job, k, v)
    saved = store.save_job(job, now=time.time())
    store.ensure_ping_key(saved.name, now=time.time())
    return store.get_job(saved.name)


def base_url(request: Request) -> str:
    """This server's address as the client reached it (for ``ping_url``)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def schedule_view(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        s = parse_schedule(text)
    except ValidationError:
        return {"type": "cron", "expression": text}
    if s.kind == "interval" and s.interval is not None and s.interval % 60 == 0:
        return {"type": "interval", "minutes": int(s.interval // 60)}
    # a cron expression, or one of cronwatch's own forms ('@daily', 'at 13:37', OnCalendar)
    return {"type": "cron", "expression": text}


def monitor_health(store: Store, job: Job, env: str | None, health: str) -> str:
    """Loom's health: cronwatch's ``health`` without its words for a status (paused,
    disabled) and for "late" (within grace): those say what the last check-in said."""
    if health in ("healthy", "failing", "missed", "timeout", "unknown"):
        return health
    finished = [s for s in Status if s is not Status.RUNNING]
    last = store.last_run(job.name, statuses=finished, env=env)
    if last is None:
        return "unknown"
    return {Status.SUCCESS: "healthy", Status.MISSED: "missed",
            Status.TIMEOUT: "timeout"}.get(last.status, "failing")  # fmt: skip


def monitor_view(
    store: Store, job: Job, base: str, *, secrets: bool, env: str | None = None
) -> dict[str, Any]:
    """A monitor in Loom's shape. A read-only token sees no ping URL: the key forges pings."""
    key = job.ping_key if secrets else ""
    stored_env = None if env is None else env_key(env)
    last = store.last_run(job.name, env=stored_env)
    status = "disabled" if job.disabled else "paused" if job.paused else "active"
    info = describe(store, job.name, now=time.time(), env=stored_env)
    return {
        "id": "mon_" + job.name,
        "slug": job.name,
        "name": job.title or job.name,
        "status": status,
        "health": monitor_health(store, job, stored_env, str(info["health"])),
        "schedule": schedule_view(job.schedule),
        "timezone": job.tz,
        "checkin_margin_minutes": _minutes(job.grace),
        "max_runtime_minutes": None if job.max_runtime is None else _minutes(job.max_runtime),
        "environments": [env_label(env_key(e)) for e in job.environments] or [DEFAULT_ENV],
        "ping_key": key or None,
        "ping_url": f"{base}/ping/{key}" if key else None,
        "created_at": iso(job.created_at),
        "last_checkin_at": None if last is None else iso(last.started_at),
        "next_expected_at": iso(info["next_expected"]),
    }


def _minutes(seconds: float) -> float | int:
    """Seconds as Loom's minutes: a whole number when it is one (Loom's are u32)."""
    m = seconds / 60.0
    return int(m) if m.is_integer() else m


def checkin_view(run: Run, crash_event_id: str | None = None) -> dict[str, Any]:
    """A run as Loom's check-in: times ISO 8601, the duration in whole milliseconds."""
    out = run.stdout
    if run.stderr:
        out = (out or b"") + run.stderr
    return {
        "id": run.id,
        "monitor_id": "mon_" + run.job,
        "monitor_slug": run.job,
        "status": CHECKIN_STATUS[run.status],
        "environment": env_label(run.env),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.ended_at),
        "duration_ms": None if run.duration is None else round(run.duration * 1000),
        "exit_code": run.exit_code,
        "output": None if out is None else out.decode("utf-8", "replace"),
        "crash_event_id": crash_event_id,
        "source": run.source,
    }


def loom_stats(s: dict[str, Any]) -> dict[str, Any]:
    """``job_stats`` in Loom's eight fields (check-ins still in progress are not counted)."""
    finished = s["finished"]

    def ms(seconds: float | None) -> int | None:
        return None if seconds is None else round(seconds * 1000)

    return {
        "total_checkins": finished,
        "successful_checkins": s["success"],
        "failed_checkins": s["failed"],
        "missed_checkins": s["missed"],
        "timeout_checkins": s["timeout"],
        "avg_duration_ms": ms(s["duration_avg"]),
        "p95_duration_ms": ms(s["duration_p95"]),
        "uptime_percentage": None if not finished else round(100.0 * s["success"] / finished, 2),
    }


def _time(field: str, value: datetime | None, now: float) -> float | None:
    """A check-in's time in seconds. A well-formed time this server's clock cannot take
    (before 1970, more than a day ahead) conflicts with it: 409."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        at = value.timestamp()
    except (OverflowError, OSError, ValueError):
        at = -1.0
    if not 0 <= at <= now + 86400:
        raise Conflict(f"{field} {value.isoformat()} is out of range: from 1970 to a day ahead")
    return at


def create_checkin_op(
    store: Store, job: str, body: CheckinCreate, started: float | None,
    finished: float | None, now: float,
) -> Run:  # fmt: skip
    """Loom's check-in as /api/v1's (``runs_api``): an in_progress check-in opens a run at
    ``started_at`` (or now); ok/error records a finished one whose times agree."""
    env = "" if body.environment is None else env_key(body.environment)
    output = body.output
    if body.status == "in_progress":
        run_body = RunCreate(status="in_progress", env=env, output=output)
        return create_run_op(store, job, run_body, started or now, OUTPUT_LIMIT)
    duration = None if body.duration_ms is None else body.duration_ms / 1000
    end = finished
    if end is None:
        end = started + duration if started is not None and duration is not None else now
    if duration is None and started is not None:
        duration = end - started
    if duration is not None and duration < 0:
        raise Conflict("finished_at is before started_at")
    if started is not None and duration is not None and abs(end - started - duration) > 0.001:
        raise Conflict("started_at, finished_at and duration_ms disagree; send two of them")
    run_body = RunCreate(status=body.status, env=env, exit_code=body.exit_code, output=output,
                         duration_ms=None if duration is None else duration * 1000)  # fmt: skip
    return create_run_op(store, job, run_body, end, OUTPUT_LIMIT)


__all__ = ["build_loom", "NotFound"]
