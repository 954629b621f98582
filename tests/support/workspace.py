"""The workspace on a real uvicorn server on loopback, in a background event loop, for HTTP and browser tests.

with WorkspaceServer(engine, config_dir) as ws:
    client = ws.client()
    ws.login(client, "aigerim")
    client.get(ws.url("/workspace/"))
"""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from sqlalchemy import Engine

from monitor.config.load import load_config
from monitor.service.http import HttpServer, json_response
from monitor.service.metrics import ServiceMetrics
from monitor.web.app import WorkspaceSource
from monitor.web.auth import create_user

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


class WorkspaceServer:
    def __init__(
        self,
        engine: Engine,
        config_dir: Path,
        *,
        host: str = "127.0.0.1",
        site_dir: Path | None = None,
        users: tuple[str, ...] = ("aigerim",),
        read_login: bool | None = None,
    ) -> None:
        self.engine = engine
        self.config = load_config(config_dir)
        self.metrics = ServiceMetrics()
        self.source = WorkspaceSource(
            engine=lambda: self.engine,
            config=lambda: self.config,
            metrics=self.metrics,
            secret_key="test-key-" + "x" * 40,
            login_delay=0.05,
            read_login=read_login,
        )
        self.host = host
        self.site_dir = site_dir
        self.users = users
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: HttpServer | None = None

    async def _health(self) -> Any:
        return json_response(200, {"status": "ok"})

    def __enter__(self) -> WorkspaceServer:
        for name in self.users:
            create_user(self.engine, name, PASSWORD, by="test")
        self.thread.start()
        self.server = HttpServer(
            health=self._health,
            metrics=self.metrics.render,
            site_dir=lambda: self.site_dir,
            host=self.host,
            port=0,
            workspace=self.source,
            shutdown_grace=1,
        )
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, follow_redirects=False, timeout=30)

    def login(self, client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
        token = csrf_of(client.get("/workspace/login").text)
        return client.post(
            "/workspace/login",
            data={"name": name, "password": password, "csrf": token, "next": "/workspace/"},
        )

    def token(self, client: httpx.Client, path: str = "/workspace/") -> str:
        return csrf_of(client.get(path).text)
