"""Assertions: rules that turn a run that exited 0 into a failure (too slow, wrong output).

    duration < 30m            also >, <=, >= (any duration: 90s, 1h30m, 2d)
    output contains TEXT      'output' is stdout and stderr together;
    output not contains TEXT  'stdout' or 'stderr' instead select one stream
    output matches REGEX      Python re.search, ^ and $ match at every line
    stdout lines >= N         also <=, <, >, ==, != (and 'output lines', 'stderr lines')

Cronitor's syntax too, as Cronitor writes it: a ``metric.`` subject and units in words,

    metric.duration < 30 minutes      (seconds, minutes, hours, days; singular or plural)
    metric.count >= 1                 the count and error_count a telemetry ping carries
    metric.error_count < 1            (?metric=count:N); a run without that metric fails

TEXT and REGEX may be quoted ("..." or '...') to keep leading or trailing spaces.
Output checks see the captured output, which is capped (head and tail kept): text in a
cut middle is not found, and line counts of capped output are counted after the cut.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Run
from cronwatch.core.values import format_duration, parse_duration

RULE_HELP = (
    "expected one of: 'duration < 30m' (or >, <=, >=), 'output contains TEXT', "
    "'output not contains TEXT', 'output matches REGEX', 'stdout lines >= N' "
    "(or <=, <, >, ==, !=); use stdout or stderr instead of output for one stream, "
    "and quote TEXT as \"...\" or '...' to keep spaces; or Cronitor's "
    "'metric.duration < 30 minutes', 'metric.count >= 1', 'metric.error_count < 1'"
)

RuleKind = Literal["duration", "contains", "not_contains", "matches", "lines", "metric"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_DURATION = re.compile(r"duration\s*(<=|>=|<|>)\s*(.+)", re.IGNORECASE)
_LINES = re.compile(r"(output|stdout|stderr)\s+lines\s*(<=|>=|==|!=|<|>)\s*(\d+)", re.IGNORECASE)
_METRIC_DURATION = re.compile(
    r"metric\.duration\s*(<=|>=|<|>)\s*([0-9]+(?:\.[0-9]+)?)\s*"
    r"(milliseconds?|ms|seconds?|s|minutes?|m|hours?|h|days?|d)",
    re.IGNORECASE,
)
_WORD_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_METRIC_COUNT = re.compile(
    r"metric\.(count|error_count)\s*(<=|>=|==|!=|<|>)\s*([0-9]{1,15})", re.IGNORECASE
)
# how the ping dialect writes a telemetry ping's counts into the run's message
_COUNTS = re.compile(r"(?:^|[\s(])(count|error_count)=([0-9.eE+-]+)")
_TEXT = re.compile(
    r"(output|stdout|stderr)\s+(not\s+contains|contains|matches)\s+(.+)", re.IGNORECASE | re.DOTALL
)


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed assertion. ``value``: seconds, a line count, a text or a regex source."""

    text: str
    kind: RuleKind
    subject: str  # duration, output, stdout or stderr
    op: str = ""
    value: float | str = ""
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return self.text

    def check(self, run: Run) -> str | None:
        """None if the run satisfies the rule, else '<rule> failed: <what was observed>'."""
        observed = self._violation(run)
        return None if observed is None else f"{self.text} failed: {observed}"

    def _violation(self, run: Run) -> str | None:
        if self.kind == "metric":
            found = {k: v for k, v in _COUNTS.findall(run.message or "")}
            if self.subject not in found:
                return f"the run reported no {self.subject} metric"
            try:
                n = float(found[self.subject])
            except ValueError:
                return f"the run's {self.subject} metric is not a number"
            return None if _OPS[self.op](n, float(self.value)) else f"{self.subject} was {n:g}"
        if self.kind == "duration":
            took = run.duration
            if took is None and run.ended_at is not None:
                took = run.ended_at - run.started_at
            if took is None:
                return "the duration is unknown"
            ok = _OPS[self.op](took, float(self.value))
            return None if ok else f"took {format_duration(took)}"
        out = _output(run, self.subject)
        if out is None and run.merged:
            return (f"stdout and stderr went to one place and were captured as one stream: "
                    f"use 'output' instead of '{self.subject}'")  # fmt: skip
        if out is None:
            return f"no {self.subject} was captured"
        if self.kind == "lines":
            n = _count_lines(out)
            ok = _OPS[self.op](n, float(self.value))
            return None if ok else f"{n} line{'' if n == 1 else 's'}"
        if self.kind == "contains":
            return None if str(self.value) in out else f"not found in {_size(out)}"
        if self.kind == "not_contains":
            pos = out.find(str(self.value))
            return None if pos < 0 else f"found on line {out.count(chr(10), 0, pos) + 1}"
        assert self.regex is not None
        return None if self.regex.search(out) else f"no match in {_size(out)}"


def _output(run: Run, subject: str) -> str | None:
    if run.merged and subject != "output":  # one stream: which line came from where is gone
        return None
    streams = {"stdout": (run.stdout,), "stderr": (run.stderr,)}
    captured = [p for p in streams.get(subject, (run.stdout, run.stderr)) if p is not None]
    if not captured:
        return None
    parts = [p for p in captured if p]
    # Keep the streams on separate lines so a match never spans the seam between them.
    joined = b""
    for i, part in enumerate(parts):
        seam = i < len(parts) - 1 and not part.endswith(b"\n")
        joined += part + (b"\n" if seam else b"")
    return joined.decode("utf-8", "replace")


def _count_lines(text: str) -> int:
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def _size(text: str) -> str:
    n = len(text.encode("utf-8"))
    return f"{n} byte{'' if n == 1 else 's'} of output"


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return value[1:-1]
    return value


def _bad(text: str, why: str = "") -> ValidationError:
    detail = f" ({why})" if why else ""
    return ValidationError(f"invalid assertion {text!r}{detail}: {RULE_HELP}")


def parse_rule(text: str) -> Rule:
    """Parse one assertion; raise ValidationError listing the accepted forms."""
    s = str(text).strip()
    if m := _METRIC_DURATION.fullmatch(s):
        unit = m.group(3).lower()
        size = _WORD_UNITS["ms" if unit.startswith("mil") else unit[0]] if unit != "ms" else 0.001
        return Rule(s, "duration", "duration", m.group(1), float(m.group(2)) * size)
    if m := _METRIC_COUNT.fullmatch(s):
        return Rule(s, "metric", m.group(1).lower(), m.group(2), int(m.group(3)))
    if m := _DURATION.fullmatch(s):
        try:
            seconds = parse_duration(m.group(2))
        except ValidationError as e:
            raise _bad(s, str(e)) from None
        return Rule(s, "duration", "duration", m.group(1), seconds)
    if m := _LINES.fullmatch(s):
        return Rule(s, "lines", m.group(1).lower(), m.group(2), int(m.group(3)))
    if m := _TEXT.fullmatch(s):
        subject, verb = m.group(1).lower(), " ".join(m.group(2).lower().split())
        value = _unquote(m.group(3).strip())
        if not value:
            raise _bad(s, "empty text")
        if verb == "matches":
            try:
                regex = re.compile(value, re.MULTILINE)
            except re.error as e:
                raise _bad(s, f"bad regular expression: {e}") from None
            return Rule(s, "matches", subject, "", value, regex)
        kind: RuleKind = "contains" if verb == "contains" else "not_contains"
        return Rule(s, kind, subject, "", value)
    raise _bad(s)


def parse_rules(texts: Iterable[str]) -> list[Rule]:
    """Parse several rules (a job's ``asserts`` setting); the first bad one raises."""
    return [parse_rule(t) for t in texts]


def check_rules(rules: Iterable[Rule], run: Run) -> str | None:
    """The first failing rule's message (with what was observed), or None if all pass.

    Meant for runs that exited successfully: the caller records a failure with this
    message instead.
    """
    for rule in rules:
        if (failure := rule.check(run)) is not None:
            return failure
    return None
