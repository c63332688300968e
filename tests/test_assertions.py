from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronwatch.core.assertions import check_rules, parse_rule, parse_rules
from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Run, Status


def run(duration: float | None = 10.0, stdout: bytes | None = b"", stderr: bytes | None = b""):
    return Run(
        job="j",
        started_at=1000.0,
        status=Status.SUCCESS,
        ended_at=None if duration is None else 1000.0 + duration,
        duration=duration,
        stdout=stdout,
        stderr=stderr,
    )


@pytest.mark.parametrize(
    ("text", "kind", "subject", "op", "value"),
    [
        ("duration < 30m", "duration", "duration", "<", 1800.0),
        ("duration>5s", "duration", "duration", ">", 5.0),
        ("Duration <= 1h30m", "duration", "duration", "<=", 5400.0),
        ("duration >= 90", "duration", "duration", ">=", 90.0),
        ("output contains OK", "contains", "output", "", "OK"),
        ('output contains "all done "', "contains", "output", "", "all done "),
        ("output not contains 'ERROR'", "not_contains", "output", "", "ERROR"),
        ("stderr not  contains warning", "not_contains", "stderr", "", "warning"),
        ("stdout matches ^rows: \\d+$", "matches", "stdout", "", "^rows: \\d+$"),
        ("stdout lines >= 3", "lines", "stdout", ">=", 3),
        ("output lines==0", "lines", "output", "==", 0),
        ("stderr lines != 0", "lines", "stderr", "!=", 0),
    ],
)
def test_parse(text: str, kind: str, subject: str, op: str, value: object) -> None:
    r = parse_rule(text)
    assert (r.kind, r.subject, r.op, r.value) == (kind, subject, op, value)
    assert str(r) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "duration = 5m",
        "duration < soon",
        "output contains",
        'output contains ""',
        "output matches (unclosed",
        "stdout lines >= many",
        "stdout lines => 3",
        "exit code == 0",
        "output includes OK",
    ],
)
def test_rejected_rules_list_the_forms(text: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_rule(text)
    assert repr(text) in str(exc.value)
    assert "duration < 30m" in str(exc.value) and "output matches REGEX" in str(exc.value)


def test_bad_regex_says_why() -> None:
    with pytest.raises(ValidationError, match="bad regular expression"):
        parse_rule("output matches [a-")


@pytest.mark.parametrize(
    ("rule", "the_run", "failure"),
    [
        ("duration < 30m", run(41 * 60), "duration < 30m failed: took 41m00s"),
        ("duration < 30m", run(29 * 60), None),
        ("duration > 5s", run(1.5), "duration > 5s failed: took 1.50s"),
        ("duration >= 5s", run(5.0), None),
        ("duration < 5s", run(None), "duration < 5s failed: the duration is unknown"),
        ("output contains OK", run(stdout=b"all OK\n"), None),
        ("output contains OK", run(stderr=b"OK"), None),
        (
            "output contains OK",
            run(stdout=b"nope"),
            "output contains OK failed: not found in 4 bytes of output",
        ),
        (
            "stdout contains OK",
            run(stderr=b"OK"),
            "stdout contains OK failed: not found in 0 bytes of output",
        ),
        (
            "output contains OK",
            run(stdout=None, stderr=None),
            "output contains OK failed: no output was captured",
        ),
        (
            "output not contains ERROR",
            run(stdout=b"a\nb\nan ERROR\n"),
            "output not contains ERROR failed: found on line 3",
        ),
        ("output not contains ERROR", run(stdout=b"fine"), None),
        ("output matches ^done$", run(stdout=b"x\ndone\ny"), None),
        (
            "output matches ^done$",
            run(stdout=b"undone"),
            "output matches ^done$ failed: no match in 6 bytes of output",
        ),
        ("stdout lines >= 2", run(stdout=b"one\ntwo"), None),
        ("stdout lines >= 3", run(stdout=b"one\ntwo\n"), "stdout lines >= 3 failed: 2 lines"),
        ("stdout lines == 0", run(stdout=b""), None),
        ("output lines == 2", run(stdout=b"out", stderr=b"err"), None),
        ("stderr lines < 1", run(stderr=b"x"), "stderr lines < 1 failed: 1 line"),
    ],
)
def test_check(rule: str, the_run: Run, failure: str | None) -> None:
    assert parse_rule(rule).check(the_run) == failure


def test_streams_do_not_join_into_a_false_match() -> None:
    # "...ER" at the end of stdout and "ROR..." at the start of stderr is not "ERROR".
    assert parse_rule("output contains ERROR").check(run(stdout=b"ER", stderr=b"ROR")) is not None


def test_undecodable_output_is_checked_not_crashed() -> None:
    assert parse_rule("output contains ok").check(run(stdout=b"\xff\xfe ok")) is None


def test_check_rules_returns_the_first_failure() -> None:
    rules = parse_rules(["duration < 1h", "output contains OK", "stdout lines > 5"])
    assert check_rules(rules, run(stdout=b"OK")) == "stdout lines > 5 failed: 1 line"
    assert check_rules(rules, run(stdout=b"fail")).startswith("output contains OK failed")
    assert check_rules([], run()) is None


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1).filter(lambda s: s.strip() == s and "\n" not in s), st.binary())
def test_contains_and_not_contains_are_opposites(needle: str, out: bytes) -> None:
    the_run = run(stdout=out)
    has = parse_rule(f'output contains "{needle}"').check(the_run) is None
    lacks = parse_rule(f'output not contains "{needle}"').check(the_run) is None
    assert has != lacks


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="ab \t", max_size=5), max_size=6), st.booleans())
def test_line_count(lines: list[str], trailing: bool) -> None:
    text = "\n".join(lines) + ("\n" if trailing and lines else "")
    expected = len(text.splitlines())
    assert parse_rule(f"stdout lines == {expected}").check(run(stdout=text.encode())) is None


def test_one_stream_rules_on_output_captured_as_one_stream() -> None:
    """With `2>&1` the streams are one: 'output' rules judge it, and a rule on stdout or
    stderr alone says why it cannot be judged instead of counting the other's lines."""
    merged = Run(job="j", started_at=0.0, status=Status.SUCCESS, duration=1.0,
                 stdout=b"done\nwarning: slow\n", stderr=None, merged=True)  # fmt: skip
    assert parse_rule("output contains warning").check(merged) is None
    assert parse_rule("output lines == 2").check(merged) is None
    for rule in ("stdout lines == 1", "stderr contains warning"):
        subject = rule.split()[0]
        assert parse_rule(rule).check(merged) == (
            f"{rule} failed: stdout and stderr went to one place and were captured as one "
            f"stream: use 'output' instead of '{subject}'"
        )
