# ruff: noqa: F811  (pytest fixtures imported from test_server_harness, used as arguments)
"""Ping dialects against a real server: the request shapes real clients send."""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from test_server_harness import LiveServer, client, live_any  # noqa: F401


@pytest.fixture(scope="module")
def live(live_any: LiveServer) -> LiveServer:
    """Every ping test runs against a server on SQLite and on PostgreSQL."""
    return live_any


_names = itertools.count()


def fresh(live: LiveServer) -> tuple[str, str]:
    name = f"job-{next(_names)}"
    return name, live.job_key(name)


def runs(live: LiveServer, name: str) -> list:
    with live.store() as s:
        return s.list_runs(job=name, output=True, oldest_first=True)


# --- Healthchecks ---------------------------------------------------------------------


def test_healthchecks_success_start_fail_and_exit_status(
    live: LiveServer, client: httpx.Client
) -> None:
    name, key = fresh(live)
    r = client.get(f"/ping/{key}/start")
    assert (r.status_code, r.text) == (200, "OK")
    assert r.headers["ping-body-limit"] == "100000"
    assert client.post(f"/ping/{key}", content=b"all good\n").text == "OK"
    assert client.get(f"/ping/{key}/fail").text == "OK"  # no open run: synthetic failure
    assert client.head(f"/ping/{key}/3").status_code == 200
    assert client.get(f"/ping/{key}/0").text == "OK"
    got = runs(live, name)
    assert [r.status.value for r in got] == ["success", "failed", "failed", "success"]
    assert got[0].stdout == b"all good\n" and got[0].duration is not None
    assert got[2].exit_code == 3


def test_healthchecks_routes_keep_message_and_duration_metric(
    live: LiveServer, client: httpx.Client
) -> None:
    name, key = fresh(live)
    r = client.get(f"/ping/{key}/143", params={"message": "killed after the 60s timeout",
                                               "metric": "duration:61.5"})  # fmt: skip
    assert r.text == "OK"
    (run,) = runs(live, name)
    assert (run.status.value, run.exit_code, run.duration) == ("failed", 143, 61.5)
    assert run.message == "killed after the 60s timeout"
    assert client.get(f"/ping/{key}", params={"metric": "duration:soon"}).status_code == 400


@pytest.mark.parametrize("path", ["/ping/{key}/256", "/ping/{key}/-1", "/ping/{key}/9999"])
def test_healthchecks_malformed_exit_status_is_400(
    live: LiveServer, client: httpx.Client, path: str
) -> None:
    _, key = fresh(live)
    assert client.get(path.format(key=key)).status_code == 400


def test_unknown_key_is_404_and_malformed_rid_400(live: LiveServer, client: httpx.Client) -> None:
    r = client.get("/ping/no-such-key")
    assert (r.status_code, r.text) == (404, "not found")
    assert "ping-body-limit" in r.headers
    _, key = fresh(live)
    assert client.get(f"/ping/{key}/start", params={"rid": "bad rid!"}).status_code == 400


def test_rid_pairs_overlapping_runs(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    client.get(f"/ping/{key}/start", params={"rid": "a1"})
    client.get(f"/ping/{key}/start", params={"rid": "b2"})  # concurrent, not a timeout
    client.get(f"/ping/{key}/fail", params={"rid": "a1"})
    client.get(f"/ping/{key}", params={"rid": "b2"})
    by_id = {r.id: r.status.value for r in runs(live, name)}
    assert by_id == {"a1": "failed", "b2": "success"}


def test_log_attaches_output_without_state_change(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    client.get(f"/ping/{key}/start")
    assert client.post(f"/ping/{key}/log", content=b"step 1\n").text == "OK"
    got = runs(live, name)
    assert len(got) == 1 and got[0].status.value == "running" and got[0].stdout == b"step 1\n"


def test_slug_urls_need_create_for_new_jobs(live: LiveServer, client: httpx.Client) -> None:
    pk = live.project_key()
    assert client.get(f"/ping/{pk}/slug-new").status_code == 404
    assert client.get(f"/ping/{pk}/slug-new/start", params={"create": "1"}).text == "OK"
    assert client.get(f"/ping/{pk}/slug-new/1").text == "OK"
    assert [r.status.value for r in runs(live, "slug-new")] == ["failed"]
    assert client.get("/ping/wrong-project-key/slug-new").status_code == 404
    assert client.get(f"/ping/{pk}/Bad_Slug!").status_code == 400


def test_body_is_capped_and_invalid_utf8_kept(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    body = b"\xff\xfe" + b"x" * 300_000
    # a real client shape: a text body sent with a JSON content type
    r = client.post(f"/ping/{key}", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    (run,) = runs(live, name)
    assert run.stdout == body[:100_000]


# --- simob ----------------------------------------------------------------------------------


def test_simob_states_execution_and_timeout(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    r = client.get(f"/jobs/p/{key}", params={"state": "RUN", "v": "1"})
    first = r.json()["execution"]
    r = client.post(f"/jobs/p/{key}?state=run&v=1")  # the open one is timed out first
    second = r.json()["execution"]
    assert client.get(f"/jobs/p/{key}", params={"state": "complete"}).text == "OK"
    client.get(f"/jobs/p/{key}", params={"state": "fail"})  # nothing open: synthetic
    got = {r.id: r.status.value for r in runs(live, name)}
    assert got[first] == "timeout" and got[second] == "success"
    assert sorted(got.values()) == ["failed", "success", "timeout"]


@pytest.mark.parametrize("query", ["", "?state=", "?state=done"])
def test_simob_invalid_state_is_400_listing_states(
    live: LiveServer, client: httpx.Client, query: str
) -> None:
    _, key = fresh(live)
    r = client.get(f"/jobs/p/{key}{query}")
    assert r.status_code == 400
    assert all(s in r.text for s in ("run", "complete", "fail"))


def test_simob_unknown_key_404(client: httpx.Client) -> None:
    assert client.get("/jobs/p/nope?state=run").status_code == 404


# --- Cronitor and Loom ----------------------------------------------------------------------


def test_cronitor_creates_jobs_and_reads_params(live: LiveServer, client: httpx.Client) -> None:
    pk = live.project_key()
    q = "state=complete&msg=done&metric=duration:2.5&metric=count:7&env=staging&host=web1&series=s-1"
    assert client.get(f"/p/{pk}/nightly?{q}").text == "OK"
    client.get(f"/ping/{pk}/nightly")  # the other URL form, a heartbeat
    (hb, run) = sorted(runs(live, "nightly"), key=lambda r: r.env)
    assert run.env == "staging" and run.host == "web1" and run.duration == 2.5 and run.id == "s-1"
    assert "done" in run.message and "count=7" in run.message
    assert hb.status.value == "success" and hb.env == ""
    assert client.get(f"/p/{pk}/nightly?state=bogus").status_code == 400


def test_environments_keep_runs_apart(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    client.get(f"/ping/{key}/start", params={"env": "prod"})
    client.get(f"/ping/{key}/start", params={"env": "staging"})  # prod's run stays open
    client.get(f"/ping/{key}", params={"env": "prod"})
    got = {r.env: r.status.value for r in runs(live, name)}
    assert got == {"prod": "success", "staging": "running"}


def test_loom_exit_code_and_text_body(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    client.post(f"/ping/{key}/start", content=b"")
    client.post(f"/ping/{key}", params={"exit_code": "2"}, content="boom\n",
                headers={"Content-Type": "text/plain"})  # fmt: skip
    (run,) = runs(live, name)
    assert run.status.value == "failed" and run.exit_code == 2 and run.stdout == b"boom\n"


@pytest.mark.parametrize(
    "path", ["/ping/", "/ping/a/b/c/d/e", "/p/x", "/jobs/p/", "/ping/" + "k" * 5000, "/nothing"]
)
def test_odd_urls_are_4xx(client: httpx.Client, path: str) -> None:
    assert 400 <= client.get(path).status_code < 500


def test_other_methods_405(live: LiveServer, client: httpx.Client) -> None:
    _, key = fresh(live)
    assert client.delete(f"/ping/{key}").status_code == 405


def test_concurrent_pings_all_recorded(live: LiveServer) -> None:
    name, key = fresh(live)

    def hit(i: int) -> int:
        with httpx.Client(base_url=live.url) as c:
            return sum(
                c.get(f"/ping/{key}", params={"rid": f"r{i}-{j}"}).status_code for j in range(25)
            )

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(hit, range(8))) == [200 * 25] * 8
    assert len(runs(live, name)) == 200


def test_ping_events_reach_the_log(live: LiveServer, client: httpx.Client) -> None:
    name, key = fresh(live)
    client.get(f"/ping/{key}/start")
    client.get(f"/ping/{key}/start")
    with live.store() as s:
        types = [(t, json.loads(d)["job"]) for _, _, t, d in s.events_since(0, limit=100000)]
    assert [t for t, j in types if j == name] == ["run.started", "job.timeout", "run.started"]


def test_a_nul_character_in_a_message_is_still_a_recorded_ping(
    live: LiveServer, client: httpx.Client
) -> None:
    """PostgreSQL's text cannot hold NUL (SQLite's can): the ping is recorded all the same,
    the character replaced there, never a 500."""
    name, key = fresh(live)
    r = client.get(f"/ping/{key}/1", params={"message": "before\x00after"})
    assert (r.status_code, r.text) == (200, "OK")
    (run,) = runs(live, name)
    assert run.message in ("before\x00after", "before\ufffdafter")
    assert (run.status.value, run.exit_code) == ("failed", 1)
