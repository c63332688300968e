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
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..errors import CronwatchError, NotFound, StoreError
from ..store import open_store
from ..store.base import Store
from .ingest import Writer
from .ping import BadPing, apply_ping, parse_ping

log = logging.getLogger("cronwatch.server")

Scope = dict[str, Any]
_PING_PREFIXES = ("/ping/", "/p/", "/jobs/p/")
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


@dataclass(slots=True)
class Config:
    db: str | None = None
    body_limit: int = 100_000  # bytes of a ping body kept as output
    keepalive: float = 15.0  # seconds between SSE comment lines
    scheduler: bool = True
    outbox_interval: float = 5.0


class Server:
    """Shared state of one server process: stores, the writer, counters."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.writer_store: Store | None = None
        self.reader: Store | None = None
        self.writer: Writer | None = None
        self.project_key = ""
        self.counters: Counter[str] = Counter()
        self.started = time.time()
        self.api: Any = None
        self.hub: Any = None
        self.scheduler: Any = None
        self._limit_header = (b"ping-body-limit", str(config.body_limit).encode())

    # --- lifespan ------------------------------------------------------------------------
    async def startup(self) -> None:
        from .events import Hub

        self.writer_store = open_store(self.config.db)
        self.reader = open_store(self.config.db)
        self.project_key = self.writer_store.project_ping_key()
        self.writer = Writer(self.writer_store)
        self.writer.start(asyncio.get_running_loop())
        self.hub = Hub(self)
        self.writer.after_commit.append(self.hub.wake)
        if self.config.scheduler:
            from .scheduler import Scheduler

            self.scheduler = Scheduler(self)
            self.scheduler.start()

    async def shutdown(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.hub is not None:
            self.hub.close()
        if self.writer is not None:
            self.writer.stop()
        for s in (self.writer_store, self.reader):
            if s is not None:
                s.close()

    # --- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(_PING_PREFIXES):
                await self.ping(scope, receive, send)
            elif path.startswith("/api/v1"):
                if path == "/api/v1/stream":
                    from .events import stream

                    await stream(self, scope, receive, send)
                else:
                    # mounted: routes see the path below /api/v1 (Starlette strips root_path)
                    scope = dict(scope, root_path=scope.get("root_path", "") + "/api/v1")
                    await self.api_app()(scope, receive, send)
            elif path == "/healthz":
                await self.healthz(send)
            elif path == "/metrics":
                from .metrics import render

                body = render(self).encode()
                await respond(send, 200, body,
                              [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])  # fmt: skip
            else:
                await respond(send, 404, b"not found", _TEXT)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    def api_app(self) -> Any:
        if self.api is None:
            from .api import build_api

            self.api = build_api(self)
        return self.api

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

    async def healthz(self, send: Any) -> None:
        try:
            self.reader.get_meta("schema_version")  # type: ignore[union-attr]
        except CronwatchError as e:
            await respond(send, 503, json.dumps({"status": "error", "error": str(e)}).encode(),
                          [(b"content-type", b"application/json")])  # fmt: skip
            return
        body = {"status": "ok", "uptime": round(time.time() - self.started, 3)}
        await respond(
            send, 200, json.dumps(body).encode(), [(b"content-type", b"application/json")]
        )

    # --- pings ------------------------------------------------------------------------------
    async def ping(self, scope: Scope, receive: Any, send: Any) -> None:
        headers = [self._limit_header, *_TEXT]
        method = scope["method"]
        head = method == "HEAD"
        self.counters["pings_received"] += 1
        if method not in ("GET", "POST", "HEAD"):
            self.counters["ping_errors"] += 1
            await respond(
                send, 405, b"method not allowed", [*headers, (b"allow", b"GET, POST, HEAD")]
            )
            return
        try:
            p = parse_ping(scope["path"], scope["query_string"].decode("latin-1"))
        except BadPing as e:
            self.counters["ping_errors"] += 1
            await respond(send, 400, b"" if head else str(e).encode(), headers)
            return
        if p is None:
            self.counters["ping_errors"] += 1
            await respond(send, 404, b"" if head else b"not found", headers)
            return
        self.counters["pings_" + p.dialect] += 1
        body = await read_body(receive, self.config.body_limit) if method == "POST" else None
        try:
            result = await self.writer.run(  # type: ignore[union-attr]
                lambda store: apply_ping(store, p, body, self.project_key)
            )
        except NotFound:
            self.counters["ping_errors"] += 1
            await respond(send, 404, b"" if head else b"not found", headers)
            return
        except StoreError as e:
            self.counters["ping_errors"] += 1
            await respond(send, 503, b"" if head else str(e).encode(), headers)
            return
        except CronwatchError as e:
            self.counters["ping_errors"] += 1
            await respond(send, 400, b"" if head else str(e).encode(), headers)
            return
        if self.scheduler is not None:
            self.scheduler.touch(result["job"])
            if any(e["type"].startswith(("incident.", "job.recovered")) for e in result["events"]):
                self.scheduler.deliver_now.set()  # alerts go out now, not at the next poll
        if p.want_execution:
            out = json.dumps({"execution": result["run"]}).encode()
            headers = [self._limit_header, (b"content-type", b"application/json")]
        else:
            out = b"OK"
        await respond(send, 200, b"" if head else out, headers, length=len(out))


async def read_body(receive: Any, limit: int) -> bytes:
    """At most ``limit`` bytes of the request body; the rest is never buffered."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body[:limit]


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


def create_app(config: Config | None = None) -> Server:
    """The ASGI app for ``cronwatch serve`` (or any ASGI server)."""
    return Server(config or Config())
