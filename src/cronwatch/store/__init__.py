"""Storage: one small interface, picked by a path or URL.

``open_store("path/to/history.db")`` or ``open_store("sqlite:///abs/path.db")`` gives the
SQLite store (stdlib ``sqlite3``); ``open_store("postgresql://user@host:5432/dbname")`` the
PostgreSQL store (psycopg 3, the ``postgres`` extra: imported only then). The CLI, wrapper,
scheduler and server see only the ``Store`` methods.
"""

from __future__ import annotations

from cronwatch.core.errors import ValidationError

TYPE_CHECKING = False  # no runtime `typing` import: the wrapper pays for every module
if TYPE_CHECKING:
    from cronwatch.store.interface import Store


def open_store(target: str | None = None, *, timeout: float = 10.0, create: bool = True) -> Store:
    """Open the store at ``target`` (a filesystem path or a database URL).

    ``None`` means the default: ``$CRONWATCH_DB`` or ``$XDG_DATA_HOME/cronwatch/history.db``.
    """
    from cronwatch.system import default_db_path

    target = target or default_db_path()
    if is_server_url(target):
        try:
            from cronwatch.store.postgres.backend import PostgresStore
        except ImportError as e:
            raise ValidationError(
                f"PostgreSQL storage needs psycopg ({e}): pip install 'cronwatch[postgres]'"
            ) from None
        return PostgresStore(target, timeout=timeout, create=create)
    if target.startswith("sqlite://"):
        target = target[len("sqlite://") :]
    elif "://" in target:
        raise ValidationError(
            f"unsupported database {target!r}: give a file path, sqlite:///PATH or postgresql://..."
        )
    from cronwatch.store.sqlite.backend import SQLiteStore

    return SQLiteStore(target, timeout=timeout, create=create)


def is_server_url(target: str) -> bool:
    """Whether ``target`` names a database server (PostgreSQL) rather than a file."""
    return target.startswith(("postgres://", "postgresql://"))


__all__ = ["is_server_url", "open_store"]
