"""Recording pings in the writer thread, inside the group transaction.

The run semantics are the store's (``start_run``, ``finish_run``, ``append_output``) and
the alert decisions are ``cronwatch.checks`` (assertions, ``record_outcome``), exactly as
for any other ingest path. What this adds is memory between pings, because the writer
thread pays for every statement and every JSON round trip with the event loop's GIL time:

- jobs by ping key / name (a key lookup plus a settings parse per ping otherwise);
- each (job, env)'s alert state, so that a success for a healthy job (``checks.steady``)
  skips the alert evaluation without even reading the state;
- event-log rows, written with one executemany per batch (``flush``) just before commit.

The writer (``ingest.Writer``) calls ``invalidate`` whenever the database may have changed
behind these caches: after any other operation (API, scheduler), after a rollback, and
when another connection committed. A ping that fails raises before writing its events.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .. import checks
from ..errors import NotFound
from ..models import Job, Status, new_run_id
from ..store.base import Store
from .ping import FAIL, HEARTBEAT, LOG, START, Ping, _event

_dumps = json.JSONEncoder(check_circular=False).encode  # event dicts are flat, never cyclic


class Applier:
    def __init__(self, project_key: str) -> None:
        self.project_key = project_key
        self.by_key: dict[str, Job] = {}
        self.by_name: dict[str, Job] = {}
        self.alert: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.rows: list[tuple[float, str, str]] = []  # event-log rows not yet written

    # --- the writer's cache protocol ----------------------------------------------------
    def invalidate(self) -> None:
        self.by_key.clear()
        self.by_name.clear()
        self.alert.clear()

    def flush(self, store: Store) -> None:
        if self.rows:
            rows, self.rows = self.rows, []
            store.add_events(rows)  # type: ignore[attr-defined]

    def discard(self) -> None:
        self.rows.clear()

    # --- jobs ----------------------------------------------------------------------------
    def _named(self, store: Store, name: str) -> Job | None:
        job = self.by_name.get(name)
        if job is None:
            job = store.find_job(name)
            if job is not None:
                self.by_name[name] = job
        return job

    def resolve(self, store: Store, p: Ping) -> str:
        """The job a ping is for. Raises NotFound before anything is written."""
        if p.key:
            job = self.by_key.get(p.key)
            if job is None:
                job = store.job_by_key(p.key)
                if job is None:
                    raise NotFound("not found")
                self.by_key[p.key] = job
                self.by_name[job.name] = job
            return job.name
        if p.project_key != self.project_key:
            raise NotFound("not found")
        if not p.create and self._named(store, p.slug) is None:
            raise NotFound("not found")
        return p.slug

    # --- applying --------------------------------------------------------------------------
    def apply(
        self, store: Store, p: Ping, body: bytes | None, now: float | None = None
    ) -> dict[str, Any]:
        """Record the ping; returns {"job", "run", "events"} (events also go to the log)."""
        now = time.time() if now is None else now
        job = self.resolve(store, p)
        events: list[dict[str, Any]] = []
        src = "ping:" + p.dialect
        if p.action == START:
            run, timed_out = store.start_run(job, now=now, run_id=p.rid, env=p.env,
                                             host=p.host, source=src)  # fmt: skip
            for t in timed_out:  # a timed-out run is a failure for the alert state too
                extra = self.after(store, t, now)
                events.append(_event("job.timeout", t))
                events.extend(extra)
            if body:
                store.append_output(job, body, now=now, run_id=run.id, env=p.env)
            events.append(_event("run.started", run))
        elif p.action == LOG:
            rid = store.append_output(job, body or b"", now=now, run_id=p.rid, env=p.env)
            events.append({"type": "run.log", "job": job, "env": p.env, "run": rid,
                           "bytes": len(body or b"")})  # fmt: skip
            run = None
        else:
            status = Status.FAILED if p.action == FAIL else Status.SUCCESS
            rid = p.rid
            if p.action == HEARTBEAT and rid is None:
                rid = new_run_id(now)  # a heartbeat never closes an open run
            run = store.finish_run(job, status, now=now, run_id=rid, env=p.env,
                                   exit_code=p.exit_code, duration=p.duration,
                                   stdout=body or None, message=p.message, host=p.host,
                                   source=src)  # fmt: skip
            extra = self.after(store, run, now)  # may turn a success into a failure (asserts)
            events.append(_event("run.ok" if run.status is Status.SUCCESS else "run.error", run))
            events.extend(extra)
        self.rows.extend([(now, ev["type"], _dumps(ev)) for ev in events])
        return {"job": job, "run": None if run is None else run.id, "events": events}

    def after(self, store: Store, run: Any, now: float) -> list[dict[str, Any]]:
        """Assertions and the alert state machine for a finished run (see _after_ping)."""
        job = self._named(store, run.job) or store.get_job(run.job)
        checks.apply_assertions(store, job, run, now=now)
        key = (job.name, run.env)
        if key in self.alert:
            raw = self.alert[key]
        else:
            raw = self.alert[key] = store.get_alert_state(job.name, run.env)  # type: ignore[attr-defined]
        if checks.steady(raw, job, run):
            return []  # what record_outcome would decide, without its read
        self.alert.pop(key, None)  # record_outcome may store a new state
        return list(checks.record_outcome(store, job, run, now=now) or [])
