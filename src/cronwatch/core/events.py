"""The event log's records: one builder per event type, used by every path that records one.

Events go to the server's event log (``events`` table, streamed over SSE) and come back
from ``cronwatch check`` and the wrapper. A consumer must not have to know which ingest
path recorded a run to read its event, so each type has exactly one shape, made here.
(The ping writer's quick path, ``server.apply``, stores its ``run.ok`` rows compact, see
``expand``; the stores' ``events_since`` expand them, and a test compares what they read
with ``run_finished``'s.)

Events about a run carry the run: its id, job, env, status, times, duration, exit code.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from typing import Any

    from cronwatch.core.model import Run


def _run(type_: str, run: Run) -> dict[str, Any]:
    return {"type": type_, "job": run.job, "env": run.env, "run": run.id,
            "status": run.status.value, "started_at": run.started_at, "ended_at": run.ended_at,
            "duration": run.duration, "exit_code": run.exit_code}  # fmt: skip


def run_started(run: Run) -> dict[str, Any]:
    return _run("run.started", run)


def run_finished(run: Run) -> dict[str, Any]:
    """``run.ok`` for a success, ``run.error`` for any other finished run."""
    return _run("run.ok" if run.status.value == "success" else "run.error", run)


def job_timeout(run: Run) -> dict[str, Any]:
    """A run marked timed out (past its max runtime, or a new run started meanwhile)."""
    return _run("job.timeout", run)


def job_missed(run: Run, expected: str | None) -> dict[str, Any]:
    """A missed run (``expected``: when it was due, ISO 8601)."""
    ev = _run("job.missed", run)
    ev["expected"] = expected
    return ev


def job_healthy(run: Run) -> dict[str, Any]:
    """A success right after a failure (failed, missed or timed out) of the same job and
    environment: its health is back, whatever the alert thresholds said (``job.recovered``
    is the alert state's, after ``recover_after`` successes while an incident was open)."""
    return _run("job.healthy", run)


def run_log(job: str, env: str, run_id: str | None, size: int) -> dict[str, Any]:
    """Output appended to a run (a log ping); ``run_id`` None: no run was open."""
    return {"type": "run.log", "job": job, "env": env, "run": run_id, "bytes": size}


def job_recovered(job: str, env: str, run_id: str) -> dict[str, Any]:
    return {"type": "job.recovered", "job": job, "env": env, "run": run_id}


def incident_opened(job: str, env: str, incident: int, cause: str) -> dict[str, Any]:
    return {"type": "incident.opened", "job": job, "env": env, "incident": incident,
            "cause": cause}  # fmt: skip


def incident_closed(job: str, env: str, incident: int) -> dict[str, Any]:
    return {"type": "incident.closed", "job": job, "env": env, "incident": incident}


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
            "\f": "\\f"}  # fmt: skip


def to_json(event: dict[str, Any]) -> str:
    """``json.dumps(event)`` for an event's flat dict (str, int, float, bool, None values),
    character for character, without the json module: the wrapper logs its run's events,
    and json (with the re it imports) would cost every wrapped run its import."""
    return "{" + ", ".join(f"{_string(k)}: {_value(v)}" for k, v in event.items()) + "}"


def _value(v: object) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return float.__repr__(v)
    raise TypeError(f"an event holds {type(v).__name__}, not a JSON scalar")


def _string(s: str) -> str:
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif " " <= ch <= "~":
            out.append(ch)
        else:  # as json's ensure_ascii: \uXXXX, a surrogate pair beyond the BMP
            n = ord(ch)
            if n > 0xFFFF:
                n -= 0x10000
                out.append(f"\\u{0xD800 | (n >> 10):04x}\\u{0xDC00 | (n & 0x3FF):04x}")
            else:
                out.append(f"\\u{n:04x}")
    return '"' + "".join(out) + '"'


def expand(at: float, type_: str, data: str) -> str:
    """An event's JSON as the log hands it out: ``data`` itself, or the object of a
    compact ``run.ok`` row. The ping writer's quick path stores its successes' events as
    a JSON array, ``[job, env, run]`` (started and ended at ``at``, the event's time; no
    duration or exit code) or ``[job, env, run, started_at, duration, exit_code]``: about
    a fifth of the object's bytes, on the row every ping adds to the event log (on
    PostgreSQL it was half of what a ping wrote to the tables, and the kernel's writeback
    of it stalled commits). Every other event is stored as its object."""
    if type_ != "run.ok" or not data.startswith("["):
        return data
    import json  # here: the wrapper imports this module and never reads the log

    v = json.loads(data)
    ended = repr(float(at))
    if len(v) == 3:
        started, duration, code = ended, "null", "null"
    else:
        started = repr(v[3])
        duration = "null" if v[4] is None else repr(v[4])
        code = "null" if v[5] is None else str(int(v[5]))
    dumps = json.dumps
    return (f'{{"type": "run.ok", "job": {dumps(v[0])}, "env": {dumps(v[1])}, "run": '
            f'{dumps(v[2])}, "status": "success", "started_at": {started}, "ended_at": '
            f'{ended}, "duration": {duration}, "exit_code": {code}}}')  # fmt: skip
