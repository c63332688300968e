"""Ping dialects: URL + query -> one ``Ping`` (what happened to which job).

Parsing is pure; ``server.apply.Applier`` records pings in the writer thread, inside the
group transaction.

    simob        /jobs/p/{key}?state=run|complete|fail[&v=1]
    Healthchecks /ping/{key}[/start|/fail|/log|/{0-255}][?rid=]
                 /ping/{project-key}/{slug}[/start|/fail|/log|/{0-255}][?create=1]
    Cronitor     /p/{project-key}/{job}, /ping/{project-key}/{job}
                 ?state=run|complete|fail|ok&message=&metric=duration:1.5&series=&env=&host=
    Loom         /ping/{key}/start, /ping/{key}/fail, ?exit_code=N; JSON answers
                 ({"checkin_id": ...}) with Accept: application/json or ?format=json
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from cronwatch.core.errors import CronwatchError, ValidationError
from cronwatch.core.model import env_key, name_for_key, validate_name, validate_run_id

START, SUCCESS, FAIL, LOG, HEARTBEAT = "start", "success", "fail", "log", "heartbeat"
_SIMOB_STATES = {"run": START, "complete": SUCCESS, "fail": FAIL}
_CRONITOR_STATES = {"run": START, "complete": SUCCESS, "fail": FAIL, "ok": SUCCESS}
_CRONITOR_PARAMS = ("state", "message", "msg", "metric", "series", "env", "host", "status_code")
_HC_ACTIONS = {"start": START, "fail": FAIL, "log": LOG}
MAX_FIELD = 2000  # message, host and env are cut to this; a ping cannot bloat a row
# Every number a ping carries is bounded here, at the edge: a value SQLite cannot store
# (an integer past 64 bits) or that means nothing (NaN, infinity, a negative duration) is a
# 400 naming the field, never an exception in the writer. The API's bounds are the same
# (server/api_models.py: RunCreate, RunPatch).
EXIT_CODE_MIN, EXIT_CODE_MAX = -1000, 1000  # Cronitor's status_code, the API's exit_code
MAX_DURATION = 1e9  # seconds (~31 years)
MAX_COUNT = 1e15  # Cronitor's count and error_count metrics


class BadPing(CronwatchError):
    http_status = 400


@dataclass(slots=True)
class Ping:
    dialect: str
    key: str = ""  # a job's ping key, or
    project_key: str = ""  # the project key + slug
    slug: str = ""
    create: bool = False
    action: str = SUCCESS
    exit_code: int | None = None
    rid: str | None = None
    env: str = ""
    host: str = ""
    message: str = ""
    duration: float | None = None
    want_execution: bool = False  # simob's v=1: {"execution": run id}
    want_checkin: bool = False  # Loom's start ping asked for JSON: {"checkin_id": run id}
    ext_key: str = ""  # a Cronitor key that is not a job name (slug holds its job's name)
    extra: dict[str, str] = field(default_factory=dict)


def _exit_status(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 3 or int(text) > 255:
        raise BadPing(f"invalid exit status {text[:40]!r}: expected 0-255")
    return int(text)


def _cut(text: str) -> str:
    return text[:MAX_FIELD]


def parse_ping(path: str, query: str) -> Ping | None:
    """The ping a request describes; None if the path is not a ping route (404)."""
    parts = path.strip("/").split("/")
    if len(parts) > 4 or len(path) > 600:
        return None
    params = parse_qsl(query, keep_blank_values=True, max_num_fields=64) if query else []
    q: dict[str, str] = {}
    metrics: list[str] = []
    for k, v in params:
        if k == "metric":
            metrics.append(v)
        else:
            q.setdefault(k, v)
    head = parts[0]
    if head == "jobs" and len(parts) == 3 and parts[1] == "p":
        p = Ping("simob", key=parts[2])
        state = q.get("state", "").lower()
        if state not in _SIMOB_STATES:
            raise BadPing("missing or invalid state: expected state=run, complete or fail")
        p.action = _SIMOB_STATES[state]
        p.want_execution = q.get("v") == "1"
    elif head == "p" and len(parts) == 3:
        p = Ping("cronitor", project_key=parts[1], slug=parts[2], create=True)
    elif head == "ping" and 2 <= len(parts) <= 4:
        p = _parse_ping_path(parts[1:], q)
        # app.ping adds it when the request's Accept names JSON (Loom's SDKs); plain
        # clients get "OK", which Healthchecks' clients compare
        p.want_checkin = q.get("format") == "json"
    else:
        return None
    if p.dialect == "cronitor":
        _cronitor(p, q, metrics)
    else:  # cronwatch's own client sends these on every dialect; others simply omit them
        p.message = _cut(q.get("message") or q.get("msg") or "")
        _metrics(p, metrics)
    if "rid" in q:
        p.rid = _rid(q["rid"])
    if "exit_code" in q:  # Loom
        p.exit_code = _exit_status(q["exit_code"])
        if p.action == SUCCESS and p.exit_code != 0:
            p.action = FAIL
    if "env" in q:
        p.env = env_key(_cut(q["env"]))
    if p.slug:
        try:
            validate_name(p.slug)
        except ValidationError as e:
            if p.dialect != "cronitor":
                raise BadPing(str(e)) from None
            try:  # a monitor key in Cronitor's spelling (mixed case, longer): its job
                p.slug, p.ext_key = name_for_key(p.slug), p.slug
            except ValidationError as e2:
                raise BadPing(str(e2)) from None
    return p


def _rid(text: str) -> str:
    try:
        return validate_run_id(text)
    except ValidationError as e:
        raise BadPing(str(e)) from None


def _parse_ping_path(rest: list[str], q: dict[str, str]) -> Ping:
    key = rest[0]
    if len(rest) == 1:
        return Ping("healthchecks", key=key)
    second = rest[1]
    if len(rest) == 2 and (second in _HC_ACTIONS or second.isdigit() or second.startswith("-")):
        return _suffix(Ping("healthchecks", key=key), second)
    # /ping/{project-key}/{slug}[/action]: Healthchecks slugs, and Cronitor when state=...
    cronitor = len(rest) == 2 and any(k in q for k in _CRONITOR_PARAMS)
    p = Ping("cronitor" if cronitor else "healthchecks", project_key=key, slug=second)
    p.create = cronitor or q.get("create") == "1"
    if len(rest) == 3:
        _suffix(p, rest[2])
    return p


def _suffix(p: Ping, segment: str) -> Ping:
    """The last path segment: /start, /fail, /log, or an exit status 0-255."""
    if segment in _HC_ACTIONS:
        p.action = _HC_ACTIONS[segment]
    else:
        p.exit_code = _exit_status(segment)
        p.action = SUCCESS if p.exit_code == 0 else FAIL
    return p


def _cronitor(p: Ping, q: dict[str, str], metrics: list[str]) -> None:
    state = q.get("state", "").lower()
    if state:
        if state not in _CRONITOR_STATES:
            raise BadPing("invalid state: expected state=run, complete, fail or ok")
        p.action = _CRONITOR_STATES[state]
    else:
        p.action = HEARTBEAT
    p.message = _cut(q.get("message") or q.get("msg") or "")
    p.host = _cut(q.get("host", ""))
    if q.get("series"):
        p.rid = _rid(q["series"])
    if q.get("status_code"):
        p.exit_code = _status_code(q["status_code"])
    _metrics(p, metrics)
    if p.extra:
        counts = " ".join(f"{k}={v}" for k, v in sorted(p.extra.items()))
        p.message = f"{p.message} ({counts})" if p.message else counts


def _status_code(text: str) -> int:
    digits = text[1:] if text[:1] == "-" else text
    ok = digits.isascii() and digits.isdigit() and len(digits) <= 4
    if not ok or not EXIT_CODE_MIN <= int(text) <= EXIT_CODE_MAX:
        raise BadPing(
            f"invalid status_code {text[:40]!r}: expected an integer from "
            f"{EXIT_CODE_MIN} to {EXIT_CODE_MAX}"
        )
    return int(text)


def _metrics(p: Ping, metrics: list[str]) -> None:
    """Repeated ``metric=name:value``: duration (seconds), count, error_count."""
    for m in metrics:
        name, _, value = m.partition(":")
        try:
            number = float(value)
        except ValueError:
            raise BadPing(f"invalid metric {m[:60]!r}: expected name:number") from None
        if name == "duration":
            if not 0 <= number < MAX_DURATION:  # also refuses NaN and infinities
                raise BadPing(
                    f"invalid duration metric {m[:60]!r}: expected 0 to {MAX_DURATION:g} seconds"
                )
            p.duration = number
        elif name in ("count", "error_count"):
            if not 0 <= number < MAX_COUNT:
                raise BadPing(f"invalid {name} metric {m[:60]!r}: expected 0 to {MAX_COUNT:g}")
            p.extra[name] = value


def accepts_json(accept: bytes) -> bool:
    """An ``Accept`` value that names JSON before (or without) plain text: such a client
    reads a ping's answer as JSON (Loom's SDKs: the check-in id). Browsers and curl
    (``*/*``) get "OK"."""
    v = accept.lower()
    json_at = v.find(b"application/json")
    text_at = v.find(b"text/plain")
    return json_at >= 0 and (text_at < 0 or json_at < text_at)
