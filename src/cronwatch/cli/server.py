"""CLI commands of the server: ``serve``, ``token`` and ``ping-key``."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from typing import Any

from cronwatch.cli.commands import add_common, positive_int
from cronwatch.core.errors import ValidationError
from cronwatch.core.model import validate_name
from cronwatch.core.values import format_time
from cronwatch.store import is_server_url, open_store


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not 0 < value < 1e6:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def register(sub: Any, command: Any) -> None:
    p = command(sub, "serve", cmd_serve,
                "run the monitoring server: ping API, management API, SSE, /metrics, scheduler",
                "cronwatch serve --host 0.0.0.0 --port 8000")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    # SUPPRESS: a default here would overwrite `cronwatch --db URL serve`'s (add_common)
    p.add_argument("--db", metavar="PATH|URL", default=argparse.SUPPRESS,
                   help="database (default: the wrapper's)")  # fmt: skip
    p.add_argument("--body-limit", type=positive_int, default=100_000, metavar="BYTES",
                   help="bytes of a ping body kept as output (default 100000)")  # fmt: skip
    p.add_argument("--keepalive", type=float, default=15.0, metavar="SECONDS",
                   help="seconds between SSE keep-alive comments (default 15)")  # fmt: skip
    p.add_argument("--max-streams", type=positive_int, default=1000, metavar="N",
                   help="event streams (/api/v1/stream) open at once; more are answered 503 "
                        "(default 1000)")  # fmt: skip
    p.add_argument("--max-streams-per-token", type=positive_int, default=10, metavar="N",
                   help="event streams one API token may hold open; more are answered 429 "
                        "(default 10)")  # fmt: skip
    p.add_argument("--stream-backlog", type=positive_int, default=1 << 20, metavar="BYTES",
                   help="bytes an event stream may fall behind before it is closed; its client "
                        "reconnects and resumes (default 1048576)")  # fmt: skip
    p.add_argument(
        "--no-scheduler", action="store_true", help="do not run missed-run checks and alerts"
    )
    p.add_argument("--ping-writer", choices=("process", "thread"), default="process",
                   help="record pings in a child process (default: uses a second core) or "
                        "in a thread of the server process")  # fmt: skip
    p.add_argument("--ping-writers", type=positive_int, default=None, metavar="N",
                   help="ping writer processes: with PostgreSQL 2 by default (the second "
                        "takes the pings the first has no room for, so their statements "
                        "overlap under load), with SQLite always 1 (its one writer)")  # fmt: skip
    p.add_argument("--front", choices=("fast", "uvicorn"), default="fast",
                   help="the HTTP front: fast (the default: plain pings that arrive whole are "
                        "parsed and answered by cronwatch itself, everything else by uvicorn "
                        "under the same limits) or uvicorn (every request through uvicorn's "
                        "httptools protocol)")  # fmt: skip
    g = p.add_argument_group("limits (a client over one is answered 4xx/503 and closed)")
    g.add_argument("--head-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                   help="seconds a client has to send a request's head (default 10)")  # fmt: skip
    g.add_argument("--body-timeout", type=positive_float, default=30.0, metavar="SECONDS",
                   help="seconds a client has to send a request's body (default 30)")  # fmt: skip
    g.add_argument("--max-connections", type=positive_int, default=4096, metavar="N",
                   help="open connections in all (default 4096, lowered to fit the "
                        "descriptor limit)")  # fmt: skip
    g.add_argument("--max-connections-per-address", type=positive_int, default=256, metavar="N",
                   help="open connections from one client address, or one IPv6 /64 "
                        "(default 256)")  # fmt: skip
    g.add_argument("--max-body", type=positive_int, default=1 << 20, metavar="BYTES",
                   help="largest request body accepted, 413 beyond (default 1048576)")  # fmt: skip
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    g = p.add_argument_group("several replicas on one database (docs/deployment.md)")
    g.add_argument("--replica-id", metavar="NAME", default="",
                   help="this replica's name in /metrics and the logs (default host:pid)")  # fmt: skip
    g.add_argument("--leader-ttl", type=positive_float, default=5.0, metavar="SECONDS",
                   help="how long the scheduler's leader lease outlives its last renewal: "
                        "when the leader dies, another replica takes over within about "
                        "this long (default 5)")  # fmt: skip
    p.add_argument("--session-hours", type=positive_float, default=12.0, metavar="HOURS",
                   help="how long a console sign-in lasts (default 12)")  # fmt: skip
    p.add_argument("--trusted-user-header", metavar="HEADER",
                   help="sign console users in by this request header (e.g. X-Forwarded-User), "
                        "set by an SSO proxy in front; only safe when every request passes "
                        "through that proxy and it strips the header from clients "
                        "(docs/console.md)")  # fmt: skip
    p.add_argument("--public-metrics", action="store_true",
                   help="serve /metrics without a token (it lists every job's name and state; "
                        "by default any API token, read-only included, is needed)")  # fmt: skip

    p = command(sub, "token", cmd_token_help, "manage API tokens for the management API",
                "cronwatch token create --read-only grafana")  # fmt: skip
    tsub = p.add_subparsers(title="token commands", metavar="ACTION")
    t = command(tsub, "create", cmd_token_create, "create a token and print it once",
                "cronwatch token create --read-only grafana")  # fmt: skip
    t.add_argument("name", metavar="NAME")
    t.add_argument("--read-only", action="store_true", help="may read, never change")
    t.add_argument("--secret-from-stdin", action="store_true",
                   help="read the token from stdin instead of making one: keep a key carried "
                        "over from another system (echo $CRONITOR_API_KEY | cronwatch token "
                        "create cronitor --secret-from-stdin)")  # fmt: skip
    add_common(t, json_flag=False)
    t = command(tsub, "list", cmd_token_list, "list tokens (names, never the secrets)",
                "cronwatch token list")  # fmt: skip
    add_common(t, json_flag=False)
    t = command(
        tsub, "delete", cmd_token_delete, "delete a token", "cronwatch token delete grafana"
    )
    t.add_argument("name", metavar="NAME")
    add_common(t, json_flag=False)
    add_common(p, json_flag=False)

    p = command(sub, "ping-key", cmd_ping_key,
                "print the project ping key used by slug URLs (/ping/KEY/JOB)",
                "curl -fsS http://127.0.0.1:8000/ping/$(cronwatch ping-key)/backup\n"
                "cronwatch ping-key --set YOUR_CRONITOR_API_KEY   (keep Cronitor's telemetry URLs)")  # fmt: skip
    p.add_argument("--set", metavar="KEY", help="use KEY (carried over from another system) as the project ping key")  # fmt: skip
    add_common(p, json_flag=False)


def _open(args: argparse.Namespace) -> Any:
    return open_store(getattr(args, "db", None))


def cmd_serve(args: argparse.Namespace) -> int:
    try:  # the server extra: optional, and heavy for every other command
        import uvicorn

        from cronwatch.server.app import Config, create_app
    except ImportError as e:
        raise ValidationError(
            f"the server needs the server extra: pip install 'cronwatch[server]' ({e})"
        ) from None
    if not 0 <= args.port <= 65535:
        raise ValidationError(f"invalid port {args.port}")
    if args.body_limit > args.max_body:
        raise ValidationError(
            f"--body-limit ({args.body_limit}) cannot be larger than --max-body ({args.max_body})"
        )
    if args.leader_ttl < 1:
        raise ValidationError(
            f"--leader-ttl must be at least 1 second, got {args.leader_ttl:g} (the lease is "
            "renewed four times per ttl: shorter would keep the database busy)"
        )
    if len(args.replica_id) > 100 or not args.replica_id.isprintable():
        raise ValidationError("--replica-id: at most 100 printable characters")
    opened = _open(args)  # fail early, with a one-line message, on a bad database
    server_db = is_server_url(opened.url)
    opened.close()
    if server_db:
        # the server's pool: imported only once it starts, where a missing one would be
        # an "Application startup failed" from uvicorn
        try:
            import psycopg_pool  # noqa: F401
        except ImportError as e:
            raise ValidationError(
                f"PostgreSQL storage needs psycopg-pool ({e}): pip install 'cronwatch[postgres]'"
            ) from None
    process = args.ping_writer == "process"
    writers = args.ping_writers or (2 if server_db and process else 1)
    if writers > 1 and not server_db:
        raise ValidationError(
            f"--ping-writers {writers}: SQLite has one writer at a time, so one ping writer "
            "(more need a postgresql:// database)"
        )
    if writers > 1 and not process:
        raise ValidationError(f"--ping-writers {writers} needs --ping-writer process")
    if writers > 16:
        raise ValidationError(f"--ping-writers {writers}: at most 16")
    app = create_app(Config(db=args.db, body_limit=args.body_limit, keepalive=args.keepalive,
                            max_streams=args.max_streams,
                            max_streams_per_token=args.max_streams_per_token,
                            stream_backlog=args.stream_backlog,
                            scheduler=not args.no_scheduler,
                            ping_process=process,
                            ping_writers=writers,
                            public_metrics=args.public_metrics,
                            replica_id=args.replica_id, leader_ttl=args.leader_ttl,
                            event_poll=_event_poll(),
                            session_ttl=args.session_hours * 3600.0,
                            trusted_user_header=args.trusted_user_header or None))  # fmt: skip
    from cronwatch.server.events import AbandonedStreamFilter
    from cronwatch.server.limits import BodyLimit, Limits, RateLimitFilter, guarded_protocol

    limits = Limits(head_timeout=args.head_timeout, body_timeout=args.body_timeout,
                    max_connections=_fit_descriptors(args.max_connections),
                    max_per_address=args.max_connections_per_address,
                    max_ping_body=args.max_body, max_api_body=args.max_body)  # fmt: skip
    http: Any = guarded_protocol(limits)
    if args.ping_writer == "process" and args.front == "fast":
        # plain pings answered by server.front; whatever else, and any request that has not
        # fully arrived in one read, goes on to the guarded uvicorn protocol
        from cronwatch.server.front import PingFront

        http = type("Front", (PingFront,), {"fallback": http})
    # BodyLimit is outermost: an oversized body is refused before routing and authentication
    # No proxy-headers middleware: nothing here reads the client's address from the scope
    # (the connection caps use the socket's peer), so it would be one more layer a request.
    config = uvicorn.Config(BodyLimit(app, limits), host=args.host, port=args.port,
                            log_level=args.log_level, access_log=False, lifespan="on",
                            loop="auto", http=http, timeout_keep_alive=5,
                            proxy_headers=False)  # fmt: skip
    server = _uvicorn_server(config, app)
    handler = logging.StreamHandler()  # the limits' lines, the writer's restarts
    handler.setFormatter(logging.Formatter("cronwatch: %(message)s"))
    logging.getLogger("cronwatch.server").addHandler(handler)
    logging.getLogger("uvicorn.error").addFilter(RateLimitFilter())
    logging.getLogger("uvicorn.error").addFilter(AbandonedStreamFilter())
    # bind first so that --port 0 can print the port it got: tests and scripts read this line
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        raise ValidationError(f"cannot listen on {args.host}:{args.port}: {e}") from None
    sock.set_inheritable(True)
    host, port = sock.getsockname()[:2]
    sys.stderr.write(f"cronwatch: serving on http://{host}:{port}\n")
    sys.stderr.flush()
    server.run(sockets=[sock])
    return 0


def _uvicorn_server(config: Any, app: Any) -> Any:
    """uvicorn's server, ending the event streams when it is told to stop."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn waits for every open response before the lifespan's shutdown: an
            # event stream never ends by itself, so end them first or SIGTERM hangs.
            await app.close_streams()
            await super().shutdown(sockets)

    return Server(config)


def _fit_descriptors(wanted: int) -> int:
    """Raise this process's descriptor limit as far as allowed, and keep the connection cap
    under it: a server out of descriptors cannot accept anyone, legitimate or not."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 16
    target = min(target, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - 64))  # room for the database, the writer link, logs


def cmd_token_help(args: argparse.Namespace) -> int:
    sys.stderr.write("cronwatch: token needs an action: create, list or delete (see --help)\n")
    return 2


def cmd_token_create(args: argparse.Namespace) -> int:
    validate_name(args.name)
    secret = sys.stdin.readline().strip() if args.secret_from_stdin else None
    with _open(args) as store:
        token = store.create_token(args.name, read_only=args.read_only, now=time.time(),
                                   secret=secret)  # fmt: skip
    if secret is None:
        print(token)
        sys.stderr.write("cronwatch: store this token now; it is not shown again\n")
    else:
        print(f"token {args.name} created with the secret given")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    with _open(args) as store:
        for t in store.list_tokens():
            mode = "read-only" if t["read_only"] else "read-write"
            print(f"{t['name']}\t{mode}\tcreated {format_time(t['created_at'])}\t"
                  f"last used {format_time(t['last_used_at'])}")  # fmt: skip
    return 0


def cmd_token_delete(args: argparse.Namespace) -> int:
    with _open(args) as store:
        store.delete_token(args.name)
    return 0


def cmd_ping_key(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if args.set is not None:
            store.set_project_ping_key(args.set)
        print(store.project_ping_key())
    return 0


def _event_poll() -> float:
    """$CRONWATCH_EVENT_POLL: seconds between the event streams' polls (1 by default; the
    tests make it long to see that notifications, not the poll, deliver)."""
    import math
    import os

    raw = os.environ.get("CRONWATCH_EVENT_POLL", "")
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        value = math.nan
    if not 0.05 <= value <= 3600:  # NaN too
        raise ValidationError(f"CRONWATCH_EVENT_POLL: seconds from 0.05 to 3600, got {raw!r}")
    return value
