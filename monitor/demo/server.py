"""A loopback HTTP server for the bundled sample feeds.

Dates in the files are written relative to now (`{{AGO:3h}}` as RFC 822 for RSS, `{{ISO:3h}}` as RFC 3339 for
Atom), so the demo always shows recent news whatever day it runs, and the `daily` digest (which looks back a
day) has something to say.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from monitor.config.durations import parse_duration
from monitor.demo import FEEDS_DIR

_PLACEHOLDER = re.compile(r"\{\{(AGO|ISO):(\d+[smhdw])\}\}")
_TYPES = {".xml": "application/rss+xml; charset=utf-8", ".atom": "application/atom+xml; charset=utf-8"}


def render(text: str, now: datetime) -> str:
    def sub(m: re.Match[str]) -> str:
        when = (now - timedelta(seconds=parse_duration(m.group(2)))).replace(microsecond=0)
        return format_datetime(when) if m.group(1) == "AGO" else when.isoformat().replace("+00:00", "Z")

    return _PLACEHOLDER.sub(sub, text)


def sample_feeds() -> list[Path]:
    return sorted(p for p in FEEDS_DIR.iterdir() if p.suffix in _TYPES)


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.split("?", 1)[0].lstrip("/")
        body = self.server.pages.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", _TYPES[Path(name).suffix])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, now: datetime | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        now = now or datetime.now(UTC)
        self.pages = {p.name: render(p.read_text(encoding="utf-8"), now).encode() for p in sample_feeds()}
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def __enter__(self) -> DemoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
