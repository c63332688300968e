"""This machine: where cronwatch keeps its files, who runs it, and the one warning line.

Read from the environment at each call (tests and users change it between runs). The
wrapper imports this on every run: ``os`` and ``sys`` only.
"""

from __future__ import annotations

import os
import sys


def data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "cronwatch")


def default_db_path() -> str:
    return os.environ.get("CRONWATCH_DB") or os.path.join(data_dir(), "history.db")


def config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "cronwatch", "config.toml")


def state_dir() -> str:
    """$XDG_STATE_HOME/cronwatch: the outbox and what we learnt about keys."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "cronwatch")


def private_dirs(path: str) -> None:
    """Create directory ``path`` and its missing parents, each 0700 (the XDG base directory
    spec asks this of every directory it makes us create; ours hold job output and
    secrets). Directories that exist already are left as they are. Raises OSError."""
    missing = []
    d = os.path.abspath(path)
    while not os.path.lexists(d):  # below a file, mkdir says "Not a directory"
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:  # made meanwhile by a concurrent run: fine if a directory
            if not os.path.isdir(d):
                raise


def ours_alone(path: str) -> bool:
    """Whether directory ``path`` is absent (we will make it) or ours with no one else
    allowed to write in it. In a shared temporary directory anyone may have made
    ``$TMPDIR/cronwatch-<uid>`` first: what we would read back from it (spooled runs,
    queued pings) could have been planted, and what we leave there deleted."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # making it will say what is wrong
        return True
    except OSError:
        return False
    import stat

    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def create_private_file(path: str) -> bool:
    """Create ``path`` empty and 0600 if it does not exist; True if we created it. An
    existing file keeps its mode: it is not ours to change."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def user() -> str:
    # What getpass.getuser() does, without its imports (every cron run pays for them).
    for key in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(key):
            return os.environ[key]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"cronwatch: warning: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass
