"""The static HTML dashboard: content, escaping, self-containment, reuse, and a real browser."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cronwatch.app.dashboard import render_dashboard, write_dashboard
from cronwatch.core.model import Run, Status
from cronwatch.store import open_store

NOW = time.time()
CHROMIUM = "/usr/bin/chromium"
CRONWATCH = str(Path(sys.executable).parent / "cronwatch")

# Each payload would change the page if it ran: the title, an attribute on <body>, or a
# new element. The browser test checks that none of that happened.
PAYLOADS = [
    "<script>document.title='PWNED'</script>",
    "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">",
    "'><svg onload=\"document.body.setAttribute('data-pwned','2')\">",
    "</pre></details></section><div id=injected>x</div>",
    "<!--/cw--><!--cw:0123456789abcdef:row--><b id=injected2>x</b><!--/cw-->",
]
HOSTILE = "\n".join(PAYLOADS)


def make_run(
    job: str, ago: float, status: Status = Status.SUCCESS, dur: float = 1.0, **kw: Any
) -> Run:
    started = NOW - ago
    kw.setdefault("exit_code", 0 if status is Status.SUCCESS else 1)
    return Run(
        job=job, started_at=started, status=status, ended_at=started + dur, duration=dur, **kw
    )


@pytest.fixture
def db(tmp_path: Path) -> Any:
    s = open_store(str(tmp_path / "h.db"))
    yield s
    s.close()


@pytest.fixture
def hostile_store(db: Any) -> Any:
    """A healthy job, a flapping one, and one whose every text field is hostile."""
    runs = [make_run("backup", 3600 * i, dur=40 + i, stdout=b"dumped\n") for i in range(1, 40)]
    runs += [
        make_run("flappy", 600 * i, Status.FAILED if i % 2 else Status.SUCCESS)
        for i in range(1, 40)
    ]
    runs += [
        make_run(
            "evil",
            60 * i,
            Status.FAILED,
            stdout=HOSTILE.encode() + b"\xff\xfe not utf-8\n",
            stderr=HOSTILE.encode(),
            command=HOSTILE,
            message=HOSTILE,
            host=PAYLOADS[1],
            user=PAYLOADS[2],
            env=PAYLOADS[0],
        )
        for i in range(1, 4)
    ]
    db.record_runs(runs, now=NOW)
    return db


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRONWATCH_", "XDG_"))}
    env.update(HOME=str(tmp_path), CRONWATCH_DB=str(tmp_path / "data" / "history.db"))
    return subprocess.run([CRONWATCH, *args], env=env, capture_output=True, timeout=60)


# --- content ------------------------------------------------------------------------------


def test_empty_store_says_so(db: Any) -> None:
    page = render_dashboard(db, now=NOW)
    assert "No jobs yet" in page
    assert page.startswith("<!doctype html>")


def test_every_job_appears_with_its_numbers(hostile_store: Any) -> None:
    hostile_store.ensure_job("never-ran", now=NOW)
    page = render_dashboard(hostile_store, now=NOW)
    for name in ("backup", "flappy", "evil", "never-ran"):
        assert f'id="job-{name}"' in page
        assert f'href="#job-{name}"' in page
    assert "no runs yet" in page
    assert "100.0%" in page  # backup's success rate
    assert "cronwatch: 4 jobs, 2 failing" in page  # the tab title counts problems
    # problems first: the failing jobs come before the healthy one
    assert page.index('id="job-evil"') < page.index('id="job-backup"')
    # the flapping job's dots alternate, oldest first
    flappy = page[page.index('href="#job-flappy"') :]
    assert "<i class=f></i><i class=s></i><i class=f></i>" in flappy[: flappy.index("</tr>")]


def test_only_recent_runs_carry_output_and_long_output_is_cut(db: Any) -> None:
    big = b"head-marker\n" + b"y" * 50_000 + b"\ntail-marker\n"
    db.record_runs([make_run("chatty", 60 * i, stdout=big) for i in range(1, 26)], now=NOW)
    page = render_dashboard(db, now=NOW)
    shown = "".join(re.findall(r"<pre>(.*?)</pre>", page, re.S))
    assert "tail-marker" in shown and "head-marker" not in shown
    assert "only the last 16 KiB" in page and "cronwatch show" in page
    assert page.count("<pre>") <= 10
    assert page.count("<details class=run") == 20
    assert len(page) < 200_000


def test_output_is_utf8_with_bad_bytes_replaced_and_the_page_ascii(db: Any) -> None:
    db.record_run(make_run("bytes", 60, stdout=b"caf\xc3\xa9 \xff\xfe"), now=NOW)
    page = render_dashboard(db, now=NOW)
    assert page.isascii()  # non-ASCII goes out as character references
    assert "caf&#233;" in page and "&#65533;" in page


def test_health_is_shown_and_reused_until_the_clock_can_change_it(
    hostile_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cronwatch.app.dashboard
    from cronwatch.core.errors import ValidationError

    calls: list[str] = []

    def describe_job(store: Any, name: str, *, now: float) -> dict[str, Any]:
        calls.append(name)
        if name == "flappy":
            raise ValidationError("invalid schedule")
        if name == "evil":  # scheduled: its answer is good until the next expected run
            return {"health": "failing", "health_reason": "exit 1", "next_expected": NOW + 60}
        return {"health": "late", "health_reason": "due at <b>noon</b>", "slowdown": "2.0x"}

    monkeypatch.setattr(cronwatch.app.dashboard, "describe", describe_job)
    monkeypatch.setattr(cronwatch.app.dashboard, "_hour", lambda name, now: 0)  # no hourly refresh
    first = render_dashboard(hostile_store, now=NOW)
    assert '<span class="pill warn" title="due at &lt;b&gt;noon&lt;/b&gt;">late</span>' in first
    assert '<span class="pill warn" title="2.0x">slower</span>' in first
    assert '<span class="pill bad">failed</span>' in first  # flappy: its last run instead
    assert sorted(calls) == ["backup", "evil", "flappy"]
    calls.clear()
    assert render_dashboard(hostile_store, now=NOW + 30, previous=first) == render_dashboard(
        hostile_store, now=NOW + 30, previous=first
    )
    assert calls == []  # nothing can have changed: all reused
    render_dashboard(hostile_store, now=NOW + 61, previous=first)
    assert calls == ["evil"]  # its next run is due: asked again


def test_live_mode_may_fetch_itself_the_static_page_may_not(db: Any) -> None:
    static, live = render_dashboard(db, now=NOW), render_dashboard(db, now=NOW, live=True)
    assert "connect-src" not in static and "data-live" not in static
    assert "connect-src 'self'" in live and "data-live" in live


# --- safety -------------------------------------------------------------------------------


def test_job_text_is_always_escaped(hostile_store: Any) -> None:
    page = render_dashboard(hostile_store, now=NOW)
    for payload in PAYLOADS:
        assert payload not in page
    assert page.count("<script") == 1  # our own, constant script only
    for tag in ("<img", "<svg onload", "<div id=injected", "<b id=injected2"):
        assert tag not in page
    assert "&lt;script&gt;document.title=&#x27;PWNED&#x27;&lt;/script&gt;" in page
    script = page[page.index("<script>") : page.index("</script>")]
    assert "PWNED" not in script and "evil" not in script


def test_hostile_text_cannot_forge_a_cached_fragment(hostile_store: Any) -> None:
    first = render_dashboard(hostile_store, now=NOW)
    again = render_dashboard(hostile_store, now=NOW, previous=first)
    assert again == first
    assert "<b id=injected2" not in again


def test_no_external_assets_and_a_strict_csp(hostile_store: Any) -> None:
    page = render_dashboard(hostile_store, now=NOW)
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"@import|url\(", page, re.I)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp and "default-src 'none'" in csp[1] and "connect-src" not in csp[1]
    # no inline script or style runs unless it is our own, named by its hash
    assert "unsafe-inline" not in csp[1] and "unsafe-eval" not in csp[1]
    assert "frame-ancestors 'none'" in csp[1]  # (ignored in <meta>; see dashboard_csp)
    directives = dict(d.strip().split(" ", 1) for d in csp[1].split(";"))
    for tag, directive in (("style", "style-src"), ("script", "script-src")):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert directives[directive] == f"'sha256-{digest}'"


# --- speed: unchanged jobs are reused -------------------------------------------------------


class CountingStore:
    """The real store, counting the expensive per-job calls."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.stats_calls = inner, 0

    def job_stats(self, *a: Any, **kw: Any) -> Any:
        self.stats_calls += 1
        return self.inner.job_stats(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_new_run_rerenders_only_its_job(hostile_store: Any) -> None:
    counting = CountingStore(hostile_store)
    first = render_dashboard(counting, now=NOW)
    assert counting.stats_calls == 3
    assert render_dashboard(counting, now=NOW, previous=first) == first
    assert counting.stats_calls == 3  # nothing changed: nothing recomputed
    hostile_store.record_run(make_run("backup", 0, Status.FAILED, stdout=b"disk full\n"), now=NOW)
    second = render_dashboard(counting, now=NOW, previous=first)
    assert counting.stats_calls == 4
    assert second == render_dashboard(hostile_store, now=NOW)  # same as a full render
    assert "disk full" in second


def test_a_stale_or_foreign_previous_page_is_harmless(db: Any) -> None:
    db.record_run(make_run("job", 60), now=NOW)
    fresh = render_dashboard(db, now=NOW)
    for previous in ("", "<!--cw:zz", "<!--cw:0123456789abcdef:sec-->unterminated", "x" * 1000):
        assert render_dashboard(db, now=NOW, previous=previous) == fresh


def test_write_is_atomic_and_keeps_the_file_mode(db: Any, tmp_path: Path) -> None:
    db.record_run(make_run("job", 60), now=NOW)
    path = tmp_path / "out" / "dash.html"
    write_dashboard(db, str(path), now=NOW)
    assert "job" in path.read_text()
    path.chmod(0o640)
    write_dashboard(db, str(path), now=NOW + 1, fresh=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(path.parent) == ["dash.html"]  # no temp file left behind


# --- through the real CLI ------------------------------------------------------------------


def test_a_wrapped_run_writes_the_dashboard_beside_the_database(tmp_path: Path) -> None:
    code = "import sys; print(sys.argv[1]); sys.exit(3)"
    p = cli(tmp_path, "run", "nightly", "--", sys.executable, "-c", code, PAYLOADS[1])
    assert p.returncode == 3, p.stderr
    # Regenerated by a detached process, so the wrapper does not wait for it: poll.
    path = tmp_path / "data" / "dashboard.html"
    deadline = time.monotonic() + 30
    while not (path.exists() and 'id="job-nightly"' in path.read_text()):
        assert time.monotonic() < deadline, "the dashboard was not regenerated"
        time.sleep(0.05)
    page = path.read_text()
    assert 'id="job-nightly"' in page and "exit 3" in page
    assert PAYLOADS[1] not in page and "&lt;img src=x" in page
    assert not (tmp_path / "data" / "dashboard.html.error").exists()


def test_runs_finishing_together_all_reach_the_dashboard(tmp_path: Path) -> None:
    """Concurrent regenerations coalesce, and none of the runs is missing from the page."""
    env = dict(os.environ, CRONWATCH_DB=str(tmp_path / "data" / "history.db"),
               XDG_STATE_HOME=str(tmp_path / "state"))  # fmt: skip
    env.pop("CRONWATCH_DASHBOARD", None)
    procs = [subprocess.Popen([CRONWATCH, "run", f"burst-{i}", "--", "true"], env=env)
             for i in range(12)]  # fmt: skip
    assert all(p.wait(timeout=120) == 0 for p in procs)
    path = tmp_path / "data" / "dashboard.html"
    deadline = time.monotonic() + 60
    while True:
        page = path.read_text() if path.exists() else ""
        if all(f'id="job-burst-{i}"' in page for i in range(12)):
            break
        assert time.monotonic() < deadline, "a run is missing from the dashboard"
        time.sleep(0.1)


def test_dashboard_command_writes_where_asked(tmp_path: Path) -> None:
    assert cli(tmp_path, "run", "tiny", "--", "true").returncode == 0
    out = tmp_path / "www" / "jobs.html"
    p = cli(tmp_path, "dashboard", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert str(out) in p.stdout.decode()
    assert 'id="job-tiny"' in out.read_text()


# --- a real browser ------------------------------------------------------------------------


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0"]  # the console, CSP violations included  # fmt: skip
    env = dict(os.environ, TZ="Asia/Tokyo")
    return subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90, env=env
    )


def test_in_a_browser_the_page_renders_and_no_payload_runs(
    hostile_store: Any, tmp_path: Path
) -> None:
    path = tmp_path / "dashboard.html"
    write_dashboard(hostile_store, str(path), now=NOW)
    shot = tmp_path / "dashboard.png"
    done = chromium(
        tmp_path, "--virtual-time-budget=3000", "--dump-dom", f"--screenshot={shot}",
        "--window-size=1280,2000", path.as_uri(),
    )  # fmt: skip
    dom = done.stdout
    # our style and script are allowed by their hashes: the browser blocked nothing
    assert "violates the following Content Security Policy" not in done.stderr
    assert 'id="job-evil"' in dom and 'id="job-backup"' in dom
    assert "PWNED" not in re.search(r"<title>(.*?)</title>", dom)[1]
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom)[0]
    assert 'id="injected' not in dom and "<img" not in dom and "<svg onload" not in dom
    # our own script did run under the CSP: times are in the reader's zone, UTC on hover
    assert "times in Asia/Tokyo" in dom
    assert re.search(r'<time data-t="[\d.]+" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">', dom)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    keep = os.environ.get("CRONWATCH_SCREENSHOT_DIR")
    if keep:  # for a person to look at
        shutil.copy(shot, Path(keep) / "dashboard.png")


def test_in_a_browser_a_live_page_refreshes_itself(db: Any, tmp_path: Path) -> None:
    db.record_run(make_run("first", 60), now=NOW)
    pages = [render_dashboard(db, now=NOW, live=True)]
    db.record_run(make_run("second", 30, Status.FAILED), now=NOW)
    pages.append(render_dashboard(db, now=NOW, live=True))
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the first request gets the old page, later ones the new
            body = pages[min(len(hits), 1)].encode()
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        done = chromium(tmp_path, "--virtual-time-budget=40000", "--dump-dom", url)
        dom = done.stdout
    finally:
        server.shutdown()
        server.server_close()
    assert len(hits) >= 2  # the page fetched itself again (CSP connect-src 'self')
    assert "violates the following Content Security Policy" not in done.stderr
    assert 'id="job-second"' in dom
    assert re.search(r"<title>(.*?)</title>", dom)[1] == "cronwatch: 2 jobs, 1 failing"


def test_in_a_browser_a_framed_static_page_hides_itself(db: Any, tmp_path: Path) -> None:
    """frame-ancestors cannot work from a <meta> tag; the page's own script hides it when
    it is framed (a parent on the same origin reads what the script did)."""
    import functools

    db.record_run(make_run("framed", 60), now=NOW)
    site = tmp_path / "site"
    site.mkdir()
    write_dashboard(db, str(site / "dashboard.html"), now=NOW)
    (site / "frame.html").write_text(
        "<!doctype html><title>parent</title><iframe id=f src=dashboard.html></iframe><script>"
        "document.getElementById('f').onload=function(){var e=this.contentDocument;"
        "document.title='frame:'+(e.documentElement.style.display||'shown')+':'+"
        "(e.getElementById('job-framed')?'rendered':'empty')}</script>"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        framed = chromium(
            tmp_path, "--virtual-time-budget=5000", "--dump-dom", f"{base}/frame.html"
        )
        alone = chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom",
                         f"{base}/dashboard.html")  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert "<title>frame:none:rendered</title>" in framed.stdout
    assert 'id="job-framed"' in alone.stdout and "display: none" not in alone.stdout
