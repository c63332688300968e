"""Request bodies of the management API: strict (no coercion), unknown fields refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from cronwatch.core.model import (
    ENV_PATTERN,
    NAME_PATTERN,
    NAME_RULE,
    PING_KEY_PATTERN,
    RUN_ID_PATTERN,
    TAG_PATTERN,
)
from cronwatch.core.settings import LINE_PATTERN, LIST_KINDS, SETTINGS, Kind, Setting

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
Short = Annotated[str, Field(max_length=200)]
Timestamp = Annotated[float, Field(ge=0, le=1e11)]
RunIdStr = Annotated[str, Field(pattern=RUN_ID_PATTERN)]


def integral(value: Any) -> Any:
    """2.0 is an integer to JSON Schema (and to the OpenAPI document clients are built
    from), not to pydantic's strict mode: take it as 2. 1.5, "2" and true stay refused."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def whole(lo: float | None, hi: float | None) -> Any:
    """A whole number between ``lo`` and ``hi`` as JSON Schema means it. (The bounds go
    before the validator: after it, pydantic would publish them as unknown keywords.)"""
    return Annotated[int, Field(ge=lo, le=hi), BeforeValidator(integral)]


ExitCode = Annotated[int, Field(ge=-1000, le=1000), BeforeValidator(integral)]


def _field(s: Setting) -> tuple[Any, Any]:
    """A setting as a strict JSON field: its type and bounds from the schema.

    These checks are the JSON types and the bounds OpenAPI can state; every value then goes
    through the schema's ``normalize`` too (server/api.py: check_settings), as from the CLI.
    """
    kind = s.kind
    t: Any
    if kind is Kind.DURATION or kind is Kind.NUMBER or kind is Kind.TIME:
        t = Annotated[float, Field(ge=s.lo, le=s.hi)]
    elif kind is Kind.COUNT:
        t = whole(s.lo, s.hi)
    elif kind is Kind.BOOL:
        t = bool
    elif kind is Kind.TAGS:  # the tag rule is a pattern OpenAPI can state
        t = Annotated[list[Annotated[str, Field(pattern=TAG_PATTERN)]],
                      Field(max_length=s.max_items)]  # fmt: skip
    elif kind is Kind.ENVS:  # so is the environment rule
        t = Annotated[list[Annotated[str, Field(pattern=ENV_PATTERN)]],
                      Field(max_length=s.max_items)]  # fmt: skip
    elif kind in LIST_KINDS:
        t = Annotated[list[Annotated[str, Field(max_length=s.max_len)]],
                      Field(max_length=s.max_items)]  # fmt: skip
    elif kind is Kind.TEXT:
        t = Annotated[str, Field(max_length=s.max_len, pattern=LINE_PATTERN)]
    elif kind is Kind.PING_KEY:
        t = Annotated[str, Field(pattern=PING_KEY_PATTERN)] | None
    else:
        t = Annotated[str, Field(max_length=s.max_len)]
    if s.optional:
        t = t | None
    default = list(s.default) if isinstance(s.default, list) else s.default
    return t, Field(default=default, description=s.help)


_FIELDS: dict[str, Any] = {s.name: _field(s) for s in SETTINGS}

if TYPE_CHECKING:  # the fields are made from the schema at run time; mypy sees models

    class JobSettings(BaseModel):
        pass

    class JobPatch(JobSettings):
        pass

    class JobCreate(JobSettings):
        name: str

else:
    JobSettings = create_model(
        "JobSettings", __config__=_STRICT, __doc__="Every job setting; durations are seconds.",
        **_FIELDS,
    )  # fmt: skip
    JobPatch = create_model(
        "JobPatch", __base__=JobSettings, __doc__="The same fields; only those sent change."
    )
    JobCreate = create_model(
        "JobCreate", __base__=JobSettings, __doc__="A new job: its name and settings.",
        name=(Annotated[str, Field(pattern=NAME_PATTERN, description=NAME_RULE)], ...),
    )  # fmt: skip


class RunCreate(BaseModel):
    """An SDK check-in: in_progress opens a run, ok/error records or closes one."""

    model_config = _STRICT

    status: Literal["in_progress", "ok", "error"]
    run_id: RunIdStr | None = None
    env: Short = ""
    host: Short = ""
    message: Annotated[str, Field(max_length=2000)] = ""
    exit_code: ExitCode | None = None
    duration_ms: Annotated[float, Field(ge=0, le=1e12)] | None = None
    output: Annotated[str, Field(max_length=1_000_000)] | None = None


class RunPatch(BaseModel):
    """Finish or amend a run."""

    model_config = _STRICT

    status: Literal["ok", "error"] | None = None
    finished_at: Timestamp | None = None
    duration_ms: Annotated[float, Field(ge=0, le=1e12)] | None = None
    exit_code: ExitCode | None = None
    output: Annotated[str, Field(max_length=1_000_000)] | None = None
    message: Annotated[str, Field(max_length=2000)] | None = None


class PauseBody(BaseModel):
    """A pause: for ``seconds`` (or until ``until``, seconds since the epoch), else until
    resumed."""

    model_config = _STRICT

    seconds: Annotated[float, Field(gt=0, le=366 * 86400.0)] | None = None
    until: Timestamp | None = None


NotifyListName = Annotated[str, Field(pattern=NAME_PATTERN)]


class NotifyList(BaseModel):
    """A notification list: channel URLs or shorthands (email:, slack:#, pagerduty:,
    sms:, webhook:), never other lists."""

    model_config = _STRICT

    channels: Annotated[list[Annotated[str, Field(min_length=1, max_length=2000)]],
                        Field(min_length=1, max_length=50)]  # fmt: skip


class ProjectKey(BaseModel):
    """The project ping key of slug URLs (/p/KEY/job, /ping/KEY/job)."""

    model_config = _STRICT

    key: Annotated[str, Field(pattern=PING_KEY_PATTERN)]
