"""Regenerate the static dashboard after a run, off the wrapper's critical path.

The wrapper drops a ``pending`` marker beside the page and its post-run step
(wrapper/postrun.py, detached unless that would be killed) calls ``regenerate``.
Rendering imports the health/stats core and rewrites a page of a few MB: tens of
milliseconds that no scheduler should wait for. ``python -m cronwatch.app.regen DB OUT``
renders once in the foreground.

Runs that finish together coalesce: a requester first drops a ``pending`` marker, then
tries the lock; the holder renders until no marker is left, and after releasing looks
once more, so no request is lost between its last render and the release.
"""

from __future__ import annotations

import os
import sys


def _render(db_path: str, out: str) -> None:
    import time

    from cronwatch.app.dashboard import write_dashboard
    from cronwatch.store import open_store

    with open_store(db_path, create=False) as store:
        write_dashboard(store, out, now=time.time())


def regenerate(db_path: str, out: str) -> None:
    import fcntl

    marker, lock_path = out + ".pending", out + ".lock"
    while os.path.exists(marker):
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # the holder will see our marker
            while os.path.exists(marker):
                try:
                    os.unlink(marker)
                except FileNotFoundError:
                    pass
                _render(db_path, out)
        finally:
            os.close(fd)  # releases the lock; then look for a marker dropped meanwhile


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m cronwatch.app.regen DB OUT\n")
        return 2
    try:
        regenerate(argv[0], argv[1])
    except Exception as e:  # nobody reads our stderr: leave a note beside the page
        try:
            with open(argv[1] + ".error", "w", encoding="utf-8") as f:
                f.write(f"{type(e).__name__}: {e}\n")
        except OSError:
            pass
        return 1
    try:
        os.unlink(argv[1] + ".error")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
