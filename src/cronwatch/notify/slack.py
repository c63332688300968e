"""Slack incoming webhooks: ``slack://T000/B000/XXXX`` or ``https://hooks.slack.com/services/...``.

Both forms post ``{"text": ...}`` to ``https://hooks.slack.com/services/T000/B000/XXXX``;
the base is overridable with ``$CRONWATCH_SLACK_API`` (tests, proxies).
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import urlsplit

from cronwatch.core.errors import ValidationError
from cronwatch.notify._http import post
from cronwatch.notify.message import Message

SCHEMES = ("slack",)
HOST = "hooks.slack.com"
DEFAULT_API = f"https://{HOST}/services"
FORMS = "slack://T000/B000/XXXX or https://hooks.slack.com/services/T000/B000/XXXX"
_PART_RE = re.compile(r"[A-Za-z0-9]+")


def is_slack_url(url: str) -> bool:
    try:
        return (urlsplit(url).hostname or "").lower() == HOST
    except ValueError:
        return False


def _parts(url: str) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme.lower() == "slack":
        segments = [parts.netloc, *parts.path.split("/")]
    else:
        segments = parts.path.split("/")
        if segments[:2] != ["", "services"]:
            segments = []
        segments = segments[2:]
    segments = [s for s in segments if s]
    if len(segments) != 3 or not all(_PART_RE.fullmatch(s) for s in segments):
        raise ValidationError(
            f"invalid Slack channel {redact(url)!r}: expected {FORMS} "
            "(the three parts of the incoming-webhook URL)"
        )
    return segments


def validate(url: str) -> str:
    segments = _parts(url)
    if urlsplit(url).scheme.lower() == "slack":
        return "slack://" + "/".join(segments)
    return f"https://{HOST}/services/" + "/".join(segments)


def _escape(text: str) -> str:
    # Slack reads &, < and > as markup: unescaped job output could @-mention a whole channel.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_text(message: Message) -> str:
    text = f"*{_escape(message.title())}*\n" + _escape("\n".join(message.details()))
    if message.output_tail:
        text += (
            "\n```\n" + _escape(message.output_tail.rstrip("\n").replace("```", "'''")) + "\n```"
        )
    return text


def send(url: str, message: Message, *, timeout: float, template: str | None = None) -> None:
    segments = _parts(url)
    text = message.render(template, _escape) if template is not None else format_text(message)
    api = os.environ.get("CRONWATCH_SLACK_API", DEFAULT_API).rstrip("/")
    post(
        f"{api}/" + "/".join(segments),
        json.dumps({"text": text}, ensure_ascii=False).encode("utf-8"),
        content_type="application/json",
        timeout=timeout,
        label=f"Slack {redact(url)}",
    )


def redact(url: str) -> str:
    """Hide the last part (the secret): ``slack://T000/B000/***``."""
    head, _, secret = url.rstrip("/").rpartition("/")
    if not secret or head.endswith(":/"):
        return url.split("://", 1)[0] + "://***"
    return f"{head}/***"
