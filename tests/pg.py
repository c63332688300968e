"""A throwaway PostgreSQL cluster for the tests: one a session, torn down at its end.

Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, the ``postgresql``
package: scripts/ensure-test-deps.sh installs it where it can) run as an ordinary user,
since ``initdb`` refuses root: as root the cluster belongs to ``postgres`` (or
``nobody``), started through ``runuser``. Its data and its socket are in a private
temporary directory; it listens on 127.0.0.1 at a free port, trusting local connections
(nothing else can reach it). fsync is off: these tests kill cronwatch, never PostgreSQL.

Each test gets a database of its own, copied from a template that is migrated once.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

MISSING = (
    "PostgreSQL's server binaries (Debian's postgresql package) are not installed: the "
    "PostgreSQL half of the suite is skipped (make test installs them when it runs as root)"
)


def find_bindir() -> str | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl ($PG_BINDIR first)."""
    found = [os.environ.get("PG_BINDIR", "")]
    found += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
        reverse=True,
    )
    for d in found:
        if (
            d
            and os.path.exists(os.path.join(d, "initdb"))
            and os.path.exists(os.path.join(d, "pg_ctl"))
        ):
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _owner() -> str | None:
    """The ordinary user the cluster runs as when we are root (None: ourselves)."""
    if os.getuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no ordinary user (postgres, nobody) to run initdb as")


class Cluster:
    def __init__(self, bindir: str, *, fsync: bool = False) -> None:
        self.bindir = bindir
        self.user = _owner()
        self.dir = tempfile.mkdtemp(prefix="cronwatch-pg-")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        os.mkdir(self.sock)
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            for p in (self.dir, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self.port = _free_port()
        self.fsync = fsync
        self._names = itertools.count(1)

    def _run(self, *argv: str) -> None:
        cmd = [os.path.join(self.bindir, argv[0]), *argv[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, cwd="/", timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {(p.stdout + p.stderr).decode()[-2000:]}")

    def start(self) -> Cluster:
        self._run("initdb", "-D", self.data, "-U", "cw", "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")  # fmt: skip
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200 "
            "-c shared_buffers=128MB"
        )
        log = os.path.join(self.dir, "log")
        self._run("pg_ctl", "-D", self.data, "-l", log, "-o", opts, "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str = "postgres", *, unix: bool = False) -> str:
        if unix:
            return f"postgresql://cw@/{db}?host={self.sock}&port={self.port}"
        return f"postgresql://cw@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as c:
            c.execute(statement)

    def new_database(self, stem: str = "t", *, template: str | None = None) -> str:
        """A new database's URL (``template``: a copy of that database)."""
        name = f"{stem}_{next(self._names)}"
        copy = f" TEMPLATE {template}" if template else ""
        self.sql(f"CREATE DATABASE {name}{copy}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1].split("?")[0]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_cluster(*, fsync: bool = False) -> Cluster:
    """A running cluster, or RuntimeError saying why not (the binaries: ``MISSING``)."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(MISSING)
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"psycopg is not installed ({e}): pip install -e '.[postgres]'"
        ) from None
    cluster = Cluster(bindir, fsync=fsync)
    try:
        return cluster.start()
    except BaseException:
        shutil.rmtree(cluster.dir, ignore_errors=True)
        raise


def migrated_template(cluster: Cluster) -> str:
    """A database with cronwatch's schema, for CREATE DATABASE ... TEMPLATE."""
    cluster.sql("CREATE DATABASE cw_template")
    from cronwatch.store import open_store

    open_store(cluster.url("cw_template")).close()  # migrated: the store's own path
    return "cw_template"


__all__ = ["MISSING", "Cluster", "migrated_template", "start_cluster"]
