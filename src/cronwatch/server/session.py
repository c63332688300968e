"""Who is signed in to the console: session cookies, CSRF tokens, the sign-in rate limit,
and the opt-in trusted header of an SSO proxy.

The session id lives only in an HttpOnly, SameSite=Lax cookie (Secure over HTTPS); the
store keeps its sha256. Every write form carries the session's CSRF token, compared in
constant time; SameSite alone would leave older browsers and same-site subdomains open.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from cronwatch.app.users import session_digest
from cronwatch.store.interface import Store

COOKIE = "cw_session"
# Failed sign-ins allowed in WINDOW seconds: per user name (a guesser of one account) and
# per client address (one guesser trying many accounts).
WINDOW = 15 * 60.0
PER_USER = 5
PER_ADDRESS = 20


@dataclass(slots=True)
class Viewer:
    """The signed-in person of a request."""

    name: str
    role: str
    csrf: str
    session: str = ""  # the cookie's session id ("" for the trusted header)

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def header(scope: Mapping[str, Any], name: bytes) -> str:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return ""


def session_id(scope: Mapping[str, Any]) -> str:
    raw = header(scope, b"cookie")
    if not raw:
        return ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed cookie header is no session, never a 500
        return ""
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else ""


def is_https(scope: Mapping[str, Any]) -> bool:
    return scope.get("scheme") == "https"


def cookie_header(value: str, *, https: bool, max_age: int) -> bytes:
    secure = "; Secure" if https else ""
    return (f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
            f"{secure}").encode("latin-1")  # fmt: skip


def viewer_of(server: Any, scope: Mapping[str, Any]) -> Viewer | None:
    """The request's signed-in person, from the trusted header (when configured and the
    user exists) or the session cookie; None when nobody is signed in."""
    trusted = server.config.trusted_user_header
    if trusted:
        name = header(scope, trusted.lower().encode("latin-1")).strip()
        if name:
            user = server.reader.get_user(name)
            if user is None:
                return None
            return Viewer(user["name"], user["role"], trusted_csrf(server, user["name"]))
    sid = session_id(scope)
    if not sid or len(sid) > 200:
        return None
    s = server.reader.get_session(session_digest(sid), now=time.time())
    if s is None:
        return None
    return Viewer(s["user"], s["role"], s["csrf"], sid)


def trusted_csrf(server: Any, name: str) -> str:
    """A CSRF token for a user the proxy names: no session row to keep it in, so it is
    derived from the server's secret and the name."""
    return hmac.new(server.console_secret, b"csrf:" + name.encode(), "sha256").hexdigest()


def csrf_ok(viewer: Viewer, sent: str) -> bool:
    return bool(sent) and hmac.compare_digest(viewer.csrf.encode(), sent.encode("utf-8", "replace"))


class SignInLimit:
    """Failed sign-ins per user name and per address in a sliding window, counted in the
    store: every replica behind a load balancer counts the same failures (a guesser gets
    no more tries from more replicas), and a restart forgets none."""

    def __init__(self, per_user: int = PER_USER, per_address: int = PER_ADDRESS,
                 window: float = WINDOW) -> None:  # fmt: skip
        self.limits = {"user": per_user, "address": per_address}
        self.window = window

    @staticmethod
    def keys(user: str, address: str) -> list[tuple[str, str]]:
        return [("user", user.lower()), ("address", address)]

    def retry_after(self, store: Store, user: str, address: str, now: float) -> float:
        """Seconds until a sign-in may be tried again (0: now)."""
        found = store.sign_in_failures(self.keys(user, address), since=now - self.window)
        wait = 0.0
        for (kind, _value), (n, oldest) in found.items():
            if n >= self.limits[kind]:  # until the oldest of them leaves the window
                wait = max(wait, oldest + self.window - now)
        return wait

    def failed(self, user: str, address: str, now: float) -> Callable[[Store], None]:
        """The write that records a failed sign-in (and forgets those past the window)."""
        keys = self.keys(user, address)
        return lambda store: store.add_sign_in_failure(
            keys, at=now, forget_before=now - self.window
        )
