# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Random numbers at every numeric ingest field of every dialect, over real HTTP (one
server for the module): never a 5xx, and the ping writer lives on (the next good ping
is answered OK and stored)."""

from __future__ import annotations

import itertools
import json
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_server_harness import LiveServer, client, live  # noqa: F401

# What a number in a URL or a JSON body may be spelt as, within reason and beyond it.
SPELLINGS = [
    "", "0", "-0", "+3", "1_000", " 5", "5 ", "0x10", "1e3", "1e400", "-1e400", "NaN", "nan",
    "-nan", "Infinity", "-Infinity", "inf", "-inf", "abc", "²", "٣", "１", "9" * 30,
    "9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
    "1" * 5000, "0.1", "-1", "255", "256", "1000", "1001", "-1000", "-1001", "1e308", "5e-324",
]  # fmt: skip
numbers = st.one_of(
    st.sampled_from(SPELLINGS),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)

# {v}: the number; {key}: a job's ping key; {project}: the project key
PING_FIELDS = [
    "/ping/{key}/{v}",  # Healthchecks: exit status
    "/ping/{key}?exit_code={v}",  # Loom
    "/ping/{key}/start?metric=duration:{v}",
    "/ping/{key}?metric=duration:{v}",
    "/ping/{project}/fuzz/{v}?create=1",
    "/ping/{project}/fuzz?state=complete&status_code={v}",  # Cronitor on /ping
    "/p/{project}/fuzz?state=fail&status_code={v}",
    "/p/{project}/fuzz?state=complete&metric=duration:{v}",
    "/p/{project}/fuzz?metric=count:{v}",
    "/p/{project}/fuzz?state=ok&metric=error_count:{v}&metric=count:{v}",
    "/jobs/p/{key}?state=complete&exit_code={v}",  # simob
    "/jobs/p/{key}?state=fail&v=1&exit_code={v}&metric=duration:{v}",
]
API_CREATE = ["exit_code", "duration_ms"]
API_PATCH = ["exit_code", "duration_ms", "finished_at"]

_seq = itertools.count()


def _alive(live: LiveServer, client: httpx.Client, key: str) -> None:
    before = _count(live)
    r = client.get(f"/ping/{key}/start")  # a start: never the quick path, always a new run
    assert (r.status_code, r.text) == (200, "OK")
    assert _count(live) == before + 1


def _count(live: LiveServer) -> int:
    with live.store() as s:
        return len(s.list_runs(job="fuzz-alive", limit=100_000))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(PING_FIELDS), value=numbers)
def test_ping_numbers_never_a_5xx(
    live: LiveServer, client: httpx.Client, field: str, value: str
) -> None:
    key = live.job_key("fuzz")
    url = field.format(key=key, project=live.project_key(), v=quote(value, safe=""))
    r = client.get(url)
    assert r.status_code < 500, (url, r.status_code, r.text)
    if r.status_code == 400:
        assert r.text and "internal" not in r.text
    _alive(live, client, live.job_key("fuzz-alive"))


def _json(fields: dict[str, str]) -> str:
    """A JSON object with numbers spelt as given (NaN, 1e400, huge: as a client sends them)."""
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


def _is_json(body: str) -> bool:
    """Whether the body is a JSON document at all (else the 422 says so, naming no field)."""
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _spelt(value: str) -> str:
    return value if value.strip() else '""'  # an empty number is not even JSON: a string


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(API_CREATE),
    value=numbers,
    status=st.sampled_from(["ok", "error", "in_progress"]),
    patch_field=st.sampled_from(API_PATCH),
    patch_value=numbers,
)
def test_api_checkin_numbers_never_a_5xx(
    live: LiveServer,
    client: httpx.Client,
    field: str,
    value: str,
    status: str,
    patch_field: str,
    patch_value: str,
) -> None:
    rw = {**live.token(f"fuzz-{next(_seq)}"), "content-type": "application/json"}
    body = _json({"status": f'"{status}"', field: _spelt(value)})
    r = client.post("/api/v1/jobs/fuzz-api/runs", content=body, headers=rw)
    assert r.status_code < 500, (body[:200], r.status_code, r.text[:500])
    if r.status_code == 422 and _is_json(body):
        assert field in r.json()["error"]
    opened = client.post(
        "/api/v1/jobs/fuzz-api/runs", json={"status": "in_progress"}, headers=rw
    ).json()["id"]
    body = _json({"status": '"ok"', patch_field: _spelt(patch_value)})
    r = client.patch(f"/api/v1/runs/{opened}", content=body, headers=rw)
    assert r.status_code < 500, (body[:200], r.status_code, r.text[:500])
    if r.status_code == 422 and _is_json(body):
        assert patch_field in r.json()["error"]
    _alive(live, client, live.job_key("fuzz-alive"))
