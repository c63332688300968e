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
# Tests through the ``store`` and ``store_factory`` fixtures use only the Store Protocols
# (store/interface.py). Modules marked ``all_backends`` (the contract suite) run on every
# backend, the others on SQLite; ``--store NAME`` or $CRONWATCH_TEST_STORE runs them all
# on that one. ``@pytest.mark.sqlite_only`` marks what is SQLite's own (PRAGMAs, WAL, file
# locking, old-schema migrations), skipped for any other backend. The PostgreSQL half
# runs on a throwaway cluster (tests/pg.py), skipped with a message saying why when
# PostgreSQL's binaries are missing.
BACKENDS = ("sqlite", "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        default=os.environ.get("CRONWATCH_TEST_STORE", ""),
        help="run every store test against this backend only (sqlite, postgres; default: "
        "the contract suite on each, the rest on sqlite; or $CRONWATCH_TEST_STORE)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: SQLite's own behaviour (skipped for other store backends)"
    )
    config.addinivalue_line(
        "markers", "all_backends: the store tests of this module run on every store backend"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" not in metafunc.fixturenames:
        return
    forced = metafunc.config.getoption("--store")
    if forced:
        metafunc.parametrize("store_backend", [forced], indirect=True)
    elif metafunc.definition.get_closest_marker("all_backends"):
        metafunc.parametrize("store_backend", BACKENDS, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    forced = config.getoption("--store")
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("store_backend") if callspec else None
        backend = backend or forced or "sqlite"
        if backend != "sqlite" and "sqlite_only" in item.keywords:
            item.add_marker(
                pytest.mark.skip(reason=f"SQLite only (the store under test is {backend!r})")
            )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """The session's PostgreSQL cluster (tests/pg.py); skips when there is none."""
    from pg import start_cluster

    try:
        cluster = start_cluster()
    except RuntimeError as e:
        pytest.skip(str(e))
    try:
        yield cluster
    finally:
        try:
            from cronwatch.store.postgres.backend import close_pools

            close_pools()
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: Any) -> str:
    """A migrated database to copy for each test."""
    from pg import migrated_template

    return migrated_template(pg_cluster)


@pytest.fixture
def pg_database(pg_cluster: Any, pg_template: str) -> Iterator[Callable[[], str]]:
    """``pg_database()``: the URL of a new database with cronwatch's schema, dropped (with
    this process's pools) at the end of the test."""
    from cronwatch.store.postgres.backend import close_pools

    made: list[str] = []

    def new() -> str:
        made.append(pg_cluster.new_database(template=pg_template))
        return made[-1]

    yield new
    close_pools()
    for url in made:
        pg_cluster.drop_database(url)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """The backend under test; an unknown or unavailable one skips the test."""
    backend = str(getattr(request, "param", None) or request.config.getoption("--store"))
    backend = backend or "sqlite"
    if backend not in BACKENDS:
        pytest.skip(
            f"store backend {backend!r} is not available (--store / CRONWATCH_TEST_STORE): "
            f"this cronwatch has {', '.join(BACKENDS)}"
        )
    if backend == "postgres":
        request.getfixturevalue("pg_template")  # skips when PostgreSQL is missing
    return backend


@pytest.fixture
def store_url(store_backend: str, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``store_url(name)``: where the store ``name`` of this test lives (a file path, or a
    PostgreSQL database's URL), the same for the same name."""
    urls: dict[str, str] = {}
    if store_backend == "postgres":
        new = request.getfixturevalue("pg_database")

        def url(name: str) -> str:
            if name not in urls:
                urls[name] = new()
            return urls[name]

        return url
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return lambda name: str(tmp_path / f"{name}.db")


@pytest.fixture
def store_factory(store_url: Callable[[str], str]) -> Iterator[Callable[..., Any]]:
    """``store_factory(name="h")`` opens the store ``name`` of this test (again: the same
    data, a new connection). Every store opened is closed at the end."""
    from cronwatch.store import open_store

    opened: list[Any] = []

    def open_(name: str = "h", **kw: Any) -> Any:
        s = open_store(store_url(name), **kw)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(store_backend: str, db_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The store under test: the same database the subprocesses use (``cw``), opened
    in-process (with PostgreSQL, $CRONWATCH_DB of ``cw_env`` becomes its URL)."""
    from cronwatch.store import open_store

    target = str(db_path)
    if store_backend == "postgres":
        target = request.getfixturevalue("pg_database")()
        request.getfixturevalue("cw_env")["CRONWATCH_DB"] = target
    s = open_store(target)
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
