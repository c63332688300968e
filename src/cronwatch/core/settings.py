"""Job settings: THE schema, one declaration per setting, and the one ``normalize``.

Every entry point reads this table: ``cronwatch job set`` makes its flags from it
(cli/jobs.py), the TOML file of ``cronwatch apply`` is checked by it (app/configfile.py),
the API builds its request models from it (server/api_models.py) and runs every value
through the same ``normalize``, and so does the SDK (remote/client.py). A bound or a rule
changed here changes for all of them.

Spellings differ by entry point, values do not: the CLI and the TOML file take text
("15m", "none", "on"), the API takes strict JSON types (seconds as numbers, null, true);
``normalize`` takes either and returns the stored value, or raises ValidationError naming
the setting, the value and what is accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import (
    DEFAULT_ENV,
    ENV_RULE,
    LIST_NAME_RULE,
    PING_KEY_MAX,
    PING_KEY_RULE,
    TAG_RULE,
    Job,
    env_key,
    validate_env,
    validate_name,
    validate_ping_key,
    validate_tag,
)
from cronwatch.core.values import DURATION_HELP, parse_duration


class Kind(Enum):
    SCHEDULE = "schedule"
    TZ = "tz"
    DURATION = "duration"  # seconds; text such as "15m" too
    COUNT = "count"  # a whole number
    NUMBER = "number"  # any finite number
    BOOL = "bool"
    CHANNELS = "channels"  # a list of notification channel URLs
    RULES = "rules"  # a list of assertion rules
    TAGS = "tags"
    PING_KEY = "ping_key"
    TEXT = "text"  # free text on one line
    ENVS = "envs"  # a list of environment names
    TIME = "time"  # seconds since the epoch; ISO 8601 text too


# A TEXT setting's rule (one line, no control characters), as a regex for the API's schema
LINE_PATTERN = "^[^\\x00-\\x1f\\x7f]*$"
DAY = 86400.0
YEAR = 366 * DAY
LIST_KINDS = (Kind.CHANNELS, Kind.RULES, Kind.TAGS, Kind.ENVS)
NUMBER_KINDS = (Kind.DURATION, Kind.COUNT, Kind.NUMBER, Kind.TIME)
TIME_MAX = 253402300799.0  # 9999-12-31T23:59:59Z
_OFF = ("none", "off", "")  # the text for None (JSON null) of an optional setting


@dataclass(frozen=True)
class Setting:
    """One job setting as every entry point sees it.

    ``lo``/``hi`` bound a number (inclusive; every number has both); ``max_len`` bounds a
    string or each item of a list, ``max_items`` a list. ``optional`` settings also take
    None (JSON null; the text "none"), which turns them off. ``flag`` is the ``job set``
    option (a list's option repeats and has a ``--no-...`` twin that empties the list);
    ``off_flag`` gives a bool a second option that sets it false (``--pause``/``--resume``)
    instead of taking on/off. ``aliases`` are other accepted keys in the TOML file.
    ``stored=False``: kept apart from ``Job.settings()`` (the ping key).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    flag: str
    metavar: str = ""
    lo: float | None = None
    hi: float | None = None
    max_len: int = 0
    max_items: int = 0
    optional: bool = False
    off_flag: str = ""
    no_flag: str = ""
    aliases: tuple[str, ...] = ()
    stored: bool = True

    def accepted(self) -> str:
        """What is accepted, for error messages and --help."""
        if self.kind in NUMBER_KINDS:
            what = {
                Kind.DURATION: f"{DURATION_HELP} (or seconds)",
                Kind.COUNT: "a whole number",
                Kind.NUMBER: "a number",
                Kind.TIME: "an ISO 8601 time such as 2026-12-02T18:00:00Z or seconds since "
                "the epoch",
            }[self.kind]
            lo, hi = _show(self, self.lo), _show(self, self.hi)
            text = f"{what} from {lo} to {hi}"
            return text + (", or none" if self.optional else "")
        return self.help


def _show(s: Setting, x: float | None) -> str:
    if x is None:
        return "?"
    if s.kind is Kind.DURATION:
        for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
            if x >= size and (x / size).is_integer():
                return f"{x / size:.0f}{unit}"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


SETTINGS: tuple[Setting, ...] = (
    Setting("schedule", Kind.SCHEDULE, "",
            "cron ('*/5 * * * *', '@daily'), 'every 15m', 'at 13:37', or an OnCalendar "
            "expression; '' clears", "--schedule", "S", max_len=500),
    Setting("tz", Kind.TZ, "UTC", "an IANA time zone such as Europe/Berlin (default UTC)",
            "--tz", "ZONE", max_len=64, aliases=("timezone",)),
    Setting("grace", Kind.DURATION, 0.0,
            "how late a run may start before it counts as missed", "--grace", "DUR",
            lo=0.0, hi=YEAR),
    Setting("max_runtime", Kind.DURATION, None,
            "a run still going after this is marked timeout ('none' clears)",
            "--max-runtime", "DUR", lo=1.0, hi=YEAR, optional=True,
            aliases=("max-runtime",)),
    Setting("alert_after", Kind.COUNT, 2,
            "consecutive failures that open an incident (default 2)", "--alert-after", "N",
            lo=1, hi=1000, aliases=("alert-after",)),
    Setting("recover_after", Kind.COUNT, 1,
            "consecutive successes that close it (default 1)", "--recover-after", "N",
            lo=1, hi=1000, aliases=("recover-after",)),
    Setting("realert", Kind.DURATION, None,
            "remind every DUR while still down ('none' clears)", "--realert", "DUR",
            lo=1.0, hi=YEAR, optional=True),
    Setting("notify", Kind.CHANNELS, [],
            "channel URL (https://..., tgram://TOKEN/CHAT, slack://..., mailto://...); "
            "repeat for several (replaces the list)", "--notify", "CHANNEL",
            max_len=2000, max_items=50, no_flag="--no-notify"),
    Setting("asserts", Kind.RULES, [],
            "rule that turns a success into a failure, such as 'duration < 30m' or "
            "'output contains done'; repeat (replaces the list)", "--assert", "RULE",
            max_len=500, max_items=50, no_flag="--no-assert", aliases=("assert",)),
    Setting("paused", Kind.BOOL, False, "stop checking and alerting ('--resume' undoes it)",
            "--pause", off_flag="--resume"),
    Setting("tags", Kind.TAGS, [], f"tag ({TAG_RULE}); repeat (replaces the list)",
            "--tag", "TAG", max_len=64, max_items=50, no_flag="--no-tag", aliases=("tag",)),
    Setting("keep_days", Kind.NUMBER, 365.0, "days to keep run records (default 365)",
            "--keep-days", "DAYS", lo=1.0, hi=36600.0, aliases=("keep-days",)),
    Setting("keep_output", Kind.COUNT, 1000, "runs whose output is kept (default 1000)",
            "--keep-output", "N", lo=1, hi=10_000_000, aliases=("keep-output",)),
    Setting("keep_failed_output", Kind.COUNT, 5000,
            "failed runs whose output is kept (default 5000)", "--keep-failed-output", "N",
            lo=1, hi=10_000_000, aliases=("keep-failed-output",)),
    Setting("slowdown_alert", Kind.BOOL, False,
            "alert when the job gets clearly slower (on or off)", "--slowdown-alert", "on|off",
            aliases=("slowdown-alert",)),
    Setting("ping_key", Kind.PING_KEY, None, f"the job's ping key: {PING_KEY_RULE}",
            "--key", "KEY", max_len=PING_KEY_MAX, aliases=("ping-key", "key"), stored=False),
    # Loom's "disabled" status: apart from paused (checks and alerts off, runs still
    # recorded), a disabled job records nothing and alerts nothing.
    Setting("disabled", Kind.BOOL, False,
            "record nothing and alert nothing ('--enable' undoes it)", "--disable",
            off_flag="--enable"),
    Setting("title", Kind.TEXT, "", "a display name (Loom's and Cronitor's monitor name)",
            "--title", "TEXT", max_len=200, aliases=("display-name",)),
    Setting("environments", Kind.ENVS, [],
            f"an environment checked for missed runs ({ENV_RULE}; '{DEFAULT_ENV}' is the "
            "default one, used by runs that name none); repeat (replaces the list; none: "
            "the default one only)", "--environment", "ENV", max_len=64, max_items=20,
            no_flag="--no-environment", aliases=("envs",)),
    Setting("mute_envs", Kind.ENVS, [],
            "an environment whose runs alert no one (recorded and shown all the same); "
            "repeat (replaces the list)", "--mute-env", "ENV", max_len=64, max_items=20,
            no_flag="--no-mute-env", aliases=("mute-envs",)),
    Setting("schedule_tolerance", Kind.COUNT, None,
            "missed runs tolerated before an alert, counted apart from failures ('none', "
            "the default: a missed run counts as a failure toward alert_after)",
            "--schedule-tolerance", "N", lo=0, hi=1000, optional=True,
            aliases=("schedule-tolerance",)),
    Setting("surge_threshold", Kind.COUNT, 6,
            "alerts and reminders sent in any rolling hour before the rest pause until the "
            "hour has room (counted, and reported with the next one); 'none': no limit "
            "(default 6)", "--surge-threshold", "N", lo=1, hi=1000, optional=True,
            aliases=("surge-threshold",)),
    Setting("paused_until", Kind.TIME, None,
            "pause until this time, then resume by itself (ISO 8601 or seconds since the "
            "epoch; setting it pauses; 'none' clears)", "--paused-until", "TIME", lo=0.0,
            hi=TIME_MAX, optional=True, aliases=("paused-until",)),
)  # fmt: skip
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
ALIASES: dict[str, str] = {a: s.name for s in SETTINGS for a in s.aliases}


def setting(key: str, *, where: str = "") -> Setting:
    """The setting a key (or TOML alias) names; ValidationError for an unknown one."""
    s = BY_NAME.get(ALIASES.get(key, key))
    if s is None:
        raise ValidationError(
            f"{_at(where)}unknown setting {key!r}: expected one of " + ", ".join(BY_NAME)
        )
    return s


def normalize(key: str, value: Any, *, where: str = "") -> Any:
    """Validate and normalise one setting; raises ValidationError naming it and the value."""
    s = setting(key, where=where)
    try:
        return _normalize(s, value)
    except ValidationError as e:  # already names the value and what is accepted
        raise ValidationError(f"{_at(where)}{s.name}: {e}") from None
    except (TypeError, ValueError, OverflowError) as e:
        detail = " (out of range)" if isinstance(e, _OutOfRange) else ""
        raise ValidationError(
            f"{_at(where)}{s.name}: invalid value {value!r}{detail}: expected {s.accepted()}"
        ) from None


def normalize_all(settings: dict[str, Any], *, where: str = "") -> dict[str, Any]:
    """``normalize`` each of ``settings``, keyed by the settings' names (aliases resolved)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = setting(key, where=where).name
        if name in out:
            raise ValidationError(f"{_at(where)}{name} is given twice (as {key!r} too)")
        out[name] = normalize(key, value, where=where)
    return out


def notification_list(name: str, channels: Any, *, where: str = "") -> list[str]:
    """A notification list's channels as every interface takes them (the CLI, the API,
    the console, the TOML file): ``name`` a valid list name, the channels normalised as
    the ``notify`` setting's (channel URLs and shorthands), and no list inside a list,
    since lists are resolved once, when an alert is sent; at least one channel.
    ValidationError otherwise."""
    try:
        validate_name(name)
    except ValidationError:
        raise ValidationError(
            f"{_at(where)}invalid notification list name {name!r}: {LIST_NAME_RULE}"
        ) from None
    found: list[str] = normalize("notify", channels, where=where)
    if not found:
        raise ValidationError(f"{_at(where)}notification list {name}: give at least one channel")
    if any(":" not in c for c in found):
        raise ValidationError(
            f"{_at(where)}notification list {name}: its channels are channels (URLs or "
            "shorthands such as email:ADDRESS), not other lists"
        )
    return found


def _at(where: str) -> str:
    return f"{where} " if where else ""


def _normalize(s: Setting, value: Any) -> Any:
    kind = s.kind
    if s.optional and (value is None or (isinstance(value, str) and value.lower() in _OFF)):
        return None
    if kind in NUMBER_KINDS:
        return _bounded(s, _number(kind, value))
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            word = value.lower()
            if word in ("true", "yes", "on", "1"):
                return True
            if word in ("false", "no", "off", "0"):
                return False
        raise ValueError
    if kind in LIST_KINDS:
        items = _as_list(value)
        if len(items) > s.max_items:
            raise ValidationError(f"{len(items)} items: at most {s.max_items} are accepted")
        return [_item(s, v) for v in items]
    text = _text(s, value)
    if kind is Kind.SCHEDULE:
        if not text:
            return ""
        from cronwatch.core.schedule import parse_schedule

        return parse_schedule(text).text
    if kind is Kind.TZ:
        from cronwatch.core.schedule import validate_tz

        return validate_tz(text)
    if kind is Kind.PING_KEY:
        return validate_ping_key(text)
    if kind is Kind.TEXT:
        if any(c < " " or c == "\x7f" for c in text):
            raise ValidationError("control characters (a line break, a tab) are not accepted")
        return text.strip()
    raise AssertionError(kind)


def _number(kind: Kind, value: Any) -> float | int:
    """A number from a JSON/TOML number or the text of one; never NaN or infinity."""
    if isinstance(value, bool):  # a bool is an int to Python, never a number to a user
        raise TypeError
    if kind is Kind.COUNT:
        # A whole number however it is written: 3.0 is an integer to JSON Schema (the
        # API's OpenAPI document), so the TOML file and `job set` take it as 3 too.
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return int(value.strip())
        if isinstance(value, str):
            value = float(value)  # "3.0", "3e2"; "3 runs" is a ValueError
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise ValueError  # 1.5, NaN, infinity
    if kind is Kind.TIME and hasattr(value, "timestamp") and hasattr(value, "tzinfo"):
        if value.tzinfo is None:  # a TOML local date-time: UTC, as everywhere here
            from datetime import UTC

            value = value.replace(tzinfo=UTC)
        value = value.timestamp()
    if isinstance(value, str) and kind is Kind.TIME:
        from cronwatch.core.values import parse_timestamp

        x = parse_timestamp(value)
    elif isinstance(value, str):
        x = parse_duration(value) if kind is Kind.DURATION else float(value)
    elif isinstance(value, int | float):
        x = float(value)
    else:
        raise TypeError
    if not math.isfinite(x):
        raise ValueError
    return x


class _OutOfRange(ValueError):
    pass


def _bounded(s: Setting, x: float | int) -> float | int:
    assert s.lo is not None and s.hi is not None  # every number is bounded (test_settings_parity)
    if not s.lo <= x <= s.hi:
        raise _OutOfRange
    return x


def _text(s: Setting, value: Any) -> str:
    if value is None and s.kind is Kind.SCHEDULE:
        return ""
    if not isinstance(value, str):
        raise TypeError
    if len(value) > s.max_len:
        raise ValidationError(f"longer than {s.max_len} characters")
    return value


def _item(s: Setting, value: Any) -> str:
    text = _text(s, value)
    if s.kind is Kind.CHANNELS:
        from cronwatch.notify import validate_channel

        return validate_channel(text)
    if s.kind is Kind.RULES:
        from cronwatch.core.assertions import parse_rule

        parse_rule(text)
        return text
    if s.kind is Kind.ENVS:  # stored as runs are: the default one as ""... but a list
        validate_env(text)  # item is never "": the default one keeps its API name
        return DEFAULT_ENV if env_key(text) == "" else text
    return validate_tag(text)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):  # one item, as `--tag db` or `tags = "db"` in the TOML file
        return [value] if value else []
    raise TypeError


def apply_settings(job: Job, settings: dict[str, Any], *, where: str = "") -> Job:
    """Set ``job``'s stored settings from ``settings`` (normalised here)."""
    normalized = normalize_all(settings, where=where)
    for name, value in normalized.items():
        if not BY_NAME[name].stored:
            raise ValidationError(f"{_at(where)}{name} is not a stored setting")
        setattr(job, name, value)
    return timed_pause(job, normalized)


def timed_pause(job: Job, given: dict[str, Any]) -> Job:
    """A pause and its end agree after ``given`` (normalised settings) were set: a
    ``paused_until`` pauses the job; a resume (``paused`` false) ends a timed pause."""
    if given.get("paused") is False:
        job.paused_until = None
    elif given.get("paused_until") is not None:
        job.paused = True
    return job


def defaults() -> dict[str, Any]:
    """Every stored setting's default (equal to ``Job(name=...).settings()``: a test says so)."""
    return {s.name: _fresh(s.default) for s in SETTINGS if s.stored}


def _fresh(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value  # never the schema's own list
