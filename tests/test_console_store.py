"""The store's part of the console (the contract suite: every backend): users, sessions,
every job's newest run."""

from __future__ import annotations

from typing import Any

import pytest

from cronwatch.app.users import hash_password, new_session, session_digest, verify_password
from cronwatch.core.errors import NotFound, ValidationError
from cronwatch.core.model import Job, Run, Status

pytestmark = pytest.mark.all_backends

NOW = 1_800_000_000.0


def test_users_are_kept_with_their_hash_and_never_listed_with_it(store: Any) -> None:
    store.create_user("ann", role="admin", password_hash=hash_password("pass word 1"), now=NOW)
    with pytest.raises(ValidationError, match="already exists"):
        store.create_user("ann", role="viewer", password_hash="x", now=NOW)
    user = store.get_user("ann")
    assert user["role"] == "admin" and verify_password("pass word 1", user["password"])
    assert not verify_password("pass word 2", user["password"])
    assert store.list_users() == [{"name": "ann", "role": "admin", "created_at": NOW,
                                   "last_login_at": None}]  # fmt: skip
    assert store.count_users() == 1 and store.get_user("bob") is None
    with pytest.raises(NotFound):
        store.set_user("bob", role="viewer")
    with pytest.raises(NotFound):
        store.delete_user("bob")


def test_sessions_expire_end_with_a_new_password_and_with_the_user(store: Any) -> None:
    store.create_user("ann", role="viewer", password_hash=hash_password("pass word 1"), now=NOW)
    sid, csrf = new_session(store, "ann", now=NOW, ttl=60)
    digest = session_digest(sid)
    assert store.get_session(sid, now=NOW) is None  # looked up by the hash only
    s = store.get_session(digest, now=NOW + 59)
    assert s is not None and (s["user"], s["role"], s["csrf"]) == ("ann", "viewer", csrf)
    assert store.get_user("ann")["last_login_at"] == NOW
    assert store.get_session(digest, now=NOW + 60) is None  # expired
    assert store.delete_expired_sessions(now=NOW + 61) == 1
    sid, _ = new_session(store, "ann", now=NOW, ttl=60)
    store.set_user("ann", role="admin")  # a role change keeps the session, with the new role
    assert store.get_session(session_digest(sid), now=NOW)["role"] == "admin"
    store.set_user("ann", password_hash=hash_password("pass word 2"))
    assert store.get_session(session_digest(sid), now=NOW) is None
    sid, _ = new_session(store, "ann", now=NOW, ttl=60)
    store.delete_user("ann")
    assert store.get_session(session_digest(sid), now=NOW) is None
    with pytest.raises(NotFound):
        new_session(store, "ann", now=NOW)


def test_newest_runs_names_each_jobs_newest_run_of_any_status(store: Any) -> None:
    store.save_job(Job(name="never-ran"), now=NOW)
    store.record_runs([
        Run(job="a", started_at=NOW - 100, status=Status.SUCCESS, ended_at=NOW - 99, duration=1),
        Run(job="a", started_at=NOW - 10, status=Status.FAILED, ended_at=NOW - 9, duration=1),
        Run(job="b", started_at=NOW - 50, status=Status.SUCCESS, ended_at=NOW - 49, duration=1),
    ], now=NOW)  # fmt: skip
    store.start_run("b", now=NOW - 5)
    newest = store.newest_runs()
    assert set(newest) == {"a", "b"}
    assert (newest["a"].status, newest["a"].started_at) == (Status.FAILED, NOW - 10)
    assert newest["b"].status is Status.RUNNING
    assert newest["a"] == store.list_runs(job="a", limit=1)[0]


def test_failed_sign_ins_are_counted_by_key_since_a_time_and_forgotten_past_it(
    store: Any,
) -> None:
    ann, addr = ("user", "ann"), ("address", "10.0.0.1")
    assert store.sign_in_failures([ann, addr], since=0) == {}
    for i in range(3):
        store.add_sign_in_failure([ann, addr], at=NOW + i, forget_before=0)
    store.add_sign_in_failure([("user", "bob"), addr], at=NOW + 3, forget_before=0)
    assert store.sign_in_failures([ann, addr], since=NOW) == {
        ann: (3, NOW), addr: (4, NOW)
    }  # fmt: skip
    assert store.sign_in_failures([ann], since=NOW + 1) == {ann: (2, NOW + 1)}
    # a new failure forgets those before its window: they are gone, not only not counted
    store.add_sign_in_failure([("user", "cid")], at=NOW + 900, forget_before=NOW + 2)
    assert store.sign_in_failures([ann, addr], since=0) == {ann: (1, NOW + 2), addr: (2, NOW + 2)}
