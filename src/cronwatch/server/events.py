"""Server-Sent Events from the event log.

Every state change (run.started, run.ok, run.error, job.missed, job.timeout,
job.recovered, incident.opened, incident.closed) is a row in ``events`` written in the
same transaction as the change, so a stream can resume exactly with ``Last-Event-ID``.
The writer wakes the hub after each commit; streams then read what is new.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import parse_qsl

from cronwatch.core.errors import CronwatchError
from cronwatch.server.auth import authorize


class Hub:
    """Wakes every open stream when something was committed."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.waiters: set[asyncio.Event] = set()
        self.closed = False

    def wake(self) -> None:
        for w in self.waiters:
            w.set()

    def close(self) -> None:
        self.closed = True
        self.wake()


def _format(row: tuple[int, float, str, str]) -> bytes:
    eid, _at, type_, data = row
    return f"id: {eid}\nevent: {type_}\ndata: {data}\n\n".encode()


async def stream(server: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    try:
        authorize(server, headers.get("authorization"), write=False)
    except CronwatchError as e:
        body = json.dumps({"error": str(e)}).encode()
        await send({"type": "http.response.start", "status": e.http_status,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
        return
    query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    resume = headers.get("last-event-id") or query.get("last_event_id")
    reader = server.reader
    try:
        last = int(resume) if resume is not None else reader.last_event_id()
    except ValueError:
        last = reader.last_event_id()
    hub: Hub = server.hub
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no")]})  # fmt: skip
    wake = asyncio.Event()
    hub.waiters.add(wake)
    disconnect = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await send({"type": "http.response.body", "body": b": connected\n\n", "more_body": True})
        while not hub.closed and not disconnect.done():
            wake.clear()
            while rows := reader.events_since(last):
                last = rows[-1][0]
                out = b"".join(_format(r) for r in rows)
                await send({"type": "http.response.body", "body": out, "more_body": True})
            waiter = asyncio.ensure_future(wake.wait())
            done, _ = await asyncio.wait(
                {waiter, disconnect}, timeout=server.config.keepalive,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            waiter.cancel()
            if not done:  # keep proxies and clients from timing the stream out
                await send({"type": "http.response.body", "body": b": keep-alive\n\n",
                            "more_body": True})  # fmt: skip
    except OSError:
        pass
    finally:
        hub.waiters.discard(wake)
        disconnect.cancel()
    with contextlib.suppress(Exception):  # the client may be gone already
        await send({"type": "http.response.body", "body": b""})


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
