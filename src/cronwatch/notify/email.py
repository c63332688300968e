"""Email over SMTP with the stdlib.

    mailto://user:pass@smtp.example.com:587?to=ops@example.com,me@example.com&from=cron@example.com
    smtp://...  (same as mailto)     smtps://... / mailtos://...  (implicit TLS, port 465)

TLS: implicit with smtps/mailtos or port 465; otherwise STARTTLS, which is required (the
password and the output never cross a network in plain text) except to a loopback host
(a local MTA), where mail goes plain. Default port: 465 implicit, 25 loopback, else 587.
"""

from __future__ import annotations

import ipaddress
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qsl, unquote, urlsplit

from cronwatch.core.errors import DeliveryError, ValidationError
from cronwatch.notify._http import reason
from cronwatch.notify.message import Message

SCHEMES = ("mailto", "mailtos", "smtp", "smtps")
FORM = "mailto://user:pass@smtp.host:587?to=you@example.com[&from=me@example.com]"
_ADDRESS_RE = re.compile(r"[^@\s,<>\"]+@[^@\s,<>\"]+")


@dataclass(slots=True)
class Target:
    host: str
    port: int
    implicit_tls: bool
    user: str
    password: str
    to: list[str]
    sender: str

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _invalid(url: str, why: str) -> ValidationError:
    return ValidationError(f"invalid email channel {redact(url)!r}: {why}; expected {FORM}")


def parse(url: str) -> Target:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise _invalid(url, "bad port") from None
    if not parts.hostname:
        raise _invalid(url, "no SMTP host")
    to: list[str] = []
    sender = ""
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "to":
            to += [a.strip() for a in value.split(",") if a.strip()]
        elif key == "from":
            sender = value.strip()
        else:
            raise _invalid(url, f"unknown option {key!r} (accepted: to, from)")
    if not to:
        raise _invalid(url, "no recipient (?to=...)")
    for address in [*to, *([sender] if sender else [])]:
        if not _ADDRESS_RE.fullmatch(address):
            raise _invalid(url, f"{address!r} is not an email address")
    user = unquote(parts.username or "")
    implicit = parts.scheme.lower() in ("smtps", "mailtos") or port == 465
    target = Target(
        parts.hostname, port or 0, implicit, user, unquote(parts.password or ""), to, ""
    )
    target.port = port or (465 if implicit else 25 if target.loopback else 587)
    target.sender = sender or (user if "@" in user else f"cronwatch@{socket.gethostname()}")
    return target


def validate(url: str) -> str:
    parse(url)
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    return parts._replace(scheme=parts.scheme.lower(), netloc=user + at + host.lower()).geturl()


def build(target: Target, message: Message, body: str) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = message.title()
    mail["From"] = target.sender
    mail["To"] = ", ".join(target.to)
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = make_msgid(domain=target.sender.rpartition("@")[2] or None)
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to cronwatch
    mail["X-Cronwatch-Event"] = message.kind
    mail["X-Cronwatch-Job"] = message.job
    mail.set_content(body)
    return mail


def send(url: str, message: Message, *, timeout: float, template: str | None = None) -> None:
    target = parse(url)
    body = message.render(template) if template is not None else message.text()
    mail = build(target, message, body)
    label = f"email via {target.host}:{target.port}"
    context = ssl.create_default_context()
    try:
        if target.implicit_tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                target.host, target.port, timeout=timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(target.host, target.port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if not target.implicit_tls and not target.loopback:
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{label}: the server does not offer STARTTLS; refusing to send in "
                        "plain text (use smtps:// or port 465, or a relay on localhost)"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if target.user:
                smtp.login(target.user, target.password)
            smtp.send_message(mail, from_addr=target.sender, to_addrs=target.to)
    except smtplib.SMTPRecipientsRefused as e:
        refused = ", ".join(f"{a} ({c} {_text(m)})" for a, (c, m) in e.recipients.items())
        raise DeliveryError(f"{label}: recipients refused: {refused}") from None
    except smtplib.SMTPAuthenticationError as e:
        raise DeliveryError(
            f"{label}: login refused: {e.smtp_code} {_text(e.smtp_error)}"
        ) from None
    except smtplib.SMTPResponseException as e:
        raise DeliveryError(f"{label}: {e.smtp_code} {_text(e.smtp_error)}") from None
    except (smtplib.SMTPException, OSError) as e:
        raise DeliveryError(f"{label}: {reason(e, timeout)}") from None


def _text(answer: bytes | str) -> str:
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else answer
    return " ".join(text.split())[:200]


def redact(url: str) -> str:
    """Hide the password: ``mailto://user:***@smtp.host:587?to=...``."""
    scheme, sep, rest = url.partition("://")
    head, q, query = rest.partition("?")
    userinfo, at, host = head.rpartition("@")  # the user may itself be an address
    if at:
        userinfo = userinfo.split(":", 1)[0] + (":***" if ":" in userinfo else "")
    return f"{scheme}{sep}{userinfo}{at}{host}{q}{query}"
