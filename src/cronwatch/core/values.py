"""Small shared helpers: durations, timestamps, paths, output capping.

The wrapper imports this module after every run: ``re`` and ``datetime`` are imported
by the functions that need them, not here.
"""

from __future__ import annotations

from cronwatch.core.errors import ValidationError

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DUR_PATTERN = r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)"  # compiled once, by re's own cache
DURATION_HELP = "a duration such as 90s, 15m, 24h, 7d or 2w"


def parse_duration(text: str) -> float:
    """'90s', '15m', '24h', '7d', '2w', '1h30m', '500ms' -> seconds. Bare numbers are seconds."""
    s = str(text).strip().lower()
    if not s:
        raise ValidationError(f"invalid duration {text!r}: expected {DURATION_HELP}")
    try:
        value = float(s)
    except ValueError:
        import re

        pos, total = 0, 0.0
        for m in re.finditer(_DUR_PATTERN, s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or pos == 0:
            raise ValidationError(f"invalid duration {text!r}: expected {DURATION_HELP}") from None
        return total
    if value < 0 or value != value or value == float("inf"):
        raise ValidationError(f"invalid duration {text!r}: expected {DURATION_HELP}")
    return value


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def format_time(ts: float | None) -> str:
    """UTC, second precision, ISO-like and sortable."""
    if ts is None:
        return "-"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> float:
    """ISO 8601 (naive means UTC), or seconds since the epoch."""
    s = str(text).strip()
    try:
        return float(s)
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"invalid timestamp {text!r}: expected ISO 8601 such as 2026-03-29T01:30:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --- output capping: keep the head and the tail, mark the cut -------------------------

CUT_MARKER = b"\n[... cronwatch: %d bytes cut ...]\n"


def join_capped(head: bytes, tail: bytes, total: int) -> bytes:
    """Join a captured head and tail; if bytes were dropped between them, say how many."""
    cut = total - len(head) - len(tail)
    if cut <= 0:
        return head + tail
    return head + (CUT_MARKER % cut) + tail


def cap_bytes(data: bytes, limit: int) -> bytes:
    """Cap ``data`` to about ``limit`` bytes keeping the head and the tail."""
    if len(data) <= limit:
        return data
    half = limit // 2
    return join_capped(data[:half], data[len(data) - (limit - half) :], len(data))


def compress(data: bytes | None) -> bytes | None:
    """zlib for captured output; None (not captured) and b"" (empty) are stored as is."""
    if not data:
        return data
    import zlib

    return zlib.compress(data, 6)


def decompress(blob: bytes | None) -> bytes | None:
    if not blob:  # None (not captured) or b"" (captured, empty: stored as is)
        return blob
    import zlib

    return zlib.decompress(blob)
