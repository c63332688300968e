"""The HTML dashboard (placeholder until the full renderer lands)."""

from __future__ import annotations

import html
import os
import tempfile
from typing import Any


def render_dashboard(store: Any, *, now: float) -> str:
    rows = "".join(f"<li>{html.escape(j.name)}</li>" for j in store.list_jobs())
    return f"<!doctype html><meta charset=utf-8><title>cronwatch</title><ul>{rows}</ul>"


def write_dashboard(store: Any, path: str, *, now: float) -> None:
    text = render_dashboard(store, now=now)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".dashboard-", suffix=".html")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
