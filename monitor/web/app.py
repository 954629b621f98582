"""The workspace as a Starlette application, mounted at /workspace by monitor.service.http.

Sessions are Starlette's SessionMiddleware: a cookie signed with itsdangerous (HMAC over the JSON payload)
with MONITOR_SECRET_KEY, HttpOnly and SameSite=Lax. It holds the user name and the CSRF token, nothing else;
the name is looked up again on every request, so removing an account ends its sessions at once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor.config.load import packaged_dir

if TYPE_CHECKING:
    from monitor.config.load import Config
    from monitor.service.metrics import ServiceMetrics

log = logging.getLogger("monitor.web")

PREFIX = "/workspace"
SESSION_COOKIE = "monitor_session"
SESSION_MAX_AGE = 12 * 3600
SECRET_ENV = "MONITOR_SECRET_KEY"
READ_LOGIN_ENV = "MONITOR_WORKSPACE_READ_LOGIN"
ALLOWED_HOSTS_ENV = "MONITOR_WORKSPACE_HOSTS"
# Paths a visitor reaches without a login even where reading needs one.
OPEN_PATHS = ("/healthz", "/metrics", PREFIX + "/login")
OPEN_PREFIXES = (PREFIX + "/static/",)


@dataclass
class WorkspaceSource:
    """What the workspace reads: callables, because the service swaps its config (and tests its engine)."""

    engine: Callable[[], Engine]
    config: Callable[[], Config]
    metrics: ServiceMetrics | None = None
    secret_key: str | None = None  # None: MONITOR_SECRET_KEY, else an ephemeral key (with a warning)
    login_delay: float = 1.0  # seconds added to every failed login
    read_login: bool | None = (
        None  # None: needed unless bound to loopback (or MONITOR_WORKSPACE_READ_LOGIN=1)
    )


def workspace_source(service: Any) -> WorkspaceSource:
    """The workspace of a running `monitor.service.scheduler.Service`."""
    return WorkspaceSource(
        engine=lambda: service.engine, config=lambda: service.config, metrics=service.metrics
    )


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def reading_needs_login(src: WorkspaceSource, host: str) -> bool:
    if src.read_login is not None:
        return src.read_login
    if os.environ.get(READ_LOGIN_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    return not is_loopback(host)


def secret_key(src: WorkspaceSource) -> str:
    key = src.secret_key or os.environ.get(SECRET_ENV, "")
    if key:
        if len(key) < 32:
            log.warning(
                "%s is only %d characters long: use at least 32 random ones (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')",
                SECRET_ENV,
                len(key),
            )
        return key
    log.warning(
        "%s is not set: the workspace signs its sessions with a key made up for this run, so logins end when "
        "the service restarts, and workers sharing one address do not accept each other's sessions",
        SECRET_ENV,
    )
    return secrets.token_urlsafe(32)


def allowed_hosts() -> set[str]:
    extra = os.environ.get(ALLOWED_HOSTS_ENV, "")
    return {h.strip().lower() for h in extra.split(",") if h.strip()}


def _host_name(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key == b"host":
            host = value.decode("latin-1").strip().lower()
            if host.startswith("["):  # [::1]:8080
                return host[1 : host.find("]")] if "]" in host else host
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return ""


class ReadGate:
    """Where reading needs a login: anything but health, metrics, the login page and the static assets
    redirects an anonymous visitor to the login page (GET/HEAD) or is refused (anything else).

    Where reading is open (loopback), the workspace answers only requests addressed to a loopback name: a web
    page the analyst visits could otherwise point its own host name at 127.0.0.1 (DNS rebinding) and read the
    workspace through the analyst's browser."""

    def __init__(self, app: ASGIApp, src: WorkspaceSource, required: bool) -> None:
        self.app, self.src, self.required = app, src, required
        self.hosts = allowed_hosts()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if not self.required:
            host = _host_name(scope)
            if path.startswith(PREFIX) and not (is_loopback(host) or host in self.hosts):
                refused = Response(
                    f"this workspace answers on 127.0.0.1 or localhost, not {host[:100]!r} (add the name to "
                    f"{ALLOWED_HOSTS_ENV} if a proxy on this machine forwards it)\n",
                    status_code=421,
                    media_type="text/plain",
                )
                await refused(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        from monitor.web.routes import session_user

        if await session_user(self.src, scope.get("session") or {}) is not None:
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD"):
            target = path + (
                "?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
            )
            response: Response = RedirectResponse(
                f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303
            )
        else:
            response = Response("log in first\n", status_code=401, media_type="text/plain")
        response.headers["Cache-Control"] = "no-store"
        await response(scope, receive, send)


class RequestMetrics:
    """Counts answers by route group and status class, and their time."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            path = scope.get("path", "")
            group = (
                path.strip("/")
                if path in ("/healthz", "/metrics")
                else ("workspace" if path.startswith(PREFIX) else "site")
            )
            self.metrics.http_requests.inc(route=group, status=f"{status[0] // 100}xx")
            self.metrics.http_seconds.observe(time.perf_counter() - started)


def workspace_middleware(src: WorkspaceSource, *, host: str) -> list[Middleware]:
    required = reading_needs_login(src, host)
    if required:
        log.info("workspace and site need a login to read (bound to %s)", host, extra={"event": "access"})
    try:
        from monitor.web.auth import list_users

        if not list_users(src.engine()):
            log.warning(
                "the workspace has no accounts yet: %s; create one with `monitor users add NAME`",
                "nobody can read or write"
                if required
                else "anyone on this machine can read, nobody can write",
            )
    except Exception as exc:  # the database may be down at start; health reports that, this is only advice
        log.debug("could not count workspace accounts: %s", exc)
    return [
        Middleware(RequestMetrics, metrics=src.metrics),
        Middleware(
            SessionMiddleware,
            secret_key=secret_key(src),
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE,
            same_site="lax",
            https_only=False,  # served over plain HTTP on loopback; a TLS proxy in front may add Secure
        ),
        Middleware(ReadGate, src=src, required=required),
    ]


def static_dir() -> str:
    return str(packaged_dir("templates") / "web" / "static")


def create_workspace(src: WorkspaceSource) -> Starlette:
    from monitor.web import routes as r

    def bind(fn: Callable[[WorkspaceSource, Request], Awaitable[Response]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            return await fn(src, request)

        return endpoint

    app = Starlette(
        routes=[
            Route("/", bind(r.item_list), methods=["GET"]),
            Route("/items/{item_id:int}", bind(r.item_page), methods=["GET"]),
            Route("/items/{item_id:int}/verdict", bind(r.post_verdict), methods=["POST"]),
            Route("/items/{item_id:int}/note", bind(r.post_note), methods=["POST"]),
            Route("/incidents/{incident_id:int}", bind(r.incident_page), methods=["GET"]),
            Route("/incidents/{incident_id:int}/merge", bind(r.post_merge), methods=["POST"]),
            Route("/incidents/{incident_id:int}/move", bind(r.post_move), methods=["POST"]),
            Route("/audit", bind(r.audit_page), methods=["GET"]),
            Route("/precision", bind(r.precision_page), methods=["GET"]),
            Route("/login", bind(r.login_page), methods=["GET"]),
            Route("/login", bind(r.post_login), methods=["POST"]),
            Route("/logout", bind(r.post_logout), methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
        ],
        exception_handlers={404: r.not_found, 405: r.not_allowed},
    )
    app.state.source = src
    return app


def redirect_to_workspace(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/", status_code=308)


__all__ = [
    "PREFIX",
    "WorkspaceSource",
    "create_workspace",
    "is_loopback",
    "reading_needs_login",
    "workspace_middleware",
    "workspace_source",
]
