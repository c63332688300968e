"""What the console's pages show, as values and markup: times, pills, the duration chart
(the Jinja2 environment's filters), a job's settings and next times at a glance, and the
ways to ping a job. Only numbers and fixed class names go into markup built here; every
other value is escaped (Markup.format, or the templates' autoescape)."""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Job, Run
from cronwatch.core.schedule import parse_schedule
from cronwatch.core.schedule_text import explain, next_times
from cronwatch.core.settings import (
    LIST_KINDS,
    NUMBER_KINDS,
    SETTINGS,
    Kind,
    Setting,
    normalize,
    normalize_all,
)
from cronwatch.core.text import exit_text
from cronwatch.core.values import format_duration, iso
from cronwatch.notify import redact

_CLASS = {"success": "s", "failed": "f", "timeout": "t", "missed": "m", "running": "r"}
_PILL = {"healthy": "ok", "failing": "bad", "missed": "bad", "timeout": "warn", "late": "warn",
         "paused": "na", "unknown": "na", "success": "ok", "failed": "bad",
         "running": "run"}  # fmt: skip
# What the job form offers: every stored setting of the schema but the pause switch,
# which has its own buttons. Lists are one item a line.
FORM_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.stored and s.name != "paused")


def show_time(ts: float | None) -> Markup:
    """A time in UTC; the script shows it in the viewer's zone, UTC on hover."""
    if ts is None or not math.isfinite(ts):
        return Markup("-")
    utc = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + " UTC"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso(ts), utc, utc)


def pill(word: str, reason: str = "") -> Markup:
    cls = _PILL.get(word, "na")
    if reason:
        return Markup('<span class="pill {}" title="{}">{}</span>').format(cls, reason, word)
    return Markup('<span class="pill {}">{}</span>').format(cls, word)


def pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}%"


def chart(runs: list[Run], n: int, *, cls: str, slow_from: int | None = None,
          baseline: float | None = None) -> Markup:  # fmt: skip
    """Bars, oldest left, one <path> per outcome (classes colour them). ``slow_from``:
    the index (oldest-first) where a slow-down starts, shaded; ``baseline``: a dashed line
    at the baseline median. Only numbers and fixed class names reach the markup."""
    items = [r for r in reversed(runs[:n]) if r.duration is not None]
    label = f"durations of the last {len(items)} runs, newest right"
    if not items:
        return Markup('<svg class="{}" role="img" aria-label="no finished runs yet"></svg>').format(
            cls
        )
    top = max(max(r.duration or 0.0 for r in items), baseline or 0.0) or 1.0
    x0 = n - len(items)
    paths: dict[str, list[str]] = {}
    for i, r in enumerate(items):
        h = max(0.5, (r.duration or 0.0) / top * 40)
        paths.setdefault(_CLASS.get(r.status.value, "m"), []).append(
            f"M{(x0 + i) * 6} 40v-{h:.1f}h5V40z"
        )
    parts = []
    if slow_from is not None:
        x = (x0 + slow_from) * 6 - 0.5
        parts.append(f'<rect class="slow" x="{x:.1f}" y="0" width="{n * 6 - x:.1f}" height="40"/>')
    parts += [f'<path class="{c}" d="{"".join(p)}"/>' for c, p in paths.items()]
    if baseline is not None:
        y = 40 - baseline / top * 40
        parts.append(f'<path class="base" d="M0 {y:.1f}H{n * 6}"/>')
    return Markup(
        f'<svg class="{cls}" viewBox="0 0 {n * 6} 40" preserveAspectRatio="none" role="img" '
        f'aria-label="{label}">{"".join(parts)}</svg>'
    )


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("cronwatch.server", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=show_time,
        dur=format_duration,
        pct=pct,
        q=quote,
        frac=lambda x: pct(None if x is None else 100.0 * x),
    )
    env.globals.update(pill=pill, chart=chart, exit_text=exit_text, redact=redact)
    return env


# --- the application ---------------------------------------------------------------------


def form_values(job: Job) -> dict[str, str]:
    """A job's settings as the form shows them (text, as the CLI takes them)."""
    out: dict[str, str] = {}
    for s in FORM_SETTINGS:
        v = getattr(job, s.name)
        if s.kind in LIST_KINDS:
            out[s.name] = "\n".join(v)
        elif s.kind is Kind.BOOL:
            out[s.name] = "on" if v else ""
        elif v is None:
            out[s.name] = ""
        elif s.kind is Kind.TIME:
            out[s.name] = iso(float(v)) or ""
        elif s.kind is Kind.DURATION:
            out[s.name] = duration_text(float(v))
        elif isinstance(v, float) and v.is_integer():
            out[s.name] = str(int(v))
        else:
            out[s.name] = str(v)
    return out


def duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


def settings_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The form's fields through the one schema (the CLI's text spellings). An empty
    number field is its default (optional ones: none); lists are one item a line."""
    raw: dict[str, Any] = {}
    for s in FORM_SETTINGS:
        value = form.get(s.name)
        if s.kind is Kind.BOOL:
            raw[s.name] = "on" if value == "on" else "off"
            continue
        value = (value or "").strip()
        if s.kind in LIST_KINDS:
            raw[s.name] = [line.strip() for line in value.splitlines() if line.strip()]
        elif not value and s.kind in NUMBER_KINDS:
            raw[s.name] = "none" if s.optional else s.default
        elif not value and s.kind is Kind.TZ:
            raw[s.name] = "UTC"
        else:
            raw[s.name] = value
    return normalize_all(raw)


def schedule_preview(schedule: str, tz: str, now: float) -> dict[str, Any]:
    """The schedule in words and its next five times, or the schema's error message."""
    schedule = schedule[:600]
    if not schedule.strip():
        return {"ok": True, "words": "no schedule: the job is checked only for failures",
                "next": []}  # fmt: skip
    try:
        text = normalize("schedule", schedule)
        zone = normalize("tz", tz.strip()[:100] or "UTC")
        times = next_times(parse_schedule(text), zone, now=now)
        return {"ok": True, "words": explain(text, zone), "tz": zone,
                "next": [{"t": t, "iso": iso(t),
                          "utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))}
                         for t in times]}  # fmt: skip
    except ValidationError as e:
        return {"ok": False, "error": str(e)}


def next_expected(job: Job, info: dict[str, Any], now: float) -> list[float]:
    if not job.schedule:
        return []
    try:
        start = info["next_expected"] or now
        first = [start] if info["next_expected"] else []
        return first + next_times(parse_schedule(job.schedule), job.tz, now=start,
                                  n=5 - len(first))  # fmt: skip
    except ValidationError:
        return []


def settings_view(job: Job) -> list[tuple[str, str]]:
    out = []
    for s in FORM_SETTINGS:
        v = getattr(job, s.name)
        if s.kind is Kind.CHANNELS:
            text = ", ".join(redact(u) for u in v) or "none"
        elif isinstance(v, list):
            text = ", ".join(v) or "none"
        elif s.kind is Kind.DURATION:
            text = "none" if v is None else duration_text(float(v))
        elif s.kind is Kind.TIME:
            text = (iso(float(v)) if v is not None else None) or "none"
        elif isinstance(v, bool):
            text = "on" if v else "off"
        else:
            text = "none" if v in (None, "") else str(v)
        out.append((s.name.replace("_", " "), text))
    return out


def snippets(base: str, job: Job, key: str, project_key: str) -> list[tuple[str, str, str]]:
    """(id, title, text) of every way to ping this job. Without a key (a viewer, or a job
    with none yet) the key is a placeholder: ping keys are secrets."""
    k = key or "PING-KEY"
    pk = project_key or "PROJECT-KEY"
    n = job.name
    words = job.schedule.split()
    cron = "\n" not in job.schedule and (len(words) == 5 or (len(words) == 1
                                                          and job.schedule.startswith("@")))  # fmt: skip
    sched = job.schedule if cron else "*/15 * * * *"
    if job.schedule and not cron:  # crontab needs the times spelled in cron
        sched = f"# the job's schedule is {job.schedule!r}: give cron its times\n{sched}"
    return [
        ("crontab", "crontab, with the wrapper (records output and duration too)",
         f"{sched} cronwatch run {n} --server {base} --key {pk} -- /path/to/command"),
        ("hc", "curl, Healthchecks form (start, then success, or the exit status)",
         f"curl -fsS -m 10 --retry 5 -o /dev/null {base}/ping/{k}/start\n"
         f"/path/to/command\n"
         f"curl -fsS -m 10 --retry 5 -o /dev/null {base}/ping/{k}/$?"),
        ("slug", "curl, by name with the project key (Healthchecks slug URL)",
         f"curl -fsS -m 10 --retry 5 -o /dev/null {base}/ping/{pk}/{n}"),
        ("simob", "curl, simob form",
         f"curl -fsS -m 10 '{base}/jobs/p/{k}?state=run'\n"
         f"curl -fsS -m 10 '{base}/jobs/p/{k}?state=complete'"),
        ("cronitor", "curl, Cronitor form",
         f"curl -fsS -m 10 '{base}/p/{pk}/{n}?state=run'\n"
         f"curl -fsS -m 10 '{base}/p/{pk}/{n}?state=complete'"),
        ("loom", "curl, Loom form (exit code as a parameter)",
         f"curl -fsS -m 10 {base}/ping/{k}/start\n"
         f"curl -fsS -m 10 '{base}/ping/{k}?exit_code='$?"),
        ("python", "Python SDK (the server and the project key in the environment)",
         f"# export CRONWATCH_URL={base} CRONWATCH_KEY={pk}\n"
         f"from cronwatch import monitor\n\n"
         f'with monitor("{n}"):\n    do_the_work()'),
    ]  # fmt: skip
