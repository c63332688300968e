"""The wrapper's remote reporting: the start ping on a thread while the job runs, the finish
ping within a timeout after it, and the outbox for whatever could not be delivered."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from cronwatch.remote import outbox
from cronwatch.remote.ping import BODY_LIMIT, Ping
from cronwatch.remote.transport import DEFAULT_TIMEOUT, Settings
from cronwatch.system import warn
from cronwatch.wrapper.options import key_ok

if TYPE_CHECKING:
    from cronwatch.core.model import Run


def settings_for(o: Any) -> Settings | None:
    """The wrapper's remote settings (--server/--key, environment, config), None if local.

    ``run KEY -- CMD`` as simob's runner takes it: the word is the job's ping key when it
    cannot be a name (``o.job_key``, see wrapper.options.settle_name), or when a server is
    configured without a project key (nothing else could name the job there)."""
    s = Settings.resolve(server=o.server, key=o.key, config=o.config)
    if not s.server:
        return None
    if not o.job_key and not s.key and key_ok(o.name):
        o.job_key = o.name
    if o.job_key:
        s.key = o.job_key
    return s if s.key else None


def _kind(o: Any) -> str:
    return "job" if o.job_key else "auto"


class _Start:
    """The start ping, sent on a thread; ``state`` says what became of it."""

    def __init__(self, ping: Ping, settings: Settings) -> None:
        self.ping = ping
        self.settings = settings
        self.state = "pending"  # -> sent | rejected | failed | queued; or abandoned by on_finish
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, name="cronwatch-start", daemon=True)

    def run(self) -> None:
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
                 kind=_kind(o), dialect=s.dialect, env=o.env or "", at=started_at)  # fmt: skip
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
        warn(f"remote report failed: {e}")


def _finish(o: Any, run: Run) -> None:
    s = settings_for(o)
    if s is None:
        if o.server or o.key:
            warn("remote reporting needs both a server URL and a ping key "
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
                  rid=run.id, slug=o.name, kind=_kind(o), dialect=s.dialect, exit_code=run.exit_code,
                  duration=run.duration, message=run.message, env=o.env or "", body=body,
                  at=run.ended_at or time.time())  # fmt: skip
    outcome, detail = outbox.submit(finish, transport=s.transport, timeout=s.timeout,
                                    deadline=deadline)  # fmt: skip
    if outcome == "rejected":
        warn(f"{s.server} refused the ping for {o.name} ({detail}): check the key; "
              f"kept aside in {outbox.directory()}")  # fmt: skip
    elif outcome != "sent":
        why = f" ({detail})" if detail else ""
        warn(f"could not reach {s.server}{why}; the run's pings wait in {outbox.directory()} "
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
