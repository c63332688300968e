"""The console in a real browser: Playwright driving Debian's Chromium against a real
`cronwatch serve`, pings sent by curl. Each test leaves a screenshot in the session's
temporary directory (and in $CRONWATCH_SCREENSHOT_DIR when set, for docs/img/)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console_harness import ADMIN, ADMIN_PASSWORD, VIEWER, VIEWER_PASSWORD, console_server
from cronwatch.core.model import Job
from test_server_harness import LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; "
                "scripts/ensure-test-deps.sh does it as root)", allow_module_level=True)  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (test extra)")
expect = sync_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    os.environ.pop("CRONWATCH_DB", None)
    srv = console_server(tmp_path_factory.mktemp("console") / "history.db")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Never a browser of Playwright's own: Debian's, by path (nothing is downloaded).
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser: Any, shots: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  timezone_id="Asia/Tokyo")  # fmt: skip
    pg = context.new_page()
    violations: list[str] = []
    pg.on("console", lambda m: violations.append(m.text) if "Content Security" in m.text else None)
    pg.set_default_timeout(20_000)
    yield pg
    shot = shots / f"{request.node.name}.png"
    pg.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("CRONWATCH_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)
    context.close()
    assert not violations, violations  # our own script and style only, nothing blocked


def sign_in(page: Any, url: str, name: str = ADMIN, password: str = ADMIN_PASSWORD) -> None:
    page.goto(url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()


def create_job(page: Any, name: str, schedule: str) -> None:
    page.get_by_role("link", name="New job").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("schedule", exact=True).fill(schedule)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()


def curl(*args: str) -> str:
    p = subprocess.run(["curl", "-fsS", "-m", "10", *args], capture_output=True, text=True,
                       timeout=30)  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_sign_in_create_a_job_and_see_its_next_expected_times(
    page: Any, server: LiveServer
) -> None:
    sign_in(page, server.url)
    page.get_by_role("link", name="New job").click()
    page.get_by_label("Name", exact=True).fill("nightly-backup")
    page.get_by_label("tz", exact=True).fill("Europe/Berlin")
    page.get_by_label("schedule", exact=True).fill("30 2 * * *")
    # as it is typed: the words and five times, from the server's schema
    expect(page.locator("#schedule-words")).to_have_text("at 02:30 every day (Europe/Berlin time)")
    expect(page.locator("#schedule-next li")).to_have_count(5)
    # shown in the viewer's zone (Tokyo: 02:30 Berlin is 10:30), UTC on hover
    first = page.locator("#schedule-next time").first
    title = first.get_attribute("title") or ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 0[01]:30:00 UTC", title), title  # CET or CEST
    assert f"{int(title[11:13]) + 9}:30:00" in first.inner_text()
    page.get_by_label("schedule", exact=True).fill("every banana")
    expect(page.locator("#schedule-error")).to_contain_text("invalid schedule 'every banana'")
    page.get_by_label("schedule", exact=True).fill("30 2 * * *")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="nightly-backup")).to_be_visible()
    expect(page.locator("ol.times li")).to_have_count(5)
    expect(page.get_by_text("job nightly-backup created")).to_be_visible()


def test_a_curl_ping_appears_live_and_its_output_opens(page: Any, server: LiveServer) -> None:
    sign_in(page, server.url)
    create_job(page, "reports", "*/10 * * * *")
    snippet = page.locator("#snip-hc").inner_text()
    key = snippet.split("/ping/")[1].split("/")[0]
    assert key and "PING-KEY" not in snippet
    page.get_by_role("link", name="Jobs").click()
    row = page.locator("#job-reports")
    expect(row).to_contain_text("unknown")
    page.evaluate("window.__noReload = 1")
    expect(page.locator("#live-status")).to_have_text("Live")
    hostile = "<img src=x id=injected> all done & counted\nline 2"
    curl("--data-binary", hostile, f"{server.url}/ping/{key}/0")
    expect(row).to_contain_text("healthy")
    expect(row.locator("span.pill.ok").nth(1)).to_have_text("success")
    assert page.evaluate("window.__noReload") == 1  # updated in place, no reload
    row.get_by_role("link").nth(1).click()  # the last run
    expect(page.get_by_role("heading", name="stdout")).to_be_visible()
    expect(page.locator("pre.output")).to_have_text(hostile)  # escaped, shown as text
    assert page.locator("#injected").count() == 0


def test_pause_and_resume(page: Any, server: LiveServer) -> None:
    sign_in(page, server.url)
    create_job(page, "pausable", "every 1h")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("heading", name="pausable")).to_contain_text("paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    expect(page.get_by_role("heading", name="pausable")).not_to_contain_text("paused")


def test_a_notification_list_is_made_from_its_page(page: Any, server: LiveServer) -> None:
    sign_in(page, server.url)
    page.get_by_role("link", name="Lists").click()
    expect(page.get_by_role("heading", name="Notification lists")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("on-call-team")
    page.get_by_label("Channels, one per line").fill(
        "email:ops@example.com\nhttps://user:hunter2@hooks.example/x"
    )
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("notification list on-call-team saved")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="on-call-team")
    expect(row).to_contain_text("email:ops@example.com")
    expect(row).not_to_contain_text("hunter2")
    with server.store() as s:
        assert s.notification_lists()["on-call-team"][1] == "https://user:hunter2@hooks.example/x"


def test_a_viewer_cannot_change_anything(page: Any, server: LiveServer) -> None:
    with server.store() as s:
        s.save_job(Job(name="watched"), now=time.time())
    sign_in(page, server.url, VIEWER, VIEWER_PASSWORD)
    expect(page.get_by_role("link", name="New job")).to_have_count(0)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    page.get_by_role("link", name="watched").click()
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    expect(page.locator("#snip-hc")).to_contain_text("PING-KEY")  # secrets stay hidden
    # a hand-made form post with the viewer's own valid token is still refused
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    r = page.request.post(f"{server.url}/job/watched/pause", form={"csrf": token},
                          headers={"origin": server.url})  # fmt: skip
    assert r.status == 403 and "only admins change things" in r.text()
    page.goto(f"{server.url}/new")
    expect(page.get_by_role("alert")).to_contain_text("only admins")
    with server.store() as s:
        assert not s.get_job("watched").paused


def test_a_stale_csrf_token_is_refused(page: Any, server: LiveServer) -> None:
    sign_in(page, server.url)
    create_job(page, "guarded", "@daily")
    page.evaluate("document.querySelectorAll('input[name=csrf]')"
                  ".forEach(function (i) { i.value = 'forged'; })")  # fmt: skip
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("alert")).to_contain_text("security token is missing or stale")
    with server.store() as s:
        assert not s.get_job("guarded").paused


def test_sign_out(page: Any, server: LiveServer) -> None:
    sign_in(page, server.url)
    cookie = next(c for c in page.context.cookies() if c["name"] == "cw_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("signed out")).to_be_visible()
    page.goto(f"{server.url}/incidents")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # sent to sign in
    # the old cookie is dead on the server, not only forgotten by the browser
    page.context.add_cookies([{**cookie}])
    page.goto(f"{server.url}/incidents")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_phone_sized_dark_page_reads(browser: Any, server: LiveServer, shots: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    pg = context.new_page()
    try:
        sign_in(pg, server.url)
        bg = pg.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(17, 20, 24)"  # prefers-color-scheme: dark
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing pushes the page sideways (tables scroll in place)
        pg.screenshot(path=str(shots / "phone-dark.png"), full_page=True)
        keep = os.environ.get("CRONWATCH_SCREENSHOT_DIR")
        if keep:
            shutil.copy(shots / "phone-dark.png", Path(keep) / "phone-dark.png")
    finally:
        context.close()
