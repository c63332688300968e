"""Shared fixtures: the real ``cronwatch`` entry point, run as a subprocess in a throwaway home.

Every path cronwatch may write to (database, spool, state, config, temp) points under
``tmp_path``, so tests never touch the user's files and never see each other's runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

BIN = Path(sys.executable).parent
CRONWATCH = str(BIN / "cronwatch")
JOB_WATCH = str(BIN / "job-watch")
PY = sys.executable  # for child scripts: python -c "..."


class Result(NamedTuple):
    rc: int
    out: bytes
    err: bytes


@pytest.fixture(scope="session")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bytecode cache shared by every subprocess of the session.

    An installed cronwatch has compiled bytecode; without it (PYTHONDONTWRITEBYTECODE, as
    in some sandboxes) each wrapper would spend ~100 ms compiling our modules again."""
    prefix = tmp_path_factory.mktemp("pycache")
    warm = tmp_path_factory.mktemp("warm-up")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(prefix), CRONWATCH_DB=str(warm / "h.db"),
               XDG_STATE_HOME=str(warm), CRONWATCH_DASHBOARD="off")  # fmt: skip
    for args in (["run", "warm", "--", "true"], ["stats", "warm"], ["jobs"]):
        subprocess.run([CRONWATCH, *args], env=env, capture_output=True, stdin=subprocess.DEVNULL)
    return str(prefix)


@pytest.fixture
def cw_env(tmp_path: Path, pycache: str) -> dict[str, str]:
    """The environment a cronwatch subprocess gets: everything under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRONWATCH_", "XDG_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    dirs = {
        "HOME": "home",
        "XDG_DATA_HOME": "xdg-data",
        "XDG_STATE_HOME": "xdg-state",
        "XDG_CONFIG_HOME": "xdg-config",
        "TMPDIR": "tmp",
    }
    for key, sub in dirs.items():
        (tmp_path / sub).mkdir()
        env[key] = str(tmp_path / sub)
    env["CRONWATCH_DB"] = str(tmp_path / "data" / "history.db")
    env["CRONWATCH_DASHBOARD"] = "off"  # the dashboard has its own tests
    env["CRONWATCH_DB_TIMEOUT"] = "20"
    # The post-run step (evaluation, alerts, the page) runs before the wrapper exits, so a
    # test reads its outcome as soon as `cronwatch run` returns; the detached step, the
    # default outside systemd, and the 1 s budget have their own tests
    # (test_wrapper_lifecycle.py).
    env["CRONWATCH_POSTRUN"] = "before-exit"
    env["CRONWATCH_POSTRUN_BUDGET"] = "60"
    return env


@pytest.fixture
def db_path(cw_env: dict[str, str]) -> Path:
    return Path(cw_env["CRONWATCH_DB"])


@pytest.fixture
def cw(cw_env: dict[str, str]) -> Callable[..., Result]:
    """``cw("history", "backup", "--json") -> (rc, stdout, stderr)`` through the real script.

    stdin is empty unless ``input`` is given; ``env`` adds to (or, with a None value, removes
    from) the environment. No command ever prints a traceback.
    """

    def run(
        *args: Any,
        input: bytes | None = None,
        env: dict[str, str | None] | None = None,
        prog: str = CRONWATCH,
        timeout: float = 60,
    ) -> Result:
        full = dict(cw_env)
        for k, v in (env or {}).items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
        p = subprocess.run(
            [prog, *map(str, args)],
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            env=full,
            timeout=timeout,
        )
        assert b"Traceback" not in p.stderr, p.stderr.decode(errors="replace")
        return Result(p.returncode, p.stdout, p.stderr)

    return run


# --- the store contract suite: which backend the store tests run against ---------------
# ``--store NAME`` or $CRONWATCH_TEST_STORE (default sqlite). Tests through the ``store``
# and ``store_factory`` fixtures use only the Store Protocols (store/interface.py);
# ``@pytest.mark.sqlite_only`` marks what is SQLite's own (PRAGMAs, WAL, file locking,
# old-schema migrations), skipped for any other backend.
BACKENDS = ("sqlite",)  # a PostgreSQL backend (psycopg 3) joins here when it exists


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        default=os.environ.get("CRONWATCH_TEST_STORE", "sqlite"),
        help="the store backend the store tests run against (default: sqlite, or "
        "$CRONWATCH_TEST_STORE)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: SQLite's own behaviour (skipped for other store backends)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = config.getoption("--store")
    if backend == "sqlite":
        return
    skip = pytest.mark.skip(reason=f"SQLite only (the store under test is {backend!r})")
    for item in items:
        if "sqlite_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """The backend under test; an unknown or unavailable one skips the test."""
    backend = str(request.config.getoption("--store"))
    if backend not in BACKENDS:
        pytest.skip(
            f"store backend {backend!r} is not available (--store / CRONWATCH_TEST_STORE): "
            f"this cronwatch has {', '.join(BACKENDS)}"
        )
    return backend


@pytest.fixture
def store_factory(store_backend: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``store_factory(name="h")`` opens the store ``name`` of this test (again: the same
    data, a new connection). Every store opened is closed at the end."""
    from cronwatch.store import open_store

    opened: list[Any] = []

    def open_(name: str = "h", **kw: Any) -> Any:
        s = open_store(str(tmp_path / f"{name}.db"), **kw)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(store_backend: str, db_path: Path) -> Iterator[Any]:
    """The store under test: with SQLite, the same database the subprocesses use, opened
    in-process."""
    from cronwatch.store import open_store

    s = open_store(str(db_path))
    yield s
    s.close()


def last_run(db_path: Path, job: str) -> Any:
    """The newest run of ``job`` with its output, read straight from the database."""
    from cronwatch.store import open_store

    with open_store(str(db_path), create=False) as s:
        last = s.last_run(job)
        assert last is not None, f"no run of {job} recorded"
        return s.get_run(last.id, output=True)


def warnings(err: bytes) -> list[bytes]:
    """cronwatch's own warning lines on stderr."""
    return [line for line in err.splitlines() if line.startswith(b"cronwatch: warning:")]
