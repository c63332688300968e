"""Status badges: SVG and shields.io endpoint JSON, per job and per tag, at public URLs
that cannot be guessed: ``/badge/SIG/job/NAME.svg`` where SIG is an HMAC of the kind and
name under the server's secret (kept in the database's meta table). Nothing is stored
per badge, and a badge shows one word of state (up, down, late, paused, new), nothing
else: no times, no output, no reason.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any
from xml.sax.saxutils import escape

from cronwatch.app.overview import job_row
from cronwatch.core.model import Job

KINDS = ("job", "tag")
# health -> the badge's word and colour; a tag shows its worst job
_WORD = {"healthy": "up", "failing": "down", "missed": "down", "timeout": "down",
         "late": "late", "paused": "paused", "unknown": "new"}  # fmt: skip
_RANK = {"down": 0, "late": 1, "up": 2, "new": 3, "paused": 4}
_COLOR = {"up": "#2e7d32", "down": "#c62828", "late": "#ef6c00", "paused": "#757575",
          "new": "#757575"}  # fmt: skip
_SHIELDS = {"up": "success", "down": "critical", "late": "orange", "paused": "inactive",
            "new": "inactive"}  # fmt: skip


def signature(secret: bytes, kind: str, name: str) -> str:
    mac = hmac.new(secret, f"badge:{kind}:{name}".encode(), "sha256").digest()
    return base64.urlsafe_b64encode(mac[:15]).decode()  # 120 bits, 20 characters


def urls(server: Any, base: str, kind: str, name: str) -> dict[str, str]:
    sig = signature(server.console_secret, kind, name)
    stem = f"{base}/badge/{sig}/{kind}/{name}"
    return {"svg": stem + ".svg", "json": stem + ".json"}


def resolve(server: Any, sig: str, kind: str, filename: str) -> tuple[str, str, str] | None:
    """(kind, name, format) for a badge URL whose signature is right, else None."""
    name, dot, fmt = filename.rpartition(".")
    if not dot or fmt not in ("svg", "json") or kind not in KINDS or len(name) > 200:
        return None
    if not hmac.compare_digest(signature(server.console_secret, kind, name).encode(),
                               sig.encode("utf-8", "replace")):  # fmt: skip
        return None
    return kind, name, fmt


def state(store: Any, kind: str, name: str, *, now: float) -> str:
    """The one word a badge shows."""
    if kind == "job":
        job = store.find_job(name)
        jobs: list[Job] = [job] if job is not None else []
    else:
        jobs = [j for j in store.list_jobs() if name in j.tags]
    if not jobs:
        return "new"
    words = []
    open_runs = store.open_runs()
    for job in jobs:
        mine = [r for r in open_runs if r.job == job.name]
        newest = store.list_runs(job=job.name, limit=1)
        row = job_row(store, job, newest[0] if newest else None, mine, now=now)
        words.append(_WORD.get(row.health, "new"))
    return min(words, key=lambda w: _RANK[w])


def shields(label: str, word: str) -> dict[str, Any]:
    return {"schemaVersion": 1, "label": label, "message": word, "color": _SHIELDS[word]}


def _width(text: str) -> int:
    return 10 + 7 * len(text)  # Verdana 11px is ~7px a character; close enough for a badge


def svg(label: str, word: str) -> bytes:
    lw, rw = _width(label), _width(word)
    total = lw + rw
    lab, w = escape(label), escape(word)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{lab}: {w}"><title>{lab}: {w}</title>'
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{rw}" height="20" fill="{_COLOR[word]}"/>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" '
        f'font-size="11"><text x="{lw / 2}" y="14">{lab}</text>'
        f'<text x="{lw + rw / 2}" y="14">{w}</text></g></svg>'
    ).encode()
