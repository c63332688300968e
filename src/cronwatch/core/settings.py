"""Job settings: validation shared by `job set`, the TOML config (`apply`) and the API.

A config file declares monitors as code::

    [defaults]                 # optional, applies to every job below
    notify = ["https://hooks.example.com/cron"]

    [jobs.backup]
    schedule = "30 2 * * *"
    tz = "Europe/Berlin"
    grace = "15m"
    max_runtime = "2h"
    assert = ["output contains 'backup complete'"]

Every invalid value is rejected with the field, the value and what is accepted.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Job, validate_name
from cronwatch.core.values import DURATION_HELP, parse_duration
from cronwatch.system import config_path

# field -> (kind, help)
FIELDS: dict[str, tuple[str, str]] = {
    "schedule": (
        "schedule",
        "cron ('*/5 * * * *', '@daily'), 'every 15m', 'at 13:37', or OnCalendar",
    ),
    "tz": ("tz", "an IANA time zone such as Europe/Berlin (default UTC)"),
    "grace": ("duration", DURATION_HELP),
    "max_runtime": ("duration?", DURATION_HELP + ", or 'none'"),
    "alert_after": ("count", "a whole number >= 1 (consecutive failures before an alert)"),
    "recover_after": ("count", "a whole number >= 1 (consecutive successes to recover)"),
    "realert": ("duration?", DURATION_HELP + ", or 'none'"),
    "notify": (
        "channels",
        "a list of channel URLs (https://..., tgram://TOKEN/CHAT, slack://..., mailto://...)",
    ),
    "asserts": ("rules", "a list of rules such as 'duration < 30m' or 'output contains done'"),
    "paused": ("bool", "true or false"),
    "tags": ("tags", "a list of tags (job-name characters)"),
    "keep_days": ("number", "days to keep run records (a number > 0)"),
    "keep_output": ("count", "a whole number >= 1 (runs whose output is kept)"),
    "keep_failed_output": ("count", "a whole number >= 1 (failed runs whose output is kept)"),
    "slowdown_alert": ("bool", "true or false"),
}
ALIASES = {"assert": "asserts", "max-runtime": "max_runtime", "alert-after": "alert_after",
           "recover-after": "recover_after", "timezone": "tz", "tag": "tags"}  # fmt: skip


def _bad(where: str, field: str, value: Any, accepted: str, detail: str = "") -> ValidationError:
    prefix = f"{where} " if where else ""
    extra = f" ({detail})" if detail else ""
    return ValidationError(f"{prefix}{field}: invalid value {value!r}{extra}: expected {accepted}")


def normalize(field: str, value: Any, *, where: str = "") -> Any:
    """Validate and normalise one setting; raises ValidationError naming field and value."""
    field = ALIASES.get(field, field)
    if field not in FIELDS:
        raise ValidationError(
            f"{where + ' ' if where else ''}unknown setting {field!r}: expected one of "
            + ", ".join(FIELDS)
        )
    kind, accepted = FIELDS[field]
    try:
        return _normalize(kind, value)
    except ValidationError as e:  # already names the value and what is accepted
        raise ValidationError(f"{where + ' ' if where else ''}{field}: {e}") from None
    except (TypeError, ValueError):
        raise _bad(where, field, value, accepted) from None


def _normalize(kind: str, value: Any) -> Any:
    if kind == "schedule":
        if value in ("", None):
            return ""
        from cronwatch.core.schedule import parse_schedule

        return parse_schedule(str(value)).text
    if kind == "tz":
        from cronwatch.core.schedule import validate_tz

        return validate_tz(str(value))
    if kind in ("duration", "duration?"):
        if kind == "duration?" and (value is None or str(value).lower() in ("none", "off", "")):
            return None
        if isinstance(value, bool):
            raise TypeError
        return parse_duration(str(value)) if not isinstance(value, int | float) else _nonneg(value)
    if kind == "count":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        n = int(value)
        if n < 1:
            raise ValueError
        return n
    if kind == "number":
        if isinstance(value, bool):
            raise TypeError
        x = float(value)
        if not x > 0:
            raise ValueError
        return x
    if kind == "bool":
        if isinstance(value, bool):
            return value
        s = str(value).lower()
        if s in ("true", "yes", "on", "1"):
            return True
        if s in ("false", "no", "off", "0"):
            return False
        raise ValueError
    if kind == "channels":
        from cronwatch.notify import validate_channel

        return [validate_channel(str(v)) for v in _as_list(value)]
    if kind == "rules":
        from cronwatch.core.assertions import parse_rule

        rules = [str(v) for v in _as_list(value)]
        for r in rules:
            parse_rule(r)
        return rules
    if kind == "tags":
        return [validate_name(str(v)) for v in _as_list(value)]
    raise AssertionError(kind)


def _nonneg(x: float) -> float:
    if x < 0:
        raise ValueError
    return float(x)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return [value] if value else []
    raise TypeError


def apply_settings(job: Job, settings: dict[str, Any], *, where: str = "") -> Job:
    for key, value in settings.items():
        setattr(job, ALIASES.get(key, key), normalize(key, value, where=where))
    return job


def load(path: str | None = None) -> dict[str, dict[str, Any]]:
    """Read the TOML config: {job name: {setting: value}} with defaults merged in."""
    path = path or config_path()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValidationError(f"no config file at {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValidationError(f"{path}: invalid TOML: {e}") from None
    except OSError as e:
        raise ValidationError(f"cannot read {path}: {e.strerror}") from None
    unknown = set(data) - {"defaults", "jobs", "server"}  # [server] is read by the client
    if unknown:
        raise ValidationError(
            f"{path}: unknown section {sorted(unknown)[0]!r}: expected [defaults], [jobs.NAME] "
            "and [server]"
        )
    defaults = data.get("defaults", {})
    jobs = data.get("jobs", {})
    if not isinstance(defaults, dict) or not isinstance(jobs, dict):
        raise ValidationError(f"{path}: [defaults] and [jobs.NAME] must be tables")
    out: dict[str, dict[str, Any]] = {}
    for name, settings in jobs.items():
        where = f"{os.path.basename(path)} [jobs.{name}]"
        try:
            validate_name(name)
        except ValidationError as e:
            raise ValidationError(f"{where}: {e}") from None
        if not isinstance(settings, dict):
            raise ValidationError(f"{where}: must be a table of settings")
        merged = {**defaults, **settings}
        out[name] = {ALIASES.get(k, k): normalize(k, v, where=where) for k, v in merged.items()}
    return out
