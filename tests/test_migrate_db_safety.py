"""``migrate-db`` run again after the cutover, and the PostgreSQL commands without the
``postgres`` extra: each refused in one line, nothing written, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from test_postgres import sqlite_history


def pg_state(url: str) -> dict[str, Any]:
    """Everything a copy could overwrite or add to, as PostgreSQL holds it."""
    import psycopg

    tables = ("jobs", "runs", "outputs", "incidents", "notifications", "tokens", "events",
              "users", "alert_state", "run_days", "rollup", "run_links", "notify_lists",
              "integrations", "job_keys")  # fmt: skip
    with psycopg.connect(url) as pg:
        state: dict[str, Any] = {
            t: sorted(map(str, pg.execute(f"SELECT * FROM {t}").fetchall())) for t in tables
        }
        state["meta"] = dict(pg.execute("SELECT key, value FROM meta").fetchall())
        indexes = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        state["indexes"] = sorted(r[0] for r in pg.execute(indexes).fetchall())
    return state


def one_line(err: bytes) -> str:
    text = err.decode()
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cronwatch: "), err
    return lines[0]


def test_migrate_db_again_after_the_cutover_is_refused_before_it_writes(
    cw, tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    db = tmp_path / "old.db"
    sqlite_history(cw, db)
    assert cw("ping-key", env={"CRONWATCH_DB": str(db)}).rc == 0  # made on first use
    url = pg_database()
    assert cw("migrate-db", "--db", db, "--to", url).rc == 0
    # PostgreSQL in use: flaky fails there (its streak and alert state move on), and the
    # project ping key is set anew
    on_pg = {"CRONWATCH_DB": url}
    assert cw("run", "flaky", "--", "sh", "-c", "exit 1", env=on_pg).rc == 1
    assert cw("ping-key", "--set", "rotated-on-postgresql", env=on_pg).rc == 0
    before = pg_state(url)
    assert before["meta"]["project_ping_key"] == "rotated-on-postgresql"
    rc, out, err = cw("migrate-db", "--db", db, "--to", url)
    assert rc != 0 and out == b""
    assert pg_state(url) == before  # the newer alert state and ping key are as they were
    line = one_line(err)
    assert "changed after migrate-db copied into it" in line and "runs 4 then, 5 now" in line
    assert "alert_state" in line and "meta" in line and "new, empty database" in line
    rc, out, _ = cw("ping-key", env=on_pg)
    assert (rc, out.strip()) == (0, b"rotated-on-postgresql")


def test_migrate_db_refuses_a_target_with_more_rows_than_its_source(
    cw, tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    """With no record of a completed copy (one by an older cronwatch, or one stopped and
    then written to), rows PostgreSQL has beyond the source's tell it is in use."""
    import psycopg

    db = tmp_path / "old.db"
    sqlite_history(cw, db)
    assert cw("ping-key", env={"CRONWATCH_DB": str(db)}).rc == 0  # made on first use
    url = pg_database()
    assert cw("migrate-db", "--db", db, "--to", url).rc == 0
    with psycopg.connect(url) as pg:
        pg.execute("DELETE FROM meta WHERE key = 'migrate_db_copied'")
    on_pg = {"CRONWATCH_DB": url}
    assert cw("run", "steady", "--", "true", env=on_pg).rc == 0
    assert cw("ping-key", "--set", "rotated-on-postgresql", env=on_pg).rc == 0
    before = pg_state(url)
    rc, _, err = cw("migrate-db", "--db", db, "--to", url)
    assert rc != 0
    assert pg_state(url) == before
    line = one_line(err)
    assert "rows the copy did not put there" in line
    assert "runs 5 in PostgreSQL, 4 in SQLite" in line


def test_migrate_db_again_copies_what_only_the_source_gained(
    cw, tmp_path: Path, pg_database: Callable[[], str]
) -> None:
    import json

    db = tmp_path / "old.db"
    sqlite_history(cw, db)
    url = pg_database()
    assert cw("migrate-db", "--db", db, "--to", url).rc == 0
    assert cw("run", "steady", "--", "true", env={"CRONWATCH_DB": str(db)}).rc == 0
    rc, out, err = cw("migrate-db", "--db", db, "--to", url, "--json")
    assert rc == 0, err
    assert json.loads(out)["tables"]["runs"] == {"sqlite": 5, "postgresql": 5}
    rc, out, err = cw("migrate-db", "--db", db, "--to", url, "--json")  # and again: nothing new
    assert rc == 0, err
    assert json.loads(out)["tables"]["runs"] == {"sqlite": 5, "postgresql": 5}


def stub_package(tmp_path: Path, name: str) -> str:
    """A PYTHONPATH directory in which importing ``name`` fails as if not installed."""
    root = tmp_path / f"without-{name}"
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n"
    )
    return str(root)


@pytest.mark.parametrize(
    "command",
    [
        ["jobs"],
        ["serve", "--port", "0", "--no-scheduler"],
        ["migrate-db", "--db", "{sqlite}", "--to", "{url}"],
    ],
    ids=["jobs", "serve", "migrate-db"],
)
@pytest.mark.parametrize("missing", ["psycopg", "psycopg_pool"])
def test_a_missing_postgresql_driver_is_one_line_naming_the_extra(
    cw, tmp_path: Path, pg_database: Callable[[], str], command: list[str], missing: str
) -> None:
    db = tmp_path / "old.db"
    sqlite_history(cw, db)
    url = pg_database()
    args = [a.format(sqlite=db, url=url) for a in command]
    env = {"CRONWATCH_DB": url, "PYTHONPATH": stub_package(tmp_path, missing)}
    rc, out, err = cw(*args, env=env, timeout=30)
    if missing == "psycopg_pool" and command[0] != "serve":
        assert rc == 0, err  # one connection each: no pool
        return
    assert rc != 0
    line = one_line(err)
    assert "pip install 'cronwatch[postgres]'" in line
