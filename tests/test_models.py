"""The domain values: Status behaves like the str enum it was, Run and Job like the
dataclasses they were (they are plain classes so that the wrapper imports them cheaply)."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import (
    SETTING_NAMES,
    STATUSES,
    Job,
    Run,
    Status,
    parse_status,
    validate_name,
    validate_run_id,
)


def test_status_members_are_their_values() -> None:
    assert list(Status) == [Status.RUNNING, Status.SUCCESS, Status.FAILED, Status.TIMEOUT,
                            Status.MISSED]  # fmt: skip
    assert len(Status) == 5 and STATUSES == ("running", "success", "failed", "timeout", "missed")
    for s in Status:
        assert Status(s.value) is s and Status(s) is s  # one instance per value
        assert s == s.value and str(s) == s.value and f"{s}" == s.value
        assert type(s.value) is str and s.name == s.value.upper()
        assert isinstance(s, str) and hash(s) == hash(s.value)
        assert copy.copy(s) is s and copy.deepcopy(s) is s and pickle.loads(pickle.dumps(s)) is s
    assert repr(Status.FAILED) == "<Status.FAILED: 'failed'>"
    assert json.dumps({"status": Status.MISSED}) == '{"status": "missed"}'
    assert {Status.SUCCESS: 1}["success"] == 1


def test_status_rejects_other_values() -> None:
    for bad in ("", "ok", "SUCCESS", None, 1, []):
        with pytest.raises(ValueError, match="is not a valid Status"):
            Status(bad)  # type: ignore[arg-type]
    assert parse_status("SUCCESS") is Status.SUCCESS
    with pytest.raises(ValidationError, match="expected one of running, success"):
        parse_status("ok")


def test_status_kinds() -> None:
    assert [s for s in Status if s.is_failure] == [Status.FAILED, Status.TIMEOUT, Status.MISSED]
    assert [s for s in Status if not s.is_finished] == [Status.RUNNING]


def test_run_construction_equality_and_repr() -> None:
    run = Run("backup", 100.0, "failed", "r1", exit_code=3)  # positional, like the dataclass
    assert run.status is Status.FAILED and run.id == "r1" and run.source == "wrapper"
    assert run == Run(job="backup", started_at=100.0, status=Status.FAILED, id="r1", exit_code=3)
    assert run != Run("backup", 100.0, "failed", "r1", exit_code=4)
    assert run != "backup" and (run == object()) is False
    assert repr(run).startswith("Run(job='backup', started_at=100.0, status=<Status.FAILED")
    assert "exit_code=3" in repr(run) and repr(run).endswith("source='wrapper', merged=False)")
    with pytest.raises(TypeError):
        hash(run)  # mutable, so unhashable, as a dataclass with eq
    with pytest.raises(AttributeError):
        run.colour = "red"  # type: ignore[attr-defined]  # __slots__
    assert len(Run("x", 1.0).id) == 26 and Run("x", 1.0).id != Run("x", 1.0).id
    with pytest.raises(ValueError):
        Run("x", 1.0, status="bogus")
    assert Run.from_dict(run.to_dict(exact=True)) == Run("backup", 100.0, "failed", "r1",
                                                         exit_code=3, source="wrapper")  # fmt: skip


def test_job_defaults_and_settings() -> None:
    a, b = Job("a"), Job("b")
    a.notify.append("webhook:x")
    assert b.notify == [] and b.tags == [] and b.asserts == []  # no shared default lists
    assert Job("a", notify=["webhook:x"]) == a and Job("a") != a
    assert tuple(a.settings()) == SETTING_NAMES
    assert "name" not in SETTING_NAMES and "ping_key" not in SETTING_NAMES
    assert a.to_dict()["name"] == "a" and a.to_dict()["keep_output"] == 1000
    assert repr(Job("a")).startswith("Job(name='a', created_at=0.0, schedule=''")


@pytest.mark.parametrize("name", ["a", "backup-db", "x.y_z", "9lives", "a" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "A", "a b", "a/b", "é", "a" * 65, None])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError, match="1-64 characters"):
        validate_name(name)


def test_run_ids() -> None:
    for ok in ("a", "01HX:run.1_2-3", "Z" * 128):
        assert validate_run_id(ok) == ok
    for bad in ("", "a b", "a/b", "Z" * 129, "é"):
        with pytest.raises(ValidationError, match="1-128 characters"):
            validate_run_id(bad)


def test_foreign_keys_map_to_job_names_without_loss_or_collision() -> None:
    from cronwatch.core.model import name_for_key, validate_ext_key

    assert name_for_key("daily-backup") == "daily-backup"  # a valid name stays itself
    keys = ["Nightly_DB-Backup.v2", "nightly_db-backup.v2", "NIGHTLY_DB-BACKUP.V2",
            "A" * 200, "A" * 199 + "B", "~tilde", "-dash", "x" * 64, "x" * 65]  # fmt: skip
    names = [name_for_key(k) for k in keys]
    assert len(set(names)) == len(keys)
    for name in names:
        assert validate_name(name) == name
    assert name_for_key("Nightly_DB-Backup.v2") == names[0]  # the same key, the same job
    for bad in ("", "a b", "a/b", "é", "x" * 201):
        with pytest.raises(ValidationError):
            validate_ext_key(bad)


def test_a_timed_pause_is_over_at_its_time() -> None:
    job = Job(name="x", paused=True, paused_until=100.0)
    assert job.paused_at(99.9) and not job.paused_at(100.0)
    assert Job(name="y", paused=True).paused_at(1e12)
    assert not Job(name="z").paused_at(0.0)
