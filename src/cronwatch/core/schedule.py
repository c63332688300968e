"""Schedules: cron, intervals, times of day and systemd OnCalendar -> next expected time.

Pure: every function takes the instant it reasons about (UTC seconds since the epoch) and
a time zone name; nothing reads the clock. Wall-clock forms (cron, ``at``, OnCalendar) are
evaluated in the job's zone so a daily 02:30 job stays at 02:30 local across DST:

- cron and ``at`` follow Debian cron (via cronsim): on a spring-forward day a time that
  does not exist fires once, at the first minute that does; on a fall-back day a fixed
  time fires once, at its first occurrence. Expressions whose minute or hour field
  starts with ``*`` follow the UTC clock, so ``*/15 * * * *`` keeps firing every 15
  minutes through both transitions.
- OnCalendar follows systemd (via oncalendar): times that do not exist are skipped.
- intervals (``every 2h``) are exact durations after the anchor; zones do not apply.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from cronwatch.core.errors import ValidationError

Kind = Literal["cron", "interval", "at", "oncalendar"]

SCHEDULE_HELP = (
    "expected a 5-field cron expression ('*/15 * * * *', '0 9 * * mon-fri'), "
    "@hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually, "
    "an interval ('every 15m', 'every 2 hours', 'every 1h30m', 'every day'), "
    "times of day ('at 13:37', 'at 08:00, 20:00', 'at 08:00 and 20:00'), "
    "or a systemd OnCalendar expression ('Mon..Fri *-*-* 09:00:00', 'daily', "
    "'*-*-* *:00/15:00'; prefix 'oncalendar:' to force it, or 'cron:' for cron)"
)
TZ_HELP = "expected an IANA time zone name such as Europe/Berlin, America/New_York or UTC"

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MIN_INTERVAL = 1.0

_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
# Longest spellings first so "minutes" is not read as "m" followed by junk.
_INTERVAL_PART = re.compile(
    r"\s*(\d+(?:\.\d+)?)?\s*"
    r"(weeks?|w|days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)(?![a-z])"
)
_AT_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_AT_SPLIT = re.compile(r"\s*(?:,|\band\b)\s*")
# A chain of impossible-to-satisfy steps would otherwise spin; real schedules need 1-2.
_MAX_SKIPS = 100_000


def _bad(text: str, why: str = "") -> ValidationError:
    detail = f" ({why})" if why else ""
    return ValidationError(f"invalid schedule {text!r}{detail}: {SCHEDULE_HELP}")


@lru_cache(maxsize=256)
def _zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC  # cronsim and oncalendar skip DST handling entirely for datetime.UTC
    return ZoneInfo(name)


def validate_tz(name: str) -> str:
    """Return ``name`` if it is a known IANA time zone ('utc' is accepted as 'UTC')."""
    if isinstance(name, str) and name.strip().upper() in ("UTC", "Z"):
        return "UTC"
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ValidationError(f"unknown time zone {name!r}: {TZ_HELP}") from None
    return name


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule. Build it with :func:`parse_schedule`.

    ``exprs`` holds the cron expressions (kinds cron and at) or OnCalendar expressions;
    ``interval`` the seconds of an interval schedule.
    """

    text: str
    kind: Kind
    exprs: tuple[str, ...] = ()
    interval: float | None = None

    def __str__(self) -> str:
        return self.text

    def next_after(self, t: float, tz: str = "UTC") -> float:
        return _next_after(self, t, tz)

    def _compute_next(self, t: float, tz: str) -> float:
        """The first expected time strictly after ``t`` (UTC epoch seconds), in zone ``tz``.

        Always ``> t`` and monotone in ``t``. Returns ``math.inf`` when the schedule has
        no later occurrence (an OnCalendar date in the past, a cron day that never comes).
        """
        if self.interval is not None:
            return t + self.interval
        zone = _zone(validate_tz(tz))
        nxt = _next_cron if self.kind in ("cron", "at") else _next_oncalendar
        return min(nxt(expr, t, zone) for expr in self.exprs)


@lru_cache(maxsize=8192)
def _next_after(schedule: Schedule, t: float, tz: str) -> float:
    # The same (schedule, instant) is asked for twice per job by `check` (missed runs,
    # then the next deadline); answers are pure, so remember recent ones.
    return schedule._compute_next(t, tz)


def _first_after(it: Iterator[datetime], t: float) -> float:
    # Both libraries iterate in naive local time when a zone has DST; a start inside the
    # second pass of a repeated (fall-back) hour can therefore yield instants from the
    # first pass, which lie before ``t``. Skipping them keeps next_after monotone.
    try:
        for _ in range(_MAX_SKIPS):
            ts = next(it).timestamp()
            if ts > t:
                return ts
    except StopIteration:
        pass
    return math.inf


def _start(t: float, zone: tzinfo) -> datetime:
    # Whole seconds: the libraries drop microseconds and step one second, and
    # fromtimestamp rounds, so 8:59:59.9999999 would otherwise become 9:00 and skip 9:00.
    return datetime.fromtimestamp(math.floor(t), zone)


@lru_cache(maxsize=1024)
def _cron_parsed(expr: str, zone: tzinfo) -> CronSim:
    # Parsing dominates CronSim's cost; `check` over thousands of jobs shares a few
    # expressions. The parsed iterator is copied and rewound for each use.
    return CronSim(expr, datetime.fromtimestamp(0, zone))


def _next_cron(expr: str, t: float, zone: tzinfo) -> float:
    found, fixed = _cronsim_after(expr, t, zone)
    if fixed or zone is UTC or found == math.inf:
        return found
    # Wildcard expressions follow the UTC clock. CronSim rounds an hour down to minute 0
    # in local time and then steps whole hours: after an offset change that is not whole
    # hours (Lord Howe's 30 minutes) that rounding lands before the change and the steps
    # skip a match (00:30 -> 02:30 instead of 02:00 +10:30). Before the change CronSim is
    # right; from it to the next change the offset is fixed, so ask in that fixed zone.
    change = _offset_change(zone, t, found, odd_only=True)
    if change is None:
        return found
    off = datetime.fromtimestamp(change, zone).utcoffset() or timedelta(0)
    found, _ = _cronsim_after(expr, change - 1, timezone(off))
    after = _offset_change(zone, change, found)
    return found if after is None else _next_cron(expr, after - 1, zone)


def _cronsim_after(expr: str, t: float, zone: tzinfo) -> tuple[float, bool]:
    it = copy.copy(_cron_parsed(expr, zone))
    start = _start(t, zone)
    # CronSim keeps naive local time when it mimics Debian cron's DST handling.
    fixed = it.fixup_tz is not None
    it.dt = start.replace(tzinfo=None) if fixed else start
    it.skip_initial_tick = False
    return _first_after(it, t), fixed


def _offset_change(zone: tzinfo, a: float, b: float, odd_only: bool = False) -> float | None:
    """The first instant in (a, b] where ``zone`` changes its UTC offset (by a part of an
    hour only, with ``odd_only``), or None. Offsets change a few times a year at most:
    look a day at a time, then bisect to the second."""

    def offset(u: float) -> float:
        off = datetime.fromtimestamp(u, zone).utcoffset()
        return off.total_seconds() if off is not None else 0.0

    lo, before = a, offset(a)
    while lo < b:
        hi = min(lo + 86400.0, b)
        after = offset(hi)
        if after != before:
            while hi - lo > 1:  # offset(lo) == before != offset(hi)
                mid: float = math.floor((lo + hi) / 2)
                if mid <= lo:
                    mid = lo + (hi - lo) / 2
                if offset(mid) == before:
                    lo = mid
                else:
                    hi = mid
            if not odd_only or (after - before) % 3600:
                return math.ceil(hi)
            before = after
        lo = hi
    return None


def _next_oncalendar(expr: str, t: float, zone: tzinfo) -> float:
    from oncalendar import OnCalendar  # only OnCalendar schedules pay for this import

    return _first_after(OnCalendar(expr, _start(t, zone)), t)


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule in any accepted form; raise ValidationError listing the forms.

    Detection: ``oncalendar:``/``cron:`` prefixes force a form; ``@name`` is a cron alias;
    ``every ...`` an interval; ``at ...`` times of day; five fields a cron expression
    (an OnCalendar expression has at most four: weekday, date, time, zone); anything
    else is tried as OnCalendar.
    """
    if not isinstance(text, str):
        raise _bad(str(text))
    return _parse(text.strip())


@lru_cache(maxsize=1024)
def _parse(s: str) -> Schedule:
    low = s.lower()
    if not s:
        raise _bad(s, "empty")
    if low.startswith("oncalendar:"):
        return _parse_oncalendar(s, s[len("oncalendar:") :].strip())
    if low.startswith("cron:"):
        expr = s[len("cron:") :].strip()
        if expr.startswith("@"):
            return replace(_parse(expr), text=s)
        return _parse_cron(s, expr)
    if s.startswith("@"):
        if low == "@reboot":
            raise _bad(s, "@reboot has no expected time; leave the schedule empty")
        if low not in CRON_ALIASES:
            raise _bad(s, "unknown @ alias")
        return Schedule(s, "cron", (CRON_ALIASES[low],))
    if low == "every" or low.startswith("every "):
        return _parse_interval(s, low[len("every") :].strip())
    if low.startswith("at "):
        return _parse_at(s, s[3:].strip())
    if "\n" not in s and len(s.split()) == 5:
        return _parse_cron(s, s)
    return _parse_oncalendar(s, s)


def _parse_cron(text: str, expr: str) -> Schedule:
    if len(expr.split()) != 5:
        raise _bad(text, "cron needs 5 fields: minute hour day-of-month month day-of-week")
    try:
        CronSim(expr, datetime(2000, 1, 1))
    except (CronSimError, ValueError) as e:  # cronsim reports "Bad minute" and the like
        raise _bad(text, str(e)) from None
    return Schedule(text, "cron", (" ".join(expr.split()),))


def _parse_interval(text: str, rest: str) -> Schedule:
    pos, total, parts = 0, 0.0, 0
    while pos < len(rest):
        m = _INTERVAL_PART.match(rest, pos)
        if not m or m.end() == pos:
            raise _bad(text, "cannot read the interval")
        total += float(m.group(1) or 1) * _UNIT_SECONDS[m.group(2)[0]]
        pos, parts = m.end(), parts + 1
    if parts == 0:
        raise _bad(text, "missing interval")
    if not math.isfinite(total) or total < MIN_INTERVAL:
        raise _bad(text, f"an interval must be at least {MIN_INTERVAL:g}s")
    return Schedule(text, "interval", interval=total)


def _parse_at(text: str, rest: str) -> Schedule:
    times: set[tuple[int, int]] = set()
    for item in _AT_SPLIT.split(rest):
        m = _AT_TIME.fullmatch(item)
        if not m:
            raise _bad(text, f"{item!r} is not a time of day HH:MM")
        times.add((int(m.group(1)), int(m.group(2))))
    # One cron expression per distinct minute ("0 8,20 * * *") keeps Debian DST rules.
    by_minute: dict[int, list[int]] = {}
    for hour, minute in sorted(times):
        by_minute.setdefault(minute, []).append(hour)
    exprs = tuple(
        f"{minute} {','.join(map(str, hours))} * * *" for minute, hours in sorted(by_minute.items())
    )
    return Schedule(text, "at", exprs)


def _parse_oncalendar(text: str, expr: str) -> Schedule:
    from oncalendar import OnCalendar, OnCalendarError

    lines = tuple(line.strip() for line in expr.splitlines() if line.strip())
    if not lines:
        raise _bad(text, "empty OnCalendar expression")
    try:
        for line in lines:
            OnCalendar(line, datetime(2000, 1, 1, tzinfo=UTC))
    except (OnCalendarError, ValueError, IndexError) as e:
        raise _bad(text, f"not cron, and OnCalendar says: {e}") from None
    return Schedule(text, "oncalendar", lines)


def missed_deadlines(
    schedule: Schedule | str,
    tz: str,
    grace: float,
    anchor: float,
    now: float,
    limit: int = 100,
) -> list[float]:
    """Expected times after ``anchor`` whose deadline (time + grace) is at or before ``now``.

    Each is ``next_after`` of the previous, starting from ``anchor``; oldest first. At
    most ``limit`` come back, so one call is bounded work even after a long outage. When
    exactly ``limit`` come back there may be more: record them, and the next call (with
    ``anchor`` = the last one, which is what recording them as runs does) continues
    where this one stopped. Nothing is skipped or merged.
    """
    sched = parse_schedule(schedule) if isinstance(schedule, str) else schedule
    out: list[float] = []
    expected = anchor
    while len(out) < limit:
        expected = sched.next_after(expected, tz)
        if expected + grace > now:  # also ends an exhausted schedule (inf)
            break
        out.append(expected)
    return out
