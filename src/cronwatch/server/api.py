"""The management API: FastAPI under /api/v1, strict pydantic models, bearer tokens.

Reads use the server's read connection; writes go through the group-commit writer, like
pings. Every CronwatchError becomes ``{"error": message}`` with its HTTP status; bad
input is a 422 that names the field, never a 500.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cronwatch.app.evaluate import describe
from cronwatch.core.errors import Conflict, CronwatchError, NotFound, ValidationError
from cronwatch.core.model import (
    DEFAULT_ENV,
    ENV_PATTERN,
    NAME_PATTERN,
    NAME_RULE,
    RUN_ID_PATTERN,
    RUN_ID_RULE,
    TAG_PATTERN,
    TAG_RULE,
    Job,
    Status,
    env_key,
)
from cronwatch.core.settings import normalize_all, notification_list, timed_pause
from cronwatch.notify import redact
from cronwatch.server.api_models import (
    JobCreate,
    JobPatch,
    JobSettings,
    NotifyList,
    PauseBody,
    ProjectKey,
    RunCreate,
    RunPatch,
)
from cronwatch.server.auth import Forbidden, authorize
from cronwatch.server.runs_api import create_run_op, patch_run_op
from cronwatch.store.interface import Store

T = TypeVar("T")
# A run's status as a query parameter: the OpenAPI schema lists the values (core.model's).
StatusName = Literal["running", "success", "failed", "timeout", "missed"]
# A job's health as a filter: core.health's words (an unknown word is a 422, not [])
HealthName = Literal[
    "unknown", "healthy", "failing", "late", "missed", "timeout", "paused", "disabled"
]
Secrets = Annotated[
    bool, Query(description="show channel URLs unredacted (a token that may write only)")
]

JobName = Annotated[str, Path(pattern=NAME_PATTERN, description=NAME_RULE)]
Env = Annotated[
    str | None,
    Query(pattern=ENV_PATTERN, max_length=64,
          description=f"only this environment's runs ('{DEFAULT_ENV}': runs that name none)"),
]  # fmt: skip
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description=RUN_ID_RULE)]
# module level: endpoint annotations are strings (PEP 563), resolved in this namespace
BEARER = HTTPBearer(auto_error=False, description="a token from: cronwatch token create NAME")
PERIODS = {"day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}
OUTPUT_LIMIT = 1_000_000
_MAX_ERRORS = 10  # fields listed in a 422's detail


# the body of every error answer, for the documents of each API (ours and the peers')
ERROR_BODY: dict[str, Any] = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid token", **ERROR_BODY},
    403: {"description": "read-only token on a write or asking for secrets", **ERROR_BODY},
    404: {"description": "unknown job, run or incident", **ERROR_BODY},
    409: {"description": "the job exists already; a run's times disagree with its start", **ERROR_BODY},
    422: {"description": "invalid input; the message names the field", **ERROR_BODY},
}  # fmt: skip


def build_api(server: Any) -> FastAPI:
    def auth(request: Request, _: Annotated[Any, Depends(BEARER)] = None) -> None:
        authorization = request.headers.get("authorization")
        token = authorize(server, authorization, write=request.method not in ("GET", "HEAD"))
        request.state.read_only = bool(token["read_only"])

    api = FastAPI(
        title="cronwatch", version="1", servers=[{"url": "/api/v1"}], openapi_url="/openapi.json",
        docs_url=None, redoc_url=None, dependencies=[Depends(auth)], responses=ERRORS,
    )  # fmt: skip

    install_error_handlers(api, server)

    reader: Store = server.reader

    async def write(op: Callable[[Store], T], touch: str | None = None) -> T:
        result: T = await server.write(op, touch)  # typed: the server is Any here
        return result

    def view(
        request: Request, job: Job, secrets: bool = False, env: str | None = None
    ) -> dict[str, Any]:
        """A job as this token may see it. A ping key can forge pings and a channel URL
        often carries a password or a bot token: a read-only token sees neither; a write
        token sees the key, and the channels in the clear only when it asks (?secrets=true).
        A read never writes: a job made by the wrapper has no key (null) until a write
        (any PUT/PATCH, or `cronwatch job show`) makes one."""
        read_only = getattr(request.state, "read_only", True)
        if secrets and read_only:
            raise Forbidden("a read-only token cannot see channel secrets (secrets=true)")
        d = job_view(reader, job, None if env is None else env_key(env))
        if read_only:
            d["ping_key"] = None
        d["ping_key"] = d["ping_key"] or None
        if not secrets:
            d["notify"] = [redact(u) for u in job.notify]
        return d

    # --- jobs ------------------------------------------------------------------------------
    @api.get("/jobs")
    async def list_jobs(
        request: Request,
        health: HealthName | None = None,
        status: StatusName | None = None,
        tag: Annotated[str | None, Query(pattern=TAG_PATTERN, description=TAG_RULE)] = None,
        secrets: Secrets = False,
        env: Env = None,
    ) -> list[dict[str, Any]]:
        out = []
        for job in reader.list_jobs():
            d = view(request, job, secrets, env)
            if health and d["health"] != health:
                continue
            if status and d["status"] != status:
                continue
            if tag and tag not in job.tags:
                continue
            out.append(d)
        return out

    @api.post("/jobs", status_code=201)
    async def create_job(request: Request, body: JobCreate) -> dict[str, Any]:
        settings = body.model_dump(exclude={"name"}, exclude_unset=True)
        settings = check_settings(_unredacted(None, settings))

        def op(store: Store) -> Job:
            if store.find_job(body.name) is not None:
                raise Conflict(f"job {body.name!r} already exists")
            return _save(store, Job(name=body.name), settings)

        return view(request, await write(op, body.name))

    @api.get("/jobs/{name}")
    async def get_job(
        request: Request, name: JobName, secrets: Secrets = False, env: Env = None
    ) -> dict[str, Any]:
        return view(request, reader.get_job(name), secrets, env)

    @api.put("/jobs/{name}")
    async def put_job(request: Request, name: JobName, body: JobSettings) -> dict[str, Any]:
        settings = body.model_dump(exclude_unset=True)
        settings = check_settings(_unredacted(reader.find_job(name), settings))

        def op(store: Store) -> Job:
            old = store.find_job(name)
            fresh = Job(name=name, created_at=old.created_at if old else 0.0,
                        ping_key=old.ping_key if old else "")  # fmt: skip
            return _save(store, fresh, settings)

        return view(request, await write(op, name))

    @api.patch("/jobs/{name}")
    async def patch_job(request: Request, name: JobName, body: JobPatch) -> dict[str, Any]:
        settings = body.model_dump(exclude_unset=True)
        settings = check_settings(_unredacted(reader.find_job(name), settings))
        return view(request, await write(lambda s: _save(s, s.get_job(name), settings), name))

    @api.delete("/jobs/{name}", status_code=204)
    async def delete_job(name: JobName) -> Response:
        await write(lambda s: s.delete_job(name), name)
        reader.forget_job_ids()
        return Response(status_code=204)

    @api.post("/jobs/{name}/pause")
    async def pause(
        request: Request, name: JobName, body: PauseBody | None = None
    ) -> dict[str, Any]:
        """Pause; with ``seconds`` or ``until`` the pause ends by itself (a timed pause)."""
        until = None
        if body is not None and body.seconds is not None:
            until = time.time() + body.seconds
        elif body is not None and body.until is not None:
            until = body.until
        settings = {"paused": True, "paused_until": until}
        job = await write(lambda s: _save(s, s.get_job(name), settings), name)
        return view(request, job)

    @api.post("/jobs/{name}/resume")
    async def resume(request: Request, name: JobName) -> dict[str, Any]:
        job = await write(lambda s: _save(s, s.get_job(name), {"paused": False}), name)
        return view(request, job)

    # --- alerting configured once: notification lists, integrations, the project key ----
    @api.get("/notification-lists")
    async def notification_lists(request: Request, secrets: Secrets = False) -> dict[str, Any]:
        if secrets and getattr(request.state, "read_only", True):
            raise Forbidden("a read-only token cannot see channel secrets (secrets=true)")
        found = reader.notification_lists()
        if secrets:
            return found
        return {k: [redact(c) for c in v] for k, v in found.items()}

    @api.put("/notification-lists/{name}")
    async def put_notification_list(
        request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN)], body: NotifyList
    ) -> dict[str, Any]:
        channels = check_list(name, body.channels)
        await write(lambda s: s.set_notification_list(name, channels))
        return {"name": name, "channels": [redact(c) for c in channels]}

    @api.delete("/notification-lists/{name}", status_code=204)
    async def delete_notification_list(
        name: Annotated[str, Path(pattern=NAME_PATTERN)],
    ) -> Response:
        await write(lambda s: s.delete_notification_list(name))
        return Response(status_code=204)

    @api.get("/integrations")
    async def integrations(request: Request, secrets: Secrets = False) -> dict[str, Any]:
        from cronwatch.notify.integrations import redact_integration

        if secrets and getattr(request.state, "read_only", True):
            raise Forbidden("a read-only token cannot see integration secrets (secrets=true)")
        found = reader.integrations()
        return found if secrets else {k: redact_integration(k, v) for k, v in found.items()}

    @api.put("/integrations/{name}")
    async def put_integration(
        name: Literal["email", "slack", "pagerduty", "sms"],
        body: Annotated[
            dict[str, Annotated[str, Field(max_length=2000)]], Body(max_length=100)
        ],  # fmt: skip
    ) -> dict[str, Any]:
        from cronwatch.notify.integrations import redact_integration, validate_integration

        config = validate_integration(name, body)
        await write(lambda s: s.set_integration(name, config))
        return redact_integration(name, config)

    @api.delete("/integrations/{name}", status_code=204)
    async def delete_integration(name: Literal["email", "slack", "pagerduty", "sms"]) -> Response:
        await write(lambda s: s.delete_integration(name))
        return Response(status_code=204)

    @api.get("/project-key")
    async def project_key(request: Request) -> dict[str, Any]:
        if getattr(request.state, "read_only", True):
            raise Forbidden("a read-only token cannot see the project ping key")
        return {"key": await write(lambda s: s.project_ping_key())}

    @api.put("/project-key")
    async def put_project_key(body: ProjectKey) -> dict[str, Any]:
        await write(lambda s: s.set_project_ping_key(body.key))
        return {"key": body.key}

    # --- runs --------------------------------------------------------------------------------
    @api.get("/jobs/{name}/runs")
    async def list_runs(
        name: JobName,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        status: Annotated[StatusName | None, Query()] = None,
        since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
        env: Env = None,
    ) -> list[dict[str, Any]]:
        reader.get_job(name)
        wanted = None if status is None else Status(status)
        runs = reader.list_runs(job=name, limit=limit, status=wanted, since=since,
                                env=None if env is None else env_key(env))  # fmt: skip
        return [r.to_dict(output=False) for r in runs]

    @api.post("/jobs/{name}/runs", status_code=201)
    async def create_run(name: JobName, body: RunCreate) -> dict[str, Any]:
        run = await write(lambda s: create_run_op(s, name, body, time.time(), OUTPUT_LIMIT), name)
        if server.scheduler is not None:
            server.scheduler.deliver_now.set()
        return run.to_dict(output=True)

    @api.get("/runs/{run_id}")
    async def get_run(run_id: RunId) -> dict[str, Any]:
        return reader.get_run(run_id, output=True).to_dict(output=True)

    @api.patch("/runs/{run_id}")
    async def patch_run(run_id: RunId, body: RunPatch) -> dict[str, Any]:
        run = await write(lambda s: patch_run_op(s, run_id, body, time.time(), OUTPUT_LIMIT))
        if server.scheduler is not None:
            server.scheduler.touch(run.job)
            server.scheduler.deliver_now.set()
        return run.to_dict(output=True)

    # --- stats and incidents ---------------------------------------------------------------
    @api.get("/jobs/{name}/stats")
    async def stats(
        name: JobName, period: Literal["day", "week", "month"] = "day", env: Env = None
    ) -> dict[str, Any]:
        reader.get_job(name)
        s = reader.job_stats(name, since=time.time() - PERIODS[period],
                             env=None if env is None else env_key(env))  # fmt: skip
        finished = s["finished"]
        return {
            "job": name, "period": period, "total": s["runs"], "successful": s["success"],
            "failed": s["failed"], "missed": s["missed"], "timeout": s["timeout"],
            "running": s["running"], "avg_duration": s["duration_avg"],
            "p95_duration": s["duration_p95"],
            "uptime": None if not finished else round(100.0 * s["success"] / finished, 3),
        }  # fmt: skip

    @api.get("/incidents")
    async def incidents(
        job: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
        open: bool = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        if job is not None:
            reader.get_job(job)
        return [_redact_incident(i) for i in reader.list_incidents(job=job, open_only=open,
                                                                   limit=limit)]  # fmt: skip

    @api.get("/incidents/{incident_id}")
    async def incident(incident_id: Annotated[int, Path(ge=1, le=2**62)]) -> dict[str, Any]:
        return _redact_incident(reader.get_incident(incident_id))

    return api


def install_error_handlers(api: FastAPI, server: Any) -> None:
    """Every error as ``{"error": message}`` with its status: CronwatchError, a request
    pydantic refused (422 naming the field), FastAPI's own answers. Shared by every
    FastAPI app of the server (/api/v1, Loom's /api/crons)."""

    @api.exception_handler(CronwatchError)
    async def cronwatch_error(request: Request, exc: CronwatchError) -> JSONResponse:
        server.counters["api_errors"] += 1
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        server.counters["api_errors"] += 1
        return JSONResponse(invalid_body(exc.errors()), status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own answers (an unknown route, a wrong method, a body it cannot read)
        # in the documented shape, not {"detail": ...}
        server.counters["api_errors"] += 1
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path only
            headers["Allow"] = ", ".join(_methods(api, request))
        if exc.status_code == 400:
            # FastAPI's answer to a body json.loads raised on with something else than a
            # JSONDecodeError (bytes that are not UTF-8, an integer past Python's digit
            # limit): the same 422 as any other body that is not JSON
            cause = exc.__cause__
            why = ("it is not UTF-8 text" if isinstance(cause, UnicodeDecodeError)
                   else _excerpt(str(cause), 200) if cause else "it cannot be read")  # fmt: skip
            return JSONResponse({"error": f"invalid JSON body: {why}"}, status_code=422)
        return JSONResponse({"error": _excerpt(str(exc.detail), 300)},
                            status_code=exc.status_code, headers=headers)  # fmt: skip


def check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings normalised by the schema, as from the CLI and the TOML file: pydantic
    checked the JSON types and bounds; this checks the rest (schedule, zone, channels,
    rules, tags, ping key) and gives the stored values. ValidationError (422) names the
    field."""
    if settings.get("ping_key", "") is None:
        del settings["ping_key"]  # null: keep the key the job has
    try:
        return normalize_all(settings)
    except ValidationError:
        raise
    except Exception as e:  # a parser bug must still be the client's 422, not a 500
        raise ValidationError(f"invalid settings: {type(e).__name__}: {e}") from None


def invalid_body(errors: Any) -> dict[str, Any]:
    """A 422's body: ``error`` names the first bad field; ``detail`` lists where and why
    for at most a few fields, never the input itself (a 200 MiB body must not come back,
    and a NaN in it could not be written as JSON)."""
    detail = []
    for e in list(errors)[:_MAX_ERRORS]:
        loc = [x if isinstance(x, int) else _excerpt(str(x), 64) for x in e.get("loc", ())]
        detail.append({"loc": loc, "msg": _excerpt(str(e.get("msg", "")), 300),
                       "type": _excerpt(str(e.get("type", "")), 64)})  # fmt: skip
    first = list(errors)[0] if errors else {}
    if first.get("type") == "json_invalid":
        # loc ends with the offset of the bad character; ctx["error"] says what was wrong
        ctx = first.get("ctx") or {}
        where = (first.get("loc") or ("?",))[-1]
        msg = f"invalid JSON body at character {where}: {ctx.get('error', 'cannot parse')}"
    elif first:
        where = ".".join(str(x) for x in detail[0]["loc"])
        msg = f"invalid {where}: {detail[0]['msg'] or 'invalid input'}"
    else:
        msg = "invalid input"
    return {"error": _excerpt(msg, 500), "detail": detail}


def _methods(api: FastAPI, request: Request) -> list[str]:
    """Every method some route offers at this request's path."""
    found: set[str] = set()
    for route in api.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            found |= getattr(route, "methods", None) or set()
    return sorted(found)


def _excerpt(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unredacted(old: Job | None, settings: dict[str, Any]) -> dict[str, Any]:
    """Channels sent back as they were shown (redacted, with ``***``) keep the job's real
    URL: a client that reads a job, changes its grace and writes it back must not replace
    its webhook's password with three stars. A redacted URL that matches none of the job's
    channels is refused: it would deliver nowhere."""
    sent = settings.get("notify")
    if not sent:
        return settings
    real = {redact(u): u for u in (old.notify if old else [])}
    out = []
    for url in sent:
        if "***" in url:
            if url not in real:
                raise ValidationError(
                    f"invalid notify: {_excerpt(url, 100)!r} is a redacted URL that matches none "
                    "of the job's channels; send the full URL (GET with ?secrets=true shows them)"
                )
            url = real[url]
        out.append(url)
    return {**settings, "notify": out}


def _redact_incident(incident: dict[str, Any]) -> dict[str, Any]:
    for n in incident.get("notifications", []):
        n["channel"] = redact(n["channel"])
    return incident


def check_list(name: str, channels: list[str]) -> list[str]:
    """A notification list's channels, normalised (``settings.notification_list``)."""
    return notification_list(name, channels)


def _save(store: Store, job: Job, settings: dict[str, Any]) -> Job:
    key = settings.pop("ping_key", None)
    for k, v in settings.items():
        setattr(job, k, v)
    timed_pause(job, settings)
    saved = store.save_job(job, now=time.time())
    if key:
        store.set_ping_key(saved.name, key)
    store.ensure_ping_key(saved.name, now=time.time())
    return store.get_job(saved.name)


def job_view(store: Store, job: Job, env: str | None = None) -> dict[str, Any]:
    """A job with its last run and health (of one environment's runs, ``env`` given)."""
    d = job.to_dict()
    last = store.last_run(job.name, env=env)
    d["last_run"] = None if last is None else last.to_dict(output=False)
    d["status"] = None if last is None else last.status.value
    # The same health the CLI and the dashboard show: schedule, grace, max runtime included.
    info = describe(store, job.name, now=time.time(), env=env)
    d["health"] = info["health"]
    d["health_reason"] = info["health_reason"]
    d["next_expected"] = info["next_expected"]
    d["slowdown"] = info["slowdown"]
    return d


__all__ = ["build_api", "NotFound"]
