"""Storage: one small interface, picked by a path or URL.

``open_store("path/to/history.db")`` or ``open_store("sqlite:///abs/path.db")`` gives the
SQLite store (stdlib ``sqlite3``). A PostgreSQL backend (psycopg 3) is planned behind the
same interface; until it exists a ``postgresql://`` URL is refused with a clear message. The CLI, wrapper, scheduler and server see only
the ``Store`` methods.
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
    if target.startswith(("postgres://", "postgresql://")):
        raise ValidationError(
            "PostgreSQL storage is not available in this version of cronwatch: "
            "use a SQLite file (--db PATH)"
        )
    if target.startswith("sqlite://"):
        target = target[len("sqlite://") :]
    elif "://" in target:
        raise ValidationError(
            f"unsupported database {target!r}: give a file path, sqlite:///PATH or postgresql://..."
        )
    from cronwatch.store.sqlite.backend import SQLiteStore

    return SQLiteStore(target, timeout=timeout, create=create)


__all__ = ["open_store"]
