"""The alert state machine: outcomes and clock ticks in, incident and notification actions out.

One AlertState per job (and environment), stored as JSON by the adapter. Pure: the caller
passes ``at`` and applies the returned actions (open/close the incident row, enqueue
notifications in the outbox) in the same transaction that stores the new state.

Rules (defaults in Policy):

- ``alert_after`` consecutive failures (failed, timeout or missed) make the job down:
  an incident opens and ONE alert is sent. Further failures send nothing, except a
  ``reminder`` every ``realert`` seconds while it stays down (when realert is set).
- ``recover_after`` consecutive successes make it up again: the incident closes and a
  ``recovery`` is sent, but only if that incident's alert was sent. So alerts and
  recoveries strictly alternate, and nobody gets a recovery for an alert they never saw.
- Paused: outcomes still move the counters (``down`` tells the truth), but no incident
  opens and no alert or reminder is sent. When the job is unpaused while still down,
  the next tick or failure opens the incident and alerts. A recovery for an alert that
  was sent before the pause is still delivered: it closes a conversation already begun.
- Schedule tolerance (``miss_after``, when set): missed runs are counted apart from
  failures, in ``miss_streak``; ``miss_after`` consecutive misses make the job down. A run
  that happened (succeeded or failed) ends a miss streak; a miss leaves the failure streak
  as it was. Unset, a miss counts as a failure toward ``alert_after``.
- Surge protection: at most ``max_alerts_per_hour`` alerts plus reminders in any rolling
  hour per job (the job's ``surge_threshold``). Over the cap the incident still opens and closes, the notification is
  counted in ``suppressed`` and reported on the next one delivered; an incident whose
  alert was suppressed gets it late, on a later tick or failure once the hour has room,
  if it is still down. Recoveries are never suppressed and are not counted: each one
  follows a delivered alert, so they are bounded by the cap too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Job, Run, Status

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from typing import Any, Literal

    NotifyKind = Literal["alert", "recovery", "reminder"]

WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class Policy:
    alert_after: int = 2
    recover_after: int = 1
    realert: float | None = None
    max_alerts_per_hour: int | None = 6
    miss_after: int | None = None

    def __post_init__(self) -> None:
        if self.alert_after < 1 or self.recover_after < 1:
            raise ValidationError("alert_after and recover_after must be at least 1")
        if self.miss_after is not None and self.miss_after < 1:
            raise ValidationError("miss_after must be at least 1 (or unset)")
        if self.realert is not None and self.realert <= 0:
            raise ValidationError("realert must be a positive duration (or unset)")
        if self.max_alerts_per_hour is not None and self.max_alerts_per_hour < 1:
            raise ValidationError("max_alerts_per_hour must be at least 1 (or unset for no cap)")

    @classmethod
    def from_job(cls, job: Job) -> Policy:
        """The policy a job's settings describe: ``schedule_tolerance`` N tolerates N
        missed runs, so the N+1st alerts."""
        tolerance = job.schedule_tolerance
        return cls(
            alert_after=job.alert_after,
            recover_after=job.recover_after,
            realert=job.realert or None,
            max_alerts_per_hour=job.surge_threshold,
            miss_after=None if tolerance is None else tolerance + 1,
        )


@dataclass(frozen=True, slots=True)
class OpenIncident:
    cause: str


@dataclass(frozen=True, slots=True)
class CloseIncident:
    pass


@dataclass(frozen=True, slots=True)
class Notify:
    """Send a notification. ``suppressed``: how many the surge limit held back before it."""

    kind: NotifyKind
    cause: str
    suppressed: int = 0


Action = OpenIncident | CloseIncident | Notify


@dataclass(slots=True)
class AlertState:
    """Per-job alert state. ``cause``: the latest failure's cause while down.

    ``alerted``: the open incident's alert was delivered (not suppressed, not paused).
    ``next_reminder_at``: when the next reminder is due while down (with realert).
    """

    down: bool = False
    fail_streak: int = 0
    ok_streak: int = 0
    incident_open: bool = False
    last_alert_at: float | None = None
    sent: list[float] = field(default_factory=list)
    suppressed: int = 0
    cause: str = ""
    alerted: bool = False
    next_reminder_at: float | None = None
    miss_streak: int = 0

    def to_dict(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict: its recursive deep copy was a fifth of `check`'s
        # time when a thousand jobs each recorded a run of missed runs
        return {
            "down": self.down,
            "fail_streak": self.fail_streak,
            "ok_streak": self.ok_streak,
            "incident_open": self.incident_open,
            "last_alert_at": self.last_alert_at,
            "sent": list(self.sent),
            "suppressed": self.suppressed,
            "cause": self.cause,
            "alerted": self.alerted,
            "next_reminder_at": self.next_reminder_at,
            "miss_streak": self.miss_streak,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AlertState:
        """Inverse of to_dict. Missing keys take defaults and unknown keys are ignored, so
        states stored by an older or newer version still load."""
        if not d:
            return cls()
        try:
            return cls(
                down=bool(d.get("down", False)),
                fail_streak=int(d.get("fail_streak", 0)),
                ok_streak=int(d.get("ok_streak", 0)),
                incident_open=bool(d.get("incident_open", False)),
                last_alert_at=_opt_float(d.get("last_alert_at")),
                sent=[float(x) for x in d.get("sent") or []],
                suppressed=int(d.get("suppressed", 0)),
                cause=str(d.get("cause") or ""),
                alerted=bool(d.get("alerted", False)),
                next_reminder_at=_opt_float(d.get("next_reminder_at")),
                miss_streak=int(d.get("miss_streak", 0)),
            )
        except (TypeError, ValueError) as e:
            raise ValidationError(f"invalid alert state: {e}") from None


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _copy(state: AlertState, at: float) -> AlertState:
    # Never mutate the caller's state; drop send times that left the rolling hour.
    return replace(state, sent=[s for s in state.sent if s > at - WINDOW])


def _has_room(st: AlertState, policy: Policy) -> bool:
    return policy.max_alerts_per_hour is None or len(st.sent) < policy.max_alerts_per_hour


def _send(st: AlertState, policy: Policy, kind: NotifyKind, at: float, out: list[Action]) -> None:
    out.append(Notify(kind, st.cause, st.suppressed))
    st.sent.append(at)
    st.last_alert_at = at
    st.suppressed = 0
    st.next_reminder_at = None if policy.realert is None else at + policy.realert


def _while_down(st: AlertState, policy: Policy, paused: bool, at: float, out: list[Action]) -> None:
    """Open the incident, deliver a held-back alert, or remind, as the state calls for."""
    if not st.down or paused:
        return
    if not st.incident_open:
        st.incident_open, st.alerted = True, False
        out.append(OpenIncident(st.cause))
        if _has_room(st, policy):
            _send(st, policy, "alert", at, out)
            st.alerted = True
        else:
            st.suppressed += 1
    elif not st.alerted:
        # Held back by the surge limit when the incident opened (already counted).
        if _has_room(st, policy):
            _send(st, policy, "alert", at, out)
            st.alerted = True
    elif st.next_reminder_at is not None and at >= st.next_reminder_at:
        if _has_room(st, policy):
            _send(st, policy, "reminder", at, out)
        else:
            # Skip this reminder (counted once) rather than retry it on every tick.
            st.suppressed += 1
            st.next_reminder_at = at + (policy.realert or WINDOW)


def cause_of(run: Run) -> str:
    """A finished run's ``cause`` for ``on_outcome``: why it counts as it does, in words.

    A fail ping or an API check-in may carry no exit code and no message: then the cause
    is "failed", never "exit code None"."""
    if run.status is Status.MISSED:
        return run.message or "missed: no run started in time"
    if run.status is Status.TIMEOUT:
        return run.message or "timed out"
    if run.message:
        return run.message
    if run.status is Status.SUCCESS:
        return "succeeded" + ("" if run.exit_code is None else f" (exit code {run.exit_code})")
    if run.signal is not None:
        return f"killed by signal {run.signal}"
    if run.exit_code is not None:
        return f"exit code {run.exit_code}"
    return "failed"


def on_outcome(
    state: AlertState,
    policy: Policy,
    *,
    failed: bool,
    paused: bool,
    cause: str,
    at: float,
    missed: bool = False,
) -> tuple[AlertState, list[Action]]:
    """Feed one finished run (success, or failed/timeout/missed as ``failed=True``;
    ``missed`` too for a missed run, which the schedule tolerance counts apart).

    ``cause`` is a one-line description ("exit code 1", "missed: expected 09:00",
    "timed out after 30m"); it goes into the incident and the notifications.
    """
    st, out = _copy(state, at), list[Action]()
    if missed and policy.miss_after is not None:
        st.miss_streak += 1
        st.ok_streak = 0
        st.cause = cause
        if st.miss_streak >= policy.miss_after:
            st.down = True
        _while_down(st, policy, paused, at, out)
        return st, out
    st.miss_streak = 0  # a run happened: the schedule was kept
    if failed:
        st.fail_streak += 1
        st.ok_streak = 0
        st.cause = cause
        if st.fail_streak >= policy.alert_after:
            st.down = True
        _while_down(st, policy, paused, at, out)
        return st, out

    st.ok_streak += 1
    st.fail_streak = 0
    if st.down and st.ok_streak >= policy.recover_after:
        st.down = False
        if st.incident_open:
            out.append(CloseIncident())
            if st.alerted:
                out.append(Notify("recovery", cause))
        st.incident_open = st.alerted = False
        st.next_reminder_at = None
        st.cause = ""
    return st, out


def on_tick(
    state: AlertState, policy: Policy, *, paused: bool, at: float
) -> tuple[AlertState, list[Action]]:
    """Let the clock act: reminders while down, a held-back alert once the hour has room,
    and the incident of a job unpaused while down."""
    st, out = _copy(state, at), list[Action]()
    _while_down(st, policy, paused, at, out)
    return st, out


def next_tick(state: AlertState, policy: Policy, *, paused: bool = False) -> float | None:
    """The earliest instant at which on_tick could act without a new outcome, or None.

    The instant may be in the past, meaning "due now". A held-back alert can go once the
    rolling hour has room; a reminder at next_reminder_at (or later, when the hour has
    room); the incident of a job unpaused while down at once.
    """
    if paused or not state.down:
        return None
    room_at = 0.0  # the hour has room already
    cap = policy.max_alerts_per_hour
    if cap is not None and len(state.sent) >= cap:
        room_at = sorted(state.sent)[-cap] + WINDOW
    if not state.incident_open:
        return 0.0  # went down while paused: the incident opens on the next tick
    if not state.alerted:
        return room_at
    if state.next_reminder_at is None:
        return None
    return max(state.next_reminder_at, room_at)
