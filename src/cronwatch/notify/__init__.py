"""Notification channels: one URL per channel, one ``send`` that delivers or raises.

    https://host/path               generic webhook: JSON body (``Message.payload``) or a template
    tgram://BOT_TOKEN/CHAT_ID       Telegram Bot API
    slack://T000/B000/XXXX          Slack incoming webhook (or https://hooks.slack.com/services/...)
    mailto://user:pass@host:587?to=a@example.com   email over SMTP (also smtp://, smtps://)
    pagerduty://ROUTING_KEY         PagerDuty Events API v2
    anything else                   Apprise, when the optional extra is installed

Cronitor's shorthands (``email:ADDRESS``, ``slack:#CHANNEL``, ``pagerduty:KEY``,
``sms:+NUMBER``, ``webhook:URL``) and notification list names are channels too:
``notify.shorthand`` resolves them with the integrations configured once.

Each channel is a plugin module with ``validate(url) -> str``, ``send(url, message, *,
timeout, template)`` and ``redact(url) -> str``. ``send`` makes one attempt (the outbox
retries) and raises ``DeliveryError`` with a one-line reason, or ``ValidationError`` when
the URL or template is wrong (retrying cannot help). No error shows a token or password.

Templates (``template=``) replace the body or text: ``$job``, ``$env``, ``$status``,
``$cause``, ``$kind`` (or ``$event``), ``$title``, ``$text``, ``$output_tail``, ``$run_id``,
``$exit_code``, ``$duration``, ``$at``, ``$dashboard_url``. For webhooks a template starting
with ``{`` or ``[`` is JSON (values are JSON-escaped, sent as application/json); any other
template is sent as text/plain.
"""

from __future__ import annotations

import importlib
import re
from typing import Protocol, cast

from cronwatch.core.errors import ValidationError
from cronwatch.notify.message import KINDS, PLACEHOLDERS, Message, check_template

__all__ = [
    "ACCEPTED",
    "KINDS",
    "PLACEHOLDERS",
    "Message",
    "redact",
    "send",
    "validate_channel",
    "validate_template",
]

ACCEPTED = (
    "https://host/path (webhook), tgram://BOT_TOKEN/CHAT_ID (Telegram), "
    "slack://T000/B000/XXXX or https://hooks.slack.com/services/... (Slack), "
    "mailto://user:pass@smtp.host:587?to=you@example.com or smtp:// / smtps:// (email), "
    "pagerduty://ROUTING_KEY, email:ADDRESS, slack:#CHANNEL, pagerduty:KEY, sms:+NUMBER, "
    "webhook:URL, the name of a notification list, "
    "or any Apprise URL with the apprise extra"
)
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BAD_CHAR_RE = re.compile(r"[\s\x00-\x1f\x7f]")


class Channel(Protocol):
    def validate(self, url: str) -> str: ...

    def send(
        self, url: str, message: Message, *, timeout: float, template: str | None = None
    ) -> None: ...

    def redact(self, url: str) -> str: ...


# scheme -> the module that delivers it, imported on first use: delivering to a webhook
# need not load smtplib, ssl and email for the email channel (or Apprise).
_BY_SCHEME = {"http": "webhook", "https": "webhook", "tgram": "telegram", "slack": "slack",
              "mailto": "email", "mailtos": "email", "smtp": "email", "smtps": "email",
              "pagerduty": "pagerduty"}  # fmt: skip


def _scheme(url: str) -> str:
    match = _SCHEME_RE.match(url)
    return match.group(1).lower() if match else ""


def _module_name(url: str) -> str:
    scheme = _scheme(url)
    if scheme in ("http", "https"):
        from cronwatch.notify import slack  # light beside the webhook's own imports

        if slack.is_slack_url(url):  # https://hooks.slack.com/...: Slack's, not a webhook
            return "slack"
    return _BY_SCHEME.get(scheme, "apprise")


def _channel(url: str) -> Channel:
    return cast(Channel, importlib.import_module(f"cronwatch.notify.{_module_name(url)}"))


def validate_channel(url: str) -> str:
    """Return the normalised channel URL, or raise ValidationError saying what is accepted."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(f"empty notification channel: expected {ACCEPTED}")
    text = url.strip()
    if _BAD_CHAR_RE.search(text):
        raise ValidationError(
            f"invalid channel {redact(text)!r}: spaces and control characters are not allowed "
            "(percent-encode them, e.g. %20)"
        )
    scheme = _scheme(text)
    if not scheme:
        from cronwatch.notify import shorthand

        if shorthand.is_shorthand(text):
            return shorthand.validate_shorthand(text)
        if shorthand.is_list_name(text):
            return text  # a notification list, expanded when an alert is queued
        raise ValidationError(f"invalid channel {redact(text)!r}: no scheme; expected {ACCEPTED}")
    channel = _channel(text)
    from cronwatch.notify import apprise  # loaded by _channel already when it is the one

    if channel is apprise and not apprise.available():
        raise ValidationError(
            f"unsupported channel {redact(text)!r}: {apprise.INSTALL_HINT}; "
            f"built in: {ACCEPTED.rpartition(', or ')[0]}"
        )
    try:
        return channel.validate(text)
    except ValidationError:
        raise
    except ValueError as e:  # urlsplit on e.g. an unbalanced IPv6 bracket
        raise ValidationError(
            f"invalid channel {redact(text)!r}: {e}; expected {ACCEPTED}"
        ) from None


def validate_template(template: str) -> str:
    """Return ``template``, or raise ValidationError if it looks like JSON but is not."""
    return check_template(template)


def send(
    url: str,
    message: Message,
    *,
    timeout: float = 10.0,
    template: str | None = None,
    integrations: dict[str, dict[str, str]] | None = None,
) -> None:
    """Deliver ``message`` once, or raise DeliveryError (transport, bad answer) or
    ValidationError (bad URL or template). ``timeout`` bounds each network operation.
    ``integrations``: what the shorthands (``email:...``) resolve with."""
    if not timeout > 0:
        raise ValidationError(f"invalid timeout {timeout!r}: expected a positive number of seconds")
    normalised = validate_channel(url)
    if not _scheme(normalised):
        from cronwatch.notify import shorthand as shorthands

        if not shorthands.is_shorthand(normalised):
            raise ValidationError(f"no notification list named {normalised!r}")
        normalised = validate_channel(shorthands.resolve(normalised, integrations or {}))
    _channel(normalised).send(normalised, message, timeout=timeout, template=template)


def redact(url: str) -> str:
    """The URL with tokens and passwords replaced by ``***``, for logs and ``incidents``."""
    text = str(url).strip()
    if not _scheme(text):
        from cronwatch.notify import shorthand

        if shorthand.is_shorthand(text):
            return shorthand.redact(text)
        if shorthand.is_list_name(text):
            return text
        return "***"
    try:
        return _channel(text).redact(text)
    except ValueError:
        return f"{_scheme(text)}://***"
