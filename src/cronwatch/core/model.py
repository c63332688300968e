"""The domain vocabulary: jobs, runs and their statuses.

Plain values only; no I/O. Every adapter (wrapper, CLI, server, SDK) speaks these.

The wrapper imports this module after every wrapped run, so it stays cheap to import: no
``dataclasses`` (which pulls in ``inspect``, ``ast``...), no ``enum``, no ``re``. ``Run``
and ``Job`` are plain ``__slots__`` classes that behave like the dataclasses they replaced
(keyword or positional construction, field equality, a dataclass-style repr), and
``Status`` is a ``str`` subclass that behaves like the ``StrEnum`` it replaced.
"""

from __future__ import annotations

import os
import time

from cronwatch.core.errors import ValidationError

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, ClassVar


def _chars(spec: str) -> frozenset[str]:
    """The characters of a regex character class such as ``a-z0-9._-`` (a last '-' is one)."""
    out: set[str] = set()
    i = 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            out.update(chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1))
            i += 3
        else:
            out.add(spec[i])
            i += 1
    return frozenset(out)


# Each rule is stated once, as a character class: the validators below use it as a set of
# characters, the server's pydantic and FastAPI patterns as a regex (*_PATTERN).
NAME_MAX = 64
_NAME_FIRST_CLASS = "a-z0-9"
_NAME_CLASS = "a-z0-9._-"
NAME_RULE = (
    f"a job name is 1-{NAME_MAX} characters of a-z, 0-9, '-', '_' and '.', "
    "starting with a letter or digit"
)
LIST_NAME_RULE = NAME_RULE.replace("a job name", "a list name")  # notification lists
NAME_PATTERN = f"^[{_NAME_FIRST_CLASS}][{_NAME_CLASS}]{{0,{NAME_MAX - 1}}}$"
_NAME_FIRST = _chars(_NAME_FIRST_CLASS)
_NAME_CHARS = _chars(_NAME_CLASS)

# A tag has the job name's rule (tags and names share the same URL- and shell-safe alphabet).
TAG_RULE = NAME_RULE.replace("a job name", "a tag")
TAG_PATTERN = NAME_PATTERN

RUN_ID_MAX = 128
_RUN_ID_CLASS = "A-Za-z0-9._:-"
RUN_ID_RULE = f"1-{RUN_ID_MAX} characters of letters, digits, '.', '_', ':' and '-'"
RUN_ID_PATTERN = f"^[{_RUN_ID_CLASS}]{{1,{RUN_ID_MAX}}}$"
_RUN_ID_CHARS = _chars(_RUN_ID_CLASS)

# A ping key is the only secret a ping URL carries. The keys we make are 128 random bits
# (store: secrets.token_urlsafe(16)); a key carried over from another system may be
# shorter (simob's are 12 characters, ~71 bits), so that its pings keep their URLs. Not
# starting with '-', so that it can never be taken for an option on a command line.
PING_KEY_MIN, PING_KEY_MAX = 12, 128
_KEY_FIRST_CLASS = "A-Za-z0-9_"
_KEY_CLASS = "A-Za-z0-9_-"
PING_KEY_RULE = (
    f"{PING_KEY_MIN}-{PING_KEY_MAX} characters of letters, digits, '-' and '_', "
    "not starting with '-'"
)
PING_KEY_PATTERN = f"^[{_KEY_FIRST_CLASS}][{_KEY_CLASS}]{{{PING_KEY_MIN - 1},{PING_KEY_MAX - 1}}}$"
_KEY_FIRST = _chars(_KEY_FIRST_CLASS)
_KEY_CHARS = _chars(_KEY_CLASS)


class _StatusType(type):
    """``for s in Status`` and ``len(Status)``, as with the enum this class replaced."""

    def __iter__(cls) -> Iterator[Status]:
        return iter(_STATUS_MEMBERS)

    def __len__(cls) -> int:
        return len(_STATUS_MEMBERS)


class Status(str, metaclass=_StatusType):
    """Outcome of one run. ``running`` is the only open state.

    One instance per value: ``Status("failed") is Status.FAILED``; any other value raises
    ValueError. A status is its value as a string (``Status.FAILED == "failed"``,
    ``str(Status.FAILED) == "failed"``), and has ``.value`` and ``.name`` like an enum member.
    """

    __slots__ = ()

    RUNNING: ClassVar[Status]
    SUCCESS: ClassVar[Status]
    FAILED: ClassVar[Status]
    TIMEOUT: ClassVar[Status]
    MISSED: ClassVar[Status]

    def __new__(cls, value: object) -> Status:
        try:
            return _STATUS_BY_VALUE[value]  # type: ignore[index]
        except (KeyError, TypeError):  # TypeError: unhashable
            raise ValueError(f"{value!r} is not a valid Status") from None

    @property
    def value(self) -> str:
        return str.__str__(self)

    @property
    def name(self) -> str:
        return self.upper()

    @property
    def is_failure(self) -> bool:
        return self in FAILURES

    @property
    def is_finished(self) -> bool:
        return self is not Status.RUNNING

    def __str__(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"<Status.{self.name}: {self.value!r}>"

    def __reduce__(self) -> tuple[Any, ...]:  # pickle and copy give back the same member
        return Status, (self.value,)


_STATUS_MEMBERS: tuple[Status, ...] = ()
_STATUS_BY_VALUE: dict[str, Status] = {}
for _value in ("running", "success", "failed", "timeout", "missed"):
    _member = str.__new__(Status, _value)
    setattr(Status, _value.upper(), _member)
    _STATUS_BY_VALUE[_value] = _member
    _STATUS_MEMBERS += (_member,)
del _value, _member

STATUSES = tuple(s.value for s in Status)
# The outcomes that count as failures: for alerts, health, stats and `last-failure`.
FAILURES: frozenset[Status] = frozenset((Status.FAILED, Status.TIMEOUT, Status.MISSED))


def _fits(value: object, lo: int, hi: int, first: frozenset[str], chars: frozenset[str]) -> bool:
    """A string of ``lo``-``hi`` characters of ``chars`` whose first is one of ``first``."""
    return (
        isinstance(value, str)
        and lo <= len(value) <= hi
        and value[0] in first
        and all(c in chars for c in value)
    )


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid job slug, else raise ValidationError stating the rule."""
    if not _fits(name, 1, NAME_MAX, _NAME_FIRST, _NAME_CHARS):
        raise ValidationError(f"invalid job name {name!r}: {NAME_RULE}")
    return name


def normalize_name(text: str) -> str:
    """The valid job name nearest to ``text``, or "" when nothing of it is usable.

    Lower-cased; each run of characters outside the name's alphabet becomes one '-' (a
    trailing one is dropped); what may not start a name is dropped from the front; cut to
    NAME_MAX. A valid name comes back unchanged. The wrapper records a run under this
    rather than skip the job over its name."""
    out: list[str] = []
    replaced = False
    for c in text.lower():
        replaced = c not in _NAME_CHARS
        if not replaced:
            out.append(c)
        elif not out or out[-1] != "-":
            out.append("-")
    if replaced and out:
        out.pop()
    name = "".join(out).lstrip("-_.")[:NAME_MAX]
    return name if _fits(name, 1, NAME_MAX, _NAME_FIRST, _NAME_CHARS) else ""


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid tag, else raise ValidationError stating the rule."""
    if not _fits(tag, 1, NAME_MAX, _NAME_FIRST, _NAME_CHARS):  # a tag follows the name rule
        raise ValidationError(f"invalid tag {tag!r}: {TAG_RULE}")
    return tag


def validate_ping_key(key: str) -> str:
    """Return ``key`` if it is a valid ping key, else raise ValidationError stating the rule."""
    if not _fits(key, PING_KEY_MIN, PING_KEY_MAX, _KEY_FIRST, _KEY_CHARS):
        raise ValidationError(f"invalid ping key {key!r}: {PING_KEY_RULE}")
    return key


# The default environment: a run that names none belongs to it. It is stored as "" and
# called "production" in the APIs of the systems that name it (Loom, Cronitor), so that
# word names it everywhere (pings, check-ins, --env, ?env=) rather than a second one.
DEFAULT_ENV = "production"
ENV_MAX = 64


_ENV_CLASS = "A-Za-z0-9._-"
ENV_RULE = f"an environment is 1-{ENV_MAX} characters of letters, digits, '.', '_' and '-'"
ENV_PATTERN = f"^[{_ENV_CLASS}]{{1,{ENV_MAX}}}$"
_ENV_CHARS = _chars(_ENV_CLASS)


def validate_env(env: str) -> str:
    """An environment's name as a setting lists it (``environments``, ``mute_envs``)."""
    if not _fits(env, 1, ENV_MAX, _ENV_CHARS, _ENV_CHARS):
        raise ValidationError(f"invalid environment {env!r}: {ENV_RULE}")
    return env


def env_key(env: str) -> str:
    """The stored name of an environment: "" for the default one, however it is spelled."""
    return "" if env == "" or env.lower() == DEFAULT_ENV else env


def env_label(env: str) -> str:
    """An environment as the APIs name it: the default one is "production"."""
    return env or DEFAULT_ENV


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


def validate_run_id(value: str) -> str:
    if not (
        isinstance(value, str)
        and 1 <= len(value) <= RUN_ID_MAX
        and all(c in _RUN_ID_CHARS for c in value)
    ):
        raise ValidationError(f"invalid run id {value!r}: {RUN_ID_RULE}")
    return value


class _Record:
    """Equality and repr over ``__slots__``, like a dataclass's (same class, same fields)."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = self.__slots__
        return tuple(getattr(self, k) for k in names) == tuple(getattr(other, k) for k in names)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Run(_Record):
    """One execution of a job.

    Times are UTC seconds since the epoch (floats, sub-second). ``stdout``/``stderr`` are
    the captured (possibly capped) bytes, or None when not captured or expired by retention.
    ``merged``: the job's stdout and stderr went to one place and were captured as one
    stream, in the order written; ``stdout`` holds it and ``stderr`` is None.
    """

    __slots__ = ("job", "started_at", "status", "id", "ended_at", "duration", "exit_code",
                 "signal", "stdout", "stderr", "host", "user", "command", "env", "message",
                 "source", "merged")  # fmt: skip

    job: str
    started_at: float
    status: Status
    id: str
    ended_at: float | None
    duration: float | None
    exit_code: int | None
    signal: int | None
    stdout: bytes | None
    stderr: bytes | None
    host: str
    user: str
    command: str
    env: str
    message: str
    source: str
    merged: bool

    def __init__(
        self,
        job: str,
        started_at: float,
        status: Status | str = Status.RUNNING,
        id: str = "",
        ended_at: float | None = None,
        duration: float | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        stdout: bytes | None = None,
        stderr: bytes | None = None,
        host: str = "",
        user: str = "",
        command: str = "",
        env: str = "",
        message: str = "",
        source: str = "wrapper",
        merged: bool = False,
    ) -> None:
        self.job = job
        self.started_at = started_at
        self.status = Status(status)  # the same member back for a Status; else validated
        self.id = id or new_run_id(started_at)
        self.ended_at = ended_at
        self.duration = duration
        self.exit_code = exit_code
        self.signal = signal
        self.stdout = stdout
        self.stderr = stderr
        self.host = host
        self.user = user
        self.command = command
        self.env = env
        self.message = message
        self.source = source
        self.merged = merged

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
            d["merged"] = self.merged
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
        merged = d.get("merged", False)
        if not isinstance(merged, bool):
            raise ValidationError(f"run field 'merged' must be true or false, not {merged!r}")
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
            merged=merged,
        )


def _number_field(key: str, v: Any) -> float:
    if not isinstance(v, (int, float, str)):
        raise ValidationError(f"run field {key!r} must be a number, not {v!r}")
    try:
        value = float(v)
    except ValueError:
        raise ValidationError(f"run field {key!r} must be a number, not {v!r}") from None
    import math  # here, not at the top: an extension module the wrapper never needs

    if not math.isfinite(value):
        raise ValidationError(f"run field {key!r} must be a finite number, not {v!r}")
    return value


def _time_field(key: str, v: Any) -> float:
    """Seconds since the epoch, or an ISO 8601 string (naive means UTC)."""
    if isinstance(v, str):
        from cronwatch.core.values import parse_timestamp

        try:
            v = parse_timestamp(v)
        except ValidationError as e:
            raise ValidationError(f"run field {key!r}: {e}") from None
    value = _number_field(key, v)
    if not 0 <= value < 253402300800:  # year 10000: what a run id's clock can hold
        raise ValidationError(f"run field {key!r} is out of range: {v!r}")
    return value


class Job(_Record):
    """A named job and its settings. Settings are optional: a job exists from its first run."""

    __slots__ = ("name", "created_at", "schedule", "tz", "grace", "max_runtime", "alert_after",
                 "recover_after", "realert", "notify", "asserts", "paused", "tags", "ping_key",
                 "keep_days", "keep_output", "keep_failed_output", "slowdown_alert",
                 "resumed_at", "disabled", "title", "environments", "mute_envs",
                 "schedule_tolerance", "surge_threshold", "paused_until")  # fmt: skip

    name: str
    created_at: float
    schedule: str
    tz: str
    grace: float
    max_runtime: float | None
    alert_after: int
    recover_after: int
    realert: float | None
    notify: list[str]
    asserts: list[str]
    paused: bool
    tags: list[str]
    ping_key: str
    keep_days: float
    keep_output: int
    keep_failed_output: int
    slowdown_alert: bool
    resumed_at: float | None  # when it was last unpaused (the store keeps it), not a setting
    disabled: bool
    title: str
    environments: list[str]
    mute_envs: list[str]
    schedule_tolerance: int | None
    surge_threshold: int | None
    paused_until: float | None

    def __init__(
        self,
        name: str,
        created_at: float = 0.0,
        schedule: str = "",
        tz: str = "UTC",
        grace: float = 0.0,
        max_runtime: float | None = None,
        alert_after: int = 2,
        recover_after: int = 1,
        realert: float | None = None,
        notify: list[str] | None = None,
        asserts: list[str] | None = None,
        paused: bool = False,
        tags: list[str] | None = None,
        ping_key: str = "",
        keep_days: float = 365.0,
        keep_output: int = 1000,
        keep_failed_output: int = 5000,
        slowdown_alert: bool = False,
        resumed_at: float | None = None,
        disabled: bool = False,
        title: str = "",
        environments: list[str] | None = None,
        mute_envs: list[str] | None = None,
        schedule_tolerance: int | None = None,
        surge_threshold: int | None = 6,
        paused_until: float | None = None,
    ) -> None:
        self.name = name
        self.created_at = created_at
        self.schedule = schedule
        self.tz = tz
        self.grace = grace
        self.max_runtime = max_runtime
        self.alert_after = alert_after
        self.recover_after = recover_after
        self.realert = realert
        self.notify = [] if notify is None else notify
        self.asserts = [] if asserts is None else asserts
        self.paused = paused
        self.tags = [] if tags is None else tags
        self.ping_key = ping_key
        self.keep_days = keep_days
        self.keep_output = keep_output
        self.keep_failed_output = keep_failed_output
        self.slowdown_alert = slowdown_alert
        self.resumed_at = resumed_at
        self.disabled = disabled
        self.title = title
        self.environments = [] if environments is None else environments
        self.mute_envs = [] if mute_envs is None else mute_envs
        self.schedule_tolerance = schedule_tolerance
        self.surge_threshold = surge_threshold
        self.paused_until = paused_until

    def paused_at(self, now: float) -> bool:
        """Paused at ``now``: a timed pause (``paused_until``) is over once that time came,
        whether or not the store has been told yet (`check` and the scheduler resume it)."""
        return self.paused and (self.paused_until is None or now < self.paused_until)

    def settings(self) -> dict[str, Any]:
        """Every configurable field (everything but name, created_at, ping_key, resumed_at)."""
        return {k: getattr(self, k) for k in SETTING_NAMES}

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "created_at": self.created_at, "ping_key": self.ping_key}
        d.update(self.settings())
        return d


SETTING_NAMES = tuple(
    k for k in Job.__slots__ if k not in {"name", "created_at", "ping_key", "resumed_at"}
)


# A key in another system's spelling (Cronitor's monitor keys: mixed case, longer than a
# job name). It maps to a job name without loss (the key is kept beside the job) and
# without collisions (a key that is not already a valid name gets a digest of itself).
EXT_KEY_MAX = 200
_EXT_KEY_CLASS = "A-Za-z0-9._~-"
EXT_KEY_RULE = f"1-{EXT_KEY_MAX} characters of letters, digits, '.', '_', '~' and '-'"
EXT_KEY_PATTERN = f"^[{_EXT_KEY_CLASS}]{{1,{EXT_KEY_MAX}}}$"
_EXT_KEY_CHARS = _chars(_EXT_KEY_CLASS)


def validate_ext_key(key: str) -> str:
    """Return ``key`` if another system's key may name a job here, else ValidationError."""
    if not (
        isinstance(key, str)
        and 1 <= len(key) <= EXT_KEY_MAX
        and all(c in _EXT_KEY_CHARS for c in key)
    ):
        raise ValidationError(f"invalid key {str(key)[:80]!r}: {EXT_KEY_RULE}")
    return key


def name_for_key(key: str) -> str:
    """The job name of another system's key: the key itself when it is a valid name, else
    the nearest name (cut to leave room) plus 10 hex digits of the key's SHA-256, so that
    keys differing only in case or past the name's length stay distinct jobs."""
    validate_ext_key(key)
    if _fits(key, 1, NAME_MAX, _NAME_FIRST, _NAME_CHARS):
        return key
    import hashlib  # here: the wrapper never maps foreign keys

    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    base = normalize_name(key)[: NAME_MAX - 11].rstrip("-_.")
    return f"{base}-{digest}" if base else f"k{digest}"


# A token carried over from another system (a Cronitor API key, so that its clients keep
# their key): long enough to be a secret, in a URL- and header-safe alphabet.
IMPORTED_TOKEN_MIN, IMPORTED_TOKEN_MAX = 24, 200
_TOKEN_CHARS = _chars("A-Za-z0-9._~-")


def validate_imported_token(secret: str) -> str:
    if not (
        isinstance(secret, str)
        and IMPORTED_TOKEN_MIN <= len(secret) <= IMPORTED_TOKEN_MAX
        and all(c in _TOKEN_CHARS for c in secret)
    ):
        raise ValidationError(
            f"invalid token secret: {IMPORTED_TOKEN_MIN}-{IMPORTED_TOKEN_MAX} characters of "
            "letters, digits, '.', '_', '~' and '-'"
        )
    return secret
