"""Request bodies of the management API: strict (no coercion), unknown fields refused."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
Seconds = Annotated[float, Field(ge=0, le=10 * 366 * 86400)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]
Short = Annotated[str, Field(max_length=200)]
Timestamp = Annotated[float, Field(ge=0, le=1e11)]
RunIdStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
PingKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class JobSettings(BaseModel):
    """Every setting of ``cronwatch job set``; durations are seconds."""

    model_config = _STRICT

    schedule: Annotated[str, Field(max_length=500)] = ""
    tz: Annotated[str, Field(max_length=64)] = "UTC"
    grace: Seconds = 0.0
    max_runtime: Seconds | None = None
    alert_after: Count = 2
    recover_after: Count = 1
    realert: Seconds | None = None
    notify: Annotated[list[Short], Field(max_length=50)] = []
    asserts: Annotated[list[Short], Field(max_length=50)] = []
    paused: bool = False
    tags: Annotated[list[Short], Field(max_length=50)] = []
    keep_days: Seconds = 365.0
    keep_output: Annotated[int, Field(ge=0, le=10_000_000)] = 1000
    keep_failed_output: Annotated[int, Field(ge=0, le=10_000_000)] = 5000
    slowdown_alert: bool = False
    ping_key: PingKey | None = None


class JobPatch(JobSettings):
    """The same fields; only those sent change."""


class JobCreate(JobSettings):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class RunCreate(BaseModel):
    """An SDK check-in: in_progress opens a run, ok/error records or closes one."""

    model_config = _STRICT

    status: Literal["in_progress", "ok", "error"]
    run_id: RunIdStr | None = None
    env: Short = ""
    host: Short = ""
    message: Annotated[str, Field(max_length=2000)] = ""
    exit_code: Annotated[int, Field(ge=-1000, le=1000)] | None = None
    duration_ms: Annotated[float, Field(ge=0, le=1e12)] | None = None
    output: Annotated[str, Field(max_length=1_000_000)] | None = None


class RunPatch(BaseModel):
    """Finish or amend a run."""

    model_config = _STRICT

    status: Literal["ok", "error"] | None = None
    finished_at: Timestamp | None = None
    duration_ms: Annotated[float, Field(ge=0, le=1e12)] | None = None
    exit_code: Annotated[int, Field(ge=-1000, le=1000)] | None = None
    output: Annotated[str, Field(max_length=1_000_000)] | None = None
    message: Annotated[str, Field(max_length=2000)] | None = None
