"""Generic webhook: POST the message as JSON (or a user template) to an http(s) URL.

Basic auth may ride in the URL (``https://user:pass@host/hook``); it is sent as an
Authorization header, never shown. A template (see ``Message.render``) replaces the body:
one that looks like JSON is sent as application/json with values JSON-escaped, anything
else as text/plain.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from cronwatch.core.errors import ValidationError
from cronwatch.notify._http import post
from cronwatch.notify.message import Message, check_template, is_json_template, json_escape

SCHEMES = ("http", "https")
_SAFE_SEGMENT = re.compile(r"[A-Za-z_.-]{1,16}")


def validate(url: str) -> str:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValidationError(f"invalid webhook URL {redact(url)!r}: bad port") from None
    if not parts.hostname:
        raise ValidationError(f"invalid webhook URL {redact(url)!r}: no host")
    netloc = parts.netloc.rpartition("@")
    host = netloc[2].lower()
    netloc_out = f"{netloc[0]}@{host}" if netloc[1] else host
    return urlunsplit((parts.scheme.lower(), netloc_out, parts.path or "/", parts.query, ""))


def send(url: str, message: Message, *, timeout: float, template: str | None = None) -> None:
    parts = urlsplit(url)
    headers = {}
    if message.delivery:
        headers["Idempotency-Key"] = message.delivery
    if parts.username is not None:
        creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode("ascii")
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    if template is None:
        body, content_type = message.to_json(), "application/json"
    elif is_json_template(check_template(template)):
        body, content_type = message.render(template, json_escape), "application/json"
    else:
        body, content_type = message.render(template), "text/plain; charset=utf-8"
    post(
        urlunsplit(parts),
        body.encode("utf-8"),
        content_type=content_type,
        timeout=timeout,
        label=f"webhook {redact(url)}",
        headers=headers,
    )


def redact(url: str) -> str:
    """Keep scheme, host and plain path words; hide passwords, token-like segments, query values.

    ``https://u:pw@example.com/hooks/abc123?key=s`` -> ``https://u:***@example.com/hooks/***?key=***``
    """
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return url.partition("://")[0] + "://***"
    user = ""
    if parts.password is not None:
        user = f"{parts.username}:***@"
    elif parts.username is not None:  # a lone user part is often a token
        user = "***@"
    path = "/".join(
        s if not s or _SAFE_SEGMENT.fullmatch(s) else "***" for s in parts.path.split("/")
    )
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, user + host, path, query, ""))
