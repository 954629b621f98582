"""The service's HTTP server: a Starlette application served by uvicorn inside the service's event loop.

    /healthz              200 + JSON while the scheduler runs and the database answers, 503 otherwise
    /metrics              Prometheus text format 0.0.4
    /workspace/...        the analyst workspace (monitor.web), when the service gives it a database
    anything else         the generated site (--site-dir), static files only, never outside its folder

Starlette because the workspace needs routing, forms, sessions and static files and nothing heavier (no
validation layer or OpenAPI: the pages are HTML forms); uvicorn because it runs inside an event loop we already
own (the scheduler's), so one process serves pages and polls feeds without threads of its own.

It binds 127.0.0.1 by default. On any other address the workspace and the site need a login to read
(monitor.web.access); /healthz and /metrics stay open for health checks and scrapers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor.service.metrics import CONTENT_TYPE as METRICS_TYPE

if TYPE_CHECKING:
    from monitor.web.app import WorkspaceSource

log = logging.getLogger("monitor.http")

MAX_REQUEST_HEAD = 16 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Response:
    """What a route callable (the service's health check) answers; turned into a Starlette response here."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def starlette(self) -> StarletteResponse:
        return StarletteResponse(
            self.body, status_code=self.status, headers=self.headers, media_type=self.content_type
        )


def json_response(status: int, data: Any) -> Response:
    body = json.dumps(data, ensure_ascii=False, indent=2, default=str).encode() + b"\n"
    return Response(status, body, "application/json; charset=utf-8", {"Cache-Control": "no-store"})


def text_response(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode())


def resolve_static(root: Path, url_path: str) -> Path | None:
    """The file under `root` that `url_path` names, or None. Never a path outside `root`: `..`, encoded
    separators, absolute paths, NUL bytes and symlinks leading out are all refused."""
    raw = unquote(url_path, errors="strict") if "%" in url_path else url_path
    if "\x00" in raw or "\\" in raw:
        return None
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." or p.startswith(".") for p in parts):  # no traversal, no dotfiles
        return None
    try:
        base = root.resolve(strict=True)
        target = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(base):
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def content_type(file: Path) -> str:
    ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if file.suffix == ".atom":
        return "application/atom+xml; charset=utf-8"
    if ctype.startswith("text/") or ctype in ("application/json", "application/xml", "image/svg+xml"):
        ctype += "; charset=utf-8"
    return ctype


Handler = Callable[[], Awaitable[Response]]


class SecurityHeaders:
    """Adds the headers every answer carries (pages, files, errors alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.lower().encode() not in have:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def build_app(
    *,
    health: Handler,
    metrics: Callable[[], str],
    site_dir: Callable[[], Path | None],
    workspace: WorkspaceSource | None = None,
    host: str = "127.0.0.1",
) -> Starlette:
    """The whole HTTP application; `workspace` None serves health, metrics and the site only."""

    async def healthz(request: Request) -> StarletteResponse:
        return (await health()).starlette()

    async def metrics_page(request: Request) -> StarletteResponse:
        return StarletteResponse(metrics(), media_type=METRICS_TYPE, headers={"Cache-Control": "no-store"})

    async def site(request: Request) -> StarletteResponse:
        root = site_dir()
        if root is None or not root.is_dir():
            if request.url.path == "/":
                hint = " and /workspace/" if workspace is not None else ""
                return PlainTextResponse(
                    f"civic-space monitor: see /healthz, /metrics{hint} (no site built yet)\n"
                )
            return PlainTextResponse("not found\n", status_code=404)
        # The raw target, not the decoded path: resolve_static decodes once itself, and a server that had
        # already decoded %2f would hand it separators the client never sent as such.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        try:
            file = await asyncio.to_thread(resolve_static, root, raw.decode("latin-1").split("?", 1)[0])
        except UnicodeDecodeError:
            file = None
        if file is None:
            return PlainTextResponse("not found\n", status_code=404)
        body = await asyncio.to_thread(file.read_bytes)
        return StarletteResponse(body, media_type=content_type(file), headers={"Cache-Control": "max-age=60"})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
    ]
    middleware = []
    if workspace is not None:
        from monitor.web.app import PREFIX, create_workspace, redirect_to_workspace, workspace_middleware

        routes.append(Route(PREFIX, redirect_to_workspace, methods=["GET"]))
        routes.append(Mount(PREFIX, app=create_workspace(workspace)))
        middleware = workspace_middleware(workspace, host=host)
    routes.append(Route("/{path:path}", site, methods=["GET"]))
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders), *middleware])


class HttpServer:
    """uvicorn on a socket we bind ourselves (a taken port is an OSError the caller reports, not uvicorn's
    sys.exit), in the running event loop, without uvicorn's signal handlers: the service owns the signals and
    stops the server last, after its jobs finished."""

    def __init__(
        self,
        *,
        health: Handler,
        metrics: Callable[[], str],
        site_dir: Callable[[], Path | None],
        host: str = "127.0.0.1",
        port: int = 8080,
        workspace: WorkspaceSource | None = None,
        shutdown_grace: float = 5.0,
    ) -> None:
        self.host, self.port = host, port
        self.app = build_app(
            health=health, metrics=metrics, site_dir=site_dir, workspace=workspace, host=host
        )
        self.shutdown_grace = shutdown_grace
        self._server: Any = None
        self._socket: socket.socket | None = None
        self._ticker: asyncio.Task[None] | None = None

    def _bind(self) -> socket.socket:
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def start(self) -> None:
        import uvicorn

        self._socket = self._bind()
        self.port = int(self._socket.getsockname()[1])  # the real one when 0 (any free port) was asked for
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # the service's logging setup applies
            access_log=False,
            server_header=False,
            proxy_headers=False,  # a proxy in front must not be able to make a remote client look local
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=int(self.shutdown_grace),
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._socket])
        self._server = server
        # main_loop keeps the Date header fresh and returns once should_exit is set.
        self._ticker = asyncio.create_task(server.main_loop(), name="http-ticker")

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        if self._ticker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ticker, 2)
        try:
            await asyncio.wait_for(server.shutdown(sockets=[self._socket]), self.shutdown_grace + 2)
        except Exception as exc:  # the process is ending; an unfinished connection must not hold it up
            log.warning("HTTP server did not stop cleanly: %s", exc)
        self._socket = None


__all__ = [
    "HttpServer",
    "Response",
    "build_app",
    "json_response",
    "resolve_static",
    "text_response",
]
