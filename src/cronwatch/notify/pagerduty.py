"""PagerDuty Events API v2: ``pagerduty://ROUTING_KEY[?endpoint=URL]``.

An alert triggers, a recovery resolves, both with one dedup key per job and environment,
so that PagerDuty keeps one incident for one outage. The endpoint is overridable (a
proxy, the EU service region, tests).
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, unquote, urlsplit

from cronwatch.core.errors import ValidationError
from cronwatch.notify._http import post
from cronwatch.notify.message import Message

SCHEMES = ("pagerduty",)
ENDPOINT = "https://events.pagerduty.com/v2/enqueue"
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _parse(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    key = unquote(parts.netloc)
    if not _KEY_RE.fullmatch(key):
        raise ValidationError(
            "invalid channel 'pagerduty://***': expected pagerduty://ROUTING_KEY[?endpoint=URL]"
        )
    endpoint = dict(parse_qsl(parts.query)).get("endpoint") or ENDPOINT
    if not endpoint.lower().startswith(("http://", "https://")):
        raise ValidationError("invalid channel 'pagerduty://***': endpoint must be http(s)")
    return key, endpoint


def validate(url: str) -> str:
    _parse(url)
    return url


def send(url: str, message: Message, *, timeout: float, template: str | None = None) -> None:
    key, endpoint = _parse(url)
    body = {
        "routing_key": key,
        "event_action": "resolve" if message.kind == "recovery" else "trigger",
        "dedup_key": f"cronwatch/{message.job}/{message.env}",
        "payload": {
            "summary": message.title()[:1024],
            "source": "cronwatch",
            "severity": "critical" if message.kind != "test" else "info",
            "custom_details": message.payload(),
        },
    }
    post(endpoint, json.dumps(body).encode(), content_type="application/json",
         timeout=timeout, label="pagerduty")  # fmt: skip


def redact(url: str) -> str:
    return "pagerduty://***"
