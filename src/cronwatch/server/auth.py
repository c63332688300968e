"""Bearer tokens for the management API. Only a token's sha256 is stored."""

from __future__ import annotations

import time
from typing import Any

from cronwatch.core.errors import CronwatchError


class Unauthorized(CronwatchError):
    http_status = 401


class Forbidden(CronwatchError):
    http_status = 403


def authorize(server: Any, authorization: str | None, *, write: bool) -> dict[str, Any]:
    """The token record for an ``Authorization: Bearer ...`` header, or raise 401/403."""
    if not authorization or not authorization[:7].lower() == "bearer ":
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer TOKEN'")
    token: dict[str, Any] | None = server.reader.check_token(authorization[7:].strip())
    if token is None:
        raise Unauthorized("invalid token")
    if write and token["read_only"]:
        raise Forbidden(f"token {token['name']!r} is read-only")
    now = time.time()
    last = token["last_used_at"]
    if (last is None or now - last > 60) and server.writer is not None:
        # at most once a minute a token, and not awaited: auth must not wait for a commit
        name = token["name"]
        server.writer.run(lambda store: store.touch_token(name, now=now))
    return token
