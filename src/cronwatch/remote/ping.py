"""Remote reporting: the ping wire format and its delivery (the wrapper's hooks are in
``cronwatch.remote.hooks``).

The URL depends on the key and the server's dialect:

    job key      {server}/ping/{key}/start?rid=RID
                 {server}/ping/{key}/{exit code}?rid=RID       (or /fail; POST body = output)
    project key  {server}/ping/{project key}/{job}/start?create=1&rid=RID   (and so on)
    simob        {server}/jobs/p/{key}?state=run|complete|fail&rid=RID&exit_code=N

``message``, ``metric=duration:SECONDS`` and ``env`` ride along (servers that do not know
them ignore them). Whether a key is a job's or the project's is learnt on first use (a 404
on one form tries the other) and remembered.

The wrapper calls ``on_start`` right after the child is spawned (the start ping goes out on
a thread: neither the child nor the supervision loop waits) and ``on_finish`` after the
local record. Neither raises; what is not delivered within the timeout goes to the outbox
(``cronwatch.remote.outbox``) for a later run or ``cronwatch flush``.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cronwatch.remote.transport import DEFAULT_TIMEOUT, Transport, UrllibTransport

if TYPE_CHECKING:
    pass

MESSAGE_LIMIT = 2000
BODY_LIMIT = 100_000  # what `cronwatch serve` keeps of a ping body by default
PERMANENT = frozenset({400, 401, 403, 404, 405, 410, 413, 414, 422})  # retrying cannot help


class BadServer(ValueError):
    """The server URL can never work (not http/https): not worth retrying."""


@dataclass(slots=True)
class Ping:
    """One ping as sent, and as kept in the outbox (``to_json``/``from_json`` round-trip)."""

    server: str
    key: str
    state: str  # run | complete | fail
    rid: str = ""
    slug: str = ""  # the job name, used with a project key
    kind: str = "auto"  # job | project | auto (find out; needs slug)
    dialect: str = ""
    exit_code: int | None = None
    duration: float | None = None
    message: str = ""
    env: str = ""
    body: bytes | None = None
    at: float = 0.0  # when it happened, by our clock

    def to_json(self) -> bytes:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["body"] = None if self.body is None else base64.b64encode(self.body).decode()
        return json.dumps(d).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Ping:
        d = json.loads(data)
        if d.get("body") is not None:
            d["body"] = base64.b64decode(d["body"])
        return cls(**{k: v for k, v in d.items() if k in cls.__slots__})  # newer fields: skip

    @property
    def origin(self) -> str:
        """scheme://host:port: the pings to one origin are delivered in order."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(self.server.strip())
        except ValueError:
            return self.server
        return f"{parts.scheme}://{parts.netloc}".lower()


def endpoint(server: str, dialect: str = "") -> tuple[str, str]:
    """(URL prefix, dialect) for a server URL as a user gives it."""
    from urllib.parse import urlsplit

    s = server.strip().rstrip("/")
    try:
        parts = urlsplit(s)
    except ValueError:
        raise BadServer(f"invalid server URL {server!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadServer(f"invalid server URL {server!r}: expected http(s)://HOST[:PORT][/PATH]")
    if dialect not in ("", "healthchecks", "simob"):
        raise BadServer(f"unknown dialect {dialect!r}: expected healthchecks or simob")
    if dialect == "simob" or (not dialect and s.endswith("/jobs/p")):
        return (s if s.endswith("/jobs/p") else s + "/jobs/p"), "simob"
    return s.removesuffix("/ping"), "healthchecks"


def api_base(server: str) -> str:
    """Where the management API of a cronwatch server is (for job settings)."""
    prefix, dialect = endpoint(server)
    return (prefix.removesuffix("/jobs/p") if dialect == "simob" else prefix) + "/api/v1"


def ping_url(p: Ping, kind: str) -> str:
    from urllib.parse import quote, urlencode

    prefix, dialect = endpoint(p.server, p.dialect)
    code = p.exit_code if p.exit_code is not None and 0 <= p.exit_code <= 255 else None
    q: list[tuple[str, str]] = []
    if dialect == "simob":
        url = f"{prefix}/{quote(p.key, safe='')}"
        q.append(("state", p.state))
        if p.state != "run" and code is not None:
            q.append(("exit_code", str(code)))
    else:
        url = f"{prefix}/ping/{quote(p.key, safe='')}"
        if kind == "project":
            url += "/" + quote(p.slug, safe="")
            q.append(("create", "1"))
        if p.state == "run":
            url += "/start"
        elif p.state == "fail":
            url += f"/{code}" if code else "/fail"
        else:
            url += f"/{0 if code is None else code}"
    for name, value in (("rid", p.rid), ("env", p.env)):
        if value:
            q.append((name, value))
    if p.state != "run":
        if p.message:
            q.append(("message", p.message[:MESSAGE_LIMIT]))
        if p.duration is not None and p.duration >= 0:
            q.append(("metric", f"duration:{p.duration:.3f}"))
    return url + "?" + urlencode(q)


def send(
    p: Ping, *, transport: Transport | None = None, timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = None,
) -> int:  # fmt: skip
    """Send one ping; return the HTTP status of the answer.

    Raises OSError (TimeoutError included) when no answer came in time, BadServer when the
    URL can never work. With kind "auto" a 404 on one URL form tries the other.
    """
    from cronwatch._version import __version__
    from cronwatch.remote.transport import remember_key_kind

    transport = transport or UrllibTransport()
    deadline = time.monotonic() + timeout if deadline is None else deadline
    kinds = _kinds(p)
    headers = {"User-Agent": f"cronwatch/{__version__}"}
    if p.body is not None:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    status = 0
    for i, kind in enumerate(kinds):
        url = ping_url(p, kind)
        left = min(timeout, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError("no time left to send")
        status, _ = transport.send("GET" if p.body is None else "POST", url, p.body, headers, left)
        if status == 404 and i + 1 < len(kinds):
            continue
        if p.kind == "auto" and 200 <= status < 300:
            remember_key_kind(p.origin, p.key, kind)
        return status
    return status


def _kinds(p: Ping) -> list[str]:
    if p.kind != "auto":
        return [p.kind]
    if endpoint(p.server, p.dialect)[1] == "simob" or not p.slug:
        return ["job"]
    from cronwatch.remote.transport import key_kind

    known = key_kind(p.origin, p.key)
    return [known] if known else ["project", "job"]  # a project key creates the job
