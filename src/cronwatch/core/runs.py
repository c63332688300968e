"""Run semantics of client-supplied run ids: which run a start or a finish with a ``rid`` is
about. Pure decisions; the store (``start_run``, ``finish_run``) applies them.

A client's run id (``?rid=``, Cronitor's ``series``, the API's ``run_id``) names a run
within its job and environment only: two jobs (or two environments of one job) may use
the same rid for runs of their own. And a rid is not forever: many clients reuse one
(``nightly``, a date), so once its run finished, a new start with it opens a new run.

The exception is a rid that is unique by construction, a ULID (26 characters of Crockford
base32, what ``new_run_id`` and the SDKs make): it names one run forever, so a start or a
finish that comes again for its finished run is a delivery repeated (at-least-once: a
client that died between the answer and forgetting the ping sends it again), not a new
run, and it changes nothing. For any other rid, a finish that repeats the outcome of its
finished run within ``REPEAT_WINDOW`` is taken for a repeated delivery too (clients retry
within seconds or minutes); another outcome, or the same one later (a job that reports
``?rid=nightly`` every night), is a run of its own.
"""

from __future__ import annotations

_ULID_FIRST = frozenset("01234567")
_ULID = frozenset("0123456789abcdefghjkmnpqrstvwxyzABCDEFGHJKMNPQRSTVWXYZ")

# what to do with a start or a finish
REUSE = "reuse"  # the existing run is the answer; nothing changes
CLOSE = "close"  # finish the existing (open) run
NEW = "new"  # record a new run
REPEAT_WINDOW = 3600.0  # seconds after a finish in which the same finish is a repeat


def unique_rid(rid: str) -> bool:
    """Whether ``rid`` is a ULID (unique by construction: it names one run forever)."""
    return len(rid) == 26 and rid[0] in _ULID_FIRST and all(c in _ULID for c in rid)


def on_start(rid: str, existing: str | None) -> str:
    """A start with ``rid``; ``existing``: the status of the newest run with that rid in
    the job and environment (an open one first), or None. REUSE or NEW."""
    if existing is None:
        return NEW
    if existing == "running" or unique_rid(rid):
        return REUSE  # a repeated start (at-least-once delivery)
    return NEW  # a reused rid: its earlier run is over


def on_finish(rid: str, existing: str | None, status: str, since: float = 0.0) -> str:
    """A finish with ``rid`` and outcome ``status``; ``existing`` as for ``on_start``,
    ``since``: seconds since that run ended. CLOSE (the open run), REUSE (a repeated
    finish of the finished run) or NEW (a synthetic, already-finished run)."""
    if existing is None:
        return NEW
    if existing == "running":
        return CLOSE
    if unique_rid(rid) or (existing == status and since < REPEAT_WINDOW):
        return REUSE  # the same finish delivered again
    return NEW  # a reused rid: a run of its own, never dropped
