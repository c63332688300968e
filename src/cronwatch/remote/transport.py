"""How to reach a server: the settings, and the replaceable HTTP transport (stdlib only).

Settings come from arguments, else $CRONWATCH_URL, $CRONWATCH_KEY, $CRONWATCH_TOKEN,
$CRONWATCH_TIMEOUT, $CRONWATCH_DIALECT, else the ``[server]`` table of the config file::

    [server]
    url = "https://cron.example.com"
    key = "project-ping-key"
    timeout = "3s"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cronwatch.system import state_dir

DEFAULT_TIMEOUT = 3.0


class Transport(Protocol):
    """What sends a request. Replace it in tests; raise OSError when the server is away."""

    def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, bytes]: ...


class UrllibTransport:
    """The default transport: ``urllib.request``, bounded to ``timeout`` in total.

    A socket timeout bounds each read, not name resolution or a server that trickles
    bytes, so the request runs in a daemon thread and we stop waiting at the deadline.
    """

    def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float
    ) -> tuple[int, bytes]:
        import threading

        box: list[tuple[int, bytes] | BaseException] = []

        def work() -> None:
            try:
                box.append(_urlopen(method, url, body, headers, timeout))
            except BaseException as e:  # handed to the caller below
                box.append(e)

        t = threading.Thread(target=work, name="cronwatch-http", daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            raise TimeoutError(f"no answer within {timeout:g}s")
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result


def _urlopen(
    method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float
) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), r.read(65536)
    except urllib.error.HTTPError as e:  # an answer, not a transport failure
        try:
            text = e.read(65536)
        except OSError:
            text = b""
        return int(e.code), text


@dataclass(slots=True)
class Settings:
    """Where and how to report. ``server`` empty means: no server, record locally."""

    server: str = ""
    key: str = ""
    token: str = ""
    timeout: float = DEFAULT_TIMEOUT
    dialect: str = ""  # "" picks by the URL: a path ending in /jobs/p is simob
    transport: Transport | None = None

    @classmethod
    def resolve(
        cls,
        *,
        server: str | None = None,
        key: str | None = None,
        token: str | None = None,
        timeout: float | str | None = None,
        dialect: str | None = None,
        config: str | None = None,
        transport: Transport | None = None,
    ) -> Settings:
        """Arguments first, then $CRONWATCH_URL/_KEY/_TOKEN/_TIMEOUT/_DIALECT, then the
        ``[server]`` table of the config file (url, key, token, timeout, dialect)."""
        env = os.environ
        given = {"url": server, "key": key, "token": token, "timeout": timeout, "dialect": dialect}
        values: dict[str, Any] = {}
        for name, value in given.items():
            values[name] = (
                value if value not in (None, "") else env.get(f"CRONWATCH_{name.upper()}")
            )
        if not values["url"] or not values["key"]:
            for name, value in _config_server(config).items():
                if values.get(name) in (None, ""):
                    values[name] = value
        return cls(
            server=str(values["url"] or ""),
            key=str(values["key"] or ""),
            token=str(values["token"] or ""),
            timeout=parse_timeout(values["timeout"]),
            dialect=str(values["dialect"] or "").lower(),
            transport=transport,
        )


def parse_timeout(value: object) -> float:
    """Seconds ("3", "2.5", "3s", "500ms"); anything unusable is the default."""
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    text = str(value).strip().lower()
    scale = 0.001 if text.endswith("ms") else 1.0
    try:
        seconds = float(text.removesuffix("ms").removesuffix("s")) * scale
    except ValueError:
        return DEFAULT_TIMEOUT
    return seconds if 0 < seconds < 3600 else DEFAULT_TIMEOUT


def _config_server(path: str | None) -> dict[str, Any]:
    if path is None:
        from cronwatch.system import config_path

        path = config_path()
    if not os.path.exists(path):
        return {}
    import tomllib

    try:
        with open(path, "rb") as f:
            table = tomllib.load(f).get("server", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}  # `cronwatch apply` reports a broken config; a job must not fail over it
    return table if isinstance(table, dict) else {}


def upsert_job(s: Settings, api: str, name: str, settings: dict[str, Any]) -> None:
    """PATCH a job's settings through the management API at ``api``; create the job if it
    does not exist (PUT would reset the settings not given). Raises OSError on failure."""
    import json
    from urllib.parse import quote

    transport = s.transport or UrllibTransport()
    headers = {"Authorization": f"Bearer {s.token}", "Content-Type": "application/json"}
    url = f"{api}/jobs"
    body = json.dumps(settings).encode()
    status, text = transport.send("PATCH", f"{url}/{quote(name)}", body, headers, s.timeout)
    if status == 404:
        create = json.dumps({"name": name, **settings}).encode()
        status, text = transport.send("POST", url, create, headers, s.timeout)
        if status == 409:  # created meanwhile by someone else
            status, text = transport.send("PATCH", f"{url}/{quote(name)}", body, headers, s.timeout)
    if not 200 <= status < 300:
        raise OSError(f"settings not saved: HTTP {status} {text[:200].decode(errors='replace')}")


# --- whether a key is a job's or the project's: learnt on first use, kept by a hash of the
# --- server and the key (never the key itself)

_KINDS: dict[str, str] = {}


def _kind_id(origin: str, key: str) -> str:
    import hashlib

    return hashlib.sha256(f"{origin}\0{key}".encode()).hexdigest()[:24]


def key_kind(origin: str, key: str) -> str:
    """ "job", "project", or "" when not known yet."""
    if not _KINDS:
        import json

        try:
            with open(os.path.join(state_dir(), "ping-keys.json"), "rb") as f:
                _KINDS.update(json.loads(f.read()))
        except (OSError, ValueError):
            pass
    kind = _KINDS.get(_kind_id(origin, key), "")
    return kind if kind in ("job", "project") else ""


def remember_key_kind(origin: str, key: str, kind: str) -> None:
    ident = _kind_id(origin, key)
    if _KINDS.get(ident) == kind:
        return
    _KINDS[ident] = kind
    import json

    path = os.path.join(state_dir(), "ping-keys.json")
    try:
        os.makedirs(state_dir(), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(_KINDS, f)
        os.replace(tmp, path)
    except OSError:
        pass  # it only costs one extra request next time
