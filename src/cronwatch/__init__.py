"""cronwatch: make scheduled and one-off jobs observable.

The wrapper path imports this module, so it stays tiny: SDK names load lazily (PEP 562),
on first use of ``cronwatch.monitor`` and friends.
"""

from __future__ import annotations

from cronwatch._version import __version__

TYPE_CHECKING = False  # not `from typing import ...`: the wrapper pays for every import
if TYPE_CHECKING:
    from typing import Any

    from cronwatch.core.errors import CronwatchError, ValidationError
    from cronwatch.remote.client import JobHandle, Monitor, finish_job, monitor, start_job
    from cronwatch.remote.transport import Settings, Transport

__all__ = [
    "CronwatchError",
    "JobHandle",
    "Monitor",
    "Settings",
    "Transport",
    "ValidationError",
    "__version__",
    "finish_job",
    "monitor",
    "start_job",
]

_LAZY = {
    "CronwatchError": "core.errors",
    "JobHandle": "remote.client",
    "Monitor": "remote.client",
    "Settings": "remote.transport",
    "Transport": "remote.transport",
    "ValidationError": "core.errors",
    "finish_job": "remote.client",
    "monitor": "remote.client",
    "start_job": "remote.client",
}


def __getattr__(name: str) -> Any:  # noqa: F821 (Any only under TYPE_CHECKING)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cronwatch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"cronwatch.{module}"), name)
    globals()[name] = value  # next time without the detour
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
