"""Cronitor's Monitor API (``/api/monitors``), a thin adapter over the job settings.

A Cronitor user points the base URL here and keeps their calls: HTTP Basic auth with the
API key as the user name and an empty password, the key being a cronwatch token (a
read-only token reads, never writes, and never sees secrets). A monitor is a job: its
fields map onto the one settings schema (core/settings.py), so the same values are
accepted and refused as from the CLI, the TOML file and /api/v1.

    key                          the job (a key that is not a job name maps to one without
                                 loss or collision: core.model.name_for_key; kept beside it)
    type                         job, or heartbeat (a job that sends no start pings)
    schedule / schedules         schedule (one), timezone -> tz, grace_seconds -> grace
    failure_tolerance N          alert_after N+1 (Cronitor's default 0: the first failure)
    schedule_tolerance N         schedule_tolerance (missed runs counted apart)
    consecutive_alert_threshold  surge_threshold
    realert_interval             realert ("every 8 hours", "never")
    assertions, notify, tags     asserts (Cronitor's syntax), notify (lists, shorthands), tags
    name, note                   kept beside the job
    paused                       paused (GET /api/monitors/KEY/pause/HOURS: a timed pause)

``PUT /api/monitors`` writes every monitor of a request in one transaction: an invalid one
is a 400 naming the monitor and the field, and nothing of that request is saved;
``"rollback": true`` validates without saving.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBasic
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cronwatch.app.evaluate import describe
from cronwatch.core.errors import CronwatchError, NotFound, ValidationError
from cronwatch.core.model import (
    EXT_KEY_PATTERN,
    EXT_KEY_RULE,
    TAG_PATTERN,
    Job,
    Run,
    Status,
    name_for_key,
)
from cronwatch.core.settings import normalize_all, timed_pause
from cronwatch.core.values import iso, parse_duration
from cronwatch.notify import redact
from cronwatch.server.api import ERROR_BODY
from cronwatch.server.auth import Unauthorized
from cronwatch.store.interface import Store

PAGE_SIZE = 50
MAX_MONITORS = 1000  # in one PUT
YAML_LIMIT = 1 << 20  # bytes of a cronitor.yaml
TYPES = ("job", "heartbeat")
# Cronitor's fields this adapter maps; others (group, platform, metadata, ...) are taken
# and ignored, as the SDKs send some of them with every monitor.
_EVENT = {
    Status.RUNNING: "run",
    Status.SUCCESS: "complete",
    Status.FAILED: "fail",
    Status.TIMEOUT: "fail",
    Status.MISSED: "missed",
}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "an invalid monitor; the message names it and the field", **ERROR_BODY},
    401: {
        "description": "missing or unknown API key (HTTP Basic, the key as user name)",
        **ERROR_BODY,
    },
    403: {"description": "a read-only key on a write", **ERROR_BODY},
    404: {"description": "no such monitor", **ERROR_BODY},
    413: {"description": "the body is too large", **ERROR_BODY},
}
_TEXTS = {"type": "array", "items": {"type": "string", "maxLength": 2000}, "maxItems": 50}
_COUNT: dict[str, Any] = {"type": ["integer", "null"], "minimum": 0, "maximum": 1000}
# The document's schema of a monitor, and the check every monitor of a request passes first
# (check_schema below): what the document states is what is refused (a 400 naming the
# field); the rest (a cron expression, a zone, a channel, an assertion) is the settings
# schema's to judge, as for every other entry point.
MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["key"],
    "properties": {
        "key": {"type": "string", "pattern": EXT_KEY_PATTERN, "description": EXT_KEY_RULE},
        "type": {"type": "string", "enum": list(TYPES)},
        "name": {"type": ["string", "null"], "maxLength": 200},
        "note": {"type": ["string", "null"], "maxLength": 2000},
        "schedule": {"type": ["string", "null"], "maxLength": 500},
        "schedules": {
            "type": "array",
            "items": {"type": "string", "maxLength": 500},
            "maxItems": 1,
        },  # fmt: skip
        "timezone": {"type": ["string", "null"], "maxLength": 64},
        "grace_seconds": {"type": ["integer", "null"], "minimum": 0, "maximum": 31622400},
        "failure_tolerance": {**_COUNT, "maximum": 999},
        "schedule_tolerance": _COUNT,
        "consecutive_alert_threshold": {**_COUNT, "minimum": 1},
        "realert_interval": {"type": ["string", "null"], "maxLength": 100},
        "assertions": _TEXTS,
        "notify": {"anyOf": [_TEXTS, {"type": "object", "properties": {"alerts": _TEXTS}}]},
        "tags": {
            "type": "array",
            "items": {"type": "string", "pattern": TAG_PATTERN},
            "maxItems": 50,
        },  # fmt: skip
        "paused": {"type": "boolean"},
    },
}
PUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "required": ["monitors"],
            "properties": {
                "monitors": {"type": "array", "items": MONITOR_SCHEMA, "maxItems": MAX_MONITORS},
                "rollback": {"type": "boolean"},
            },
        },
        {"type": "array", "items": MONITOR_SCHEMA, "maxItems": MAX_MONITORS},
        MONITOR_SCHEMA,  # one monitor, as Cronitor's documentation sends it
    ]
}
_YAML_MONITOR = {k: v for k, v in MONITOR_SCHEMA.items() if k != "required"}
_YAML_SECTION = {"type": ["object", "null"], "maxProperties": MAX_MONITORS, "additionalProperties": {
    "anyOf": [_YAML_MONITOR, {"type": "null"}]}}  # fmt: skip
# cronitor.yaml: jobs and heartbeats by key (checks and sites are Cronitor's, not ours)
YAML_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "jobs": _YAML_SECTION,
        "heartbeats": _YAML_SECTION,
        "rollback": {"type": "boolean"},
    },  # fmt: skip
    "additionalProperties": False,
}
_JSON_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}  # fmt: skip


def check_schema(value: Any, schema: dict[str, Any], where: str) -> str | None:
    """Why ``value`` breaks ``schema`` (the subset of JSON Schema used above), or None."""
    if "anyOf" in schema:
        found = [check_schema(value, s, where) for s in schema["anyOf"]]
        return None if None in found else found[0]
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_is(value, t) for t in names):
            return f"{where}: expected {' or '.join(names)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: expected one of {', '.join(map(str, schema['enum']))}"
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            return f"{where}: longer than {schema['maxLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return f"{where}: does not match {schema['pattern']}"
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        return f"{where}: out of range ({schema.get('minimum')} to {schema.get('maximum')})"
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            return f"{where}: at most {schema['maxItems']} items"
        for i, item in enumerate(value):
            if "items" in schema and (why := check_schema(item, schema["items"], f"{where}[{i}]")):
                return why
    if isinstance(value, dict):
        # counted before anything inside is looked at: YAML aliases can make a small
        # document name one big mapping many times
        if len(value) > schema.get("maxProperties", len(value)):
            return f"{where}: at most {schema['maxProperties']} entries"
        for field in schema.get("required", ()):
            if field not in value:
                return f"{where}.{field}: required"
        known = schema.get("properties", {})
        for field, sub in known.items():
            if field in value and (why := check_schema(value[field], sub, f"{where}.{field}")):
                return why
        extra = schema.get("additionalProperties", True)
        for field in (f for f in value if f not in known):
            if extra is False:
                return f"{where}.{str(field)[:40]}: not supported"
            if extra is not True and (why := check_schema(value[field], extra, f"{where}.{field}")):
                return why
    return None


def _is(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name not in ("boolean",):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()  # 3.0 is an integer to JSON Schema
    return isinstance(value, _JSON_TYPES[name])


# documents the scheme; the key is checked by each route (one route that reads, GET
# .../pause/N, writes)
BASIC = HTTPBasic(auto_error=False, description="the API key (a cronwatch token) as user name, "
                  "an empty password")  # fmt: skip


class BadRequest(CronwatchError):
    http_status = 400


def basic_token(authorization: str | None) -> str:
    """The API key of ``Authorization: Basic base64(KEY:)`` (a bearer token is taken too)."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    if not authorization or authorization[:6].lower() != "basic ":
        raise Unauthorized("missing API key: use HTTP Basic auth with the key as user name")
    try:
        user = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("invalid Basic credentials") from None
    return user.partition(":")[0]


def build_cronitor_api(server: Any) -> FastAPI:
    reader: Store = server.reader

    def auth(request: Request, *, write: bool) -> bool:
        """Authorise the request; True if the key is read-only."""
        from cronwatch.server.auth import authorize

        token = authorize(server, "Bearer " + basic_token(request.headers.get("authorization")),
                          write=write)  # fmt: skip
        return bool(token["read_only"])

    api = FastAPI(
        title="cronwatch: Cronitor's Monitor API", version="1", servers=[{"url": "/api"}],
        openapi_url="/cronitor/openapi.json", docs_url=None, redoc_url=None, responses=ERRORS,
        dependencies=[Depends(BASIC)],
    )  # fmt: skip

    @api.exception_handler(CronwatchError)
    async def cronwatch_error(request: Request, exc: CronwatchError) -> JSONResponse:
        server.counters["api_errors"] += 1
        status = 400 if exc.http_status == 422 else exc.http_status
        headers = {"WWW-Authenticate": 'Basic realm="cronwatch"'} if status == 401 else None
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        from cronwatch.server.api import invalid_body

        return JSONResponse(invalid_body(exc.errors()), status_code=400)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of every route at this path
            found: set[str] = set()
            for route in api.router.routes:
                if route.matches(request.scope)[0] is not Match.NONE:
                    found |= getattr(route, "methods", None) or set()
            headers["Allow"] = ", ".join(sorted(found))
        return JSONResponse({"error": str(exc.detail)[:300]}, status_code=exc.status_code,
                            headers=headers)  # fmt: skip

    async def write_op(op: Any) -> Any:
        return await server.writer.run(op)

    def touch(names: list[str]) -> None:
        if server.scheduler is not None:
            for n in names:
                server.scheduler.touch(n)

    @api.get("/monitors", responses={200: {"description": "one page of monitors"}})
    async def list_monitors(
        request: Request,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = PAGE_SIZE,
    ) -> dict[str, Any]:
        read_only = auth(request, write=False)
        keys = reader.job_keys()
        jobs = sorted(reader.list_jobs(), key=lambda j: keys.get(j.name, (j.name,))[0])
        chunk = jobs[(page - 1) * page_size : page * page_size]
        return {
            "page": page,
            "page_size": page_size,
            "total_monitor_count": len(jobs),
            "monitors": [monitor_view(reader, j, keys, read_only) for j in chunk],
        }

    @api.put(
        "/monitors",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PUT_SCHEMA}},
            }
        },  # fmt: skip
        responses={200: {"description": "the monitors as saved (or validated, with rollback)"}},
    )
    async def put_monitors(request: Request) -> Any:
        read_only = auth(request, write=True)
        data = parse_json(await request.body())
        bare = isinstance(data, list)
        if bare:
            monitors, rollback = data, False
        elif isinstance(data, dict) and "monitors" in data:
            if why := check_schema(data, PUT_SCHEMA["anyOf"][0], "body"):
                raise BadRequest(why)
            monitors, rollback = data["monitors"], data.get("rollback", False)
        elif isinstance(data, dict):  # one monitor, as Cronitor's documentation sends it
            monitors, rollback = [data], False
        else:
            raise BadRequest('expected {"monitors": [...]}, an array of monitors or a monitor')
        views = await put_all(monitors, rollback, read_only)
        return views if bare else {"monitors": views}

    async def put_all(monitors: list[Any], rollback: bool, read_only: bool) -> list[dict[str, Any]]:
        """Every monitor checked, then all saved in one transaction (or none, with
        ``rollback``); their views as saved (or as they would be)."""
        if len(monitors) > MAX_MONITORS:
            raise BadRequest(f"monitors: at most {MAX_MONITORS} in one request")
        # every monitor checked before anything is written: one bad monitor, nothing saved
        by_key: dict[str, dict[str, Any]] = {}
        for i, m in enumerate(monitors):
            if isinstance(m, dict) and m.get("type", "job") not in TYPES:
                raise BadRequest(
                    f"monitors[{i}].type: {str(m['type'])[:40]!r} is not supported: cronwatch "
                    "monitors jobs (type job) and heartbeats (type heartbeat, a job that sends "
                    "no start pings), not checks or sites"
                )
            if why := check_schema(m, MONITOR_SCHEMA, f"monitors[{i}]"):
                key = m.get("key") if isinstance(m, dict) else None
                raise BadRequest(why + (f" (monitor {key!r})" if isinstance(key, str) else ""))
            # a key given twice: its fields in order, as two requests would leave them
            by_key[m["key"]] = {**by_key.get(m["key"], {}), **m}
        plans = [plan(m) for m in by_key.values()]
        names = [p.name for p in plans]
        if rollback:
            keys = reader.job_keys()
            return [planned_view(*merge(reader, p, keys), read_only) for p in plans]

        def op(store: Store) -> None:
            # merged with what is stored inside the write: two requests at once each
            # keep the other's fields
            now = time.time()
            keys = store.job_keys()
            for p in plans:
                job, key, attrs = merge(store, p, keys)
                store.save_job(job, now=now)
                store.set_job_key(job.name, key, attrs)

        await write_op(op)
        touch(names)
        keys = reader.job_keys()
        return [monitor_view(reader, reader.get_job(n), keys, read_only) for n in names]

    @api.get("/monitors/{key}", responses={200: {"description": "the monitor"}})
    async def get_monitor(
        request: Request, key: str = Path(pattern=EXT_KEY_PATTERN)
    ) -> dict[str, Any]:
        read_only = auth(request, write=False)
        return monitor_view(reader, find(reader, key), reader.job_keys(), read_only)

    @api.delete("/monitors/{key}", status_code=204,
                responses={204: {"description": "deleted"}})  # fmt: skip
    async def delete_monitor(
        request: Request, key: str = Path(pattern=EXT_KEY_PATTERN)
    ) -> Response:
        auth(request, write=True)
        name = find(reader, key).name
        await write_op(lambda s: s.delete_job(name))
        reader.forget_job_ids()
        return Response(status_code=204)

    @api.get("/monitors/{key}/pause/{hours}",
             responses={200: {"description": "the monitor, paused (0 hours: resumed)"}})  # fmt: skip
    async def pause_monitor(
        request: Request,
        key: str = Path(pattern=EXT_KEY_PATTERN),
        hours: int = Path(ge=0, le=8784),
    ) -> dict[str, Any]:
        read_only = auth(request, write=True)
        name = find(reader, key).name
        until = time.time() + hours * 3600.0

        def op(store: Store) -> Job:
            job = store.get_job(name)
            job.paused, job.paused_until = (True, until) if hours else (False, None)
            return store.save_job(job, now=time.time())

        job = await write_op(op)
        touch([name])
        return monitor_view(reader, job, reader.job_keys(), read_only)

    @api.get("/monitors.yaml", responses={200: {"description": "cronitor.yaml",
             "content": {"application/yaml": {"schema": YAML_SCHEMA}}}})  # fmt: skip
    async def get_yaml(request: Request) -> Response:
        read_only = auth(request, write=False)

        keys = reader.job_keys()
        jobs: dict[str, Any] = {}
        for j in reader.list_jobs():
            v = monitor_view(reader, j, keys, read_only)
            jobs[v.pop("key")] = {k: v[k] for k in _CONFIG_FIELDS if v.get(k) not in (None, [], "")}
        return Response(dump_yaml({"jobs": jobs}), media_type="application/yaml")

    @api.put(
        "/monitors.yaml",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/yaml": {"schema": YAML_SCHEMA}},
            }
        },  # fmt: skip
        responses={
            200: {
                "description": "the monitors as saved (or validated), as cronitor.yaml",
                "content": {"application/yaml": {"schema": YAML_SCHEMA}},
            }
        },  # fmt: skip
    )
    async def put_yaml(request: Request) -> Response:
        read_only = auth(request, write=True)
        import yaml

        body = await request.body()
        if len(body) > YAML_LIMIT:
            raise BadRequest(f"cronitor.yaml: larger than {YAML_LIMIT} bytes")
        try:  # safe_load only: a document cannot name Python objects
            data = yaml.safe_load(body.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
            raise BadRequest(f"invalid YAML: {str(e)[:300]}") from None
        if isinstance(data, dict):  # YAML keys may be numbers: keys are text here
            data = {str(k): ({str(kk): vv for kk, vv in v.items()} if isinstance(v, dict) else v)
                    for k, v in data.items()}  # fmt: skip
        if why := check_schema(data, YAML_SCHEMA, "cronitor.yaml"):
            raise BadRequest(why)
        monitors: list[Any] = []
        for section, kind in (("jobs", "job"), ("heartbeats", "heartbeat")):
            for key, fields in (data.get(section) or {}).items():
                monitors.append({"type": kind, **(fields or {}), "key": key})
        out: dict[str, Any] = {"jobs": {}}
        for v in await put_all(monitors, data.get("rollback", False), read_only):
            out["jobs"][v.pop("key")] = {k: v[k] for k in _CONFIG_FIELDS if k in v}
        return Response(dump_yaml(out), media_type="application/yaml")

    return api


_CONFIG_FIELDS = ("type", "name", "schedule", "timezone", "grace_seconds", "failure_tolerance",
                  "schedule_tolerance", "consecutive_alert_threshold", "realert_interval",
                  "assertions", "notify", "tags", "note", "paused")  # fmt: skip


def dump_yaml(data: Any) -> str:
    """YAML with every string quoted: a key or a name such as ``0e5``, ``no`` or ``1_000``
    stays text to every YAML reader (1.1 and 1.2 disagree on which plain words are numbers
    or booleans)."""
    import yaml

    def text(dumper: Any, value: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")

    dumper: Any = type("QuotedDumper", (yaml.SafeDumper,), {})  # SafeDumper stays as it is
    dumper.add_representer(str, text)
    return str(yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True))


def parse_json(body: bytes) -> Any:
    """The JSON body; ``#`` comments to the end of a line (outside strings) are dropped,
    as Cronitor's own documentation writes one inside a request body."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("invalid JSON body: it is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as first:
        try:
            return json.loads(_without_comments(text))
        except json.JSONDecodeError:
            raise BadRequest(f"invalid JSON body: {first}") from None
    except RecursionError:
        raise BadRequest("invalid JSON body: nested too deeply") from None


def _without_comments(text: str) -> str:
    out, in_string, escaped, comment = [], False, False, False
    for c in text:
        if comment:
            if c == "\n":
                comment = False
                out.append(c)
            continue
        if in_string:
            out.append(c)
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == "#":
            comment = True
        else:
            out.append(c)
            in_string = c == '"'
    return "".join(out)


def _count(m: dict[str, Any], field: str, where: str) -> int | None:
    v = m[field]
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer():
        raise BadRequest(f"{where}: {field}: expected a whole number, not {str(v)[:40]!r}")
    return int(v)


def realert_seconds(text: Any, where: str) -> float | None:
    """Cronitor's realert_interval ("every 8 hours", "every 30 minutes", "never")."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise BadRequest(f"{where}: realert_interval: expected text such as 'every 8 hours'")
    words = text.strip().lower()
    if words in ("never", "", "none"):
        return None
    words = words.removeprefix("every").strip()
    number, _, unit = words.partition(" ")
    if not unit:
        number, unit = "1", number
    short = {"minute": "m", "minutes": "m", "hour": "h", "hours": "h", "day": "d", "days": "d",
             "week": "w", "weeks": "w", "second": "s", "seconds": "s"}.get(unit.strip())  # fmt: skip
    try:
        if short is None:
            raise ValidationError("unknown unit")
        return parse_duration(f"{number}{short}")
    except ValidationError:
        raise BadRequest(
            f"{where}: realert_interval: {text[:60]!r}: expected such as 'every 8 hours', "
            "'every 30 minutes' or 'never'"
        ) from None


def to_settings(m: dict[str, Any], where: str) -> dict[str, Any]:
    """A monitor's fields as job settings (normalised by the schema afterwards)."""
    s: dict[str, Any] = {}
    if "schedules" in m:
        found = m["schedules"]
        if not isinstance(found, list) or len(found) > 1:
            raise BadRequest(f"{where}: schedules: cronwatch takes one schedule a monitor")
        s["schedule"] = found[0] if found else ""
    if "schedule" in m:
        s["schedule"] = m["schedule"] or ""
    if "timezone" in m and m["timezone"] is not None:
        s["tz"] = m["timezone"]
    if "grace_seconds" in m:
        s["grace"] = m["grace_seconds"] or 0
    if "failure_tolerance" in m:
        n = _count(m, "failure_tolerance", where)
        s["alert_after"] = 1 if n is None else n + 1
    if "schedule_tolerance" in m:
        s["schedule_tolerance"] = _count(m, "schedule_tolerance", where)
    if "consecutive_alert_threshold" in m:
        s["surge_threshold"] = _count(m, "consecutive_alert_threshold", where)
    if "realert_interval" in m:
        s["realert"] = realert_seconds(m["realert_interval"], where)
    if "assertions" in m:
        s["asserts"] = m["assertions"] or []
    if "notify" in m:
        found = m["notify"]
        if isinstance(found, dict):  # the shape Cronitor reads back: {"alerts": [...], ...}
            found = found.get("alerts") or []
        s["notify"] = found or []
    if "tags" in m:
        s["tags"] = m["tags"] or []
    if "paused" in m:
        s["paused"] = m["paused"]
    return s


@dataclass(slots=True)
class Plan:
    """One monitor of a request, checked: what it changes of its job."""

    name: str
    key: str
    kind: str  # "" when not given
    attrs: dict[str, Any]  # name, note: as given
    settings: dict[str, Any]  # normalised by the settings schema


def plan(m: dict[str, Any]) -> Plan:
    """Check one monitor (its JSON types checked already) against the settings schema."""
    key = m["key"]
    name = name_for_key(key)
    where = f"monitor {key!r}"
    attrs: dict[str, Any] = {f: (m[f] or "") for f in ("name", "note") if f in m}
    try:
        settings = normalize_all(to_settings(m, where), where=f"{where}:")
    except ValidationError as e:
        raise BadRequest(str(e)) from None
    return Plan(name, key, m.get("type", ""), attrs, settings)


def merge(
    store: Store, p: Plan, keys: dict[str, tuple[str, dict[str, Any]]]
) -> tuple[Job, str, dict[str, Any]]:
    """The job a plan makes of the stored one (a field not given keeps its value); a new
    one starts from Cronitor's defaults: the first failure and the first miss alert."""
    job = store.find_job(p.name) or Job(name=p.name, alert_after=1, schedule_tolerance=0)
    for k, v in p.settings.items():
        setattr(job, k, v)
    timed_pause(job, p.settings)
    before = keys[p.name][1] if p.name in keys else {}
    attrs = {**before, **p.attrs, "type": p.kind or before.get("type", "job")}
    return job, p.key, attrs


def find(store: Store, key: str) -> Job:
    """The job a monitor key names (by its kept key, or as a job name)."""
    for name, (ext, _) in store.job_keys().items():
        if ext == key:
            return store.get_job(name)
    try:
        job = store.find_job(name_for_key(key))
    except ValidationError:
        job = None
    if job is None:
        raise NotFound(f"monitor {key[:80]!r} not found")
    return job


def realert_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"every {n} {unit}{'s' if n != 1 else ''}"
    return f"every {int(seconds)} seconds"


def planned_view(job: Job, key: str, attrs: dict[str, Any], read_only: bool) -> dict[str, Any]:
    """A monitor as a request would save it (``rollback``): its history is not read."""
    from cronwatch.core.health import evaluate

    now = time.time()
    job.created_at = job.created_at or now  # a new monitor would be created now
    report = evaluate(job, last_finished=None, open_runs=[], anchor=job.created_at, now=now)
    info = {"health": str(report.health), "next_expected": report.next_expected}
    return _view(job, key, attrs, None, info, read_only)


def monitor_view(
    store: Store, job: Job, keys: dict[str, tuple[str, dict[str, Any]]], read_only: bool
) -> dict[str, Any]:
    """A job as Cronitor shows a monitor."""
    key, attrs = keys.get(job.name, (job.name, {}))
    return _view(job, key, attrs, store.last_run(job.name),
                 describe(store, job.name, now=time.time()), read_only)  # fmt: skip


def _view(
    job: Job,
    key: str,
    attrs: dict[str, Any],
    last: Run | None,
    info: dict[str, Any],
    read_only: bool,
) -> dict[str, Any]:
    latest = None
    if last is not None:
        metrics = {} if last.duration is None else {"duration": last.duration}
        latest = {
            "stamp": last.ended_at if last.ended_at is not None else last.started_at,
            "msg": last.message,
            "event": _EVENT.get(last.status, last.status.value),
            "metrics": metrics,
            "host": last.host or None,
        }
    notify = job.notify if not read_only else [redact(c) for c in job.notify]
    return {
        "key": key,
        "type": attrs.get("type", "job"),
        "name": attrs.get("name") or key,
        "note": attrs.get("note") or None,
        "schedule": job.schedule or None,
        "schedules": [job.schedule] if job.schedule else [],
        "timezone": job.tz,
        "grace_seconds": int(job.grace),
        "failure_tolerance": job.alert_after - 1,
        "schedule_tolerance": job.schedule_tolerance,
        "consecutive_alert_threshold": job.surge_threshold,
        "realert_interval": realert_text(job.realert),
        "assertions": list(job.asserts),
        "notify": notify,
        "tags": list(job.tags),
        "paused": job.paused,
        "paused_until": None if job.paused_until is None else iso(job.paused_until),
        "passing": info["health"] not in ("failing", "missed", "timeout"),
        "disabled": False,
        "initialized": last is not None,
        "latest_event": latest,
        "next_expected_at": None if info["next_expected"] is None else int(info["next_expected"]),
        "created": iso(job.created_at),
    }
