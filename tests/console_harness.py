"""Helpers for the console's tests: a server with users, and a signed-in HTTP client."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from test_server_harness import LiveServer

ADMIN, ADMIN_PASSWORD = "alice", "correct horse battery"
VIEWER, VIEWER_PASSWORD = "victor", "viewer password 1"


def add_user(db: Path, name: str, password: str, role: str = "admin") -> None:
    """Through the real entry point, as the README says."""
    p = subprocess.run(
        [sys.executable, "-m", "cronwatch.main", "user", "add", name, "--role", role,
         "--password-stdin", "--db", str(db)],
        input=password.encode() + b"\n", capture_output=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr


def console_server(db: Path, *extra: str, users: bool = True) -> LiveServer:
    if users:
        add_user(db, ADMIN, ADMIN_PASSWORD)
        add_user(db, VIEWER, VIEWER_PASSWORD, "viewer")
    return LiveServer(db, *extra).start()


def sign_in(url: str, name: str = ADMIN, password: str = ADMIN_PASSWORD) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30)
    r = c.post("/login", data={"name": name, "password": password})
    assert r.status_code == 303, r.text
    return c


def csrf(client: httpx.Client, path: str = "/") -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert m, "no CSRF token on the page"
    return m.group(1)


def error_of(html: str) -> str:
    """The page's error message, unescaped."""
    import html as h

    m = re.search(r'<p class="error" role="alert">(.*?)</p>', html, re.S)
    assert m, "no error on the page"
    return h.unescape(m.group(1))
