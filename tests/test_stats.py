from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronwatch.core.model import Status
from cronwatch.core.stats import (
    SlowDown,
    kth_smallest,
    nearest_rank,
    percentile,
    slowdown,
    success_rate,
    uptime,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([7.0], 0.95, 7.0),
        ([1.0, 2.0, 3.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 1.0, 4.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),  # round(0.95 * 99) = 94 -> 95.0
    ],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 95)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0, 1), st.floats(0, 1))
def test_percentile_is_an_observed_value_and_monotone_in_q(values, q1, q2) -> None:
    values.sort()
    lo, hi = sorted((q1, q2))
    assert percentile(values, lo) in values
    assert percentile(values, lo) <= percentile(values, hi)


def test_success_rate() -> None:
    assert success_rate([]) is None
    assert success_rate([Status.RUNNING]) is None
    assert success_rate(["success", "failed", "running", Status.MISSED]) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("outcomes", "start", "end", "expected"),
    [
        ([], 0, 100, None),
        ([(0, True)], 0, 100, 1.0),
        ([(0, True), (50, False)], 0, 100, 0.5),
        ([(-10, False), (25, True)], 0, 100, 0.75),  # state before the window carries in
        ([(50, False)], 0, 100, 0.0),  # time before the first outcome is unknown
        ([(0, True), (150, False)], 0, 100, 1.0),
        ([(0, True)], 100, 100, None),
    ],
)
def test_uptime(outcomes, start, end, expected) -> None:
    assert uptime(outcomes, start, end) == expected


def test_slowdown_needs_enough_data() -> None:
    assert slowdown([10.0] * 10 + [1.0] * 19) is None
    assert slowdown([10.0] * 10 + [1.0] * 20) is not None


def test_slowdown_is_found_and_described() -> None:
    found = slowdown([12.3] * 10 + [5.9] * 50)
    assert found == SlowDown(12.3, 5.9, 12.3 / 5.9, 10, 50)
    assert found.text() == "recent median 12.3s is 2.1x the baseline 5.9s"


def test_one_stuck_run_is_not_a_slowdown() -> None:
    assert slowdown([500.0] + [5.0] * 9 + [5.0] * 50) is None


def test_small_absolute_changes_are_ignored() -> None:
    assert slowdown([0.03] * 10 + [0.01] * 50) is None  # 3x, but 20 ms
    assert slowdown([3.0] * 10 + [1.0] * 50, min_delta=5) is None


def test_ratio_threshold() -> None:
    assert slowdown([14.0] * 10 + [10.0] * 50) is None  # 1.4x
    assert slowdown([15.0] * 10 + [10.0] * 50) is not None  # 1.5x


def test_baseline_window_is_bounded() -> None:
    # Only the 100 runs before the recent 10 count: very old fast runs are ignored.
    durations = [20.0] * 10 + [18.0] * 100 + [1.0] * 500
    assert slowdown(durations) is None


def test_zero_baseline() -> None:
    found = slowdown([2.0] * 10 + [0.0] * 30)
    assert found is not None and math.isinf(found.ratio)
    assert found.text() == "recent median 2.0s, up from a baseline of 0s"


def test_long_durations_are_formatted() -> None:
    assert slowdown([600.0] * 10 + [120.0] * 30).text() == (
        "recent median 10m00s is 5.0x the baseline 2m00s"
    )


# --- kth_smallest: selection across sorted pieces (stats over a year of sealed days) ----------

PIECES = st.lists(
    st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]) | st.floats(0, 1e4), max_size=900).map(
        sorted
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(PIECES, st.floats(0, 1))
def test_kth_smallest_equals_sorting_everything(pieces, q) -> None:
    merged = sorted(x for p in pieces for x in p)
    if not merged:
        with pytest.raises(IndexError):
            kth_smallest(pieces, 0)
        return
    k = nearest_rank(q, len(merged))
    assert kth_smallest(pieces, k) == merged[k]
    assert percentile(merged, q) == merged[k]


def test_kth_smallest_on_a_year_of_days_with_ties() -> None:
    # large enough that the pivot rounds run (they start above 4,096 values), with many
    # equal durations across days, as whole-second jobs have
    import random
    from array import array

    rng = random.Random(5)
    days = [array("d", sorted(float(rng.randint(1, 90)) for _ in range(1440))) for _ in range(60)]
    days.append(array("d"))
    merged = sorted(x for d in days for x in d)
    for k in (0, 1, len(merged) // 2, round(0.95 * (len(merged) - 1)), len(merged) - 1):
        assert kth_smallest(days, k) == merged[k]
    with pytest.raises(IndexError):
        kth_smallest(days, len(merged))
