"""Telegram: ``tgram://BOT_TOKEN/CHAT_ID[/CHAT_ID...]`` through the Bot API's sendMessage.

The API base is ``https://api.telegram.org``, or ``$CRONWATCH_TELEGRAM_API`` (tests, proxies).
"""

from __future__ import annotations

import json
import os
import re

from cronwatch.core.errors import ValidationError
from cronwatch.notify._http import post
from cronwatch.notify.message import Message

SCHEMES = ("tgram",)
FORM = "tgram://BOT_TOKEN/CHAT_ID"
DEFAULT_API = "https://api.telegram.org"
MAX_TEXT = 4096  # Telegram rejects longer messages
_TOKEN_RE = re.compile(r"(?:bot)?(\d+:[A-Za-z0-9_-]+)")
_CHAT_RE = re.compile(r"-?\d+|@[A-Za-z][A-Za-z0-9_]{3,}")


def _parse(url: str) -> tuple[str, list[str]]:
    rest = url.split("://", 1)[1].split("?", 1)[0].split("#", 1)[0]
    token, *chats = [p for p in rest.split("/") if p] or [""]
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise ValidationError(
            f"invalid Telegram channel {redact(url)!r}: the bot token looks like "
            f"123456789:AAH...; expected {FORM}"
        )
    if not chats:
        raise ValidationError(
            f"invalid Telegram channel {redact(url)!r}: no chat id; expected {FORM}"
        )
    for chat in chats:
        if not _CHAT_RE.fullmatch(chat):
            raise ValidationError(
                f"invalid Telegram chat id {chat!r}: a number such as -1001234567890 or @channelname"
            )
    return match.group(1), chats


def validate(url: str) -> str:
    token, chats = _parse(url)
    return f"tgram://{token}/" + "/".join(chats)


def send(url: str, message: Message, *, timeout: float, template: str | None = None) -> None:
    token, chats = _parse(url)
    text = message.render(template) if template is not None else message.text()
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    api = os.environ.get("CRONWATCH_TELEGRAM_API", DEFAULT_API).rstrip("/")
    for chat in chats:
        body = {"chat_id": chat, "text": text, "disable_web_page_preview": True}
        post(
            f"{api}/bot{token}/sendMessage",
            json.dumps(body, ensure_ascii=False).encode("utf-8"),
            content_type="application/json",
            timeout=timeout,
            label=f"Telegram chat {chat}",
        )


def redact(url: str) -> str:
    """``tgram://123:AAH.../-100123`` -> ``tgram://***/-100123``."""
    rest = url.split("://", 1)[-1].split("?", 1)[0]
    chats = [p for p in rest.split("/")[1:] if p]
    return "tgram://***" + "".join(f"/{c}" for c in chats)
