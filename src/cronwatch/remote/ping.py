"""Remote reporting: the ping wire format, and the wrapper's start and finish pings.

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
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cronwatch.remote.transport import DEFAULT_TIMEOUT, Settings, Transport, UrllibTransport

if TYPE_CHECKING:
    from cronwatch.core.model import Run

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


# --- the wrapper's hooks -------------------------------------------------------------------


def settings_for(o: Any) -> Settings | None:
    """The wrapper's remote settings (--server/--key, environment, config), None if local."""
    s = Settings.resolve(server=o.server, key=o.key, config=o.config)
    return s if s.server and s.key else None


class _Start:
    """The start ping, sent on a thread; ``state`` says what became of it."""

    def __init__(self, ping: Ping, settings: Settings) -> None:
        self.ping = ping
        self.settings = settings
        self.state = "pending"  # -> sent | rejected | failed | queued; or abandoned by on_finish
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, name="cronwatch-start", daemon=True)

    def run(self) -> None:
        from cronwatch.remote import outbox

        try:
            outcome, _ = outbox.submit(self.ping, transport=self.settings.transport,
                                       timeout=self.settings.timeout, keep=False)  # fmt: skip
        except Exception:
            outcome = "failed"
        with self.lock:
            if self.state == "pending":
                self.state = outcome


_starts: dict[str, _Start] = {}


def on_start(o: Any, run_id: str, started_at: float) -> None:
    """Send the start ping in the background; returns at once. Never raises."""
    try:
        s = settings_for(o)
        if s is None:
            return
        p = Ping(server=s.server, key=s.key, state="run", rid=run_id, slug=o.name,
                 dialect=s.dialect, env=o.env or "", at=started_at)  # fmt: skip
        start = _starts[run_id] = _Start(p, s)
        start.thread.start()
    except Exception:  # on_finish reports what is wrong with the settings
        pass


def on_finish(o: Any, run: Run, res: Any) -> None:
    """Deliver the start (if still due) and the finish ping within the timeout; whatever
    is not delivered goes to the outbox. Also replays the outbox. Never raises."""
    try:
        _finish(o, run)
    except Exception as e:
        _warn(f"remote report failed: {e}")


def _finish(o: Any, run: Run) -> None:
    from cronwatch.remote import outbox

    s = settings_for(o)
    if s is None:
        if o.server or o.key:
            _warn("remote reporting needs both a server URL and a ping key "
                  "(--server/--key, CRONWATCH_URL/CRONWATCH_KEY or [server] in the config)")  # fmt: skip
        if outbox.has_pending():  # left from earlier runs: deliver them now if we can
            outbox.flush(timeout=DEFAULT_TIMEOUT, deadline=time.monotonic() + DEFAULT_TIMEOUT)
        return
    deadline = time.monotonic() + s.timeout
    start = _starts.pop(run.id, None)
    if start is not None:
        start.thread.join(max(0.0, deadline - time.monotonic()))
        with start.lock:
            state, start.state = start.state, "abandoned"
        if state == "rejected":
            outbox.spool(start.ping, failed=True)
        elif state != "sent":  # failed, queued behind older pings, or still on its way
            outbox.spool(start.ping)  # then the finish queues behind it: order is kept
    body = None
    if getattr(o, "send_output", False):
        body = _output(run.stdout, run.stderr)
    finish = Ping(server=s.server, key=s.key, state="complete" if run.status == "success" else "fail",
                  rid=run.id, slug=o.name, dialect=s.dialect, exit_code=run.exit_code,
                  duration=run.duration, message=run.message, env=o.env or "", body=body,
                  at=run.ended_at or time.time())  # fmt: skip
    outcome, detail = outbox.submit(finish, transport=s.transport, timeout=s.timeout,
                                    deadline=deadline)  # fmt: skip
    if outcome == "rejected":
        _warn(f"{s.server} refused the ping for {o.name} ({detail}): check the key; "
              f"kept aside in {outbox.directory()}")  # fmt: skip
    elif outcome != "sent":
        why = f" ({detail})" if detail else ""
        _warn(f"could not reach {s.server}{why}; the run's pings wait in {outbox.directory()} "
              "for the next run or `cronwatch flush`")  # fmt: skip


def _output(stdout: bytes | None, stderr: bytes | None) -> bytes:
    """stdout, then stderr, capped like a server keeps them (head and tail)."""
    from cronwatch.core.values import cap_bytes

    out, err = stdout or b"", stderr or b""
    if out and err:
        data = out + (b"" if out.endswith(b"\n") else b"\n") + b"--- stderr ---\n" + err
    else:
        data = out or err
    return cap_bytes(data, BODY_LIMIT)


def _warn(message: str) -> None:
    from cronwatch.wrapper.record import warn  # one line on stderr, never raises

    warn(message)
