"""The console: server-rendered pages for people, behind a sign-in.

Jinja2 with autoescape renders every page; a little plain JavaScript of ours
(static/console.js: local times, copy buttons, the live refresh over the event stream,
the schedule preview) enhances them, and every page works without it. The policy allows
only our own script and style files: no inline script, style or ``style=`` attribute.

Reads use the server's read connection; writes go through the group-commit writer, like
the API's. Viewers read everything but secrets (ping keys, channel URLs unredacted,
tokens); admins change things. Every form's value goes through the one settings schema
(core/settings.py), so the console accepts and refuses what the CLI and the API do, with
the same messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from cronwatch.app.evaluate import describe
from cronwatch.app.overview import RECENT, add_recent, in_env, job_rows, matches
from cronwatch.app.users import (
    ROLES,
    hash_password,
    new_session,
    session_digest,
    validate_password,
    validate_role,
    validate_user_name,
    verify_password,
)
from cronwatch.core.errors import Conflict, CronwatchError, NotFound, ValidationError
from cronwatch.core.health import Health
from cronwatch.core.model import Job, Status, validate_name
from cronwatch.core.settings import Kind, normalize
from cronwatch.core.stats import slowdown
from cronwatch.core.text import streams
from cronwatch.notify import redact
from cronwatch.server import badges
from cronwatch.server.api import check_list
from cronwatch.server.console_views import (
    FORM_SETTINGS,
    environment,
    form_values,
    next_expected,
    schedule_preview,
    settings_from_form,
    settings_view,
    snippets,
)
from cronwatch.server.events import stream
from cronwatch.server.session import (
    SignInLimit,
    Viewer,
    cookie_header,
    csrf_ok,
    is_https,
    viewer_of,
)
from cronwatch.store.interface import Store

STATIC = Path(__file__).parent / "static"
# the wrapper's cut marker (core/values.py CUT_MARKER) in a decoded stream: odd parts of a
# split are markers, shown apart from the job's own text
_CUT = re.compile(r"(\[\.\.\. cronwatch: \d+ bytes cut \.\.\.\])")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
RUNS_PAGE = 50  # runs listed per page of a job
JOBS_PAGE = 50  # jobs per page of the jobs page: 1,000 rows with charts would be ~1.3 MB
CHART_RUNS = 100  # bars in a job's durations chart
FORM_LIMIT = 64 * 1024  # bytes of a form body; more is a 413
OUTPUT_SHOWN = 1_000_000  # bytes of a stream shown on a run's page (the API's limit)


class Forbidden(CronwatchError):
    http_status = 403


class TooLarge(CronwatchError):
    http_status = 413


# --- rendering helpers (filters) -----------------------------------------------------------


class Console:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.env = environment()
        self.limit = SignInLimit()
        self.static = {p.name: p.read_bytes() for p in STATIC.iterdir() if p.is_file()}
        self._ostore: Store | None = None  # the jobs page's connection, in worker threads
        self._overview: tuple[int, float, list[Any]] | None = None
        self._overview_lock = threading.Lock()

    def close(self) -> None:
        with self._overview_lock:
            if self._ostore is not None:
                self._ostore.close()
                self._ostore = None

    @property
    def reader(self) -> Store:
        reader: Store = self.server.reader
        return reader

    async def write(self, op: Any, touch: str | None = None) -> Any:
        return await self.server.write(op, touch)

    def _project_key(self) -> str:
        # read each time, not the server's copy from its start: the key may have been
        # rotated since, here or at another replica, and the snippets must show the new
        return self.reader.get_meta("project_ping_key") or self.server.project_key

    # --- responses ---------------------------------------------------------------------
    def page(self, request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        viewer: Viewer | None = getattr(request.state, "viewer", None)
        body = self.env.get_template(template).render(viewer=viewer, path=request.url.path,
                                                      **ctx)  # fmt: skip
        return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                        headers=SECURITY_HEADERS)  # fmt: skip

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.page(request, "error.html", status=status, message=message, code=status)

    def redirect(self, url: str, notice: str = "") -> Response:
        if notice:
            url += ("&" if "?" in url else "?") + urlencode({"notice": notice})
        return RedirectResponse(url, status_code=303, headers={"cache-control": "no-store"})

    # --- the gate ----------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/console/stream" and scope["method"] == "GET":
            await self.events(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def form(self, request: Request) -> dict[str, str]:
        """The urlencoded body (the last value of a repeated field), bounded."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > FORM_LIMIT):
            raise TooLarge(f"the form is too large (at most {FORM_LIMIT} bytes)")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_LIMIT:
                raise TooLarge(f"the form is too large (at most {FORM_LIMIT} bytes)")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            raise ValidationError("the form could not be read") from None
        return dict(pairs)

    def same_origin(self, request: Request) -> bool:
        """A browser names the page a POST came from; one from another site is refused
        before anything else (this also covers the sign-in form, before any session)."""
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host

    async def guarded(self, request: Request, handler: Any, *, write: bool) -> Response:
        viewer = viewer_of(self.server, request.scope)
        request.state.viewer = viewer
        if viewer is None:
            if request.method == "GET":
                nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return self.redirect("/?" + urlencode({"next": nxt}))
            return self.error(request, 401, "your session has ended: sign in again")
        try:
            if write:
                if not self.same_origin(request):
                    raise Forbidden("this form was sent from another site")
                form = await self.form(request)
                if not csrf_ok(viewer, form.get("csrf", "")):
                    raise Forbidden("the form's security token is missing or stale: "
                                    "reload the page and try again")  # fmt: skip
                if not viewer.admin:
                    raise Forbidden(f"{viewer.name} is a viewer: only admins change things")
                request.state.form = form
            result: Response = await handler(request, viewer)
            return result
        except CronwatchError as e:
            return self.error(request, e.http_status, str(e))

    def route(self, path: str, handler: Any, *, write: bool = False) -> Route:
        async def endpoint(request: Request) -> Response:
            return await self.guarded(request, handler, write=write)

        return Route(path, endpoint, methods=["POST"] if write else ["GET", "HEAD"])

    @property
    def app(self) -> Starlette:
        app: Starlette | None = getattr(self, "_app", None)
        if app is None:
            r = self.route
            routes = [
                Route("/", self.home, methods=["GET", "HEAD"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/static/{name}", self.static_file, methods=["GET", "HEAD"]),
                Route("/badge/{sig}/{kind}/{name}", self.badge, methods=["GET", "HEAD"]),
                r("/schedule", self.schedule_preview),
                r("/new", self.new_job_form),
                r("/new", self.create_job, write=True),
                r("/job/{name}", self.job_page),
                r("/job/{name}/edit", self.edit_form),
                r("/job/{name}/edit", self.edit_job, write=True),
                r("/job/{name}/pause", self.pause, write=True),
                r("/job/{name}/resume", self.resume, write=True),
                r("/job/{name}/delete", self.delete_job, write=True),
                r("/job/{name}/key", self.make_key, write=True),
                r("/run/{run_id}", self.run_page),
                r("/incidents", self.incidents),
                r("/channels", self.channels),
                r("/channels/add", self.channel_add, write=True),
                r("/channels/test", self.channel_test, write=True),
                r("/channels/remove", self.channel_remove, write=True),
                r("/lists", self.lists),
                r("/lists/set", self.list_set, write=True),
                r("/lists/remove", self.list_remove, write=True),
                r("/tokens", self.tokens),
                r("/tokens/create", self.token_create, write=True),
                r("/tokens/revoke", self.token_revoke, write=True),
                r("/users", self.users),
                r("/users/add", self.user_add, write=True),
                r("/users/remove", self.user_remove, write=True),
                r("/users/role", self.user_role, write=True),
            ]

            async def not_found(request: Request, exc: Exception) -> Response:
                request.state.viewer = viewer_of(self.server, request.scope)
                return self.error(request, 404, "no such page")

            async def not_allowed(request: Request, exc: Exception) -> Response:
                request.state.viewer = viewer_of(self.server, request.scope)
                return self.error(request, 405, f"{request.method} is not allowed here")

            app = self._app = Starlette(
                routes=routes, exception_handlers={404: not_found, 405: not_allowed}
            )
        return app

    # --- signing in --------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        viewer = viewer_of(self.server, request.scope)
        request.state.viewer = viewer
        if viewer is None:
            return self.sign_in_page(request)
        try:
            return await self.jobs(request, viewer)
        except CronwatchError as e:
            return self.error(request, e.http_status, str(e))

    def sign_in_page(self, request: Request, status: int = 200, error: str = "",
                     name: str = "") -> Response:  # fmt: skip
        nxt = request.query_params.get("next", "")
        return self.page(request, "login.html", status=status, error=error, name=name,
                         next=_local(nxt), no_users=self.reader.count_users() == 0,
                         notice=request.query_params.get("notice", "")[:100])  # fmt: skip

    async def login(self, request: Request) -> Response:
        request.state.viewer = None
        try:
            if not self.same_origin(request):
                raise Forbidden("this form was sent from another site")
            form = await self.form(request)
        except CronwatchError as e:
            return self.error(request, e.http_status, str(e))
        name = form.get("name", "").strip()[:200]
        password = form.get("password", "")[:2048]
        address = request.client.host if request.client else ""
        now = time.time()
        wait = self.limit.retry_after(self.reader, name, address, now)
        if wait > 0:
            minutes = max(1, math.ceil(wait / 60))
            return self.sign_in_page(request, 429, f"too many failed sign-ins: try again in "
                                     f"{minutes} minute{'s' if minutes > 1 else ''}", name)  # fmt: skip
        user = self.reader.get_user(name) if name else None
        ok = await asyncio.to_thread(verify_password, password, user["password"] if user else None)
        if not ok or user is None:
            await self.write(self.limit.failed(name, address, now))
            return self.sign_in_page(request, 401, "wrong user name or password", name)
        ttl = self.server.config.session_ttl

        def op(store: Store) -> tuple[str, str]:
            store.delete_expired_sessions(now=now)  # the table holds live sessions only
            return new_session(store, user["name"], now=now, ttl=ttl)

        sid, _ = await self.write(op)
        response = self.redirect(_local(form.get("next", "")) or "/")
        response.headers.append("set-cookie", cookie_header(
            sid, https=is_https(request.scope), max_age=int(ttl)).decode("latin-1"))  # fmt: skip
        return response

    async def logout(self, request: Request) -> Response:
        viewer = viewer_of(self.server, request.scope)
        request.state.viewer = viewer
        try:
            form = await self.form(request)
        except CronwatchError as e:
            return self.error(request, e.http_status, str(e))
        if viewer is not None:
            if not csrf_ok(viewer, form.get("csrf", "")):
                return self.error(request, 403, "the form's security token is missing or stale")
            if viewer.session:
                digest = session_digest(viewer.session)
                await self.write(lambda s: s.delete_session(digest))
        response = self.redirect("/", "signed out")
        response.headers.append("set-cookie", cookie_header(
            "", https=is_https(request.scope), max_age=0).decode("latin-1"))  # fmt: skip
        return response

    async def events(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The event stream for a signed-in browser (EventSource sends the cookie, never an
        Authorization header); raw ASGI, as the API's stream is."""
        viewer = viewer_of(self.server, scope)
        if viewer is None:
            body = b'{"error": "sign in first"}'
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        await stream(self.server, scope, receive, send, who=f"user:{viewer.name}")

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        data = self.static.get(name)
        if data is None:
            return Response(b"not found", status_code=404, media_type="text/plain")
        kind = {"css": "text/css", "js": "text/javascript", "svg": "image/svg+xml"}.get(
            name.rsplit(".", 1)[-1], "application/octet-stream"
        )
        return Response(data, media_type=kind, headers={
            "cache-control": "public, max-age=300", "x-content-type-options": "nosniff"})  # fmt: skip

    # --- jobs --------------------------------------------------------------------------
    async def jobs(self, request: Request, viewer: Viewer) -> Response:
        q = request.query_params
        filters = {k: q.get(k, "")[:100] for k in ("q", "health", "tag", "env")}
        page = max(1, int(_number(q.get("page")) or 1))
        rows, shown, count, envs = await asyncio.to_thread(self._rows, filters, page)
        pages = max(1, math.ceil(count / JOBS_PAGE))
        links = {}
        for label, n in (("prev", page - 1), ("next", page + 1)):
            if 1 <= n <= pages:
                links[label] = "/?" + urlencode({**{k: v for k, v in filters.items() if v},
                                                 "page": n})  # fmt: skip
        tags = sorted({t for r in rows for t in r.job.tags})
        return self.page(request, "jobs.html", rows=shown, total=len(rows), count=count,
                         filters=filters, tags=tags, envs=envs, page=page, pages=pages,
                         links=links, healths=[h.value for h in Health], recent=RECENT,
                         notice=q.get("notice", ""))  # fmt: skip

    def _rows(
        self, filters: dict[str, str], page: int
    ) -> tuple[list[Any], list[Any], int, list[str]]:
        """Every job's row; the page's rows (filtered) with their recent runs; how many
        match; the environments to offer. In a worker thread, on the console's own
        connection (one request at a time)."""
        with self._overview_lock:
            store, rows = self._overview_rows()
            env = filters["env"]
            found = [r for r in rows if matches(r, q=filters["q"], health=filters["health"],
                                                tag=filters["tag"])]  # fmt: skip
            if env:
                found = [r for r in found if in_env(store, r, env)]
            found.sort(key=lambda r: r.job.name)
            shown = found[(page - 1) * JOBS_PAGE : page * JOBS_PAGE]
            for r in shown:
                if not r.runs and r.last is not None:
                    add_recent(store, r)
            envs = sorted({e for r in rows for e in r.envs} | ({env} if env else set()))
            return rows, shown, len(found), envs

    def _overview_rows(self) -> tuple[Store, list[Any]]:
        """The rows, computed again only when another connection committed or the clock
        reached a time at which some job's health changes (a quiet server with 1,000
        jobs answers from here; one taking pings recomputes: benchmarks/README.md)."""
        from cronwatch.store import open_store

        if self._ostore is None:
            self._ostore = open_store(self.server.config.db)
        store = self._ostore
        now = time.time()
        version = store.data_version()
        cached = self._overview
        if cached is not None and cached[0] == version and now < cached[1]:
            return store, cached[2]
        previous = {r.job.name: r for r in cached[2]} if cached is not None else None
        rows = job_rows(store, now=now, previous=previous)
        until = min([now + 60.0, *(r.changes_at for r in rows)])
        self._overview = (version, until, rows)
        return store, rows

    def _job(self, request: Request) -> Job:
        name = request.path_params["name"]
        validate_name(name)
        return self.reader.get_job(name)

    async def job_page(self, request: Request, viewer: Viewer) -> Response:
        job = self._job(request)
        now = time.time()
        before = _number(request.query_params.get("before"))
        runs = self.reader.list_runs(job=job.name, limit=RUNS_PAGE + 1, until=before)
        more = len(runs) > RUNS_PAGE
        runs = runs[:RUNS_PAGE]
        info = describe(self.reader, job.name, now=now)
        recent = self.reader.list_runs(job=job.name, limit=CHART_RUNS)
        finding = slowdown([r.duration for r in recent
                            if r.status is Status.SUCCESS and r.duration is not None])  # fmt: skip
        stats = self.reader.job_stats(job.name, since=now - 7 * 86400)
        incidents = self.reader.list_incidents(job=job.name, limit=10)
        key = job.ping_key if viewer.admin else ""
        base = _base_url(request)
        return self.page(
            request, "job.html", job=job, runs=runs, more=more,
            older=runs[-1].started_at if more and runs else None, info=info, recent=recent,
            chart_runs=CHART_RUNS, finding=finding,
            slow_from=(len([r for r in recent if r.duration is not None]) - 10
                       if finding else None),
            stats=stats, incidents=incidents, settings=settings_view(job),
            snippets=snippets(base, job, key, self._project_key() if viewer.admin else ""),
            next=next_expected(job, info, now), badge=badges.urls(self.server, base, "job", job.name),
            notice=request.query_params.get("notice", ""),
        )  # fmt: skip

    async def run_page(self, request: Request, viewer: Viewer) -> Response:
        run = self.reader.get_run(request.path_params["run_id"][:200], output=True)
        shown = []
        for label, data in streams(run):
            text = None if data is None else data[-OUTPUT_SHOWN:].decode("utf-8", "replace")
            parts = None if text is None else _CUT.split(text)
            shown.append((label, parts, 0 if data is None else len(data)))
        return self.page(request, "run.html", run=run, streams=shown, limit=OUTPUT_SHOWN)

    # --- the job form --------------------------------------------------------------------
    def _form_page(self, request: Request, job: Job | None, values: dict[str, str],
                   error: str = "", status: int = 200) -> Response:  # fmt: skip
        schedule, tz = values.get("schedule", ""), values.get("tz", "UTC")
        preview = schedule_preview(schedule, tz, time.time())
        return self.page(request, "job_form.html", status=status, job=job, values=values,
                         fields=FORM_SETTINGS, kinds=Kind, error=error, preview=preview)  # fmt: skip

    async def new_job_form(self, request: Request, viewer: Viewer) -> Response:
        if not viewer.admin:
            raise Forbidden(f"{viewer.name} is a viewer: only admins change things")
        return self._form_page(request, None, form_values(Job(name="")) | {"name": ""})

    async def edit_form(self, request: Request, viewer: Viewer) -> Response:
        if not viewer.admin:
            raise Forbidden(f"{viewer.name} is a viewer: only admins change things")
        job = self._job(request)
        return self._form_page(request, job, form_values(job))

    async def create_job(self, request: Request, viewer: Viewer) -> Response:
        form: dict[str, str] = request.state.form
        name = form.get("name", "").strip()
        try:
            validate_name(name)
            settings = settings_from_form(form)
        except ValidationError as e:
            return self._form_page(request, None, form, str(e), 422)

        def op(store: Store) -> Job:
            if store.find_job(name) is not None:
                raise Conflict(f"job {name!r} already exists")
            return _save(store, Job(name=name), settings)

        try:
            await self.write(op, name)
        except Conflict as e:
            return self._form_page(request, None, form, str(e), 409)
        return self.redirect(f"/job/{quote(name)}", f"job {name} created")

    async def edit_job(self, request: Request, viewer: Viewer) -> Response:
        job = self._job(request)
        form: dict[str, str] = request.state.form
        try:
            settings = settings_from_form(form)
        except ValidationError as e:
            return self._form_page(request, job, form, str(e), 422)
        await self.write(lambda s: _save(s, s.get_job(job.name), settings), job.name)
        return self.redirect(f"/job/{quote(job.name)}", "settings saved")

    async def pause(self, request: Request, viewer: Viewer) -> Response:
        job = self._job(request)
        await self.write(lambda s: _save(s, s.get_job(job.name), {"paused": True}), job.name)
        return self.redirect(f"/job/{quote(job.name)}", "paused: no checks, no alerts")

    async def resume(self, request: Request, viewer: Viewer) -> Response:
        job = self._job(request)
        await self.write(lambda s: _save(s, s.get_job(job.name), {"paused": False}), job.name)
        return self.redirect(f"/job/{quote(job.name)}", "resumed")

    async def delete_job(self, request: Request, viewer: Viewer) -> Response:
        job = self._job(request)
        if request.state.form.get("confirm", "") != job.name:
            raise ValidationError(f"type the job's name ({job.name}) to delete it")
        await self.write(lambda s: s.delete_job(job.name), job.name)
        self.reader.forget_job_ids()
        return self.redirect("/", f"job {job.name} deleted")

    async def make_key(self, request: Request, viewer: Viewer) -> Response:
        job = self._job(request)
        await self.write(lambda s: s.ensure_ping_key(job.name, now=time.time()))
        return self.redirect(f"/job/{quote(job.name)}#ping", "ping key made")

    async def schedule_preview(self, request: Request, viewer: Viewer) -> Response:
        q = request.query_params
        return JSONResponse(schedule_preview(q.get("schedule", ""), q.get("tz", "UTC"),
                                             time.time()),
                            headers={"cache-control": "no-store"})  # fmt: skip

    # --- incidents, channels, tokens, users ------------------------------------------------
    async def incidents(self, request: Request, viewer: Viewer) -> Response:
        items = self.reader.list_incidents(limit=200)
        for i in items:
            for n in i.get("notifications", []):
                n["channel"] = redact(n["channel"])
        return self.page(request, "incidents.html", incidents=items)

    def _channels(self) -> dict[str, dict[str, Any]]:
        """Every channel URL in use, by a digest of the URL (what the forms name)."""
        out: dict[str, dict[str, Any]] = {}
        for job in self.reader.list_jobs():
            for url in job.notify:
                d = hashlib.sha256(url.encode()).hexdigest()[:20]
                item = out.setdefault(d, {"id": d, "url": url, "shown": redact(url), "jobs": []})
                item["jobs"].append(job.name)
        return out

    async def channels(self, request: Request, viewer: Viewer) -> Response:
        jobs = [j.name for j in self.reader.list_jobs()]
        return self.page(request, "channels.html", channels=list(self._channels().values()),
                         jobs=jobs, notice=request.query_params.get("notice", ""),
                         error=request.query_params.get("error", ""))  # fmt: skip

    async def channel_add(self, request: Request, viewer: Viewer) -> Response:
        form: dict[str, str] = request.state.form
        name = form.get("job", "")
        validate_name(name)
        job = self.reader.get_job(name)
        try:
            url = normalize("notify", [form.get("url", "").strip()])[0]
        except ValidationError as e:
            jobs = [j.name for j in self.reader.list_jobs()]
            return self.page(request, "channels.html", status=422, jobs=jobs,
                             channels=list(self._channels().values()),
                             error=str(e))  # fmt: skip
        if url not in job.notify:
            notify = [*job.notify, url]
            await self.write(lambda s: _save(s, s.get_job(name), {"notify": notify}), name)
        return self.redirect("/channels", f"channel added to {name}")

    async def channel_test(self, request: Request, viewer: Viewer) -> Response:
        item = self._channels().get(request.state.form.get("channel", ""))
        if item is None:
            raise NotFound("unknown channel")
        from cronwatch.core.errors import DeliveryError
        from cronwatch.notify import send
        from cronwatch.notify.message import Message

        message = Message(kind="test", job=item["jobs"][0], status="success",
                          cause="a test from the console")  # fmt: skip
        try:
            await asyncio.to_thread(send, item["url"], message, timeout=10.0)
        except DeliveryError as e:
            return self.redirect("/channels?" + urlencode(
                {"error": f"the test to {item['shown']} failed: {redact(str(e))}"}))  # fmt: skip
        return self.redirect("/channels", f"test sent to {item['shown']}")

    async def channel_remove(self, request: Request, viewer: Viewer) -> Response:
        form: dict[str, str] = request.state.form
        item = self._channels().get(form.get("channel", ""))
        if item is None:
            raise NotFound("unknown channel")
        for name in item["jobs"]:
            keep = [u for u in self.reader.get_job(name).notify if u != item["url"]]
            await self.write(lambda s, n=name, k=keep: _save(s, s.get_job(n), {"notify": k}), name)
        return self.redirect("/channels", f"channel {item['shown']} removed")

    def _lists_page(self, request: Request, status: int = 200, **ctx: Any) -> Response:
        lists = {k: [redact(c) for c in v] for k, v in self.reader.notification_lists().items()}
        return self.page(request, "lists.html", status=status, lists=lists, **ctx)

    async def lists(self, request: Request, viewer: Viewer) -> Response:
        return self._lists_page(request, notice=request.query_params.get("notice", ""))

    async def list_set(self, request: Request, viewer: Viewer) -> Response:
        form: dict[str, str] = request.state.form
        name = form.get("name", "").strip()
        text = form.get("channels", "")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        try:  # the one rule of every interface (settings.notification_list)
            channels = check_list(name, lines)
        except ValidationError as e:
            return self._lists_page(request, status=422, error=str(e), name=name,
                                    channels=text)  # fmt: skip
        await self.write(lambda s: s.set_notification_list(name, channels))
        return self.redirect("/lists", f"notification list {name} saved")

    async def list_remove(self, request: Request, viewer: Viewer) -> Response:
        name = request.state.form.get("name", "")
        if name not in self.reader.notification_lists():
            raise NotFound(f"no notification list named {name!r}")
        await self.write(lambda s: s.delete_notification_list(name))
        return self.redirect("/lists", f"notification list {name} removed")

    async def tokens(self, request: Request, viewer: Viewer) -> Response:
        return self.page(request, "tokens.html", tokens=self.reader.list_tokens(),
                         created=None, notice=request.query_params.get("notice", ""))  # fmt: skip

    async def token_create(self, request: Request, viewer: Viewer) -> Response:
        form: dict[str, str] = request.state.form
        name = form.get("name", "").strip()
        try:
            validate_name(name)
            read_only = form.get("read_only") == "on"
            secret = await self.write(
                lambda s: s.create_token(name, read_only=read_only, now=time.time())
            )
        except ValidationError as e:
            return self.page(request, "tokens.html", status=422, tokens=self.reader.list_tokens(),
                             created=None, error=str(e))  # fmt: skip
        # shown once, in this answer only (no-store): the store keeps its sha256
        return self.page(request, "tokens.html", tokens=self.reader.list_tokens(),
                         created={"name": name, "secret": secret})  # fmt: skip

    async def token_revoke(self, request: Request, viewer: Viewer) -> Response:
        name = request.state.form.get("name", "")
        await self.write(lambda s: s.delete_token(name))
        return self.redirect("/tokens", f"token {name} revoked")

    async def users(self, request: Request, viewer: Viewer) -> Response:
        if not viewer.admin:
            raise Forbidden("only admins see the users")
        return self.page(request, "users.html", users=self.reader.list_users(), roles=ROLES,
                         notice=request.query_params.get("notice", ""))  # fmt: skip

    async def user_add(self, request: Request, viewer: Viewer) -> Response:
        form: dict[str, str] = request.state.form
        name = form.get("name", "").strip()
        try:
            validate_user_name(name)
            role = validate_role(form.get("role", ""))
            digest = await asyncio.to_thread(hash_password,
                                             validate_password(form.get("password", "")))  # fmt: skip
            await self.write(lambda s: s.create_user(name, role=role, password_hash=digest,
                                                     now=time.time()))  # fmt: skip
        except ValidationError as e:
            return self.page(request, "users.html", status=422, users=self.reader.list_users(),
                             roles=ROLES, error=str(e), name=name)  # fmt: skip
        return self.redirect("/users", f"user {name} added")

    def _last_admin(self, name: str) -> bool:
        admins = [u["name"] for u in self.reader.list_users() if u["role"] == "admin"]
        return admins == [name]

    async def user_remove(self, request: Request, viewer: Viewer) -> Response:
        name = request.state.form.get("name", "")
        if self._last_admin(name):
            raise Conflict("the last admin cannot be removed")
        await self.write(lambda s: s.delete_user(name))
        return self.redirect("/users", f"user {name} removed")

    async def user_role(self, request: Request, viewer: Viewer) -> Response:
        form: dict[str, str] = request.state.form
        name, role = form.get("name", ""), validate_role(form.get("role", ""))
        if role != "admin" and self._last_admin(name):
            raise Conflict("the last admin cannot become a viewer")
        await self.write(lambda s: s.set_user(name, role=role))
        return self.redirect("/users", f"{name} is now {role}")

    # --- badges --------------------------------------------------------------------------
    async def badge(self, request: Request) -> Response:
        p = request.path_params
        found = badges.resolve(self.server, p["sig"], p["kind"], p["name"])
        if found is None:
            return Response(b"not found", status_code=404, media_type="text/plain")
        kind, name, fmt = found
        state = badges.state(self.reader, kind, name, now=time.time())
        if fmt == "json":
            return JSONResponse(badges.shields(name, state),
                                headers={"cache-control": "no-cache"})  # fmt: skip
        return Response(badges.svg(name, state), media_type="image/svg+xml", headers={
            "cache-control": "no-cache", "content-security-policy": "default-src 'none'"})  # fmt: skip


# --- helpers ------------------------------------------------------------------------------


def _local(url: str) -> str:
    """A ``next`` URL only if it stays on this site (no open redirect)."""
    if url.startswith("/") and not url.startswith(("//", "/\\")) and len(url) < 2000:
        return url
    return ""


def _number(text: str | None) -> float | None:
    try:
        x = float(text) if text else None
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) and 0 <= x < 1e11 else None


def _base_url(request: Request) -> str:
    host = request.headers.get("host") or "127.0.0.1:8000"
    return f"{request.url.scheme}://{host}"


def _save(store: Store, job: Job, settings: dict[str, Any]) -> Job:
    for k, v in settings.items():
        setattr(job, k, v)
    saved = store.save_job(job, now=time.time())
    store.ensure_ping_key(saved.name, now=time.time())
    return store.get_job(saved.name)


def build_console(server: Any) -> Console:
    return Console(server)


__all__ = ["Console", "build_console"]
