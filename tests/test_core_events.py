"""The event log's JSON, written by the wrapper without the json module."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from cronwatch.core.events import to_json

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)  # fmt: skip


@given(st.dictionaries(st.text(), scalars, max_size=12))
def test_to_json_is_json_dumps(event: dict[str, object]) -> None:
    assert to_json(event) == json.dumps(event)


def test_to_json_of_a_run_event_reads_back() -> None:
    event = {"type": "run.error", "job": "backup", "env": "", "run": "01J0", "status": "failed",
             "started_at": 1.5, "ended_at": None, "exit_code": 3, "cause": 'a "quoted"\n\tline é'}  # fmt: skip
    assert json.loads(to_json(event)) == event


# --- the quick path's compact run.ok rows (core.events.expand) -------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)


@given(job=st.text(min_size=1), env=st.text(), at=finite,
       extra=st.none() | st.tuples(finite, st.none() | finite, st.none() | st.integers(-255, 255)))  # fmt: skip
def test_a_compact_run_ok_expands_to_run_finished_byte_for_byte(
    job: str, env: str, at: float, extra: tuple[float, float | None, int | None] | None
) -> None:
    from cronwatch.core.events import expand, run_finished
    from cronwatch.core.model import Run, Status

    rid = "01m8we2d6a2wwhc09kqmyn2tph"
    if extra is None:
        compact = json.dumps([job, env, rid], separators=(",", ":"))
        run = Run(job=job, env=env, id=rid, status=Status.SUCCESS, started_at=at, ended_at=at)
    else:
        started, duration, code = extra
        compact = json.dumps([job, env, rid, started, duration, code], separators=(",", ":"))
        run = Run(job=job, env=env, id=rid, status=Status.SUCCESS, started_at=started,
                  ended_at=at, duration=duration, exit_code=code)  # fmt: skip
    assert expand(at, "run.ok", compact) == json.dumps(run_finished(run))


def test_expand_leaves_every_other_event_as_stored() -> None:
    from cronwatch.core.events import expand

    obj = '{"type": "run.ok", "job": "a"}'
    assert expand(1.0, "run.ok", obj) is obj
    assert expand(1.0, "run.log", '["x"]') == '["x"]'  # only run.ok rows are compact
