"""TCP options of every PostgreSQL connection cronwatch opens."""

from __future__ import annotations

from typing import Any

# A server that vanished (a host down, a dropped route) otherwise holds a query forever:
# without keepalives an idle wait never learns of it, and unacknowledged data is resent
# for ~15 minutes; with these a connection fails in about 30 s. (A server that still
# acknowledges packets but never answers, frozen, is not detected by TCP: the wrapper's
# watchdog and /healthz's deadline cover that.) What the URL sets itself is kept.
_TCP_DEFAULTS = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
                 "keepalives_count": "3", "tcp_user_timeout": "30000"}  # fmt: skip


def tcp_options(url: str, **more: str) -> dict[str, Any]:
    """The defaults above (and ``more``) that the URL does not set itself."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url)
    return {k: v for k, v in {**_TCP_DEFAULTS, **more}.items() if k not in given}
