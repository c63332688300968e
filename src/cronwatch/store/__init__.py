"""Storage: one small interface, picked by a path or URL.

``open_store("path/to/history.db")`` or ``open_store("sqlite:///abs/path.db")`` gives the
SQLite store (stdlib ``sqlite3``); ``open_store("postgresql://...")`` the PostgreSQL one
(psycopg 3, the ``[postgres]`` extra). The CLI, wrapper, scheduler and server see only
the ``Store`` methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ValidationError

if TYPE_CHECKING:
    from .base import Store


def open_store(target: str | None = None, *, timeout: float = 10.0, create: bool = True) -> Store:
    """Open the store at ``target`` (a filesystem path or a database URL).

    ``None`` means the default: ``$CRONWATCH_DB`` or ``$XDG_DATA_HOME/cronwatch/history.db``.
    """
    from .._utils import default_db_path

    target = target or default_db_path()
    if target.startswith(("postgres://", "postgresql://")):
        try:
            from .postgres import PostgresStore
        except ImportError as e:  # the [postgres] extra is not installed
            raise ValidationError(
                f"PostgreSQL needs the postgres extra: pip install 'cronwatch[postgres]' ({e})"
            ) from None
        return PostgresStore(target)
    if target.startswith("sqlite://"):
        target = target[len("sqlite://") :]
    elif "://" in target:
        raise ValidationError(
            f"unsupported database {target!r}: give a file path, sqlite:///PATH or postgresql://..."
        )
    from .sqlite import SQLiteStore

    return SQLiteStore(target, timeout=timeout, create=create)


__all__ = ["open_store"]
