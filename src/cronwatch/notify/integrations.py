"""Integrations configured once (the SMTP server and sender, Slack webhooks by channel
name, the PagerDuty routing key and endpoint, the SMS Apprise URL): what each takes, how
it is checked, and what a read-only reader sees. The shorthands that use them are
``notify.shorthand``'s.
"""

from __future__ import annotations

import re
from typing import Any

from cronwatch.core.errors import ValidationError
from cronwatch.notify.shorthand import ADDRESS_RE, KEY_RE, MAX_VALUE, SLACK_RE

# What each integration takes (key -> help); slack takes "#channel" keys instead.
FIELDS: dict[str, dict[str, str]] = {
    "email": {
        "host": "the SMTP server's host name",
        "port": "its port (default: 465 with tls=implicit, 25 on loopback, else 587)",
        "username": "the SMTP user (optional)",
        "password": "the SMTP password (optional; a secret)",
        "sender": "the From address",
        "tls": "starttls (default) or implicit",
    },
    "slack": {"#CHANNEL": "the Slack incoming webhook URL for that channel (a secret)"},
    "pagerduty": {
        "routing_key": "the routing key for 'pagerduty:' alone (a secret)",
        "endpoint": "the Events API v2 URL (default https://events.pagerduty.com/v2/enqueue)",
    },
    "sms": {
        "url": "an Apprise URL with {to} where the number goes (a secret), such as "
        "twilio://SID:TOKEN@+15550001111/{to}"
    },  # fmt: skip
}
SECRETS = {"email": ("password",), "pagerduty": ("routing_key",), "sms": ("url",)}


def validate_integration(name: str, config: Any) -> dict[str, str]:
    """One integration's settings, checked; ValidationError names the integration and the
    bad setting ("integration email: port must be 1-65535")."""
    try:
        return _validate(name, config)
    except ValidationError as e:
        if str(e).startswith(("integration ", "unknown integration ")):
            raise
        raise ValidationError(f"integration {name}: {e}") from None


def _validate(name: str, config: Any) -> dict[str, str]:
    if name not in FIELDS:
        raise ValidationError(f"unknown integration {name!r}: expected one of {', '.join(FIELDS)}")
    if not isinstance(config, dict):
        raise ValidationError(f"integration {name}: expected an object of settings")
    if len(config) > 100:
        raise ValidationError(f"integration {name}: at most 100 settings")
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool) and key == "port":
            value = str(value)
        if not isinstance(key, str) or not isinstance(value, str) or len(value) > MAX_VALUE:
            raise ValidationError(
                f"integration {name}: {str(key)[:40]!r} must be text of at most {MAX_VALUE} "
                "characters"
            )
        if name == "slack":
            channel = "#" + key.lstrip("#").lower()
            if not SLACK_RE.fullmatch(channel):
                raise ValidationError(f"integration slack: invalid channel name {key[:80]!r}")
            from cronwatch.notify import validate_channel

            out[channel] = validate_channel(value)
            continue
        if key not in FIELDS[name]:
            raise ValidationError(
                f"integration {name}: unknown setting {key[:40]!r}: expected "
                + ", ".join(FIELDS[name])
            )
        out[key] = value
    _check(name, out)
    return out


def _check(name: str, c: dict[str, str]) -> None:
    if name == "email":
        if not c.get("host") or not re.fullmatch(r"[A-Za-z0-9.:\[\]-]{1,253}", c["host"]):
            raise ValidationError("integration email: host is required (a host name)")
        if c.get("port") and not (c["port"].isdigit() and 1 <= int(c["port"]) <= 65535):
            raise ValidationError("integration email: port must be 1-65535")
        if c.get("sender") and not ADDRESS_RE.fullmatch(c["sender"]):
            raise ValidationError("integration email: sender must be an email address")
        if c.get("tls", "starttls") not in ("starttls", "implicit"):
            raise ValidationError("integration email: tls must be starttls or implicit")
    elif name == "pagerduty":
        if c.get("routing_key") and not KEY_RE.fullmatch(c["routing_key"]):
            raise ValidationError("integration pagerduty: invalid routing_key")
        if c.get("endpoint"):
            from cronwatch.notify import webhook

            if not c["endpoint"].lower().startswith(("http://", "https://")):
                raise ValidationError("integration pagerduty: endpoint must be an http(s) URL")
            c["endpoint"] = webhook.validate(c["endpoint"])
    elif name == "sms":
        if "{to}" not in c.get("url", ""):
            raise ValidationError(
                "integration sms: url is required, an Apprise URL with {to} where the number goes"
            )
        from cronwatch.notify import validate_channel

        validate_channel(c["url"].replace("{to}", "15550000000"))


def redact_integration(name: str, config: dict[str, str]) -> dict[str, str]:
    """What a read-only token may see: no password, routing key or webhook URL."""
    from cronwatch.notify import redact as redact_url

    if name == "slack":
        return {k: redact_url(v) for k, v in config.items()}
    hidden = SECRETS.get(name, ())
    return {k: ("***" if k in hidden and v else v) for k, v in config.items()}
