"""The server's ASGI application: a raw router in front of everything.

Pings are the hot path, so they are served by plain ASGI code here (no framework, no
per-request objects beyond the parsed ping); the management API is a FastAPI app mounted
under /api/v1 and built on first use; /api/v1/stream, /metrics and /healthz are small
raw handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qs

from cronwatch.app.dashboard import dashboard_csp, render_dashboard
from cronwatch.core.errors import CronwatchError, StoreError
from cronwatch.server.apply import Applier
from cronwatch.server.auth import authorize
from cronwatch.server.events import Broadcaster, StreamLimits, stream
from cronwatch.server.ingest import Writer
from cronwatch.server.loom_events import dialect as loom_dialect
from cronwatch.server.metrics import render
from cronwatch.server.ping import BadPing, accepts_json, parse_ping
from cronwatch.server.pingproc import PingWriters, Reply, reply_for
from cronwatch.server.scheduler import Scheduler
from cronwatch.store import open_store
from cronwatch.store.interface import Store

log = logging.getLogger("cronwatch.server")
T = TypeVar("T")

Scope = dict[str, Any]
_PING_PREFIXES = ("/ping/", "/p/", "/jobs/p/")
_PING_METHODS = frozenset(("GET", "POST", "HEAD"))
# How long /healthz waits for its database read: a load balancer checks about every
# second, and a database that does not answer must not hold the check (or anything else).
HEALTH_DEADLINE = 1.0
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


@dataclass(slots=True)
class Config:
    db: str | None = None
    body_limit: int = 100_000  # bytes of a ping body kept as output
    keepalive: float = 15.0  # seconds between SSE comment lines
    max_streams: int = 1000  # open event streams in all (503 beyond)
    max_streams_per_token: int = 10  # open event streams of one token (429 beyond)
    stream_backlog: int = 1 << 20  # bytes a stream may fall behind before it is dropped
    scheduler: bool = True
    outbox_interval: float = 5.0
    # record pings in a child process (its own GIL, the other core); False: in a thread
    ping_process: bool = True
    ping_writers: int = 1  # processes (PostgreSQL: a few; SQLite: one, its one writer)
    # /metrics lists every job's name and state: a read token unless made public
    public_metrics: bool = False
    # this replica's name in /metrics, the logs and the scheduler's lease (default:
    # host:pid); several replicas may share one database
    replica_id: str = ""
    # seconds the scheduler's leader lease lasts without a renewal: when the leader
    # dies, another replica takes over within about this long
    leader_ttl: float = 5.0
    # seconds between the event streams' looks for other processes' events (a test
    # knob, $CRONWATCH_EVENT_POLL: PostgreSQL's notifications wake them sooner)
    event_poll: float = 1.0
    # the console: seconds a sign-in lasts; a header naming the signed-in user, set by an
    # SSO proxy in front (None: off; see docs/console.md for what trusting it means)
    session_ttl: float = 12 * 3600.0
    trusted_user_header: str | None = None


class Server:
    """Shared state of one server process: stores, the writer, counters."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.writer_store: Store | None = None
        self.reader: Store | None = None
        # /healthz's own store, used by one worker thread at a time: the probe in flight,
        # which every check shares while the database takes its time
        self.health_store: Store | None = None
        self._probe: asyncio.Future[None] | None = None
        self._page: str | None = None  # the last dashboard page, for incremental renders
        self.writer: Writer | None = None
        self.applier: Applier | None = None
        self.pings: PingWriters | None = None
        self.project_key = ""
        self.counters: Counter[str] = Counter()
        self.started = time.time()
        self.replica = config.replica_id or f"{socket.gethostname()}:{os.getpid()}"
        # the lease names this process, not just the replica: two processes given the
        # same --replica-id by mistake must never both lead
        self.holder = f"{self.replica}#{secrets.token_hex(4)}"
        self.api: Any = None
        self.loom: Any = None  # Loom's /api/crons, built on first use like /api/v1
        self.cronitor: Any = None
        self.hub: Any = None
        self.scheduler: Any = None
        self.console: Any = None
        self.console_secret = b""  # signs badge URLs (and trusted-header CSRF tokens)
        limit = (b"ping-body-limit", str(config.body_limit).encode())
        self._text = [limit, *_TEXT]
        self._json = [limit, (b"content-type", b"application/json")]
        self.ok_headers = [*self._text, (b"content-length", b"2")]  # most replies are b"OK"
        self._not_allowed = [*self._text, (b"allow", b"GET, POST, HEAD")]
        # the usual ping answer, for the default headers it was built with (see ping_bytes)
        self._plain: tuple[object, bytes] = (None, b"")

    # --- lifespan ------------------------------------------------------------------------
    async def startup(self) -> None:
        self.writer_store = open_store(self.config.db)
        self.reader = open_store(self.config.db)
        self.project_key = self.writer_store.project_ping_key()
        self.console_secret = _console_secret(self.writer_store)
        if self.writer_store.count_users() == 0:
            log.warning("no console user yet: create the first with "
                        "'cronwatch user add NAME --role admin', then sign in at /")  # fmt: skip
        limits = StreamLimits(per_token=self.config.max_streams_per_token,
                              total=self.config.max_streams, backlog=self.config.stream_backlog)  # fmt: skip
        self.hub = Broadcaster(self.reader, limits, keepalive=self.config.keepalive,
                               poll=self.config.event_poll)  # fmt: skip
        self.hub.dialects["loom"] = loom_dialect(self.reader)
        self.hub.start()
        if self.config.ping_process:
            self.pings = PingWriters(
                self.writer_store.url, self._committed, self.config.ping_writers
            )
            await self.pings.start()
            self.writer = Writer(self.writer_store)  # the API's and the scheduler's writes
        else:
            self.applier = Applier(self.project_key)
            self.writer = Writer(self.writer_store, cache=self.applier)
        self.writer.start(asyncio.get_running_loop())
        self.writer.after_commit.append(self.hub.wake)
        if self.config.scheduler:
            self.scheduler = Scheduler(self)
            self.scheduler.start()

    def _committed(self, n: int) -> None:
        """The ping writer process committed ``n`` pings: count it as the writer's, wake
        the SSE streams."""
        if self.writer is not None:
            self.writer.batches += 1
            self.writer.ops += n
        self.hub.wake()

    async def close_streams(self) -> None:
        """End every event stream: the ASGI server waits for open responses to end before
        it shuts the application down."""
        if self.hub is not None:
            await self.hub.close()

    async def shutdown(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self.close_streams()
        if self.pings is not None:
            await self.pings.stop()
        if self.writer is not None:
            self.writer.stop()
        if self.console is not None:
            self.console.close()
        for s in (self.writer_store, self.reader):
            if s is not None:
                s.close()
        if self.health_store is not None and (self._probe is None or self._probe.done()):
            self.health_store.close()  # one still in a probe's thread is left to exit

    # --- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(_PING_PREFIXES):
                await self.ping(scope, receive, send)
            elif path.startswith("/api/v1"):
                if path == "/api/v1/stream":
                    await stream(self, scope, receive, send)
                else:
                    # mounted: routes see the path below /api/v1 (Starlette strips root_path)
                    scope = dict(scope, root_path=scope.get("root_path", "") + "/api/v1")
                    await self.api_app()(scope, receive, send)
            elif path.startswith("/api/crons/") or path == "/api/crons":
                if path == "/api/crons/stream":  # Loom's event names and fields
                    await stream(self, scope, receive, send, dialect="loom")
                else:
                    scope = dict(scope, root_path=scope.get("root_path", "") + "/api/crons")
                    await self.loom_app()(scope, receive, send)
            elif path.startswith(("/api/monitors", "/api/cronitor/")):
                # Cronitor's Monitor API (server/cronitor_api.py), its document included
                scope = dict(scope, root_path=scope.get("root_path", "") + "/api")
                await self.cronitor_app()(scope, receive, send)
            elif path == "/healthz":
                await self.healthz(send)
            elif path == "/dashboard" or (path == "/" and _has_token(scope["query_string"])):
                await self.dashboard(scope, send)
            elif path == "/metrics":
                await self.metrics(scope, send)
            else:  # the console: its pages, its 404
                await self.console_app()(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def write(
        self, op: Callable[[Store], T], touch: str | None = None, *, deliver: bool = False
    ) -> T:
        """``op`` on the writer (the management APIs' and the console's writes). ``touch``:
        a job whose settings or runs changed, so may its deadline; ``deliver``: alerts
        the write queued go out now, not at the outbox's next poll."""
        result = await self.writer.run(op)  # type: ignore[union-attr]
        if self.scheduler is not None:
            if touch is not None:
                self.scheduler.touch(touch)
            if deliver:
                self.scheduler.deliver_now.set()
        return result

    def api_app(self) -> Any:
        if self.api is None:
            # FastAPI and pydantic are the heaviest imports: loaded by the first API request
            from cronwatch.server.api import build_api

            self.api = build_api(self)
        return self.api

    def loom_app(self) -> Any:
        if self.loom is None:
            from cronwatch.server.loom import build_loom

            self.loom = build_loom(self)
        return self.loom

    def cronitor_app(self) -> Any:
        if self.cronitor is None:
            from cronwatch.server.cronitor_api import build_cronitor_api

            self.cronitor = build_cronitor_api(self)
        return self.cronitor

    def console_app(self) -> Any:
        if self.console is None:
            # Jinja2 and the templates: loaded by the first page, not by a ping server
            from cronwatch.server.console import build_console

            self.console = build_console(self)
        return self.console

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def dashboard(self, scope: Scope, send: Any) -> None:
        """The live dashboard: the static page's renderer, refreshing itself in place.

        Job output is sensitive, so it takes a token like the API; a browser cannot send
        a header, so ``?token=`` works too (use a read-only token). Deprecated by the
        console (sign in at /): a token in a URL ends up in histories and logs; it stays
        for one release.
        """
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        token = (query.get("token") or [""])[0]
        try:
            authorize(self, header or (f"Bearer {token}" if token else None), write=False)
        except CronwatchError as e:
            body = (f"{e}\nSign in to the console at / instead (cronwatch user add NAME); "
                    "the deprecated /dashboard?token=TOKEN takes a token from "
                    "'cronwatch token create --read-only NAME'.\n").encode()  # fmt: skip
            await respond(send, 401, body, _TEXT)
            return
        if not self.counters["dashboard_token_used"]:
            log.warning("/dashboard?token= is deprecated and goes in the next release: "
                        "sign in to the console at / instead")  # fmt: skip
        self.counters["dashboard_token_used"] += 1
        page = await asyncio.to_thread(self._render_dashboard)
        await respond(send, 200, page.encode("utf-8"), [
            (b"deprecation", b"true"),
            (b"link", b'</>; rel="successor-version"'),
            (b"content-type", b"text/html; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"content-security-policy", _DASHBOARD_CSP),
            (b"x-frame-options", b"DENY"),  # frame-ancestors' older spelling
            (b"referrer-policy", b"no-referrer"),  # the token is in the URL
        ])  # fmt: skip

    def _render_dashboard(self) -> str:
        # In a worker thread with its own connection: rendering takes tens of milliseconds
        # and must not stall pings on the event loop.
        with open_store(self.config.db) as store:
            page = render_dashboard(store, now=time.time(), live=True, previous=self._page)
        self._page = page
        return page

    async def metrics(self, scope: Scope, send: Any) -> None:
        """Prometheus text. It names every job and its state, so it takes a token (any,
        read-only is enough: Prometheus sends ``Authorization: Bearer``) unless the server
        runs with --public-metrics."""
        if not self.config.public_metrics:
            header = dict(scope.get("headers", [])).get(b"authorization", b"")
            try:
                authorize(self, header.decode("latin-1") or None, write=False)
            except CronwatchError as e:
                body = json.dumps({"error": str(e)}).encode()
                await respond(send, e.http_status, body, [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="cronwatch"'),
                ])  # fmt: skip
                return
        body = render(self).encode()
        await respond(send, 200, body,
                      [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])  # fmt: skip

    async def healthz(self, send: Any) -> None:
        """For a load balancer, without a token: 200 when this replica can read the
        database and its ping writer runs, else 503 (take it out of the pool). Cheap: one
        indexed read on a connection of its own, in a worker thread: a database that
        does not answer (stopped, frozen, cut off) gets 503 within HEALTH_DEADLINE."""
        problem = await self._database_problem()
        if not problem and self.pings is not None and not self.pings.alive():
            problem = "the ping writer process is not running"
        # no replica name here: it holds the host's name, and this answers anyone
        # (/metrics, behind a token, has it)
        body: dict[str, Any] = {"leader": self.leads()}
        if problem:
            body.update(status="error", error=problem)
            await respond(send, 503, json.dumps(body).encode(),
                          [(b"content-type", b"application/json"),
                           (b"cache-control", b"no-store")])  # fmt: skip
            return
        body.update(status="ok", uptime=round(time.time() - self.started, 3))
        await respond(send, 200, json.dumps(body).encode(),
                      [(b"content-type", b"application/json"), (b"cache-control", b"no-store")])  # fmt: skip

    async def _database_problem(self) -> str:
        probe = self._probe
        if probe is None or probe.done():
            probe = self._probe = asyncio.ensure_future(asyncio.to_thread(self._read_database))
            # a check that gave up on it never looks at its outcome
            probe.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            # shielded: a check that gives up leaves the probe to the next (one thread
            # at most waits on a database that does not answer)
            await asyncio.wait_for(asyncio.shield(probe), HEALTH_DEADLINE)
        except TimeoutError:
            return f"database unreachable: no answer in {HEALTH_DEADLINE:g} s"
        except Exception as e:  # whatever the driver raises: the database is not usable
            return f"database unreachable: {e}"
        return ""

    def _read_database(self) -> None:
        if self.health_store is None:
            self.health_store = open_store(self.config.db)
        self.health_store.get_meta("schema_version")

    def leads(self) -> bool:
        """Whether this replica runs the scheduler now (holds its lease)."""
        return self.scheduler is not None and bool(self.scheduler.holds_lease())

    # --- pings ------------------------------------------------------------------------------
    async def ping(self, scope: Scope, receive: Any, send: Any) -> None:
        """A ping through ASGI (with `--front fast`, server.front answers most pings itself): forward,
        await the commit, answer."""
        method = scope["method"]
        counters = self.counters
        counters["pings_received"] += 1
        if method not in _PING_METHODS:
            counters["ping_errors"] += 1
            await respond(send, 405, b"method not allowed", self._not_allowed)
            return
        if _encoded_slash(scope):
            counters["ping_errors"] += 1
            await respond(send, 404, b"not found", _TEXT)
            return
        body = None
        if method == "POST":
            body = await read_body(receive, self.config.body_limit)
            if body is None:  # the client left (or was cut off) mid-body: it gets no
                return  # answer, so nothing is recorded
        query: bytes = scope["query_string"]
        if _accepts_json(scope):  # Loom's SDKs: the check-in id as JSON (server/ping.py)
            query += b"&format=json" if query else b"format=json"
        if self.pings is not None:  # the usual case: the ping writer process
            fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            # the client's address and port: one connection's pings, one writer
            self.submit_ping(scope["path"], query, body, fut.set_result,
                             hash(scope.get("client")))  # fmt: skip
            reply = await fut
        else:
            reply = await self._ping_here(dict(scope, query_string=query), body)
        status, out, headers = self.ping_answer(method == "HEAD", reply)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    def submit_ping(
        self,
        path: str,
        query: bytes,
        body: bytes | None,
        done: Callable[[Reply], None],
        affinity: int = 0,
    ) -> None:
        """Forward a ping to a writer process (``affinity``: its connection's, whose pings
        all go to the same writer); ``done(reply)`` once it is committed (or with a 503
        reply if the writer is not there)."""
        pings = self.pings
        try:
            if pings is None:
                raise StoreError("the ping writer is not running")
            pings.submit(path, query, body, done, affinity)
        except StoreError as e:
            done((0, 503, str(e).encode(), False, "", "", False))

    def ping_answer(self, head: bool, reply: Reply) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Count an answered ping, tell the scheduler, and give (status, body, headers)."""
        _, status, out, is_json, job, dialect, deliver = reply
        counters = self.counters
        if dialect:
            counters["pings_" + dialect] += 1
        if status != 200:
            counters["ping_errors"] += 1
            body = b"" if head else out
            return status, body, [*self._text, (b"content-length", str(len(body)).encode())]
        if self.scheduler is not None:
            self.scheduler.touch(job)
            if deliver:
                self.scheduler.deliver_now.set()  # alerts go out now, not at the next poll
        if out == b"OK":
            headers = self.ok_headers
        else:
            headers = [*(self._json if is_json else self._text),
                       (b"content-length", str(len(out)).encode())]  # fmt: skip
        return 200, b"" if head else out, headers

    def ping_bytes(
        self, default_headers: list[tuple[bytes, bytes]], head: bool, close: bool, reply: Reply
    ) -> bytes:
        """A ping's whole HTTP answer, as uvicorn's response cycle would write it (its
        default headers first: date and server), for the protocols that answer pings
        without the ASGI cycle (``server.limits``, ``server.front``)."""
        status, body, headers = self.ping_answer(head, reply)
        plain = headers is self.ok_headers and not head and not close and body == b"OK"
        if plain and self._plain[0] is default_headers:
            return self._plain[1]  # the usual answer, built once a second (the date changes)
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        lines.extend(b"%s: %s\r\n" % (k, v) for k, v in default_headers)
        lines.extend(b"%s: %s\r\n" % (k, v) for k, v in headers)
        if close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        if not head:
            lines.append(body)
        data = b"".join(lines)
        if plain:
            self._plain = (default_headers, data)
        return data

    async def _ping_here(self, scope: Scope, body: bytes | None) -> Reply:
        """Record a ping with the in-process writer thread (no ping writer process)."""
        try:
            p = parse_ping(scope["path"], scope["query_string"].decode("latin-1"))
        except (BadPing, ValueError) as e:  # ValueError: parse_qsl's limit on fields
            return 0, 400, str(e).encode(), False, "", "", False
        if p is None:
            return 0, 404, b"not found", False, "", "", False
        apply = self.applier.apply  # type: ignore[union-attr]
        try:
            result = await self.writer.run(  # type: ignore[union-attr]
                lambda store: apply(store, p, body), cache_aware=True
            )
            ok, value = True, result
        except Exception as e:
            ok, value = False, e
        status, out, is_json, job, deliver = reply_for(p, ok, value)
        return 0, status, out, is_json, job, p.dialect, deliver


def _accepts_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return accepts_json(value)
    return False


def _has_token(query: bytes) -> bool:
    """``/?token=`` is the deprecated dashboard; any other ``/`` is the console."""
    return b"token=" in query and "token" in parse_qs(query.decode("latin-1"))


def _encoded_slash(scope: Scope) -> bool:
    """True if the request path has a percent-encoded "/" (the ASGI path has it decoded).

    ``/ping/KEY%2Ffail`` must not read as ``/ping/KEY/fail``: a key, a slug or an exit
    status never contains "/", so such a path names no ping (404)."""
    raw = scope.get("raw_path")
    return raw is not None and b"%2f" in raw.lower()


async def read_body(receive: Any, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the request body; the rest is never buffered. None if
    the client went away before the body (or the limit) was reached."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body[:limit]


# The page's own policy (hashes of its constant style and script), as a header: there
# frame-ancestors holds, which a <meta> tag cannot do.
_DASHBOARD_CSP = dashboard_csp(live=True).encode()


async def respond(
    send: Any,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    length: int | None = None,
) -> None:
    n = len(body) if length is None else length
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(n).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _console_secret(store: Store) -> bytes:
    """The server's own secret for badge URLs, made once and kept in the database so that
    badge URLs outlive restarts and are the same on every replica."""
    import secrets

    value = store.get_meta("console_secret")
    if not value:
        value = store.add_meta("console_secret", secrets.token_hex(32))
    return bytes.fromhex(value)


def create_app(config: Config | None = None) -> Server:
    """The ASGI app for ``cronwatch serve`` (or any ASGI server)."""
    return Server(config or Config())
