"""A run in a few words: the CLI's tables and the dashboard show runs the same way."""

from __future__ import annotations

from cronwatch.core.model import Run


def first_line(run: Run, width: int = 60) -> str:
    for data in (run.stdout, run.stderr):
        if data:
            text = data[:4096].decode("utf-8", "replace")
            for line in text.splitlines():
                line = line.strip()
                if line:
                    line = "".join(c if c.isprintable() else "?" for c in line)
                    return line if len(line) <= width else line[: width - 1] + "…"
    return run.message[:width] if run.message else ""


def streams(run: Run) -> list[tuple[str, bytes | None]]:
    """The run's captured output as (label, bytes) blocks: stdout and stderr, or one block
    when they were captured as one stream (``Run.merged``)."""
    if run.merged:
        return [("stdout and stderr, as one stream", run.stdout)]
    return [("stdout", run.stdout), ("stderr", run.stderr)]


def exit_text(run: Run) -> str:
    if run.signal is not None:
        return f"sig {run.signal}"
    return "-" if run.exit_code is None else str(run.exit_code)


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"
