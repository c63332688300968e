"""The TOML config file of ``cronwatch apply`` (monitors as code), checked by the schema.

    [defaults]                 # optional, applies to every job below
    notify = ["https://hooks.example.com/cron"]

    [jobs.backup]
    schedule = "30 2 * * *"
    tz = "Europe/Berlin"
    grace = "15m"
    max_runtime = "2h"
    assert = ["output contains 'backup complete'"]
    notify = ["on-call-team"]

    [lists]                    # notification lists: a name for several channels
    on-call-team = ["email:ops@example.com", "slack:#alerts"]

    [integrations.email]       # configured once, for the shorthands (email:ADDRESS, ...)
    host = "smtp.example.com"
    sender = "cron@example.com"

    [database]                 # every command's, when no --db or $CRONWATCH_DB names one
    url = "postgresql://cronwatch@db.example:5432/cronwatch"

The keys are the settings of core/settings.py (with their aliases); every invalid value
is rejected with the file, the job, the setting, the value and what is accepted.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import validate_name
from cronwatch.core.settings import ALIASES, BY_NAME, normalize_all, notification_list
from cronwatch.system import config_path


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
    # [server] is read by the client, [database] by every command (system.default_db_path)
    unknown = set(data) - {"defaults", "jobs", "server", "database", "lists", "integrations"}
    if unknown:
        raise ValidationError(
            f"{path}: unknown section {sorted(unknown)[0]!r}: expected [defaults], [jobs.NAME], "
            "[lists], [integrations.NAME], [server] and [database]"
        )
    defaults = data.get("defaults", {})
    jobs = data.get("jobs", {})
    if not isinstance(defaults, dict) or not isinstance(jobs, dict):
        raise ValidationError(f"{path}: [defaults] and [jobs.NAME] must be tables")
    if any(_name(k) == "ping_key" for k in defaults):
        raise ValidationError(f"{path} [defaults]: ping_key: a ping key belongs to one job")
    out: dict[str, dict[str, Any]] = {}
    for name, settings in jobs.items():
        where = f"{os.path.basename(path)} [jobs.{name}]"
        try:
            validate_name(name)
        except ValidationError as e:
            raise ValidationError(f"{where}: {e}") from None
        if not isinstance(settings, dict):
            raise ValidationError(f"{where}: must be a table of settings")
        # A default and the job's own value under another spelling: the job's wins.
        own = {n for n in (_name(k) for k in settings) if n}
        merged = {k: v for k, v in defaults.items() if _name(k) not in own}
        out[name] = normalize_all({**merged, **settings}, where=where)
        if out[name].get("paused_until") is not None and "paused" not in out[name]:
            out[name]["paused"] = True  # a timed pause pauses
    return out


def load_alerting(
    path: str | None = None,
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """The file's [lists] (name = [channels], checked) and [integrations.NAME] tables (as
    written: the notify registry checks them, ``notify.integrations.validate_integration``)."""
    path = path or config_path()
    with open(path, "rb") as f:  # load() has read it already: errors were reported there
        data = tomllib.load(f)
    base = os.path.basename(path)
    lists: dict[str, list[str]] = {}
    raw_lists = data.get("lists", {})
    raw_integrations = data.get("integrations", {})
    if not isinstance(raw_lists, dict) or not isinstance(raw_integrations, dict):
        raise ValidationError(f"{path}: [lists] and [integrations.NAME] must be tables")
    for name, channels in raw_lists.items():
        lists[name] = notification_list(name, channels, where=f"{base} [lists]")
    return lists, dict(raw_integrations)


def _name(key: str) -> str | None:
    name = ALIASES.get(key, key)
    return name if name in BY_NAME else None
