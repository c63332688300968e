"""Notification channels against real local receivers (HTTP and SMTP on 127.0.0.1)."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cronwatch.core.errors import DeliveryError, ValidationError
from cronwatch.notify import Message, redact, send, validate_channel, validate_template
from cronwatch.notify import apprise as apprise_channel
from cronwatch.notify import email as email_channel

TOKEN = "123456789:AAHsecretTOKENvalue_-x"


# --- receivers ------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server that records requests and answers ``status``/``reply`` after ``delay``."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)
    status: int = 200
    reply: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "*")  # keep urllib off any proxy configured on the host


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(Request("POST", self.path, dict(self.headers), body))
            if state.delay:
                state.release.wait(state.delay)
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(state.reply)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up (the timeout test)
                self.wfile.write(state.reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


@dataclass
class Mailbox:
    port: int = 0
    mails: list[dict[str, Any]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


class SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP: EHLO, AUTH PLAIN, MAIL, RCPT (refuses reject@...), DATA, QUIT."""

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        box: Mailbox = self.server.mailbox  # type: ignore[attr-defined]
        mail: dict[str, Any] = {"rcpt": []}
        self.reply("220 test ESMTP")
        while line := self.rfile.readline():
            verb, _, arg = line.decode().strip().partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.reply("250-test\r\n250-AUTH PLAIN\r\n250 8BITMIME")
            elif verb == "AUTH":
                box.logins.append(base64.b64decode(arg.split()[1]).decode())
                self.reply("235 ok")
            elif verb == "MAIL":
                mail["from"] = arg
                self.reply("250 ok")
            elif verb == "RCPT":
                refused = "reject@" in arg
                self.reply("550 no such user" if refused else "250 ok")
                mail["rcpt"] += [] if refused else [arg]
            elif verb == "DATA":
                self.reply("354 go ahead")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += (chunk[1:] if chunk.startswith(b"..") else chunk).replace(
                        b"\r\n", b"\n"
                    )
                box.mails.append(
                    {**mail, "message": email.message_from_bytes(data, policy=email.policy.default)}
                )
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok" if verb in ("RSET", "NOOP", "HELO") else "502 unknown")


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
    server.daemon_threads = True
    box = Mailbox(port=server.server_address[1])
    server.mailbox = box  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield box
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alert(**kw: Any) -> Message:
    values: dict[str, Any] = {
        "kind": "alert",
        "job": "backup",
        "status": "failed",
        "cause": "2 consecutive failures: exit 3",
        "run": {"id": "r1", "started_at": 1774747800.0, "duration": 3.2, "exit_code": 3,
                "stdout": "big", "stderr": "big"},
        "output_tail": 'disk "full"\n<!channel> & done\n',
        "env": "prod",
        "at": 1774747803.5,
        "dashboard_url": "http://cron.example/jobs/backup",
    }  # fmt: skip
    values.update(kw)
    return Message(**values)


# --- the message ----------------------------------------------------------------------


def test_message_title_text_and_payload() -> None:
    m = alert()
    assert m.title() == "cronwatch: backup (prod) is DOWN — 2 consecutive failures: exit 3"
    text = m.text()
    assert text.startswith(m.title() + "\n")
    assert "exit code 3" in text and "took 3.20s" in text and 'disk "full"' in text
    assert "dashboard: http://cron.example/jobs/backup" in text
    body = json.loads(m.to_json())
    assert body == {
        "event": "alert",
        "job": "backup",
        "env": "prod",
        "status": "failed",
        "cause": "2 consecutive failures: exit 3",
        "title": m.title(),
        "at": "2026-03-29T01:30:03.500Z",
        "run": {"id": "r1", "started_at": 1774747800.0, "duration": 3.2, "exit_code": 3},
        "output_tail": 'disk "full"\n<!channel> & done\n',
        "dashboard_url": "http://cron.example/jobs/backup",
    }


@pytest.mark.parametrize(
    ("kind", "env", "cause", "title"),
    [
        ("recovery", "", "succeeded", "cronwatch: backup is UP again — succeeded"),
        ("reminder", "", "down for 2h", "cronwatch: backup is still DOWN — down for 2h"),
        ("test", "", "", "cronwatch: test notification for backup"),
        ("alert", "", "line one\nline two", "cronwatch: backup is DOWN — line one line two"),
    ],
)
def test_message_titles(kind: str, env: str, cause: str, title: str) -> None:
    assert Message(kind, "backup", "success", cause, env=env).title() == title


def test_message_rejects_unknown_kind_and_round_trips() -> None:
    with pytest.raises(ValidationError, match="invalid message kind 'boom'"):
        Message("boom", "backup", "failed")
    m = alert()
    assert Message.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert Message("test", "j", "success").run is None


# --- webhook --------------------------------------------------------------------------


def test_webhook_posts_the_json_payload(receiver: Receiver) -> None:
    send(receiver.url("/hook?x=1"), alert())
    (req,) = receiver.requests
    assert req.path == "/hook?x=1"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("cronwatch/")
    assert req.json() == alert().payload()


def test_webhook_json_template_escapes_values(receiver: Receiver) -> None:
    template = (
        '{"msg": "$job is $status: $cause", "out": "$output_tail", "run": "$run_id", "k": "$kind"}'
    )
    send(receiver.url(), alert(), template=template)
    (req,) = receiver.requests
    assert req.headers["Content-Type"] == "application/json"
    assert req.json() == {
        "msg": "backup is failed: 2 consecutive failures: exit 3",
        "out": 'disk "full"\n<!channel> & done\n',
        "run": "r1",
        "k": "alert",
    }


def test_webhook_text_template_is_plain_text(receiver: Receiver) -> None:
    send(receiver.url(), alert(), template="$job [$env] $status $unknown")
    (req,) = receiver.requests
    assert req.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert req.body == b"backup [prod] failed $unknown"


def test_webhook_bad_json_template_is_a_validation_error(receiver: Receiver) -> None:
    with pytest.raises(ValidationError, match="not valid JSON"):
        validate_template('{"text": $cause}')
    with pytest.raises(ValidationError):
        send(receiver.url(), alert(), template='{"text": $cause}')
    assert receiver.requests == []
    assert validate_template("plain $job") == "plain $job"


def test_webhook_basic_auth_from_the_url(receiver: Receiver) -> None:
    send(f"http://ops:s3cret@127.0.0.1:{receiver.port}/hook", alert())
    (req,) = receiver.requests
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"ops:s3cret").decode()
    receiver.status = 401
    with pytest.raises(DeliveryError) as e:
        send(f"http://ops:s3cret@127.0.0.1:{receiver.port}/hook", alert())
    assert "HTTP 401" in str(e.value) and "s3cret" not in str(e.value)


def test_webhook_error_status_reports_code_and_body_start(receiver: Receiver) -> None:
    receiver.status, receiver.reply = 500, b"internal\n  error " + b"x" * 500
    with pytest.raises(DeliveryError) as e:
        send(receiver.url(), alert())
    message = str(e.value)
    assert "HTTP 500 Internal Server Error: internal error xxx" in message
    assert "\n" not in message and len(message) < 300 and message.endswith("…")


def test_webhook_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.status, receiver.headers = 302, {"Location": "http://127.0.0.1:1/secret"}
    with pytest.raises(DeliveryError, match="HTTP 302 .*redirect") as e:
        send(receiver.url(), alert())
    assert "secret" not in str(e.value)
    assert len(receiver.requests) == 1


def test_connection_refused_is_a_delivery_error() -> None:
    with pytest.raises(DeliveryError, match="connection refused"):
        send(f"http://127.0.0.1:{closed_port()}/hook", alert())


def test_slow_receiver_times_out(receiver: Receiver) -> None:
    receiver.delay = 5
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"timed out after 0\.3s"):
        send(receiver.url(), alert(), timeout=0.3)
    assert time.monotonic() - started < 2


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="invalid timeout"):
        send("https://example.com/hook", alert(), timeout=0)


# --- Telegram and Slack ---------------------------------------------------------------


def test_telegram_sends_to_each_chat(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRONWATCH_TELEGRAM_API", receiver.url("/tg/"))
    send(f"tgram://{TOKEN}/-1001234/@opschannel", alert())
    assert [r.path for r in receiver.requests] == [f"/tg/bot{TOKEN}/sendMessage"] * 2
    assert [r.json()["chat_id"] for r in receiver.requests] == ["-1001234", "@opschannel"]
    assert receiver.requests[0].json()["text"] == alert().text()


def test_telegram_long_text_is_cut_and_errors_hide_the_token(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONWATCH_TELEGRAM_API", receiver.url(""))
    send(f"tgram://bot{TOKEN}/42", alert(output_tail="y" * 9000))
    assert len(receiver.requests[0].json()["text"]) == 4096
    receiver.status, receiver.reply = (
        400,
        b'{"ok":false,"description":"Bad Request: chat not found"}',
    )
    with pytest.raises(DeliveryError) as e:
        send(f"tgram://{TOKEN}/42", alert())
    assert "HTTP 400" in str(e.value) and "chat not found" in str(e.value)
    assert TOKEN not in str(e.value) and "AAH" not in str(e.value)


@pytest.mark.parametrize(
    "url", ["slack://T000/B000/XXXXsecret", "https://hooks.slack.com/services/T000/B000/XXXXsecret"]
)
def test_slack_posts_escaped_text(
    url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONWATCH_SLACK_API", receiver.url("/services"))
    send(url, alert())
    (req,) = receiver.requests
    assert req.path == "/services/T000/B000/XXXXsecret"
    text = req.json()["text"]
    assert text.startswith("*cronwatch: backup (prod) is DOWN")
    assert "&lt;!channel&gt; &amp; done" in text and "<!channel>" not in text
    receiver.status, receiver.reply = 403, b"invalid_token"
    with pytest.raises(DeliveryError, match="HTTP 403 Forbidden: invalid_token") as e:
        send(url, alert())
    assert "XXXXsecret" not in str(e.value)


# --- email ----------------------------------------------------------------------------


def test_email_arrives_with_subject_and_body(smtp_server: Mailbox) -> None:
    url = (
        f"mailto://me%40example.com:pa%3Ass@127.0.0.1:{smtp_server.port}"
        "?to=ops@example.com,dev@example.com"
    )
    send(url, alert())
    (mail,) = smtp_server.mails
    assert smtp_server.logins == ["\0me@example.com\0pa:ss"]
    assert mail["from"] == "FROM:<me@example.com>"
    assert mail["rcpt"] == ["TO:<ops@example.com>", "TO:<dev@example.com>"]
    msg = mail["message"]
    assert msg["Subject"] == alert().title()
    assert msg["To"] == "ops@example.com, dev@example.com"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content().rstrip("\n") == alert().text()


def test_email_template_and_explicit_sender(smtp_server: Mailbox) -> None:
    url = f"smtp://127.0.0.1:{smtp_server.port}?to=ops@example.com&from=cron@example.com"
    send(url, alert(), template="$job: $cause")
    (mail,) = smtp_server.mails
    assert smtp_server.logins == []  # no user in the URL, no AUTH
    assert mail["message"]["From"] == "cron@example.com"
    assert mail["message"].get_content().strip() == "backup: 2 consecutive failures: exit 3"


def test_email_refused_recipient(smtp_server: Mailbox) -> None:
    with pytest.raises(DeliveryError, match="recipients refused: reject@example.com \\(550"):
        send(f"mailto://127.0.0.1:{smtp_server.port}?to=reject@example.com", alert())


def test_email_transport_errors(smtp_server: Mailbox) -> None:
    # smtps to a plain-text server: the TLS handshake fails.
    with pytest.raises(DeliveryError, match="email via 127.0.0.1"):
        send(f"smtps://u:pw@127.0.0.1:{smtp_server.port}?to=a@example.com", alert(), timeout=2)
    with pytest.raises(DeliveryError, match="connection refused"):
        send(f"mailto://127.0.0.1:{closed_port()}?to=a@example.com", alert())


@pytest.mark.parametrize(
    ("url", "port", "implicit_tls"),
    [
        ("mailto://smtp.example.com?to=a@b.c", 587, False),
        ("mailto://localhost?to=a@b.c", 25, False),
        ("smtps://smtp.example.com?to=a@b.c", 465, True),
        ("mailtos://smtp.example.com?to=a@b.c", 465, True),
        ("mailto://smtp.example.com:465?to=a@b.c", 465, True),
    ],
)
def test_email_ports_and_tls(url: str, port: int, implicit_tls: bool) -> None:
    target = email_channel.parse(url)
    assert (target.port, target.implicit_tls) == (port, implicit_tls)


# --- validation and redaction ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("  HTTPS://Example.COM/Hook?a=1#frag ", "https://example.com/Hook?a=1"),
        ("http://u:p@Example.com:8080", "http://u:p@example.com:8080/"),
        (f"tgram://bot{TOKEN}/-100123/", f"tgram://{TOKEN}/-100123"),
        ("slack://T000/B000/XXXX", "slack://T000/B000/XXXX"),
        ("https://HOOKS.slack.com/services/T0/B0/X0", "https://hooks.slack.com/services/T0/B0/X0"),
        (
            "MAILTO://u:p@SMTP.example.com:587?to=a@b.c",
            "mailto://u:p@smtp.example.com:587?to=a@b.c",
        ),
    ],
)
def test_validate_channel_normalises(url: str, expected: str) -> None:
    assert validate_channel(url) == expected


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://x", "install the apprise extra \\(pip install 'cronwatch\\[apprise\\]'\\)"),
        ("discord://id/token", "unsupported channel 'discord://\\*\\*\\*'"),
        ("tgram://onlytoken", "bot token"),
        (f"tgram://{TOKEN}", "no chat id"),
        (f"tgram://{TOKEN}/not a chat", "spaces"),
        (f"tgram://{TOKEN}/chat!", "invalid Telegram chat id"),
        ("mailto://", "no SMTP host"),
        ("mailto://smtp.example.com", "no recipient"),
        ("mailto://smtp.example.com?to=nobody", "'nobody' is not an email address"),
        ("mailto://smtp.example.com?to=a@b.c&cc=x@y.z", "unknown option 'cc'"),
        ("https://", "no host"),
        ("http://example.com:99999/", "bad port"),
        ("https://exa mple.com/hook", "spaces"),
        ("https://example.com/\x00", "control characters"),
        ("example.com/hook", "no scheme"),
        ("", "empty notification channel"),
        ("slack://T000/B000", "expected slack://T000/B000/XXXX"),
        ("https://hooks.slack.com/other/T/B/C", "invalid Slack channel"),
    ],
)
def test_validate_channel_rejects(url: str, error: str) -> None:
    with pytest.raises(ValidationError, match=error) as e:
        validate_channel(url)
    assert TOKEN not in str(e.value)


def test_unknown_scheme_without_apprise_lists_the_builtin_forms() -> None:
    assert not apprise_channel.available()  # the extra is not installed in the test env
    with pytest.raises(ValidationError) as e:
        send("discord://webhook_id/webhook_token", alert())
    message = str(e.value)
    assert "webhook_token" not in message
    assert "tgram://BOT_TOKEN/CHAT_ID" in message and "mailto://" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"tgram://{TOKEN}/-100123", "tgram://***/-100123"),
        ("slack://T000/B000/XXXX", "slack://T000/B000/***"),
        ("https://hooks.slack.com/services/T0/B0/X0", "https://hooks.slack.com/services/T0/B0/***"),
        (
            "mailto://me@x.org:pw@smtp.x.org:587?to=a@b.c",
            "mailto://me@x.org:***@smtp.x.org:587?to=a@b.c",
        ),
        (
            "https://u:pw@example.com/hooks/abc123?key=s",
            "https://u:***@example.com/hooks/***?key=***",
        ),
        ("https://tok@example.com/api/webhooks", "https://***@example.com/api/webhooks"),
        ("discord://id/token", "discord://***"),
        ("not a url", "***"),
    ],
)
def test_redact_hides_secrets(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_slack_template_keeps_markup_and_escapes_values(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRONWATCH_SLACK_API", receiver.url(""))
    send("slack://T0/B0/X0", alert(), template="<$dashboard_url|$job> $output_tail")
    text = receiver.requests[0].json()["text"]
    assert text.startswith("<http://cron.example/jobs/backup|backup> disk")
    assert "&lt;!channel&gt;" in text


def test_a_server_that_does_not_speak_http(smtp_server: Mailbox) -> None:
    with pytest.raises(DeliveryError, match=r"not an HTTP answer \(220 test ESMTP\)"):
        send(f"http://127.0.0.1:{smtp_server.port}/hook", alert(), timeout=2)


# --- Cronitor's shorthands and the integrations they use --------------------------------------


def test_shorthands_validate_redact_and_resolve() -> None:
    from cronwatch.notify import redact, validate_channel
    from cronwatch.notify.shorthand import resolve

    assert validate_channel("EMAIL:team@company.com") == "email:team@company.com"
    assert validate_channel("on-call-team") == "on-call-team"  # a notification list
    for bad in ("email:nobody", "slack:", "sms:call-me", "webhook:ftp://x", "pagerduty:a b",
                "On Call", "teams:#x"):  # fmt: skip
        with pytest.raises(ValidationError):
            validate_channel(bad)
    assert redact("pagerduty:R0UT1NG") == "pagerduty:***"
    assert (
        redact("webhook:https://u:pw@example.com/hook") == "webhook:https://u:***@example.com/hook"
    )
    integrations = {
        "email": {"host": "smtp.example.com", "port": "587", "username": "cron",
                  "password": "p@ss", "sender": "cron@example.com"},
        "slack": {"#alerts": "https://hooks.slack.com/services/T0/B0/XYZ"},
        "sms": {"url": "twilio://SID:TOKEN@+15550001111/{to}"},
    }  # fmt: skip
    assert resolve("email:team@company.com", integrations) == (
        "mailto://cron:p%40ss@smtp.example.com:587?to=team@company.com&from=cron@example.com"
    )
    assert resolve("slack:#alerts", integrations).endswith("/T0/B0/XYZ")
    assert (
        resolve("sms:+15551234567", integrations) == "twilio://SID:TOKEN@+15550001111/+15551234567"
    )
    assert resolve("pagerduty:KEY1", {}) == "pagerduty://KEY1"
    with pytest.raises(ValidationError, match="routing key"):
        resolve("pagerduty:", {})
    with pytest.raises(ValidationError, match="no webhook for #ops"):
        resolve("slack:#ops", integrations)
    with pytest.raises(ValidationError, match="email integration"):
        resolve("email:a@b.c", {})


def test_integrations_are_checked_and_redacted() -> None:
    from cronwatch.notify.integrations import redact_integration, validate_integration

    email = validate_integration("email", {"host": "smtp.example.com", "port": 587,
                                           "password": "secret"})  # fmt: skip
    assert email["port"] == "587" and redact_integration("email", email)["password"] == "***"
    slack = validate_integration("slack", {"alerts": "https://hooks.slack.com/services/T0/B0/XYZ"})
    assert list(slack) == ["#alerts"]
    assert "XYZ" not in json.dumps(redact_integration("slack", slack))
    for name, config in (("email", {}), ("email", {"host": "h", "tls": "maybe"}),
                         ("teams", {}), ("sms", {"url": "https://x.example/no-placeholder"}),
                         ("pagerduty", {"endpoint": "ftp://x"}), ("email", {"host": "h", "x": "1"}),
                         ("slack", {"#a": "not a url"})):  # fmt: skip
        with pytest.raises(ValidationError):
            validate_integration(name, config)


def test_pagerduty_triggers_and_resolves_with_one_dedup_key(receiver: Receiver) -> None:
    from urllib.parse import quote

    url = f"pagerduty://R0UT1NG?endpoint={quote(receiver.url(), safe='')}"
    send(url, alert())
    send(url, Message(kind="recovery", job="backup", env="prod", status="success", cause="ok"))
    trigger, resolve_ = [r.json() for r in receiver.requests]
    assert trigger["routing_key"] == "R0UT1NG" and trigger["event_action"] == "trigger"
    assert resolve_["event_action"] == "resolve" and trigger["dedup_key"] == resolve_["dedup_key"]
    assert trigger["payload"]["summary"] == alert().title()
    assert redact(url) == "pagerduty://***"


def test_every_attempt_of_an_outbox_webhook_carries_the_same_idempotency_key(
    receiver: Receiver, tmp_path: Any
) -> None:
    """A replica that dies mid-send leaves the attempt to another, which sends it again:
    the receiver can tell the copies by one key (and two notifications apart)."""
    from cronwatch.app.evaluate import deliver_outbox
    from cronwatch.store import open_store

    now = 1_900_000_000.0
    with open_store(str(tmp_path / "h.db")) as store:
        store.start_run("nightly", now=now)
        for at in (now, now + 1):
            msg = Message(kind="alert", job="nightly", status="failed", at=at)
            store.enqueue_notification(job="nightly", incident_id=None, kind="alert",
                                       channel=receiver.url(), payload=msg.to_dict(), at=at)  # fmt: skip
        receiver.status = 500  # the first attempts fail: both are retried later
        assert deliver_outbox(store, now=now + 2) == 0
        receiver.status = 200
        assert deliver_outbox(store, now=now + 3600) == 2
    keys = [r.headers.get("Idempotency-Key") for r in receiver.requests]
    assert len(keys) == 4 and all(keys), keys
    first, second = keys[0], keys[1]
    assert first != second and keys[2:] == [first, second]
    assert "delivery" not in receiver.requests[0].json()  # the payload is as documented
