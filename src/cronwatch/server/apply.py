"""Recording pings in the writer thread, inside the group transaction.

The run semantics are the store's (``start_run``, ``finish_run``, ``append_output``), what
follows a run is ``cronwatch.app.evaluate`` (``after_finish``, ``after_timeout``) and the
events are ``cronwatch.core.events``'s, exactly as for any other ingest path (API
check-ins, ``server.runs_api``, come through ``Applier.record`` too). What this adds is memory between pings, because the writer
thread pays for every statement and every JSON round trip with the event loop's GIL time:

- jobs by ping key / name (a key lookup plus a settings parse per ping otherwise);
- each (job, env)'s alert state, so that a success for a healthy job (``checks.steady``)
  skips the alert evaluation without even reading the state;
- event-log rows, written with one executemany per batch (``flush``) just before commit.

The writer (``ingest.Writer``) calls ``invalidate`` whenever the database may have changed
behind these caches: after any other operation (API, scheduler), after a rollback, and
when another connection committed. A ping that fails raises before writing its events.

The common ping needs less still (``_quick``): a success without a body or run id, for a
job with no assertions, no open run to close and a steady alert state, is a synthetic
finished run and one event and nothing else. Such pings become buffered rows, written
with one executemany per batch (``flush``), with a run id from ``RunIds`` and the event
stored compact (``core.events.expand``) from a per-(job, env) head. Any other ping writes the buffered rows first, so
rows and events stay in the order the pings came in.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from cronwatch.app import evaluate as checks
from cronwatch.core import events as ev
from cronwatch.core.errors import NotFound, StaleCache
from cronwatch.core.model import Job, Run, Status, new_run_id
from cronwatch.server.ingest import BufferLost
from cronwatch.server.ping import FAIL, HEARTBEAT, LOG, START, SUCCESS, Ping
from cronwatch.store.interface import Store

_dumps = json.JSONEncoder(check_circular=False).encode  # event dicts are flat, never cyclic
_ALPHABET = b"0123456789abcdefghjkmnpqrstvwxyz"  # models.new_run_id's (Crockford base32)
_RANDOM = bytes(_ALPHABET[b & 31] for b in range(256))  # 256 = 8 x 32: uniform
_OK = Run(job="", started_at=0.0, status=Status.SUCCESS)  # what checks.steady looks at
_SOURCES = {d: "ping:" + d for d in ("healthchecks", "simob", "cronitor")}  # runs.source


class RunIds:
    """``models.new_run_id`` without its per-id loop: the same 26 characters (the 48-bit
    millisecond clock in 10, then 80 random bits in 16), with the clock part computed once
    per millisecond and the random part taken from a pool of ``os.urandom`` bytes mapped
    onto the alphabet (each byte gives 5 uniform bits)."""

    def __init__(self) -> None:
        self.ms = -1
        self.prefix = ""
        self.pool = ""
        self.pos = 0

    def __call__(self, now: float) -> str:
        ms = int(now * 1000)
        if ms != self.ms:
            self.ms, value, out = ms, ms, []
            for _ in range(10):
                out.append(_ALPHABET[value & 31])
                value >>= 5
            self.prefix = bytes(reversed(out)).decode()
        pos = self.pos
        if pos >= len(self.pool):
            self.pool, pos = os.urandom(16 * 256).translate(_RANDOM).decode(), 0
        self.pos = pos + 16
        return self.prefix + self.pool[pos : pos + 16]


class Applier:
    def __init__(self, project_key: str) -> None:
        self.project_key: str | None = project_key  # None: read it again (invalidate)
        self.by_key: dict[str, Job] = {}
        self.by_name: dict[str, Job] = {}
        self.alert: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.rows: list[tuple[float, str, str]] = []  # event-log rows not yet written
        self.runs: list[tuple[Any, ...]] = []  # quick pings' runs not yet written
        self.run_jobs: set[int] = set()  # their job ids
        # (job, env) -> (job id, compact event head) while its successes take the quick path
        self.ready: dict[tuple[str, str], tuple[int, str]] = {}
        self.run_id = RunIds()
        self.quick = 0  # pings recorded by the quick path (a counter for benchmarks)

    # --- the writer's cache protocol ----------------------------------------------------
    def invalidate(self) -> None:
        # The key lives in meta, which another replica may have rotated: a ping with the
        # old key must not keep matching what this process read before.
        self.project_key = None
        self.by_key.clear()
        self.by_name.clear()
        self.alert.clear()
        self.ready.clear()

    def flush(self, store: Store) -> None:
        sql: Any = store  # the SQLite store's own methods
        if not self.runs and not self.rows:
            return
        runs, self.runs = self.runs, []
        rows, self.rows = self.rows, []
        try:
            sql.add_quick_rows(runs, self.run_jobs, rows, now=time.time())
        except StaleCache:
            raise  # nothing was written: the batch runs again on fresh caches
        except Exception as e:  # other pings' rows: the writer replays the batch
            raise BufferLost(f"buffered rows not written: {e}") from e
        finally:
            self.run_jobs.clear()

    def discard(self) -> None:
        self.rows.clear()
        self.runs.clear()
        self.run_jobs.clear()

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
            # the key may have been set since (`ping-key --set`, the API) or forgotten
            # (invalidate): read it again (only a ping with another key, or the first
            # after a change, pays for it)
            self.project_key = store.project_ping_key()
            if p.project_key != self.project_key:
                raise NotFound("not found")
        if p.ext_key and self._named(store, p.slug) is None:
            # a job named by a key in Cronitor's spelling: the key is kept beside it
            store.ensure_job(p.slug, now=time.time())
            store.set_job_key(p.slug, p.ext_key, {})
        if not p.create and self._named(store, p.slug) is None:
            raise NotFound("not found")
        return p.slug

    def _disabled(self, store: Store, name: str) -> bool:
        """A disabled job records nothing: its pings are answered and dropped."""
        job = self._named(store, name)
        return job is not None and job.disabled

    # --- applying --------------------------------------------------------------------------
    def apply(
        self, store: Store, p: Ping, body: bytes | None, now: float | None = None
    ) -> dict[str, Any]:
        """Record the ping; returns {"job", "run", "events"} (events also go to the log)."""
        now = time.time() if now is None else now
        job = self.resolve(store, p)
        if self._disabled(store, job):
            return {"job": job, "run": None, "events": []}
        if p.action == SUCCESS and p.rid is None and not body:
            rid = self._quick(store, job, p, now)
            if rid is not None:
                return {"job": job, "run": rid, "events": []}
        return self._full(store, job, p, body, now)

    def apply_item(self, store: Store, item: tuple[Ping, bytes | None]) -> Any:
        """``apply`` for the writer process (``Committer.commit_each``): a quick ping's
        result is its answer, (status, body, is_json, job, dialect, deliver), as
        ``pingproc.reply_for`` would make it of ``apply``'s result; any other ping's result
        is ``apply``'s."""
        p, body = item
        now = time.time()
        job = self.resolve(store, p)
        if self._disabled(store, job):
            return {"job": job, "run": None, "events": []}
        if p.action == SUCCESS and p.rid is None and not body:
            rid = self._quick(store, job, p, now)
            if rid is not None:
                if p.want_execution:
                    return 200, b'{"execution": "%s"}' % rid.encode(), True, job, p.dialect, False
                if p.want_checkin:
                    return 200, b'{"checkin_id": "%s"}' % rid.encode(), True, job, p.dialect, False
                return 200, b"OK", False, job, p.dialect, False
        return self._full(store, job, p, body, now)

    def _full(
        self, store: Store, job: str, p: Ping, body: bytes | None, now: float
    ) -> dict[str, Any]:
        self.flush(store)  # keep rows and events in order with what this ping writes
        self.ready.pop((job, p.env), None)  # this ping may open runs or change the alerts
        src = "ping:" + p.dialect
        if p.action == START:
            run, events = self.start(store, job, now, rid=p.rid, env=p.env, host=p.host,
                                     source=src, output=body)  # fmt: skip
        elif p.action == LOG:
            rid = store.append_output(job, body or b"", now=now, run_id=p.rid, env=p.env)
            events = [ev.run_log(job, p.env, rid, len(body or b""))]
            run = None
        else:
            status = Status.FAILED if p.action == FAIL else Status.SUCCESS
            rid = p.rid
            if p.action == HEARTBEAT and rid is None:
                rid = new_run_id(now)  # a heartbeat never closes an open run
            run, events = self.finish(store, job, status, now, rid=rid, env=p.env,
                                      exit_code=p.exit_code, duration=p.duration,
                                      stdout=body or None, message=p.message, host=p.host,
                                      source=src)  # fmt: skip
        self.rows.extend([(now, e["type"], _dumps(e)) for e in events])
        return {"job": job, "run": None if run is None else run.id, "events": events}

    # --- the run semantics of every ingest path (pings here, API check-ins too) ------------
    def start(
        self,
        store: Store,
        job: str,
        now: float,
        *,
        rid: str | None,
        env: str,
        host: str,
        source: str,
        output: bytes | None = None,
        limit: int = 1_000_000,
    ) -> tuple[Run, list[dict[str, Any]]]:
        """Open a run (``store.start_run``); the events: the runs it timed out, each with
        what follows it, then ``run.started``. Not yet in the event log (``log``)."""
        run, timed_out = store.start_run(job, now=now, run_id=rid, env=env, host=host,
                                         source=source)  # fmt: skip
        events: list[dict[str, Any]] = []
        for t in timed_out:  # a timed-out run is a failure for the alert state too
            events.extend(self.after(store, t, now, timeout=True))
        if output:
            store.append_output(job, output, now=now, run_id=rid, env=env, limit=limit)
        if run.started_at == now:  # else a start delivered again: logged once
            events.append(ev.run_started(run))
        return run, events

    def finish(
        self,
        store: Store,
        job: str,
        status: Status,
        now: float,
        *,
        rid: str | None,
        **fields: Any,
    ) -> tuple[Run, list[dict[str, Any]]]:
        """Finish a run (``store.finish_run``: the open one, or a synthetic one) and evaluate
        it; the events (``run.ok``/``run.error`` and what the alert state machine decided)."""
        run = store.finish_run(job, status, now=now, run_id=rid, **fields)
        if run.ended_at != now:  # a finish delivered again (the store's at-least-once rule):
            return run, []  # counted once, by the alerts and in the event log
        return run, self.after(store, run, now)

    def _quick(self, store: Store, name: str, p: Ping, now: float) -> str | None:
        """A success that only adds a synthetic run and its ``run.ok`` event (see the module
        doc), recorded as buffered rows; returns its run id, or None when the ping needs the
        full path."""
        ready = self.ready.get((name, p.env))
        if ready is None:
            ready = self._ready(store, (name, p.env), now)
            if ready is None:
                return None
        jid, head = ready
        rid = self.run_id(now)
        duration, code = p.duration, p.exit_code
        if duration is None and code is None:  # the usual ping
            self.runs.append((rid, jid, p.env, "success", now, now, None, None, p.host,
                              p.message, _SOURCES.get(p.dialect) or "ping:" + p.dialect))  # fmt: skip
            data = f'{head}{rid}"]'  # compact: core.events.expand
        else:
            started = now - duration if duration else now
            self.runs.append((rid, jid, p.env, "success", started, now, duration, code, p.host,
                              p.message, "ping:" + p.dialect))  # fmt: skip
            data = (f'{head}{rid}",{repr(started)},'
                    f'{"null" if duration is None else repr(duration)},'
                    f'{"null" if code is None else int(code)}]')  # fmt: skip
        self.run_jobs.add(jid)
        self.rows.append((now, "run.ok", data))
        self.quick += 1
        return rid

    def _ready(self, store: Store, key: tuple[str, str], now: float) -> tuple[int, str] | None:
        """(job id, compact event head) if successes for (job, env) can take the quick path:
        no assertions, a steady alert state, no open run. Remembered until a ping for
        (job, env) takes the full path or the caches are invalidated."""
        name, env = key
        job = self._named(store, name)
        if job is None or job.asserts:
            return None
        sql: Any = store  # the SQLite store's own methods
        if key in self.alert:
            raw = self.alert[key]
        else:
            raw = self.alert[key] = sql.get_alert_state(name, env)
        if not _steady(raw, job, _OK):
            return None
        jid = sql.ping_job_id(name, now=now)
        if sql.has_open_run(jid, env):
            return None  # finish_run closes it
        if len(self.ready) >= 4096:  # env names come from the URL: stay bounded
            self.ready.clear()
        head = f'[{_dumps(name)},{_dumps(env)},"'  # a compact run.ok: core.events.expand
        ready = self.ready[key] = (jid, head)
        return ready

    def after(
        self, store: Store, run: Run, now: float, *, timeout: bool = False
    ) -> list[dict[str, Any]]:
        """``checks.after_finish`` (or ``after_timeout``) with the alert state from the cache:
        a steady success reads nothing."""
        job = self._named(store, run.job) or store.get_job(run.job)
        sql: Any = store
        key = (job.name, run.env)
        if key in self.alert:
            raw = self.alert[key]
        else:
            raw = self.alert[key] = sql.get_alert_state(job.name, run.env)
        then = checks.after_timeout if timeout else checks.after_finish
        events = then(store, job, run, now=now, alert=raw)
        if not _steady(raw, job, run):
            self.alert.pop(key, None)  # the state machine may have stored a new state
        return events


def _steady(raw: dict[str, Any] | None, job: Job, run: Run) -> bool:
    """``checks.steady``; False (take the full path, evaluate) for settings or a state it
    cannot read: ``checks.after_finish`` logs those and records the run all the same."""
    try:
        return checks.steady(raw, job, run)
    except (TypeError, ValueError):
        return False
