"""Any other scheme (discord://, ntfy://, pover://, ...) through Apprise, an optional extra.

Apprise costs ~10 dependencies and ~190 ms of imports, so it is imported only when a
channel needs it, never by ``cronwatch.notify`` itself.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from cronwatch.core.errors import DeliveryError, ValidationError
from cronwatch.notify.message import Message

INSTALL_HINT = "install the apprise extra (pip install 'cronwatch[apprise]') for 100+ services"


def available() -> bool:
    """True when Apprise is installed (checked without importing it)."""
    return importlib.util.find_spec("apprise") is not None


def _client(url: str) -> Any:
    if not available():
        raise ValidationError(f"unsupported channel {redact(url)!r}: {INSTALL_HINT}")
    lib = importlib.import_module("apprise")
    client = lib.Apprise()
    if not client.add(url):
        raise ValidationError(
            f"unsupported channel {redact(url)!r}: Apprise does not understand it "
            "(see https://github.com/caronc/apprise/wiki for the URL forms)"
        )
    return client


def validate(url: str) -> str:
    _client(url)
    return url


def send(url: str, message: Message, *, timeout: float, template: str | None = None) -> None:
    # Apprise sets its own socket timeouts per service (``?cto=`` / ``?rto=`` in the URL).
    client = _client(url)
    lib = importlib.import_module("apprise")
    body = message.render(template) if template is not None else message.text()
    capture = getattr(lib, "LogCapture", None)
    if capture is None:
        ok, log = client.notify(body=body, title=message.title()), ""
    else:
        with capture(level=lib.logging.WARNING) as output:
            ok = client.notify(body=body, title=message.title())
            log = output.getvalue()
    if not ok:
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        why = lines[-1][:200] if lines else "Apprise could not deliver the notification"
        raise DeliveryError(f"{redact(url)}: {why}")


def redact(url: str) -> str:
    """Apprise URLs carry tokens anywhere (host, path, user): only the scheme is shown."""
    scheme = url.partition("://")[0] if "://" in url else ""
    return f"{scheme}://***" if scheme else "***"
