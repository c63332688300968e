"""The post-run step: what follows a recorded run and no scheduler should wait for.

In order: merge the spool (runs that could not be written), evaluate the pending runs
(assertions, then the alert state machine: app.evaluate.settle), refresh the dashboard,
deliver due notifications (the network last: a channel that never answers delays
nothing else). The wrapper starts it as ``python -m cronwatch.wrapper.postrun DB [PAGE]``,
detached; or calls ``run_steps`` itself before exit with a budget, where a detached
process would be killed (record.post_run). Each step's work is recorded as it is done,
so a step cut short (by the budget or a kill) is finished by the next run's post-run
step, `cronwatch check` or the server: a run stays pending until its evaluation commits,
a notification until it is sent, the page's ``.pending`` marker until it is rendered.
"""

from __future__ import annotations

import os
import sys
import time

from cronwatch.system import warn as _warn
from cronwatch.wrapper import spool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# A detached step may wait this long for a locked database: nobody waits for it, and a
# run spooled because of that lock gets merged as soon as it is released.
DETACHED_DB_TIMEOUT = 60.0
SEND_TIMEOUT = 5.0  # one notification attempt (the outbox's default)
# A detached step ends after this many seconds whatever it waits for (a database that
# accepts a query and never answers holds the driver forever). What it has not done
# stays recorded for the next step, `check` or the server.
DETACHED_LIMIT = 300


def run_steps(
    db_path: str, page: str | None, *, budget: float | None, warn: Callable[[str], None] = _warn
) -> None:
    """The steps, within ``budget`` seconds if given. Never raises."""
    t0 = time.monotonic()

    def left() -> float | None:
        return None if budget is None else budget - (time.monotonic() - t0)

    from cronwatch.store import open_store

    try:
        store = open_store(db_path, timeout=_bounded(left(), DETACHED_DB_TIMEOUT), create=False)
    except Exception as e:
        warn(f"post-run step: {e}")
        return
    with store:
        now = time.time()
        try:
            if spool.has_spooled(db_path):
                spool.replay(store, db_path, now)
        except Exception as e:  # they stay in the spool for the next run
            warn(f"spooled runs not merged yet: {e}")
        try:
            from cronwatch.app.evaluate import settle

            settle(store, now=now, budget=left())
        except Exception as e:  # the runs stay pending: the next step or `check` evaluates them
            warn(f"alert evaluation failed: {e}")
        if page is not None and (budget is None or (left() or 0) > 0):
            _dashboard(db_path, page, warn)
        remaining = left()
        if remaining is not None and remaining < 0.1:
            return  # notifications stay in the outbox, due: the next step sends them
        try:
            from cronwatch.app.evaluate import deliver_outbox

            send = SEND_TIMEOUT if remaining is None else min(SEND_TIMEOUT, remaining)
            deliver_outbox(store, now=time.time(), budget=_bounded(remaining, 30.0),
                           timeout=send)  # fmt: skip
        except Exception as e:
            warn(f"notifications not delivered yet: {e}")


def _bounded(left: float | None, default: float) -> float:
    return default if left is None else max(0.05, left)


def _dashboard(db_path: str, page: str, warn: Callable[[str], None]) -> None:
    from cronwatch.app.regen import regenerate

    try:
        regenerate(db_path, page)
    except Exception as e:  # a detached step's warning reaches nobody: leave a note too
        warn(f"dashboard not written: {e}")
        try:
            with open(page + ".error", "w", encoding="utf-8") as f:
                f.write(f"{type(e).__name__}: {e}\n")
        except OSError:
            pass
        return
    try:
        os.unlink(page + ".error")
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        sys.stderr.write("usage: python -m cronwatch.wrapper.postrun DB [PAGE]\n")
        return 2
    import signal

    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the alarm ends the process
    signal.alarm(DETACHED_LIMIT)
    run_steps(argv[0], argv[1] if len(argv) == 2 else None, budget=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
