"""The service's built-in HTTP server: /healthz, /metrics and the generated site, on asyncio streams.

Deliberately small: GET and HEAD only, one request per connection, bounded request size and read time. It is
meant to sit on 127.0.0.1 (the default) behind a reverse proxy or a container health check, not to face the
internet on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from monitor.service.metrics import CONTENT_TYPE as METRICS_TYPE

log = logging.getLogger("monitor.http")

MAX_REQUEST_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


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


Handler = Callable[[], Awaitable[Response]]


class HttpServer:
    """Routes: `/healthz` and `/metrics` from callables; anything else from `site_dir` when one is set."""

    def __init__(
        self,
        *,
        health: Handler,
        metrics: Callable[[], str],
        site_dir: Callable[[], Path | None],
        host: str = "127.0.0.1",
        port: int = 8080,
    ) -> None:
        self.health, self.metrics, self.site_dir = health, metrics, site_dir
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=MAX_REQUEST_HEAD)
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])  # the real one when 0 (any free port) was asked for

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            method, target = self._request_line(head)
            if method is None:
                resp = text_response(400, "bad request")
            elif method not in ("GET", "HEAD"):
                resp = text_response(405, "method not allowed")
                resp.headers["Allow"] = "GET, HEAD"
            else:
                resp = await self._route(target)
            await self._send(writer, resp, head_only=method == "HEAD")
        except Exception:  # one bad request must never take the server down
            log.exception("HTTP request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    def _request_line(head: bytes) -> tuple[str | None, str]:
        try:
            line = head.split(b"\r\n", 1)[0].decode("ascii")
            method, target, version = line.split(" ")
        except (UnicodeDecodeError, ValueError):
            return None, ""
        if not version.startswith("HTTP/1."):
            return None, ""
        return method, target

    async def _route(self, target: str) -> Response:
        path = urlsplit(target).path or "/"
        if path == "/healthz":
            return await self.health()
        if path == "/metrics":
            return Response(200, self.metrics().encode(), METRICS_TYPE, {"Cache-Control": "no-store"})
        root = self.site_dir()
        if root is None or not root.is_dir():
            if path == "/":
                return text_response(
                    200, "civic-space monitor: see /healthz and /metrics (no site built yet)"
                )
            return text_response(404, "not found")
        try:
            file = await asyncio.to_thread(resolve_static, root, path)
        except UnicodeDecodeError:
            file = None
        if file is None:
            return text_response(404, "not found")
        body = await asyncio.to_thread(file.read_bytes)
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/json", "application/xml", "image/svg+xml"):
            ctype += "; charset=utf-8"
        if file.suffix == ".atom":
            ctype = "application/atom+xml; charset=utf-8"
        return Response(200, body, ctype, {"Cache-Control": "max-age=60"})

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, resp: Response, *, head_only: bool) -> None:
        reason = HTTPStatus(resp.status).phrase
        headers = {
            "Content-Type": resp.content_type,
            "Content-Length": str(len(resp.body)),
            "Connection": "close",
            **SECURITY_HEADERS,
            **resp.headers,
        }
        lines = [f"HTTP/1.1 {resp.status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(resp.body)
        await writer.drain()
