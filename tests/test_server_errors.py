# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Client errors over HTTP: always a 4xx with ``{"error": ...}``, never a 500, never the
input echoed back; filters refuse unknown values; ``%2F`` is not a path separator; a run's
times agree with its duration."""

from __future__ import annotations

import httpx
import pytest

from test_server_harness import LiveServer, client, live  # noqa: F401


@pytest.fixture(scope="module")
def rw(live: LiveServer) -> dict[str, str]:
    return {**live.token("admin"), "Content-Type": "application/json"}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize(
    ("method", "path", "template"),
    [("PUT", "/api/v1/jobs/numbers", '{"grace": %s}'),
     ("PATCH", "/api/v1/jobs/numbers", '{"max_runtime": %s}'),
     ("POST", "/api/v1/jobs/numbers/runs", '{"status": "ok", "duration_ms": %s}'),
     ("PUT", "/api/v1/jobs/numbers", '{"alert_after": %s}')],
)  # fmt: skip
def test_non_finite_numbers_are_422(
    client: httpx.Client, rw: dict, method: str, path: str, template: str, number: str
) -> None:
    client.put("/api/v1/jobs/numbers", json={}, headers=rw)
    r = client.request(method, path, content=template % number, headers=rw)
    assert r.status_code == 422, r.text
    field = template.split('"')[-2]
    assert field in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [("{bad", "JSON"), ('{"grace": 1,}', "JSON"), ("", "body"), ("[1]", "body"),
     ('"text"', "body")],
)  # fmt: skip
def test_malformed_json_is_422_in_the_documented_shape(
    client: httpx.Client, rw: dict, body: str, words: str
) -> None:
    r = client.put("/api/v1/jobs/malformed", content=body, headers=rw)
    assert r.status_code == 422
    assert words in r.json()["error"]


@pytest.mark.parametrize(
    "body",
    # just under the server's body limit (1 MiB): larger bodies are refused before parsing
    [b'{"grace": "' + b"x" * 1_000_000 + b'"}', b'{"' + b"k" * 1_000_000 + b'": 1}',
     b'{"tags": [' + b",".join([b'"UPPER"'] * 100_000) + b"]}",
     b'{"name": "' + b"n" * 1_000_000 + b'"}'],
    ids=["long value", "long key", "many bad items", "long name"],
)  # fmt: skip
def test_an_error_never_echoes_more_than_an_excerpt(
    client: httpx.Client, rw: dict, body: bytes
) -> None:
    r = client.post("/api/v1/jobs", content=body, headers=rw)
    assert r.status_code == 422
    assert len(r.content) < 4096
    assert "error" in r.json()


def test_a_body_over_the_limit_is_413_without_an_echo(client: httpx.Client, rw: dict) -> None:
    r = client.post("/api/v1/jobs", content=b'{"name": "' + b"n" * 5_000_000 + b'"}', headers=rw)
    assert r.status_code == 413
    assert len(r.content) < 4096 and "error" in r.json()


def test_routes_and_methods_that_do_not_exist_answer_in_the_same_shape(
    client: httpx.Client, rw: dict
) -> None:
    r = client.get("/api/v1/no-such-thing", headers=rw)
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = client.delete("/api/v1/jobs", headers=rw)
    assert r.status_code == 405 and "error" in r.json()
    assert r.headers["allow"] == "GET, POST"  # every method of the path, not one route's
    r = client.post("/api/v1/runs/some-run", headers=rw)
    assert r.status_code == 405 and r.headers["allow"] == "GET, PATCH"


def test_a_body_that_is_not_text_is_422(client: httpx.Client, rw: dict) -> None:
    r = client.put("/api/v1/jobs/binary", content=b"\xff\xfe\x00{", headers=rw)
    assert r.status_code == 422 and "JSON" in r.json()["error"]


def test_whole_numbers_written_as_floats_are_whole_numbers(client: httpx.Client, rw: dict) -> None:
    # JSON Schema (and so the OpenAPI document) counts 3.0 as an integer
    r = client.put("/api/v1/jobs/wholes", content='{"alert_after": 3.0}', headers=rw)
    assert r.status_code == 200 and r.json()["alert_after"] == 3
    for bad in ('{"alert_after": 3.5}', '{"alert_after": "3"}', '{"alert_after": true}'):
        assert client.put("/api/v1/jobs/wholes", content=bad, headers=rw).status_code == 422


@pytest.mark.parametrize(
    "query",
    [{"status": "bogus"}, {"status": "ok"}, {"health": "bogus"}, {"health": "HEALTHY"},
     {"tag": "Not A Tag"}],
)  # fmt: skip
def test_unknown_filter_values_are_422_not_an_empty_list(
    client: httpx.Client, rw: dict, query: dict
) -> None:
    client.put("/api/v1/jobs/filtered-job", json={"tags": ["db"]}, headers=rw)
    r = client.get("/api/v1/jobs", params=query, headers=rw)
    assert r.status_code == 422, r.text
    assert next(iter(query)) in r.json()["error"]


def test_every_health_and_status_filters(client: httpx.Client, rw: dict) -> None:
    from typing import get_args

    from cronwatch.core.health import Health
    from cronwatch.core.model import STATUSES
    from cronwatch.server.api import HealthName, StatusName

    assert get_args(HealthName) == tuple(h.value for h in Health)  # the domain's words
    assert get_args(StatusName) == STATUSES
    client.put("/api/v1/jobs/filtered-job", json={"tags": ["db"]}, headers=rw)
    for health in get_args(HealthName):
        r = client.get("/api/v1/jobs", params={"health": health}, headers=rw)
        assert r.status_code == 200
        assert all(j["health"] == health for j in r.json())
    assert "filtered-job" in [
        j["name"] for j in client.get("/api/v1/jobs", params={"tag": "db"}, headers=rw).json()
    ]


def test_an_encoded_slash_never_splits_a_ping_path(live: LiveServer, client: httpx.Client) -> None:
    key = live.job_key("slashed")
    for path in (f"/ping/{key}%2Ffail", f"/ping/{key}%2ffail", f"/ping/{key}%2F1",
                 f"/ping/{live.project_key()}%2Fslashed%2Ffail"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)
    with live.store() as s:
        assert s.list_runs(job="slashed", limit=10) == []
    assert client.get(f"/ping/{key}/fail").status_code == 200  # the real separator works


def test_a_patched_duration_is_the_runs_span(client: httpx.Client, rw: dict) -> None:
    r = client.post("/api/v1/jobs/spans/runs", json={"status": "in_progress", "run_id": "span-1"},
                    headers=rw)  # fmt: skip
    started = r.json()["started_at"]
    # The server heard the finish later than the client's measured 1.5 s: the start
    # stays, the end follows the duration.
    r = client.patch("/api/v1/runs/span-1", json={"status": "ok", "duration_ms": 1500},
                     headers=rw)  # fmt: skip
    run = r.json()
    assert run["started_at"] == started and run["duration"] == 1.5
    assert run["ended_at"] - run["started_at"] == pytest.approx(1.5, abs=1e-6)
    # amending a finished run keeps them in step too, whichever is sent
    run = client.patch("/api/v1/runs/span-1", json={"duration_ms": 250}, headers=rw).json()
    assert run["ended_at"] - run["started_at"] == pytest.approx(0.25, abs=1e-6)
    run = client.patch("/api/v1/runs/span-1", json={"finished_at": started + 4}, headers=rw).json()
    assert run["duration"] == pytest.approx(4.0, abs=1e-6)
    # both at once must agree; an end before the start is refused
    r = client.patch("/api/v1/runs/span-1", json={"finished_at": started + 4, "duration_ms": 9},
                     headers=rw)  # fmt: skip
    assert r.status_code == 409 and "disagree" in r.json()["error"]
    r = client.patch("/api/v1/runs/span-1", json={"finished_at": started - 10}, headers=rw)
    assert r.status_code == 409 and "finished_at" in r.json()["error"]
    run = client.get("/api/v1/runs/span-1", headers=rw).json()
    assert run["duration"] == pytest.approx(4.0, abs=1e-6)  # the refused patches changed nothing


def test_a_fail_ping_without_an_exit_code_reads_well(
    live: LiveServer, client: httpx.Client, rw: dict
) -> None:
    client.put("/api/v1/jobs/causes", json={"alert_after": 1}, headers=rw)
    assert client.get(f"/ping/{live.job_key('causes')}/fail").status_code == 200
    (incident,) = client.get("/api/v1/incidents", params={"job": "causes"}, headers=rw).json()
    assert "None" not in incident["cause"] and incident["cause"] == "failed"
