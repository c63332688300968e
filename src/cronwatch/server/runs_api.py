"""Run check-ins through the API (SDKs): the same run semantics as pings."""

from __future__ import annotations

from typing import Any

from cronwatch.core.errors import Conflict
from cronwatch.core.model import Run, Status, env_key, validate_name
from cronwatch.core.values import cap_bytes
from cronwatch.server.api_models import RunCreate, RunPatch
from cronwatch.server.apply import Applier
from cronwatch.store.interface import Store


def _output(text: str | None, limit: int) -> bytes | None:
    return None if text is None else cap_bytes(text.encode("utf-8", "surrogateescape"), limit)


def _log(store: Store, events: list[dict[str, Any]], now: float) -> None:
    for ev in events:
        store.add_event(ev["type"], ev, now=now)


def create_run_op(store: Store, job: str, body: RunCreate, now: float, limit: int) -> Run:
    validate_name(job)
    found = store.find_job(job)
    if found is not None and found.disabled:
        raise Conflict(f"job {job!r} is disabled: it records nothing (enable it first)")
    ingest = Applier("")  # the pings' run semantics and evaluation, without their caches
    if body.status == "in_progress":
        output = None if not body.output else body.output.encode("utf-8", "surrogateescape")
        run, events = ingest.start(store, job, now, rid=body.run_id, env=env_key(body.env),
                                   host=body.host, source="api", output=output,
                                   limit=limit)  # fmt: skip
        _log(store, events, now)
        return store.get_run(run.id)
    status = Status.SUCCESS if body.status == "ok" else Status.FAILED
    duration = None if body.duration_ms is None else body.duration_ms / 1000
    run, events = ingest.finish(store, job, status, now, rid=body.run_id, env=env_key(body.env),
                                exit_code=body.exit_code, duration=duration,
                                stdout=_output(body.output, limit), message=body.message,
                                host=body.host, source="api")  # fmt: skip
    _log(store, events, now)
    return run


def _times(run: Run, body: RunPatch, now: float | None) -> tuple[float, float] | None:
    """(ended_at, duration) for a patch, so that ended_at - started_at is the duration.

    The start stays: it is when the run was recorded as begun, the schedule counts from
    it and its day's statistics hold it. So ``duration_ms`` moves the end (ended_at =
    started_at + duration) and ``finished_at`` sets the duration; both at once must agree.
    None when the patch says nothing about times (``now`` None: a finished run keeps its
    own)."""
    start = run.started_at
    end = body.finished_at
    duration = None if body.duration_ms is None else body.duration_ms / 1000
    # Both are well-formed numbers; the run's own start is what refuses them: 409.
    if end is not None and end < start:
        raise Conflict(f"invalid finished_at {end!r}: before the run started ({start!r})")
    if end is not None and duration is not None and abs(end - start - duration) > 0.001:
        raise Conflict(
            f"finished_at and duration_ms disagree: the run started at {start!r}, so "
            f"finished_at {end!r} means a duration of {(end - start) * 1000:.0f} ms; "
            "send one of them"
        )
    if duration is not None:
        return start + duration, duration
    if end is None:
        if now is None:
            return None
        end = max(now, start)
    return end, end - start


def patch_run_op(store: Store, run_id: str, body: RunPatch, now: float, limit: int) -> Run:
    run = store.get_run(run_id, output=True)
    fields = body.model_dump(exclude_unset=True)
    if not run.status.is_finished and fields.keys() & {"status", "finished_at", "duration_ms"}:
        if body.status is not None:
            status = Status.SUCCESS if body.status == "ok" else Status.FAILED
        else:
            status = Status.FAILED if body.exit_code else Status.SUCCESS
        times = _times(run, body, now)
        assert times is not None  # given ``now``, there is always an end
        end, duration = times
        # run_id is the run's own id: within its job and env it names this (open) run
        done, events = Applier("").finish(
            store, run.job, status, end, rid=run_id, env=run.env, exit_code=body.exit_code,
            duration=duration, stdout=_output(body.output, limit), message=body.message or "",
            source=run.source,
        )  # fmt: skip
        _log(store, events, now)
        return store.get_run(done.id)
    if body.status is not None:
        run.status = Status.SUCCESS if body.status == "ok" else Status.FAILED
    times = _times(run, body, None)
    if times is not None:
        run.ended_at, run.duration = times
    if "exit_code" in fields:
        run.exit_code = body.exit_code
    if body.output is not None:
        run.stdout = _output(body.output, limit)
    if body.message is not None:
        run.message = body.message
    store.update_run(run, now=now)
    return store.get_run(run_id)
