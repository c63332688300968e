"""One HTTP POST with the stdlib, turned into DeliveryError on anything but a 2xx answer."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

from cronwatch._version import __version__
from cronwatch.core.errors import DeliveryError

USER_AGENT = f"cronwatch/{__version__}"
_MAX_READ = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without the body, which "succeeds" without
    # delivering anything; a 3xx is reported instead so the user fixes the URL.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def reason(exc: BaseException, timeout: float) -> str:
    """A short, one-line description of a transport failure."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else OSError(str(exc.reason))
    if isinstance(exc, TimeoutError | socket.timeout):
        text = f"timed out after {timeout:g}s"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(exc, socket.gaierror):
        text = f"cannot resolve the host ({exc.strerror or exc})"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        text = f"TLS certificate not trusted ({exc.verify_message})"
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS error ({exc.reason or exc})"
    elif isinstance(exc, http.client.RemoteDisconnected):
        text = "the server closed the connection without answering"
    elif isinstance(exc, http.client.BadStatusLine):
        text = f"not an HTTP answer ({str(exc).strip()[:80]})"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror[:1].lower() + exc.strerror[1:]
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def snippet(body: bytes, limit: int = 200) -> str:
    """The first ``limit`` bytes of an answer, on one line."""
    text = body[:limit].decode("utf-8", "replace")
    return " ".join(text.split()) + ("…" if len(body) > limit else "")


def post(
    url: str,
    body: bytes,
    *,
    content_type: str,
    timeout: float,
    label: str,
    headers: dict[str, str] | None = None,
) -> bytes:
    """POST ``body`` and return the answer's body; ``label`` (redacted) names the target in errors."""
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    request.add_header("User-Agent", USER_AGENT)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with _opener.open(request, timeout=timeout) as response:
            answer: bytes = response.read(_MAX_READ)  # typeshed: urlopen's result is Any
            return answer
    except urllib.error.HTTPError as e:
        try:
            answer = e.read(_MAX_READ)
        except (OSError, http.client.HTTPException):
            answer = b""
        detail = f": {snippet(answer)}" if answer.strip() else ""
        # The Location is not shown: it usually repeats the secret part of the URL.
        where = " (a redirect: configure the final URL)" if 300 <= e.code < 400 else ""
        raise DeliveryError(f"{label}: HTTP {e.code} {e.reason}{where}{detail}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise DeliveryError(f"{label}: {reason(e, timeout)}") from None
