"""The scheduler's leader on PostgreSQL: a session-level advisory lock (``LeaderStore``).

Each role's lock is taken on a connection of its own, opened here and never pooled: a
session lock lives as long as the session, so a connection given back to a pool would
keep it for whoever uses that connection next. When the holder's process dies, its
socket closes and the server drops the lock at once: another replica takes it at its
next try, without waiting for a lease to run out (``ttl`` only tunes keepalives here).

A holder whose connection is lost is not the leader any more (the server dropped the lock
with the session, or will): ``renew`` answers False, and only a later ``acquire`` opens a
new connection. The holder's id is the connection's ``application_name``, which is how
``holder_of`` finds it (``pg_locks`` joined with ``pg_stat_activity``).
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import psycopg

log = logging.getLogger("cronwatch")

# The advisory lock's first key: cronwatch's leader locks (the second is the role's).
# The migration lock (backend.py) is a one-key lock: its space is apart from two-key locks.
SPACE = 0x63776C64  # "cwld"

_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
    "AND pid = pg_backend_pid() AND classid = %s::bigint::oid AND objid = %s::bigint::oid "
    "AND objsubid = 2 AND granted)"
)

HOLDER = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = ?::bigint::oid AND l.objid = ?::bigint::oid"
)


def role_key(role: str) -> int:
    """The lock's second key for ``role``: stable across processes and versions."""
    return zlib.crc32(role.encode()) & 0x7FFFFFFF


def app_name(holder: str) -> str:
    """``holder`` as PostgreSQL keeps an ``application_name``: ASCII, at most 63 bytes.
    A longer one keeps its end (the process's random suffix, ``#...``), so that two
    processes never show the same name."""
    name = "".join(c if " " <= c <= "~" else "?" for c in holder)
    if len(name) <= 63:
        return name
    head, sep, tail = name.rpartition("#")
    tail = sep + tail if sep and len(tail) < 20 else name[-12:]
    return name[: 63 - len(tail) - 1] + "~" + tail


class Leads:
    """A store's leader locks: per role, the dedicated connection that holds (or tries
    to take) it, and the holder it was opened for."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.conns: dict[str, tuple[psycopg.Connection[Any], str]] = {}

    def _open(self, role: str, holder: str, ttl: float) -> psycopg.Connection[Any]:
        idle = max(1, int(ttl))
        pg = psycopg.connect(
            self.url, autocommit=True, connect_timeout=max(2, int(self.timeout + 0.999)),
            application_name=app_name(holder),
            # A host that dies without closing its socket (power loss, a partition): both
            # ends find out by keepalives within about ttl + 3 s, not the kernel's hours.
            keepalives=1, keepalives_idle=idle, keepalives_interval=1, keepalives_count=3,
            tcp_user_timeout=idle * 1000 + 3000,
        )  # fmt: skip
        try:
            # the server's side of the same (ignored on a Unix socket)
            pg.execute(f"SET tcp_keepalives_idle = {idle}")
            pg.execute("SET tcp_keepalives_interval = 1")
            pg.execute("SET tcp_keepalives_count = 3")
            pg.execute(f"SET statement_timeout = {max(1000, int(self.timeout * 1000))}")
        except BaseException:
            pg.close()
            raise
        self.conns[role] = (pg, holder)
        return pg

    def _drop(self, role: str) -> None:
        found = self.conns.pop(role, None)
        if found is not None:
            try:
                found[0].close()  # the server drops the session's locks with it
            except Exception:
                pass

    def acquire(self, role: str, holder: str, ttl: float) -> bool:
        found = self.conns.get(role)
        if found is not None and (found[0].closed or found[1] != holder):
            if found[1] != holder and not found[0].closed and self._holds(role):
                return False  # this store's connection holds it for another holder
            self._drop(role)
            found = None
        pg = found[0] if found is not None else self._open(role, holder, ttl)
        key = role_key(role)
        try:
            # never twice in one session: a second lock would need a second unlock
            row = pg.execute(
                f"SELECT CASE WHEN ({_HELD}) THEN true ELSE pg_try_advisory_lock(%s::int, %s::int) END",
                (SPACE, key, SPACE, key),
            ).fetchone()
        except psycopg.Error:
            self._drop(role)
            raise
        return bool(row and row[0])

    def _holds(self, role: str) -> bool:
        found = self.conns.get(role)
        if found is None or found[0].closed:
            return False
        row = found[0].execute(_HELD, (SPACE, role_key(role))).fetchone()
        return bool(row and row[0])

    def renew(self, role: str, holder: str) -> bool:
        """Whether ``holder`` still holds the lock, on the connection it was taken on. Any
        failure (a lost connection above all) ends that connection: not the leader."""
        found = self.conns.get(role)
        if found is None or found[1] != holder or found[0].closed:
            return False
        try:
            held = self._holds(role)
        except psycopg.Error as e:
            log.warning("the %s lock's connection failed (%s): no longer its holder",
                        role, str(e).strip().splitlines()[0] if str(e).strip() else e)  # fmt: skip
            held = False
        if not held:
            self._drop(role)
        return held

    def release(self, role: str, holder: str) -> None:
        found = self.conns.get(role)
        if found is None or found[1] != holder:
            return  # not this holder's: nothing to give up
        try:
            if not found[0].closed:
                found[0].execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            pass  # a lost connection: the server dropped the lock with it
        self._drop(role)

    def close(self) -> None:
        for role in list(self.conns):
            self._drop(role)
