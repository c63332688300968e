"""The console over HTTP against a real `cronwatch serve`: signing in and its limits,
sessions and their expiry, CSRF, roles, every form's validation (the same messages as
the API's), badges, the trusted header, and the `cronwatch user` commands."""

from __future__ import annotations

import html
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console_harness import (
    ADMIN,
    ADMIN_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    add_user,
    console_server,
    csrf,
    error_of,
    sign_in,
)
from test_server_harness import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    os.environ.pop("CRONWATCH_DB", None)
    srv = console_server(tmp_path_factory.mktemp("console") / "history.db")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> Iterator[httpx.Client]:
    c = sign_in(server.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.token("console-tests"),
                      timeout=30) as c:  # fmt: skip
        yield c


def post(client: httpx.Client, path: str, data: dict[str, str], page: str = "/") -> httpx.Response:
    return client.post(path, data={"csrf": csrf(client, page), **data})


# --- signing in -----------------------------------------------------------------------------


def test_a_fresh_server_says_how_to_make_the_first_user(tmp_path: Path) -> None:
    srv = LiveServer(tmp_path / "h.db").start()
    try:
        assert srv.proc is not None and srv.proc.stderr is not None
        assert "cronwatch user add NAME --role admin" in srv.proc.stderr.readline().decode()
        r = httpx.get(srv.url + "/")
        assert r.status_code == 200 and "Sign in" in r.text
        assert "cronwatch user add NAME --role admin" in r.text
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert "unsafe-inline" not in r.headers["content-security-policy"]
    finally:
        srv.stop()


def test_sign_in_sets_a_safe_cookie_and_a_wrong_password_does_not(server: LiveServer) -> None:
    r = httpx.post(server.url + "/login", data={"name": ADMIN, "password": ADMIN_PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; behind HTTPS it is set
    sid = cookie.split(";")[0].split("=", 1)[1]
    with sqlite3.connect(server.db) as db:  # only the session id's hash is kept
        assert db.execute("SELECT count(*) FROM sessions WHERE hash=?", (sid,)).fetchone()[0] == 0
    for name, password in ((ADMIN, "wrong password"), ("nobody", ADMIN_PASSWORD)):
        bad = httpx.post(server.url + "/login", data={"name": name, "password": password})
        assert bad.status_code == 401 and "set-cookie" not in bad.headers
        assert error_of(bad.text) == "wrong user name or password"  # says not which


def test_sign_in_returns_to_the_page_asked_for_and_never_off_site(server: LiveServer) -> None:
    r = httpx.get(server.url + "/incidents")
    assert r.status_code == 303 and r.headers["location"] == "/?next=%2Fincidents"
    form = {"name": ADMIN, "password": ADMIN_PASSWORD}
    r = httpx.post(server.url + "/login", data={**form, "next": "/incidents"})
    assert r.headers["location"] == "/incidents"
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        r = httpx.post(server.url + "/login", data={**form, "next": evil})
        assert r.headers["location"] == "/"


def test_sign_ins_are_rate_limited_per_user_and_per_address(tmp_path: Path) -> None:
    srv = console_server(tmp_path / "h.db")
    try:
        for _ in range(5):
            r = httpx.post(srv.url + "/login", data={"name": VIEWER, "password": "guess"})
            assert r.status_code == 401
        # the sixth is refused without a look at the password, the right one included
        r = httpx.post(srv.url + "/login", data={"name": VIEWER, "password": VIEWER_PASSWORD})
        assert r.status_code == 429 and "too many failed sign-ins" in error_of(r.text)
        assert "try again in 15 minutes" in error_of(r.text)
        # another account from the same address still signs in (per user, below 20 here)
        assert sign_in(srv.url).get("/").status_code == 200
        # one address guessing many names hits the address limit
        for i in range(15):
            r = httpx.post(srv.url + "/login", data={"name": f"u{i}", "password": "guess"})
            assert r.status_code == 401, i
        r = httpx.post(srv.url + "/login", data={"name": ADMIN, "password": ADMIN_PASSWORD})
        assert r.status_code == 429
    finally:
        srv.stop()


def test_the_sign_in_limit_is_one_for_every_replica_and_outlives_a_restart(
    tmp_path: Path,
) -> None:
    """Failed sign-ins are counted in the database: two servers on one database (replicas
    behind a load balancer) share one limit, and a restarted server still refuses."""
    db = tmp_path / "h.db"
    a = console_server(db)
    b = LiveServer(db).start()
    try:
        for i in range(5):  # taking turns: 3 at one replica, 2 at the other
            url = (a if i % 2 else b).url
            r = httpx.post(url + "/login", data={"name": VIEWER, "password": "guess"})
            assert r.status_code == 401, i
        for srv in (a, b):
            r = httpx.post(srv.url + "/login", data={"name": VIEWER, "password": VIEWER_PASSWORD})
            assert r.status_code == 429 and "too many failed sign-ins" in error_of(r.text)
    finally:
        a.stop()
        b.stop()
    again = LiveServer(db).start()
    try:
        r = httpx.post(again.url + "/login", data={"name": VIEWER, "password": VIEWER_PASSWORD})
        assert r.status_code == 429
        assert sign_in(again.url).get("/").status_code == 200  # another account signs in
    finally:
        again.stop()


def test_an_expired_session_sends_the_browser_back_to_sign_in(server: LiveServer) -> None:
    c = sign_in(server.url, VIEWER, VIEWER_PASSWORD)
    assert "Jobs" in c.get("/").text
    with sqlite3.connect(server.db) as db:
        db.execute("UPDATE sessions SET expires_at = ? WHERE user_id = "
                   "(SELECT id FROM users WHERE name = ?)", (time.time() - 1, VIEWER))  # fmt: skip
    r = c.get("/")
    assert r.status_code == 200 and "Sign in" in r.text and "Sign out" not in r.text
    assert c.get("/incidents").status_code == 303
    assert c.post("/job/x/pause", data={"csrf": "x"}).status_code == 401


def test_the_session_lasts_as_long_as_configured(tmp_path: Path) -> None:
    srv = console_server(tmp_path / "h.db", "--session-hours", "2")
    try:
        r = httpx.post(srv.url + "/login", data={"name": ADMIN, "password": ADMIN_PASSWORD})
        assert "Max-Age=7200" in r.headers["set-cookie"]
        with sqlite3.connect(srv.db) as db:
            created, expires = db.execute("SELECT created_at, expires_at FROM sessions").fetchone()
        assert expires - created == pytest.approx(7200)
    finally:
        srv.stop()


def test_a_new_password_ends_the_users_sessions(tmp_path: Path) -> None:
    srv = console_server(tmp_path / "h.db")
    try:
        c = sign_in(srv.url, VIEWER, VIEWER_PASSWORD)
        assert "Sign out" in c.get("/").text
        p = subprocess.run([sys.executable, "-m", "cronwatch.main", "user", "passwd", VIEWER,
                            "--password-stdin", "--db", str(srv.db)],
                           input=b"another password\n", capture_output=True)  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert "Sign in" in c.get("/").text
        sign_in(srv.url, VIEWER, "another password")
    finally:
        srv.stop()


def test_sign_out_needs_the_csrf_token(server: LiveServer) -> None:
    c = sign_in(server.url)
    r = c.post("/logout", data={"csrf": "forged"})
    assert r.status_code == 403 and "Sign out" in c.get("/").text  # still signed in
    r = c.post("/logout", data={"csrf": csrf(c)})
    assert r.status_code == 303 and "Max-Age=0" in r.headers["set-cookie"]
    assert "Sign in" in c.get("/").text


# --- writes: CSRF, origin, roles --------------------------------------------------------


def test_writes_need_the_sessions_csrf_token_and_our_origin(
    server: LiveServer, admin: httpx.Client
) -> None:
    other = sign_in(server.url)
    form = {"name": "csrf-job", "schedule": "@daily"}
    assert admin.post("/new", data=form).status_code == 403  # none
    assert admin.post("/new", data={**form, "csrf": csrf(other)}).status_code == 403  # another's
    token = csrf(admin)
    r = admin.post("/new", data={**form, "csrf": token}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in error_of(r.text)
    with server.store() as s:
        assert s.find_job("csrf-job") is None
    r = admin.post("/new", data={**form, "csrf": token}, headers={"origin": server.url})
    assert r.status_code == 303


def test_a_viewer_reads_but_changes_nothing(server: LiveServer, api: httpx.Client) -> None:
    api.post("/api/v1/jobs", json={"name": "viewed", "notify": ["https://u:pw@hooks.example/x"]})
    v = sign_in(server.url, VIEWER, VIEWER_PASSWORD)
    page = v.get("/job/viewed").text
    assert "PING-KEY" in page and "pw@" not in page and "***" in page
    token = csrf(v)
    for path, data in (("/job/viewed/pause", {}), ("/job/viewed/delete", {"confirm": "viewed"}),
                       ("/new", {"name": "v2"}), ("/tokens/create", {"name": "t"}),
                       ("/users/add", {"name": "x", "role": "admin", "password": "12345678"}),
                       ("/channels/add", {"job": "viewed", "url": "https://x.example/"})):  # fmt: skip
        r = v.post(path, data={"csrf": token, **data})
        assert r.status_code == 403, path
        assert "only admins change things" in error_of(r.text)
    assert v.get("/users").status_code == 403
    assert v.get("/new").status_code == 403
    with server.store() as s:
        assert not s.get_job("viewed").paused and s.find_job("v2") is None
        assert [t["name"] for t in s.list_tokens()] == ["console-tests"]


# --- every form's validation: the schema's messages, as the API gives them ---------------

BAD_SETTINGS = [
    ("schedule", "every banana"),
    ("schedule", "61 * * * *"),
    ("tz", "Mars/Olympus"),
    ("grace", "-5m"),
    ("grace", "a while"),
    ("max_runtime", "0"),
    ("alert_after", "1.5"),
    ("alert_after", "0"),
    ("keep_days", "nan"),
    ("notify", "ftp://nope.example/"),
    ("asserts", "duration <<< 5"),
    ("tags", "Not A Tag"),
]


@pytest.mark.parametrize(("field", "value"), BAD_SETTINGS)
def test_the_job_forms_refuse_what_the_api_refuses_with_its_message(
    admin: httpx.Client, api: httpx.Client, field: str, value: str
) -> None:
    # the API's answer to the same value, in the CLI's text spelling
    from cronwatch.core.errors import ValidationError
    from cronwatch.core.settings import normalize

    listed = field in ("notify", "asserts", "tags")
    with pytest.raises(ValidationError) as schema:
        normalize(field, [value] if listed else value)
    r = post(admin, "/new", {"name": "formjob", field: value}, "/new")
    assert r.status_code == 422
    assert error_of(r.text) == str(schema.value)
    api.post("/api/v1/jobs", json={"name": "edited"})
    r = post(admin, "/job/edited/edit", {field: value}, "/job/edited/edit")
    assert r.status_code == 422 and error_of(r.text) == str(schema.value)


def test_the_job_form_refuses_a_bad_or_taken_name(admin: httpx.Client) -> None:
    r = post(admin, "/new", {"name": "Bad Name!", "schedule": "@hourly"}, "/new")
    assert r.status_code == 422 and "invalid job name 'Bad Name!'" in error_of(r.text)
    assert 'name="schedule" value="@hourly"' in r.text  # what was typed is kept
    assert post(admin, "/new", {"name": "taken"}, "/new").status_code == 303
    r = post(admin, "/new", {"name": "taken"}, "/new")
    assert r.status_code == 409 and error_of(r.text) == "job 'taken' already exists"


def test_a_job_made_in_the_console_is_the_one_the_api_sees(
    admin: httpx.Client, api: httpx.Client
) -> None:
    form = {"name": "made-here", "schedule": "0 3 * * *", "tz": "Europe/Berlin", "grace": "15m",
            "tags": "db\nnightly", "notify": "https://hooks.example/x", "alert_after": "3",
            "slowdown_alert": "on"}  # fmt: skip
    assert post(admin, "/new", form, "/new").status_code == 303
    job = api.get("/api/v1/jobs/made-here").json()
    assert (job["schedule"], job["tz"], job["grace"], job["tags"], job["alert_after"]) == (
        "0 3 * * *", "Europe/Berlin", 900.0, ["db", "nightly"], 3)  # fmt: skip
    assert job["slowdown_alert"] is True and job["ping_key"]
    # the edit form shows the stored values back, and saving them unchanged changes nothing
    page = admin.get("/job/made-here/edit").text
    assert 'value="15m"' in page and ">db\nnightly</textarea>" in page
    values = dict(form, csrf=csrf(admin, "/job/made-here/edit"))
    del values["name"]
    assert admin.post("/job/made-here/edit", data=values).status_code == 303
    assert api.get("/api/v1/jobs/made-here").json() == job


def test_delete_needs_the_name_typed(admin: httpx.Client, api: httpx.Client) -> None:
    api.post("/api/v1/jobs", json={"name": "doomed"})
    r = post(admin, "/job/doomed/delete", {"confirm": "doome"})
    assert r.status_code == 422 and "type the job's name (doomed)" in error_of(r.text)
    assert api.get("/api/v1/jobs/doomed").status_code == 200
    assert post(admin, "/job/doomed/delete", {"confirm": "doomed"}).status_code == 303
    assert api.get("/api/v1/jobs/doomed").status_code == 404


def test_unknown_jobs_runs_and_pages_are_404s_not_500s(admin: httpx.Client) -> None:
    assert admin.get("/job/nope").status_code == 404
    assert admin.get("/job/Not%20A%20Name").status_code == 422
    assert admin.get("/run/nope").status_code == 404
    assert admin.get("/nowhere").status_code == 404
    assert post(admin, "/job/nope/pause", {}).status_code == 404
    r = admin.post("/new", content=b"x" * 100_000,
                   headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 413


def test_the_schedule_preview_speaks_for_the_schema(admin: httpx.Client) -> None:
    r = admin.get("/schedule", params={"schedule": "*/15 * * * *", "tz": "UTC"}).json()
    assert r["ok"] and r["words"] == "every 15 minutes" and len(r["next"]) == 5
    gaps = {round(b["t"] - a["t"]) for a, b in zip(r["next"], r["next"][1:], strict=False)}
    assert gaps == {900}
    bad = admin.get("/schedule", params={"schedule": "every banana"}).json()
    assert not bad["ok"] and bad["error"].startswith("schedule: invalid schedule 'every banana'")
    zone = admin.get("/schedule", params={"schedule": "@daily", "tz": "Nowhere/Land"}).json()
    assert not zone["ok"] and "unknown time zone 'Nowhere/Land'" in zone["error"]
    assert httpx.get(str(admin.base_url) + "/schedule").status_code == 303  # signed in only


def test_token_forms(admin: httpx.Client, server: LiveServer) -> None:
    r = post(admin, "/tokens/create", {"name": "grafana", "read_only": "on"}, "/tokens")
    assert r.status_code == 200 and "it is not shown again" in r.text
    secret = r.text.split('<pre id="new-token">')[1].split("</pre>")[0]
    assert secret.startswith("cw_")
    assert secret not in admin.get("/tokens").text  # shown once
    ro = httpx.get(server.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
    assert ro.status_code == 200
    r = post(admin, "/tokens/create", {"name": "grafana"}, "/tokens")
    assert r.status_code == 422 and "already exists" in error_of(r.text)
    r = post(admin, "/tokens/create", {"name": "no good"}, "/tokens")
    assert r.status_code == 422 and "invalid job name 'no good'" in error_of(r.text)  # as the CLI
    assert post(admin, "/tokens/revoke", {"name": "grafana"}, "/tokens").status_code == 303
    gone = httpx.get(server.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
    assert gone.status_code == 401


def test_user_forms(admin: httpx.Client, server: LiveServer) -> None:
    r = post(
        admin, "/users/add", {"name": "carol", "role": "viewer", "password": "short"}, "/users"
    )
    assert r.status_code == 422 and "at least 8 characters" in error_of(r.text)
    r = post(admin, "/users/add", {"name": "carol", "role": "boss", "password": "long enough"},
             "/users")  # fmt: skip
    assert r.status_code == 422 and "expected admin or viewer" in error_of(r.text)
    r = post(admin, "/users/add", {"name": "-carol", "role": "viewer", "password": "long enough"},
             "/users")  # fmt: skip
    assert r.status_code == 422 and "invalid user name" in error_of(r.text)
    ok = {"name": "carol", "role": "viewer", "password": "long enough"}
    assert post(admin, "/users/add", ok, "/users").status_code == 303
    assert post(admin, "/users/add", ok, "/users").status_code == 422  # taken
    sign_in(server.url, "carol", "long enough")
    assert post(admin, "/users/remove", {"name": "carol"}, "/users").status_code == 303
    r = httpx.post(server.url + "/login", data={"name": "carol", "password": "long enough"})
    assert r.status_code == 401


def test_channel_forms_redact_test_and_remove(admin: httpx.Client, api: httpx.Client) -> None:
    api.post("/api/v1/jobs", json={"name": "alerting"})
    from cronwatch.core.errors import ValidationError
    from cronwatch.core.settings import normalize

    with pytest.raises(ValidationError) as schema:
        normalize("notify", ["gopher://x"])
    r = post(admin, "/channels/add", {"job": "alerting", "url": "gopher://x"}, "/channels")
    assert r.status_code == 422 and error_of(r.text) == str(schema.value)
    r = post(admin, "/channels/add", {"job": "alerting", "url": ""}, "/channels")
    assert r.status_code == 422 and "empty notification channel" in error_of(r.text)
    url = "https://user:hunter2@127.0.0.1:9/hook"  # nothing listens on the discard port
    assert (
        post(admin, "/channels/add", {"job": "alerting", "url": url}, "/channels").status_code
        == 303
    )
    page = admin.get("/channels").text
    assert "hunter2" not in page and "alerting" in page
    channel = page.split('name="channel" value="')[1].split('"')[0]
    r = post(admin, "/channels/test", {"channel": channel}, "/channels")
    shown = admin.get(r.headers["location"]).text
    assert "failed" in shown and "hunter2" not in shown
    assert api.get("/api/v1/jobs/alerting", params={"secrets": "true"}).json()["notify"] == [url]
    assert post(admin, "/channels/remove", {"channel": channel}, "/channels").status_code == 303
    assert api.get("/api/v1/jobs/alerting").json()["notify"] == []


def test_notification_list_forms_store_redact_refuse_and_remove(
    server: LiveServer, admin: httpx.Client
) -> None:
    from cronwatch.core.errors import ValidationError
    from cronwatch.notify.shorthand import validate_list_name
    from cronwatch.server.api import check_list

    url = "https://user:hunter2@hooks.example/x"
    r = post(admin, "/lists/set", {"name": "on-call-team",
                                   "channels": f"{url}\r\n\r\nEmail:ops@example.com\n"}, "/lists")  # fmt: skip
    assert r.status_code == 303
    with server.store() as s:
        assert s.notification_lists()["on-call-team"] == [url, "email:ops@example.com"]
    page = admin.get(r.headers["location"]).text
    assert "on-call-team" in page and "email:ops@example.com" in page
    assert "hunter2" not in page and "***" in page
    assert 'href="/lists" aria-current="page"' in page

    # the same input gives the API's (and the CLI's) message, and stores nothing
    for name, channels in (("Bad Name!", "email:ops@example.com"),
                           ("team", "gopher://x"), ("team", "on-call-team")):  # fmt: skip
        with pytest.raises(ValidationError) as schema:
            check_list(validate_list_name(name), channels.split())
        r = post(admin, "/lists/set", {"name": name, "channels": channels}, "/lists")
        assert r.status_code == 422 and error_of(r.text) == str(schema.value), (name, channels)
    r = post(admin, "/lists/set", {"name": "team", "channels": " \n "}, "/lists")
    assert r.status_code == 422 and "at least one channel" in error_of(r.text)
    with server.store() as s:
        assert list(s.notification_lists()) == ["on-call-team"]

    v = sign_in(server.url, VIEWER, VIEWER_PASSWORD)
    page = v.get("/lists").text
    assert (
        "on-call-team" in page
        and "hunter2" not in page
        and "<form" not in page.split("</header>")[1]
    )
    token = csrf(v)
    for path, data in (("/lists/set", {"name": "v", "channels": "email:v@example.com"}),
                       ("/lists/remove", {"name": "on-call-team"})):  # fmt: skip
        r = v.post(path, data={"csrf": token, **data})
        assert r.status_code == 403 and "only admins change things" in error_of(r.text)
    r = admin.post("/lists/remove", data={"name": "on-call-team"})  # no CSRF token
    assert r.status_code == 403
    with server.store() as s:
        assert list(s.notification_lists()) == ["on-call-team"]

    r = post(admin, "/lists/remove", {"name": "on-call-team"}, "/lists")
    assert r.status_code == 303
    with server.store() as s:
        assert s.notification_lists() == {}
    assert "No notification lists yet" in admin.get("/lists").text
    assert post(admin, "/lists/remove", {"name": "on-call-team"}, "/lists").status_code == 404


# --- badges, the trusted header, the old dashboard --------------------------------------


def test_badges_show_the_state_and_nothing_else(
    server: LiveServer, admin: httpx.Client, api: httpx.Client
) -> None:
    api.post("/api/v1/jobs", json={"name": "badged", "tags": ["team"]})
    key = api.get("/api/v1/jobs/badged").json()["ping_key"]
    page = admin.get("/job/badged").text
    svg_url = page.split('<pre id="badge-svg">')[1].split("</pre>")[0]
    json_url = svg_url[:-4] + ".json"
    anonymous = httpx.Client(timeout=10)
    assert json.loads(anonymous.get(json_url).text) == {
        "schemaVersion": 1, "label": "badged", "message": "new", "color": "inactive"}  # fmt: skip
    httpx.get(f"{server.url}/ping/{key}/1", params={"msg": "secret detail"})
    r = anonymous.get(svg_url)
    assert r.headers["content-type"] == "image/svg+xml" and b">down</text>" in r.content
    assert b"secret detail" not in r.content
    tag_url = svg_url.replace("/job/badged.svg", "/tag/team.svg")
    assert anonymous.get(tag_url).status_code == 404  # a signature names one kind and name
    sig = svg_url.split("/badge/")[1].split("/")[0]
    assert anonymous.get(svg_url.replace(sig, "A" * len(sig))).status_code == 404
    assert anonymous.get(svg_url.replace("badged.svg", "badged.png")).status_code == 404


def test_a_tag_badge_shows_its_worst_job(server: LiveServer, api: httpx.Client) -> None:
    from cronwatch.server.badges import signature

    with server.store() as s:
        secret = bytes.fromhex(s.get_meta("console_secret") or "")
    for name in ("ok-one", "bad-one"):
        api.post("/api/v1/jobs", json={"name": name, "tags": ["mixed"]})
        key = api.get(f"/api/v1/jobs/{name}").json()["ping_key"]
        httpx.get(f"{server.url}/ping/{key}/{0 if name == 'ok-one' else 3}")
    sig = signature(secret, "tag", "mixed")
    r = httpx.get(f"{server.url}/badge/{sig}/tag/mixed.json").json()
    assert r["message"] == "down" and r["label"] == "mixed"


def test_the_trusted_header_signs_in_only_when_asked_for(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    add_user(db, "sso-user", "unused password", "viewer")
    plain = LiveServer(db).start()
    try:
        r = httpx.get(plain.url + "/", headers={"X-Forwarded-User": "sso-user"})
        assert "Sign in" in r.text  # not configured: the header means nothing
    finally:
        plain.stop()
    srv = LiveServer(db, "--trusted-user-header", "X-Forwarded-User").start()
    try:
        r = httpx.get(srv.url + "/", headers={"X-Forwarded-User": "sso-user"})
        assert "Sign out" in r.text and "sso-user" in r.text
        r = httpx.get(srv.url + "/", headers={"X-Forwarded-User": "stranger"})
        assert "Sign in" in r.text  # only users that exist
        token = csrf(httpx.Client(base_url=srv.url, headers={"X-Forwarded-User": "sso-user"}))
        r = httpx.post(srv.url + "/new", data={"csrf": token, "name": "x"},
                       headers={"X-Forwarded-User": "sso-user"})  # fmt: skip
        assert r.status_code == 403 and "viewer" in error_of(r.text)  # roles still hold
    finally:
        srv.stop()


def test_the_old_dashboard_url_still_works_with_a_deprecation_note(server: LiveServer) -> None:
    secret = server.token("old-bookmark", read_only=True)["Authorization"].split()[1]
    r = httpx.get(server.url + "/dashboard", params={"token": secret})
    assert r.status_code == 200 and r.headers["deprecation"] == "true"
    assert r.headers["link"] == '</>; rel="successor-version"'
    r = httpx.get(server.url + "/dashboard")
    assert r.status_code == 401 and "Sign in to the console at /" in r.text


# --- the CLI ---------------------------------------------------------------------------------


def test_user_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")

    def cw(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "cronwatch.main", *args, "--db", db],
                              input=stdin, capture_output=True, timeout=60)  # fmt: skip

    assert cw("user", "add", "dora", "--password-stdin", stdin=b"long enough\n").returncode == 0
    p = cw("user", "add", "dora", "--password-stdin", stdin=b"long enough\n")
    assert p.returncode != 0 and b"already exists" in p.stderr and b"Traceback" not in p.stderr
    p = cw("user", "add", "eve", "--password-stdin", stdin=b"short\n")
    assert p.returncode != 0 and b"at least 8 characters" in p.stderr
    p = cw("user", "add", "eve")  # no terminal, no --password-stdin
    assert p.returncode != 0 and b"use --password-stdin" in p.stderr
    p = cw("user", "add", "eve", "--role", "root", "--password-stdin", stdin=b"long enough\n")
    assert p.returncode == 2 and b"invalid choice" in p.stderr
    cw("user", "add", "eve", "--role", "viewer", "--password-stdin", stdin=b"long enough\n")
    listed = json.loads(cw("user", "list", "--json").stdout)
    assert [(u["name"], u["role"]) for u in listed] == [("dora", "admin"), ("eve", "viewer")]
    assert all("password" not in u for u in listed)
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT password FROM users WHERE name='dora'").fetchone()[0]
    scheme, n, r, p_, salt, digest = stored.split("$")
    assert (scheme, n, r, p_) == ("scrypt", "32768", "8", "1") and "long enough" not in stored
    assert cw("user", "passwd", "eve", "--role", "admin", "--password-stdin",
              stdin=b"new password\n").returncode == 0  # fmt: skip
    assert json.loads(cw("user", "list", "--json").stdout)[1]["role"] == "admin"
    assert cw("user", "rm", "eve").returncode == 0
    p = cw("user", "rm", "eve")
    assert p.returncode != 0 and b"unknown user 'eve'" in p.stderr


def test_the_jobs_page_numbers_filters_and_pages(tmp_path: Path) -> None:
    from cronwatch.core.model import Job, Run, Status

    srv = console_server(tmp_path / "h.db")
    now = time.time()
    with srv.store() as s:
        for i in range(60):
            s.save_job(Job(name=f"bulk-{i:02d}", tags=["bulk"]), now=now)
        s.save_job(Job(name="timed", tags=["db"]), now=now)
        runs = [Run(job="timed", started_at=now - 1000 + i * 10, status=Status.SUCCESS,
                    ended_at=now - 1000 + i * 10 + 1 + i, duration=1.0 + i, exit_code=0)
                for i in range(19)]  # fmt: skip
        runs.append(Run(job="timed", started_at=now - 5, status=Status.FAILED, ended_at=now - 4,
                        duration=1.0, exit_code=3, env="prod"))  # fmt: skip
        s.record_runs(runs, now=now)
    try:
        c = sign_in(srv.url)
        page = c.get("/", params={"q": "tim"}).text
        row = page.split('id="job-timed"')[1].split("</tr>")[0]
        assert "95.0%" in row  # 19 of 20
        assert "18.0s" in row  # p95 of 1..19 s and 1 s: the 19th of 20 sorted durations
        assert row.count("<path class=") == 2  # bars of two outcomes
        assert "failing" in row
        assert "1 of 61" in page
        assert 'id="job-bulk-00"' not in page
        first = c.get("/").text
        assert "61 of 61, page 1 of 2" in first and 'rel="next"' in first
        assert first.count('<tr id="job-') == 50
        second = c.get("/", params={"page": "2"}).text
        assert second.count('<tr id="job-') == 11 and 'id="job-timed"' in second
        assert c.get("/", params={"page": "99"}).status_code == 200  # past the end: empty
        failing = c.get("/", params={"health": "failing"}).text
        assert failing.count('<tr id="job-') == 1 and 'id="job-timed"' in failing
        assert c.get("/", params={"tag": "db"}).text.count('<tr id="job-') == 1
        prod = c.get("/", params={"env": "prod"}).text
        assert prod.count('<tr id="job-') == 1 and "<option selected>prod</option>" in prod
        assert c.get("/", params={"env": "staging"}).text.count('<tr id="job-') == 0
        assert "No job matches these filters" in c.get("/", params={"q": "zzz"}).text
    finally:
        srv.stop()


def test_the_ping_snippets_work_as_copied(server: LiveServer, admin: httpx.Client) -> None:
    """Each snippet, run by a shell with /path/to/command replaced by true, records a run."""
    import html
    import re

    post(admin, "/new", {"name": "copied", "schedule": "@hourly"}, "/new")
    page = admin.get("/job/copied").text
    snips = {m[0]: html.unescape(m[1]) for m in
             re.findall(r'<pre id="snip-([a-z]+)"[^>]*>(.*?)</pre>', page, re.S)}  # fmt: skip
    assert set(snips) == {"crontab", "hc", "slug", "simob", "cronitor", "loom", "python"}
    assert snips["crontab"].startswith("@hourly cronwatch run copied --server ")
    for name in ("hc", "slug", "simob", "cronitor", "loom"):
        before = len(httpx.get(f"{server.url}/api/v1/jobs/copied/runs",
                               headers=server.token(f"t-{name}")).json())  # fmt: skip
        script = snips[name].replace("/path/to/command", "true")
        p = subprocess.run(["sh", "-c", script], capture_output=True, timeout=60)
        assert p.returncode == 0, (name, p.stderr)
        runs = httpx.get(f"{server.url}/api/v1/jobs/copied/runs",
                         headers=server.token(f"u-{name}")).json()  # fmt: skip
        assert len(runs) > before and runs[0]["status"] == "success", (name, runs[:2])


def test_the_crontab_snippet_runs_the_wrapper_against_this_server(
    server: LiveServer, admin: httpx.Client, cw_env: dict[str, str]
) -> None:
    import html
    import re

    post(admin, "/new", {"name": "wrapped", "schedule": "*/5 * * * *"}, "/new")
    page = admin.get("/job/wrapped").text
    line = html.unescape(re.search(r'<pre id="snip-crontab"[^>]*>(.*?)</pre>', page, re.S)[1])
    assert line.startswith("*/5 * * * * cronwatch run wrapped --server ")
    command = line.split(" ", 5)[5].replace("/path/to/command", "echo from-the-wrapper")
    env = dict(cw_env, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    p = subprocess.run(["sh", "-c", command], capture_output=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout == b"from-the-wrapper\n", p.stderr
    deadline = time.time() + 20
    while True:  # the finish ping goes out as the wrapper exits
        runs = httpx.get(f"{server.url}/api/v1/jobs/wrapped/runs",
                         headers=server.token(f"w-{time.time()}")).json()  # fmt: skip
        if runs and runs[0]["status"] == "success":
            break
        assert time.time() < deadline, runs
        time.sleep(0.2)


def test_ping_text_is_escaped_on_every_page(server: LiveServer, admin: httpx.Client) -> None:
    evil = "<script>alert(1)</script>"
    key = server.job_key("escaped")
    httpx.get(f"{server.url}/ping/{key}/fail", params={"msg": evil, "env": "<b>prod</b>"})
    httpx.post(f"{server.url}/ping/{key}/fail", content=evil.encode())
    run_id = httpx.get(f"{server.url}/api/v1/jobs/escaped/runs",
                       headers=server.token("esc")).json()[0]["id"]  # fmt: skip
    for path in ("/", "/?env=%3Cb%3Eprod%3C/b%3E", "/job/escaped", f"/run/{run_id}",
                 "/incidents", "/?q=" + evil):  # fmt: skip
        page = admin.get(path).text
        assert "<script>alert" not in page and "<b>prod" not in page, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in admin.get(f"/run/{run_id}").text


def test_every_control_has_a_label(server: LiveServer, admin: httpx.Client) -> None:
    from html.parser import HTMLParser

    class Controls(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.labels: set[str] = set()
            self.controls: list[dict[str, str | None]] = []
            self.depth = 0  # inside a <label>

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "label":
                self.depth += 1
                if a.get("for"):
                    self.labels.add(str(a["for"]))
            elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
                self.controls.append({**a, "wrapped": "yes" if self.depth else None})

        def handle_endtag(self, tag: str) -> None:
            if tag == "label":
                self.depth -= 1

    server.job_key("labelled")
    for path in ("/", "/new", "/job/labelled", "/job/labelled/edit", "/channels", "/tokens",
                 "/users", "/lists"):  # fmt: skip
        parser = Controls()
        parser.feed(admin.get(path).text)
        assert parser.controls, path
        for c in parser.controls:
            assert c["wrapped"] or c.get("aria-label") or c.get("id") in parser.labels, (path, c)
    parser = Controls()
    parser.feed(httpx.get(server.url + "/").text)  # the sign-in page
    assert len(parser.controls) == 2 and all(c.get("id") in parser.labels for c in parser.controls)


def test_a_jobs_runs_page_by_page(server: LiveServer, admin: httpx.Client) -> None:
    from cronwatch.core.model import Run, Status

    now = time.time()
    with server.store() as s:
        s.record_runs([Run(job="paged", started_at=now - 10_000 + i, status=Status.SUCCESS,
                           ended_at=now - 10_000 + i + 0.5, duration=0.5, exit_code=0,
                           message=f"run number {i}") for i in range(120)], now=now)  # fmt: skip
    seen: list[str] = []
    path = "/job/paged"
    for expected in (50, 50, 20):
        page = admin.get(path).text
        runs = page.split('<table class="runs">')[1].split("</table>")[0]
        numbers = [int(x) for x in re.findall(r"run number (\d+)", runs)]
        assert len(numbers) == expected and numbers == sorted(numbers, reverse=True)
        seen += [str(n) for n in numbers]
        more = re.search(r'<a href="(/job/paged\?before=[^"#]+)#runs">Older runs</a>', page)
        if expected == 20:
            assert more is None
        else:
            assert more is not None
            path = html.unescape(more[1])
    assert sorted(map(int, seen)) == list(range(120))  # each run once


def test_a_runs_output_shows_the_wrappers_cut_marker_apart(
    server: LiveServer, admin: httpx.Client
) -> None:
    from cronwatch.core.model import Run, Status
    from cronwatch.core.values import cap_bytes

    out = cap_bytes(b"<head>" + b"x" * 5000 + b"<tail>", 1000)
    with server.store() as s:
        s.record_runs([Run(job="chatty", started_at=time.time() - 5, status=Status.SUCCESS,
                           ended_at=time.time(), duration=1.0, exit_code=0, stdout=out,
                           id="01jchattychattychattychat1")], now=time.time())  # fmt: skip
    page = admin.get("/run/01jchattychattychattychat1").text
    pre = page.split('<pre class="output" id="out-1">')[1].split("</pre>")[0]
    assert pre.startswith("&lt;head&gt;") and pre.endswith("&lt;tail&gt;")
    cut = re.findall(r'<mark class="cut">(.*?)</mark>', pre)
    assert len(cut) == 1 and re.fullmatch(r"\[\.\.\. cronwatch: \d+ bytes cut \.\.\.\]", cut[0])


def test_the_slug_snippet_shows_the_project_key_after_it_is_rotated(
    server: LiveServer, admin: httpx.Client, api: httpx.Client
) -> None:
    """The console once showed the key the server read at its start: after a rotation its
    slug snippet pinged with a key every replica refuses."""
    import html
    import re

    post(admin, "/new", {"name": "rotated", "schedule": "@hourly"}, "/new")
    new_key = "rotated-project-key-0001"
    assert api.put("/api/v1/project-key", json={"key": new_key}).status_code == 200
    page = admin.get("/job/rotated").text
    (slug,) = re.findall(r'<pre id="snip-slug"[^>]*>(.*?)</pre>', page, re.S)
    script = html.unescape(slug).replace("/path/to/command", "true")
    assert new_key in script
    p = subprocess.run(["sh", "-c", script], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    runs = api.get("/api/v1/jobs/rotated/runs").json()
    assert [r["status"] for r in runs] == ["success"]
