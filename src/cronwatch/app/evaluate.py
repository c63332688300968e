"""Evaluation: the adapter between the pure core (schedule, health, alerting, assertions)
and the store. Used by the wrapper after each run, by ``cronwatch check`` and by the
server's scheduler — the same decisions everywhere.

Every function takes ``now``; nothing here reads the clock, so ``check --at`` travels in time.
Each returns the events it caused (dicts with ``type``: run.ok, run.error, job.missed,
job.timeout, job.recovered, incident.opened, incident.closed; built by
``cronwatch.core.events``) for the server's event log.

What happens after a run finished is decided here and only here (``after_finish``,
``after_timeout``), for every ingest path: the wrapper's runs (``settle``, in their
post-run step), pings of every dialect and API check-ins (the server's writer,
``server.apply``), ``check``; and runs whose wrapper was killed (``close_abandoned``).
"""

from __future__ import annotations

from cronwatch.core import events as ev
from cronwatch.core.errors import (
    CronwatchError,
    DeliveryError,
    LostClaim,
    StoreError,
    ValidationError,
)
from cronwatch.core.model import Job, Run, Status, env_label
from cronwatch.core.values import format_time, iso

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from typing import Any

MAX_ATTEMPTS = 8
_ATTEMPTS = 5  # evaluations of a job that lost its claim to another process, at most
OUTPUT_TAIL = 2048


def _tail(run: Run | None) -> str:
    if run is None:
        return ""
    data = (run.stdout or b"") + (run.stderr or b"")
    return data[-OUTPUT_TAIL:].decode("utf-8", "replace")


def apply_assertions(store: Any, job: Job, run: Run, *, now: float) -> bool:
    """Turn a successful run that breaks a rule into a failure. True if it changed.

    A rule that cannot be parsed (stored before validation was fixed, or by an older
    version) is skipped and logged: the run is recorded all the same, as it came in.
    """
    if run.status is not Status.SUCCESS or not job.asserts:
        return False
    from cronwatch.core.assertions import check_rules, parse_rule

    try:
        failure = check_rules([parse_rule(r) for r in job.asserts], run)
    except (CronwatchError, TypeError, ValueError) as e:
        import logging  # only here: the wrapper pays for every import

        logging.getLogger("cronwatch").warning(
            "job %s: its assertions cannot be checked (%s); fix them with `cronwatch job set`",
            job.name, e,
        )  # fmt: skip
        return False
    if failure is None:
        return False
    run.status = Status.FAILED
    run.message = f"assertion failed: {failure}"
    store.update_run(run, now=now)
    return True


def steady(raw: dict[str, Any] | None, job: Job, run: Run) -> bool:
    """True when recording ``run`` cannot change anything that matters: a success for a
    job that is up, with no failure streak and its recovery count already reached.

    on_outcome would only count one more success (ok_streak is read only while down, and
    the failure that brings a job down resets it first) and prune old send times (pruned
    again on every use), so no action can follow and the stored state need not be
    rewritten: the common healthy ping costs no alert-state write (the server also skips
    the read, from its cache).
    """
    return (
        raw is not None
        and run.status is Status.SUCCESS
        and not raw.get("down")
        and not raw.get("fail_streak")
        and not raw.get("incident_open")
        and int(raw.get("ok_streak") or 0) >= job.recover_after
    )


def record_outcome(store: Any, job: Job, run: Run, *, now: float) -> list[dict[str, Any]]:
    """Advance the job's alert state with a finished run; queue notifications."""
    if run.status is Status.RUNNING or job.disabled:
        return []
    if steady(store.alert_summary(job.name, run.env), job, run):
        return []  # (the summary is read without decoding the state: no json import)
    return _record_outcomes(store, job, run.env, [run], now)


_UNREAD: Any = object()


def after_finish(
    store: Any, job: Job, run: Run, *, now: float, alert: Any = _UNREAD
) -> list[dict[str, Any]]:
    """Everything that follows a finished run, in the caller's transaction: the job's
    assertions (may turn a success into a failure), the run's ``run.ok``/``run.error``
    event, then the alert state machine's events (incidents, notifications queued).

    ``alert``: the (job, env) alert state or summary if the caller has it (the ping
    writer keeps them), so that a steady success costs no read.
    """
    apply_assertions(store, job, run, now=now)
    return [ev.run_finished(run), *_outcome(store, job, run, now, alert)]


def after_timeout(
    store: Any, job: Job, run: Run, *, now: float, alert: Any = _UNREAD
) -> list[dict[str, Any]]:
    """``after_finish`` for a run just marked timed out: ``job.timeout``, then the alerts."""
    return [ev.job_timeout(run), *_outcome(store, job, run, now, alert)]


def _outcome(store: Any, job: Job, run: Run, now: float, alert: Any) -> list[dict[str, Any]]:
    try:
        if alert is _UNREAD:
            return record_outcome(store, job, run, now=now)
        if run.status is Status.RUNNING or job.disabled or steady(alert, job, run):
            return []
        return _record_outcomes(store, job, run.env, [run], now)
    except StoreError:
        raise  # the store's trouble (busy, I/O): the caller retries the whole write
    except (CronwatchError, TypeError, ValueError, KeyError, AttributeError) as e:
        # Settings or an alert state stored by an older version that this one cannot
        # read: the run is recorded all the same (it was acknowledged); the alerts of
        # this job wait until its settings are fixed.
        import logging  # only here: the wrapper pays for every import

        logging.getLogger("cronwatch").error(
            "job %s: cannot evaluate its alerts after run %s (%s: %s); fix its settings "
            "with `cronwatch job set`", job.name, run.id, type(e).__name__, e,
        )  # fmt: skip
        return []


def _record_outcomes(
    store: Any, job: Job, env: str, runs: list[Run], now: float, head: Any = None
) -> list[dict[str, Any]]:
    """Advance the alert state of (job, env) with finished runs, in order: the state is
    read once and written once (`check` after a long outage records many missed runs of
    a job at a time). ``head(run)``, if given, is the event that goes before each run's."""
    # Imported here, not at the top: a steady success (most wrapped runs) never needs the
    # state machine, and the wrapper pays for every import.
    from cronwatch.core.alerting import AlertState, Policy, cause_of, on_outcome

    resume_if_due(store, job, now)
    raw, version = store.read_alert_state(job.name, env)
    state = AlertState.from_dict(raw) if raw else AlertState()
    policy = Policy.from_job(job)
    decided: list[tuple[Run, list[Any], bool, bool]] = []
    for run in runs:
        was_down, was_failing = state.down, state.fail_streak > 0
        state, actions = on_outcome(
            state, policy, failed=run.status.is_failure, paused=job.paused, cause=cause_of(run),
            at=now, missed=run.status is Status.MISSED,
        )  # fmt: skip
        decided.append(
            (run, actions, was_down and not state.down, was_failing and not run.status.is_failure)
        )
    new = state.to_dict()
    # The transition is claimed before it is acted on: of several processes (replicas,
    # `check`, a post-run step) that evaluated this job from the same stored state, one
    # stores it and queues its notifications; the others roll back and decide again.
    # A steady healthy job costs no write.
    if new != raw or any(d[1] for d in decided):
        _claim(store, job.name, env, new, version)
    events: list[dict[str, Any]] = []
    for run, actions, recovered, healthy in decided:
        if head is not None:
            events.append(head(run))
        events += _act(store, job, env, actions, run, now)
        if healthy:
            events.append(ev.job_healthy(run))
        if recovered:
            events.append(ev.job_recovered(job.name, env, run.id))
    return events


def _claim(store: Any, name: str, env: str, state: dict[str, Any], version: int) -> None:
    if not store.claim_alert_state(name, env, state, version=version):
        raise LostClaim(f"job {name}: its alert state changed meanwhile (another process "
                        "evaluated it); evaluating it again")  # fmt: skip


def _act(
    store: Any, job: Job, env: str, actions: list[Any], run: Run | None, now: float
) -> list[dict[str, Any]]:
    from cronwatch.core.alerting import CloseIncident, Notify, OpenIncident

    events: list[dict[str, Any]] = []
    for action in actions:
        if isinstance(action, OpenIncident):
            iid = store.open_incident(job.name, env, at=now, cause=action.cause,
                                      run_id=run.id if run else None)  # fmt: skip
            events.append(ev.incident_opened(job.name, env, iid, action.cause))
        elif isinstance(action, CloseIncident):
            iid = store.close_incident(job.name, env, at=now, run_id=run.id if run else None)
            if iid is not None:
                events.append(ev.incident_closed(job.name, env, iid))
        elif isinstance(action, Notify):
            if muted(job, env):  # the incident is on record; no one is told
                continue
            incident = store.current_incident(job.name, env)
            if incident is None and action.kind == "recovery":
                last = store.list_incidents(job=job.name, limit=1)
                incident = last[0]["id"] if last else None
            payload = {
                "kind": action.kind,
                "job": job.name,
                "status": run.status.value
                if run
                else ("success" if action.kind == "recovery" else "failed"),
                "cause": action.cause,
                "run": None if run is None else run.to_dict(output=False),
                "output_tail": _tail(run),
                "env": env,
                "at": now,
            }
            for channel in channels_of(store, job):
                store.enqueue_notification(job=job.name, incident_id=incident, kind=action.kind,
                                           channel=channel, payload=payload, at=now)  # fmt: skip
    return events


def channels_of(store: Any, job: Job) -> list[str]:
    """The job's channels with its notification lists expanded (each channel once). A name
    no list has stays as it is: its delivery fails with that reason, on record."""
    if not job.notify:
        return []
    lists: dict[str, list[str]] | None = None
    out: list[str] = []
    for channel in job.notify:
        if ":" not in channel:  # a notification list's name (a job name's alphabet)
            if lists is None:
                lists = store.notification_lists()
            found = lists.get(channel)
            if found is not None:
                out.extend(c for c in found if c not in out)
                continue
        if channel not in out:
            out.append(channel)
    return out


def resume_if_due(store: Any, job: Job, now: float) -> Job:
    """End a timed pause whose time has come: the job is saved resumed as of
    ``paused_until`` (so the schedule counts from there: the paused slots are never
    missed), whichever path sees it first (`check`, the scheduler, a run's evaluation)."""
    until = job.paused_until
    if job.paused and until is not None and now >= until:
        job.paused, job.paused_until = False, None
        store.save_job(job, now=until)  # stamps resumed_at = until
        job.resumed_at = until
    return job


def settle(store: Any, *, now: float, budget: float | None = None) -> list[dict[str, Any]]:
    """Evaluate the finished runs whose evaluation is pending, oldest first: a wrapped
    run is recorded by the wrapper and evaluated here, by its post-run step, the next
    run's, `check` or the server, whichever comes first.

    Each run is claimed in the transaction that evaluates it (assertions first, so the
    alert decision sees the final status), so it is evaluated exactly once, and one that
    fails or is interrupted stays pending. ``budget``: seconds, checked between runs.
    """
    import time

    started = time.monotonic()
    events: list[dict[str, Any]] = []
    for run in store.pending_runs(limit=200):
        if budget is not None and time.monotonic() - started >= budget:
            break
        try:
            with store.transaction():
                if not store.claim_pending(run.id):
                    continue  # another process evaluates it
                job = store.find_job(run.job)
                if job is None:  # deleted meanwhile: nothing to evaluate against
                    continue
                if job.disabled:  # records nothing: the wrapper kept it before it could know
                    store.forget_run(run.id)
                    continue
                found = after_finish(store, job, run, now=now)
                # in the claim's transaction: the events are logged exactly once, with it
                log_events(store, found, now=now)
                store.set_next_check(job.name, _deadline(store, job))
        except LostClaim:
            continue  # rolled back, still pending: the next settle evaluates it again
        events += found
    return events


def close_abandoned(store: Any, *, now: float, gone: Any = None) -> list[dict[str, Any]]:
    """Close the open runs whose wrapper is gone (killed, or the machine restarted): as
    timed out when past the wrapper's timeout or the job's max runtime, else as failed,
    with the cause. ``gone(owner)``: why the owner process is gone, or None (alive, or
    another host's: only that host can tell); by default ``system.process_gone``.

    Call it inside a transaction: the runs are read and closed under one write lock, so
    two checks at once cannot both close (and alert on) the same run."""
    if gone is None:
        from cronwatch.system import process_gone as gone
    from cronwatch.system import token_timeout

    events: list[dict[str, Any]] = []
    for run, owner in store.owned_open_runs():
        cause = gone(owner)
        if cause is None:
            continue
        job = store.get_job(run.job)
        limit = token_timeout(owner)
        if limit is None:
            limit = job.max_runtime
        run.ended_at = now
        run.duration = max(0.0, now - run.started_at)
        # closed only if still open: its wrapper's own end, a ping or another checker may
        # have closed it since it was read, and then it is theirs to evaluate
        if limit is not None and run.duration >= limit:
            run.status = Status.TIMEOUT
            run.message = f"{cause}; the job had run past its timeout of {limit:g}s"
            if not store.close_open_run(run, now=now):
                continue
            events += after_timeout(store, job, run, now=now)
        else:
            run.status = Status.FAILED
            run.message = f"{cause} before the job ended: its outcome is unknown"
            if not store.close_open_run(run, now=now):
                continue
            events += after_finish(store, job, run, now=now)
        store.set_next_check(job.name, _deadline(store, job))
    return events


def _check_job(store: Any, job: Job, now: float) -> tuple[list[dict[str, Any]], float | None]:
    """(events, the job's next deadline). Reads each thing once: `check` runs it per job."""
    from cronwatch.core.alerting import AlertState, Policy, on_tick
    from cronwatch.core.health import overdue

    name = job.name
    events: list[dict[str, Any]] = []
    resume_if_due(store, job, now)
    if job.disabled:
        return events, None
    if job.paused:
        return events, job.paused_until
    open_runs = store.open_runs_of(name)
    for run in overdue(job, open_runs, now):
        run.status = Status.TIMEOUT
        run.ended_at = now
        run.duration = now - run.started_at
        run.message = f"still running after the max runtime of {job.max_runtime:g}s"
        open_runs = [r for r in open_runs if r.id != run.id]
        if not store.close_open_run(run, now=now):
            continue  # finished (or timed out by another checker) since it was read
        events += after_timeout(store, job, run, now=now)
    looks: list[float] = []
    for env in watched_envs(job):
        anchor = _anchor(store, job, env)
        where = env or ""
        if job.schedule:
            from cronwatch.core.health import effective_grace

            grace = effective_grace(job)
            missed = [
                Run(job=name, started_at=expected, status=Status.MISSED, ended_at=expected,
                    env=where, source="scheduler",
                    message=f"missed: expected at {format_time(expected)} UTC "
                            f"(+{grace:g}s grace), no run started")
                for expected in _missed(job, grace, anchor, now)
            ]  # fmt: skip
            if missed:
                store.record_runs(missed, now=now)  # one insert for a whole outage's runs
                anchor = max(anchor, max(r.started_at for r in missed))

                def head(run: Run) -> dict[str, Any]:
                    return ev.job_missed(run, iso(run.started_at))

                events += _record_outcomes(store, job, where, missed, now, head)
        raw, version = store.read_alert_state(name, where)
        state = None
        if raw:
            old = AlertState.from_dict(raw)
            state, actions = on_tick(old, Policy.from_job(job), paused=job.paused, at=now)
            if state != old or actions:  # claimed first, as in _record_outcomes
                _claim(store, name, where, state.to_dict(), version)
            if actions:
                events += _act(store, job, where, actions, store.last_run(name, env=env), now)
        env_runs = open_runs if env is None else [r for r in open_runs if r.env == env]
        look = _next_look(job, anchor, env_runs, state)
        if look is not None:
            looks.append(look)
    return events, min(looks, default=None)


def watched_envs(job: Job) -> list[str | None]:
    """The environments checked for missed runs, as stored names; [None] when the job
    lists none: then the default environment is checked, counting from the newest run of
    any environment (as before environments were listed: a job whose runs all name one
    is not missed in the default one)."""
    from cronwatch.core.model import env_key

    if not job.environments:
        return [None]
    return [*sorted({env_key(e) for e in job.environments})]


def muted(job: Job, env: str) -> bool:
    """Whether ``env``'s alerts are switched off (its incidents are recorded all the same)."""
    from cronwatch.core.model import env_key

    return any(env_key(e) == env for e in job.mute_envs)


def _anchor(store: Any, job: Job, env: str | None = None) -> float:
    """What the schedule counts from: the newest run's start (of ``env`` if given), or the
    job's creation; and never before the job was last resumed, so that paused windows are
    never missed."""
    newest = store.newest_start(job.name, env)
    anchor = newest if newest is not None else job.created_at
    return anchor if job.resumed_at is None else max(anchor, job.resumed_at)


def _next_look(job: Job, anchor: float, open_runs: list[Run], state: Any) -> float | None:
    """The earliest instant at which the clock alone can change this job: its missed or
    max-runtime deadline, or a reminder or held-back alert while it is down."""
    found: list[float] = []
    if job.schedule or job.max_runtime is not None:  # else only the alert state can
        from cronwatch.core.health import next_deadline

        deadline = next_deadline(job, anchor, open_runs)
        if deadline is not None:
            found.append(deadline)
    if state is not None and state.down:  # only a job that is down has reminders
        from cronwatch.core.alerting import Policy, next_tick

        tick = next_tick(state, Policy.from_job(job), paused=job.paused)
        if tick is not None:
            found.append(tick)
    return min(found, default=None)


def _missed(job: Job, grace: float, anchor: float, now: float) -> list[float]:
    from cronwatch.core.schedule import missed_deadlines, parse_schedule

    return missed_deadlines(parse_schedule(job.schedule), job.tz, grace, anchor, now)


def check_all(
    store: Any, *, now: float, unchecked: list[str] | None = None
) -> list[dict[str, Any]]:
    """Evaluate every job that can have changed by ``now``.

    Each job remembers when it next needs a look (its missed or max-runtime deadline, or
    a reminder); writes reset that. So a check touches only the due jobs, not all of them.
    ``unchecked``: see ``check_jobs``.
    """
    # Runs recorded but not evaluated yet (their post-run step was cut short) come first:
    # they happened before anything the clock decides now.
    settled = settle(store, now=now)  # logs its events with each claim
    for attempt in range(_ATTEMPTS):
        try:
            with store.transaction():
                events = close_abandoned(store, now=now)
                events += check_jobs(store, store.due_jobs(now=now), now=now,
                                     unchecked=unchecked)  # fmt: skip
                log_events(store, events, now=now)
            return settled + events
        except LostClaim:  # another process decided meanwhile: decide on what it stored
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def check_jobs(
    store: Any, names: list[str], *, now: float, unchecked: list[str] | None = None
) -> list[dict[str, Any]]:
    """Evaluate ``names`` as of ``now`` and store when each next needs a look; inside the
    caller's transaction (the events are the caller's to log). Each job in a savepoint:
    one that cannot be evaluated (a schedule stored by an older version) is looked at
    again in a minute, and the others go on; what it says is appended to ``unchecked``
    when given (`cronwatch check` reports it and fails), else logged (the server). A lost
    claim (``LostClaim``) rolls back that job alone and evaluates it again on what is
    stored now."""
    events: list[dict[str, Any]] = []
    deadlines: list[tuple[str, float | None]] = []
    for name in names:
        for attempt in range(_ATTEMPTS):
            store.savepoint()
            try:
                job = store.find_job(name)
                if job is None:  # deleted since it was found due
                    store.release_savepoint()
                    break
                found, deadline = _check_job(store, job, now)
            except LostClaim:
                _undo(store)
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            except StoreError:
                _undo(store)
                raise  # the database's trouble: the caller retries the whole write
            except (CronwatchError, TypeError, ValueError, KeyError, AttributeError) as e:
                _undo(store)
                why = (f"job {name}: cannot check it ({type(e).__name__}: {e}); fix its "
                       "settings with `cronwatch job set`")  # fmt: skip
                if unchecked is not None:
                    unchecked.append(why)
                else:
                    import logging

                    logging.getLogger("cronwatch").error("%s", why)
                deadlines.append((name, now + 60.0))
                break
            store.release_savepoint()
            events += found
            deadlines.append((name, deadline))
            break
    if deadlines:
        store.set_next_checks(deadlines)
    return events


def _undo(store: Any) -> None:
    """Roll back to the job's savepoint, unless the database already rolled the whole
    transaction back (then the savepoint is gone, and the caller's error says why)."""
    if store.in_transaction():
        store.rollback_to_savepoint()


def log_events(store: Any, events: list[dict[str, Any]], *, now: float) -> None:
    """Append ``events`` to the event log, in the caller's transaction: the wrapper's and
    ``check``'s write to the server's database too, whose event stream picks them up."""
    if events:
        store.add_events([(now, str(e["type"]), ev.to_json(e)) for e in events])


def job_deadline(store: Any, name: str, *, now: float) -> float | None:
    """The earliest instant at which this job's health can change by the clock alone."""
    return _deadline(store, store.get_job(name))


def _deadline(store: Any, job: Job) -> float | None:
    if job.disabled:
        return None
    if job.paused:
        return job.paused_until  # a timed pause ends by itself then
    timed = bool(job.schedule) or job.max_runtime is not None
    all_open = store.open_runs_of(job.name) if timed else []
    looks: list[float] = []
    for env in watched_envs(job):
        anchor = _anchor(store, job, env) if timed else job.created_at
        open_runs = all_open if env is None else [r for r in all_open if r.env == env]
        state = None
        summary = store.alert_summary(job.name, env or "")
        if summary and summary.get("down"):  # imported only then: the wrapper pays for imports
            from cronwatch.core.alerting import AlertState

            state = AlertState.from_dict(store.get_alert_state(job.name, env or ""))
        look = _next_look(job, anchor, open_runs, state)
        if look is not None:
            looks.append(look)
    return min(looks, default=None)


def deliver_outbox(store: Any, *, now: float, budget: float = 30.0, timeout: float = 5.0) -> int:
    """Send due notifications; failures are retried later with exponential backoff."""
    import time

    due = store.due_notifications(now=now)
    if not due:  # the usual case after a run: nothing to send, so no channel to load
        return 0
    from cronwatch.notify import Message, send

    integrations: dict[str, dict[str, str]] | None = None
    sent = 0
    started = time.monotonic()
    for item in due:
        elapsed = time.monotonic() - started
        if elapsed > budget:
            break
        # ``now`` moved on by the sends before this one: a claim's lease counted from the
        # start of the round could be over before the send begins, and then another
        # replica's outbox would take the same notification and send it again
        at = now + elapsed
        if not store.claim_notification(item["id"], attempts=item["attempts"], now=at,
                                        lease=timeout * 3):  # fmt: skip
            continue  # another process took it
        try:
            # one key for every attempt of this notification (its id, and its event's
            # time: ids alone repeat across databases)
            payload = item["payload"]
            if isinstance(payload, dict):
                payload = {**payload, "delivery": _delivery_key(item["id"], payload.get("at"))}
            msg = Message.from_dict(payload)
            if integrations is None and ":" in item["channel"] and "://" not in item["channel"]:
                integrations = store.integrations()  # a shorthand: email:, slack:#, ...
            send(item["channel"], msg, timeout=timeout, integrations=integrations)
        except ValidationError as e:  # a bad channel or template: retrying cannot help
            store.finish_notification(item["id"], ok=False, now=at, error=str(e)[:500])
            continue
        except (DeliveryError, CronwatchError, OSError) as e:
            attempts = item["attempts"] + 1
            retry = (
                None if attempts >= MAX_ATTEMPTS else at + min(3600.0, 30.0 * 2 ** (attempts - 1))
            )
            store.finish_notification(
                item["id"], ok=False, now=at, error=str(e)[:500], retry_at=retry
            )
            continue
        store.finish_notification(item["id"], ok=True, now=at)
        sent += 1
    return sent


def _delivery_key(nid: int, at: Any) -> str:
    try:
        at_ms = int(float(at) * 1000)
    except (TypeError, ValueError, OverflowError):
        at_ms = 0
    return f"cronwatch-{nid}-{at_ms}"


# Which of several environments' healths a job shows: the most urgent (core/health.py)
_URGENCY = {"disabled": 0, "paused": 0, "timeout": 1, "missed": 2, "failing": 3, "late": 4,
            "healthy": 5, "unknown": 6}  # fmt: skip


def describe(store: Any, name: str, *, now: float, env: str | None = None) -> dict[str, Any]:
    """Health and slow-down findings for stats/jobs/dashboard; of one environment's runs
    when ``env`` is given (the stored name: "" for the default one)."""
    from cronwatch.core.health import evaluate
    from cronwatch.core.stats import slowdown

    job = store.get_job(name)
    finished = [s for s in Status if s is not Status.RUNNING]
    # A job watched in several environments is as healthy as its worst one, as each is
    # checked for missed runs on its own (the reason names it)
    envs = [env] if env is not None or not job.environments else watched_envs(job)
    out: dict[str, Any] = {}
    for e in envs:
        last_finished = store.last_run(name, statuses=finished, env=e)
        report = evaluate(job, last_finished=last_finished, open_runs=store.open_runs_of(name, e),
                          anchor=_anchor(store, job, e), now=now)  # fmt: skip
        health = str(report.health)
        if out and _URGENCY.get(health, 9) >= _URGENCY.get(out["health"], 9):
            if report.next_expected is not None:
                out["next_expected"] = min(out["next_expected"] or report.next_expected,
                                           report.next_expected)  # fmt: skip
            continue
        reason = report.reason if len(envs) == 1 else f"{env_label(e or '')}: {report.reason}"
        nxt = report.next_expected
        if out and out["next_expected"] is not None:
            nxt = out["next_expected"] if nxt is None else min(nxt, out["next_expected"])
        out = {"health": health, "health_reason": reason, "next_expected": nxt}
    durations = [d for d, st in store.recent_durations(name, 110, env) if st == "success"]
    finding = slowdown(durations)
    out["slowdown"] = finding.text() if finding else None
    return out
