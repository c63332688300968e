"""cronwatch: make scheduled and one-off jobs observable.

The wrapper path imports this module, so it stays tiny: SDK names load lazily (PEP 562),
on first use of ``cronwatch.monitor`` and friends.
"""

from __future__ import annotations

from ._version import __version__

TYPE_CHECKING = False  # not `from typing import ...`: the wrapper pays for every import
if TYPE_CHECKING:
    from typing import Any

    from .client import JobHandle, Monitor, finish_job, monitor, start_job
    from .errors import CronwatchError, ValidationError
    from .transport import Settings, Transport

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
    "CronwatchError": "errors",
    "JobHandle": "client",
    "Monitor": "client",
    "Settings": "transport",
    "Transport": "transport",
    "ValidationError": "errors",
    "finish_job": "client",
    "monitor": "client",
    "start_job": "client",
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
