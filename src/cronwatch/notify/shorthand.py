"""Cronitor's channel shorthands, resolved with the integrations configured once.

    email:team@company.com      mail through the ``email`` integration (SMTP server, sender)
    slack:#alerts               the Slack webhook the ``slack`` integration names #alerts
    pagerduty:ROUTING_KEY       PagerDuty Events API v2 (``pagerduty:`` alone: the
                                integration's routing key); the endpoint is configurable
    sms:+15551234567            the ``sms`` integration's Apprise URL, ``{to}`` replaced
    webhook:https://host/path   a plain webhook
    on-call-team                a notification list: a name for several channels

A job's ``notify`` stores what the user wrote; a list is expanded when an alert is queued,
a shorthand is resolved into a channel URL when it is delivered, with the integrations as
they are then (a password changed once applies to every job and every retry). The
integrations hold secrets: ``redact_integration`` is what a read-only reader sees.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from cronwatch.core.errors import ValidationError
from cronwatch.core.model import LIST_NAME_RULE, validate_name

SHORTHANDS = ("email", "slack", "pagerduty", "sms", "webhook")
ADDRESS_RE = re.compile(r"[^@\s,<>\"'/?&=]+@[^@\s,<>\"'/?&=]+")
_PHONE_RE = re.compile(r"\+?[0-9]{4,20}")
SLACK_RE = re.compile(r"#?[a-z0-9][a-z0-9._-]{0,79}")
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_VALUE = 2000


def is_shorthand(channel: str) -> bool:
    head, sep, _ = channel.partition(":")
    return (
        bool(sep) and head.lower() in SHORTHANDS and not channel[len(head) + 1 :].startswith("//")
    )


def is_list_name(channel: str) -> bool:
    """A channel that names a notification list (a job name's alphabet: no ':' at all)."""
    try:
        validate_name(channel)
    except ValidationError:
        return False
    return True


def validate_list_name(name: str) -> str:
    if not is_list_name(name):
        raise ValidationError(f"invalid notification list name {name!r}: {LIST_NAME_RULE}")
    return name


def validate_shorthand(channel: str) -> str:
    """The shorthand, normalised (prefix in lower case), or ValidationError."""
    head, _, rest = channel.partition(":")
    kind = head.lower()
    if kind == "email":
        if not ADDRESS_RE.fullmatch(rest):
            raise ValidationError(f"invalid channel {channel!r}: expected email:name@example.com")
    elif kind == "slack":
        rest = rest.lower()  # Slack's channel names are lower case
        if not SLACK_RE.fullmatch(rest):
            raise ValidationError(f"invalid channel {channel!r}: expected slack:#channel")
    elif kind == "pagerduty":
        if rest and not KEY_RE.fullmatch(rest):
            raise ValidationError(
                "invalid channel 'pagerduty:***': expected pagerduty:ROUTING_KEY (letters, "
                "digits, '-' and '_'), or pagerduty: alone for the integration's key"
            )
    elif kind == "sms":
        if not _PHONE_RE.fullmatch(rest):
            raise ValidationError(f"invalid channel {channel!r}: expected sms:+15551234567")
    else:  # webhook
        if not rest.lower().startswith(("http://", "https://")):
            raise ValidationError(
                f"invalid channel {redact(channel)!r}: expected webhook:https://host/path"
            )
        from cronwatch.notify import webhook

        rest = webhook.validate(rest)
    return f"{kind}:{rest}"


def redact(channel: str) -> str:
    head, _, rest = channel.partition(":")
    kind = head.lower()
    if kind == "pagerduty":
        return "pagerduty:***" if rest else "pagerduty:"
    if kind == "webhook":
        from cronwatch.notify import webhook

        return "webhook:" + webhook.redact(rest)
    return channel


def resolve(channel: str, integrations: dict[str, dict[str, str]]) -> str:
    """The channel URL a shorthand stands for, with the integrations configured; a
    ValidationError says which integration is missing (retrying cannot help)."""
    head, _, rest = validate_shorthand(channel).partition(":")
    if head == "webhook":
        return rest
    config = integrations.get(head)
    if head == "pagerduty":
        config = config or {}
        key = rest or config.get("routing_key", "")
        if not key:
            raise ValidationError(
                "pagerduty: has no routing key: set one (cronwatch integration set "
                "pagerduty routing_key=KEY) or write pagerduty:KEY"
            )
        url = f"pagerduty://{key}"
        if config.get("endpoint"):
            url += "?endpoint=" + quote(config["endpoint"], safe="")
        return url
    if not config:
        raise ValidationError(
            f"{redact(channel)!r} needs the {head} integration: cronwatch integration set "
            f"{head} ..."
        )
    if head == "email":
        user = quote(config.get("username", ""), safe="")
        password = quote(config.get("password", ""), safe="")
        auth = f"{user}:{password}@" if user else ""
        scheme = "mailtos" if config.get("tls") == "implicit" else "mailto"
        port = f":{config['port']}" if config.get("port") else ""
        sender = f"&from={quote(config['sender'], safe='@')}" if config.get("sender") else ""
        return f"{scheme}://{auth}{config['host']}{port}?to={quote(rest, safe='@')}{sender}"
    if head == "slack":
        name = rest.lstrip("#")
        url = config.get("#" + name) or config.get(name) or ""
        if not url:
            raise ValidationError(
                f"the slack integration has no webhook for #{name}: cronwatch integration "
                f"set slack '#{name}=https://hooks.slack.com/services/...'"
            )
        return url
    return config["url"].replace("{to}", quote(rest, safe="+"))  # sms
