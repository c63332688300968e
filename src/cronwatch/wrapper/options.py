"""What a wrapped run was asked to do (its command line, parsed without argparse) and what it did.

Imported before the child starts, so only ``os`` (for the environment) at module level.
"""

from __future__ import annotations

import os

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
# core.model's ping-key rule (12-128 of these, not starting with '-'), restated without
# importing it before the spawn; tests/test_simob_run.py holds the two to each other
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
DEFAULT_MAX_OUTPUT = 1 << 20  # per stream
KILL_GRACE = 5.0


class Usage(Exception):
    """No command to run in the run command line: message, exit 2. (Any other usage error
    is a warning: the job runs.)"""

    def __init__(self, message: str, warnings: list[str] | None = None) -> None:
        super().__init__(message)
        self.warnings = warnings or []


def name_ok(name: str) -> bool:
    return 1 <= len(name) <= 64 and name[0] not in "-_." and all(c in _NAME_CHARS for c in name)


def key_ok(word: str) -> bool:
    """Whether ``word`` could be a job's ping key (core.model.validate_ping_key's rule)."""
    return 12 <= len(word) <= 128 and word[0] != "-" and all(c in _KEY_CHARS for c in word)


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
        self.job_key = ""  # `run KEY -- CMD` (simob's form): the job's ping key, not a name
        self.send_output = False
        self.config: str | None = None
        self.help = False  # -h/--help among our own options
        self.warnings: list[str] = []  # our usage errors: one line each, the job still runs


VALUED = {"--db", "--max-output", "--timeout", "--kill-grace", "--dashboard", "--env",
           "--server", "--key", "--config", "--name"}  # fmt: skip
FLAGS = {"--no-capture", "--capture", "--capture-output", "--no-dashboard", "--no-local"}
# The top-level CLI's own options, harmless before the wrapped command: why each is ignored.
IGNORED = {"--json": "a wrapped run prints only the command's output",
           "--version": "it is not for running a command"}  # fmt: skip


def remote_wanted(o: Options) -> bool:
    """Whether this run reports to a server (import-free: most runs are local only)."""
    if o.server or o.key or os.environ.get("CRONWATCH_URL") or os.environ.get("CRONWATCH_KEY"):
        return True
    if o.config:
        return True
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.exists(os.path.join(base, "cronwatch", "config.toml"))


def parse_run_args(args: list[str], *, name_form: bool) -> Options:
    """Parse ``NAME [options] -- CMD...`` (run form) or ``--name NAME [options] CMD...``.

    Lenient on purpose: the job must run whenever its command can be identified, so our
    own usage errors (an unknown option, a bad value) become ``o.warnings`` and the name is
    settled later (``settle_name``). Raises Usage only when there is no command to run.
    """
    o = _scan(args, name_form=name_form)
    if not o.command:
        if name_form:
            raise Usage("no command given: put the command after the options, e.g. "
                        "job-watch --name NAME CMD [ARGS...]", o.warnings)  # fmt: skip
        raise Usage("no command given: put it after --, as in: cronwatch run NAME -- CMD [ARGS...]",
                    o.warnings)  # fmt: skip
    return o


def help_requested(args: list[str], *, name_form: bool) -> bool:
    """Whether -h/--help stands among our own options (before the command): after it, it
    is the command's."""
    return _scan(args, name_form=name_form).help


def _scan(args: list[str], *, name_form: bool) -> Options:
    o = Options()
    i = 0
    unknown = ""  # the previous word, when it was an option we do not know
    named = False  # the job name is given (it may be "", which settle_name fixes)
    while i < len(args):
        a = args[i]
        if a == "--":
            o.command = args[i + 1 :]
            break
        if a == "-" or not a.startswith("-"):  # a bare word
            if unknown and (
                _ours_until_dashdash(args, i + 1, need_name=not (name_form or named))
                or (name_form and not named and name_follows(args, i + 1))
            ):
                # `--bogus VALUE -- CMD`, `--bogus VALUE --name X CMD`: VALUE was the
                # unknown option's, not the command
                o.warnings[-1] = f"ignoring unknown option {unknown} {a!r}"
                unknown = ""
                i += 1
                continue
            if name_form or named:
                o.command = args[i:]
                break
            o.name, named = a, True  # run form: the first bare word is the job name
            i += 1
            continue
        unknown = ""
        key, eq, val = a.partition("=")
        if key in ("-h", "--help"):
            o.help = True
        elif key in VALUED:
            named = named or key == "--name"
            if not eq:
                if i + 1 >= len(args):
                    o.warnings.append(f"ignoring {key}: it needs a value")
                    break
                i += 1
                val = args[i]
            try:
                _apply(o, key, val)
            except Usage as e:
                o.warnings.append(f"ignoring {key}: {e}")
        elif key in FLAGS and not eq:
            _apply(o, key, "")
        elif key in IGNORED:
            o.warnings.append(f"ignoring {key}: {IGNORED[key]}")
        else:
            o.warnings.append(f"ignoring unknown option {a!r}")
            unknown = a if unknown_option(a) else ""
        i += 1
    return o


def _ours_until_dashdash(args: list[str], i: int, *, need_name: bool) -> bool:
    """Whether ``args[i:]`` are our options (and the job name, if it is still to come) up
    to a ``--``: then the word before ``i`` belonged to an unknown option. Otherwise it
    begins what it looks like: the name, or the command (`run x sh -c '...' -- a b`)."""
    while i < len(args):
        a = args[i]
        key = a.partition("=")[0]
        if a == "--":
            return not need_name
        if a == "-" or not a.startswith("-"):
            if not need_name:
                return False
            need_name = False
            i += 1
        elif key in VALUED and "=" not in a:
            i += 2
        elif key in VALUED or key in FLAGS or key in IGNORED:
            i += 1
        else:
            return False
    return False


def unknown_option(a: str) -> bool:
    """An option word of no meaning to us, without ``=``: the next word may be its value."""
    return (
        a.startswith("-")
        and a not in ("-", "--", "-h", "--help")
        and "=" not in a
        and a not in VALUED
        and a not in FLAGS
        and a not in IGNORED
    )


def name_follows(args: list[str], i: int) -> bool:
    """Whether ``--name`` comes in ``args[i:]`` before a bare word or an unknown option
    (the name form, after an unknown option's value: `job-watch --bogus VALUE --name X`)."""
    while i < len(args):
        a = args[i]
        key = a.partition("=")[0]
        if key == "--name":
            return True
        if key in VALUED and "=" not in a:
            i += 2
        elif a.startswith("-") and (key in VALUED or key in FLAGS or key in IGNORED):
            i += 1
        else:
            return False
    return False


def settle_name(o: Options) -> str:
    """Make ``o.name`` a valid job name; returns the warning to give ("" if it was valid).

    A bad or missing name never costs the job: it is normalised (or, when nothing of it
    is usable, derived from the command) and the warning says what the run is recorded
    under."""
    if name_ok(o.name):
        return ""
    if key_ok(o.name) and remote_wanted(o):
        # simob's `run Vp4s8S0SsnMo -- CMD`: not a name (capitals) but a ping key, and a
        # server to send it to. The server keeps the record (the outbox keeps its pings
        # while it cannot be reached); no local job is made of the key.
        o.job_key, o.local = o.name, False
        return ""
    from cronwatch.core.model import NAME_RULE, normalize_name  # only for a bad name

    given = o.name
    o.name = (
        normalize_name(given)
        or normalize_name(os.path.basename(o.command[0]) if o.command else "")
        or "unnamed"
    )
    if not given:
        return f"no job name given; the run is recorded as {o.name!r}"
    return f"invalid job name {given!r} ({NAME_RULE}); the run is recorded as {o.name!r}"


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
