"""What a wrapped run was asked to do (its command line, parsed without argparse) and what it did.

Imported before the child starts, so only ``os`` (for the environment) at module level.
"""

from __future__ import annotations

import os

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
DEFAULT_MAX_OUTPUT = 1 << 20  # per stream
KILL_GRACE = 5.0


class Usage(Exception):
    """A usage error in the run command line: message, exit 2, nothing run."""


def name_ok(name: str) -> bool:
    return 1 <= len(name) <= 64 and name[0] not in "-_." and all(c in _NAME_CHARS for c in name)


def parse_size(text: str) -> int:
    s = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = 1
    if s and s[-1] in "kmg":
        mult = {"k": 1024, "m": 1024**2, "g": 1024**3}[s[-1]]
        s = s[:-1]
    try:
        value = int(float(s) * mult)
    except (ValueError, OverflowError):  # "lots", "nan", "inf"
        raise Usage(f"invalid size {text!r}: expected bytes such as 65536, 512k or 1M") from None
    if value < 0:
        raise Usage(f"invalid size {text!r}: must not be negative")
    return value


def parse_duration_fast(text: str) -> float:
    # Same grammar as _utils.parse_duration, kept import-free for the pre-spawn path.
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    s = text.strip().lower()
    bad = f"invalid duration {text!r}: expected a duration such as 90s, 15m, 24h, 7d or 2w"
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if not 0 <= value < float("inf"):  # also rejects nan
            raise Usage(bad)
        return value
    total, num = 0.0, ""
    i = 0
    while i < len(s):
        c = s[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = "ms" if s.startswith("ms", i) else c
        if not num or unit not in units:
            raise Usage(bad)
        try:
            total += float(num) * units[unit]
        except ValueError:  # "1.2.3s"
            raise Usage(bad) from None
        num = ""
        i += len(unit)
    if num or not s or total == float("inf"):
        raise Usage(bad)
    return total


class Options:
    """Options of ``run`` (and the ``--name`` form), parsed without argparse."""

    def __init__(self) -> None:
        self.name = ""
        self.command: list[str] = []
        self.db: str | None = None
        self.capture = True
        self.max_output = DEFAULT_MAX_OUTPUT
        self.timeout: float | None = None
        self.kill_grace = KILL_GRACE
        self.dashboard: str | None = None
        self.no_dashboard = False
        self.env = ""
        self.server: str | None = None
        self.key: str | None = None
        self.local = True
        self.send_output = False
        self.config: str | None = None


VALUED = {"--db", "--max-output", "--timeout", "--kill-grace", "--dashboard", "--env",
           "--server", "--key", "--config", "--name"}  # fmt: skip
FLAGS = {"--no-capture", "--capture", "--capture-output", "--no-dashboard", "--no-local"}


def remote_wanted(o: Options) -> bool:
    """Whether this run reports to a server (import-free: most runs are local only)."""
    if o.server or o.key or os.environ.get("CRONWATCH_URL") or os.environ.get("CRONWATCH_KEY"):
        return True
    if o.config:
        return True
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.exists(os.path.join(base, "cronwatch", "config.toml"))


def parse_run_args(args: list[str], *, name_form: bool) -> Options:
    """Parse ``NAME [options] -- CMD...`` (run form) or ``--name NAME [options] CMD...``."""
    o = Options()
    i = 0
    saw_dashdash = False
    while i < len(args):
        a = args[i]
        if a == "--":
            saw_dashdash = True
            o.command = args[i + 1 :]
            break
        if not a.startswith("--"):
            if name_form:
                o.command = args[i:]
                break
            if not o.name:  # the first bare word is the job name (options may come first)
                o.name = a
                i += 1
                continue
            raise Usage(
                "no command given: put it after --, as in: cronwatch run NAME -- CMD [ARGS...]"
            )
        key, eq, val = a.partition("=")
        if key in VALUED:
            if not eq:
                i += 1
                if i >= len(args):
                    raise Usage(f"option {key} needs a value")
                val = args[i]
            _apply(o, key, val)
        elif key in FLAGS and not eq:
            _apply(o, key, "")
        else:
            raise Usage(f"unknown option {a!r} (see cronwatch run --help)")
        i += 1
    if not o.name:
        raise Usage("no job name given: cronwatch run NAME -- CMD [ARGS...]")
    if not name_ok(o.name):
        raise Usage(
            f"invalid job name {o.name!r}: a job name is 1-64 characters of a-z, 0-9, "
            "'-', '_' and '.', starting with a letter or digit"
        )
    if not o.command:
        if name_form or saw_dashdash:
            raise Usage("no command given: put the command after the options, e.g. "
                        "cronwatch --name NAME CMD [ARGS...]" if name_form else
                        "no command given: put it after --")  # fmt: skip
        raise Usage("no command given: put it after --")
    return o


def _apply(o: Options, key: str, val: str) -> None:
    if key == "--db":
        o.db = val
    elif key == "--name":
        o.name = val
    elif key == "--max-output":
        o.max_output = parse_size(val)
    elif key == "--timeout":
        o.timeout = parse_duration_fast(val)
        if o.timeout <= 0:
            raise Usage("--timeout must be positive")
    elif key == "--kill-grace":
        o.kill_grace = parse_duration_fast(val)
    elif key == "--dashboard":
        o.dashboard = val
    elif key == "--env":
        o.env = val
    elif key == "--server":
        o.server = val
    elif key == "--key":
        o.key = val
    elif key == "--config":
        o.config = val
    elif key == "--no-capture":
        o.capture = False
    elif key == "--capture":
        o.capture = True
    elif key == "--capture-output":  # remote mode: send the output with the finishing ping
        o.capture = o.send_output = True
    elif key == "--no-dashboard":
        o.no_dashboard = True
    elif key == "--no-local":
        o.local = False


class NotStarted(Exception):
    """Our own failure before the child was spawned: the command has not run."""


class Result:
    def __init__(self) -> None:
        self.started_at = 0.0
        self.ended_at = 0.0
        self.duration = 0.0
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.timed_out = False
        self.spawn_error = ""
        self.stdout: bytes | None = None
        self.stderr: bytes | None = None
        self.merged = False  # stdout and stderr were one stream (runner._one_place)
        self.wrapper_exit = 0
        self.internal_error = ""
        self.run_id = ""
