"""Numbers about runs: percentiles, success rate, uptime and slow-down detection. Pure."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cronwatch.core.model import Status
from cronwatch.core.values import format_duration


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0 <= q <= 1) of ascending values; None when there are none.

    Nearest rank on the interpolation index, round(q * (n - 1)): the same rule the SQLite
    store uses for duration_p50/p95, so both report the same observed value.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be between 0 and 1, got {q!r}")
    n = len(sorted_values)
    if n == 0:
        return None
    return sorted_values[nearest_rank(q, n)]


def nearest_rank(q: float, n: int) -> int:
    """The index (0-based, ascending) that :func:`percentile` reads for ``n`` values."""
    return min(n - 1, max(0, round(q * (n - 1))))


def kth_smallest(runs: Sequence[Sequence[float]], k: int) -> float:
    """The ``k``-th smallest (0-based) of the values of several ascending sequences, as if
    they were merged, without merging them: ``sorted(chain(*runs))[k]``.

    Stats over a year of minutely runs select p50/p95 from ~365 sorted days of ~1,440
    durations each. Each round takes the weighted median of the middles of what is left
    as a pivot, counts around it by bisection, and keeps the side that holds ``k``: at
    least a quarter of what is left goes each round, so ~20 rounds of one bisection per
    day, instead of sorting half a million values.
    """
    from bisect import bisect_left, bisect_right

    left = [(r, 0, len(r)) for r in runs if len(r)]
    total = sum(hi for _, _, hi in left)
    if not 0 <= k < total:
        raise IndexError(f"k={k} out of range for {total} values")
    while True:
        if total <= 4096:
            return sorted(x for r, lo, hi in left for x in r[lo:hi])[k]
        mids = sorted((r[(lo + hi) // 2], hi - lo) for r, lo, hi in left)
        acc, pivot = 0, mids[-1][0]
        for value, weight in mids:
            acc += weight
            if 2 * acc >= total:
                pivot = value
                break
        cut = [bisect_left(r, pivot, lo, hi) for r, lo, hi in left]
        below = sum(c - lo for c, (_, lo, _) in zip(cut, left, strict=True))
        if k < below:
            left = [(r, lo, c) for c, (r, lo, _) in zip(cut, left, strict=True) if c > lo]
            total = below
            continue
        cut = [bisect_right(r, pivot, lo, hi) for r, lo, hi in left]
        upto = sum(c - lo for c, (_, lo, _) in zip(cut, left, strict=True))
        if k < upto:
            return pivot
        k -= upto
        left = [(r, c, hi) for c, (r, _, hi) in zip(cut, left, strict=True) if hi > c]
        total -= upto


def success_rate(statuses: Iterable[Status | str]) -> float | None:
    """Successes / finished runs (running ones are left out); None when none finished."""
    finished = ok = 0
    for s in statuses:
        status = Status(s)
        if status.is_finished:
            finished += 1
            ok += status is Status.SUCCESS
    return ok / finished if finished else None


def uptime(outcomes: Sequence[tuple[float, bool]], start: float, end: float) -> float | None:
    """Fraction of [start, end] the job was up; None when no part of it is known.

    ``outcomes`` are (time, ok) pairs, oldest first, typically (ended_at, succeeded). Each
    holds until the next one. Time before the first outcome counts only if an outcome at
    or before ``start`` says what the state was then.
    """
    if end <= start:
        return None
    up = known = 0.0
    state: bool | None = None
    cursor = start
    for at, ok in outcomes:
        if at > cursor:
            span = min(at, end) - cursor
            if state is not None and span > 0:
                known += span
                up += span if state else 0.0
            cursor = min(at, end)
        state = ok
        if at >= end:
            break
    if state is not None and cursor < end:
        known += end - cursor
        up += (end - cursor) if state else 0.0
    return up / known if known > 0 else None


def _short(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


@dataclass(frozen=True, slots=True)
class SlowDown:
    recent_median: float
    baseline_median: float
    ratio: float
    recent_count: int
    baseline_count: int

    def text(self) -> str:
        """'recent median 12.3s is 2.1x the baseline 5.9s'."""
        if math.isinf(self.ratio):
            return f"recent median {_short(self.recent_median)}, up from a baseline of 0s"
        return (
            f"recent median {_short(self.recent_median)} is {self.ratio:.1f}x "
            f"the baseline {_short(self.baseline_median)}"
        )


MIN_BASELINE = 20


def slowdown(
    durations_newest_first: Sequence[float],
    *,
    recent: int = 10,
    baseline: int = 100,
    min_ratio: float = 1.5,
    min_delta: float = 1.0,
) -> SlowDown | None:
    """Compare the median of the newest ``recent`` durations with the ``baseline`` before.

    Medians, not means, so one stuck run neither raises nor hides a finding. Needs at
    least ``recent`` + 20 durations. Flags when the recent median is at least
    ``min_ratio`` times the baseline AND at least ``min_delta`` seconds more (a job going
    from 10 ms to 30 ms is 3x slower and of no interest). Pass successful runs only:
    failures often end early and would drag the medians down.
    """
    values = [d for d in durations_newest_first if d is not None and math.isfinite(d) and d >= 0]
    if recent < 1 or len(values) < recent + MIN_BASELINE:
        return None
    newest, older = values[:recent], values[recent : recent + baseline]
    recent_median = statistics.median(newest)
    baseline_median = statistics.median(older)
    if recent_median - baseline_median < min_delta:
        return None
    ratio = recent_median / baseline_median if baseline_median > 0 else math.inf
    if ratio < min_ratio:
        return None
    return SlowDown(recent_median, baseline_median, ratio, len(newest), len(older))
