"""A schedule in words, and its next expected times, for people (the console's forms).

Pure: the schedule is parsed by core/schedule.py (the one parser, so the words never
describe something the checks would read otherwise) and ``now`` is passed in.
"""

from __future__ import annotations

import math

from cronwatch.core.schedule import Schedule, parse_schedule
from cronwatch.core.values import format_duration

_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]  # fmt: skip


def next_times(schedule: Schedule, tz: str, *, now: float, n: int = 5) -> list[float]:
    """The next ``n`` expected times after ``now`` (fewer if the schedule ends)."""
    out: list[float] = []
    t = now
    for _ in range(n):
        t = schedule.next_after(t, tz)
        if not math.isfinite(t):
            break
        out.append(t)
    return out


def explain(text: str, tz: str = "UTC") -> str:
    """``'*/15 * * * *'`` -> ``'every 15 minutes'``. Forms it cannot put in words are
    named as what they are (the next times show the rest)."""
    s = parse_schedule(text)
    zone = "" if tz == "UTC" else f" ({tz} time)"
    if s.kind == "interval":
        assert s.interval is not None
        return f"every {format_duration(s.interval)}, counted from the previous run"
    if s.kind == "oncalendar":
        return f"systemd calendar: {'; '.join(s.exprs)}{zone}"
    words = [_cron_words(e) for e in s.exprs]
    return "; ".join(words) + (zone if not all(w.startswith("every ") for w in words) else "")


def _cron_words(expr: str) -> str:
    minute, hour, dom, month, dow = expr.split()
    days = _days(dom, month, dow)
    if minute.startswith("*/") and hour == "*":
        step = minute[2:]
        return f"every {step} minutes" + days if step != "1" else "every minute" + days
    if minute == "*" and hour == "*":
        return "every minute" + days
    if minute.isdigit() and hour == "*":
        return f"every hour at :{int(minute):02d}" + days
    if minute.isdigit() and hour.startswith("*/"):
        return f"every {hour[2:]} hours at :{int(minute):02d}" + days
    hours = hour.split(",")
    if minute.isdigit() and all(h.isdigit() for h in hours):
        times = ", ".join(f"{int(h):02d}:{int(minute):02d}" for h in hours)
        return f"at {times}" + (days or " every day")
    return f"cron {expr} (minute hour day-of-month month day-of-week)"


def _days(dom: str, month: str, dow: str) -> str:
    parts = []
    if dow != "*":
        parts.append(" on " + _dow_words(dow))
    if dom != "*":
        parts.append(f" on day {dom} of the month")
    if month != "*":
        if month.isdigit() and 1 <= int(month) <= 12:
            parts.append(f" in {_MONTHS[int(month) - 1]}")
        else:
            parts.append(f" in month {month}")
    return "".join(parts)


def _dow_words(dow: str) -> str:
    low = dow.lower()
    if low in ("1-5", "mon-fri"):
        return "weekdays"
    if low in ("0,6", "6,0", "sat,sun", "sun,sat"):
        return "weekends"
    names = []
    for item in low.split(","):
        if item.isdigit() and int(item) <= 7:
            names.append(_DAYS[int(item) % 7])
        else:
            names.append(item)
    return ", ".join(names)
