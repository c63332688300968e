"""cronwatch: make scheduled and one-off jobs observable.

The wrapper path imports this module, so it stays tiny: SDK names load lazily.
"""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
