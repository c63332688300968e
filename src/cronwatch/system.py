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
    """--db aside: $CRONWATCH_DB, then the config file's ``[database] url``, then
    $XDG_DATA_HOME/cronwatch/history.db."""
    return os.environ.get("CRONWATCH_DB") or _config_db() or os.path.join(data_dir(), "history.db")


_warned: set[str] = set()


def _config_db() -> str | None:
    """``url`` of the config file's ``[database]`` table, or None."""
    path = config_path()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # Most config files name no database: only they pay for tomllib (the wrapper's budget)
    if b"[database]" not in raw:
        return None
    import tomllib

    try:
        table = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        problem = f"invalid TOML ({e})"
    else:
        database = table.get("database")
        url = database.get("url") if isinstance(database, dict) else None
        if isinstance(url, str) and url.strip():
            return url.strip()
        problem = '[database] needs url = "postgresql://..." or a file path'
    # A job must still be recorded somewhere: the default file, said once a process
    message = f"{path}: {problem}; using the default database"
    if message not in _warned:
        _warned.add(message)
        warn(message)
    return None


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


# --- who holds an open run ------------------------------------------------------------
# A wrapped run is on record from its start, as an open run naming its wrapper process.
# A pid alone is not enough to tell later whether that process is gone: pids are reused,
# and a machine that restarted has none of its old processes. So the token also holds
# the boot id and the process's start time (clock ticks since boot, /proc/PID/stat), which
# together name one process. Without /proc only the pid is kept, and a live process with
# that pid counts as alive (a stale run then waits for max_runtime instead).


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().decode().strip() or "-"
    except OSError:
        return "-"


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_token(timeout: float | None = None, pid: int | None = None) -> str:
    """``HOST BOOT PID START TIMEOUT``: this process (or ``pid``), and the timeout it
    enforces on its job ("-" when none or unknown)."""
    pid = os.getpid() if pid is None else pid
    fields = _stat(pid)
    start = fields[19] if fields and len(fields) > 19 else "-"
    limit = "-" if timeout is None else repr(float(timeout))
    return f"{os.uname().nodename} {_boot_id()} {pid} {start} {limit}"


def token_timeout(token: str) -> float | None:
    parts = token.split()
    try:
        return float(parts[4]) if len(parts) > 4 and parts[4] != "-" else None
    except ValueError:
        return None


def process_gone(token: str) -> str | None:
    """Why the process a token names is gone ("the wrapper was killed ..."), or None
    while it lives or when this machine cannot tell (the token is another host's)."""
    parts = token.split()
    if len(parts) < 4 or parts[0] != os.uname().nodename:
        return None
    host, boot, pid_text, start = parts[:4]
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    now_boot = _boot_id()
    if "-" not in (boot, now_boot) and boot != now_boot:
        return f"the machine ({host}) restarted while the wrapper (pid {pid}) ran"
    killed = f"the wrapper was killed (pid {pid} on {host})"
    if start != "-":
        fields = _stat(pid)
        if fields is None and os.path.isdir("/proc/self"):
            return killed
        if fields is not None:
            # a zombie is gone too: only its exit status is left for its parent to collect
            if len(fields) <= 19 or fields[19] != start or fields[0] in ("Z", "X"):
                return killed
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return killed
    except OSError:
        return None  # alive, another user's
    return None


def in_service_unit() -> bool:
    """Whether this process runs in a systemd service, whose processes are all killed when
    its main process exits (KillMode=control-group, the default): a detached process
    would be killed with the rest. systemd sets INVOCATION_ID (and, since v248,
    SYSTEMD_EXEC_PID) for a unit's processes; cron strips both from a job's environment,
    so the cgroup is asked too, except when it is a cron daemon's own service, which
    outlives its jobs. PID 1 (a container's entry point) takes every process with it too,
    and so does a container's init shim (tini, dumb-init...) when its one child exits."""
    env = os.environ
    if env.get("INVOCATION_ID") or env.get("SYSTEMD_EXEC_PID") or os.getpid() == 1:
        return True
    if os.getppid() == 1:
        try:
            with open("/proc/1/comm", "rb") as f:
                if f.read().strip().decode(errors="replace") in _CONTAINER_INITS:
                    return True
        except OSError:
            pass
    try:
        with open("/proc/self/cgroup", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        unit = line.rsplit("/", 1)[-1]
        if unit.endswith(".service") and unit not in _CRON_SERVICES:
            return True
    return False


_CONTAINER_INITS = {"tini", "docker-init", "dumb-init", "catatonit"}
# Cron daemons stay up after their jobs end: a detached process in their cgroup survives.
_CRON_SERVICES = {"cron.service", "crond.service", "cronie.service", "fcron.service",
                  "dcron.service", "bcron.service", "busybox-cron.service"}  # fmt: skip
