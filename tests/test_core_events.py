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
