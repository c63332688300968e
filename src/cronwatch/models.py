"""The domain vocabulary: jobs, runs and their statuses.

Plain values only; no I/O. Every adapter (wrapper, CLI, server, SDK) speaks these.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field, fields
from enum import StrEnum

from .errors import ValidationError

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from typing import Any

NAME_RULE = (
    "a job name is 1-64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
)
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class Status(StrEnum):
    """Outcome of one run. ``running`` is the only open state."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    MISSED = "missed"

    @property
    def is_failure(self) -> bool:
        return self in (Status.FAILED, Status.TIMEOUT, Status.MISSED)

    @property
    def is_finished(self) -> bool:
        return self is not Status.RUNNING


STATUSES = tuple(s.value for s in Status)


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid job slug, else raise ValidationError stating the rule."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValidationError(f"invalid job name {name!r}: {NAME_RULE}")
    return name


def parse_status(value: str) -> Status:
    try:
        return Status(value.lower())
    except ValueError:
        raise ValidationError(
            f"invalid status {value!r}: expected one of {', '.join(STATUSES)}"
        ) from None


def new_run_id(now: float | None = None) -> str:
    """A 26-character, time-ordered, URL-safe run id (48-bit ms clock + 80 random bits)."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
    out = []
    for _ in range(26):
        out.append(alphabet[value & 31])
        value >>= 5
    return "".join(reversed(out))


_RUN_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def validate_run_id(value: str) -> str:
    if not isinstance(value, str) or not _RUN_ID_RE.fullmatch(value):
        raise ValidationError(
            f"invalid run id {value!r}: 1-128 characters of letters, digits, '.', '_', ':' and '-'"
        )
    return value


@dataclass(slots=True)
class Run:
    """One execution of a job.

    Times are UTC seconds since the epoch (floats, sub-second). ``stdout``/``stderr`` are
    the captured (possibly capped) bytes, or None when not captured or expired by retention.
    """

    job: str
    started_at: float
    status: Status = Status.RUNNING
    id: str = ""
    ended_at: float | None = None
    duration: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes | None = None
    stderr: bytes | None = None
    host: str = ""
    user: str = ""
    command: str = ""
    env: str = ""
    message: str = ""
    source: str = "wrapper"

    def __post_init__(self) -> None:
        if not self.id:
            self.id = new_run_id(self.started_at)
        if not isinstance(self.status, Status):
            self.status = Status(self.status)

    def to_dict(self, *, output: bool = True, exact: bool = False) -> dict[str, Any]:
        """The stable JSON shape (see docs/json.md).

        Output is decoded as UTF-8; invalid bytes become U+FFFD, or with ``exact`` lone
        surrogates (``surrogateescape``), which ``from_dict`` turns back into the same bytes.
        """
        errors = "surrogateescape" if exact else "replace"
        d: dict[str, Any] = {
            "id": self.id,
            "job": self.job,
            "env": self.env,
            "status": self.status.value,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.duration,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "host": self.host,
            "user": self.user,
            "command": self.command,
            "message": self.message,
            "source": self.source,
        }
        if output:
            d["stdout"] = None if self.stdout is None else self.stdout.decode("utf-8", errors)
            d["stderr"] = None if self.stderr is None else self.stderr.decode("utf-8", errors)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        """Inverse of to_dict (used by import and the spool); validates what matters."""
        if not isinstance(d, dict):
            raise ValidationError("a run must be a JSON object")
        try:
            job = validate_name(d["job"])
            started = _time_field("started_at", d["started_at"])
            status = parse_status(str(d.get("status", "success")))
        except KeyError as e:
            raise ValidationError(f"run is missing the field {e.args[0]!r}") from None
        run_id = validate_run_id(str(d["id"])) if d.get("id") else ""

        def opt_float(key: str) -> float | None:
            v = d.get(key)
            return None if v is None else _number_field(key, v)

        def opt_int(key: str) -> int | None:
            v = d.get(key)
            if v is None:
                return None
            if isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()):
                return int(v)
            raise ValidationError(f"run field {key!r} must be a whole number, not {v!r}")

        def opt_bytes(key: str) -> bytes | None:
            v = d.get(key)
            if v is None:
                return None
            if isinstance(v, str):
                try:
                    return v.encode("utf-8", "surrogateescape")
                except UnicodeEncodeError:
                    raise ValidationError(f"run field {key!r} is not valid text") from None
            raise ValidationError(f"run field {key!r} must be a string")

        ended = d.get("ended_at")
        return cls(
            job=job,
            started_at=started,
            status=status,
            id=run_id,
            ended_at=None if ended is None else _time_field("ended_at", ended),
            duration=opt_float("duration"),
            exit_code=opt_int("exit_code"),
            signal=opt_int("signal"),
            stdout=opt_bytes("stdout"),
            stderr=opt_bytes("stderr"),
            host=str(d.get("host") or ""),
            user=str(d.get("user") or ""),
            command=str(d.get("command") or ""),
            env=str(d.get("env") or ""),
            message=str(d.get("message") or ""),
            source=str(d.get("source") or "import"),
        )


def _number_field(key: str, v: Any) -> float:
    if not isinstance(v, (int, float, str)):
        raise ValidationError(f"run field {key!r} must be a number, not {v!r}")
    try:
        value = float(v)
    except ValueError:
        raise ValidationError(f"run field {key!r} must be a number, not {v!r}") from None
    if not math.isfinite(value):
        raise ValidationError(f"run field {key!r} must be a finite number, not {v!r}")
    return value


def _time_field(key: str, v: Any) -> float:
    """Seconds since the epoch, or an ISO 8601 string (naive means UTC)."""
    if isinstance(v, str):
        from ._utils import parse_timestamp

        try:
            v = parse_timestamp(v)
        except ValidationError as e:
            raise ValidationError(f"run field {key!r}: {e}") from None
    value = _number_field(key, v)
    if not 0 <= value < 253402300800:  # year 10000: what a run id's clock can hold
        raise ValidationError(f"run field {key!r} is out of range: {v!r}")
    return value


@dataclass(slots=True)
class Job:
    """A named job and its settings. Settings are optional: a job exists from its first run."""

    name: str
    created_at: float = 0.0
    schedule: str = ""
    tz: str = "UTC"
    grace: float = 0.0
    max_runtime: float | None = None
    alert_after: int = 2
    recover_after: int = 1
    realert: float | None = None
    notify: list[str] = field(default_factory=list)
    asserts: list[str] = field(default_factory=list)
    paused: bool = False
    tags: list[str] = field(default_factory=list)
    ping_key: str = ""
    keep_days: float = 365.0
    keep_output: int = 1000
    keep_failed_output: int = 5000
    slowdown_alert: bool = False

    def settings(self) -> dict[str, Any]:
        """Every configurable field (everything but name, created_at and ping_key)."""
        skip = {"name", "created_at", "ping_key"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "created_at": self.created_at, "ping_key": self.ping_key}
        d.update(self.settings())
        return d


SETTING_NAMES = tuple(
    f.name for f in fields(Job) if f.name not in {"name", "created_at", "ping_key"}
)
