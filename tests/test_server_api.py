# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""The management API over HTTP: tokens, jobs, runs, stats, incidents, OpenAPI."""

from __future__ import annotations

import httpx
import pytest

from test_server_harness import LiveServer, client, live_any  # noqa: F401


@pytest.fixture(scope="module")
def live(live_any: LiveServer) -> LiveServer:
    """Every test of this module runs on SQLite and on PostgreSQL (a replica's API must
    answer the same whichever store is behind it)."""
    return live_any


@pytest.fixture(scope="module")
def rw(live: LiveServer) -> dict[str, str]:
    return live.token("admin")


@pytest.fixture(scope="module")
def ro(live: LiveServer) -> dict[str, str]:
    return live.token("viewer", read_only=True)


def test_missing_or_wrong_token_401(client: httpx.Client) -> None:
    assert client.get("/api/v1/jobs").status_code == 401
    r = client.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "error" in r.json()


def test_read_only_token_reads_but_never_writes(client: httpx.Client, ro: dict, rw: dict) -> None:
    assert client.get("/api/v1/jobs", headers=ro).status_code == 200
    r = client.put("/api/v1/jobs/ro-job", json={"grace": 5}, headers=ro)
    assert r.status_code == 403
    assert client.get("/api/v1/jobs/ro-job", headers=rw).status_code == 404


def test_job_crud_pause_resume(client: httpx.Client, rw: dict) -> None:
    r = client.post("/api/v1/jobs", json={"name": "crud", "grace": 60, "tags": ["db"]}, headers=rw)
    assert r.status_code == 201, r.text
    job = r.json()
    assert len(job["ping_key"]) >= 16 and job["grace"] == 60 and job["health"] == "unknown"
    assert client.post("/api/v1/jobs", json={"name": "crud"}, headers=rw).status_code == 409
    r = client.put("/api/v1/jobs/crud", json={"max_runtime": 3600, "alert_after": 3}, headers=rw)
    assert r.json()["alert_after"] == 3 and r.json()["grace"] == 0  # PUT replaces settings
    assert r.json()["ping_key"] == job["ping_key"]  # ...but keeps the key
    r = client.patch("/api/v1/jobs/crud", json={"tags": ["db", "nightly"]}, headers=rw)
    assert r.json()["tags"] == ["db", "nightly"] and r.json()["alert_after"] == 3
    assert client.post("/api/v1/jobs/crud/pause", headers=rw).json()["health"] == "paused"
    listed = client.get("/api/v1/jobs", params={"health": "paused"}, headers=rw).json()
    assert [j["name"] for j in listed] == ["crud"]
    assert (
        client.get("/api/v1/jobs", params={"tag": "nightly"}, headers=rw).json()[0]["name"]
        == "crud"
    )
    assert client.post("/api/v1/jobs/crud/resume", headers=rw).json()["paused"] is False
    assert client.delete("/api/v1/jobs/crud", headers=rw).status_code == 204
    assert client.get("/api/v1/jobs/crud", headers=rw).status_code == 404


def test_job_shows_ping_key_that_pings_accept(
    live: LiveServer, client: httpx.Client, rw: dict
) -> None:
    key = client.put("/api/v1/jobs/keyed", json={}, headers=rw).json()["ping_key"]
    assert client.get(f"/ping/{key}").text == "OK"
    r = client.patch("/api/v1/jobs/keyed", json={"ping_key": "my-own-key-12345"}, headers=rw)
    assert r.json()["ping_key"] == "my-own-key-12345"
    assert client.get("/ping/my-own-key-12345").text == "OK"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"grace": "60"}, "grace"), ({"paused": "yes"}, "paused"), ({"alert_after": 1.5}, "alert_after"),
     ({"tags": "a"}, "tags"), ({"bogus": 1}, "bogus"), ({"alert_after": 0}, "alert_after")],
)  # fmt: skip
def test_wrong_types_are_422_naming_the_field(
    client: httpx.Client, rw: dict, body: dict, field: str
) -> None:
    r = client.put("/api/v1/jobs/typed", json=body, headers=rw)
    assert r.status_code == 422
    assert field in r.json()["error"]


@pytest.mark.parametrize(
    "path", ["/api/v1/jobs/UPPER", "/api/v1/jobs/-x", "/api/v1/jobs/" + "a" * 65]
)
def test_bad_job_names_are_4xx(client: httpx.Client, rw: dict, path: str) -> None:
    assert client.get(path, headers=rw).status_code in (404, 422)


def test_bad_tz_is_422(client: httpx.Client, rw: dict) -> None:
    r = client.put("/api/v1/jobs/tzjob", json={"tz": "Mars/Olympus"}, headers=rw)
    assert r.status_code == 422 and "tz" in r.json()["error"]


def test_run_checkins_and_reads(client: httpx.Client, rw: dict) -> None:
    r = client.post(
        "/api/v1/jobs/sdk/runs", json={"status": "in_progress", "run_id": "sdk-1"}, headers=rw
    )
    assert r.status_code == 201 and r.json()["status"] == "running"
    r = client.patch("/api/v1/runs/sdk-1", json={"exit_code": 0, "output": "done\n",
                                                 "duration_ms": 1500, "status": "ok"}, headers=rw)  # fmt: skip
    assert r.json()["status"] == "success" and r.json()["duration"] == 1.5
    r = client.post("/api/v1/jobs/sdk/runs", json={"status": "error", "exit_code": 4}, headers=rw)
    assert r.json()["status"] == "failed"
    runs = client.get("/api/v1/jobs/sdk/runs", params={"status": "failed"}, headers=rw).json()
    assert [x["exit_code"] for x in runs] == [4]
    one = client.get("/api/v1/runs/sdk-1", headers=rw).json()
    assert one["stdout"] == "done\n"
    assert client.get("/api/v1/runs/nope", headers=rw).status_code == 404
    stats = client.get("/api/v1/jobs/sdk/stats", params={"period": "week"}, headers=rw).json()
    assert (stats["total"], stats["successful"], stats["failed"]) == (2, 1, 1)
    assert stats["uptime"] == 50.0 and stats["avg_duration"] is not None
    assert client.get("/api/v1/jobs/sdk/stats?period=year", headers=rw).status_code == 422


def test_incidents_list_and_get(live: LiveServer, client: httpx.Client, rw: dict) -> None:
    client.put("/api/v1/jobs/inc", json={}, headers=rw)
    with live.store() as s:
        s.open_incident("inc", "", at=1000.0, cause="2 failures", run_id=None)
    (inc,) = client.get("/api/v1/incidents", params={"job": "inc"}, headers=rw).json()
    assert inc["cause"] == "2 failures" and inc["closed_at"] is None
    assert client.get(f"/api/v1/incidents/{inc['id']}", headers=rw).json()["job"] == "inc"
    assert client.get("/api/v1/incidents/999999", headers=rw).status_code == 404


def test_openapi_document(client: httpx.Client) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert "/jobs/{name}" in doc["paths"] and "/runs/{run_id}" in doc["paths"]
    assert doc["servers"][0]["url"] == "/api/v1"


def test_status_filter_takes_the_statuses_and_refuses_others(
    client: httpx.Client, rw: dict
) -> None:
    from typing import get_args

    from cronwatch.core.model import STATUSES
    from cronwatch.server.api import StatusName

    assert get_args(StatusName) == STATUSES  # the API's list is the domain's, in order
    assert client.put("/api/v1/jobs/filtered", json={}, headers=rw).status_code == 200
    for status in STATUSES:
        r = client.get("/api/v1/jobs/filtered/runs", params={"status": status}, headers=rw)
        assert r.status_code == 200 and r.json() == []
    r = client.get("/api/v1/jobs/filtered/runs", params={"status": "ok"}, headers=rw)
    assert r.status_code == 422 and "status" in r.json()["error"]
    schema = client.get("/api/v1/openapi.json").json()
    params = schema["paths"]["/jobs/{name}/runs"]["get"]["parameters"]
    (param,) = [p for p in params if p["name"] == "status"]
    assert list(STATUSES) == param["schema"]["anyOf"][0]["enum"]


def test_a_run_captured_as_one_stream_says_so(
    live: LiveServer, client: httpx.Client, rw: dict, tmp_path
) -> None:
    """A wrapped run written to the server's database with `2>&1`: the API's run says its
    output is one stream; a check-in's output is stdout only."""
    import json
    import os
    import subprocess

    from conftest import CRONWATCH

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWATCH_")}
    # before-exit: on PostgreSQL the run is otherwise written by a detached process, after
    # the wrapper has exited
    env.update(CRONWATCH_DASHBOARD="off", XDG_STATE_HOME=str(tmp_path),
               CRONWATCH_POSTRUN="before-exit")  # fmt: skip
    with open(tmp_path / "log", "wb") as log:
        rc = subprocess.run([CRONWATCH, "run", "merged", "--db", str(live.db), "--", "sh", "-c",
                             "echo 1; echo 2 >&2"], env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, timeout=60).returncode  # fmt: skip
    assert rc == 0
    (listed,) = client.get("/api/v1/jobs/merged/runs", headers=rw).json()
    one = client.get(f"/api/v1/runs/{listed['id']}", headers=rw).json()
    assert (one["merged"], one["stdout"], one["stderr"]) == (True, "1\n2\n", None), json.dumps(one)
    r = client.post("/api/v1/jobs/sdk-out/runs", json={"status": "ok", "output": "x\n"},
                    headers=rw)  # fmt: skip
    assert (r.status_code, r.json()["merged"], r.json()["stdout"]) == (201, False, "x\n")
