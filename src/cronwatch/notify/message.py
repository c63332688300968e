"""The notification message: one value, rendered as a title, plain text, or webhook JSON."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from string import Template
from typing import Any

from cronwatch.core.errors import ValidationError
from cronwatch.core.values import format_duration, format_time, iso

KINDS = ("alert", "recovery", "reminder", "test")
PLACEHOLDERS = (
    "kind", "event", "job", "env", "status", "cause", "title", "text", "output_tail",
    "run_id", "exit_code", "duration", "at", "dashboard_url",
)  # fmt: skip
_HEADLINE = {"alert": "is DOWN", "recovery": "is UP again", "reminder": "is still DOWN"}


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@dataclass(slots=True)
class Message:
    """What a channel delivers about one job event.

    ``run`` is the run's JSON (``Run.to_dict(output=False)``) or None for a missed run
    that never started; ``output_tail`` is the last ~2 KiB of its output; ``at`` is the
    event time, UTC seconds since the epoch.
    """

    kind: str
    job: str
    status: str
    cause: str = ""
    run: dict[str, Any] | None = None
    output_tail: str = ""
    env: str = ""
    at: float = field(default_factory=time.time)
    dashboard_url: str = ""
    # The outbox's delivery key, the same at every attempt of one notification: sent as a
    # webhook's Idempotency-Key, so that a receiver can drop the second copy a replica
    # that died mid-send leaves to another (docs/deployment.md). Not stored, not shown.
    delivery: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationError(
                f"invalid message kind {self.kind!r}: expected one of {', '.join(KINDS)}"
            )

    def title(self) -> str:
        """One line, e.g. ``cronwatch: backup is DOWN — 2 consecutive failures: exit 3``."""
        name = f"{self.job} ({self.env})" if self.env else self.job
        if self.kind == "test":
            head = f"cronwatch: test notification for {name}"
        else:
            head = f"cronwatch: {name} {_HEADLINE[self.kind]}"
        cause = _one_line(self.cause)
        return _one_line(f"{head} — {cause}" if cause else head)

    def details(self) -> list[str]:
        """The facts under the title, one a line (no output)."""
        lines = [f"job: {self.job}" + (f" (env {self.env})" if self.env else "")]
        lines.append(f"status: {self.status}")
        run = self.run or {}
        if run:
            bits = [str(run.get("id", ""))]
            if run.get("started_at") is not None:
                bits.append(f"started {format_time(run['started_at'])} UTC")
            if run.get("duration") is not None:
                bits.append(f"took {format_duration(run['duration'])}")
            if run.get("exit_code") is not None:
                bits.append(f"exit code {run['exit_code']}")
            if run.get("host"):
                bits.append(f"on {run['host']}")
            lines.append("run: " + ", ".join(b for b in bits if b))
        lines.append(f"at: {format_time(self.at)} UTC")
        if self.dashboard_url:
            lines.append(f"dashboard: {self.dashboard_url}")
        return lines

    def text(self) -> str:
        """Title, details and the output tail, as plain text (email body, Telegram)."""
        parts = [self.title(), "", *self.details()]
        if self.output_tail:
            parts += ["", "--- output (last lines) ---", self.output_tail.rstrip("\n")]
        return "\n".join(parts)

    def payload(self) -> dict[str, Any]:
        """The webhook body (stable; fields are only ever added).

        ``event``          "alert" | "recovery" | "reminder" | "test"
        ``job``, ``env``   job name and environment ("" when none)
        ``status``         the run status that caused the event: failed, timeout, missed, success
        ``cause``          why, in words: "2 consecutive failures: exit 3"
        ``title``          the one-line summary other channels use as subject
        ``at``             event time, ISO 8601 UTC with milliseconds ("2026-03-29T01:30:00.000Z")
        ``run``            the run's JSON (id, started_at, ended_at, duration, exit_code, signal,
                           host, ...) without stdout/stderr, or null
        ``output_tail``    the last ~2 KiB of the run's output ("" when none)
        ``dashboard_url``  link to the job, "" when no server URL is configured
        """
        run = None
        if self.run is not None:
            run = {k: v for k, v in self.run.items() if k not in ("stdout", "stderr")}
        return {
            "event": self.kind,
            "job": self.job,
            "env": self.env,
            "status": self.status,
            "cause": self.cause,
            "title": self.title(),
            "at": iso(self.at),
            "run": run,
            "output_tail": self.output_tail,
            "dashboard_url": self.dashboard_url,
        }

    def to_json(self) -> str:
        """``payload()`` as JSON text: the default webhook body."""
        return json.dumps(self.payload(), ensure_ascii=False)

    def values(self) -> dict[str, str]:
        """Template placeholder values, as strings."""
        run = self.run or {}

        def opt(key: str) -> str:
            return "" if run.get(key) is None else str(run[key])

        return {
            "kind": self.kind,
            "event": self.kind,
            "job": self.job,
            "env": self.env,
            "status": self.status,
            "cause": self.cause,
            "title": self.title(),
            "text": self.text(),
            "output_tail": self.output_tail,
            "run_id": opt("id"),
            "exit_code": opt("exit_code"),
            "duration": opt("duration"),
            "at": iso(self.at) or "",
            "dashboard_url": self.dashboard_url,
        }

    def render(self, template: str, escape: Callable[[str], str] | None = None) -> str:
        """Fill ``$job``-style placeholders (unknown ones stay as written).

        ``escape`` is applied to each value, e.g. ``json_escape`` so that
        ``{"text": "$job: $cause"}`` stays valid JSON whatever the output contains.
        """
        values = self.values()
        if escape is not None:
            values = {k: escape(v) for k, v in values.items()}
        return Template(template).safe_substitute(values)

    def to_dict(self) -> dict[str, Any]:
        """The raw fields (for storing in the outbox); ``from_dict`` is the inverse."""
        d = asdict(self)
        del d["delivery"]  # each delivery's own (evaluate.deliver_outbox)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        try:
            return cls(**{k: d[k] for k in d if k in _FIELDS})
        except TypeError as e:
            raise ValidationError(f"invalid stored message: {e}") from None


_FIELDS = frozenset(Message.__dataclass_fields__)


def json_escape(value: str) -> str:
    """``value`` escaped to sit between the quotes of a JSON string."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def is_json_template(template: str) -> bool:
    """A template that looks like a JSON object or array is sent as application/json."""
    return template.lstrip()[:1] in ("{", "[")


def check_template(template: str) -> str:
    """Return ``template`` if a JSON-looking one still parses after substitution, else raise."""
    if is_json_template(template):
        sample = Message("test", "job", "success", 'a "quoted"\ncause', output_tail="x\ty\\z")
        try:
            json.loads(sample.render(template, json_escape))
        except ValueError as e:
            raise ValidationError(
                f"invalid webhook template: it starts like JSON but is not valid JSON ({e}); "
                'put placeholders inside strings, e.g. {"text": "$job is $status: $cause"}'
            ) from None
    return template
