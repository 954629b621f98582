"""Headless Chromium driven over the DevTools protocol, with the standard library only.

Chromium is started with `--remote-debugging-pipe`: it reads protocol messages (JSON, NUL-terminated) from file
descriptor 3 and writes to 4, so no WebSocket client and no port are needed. Each page records what a test wants to
check afterwards: console messages, uncaught exceptions, log entries (CSP violations land there) and every network
request it started::

    with Browser() as browser:
        page = browser.page(width=390, height=844, mobile=True)
        page.goto("http://127.0.0.1:8000/index.html")
        assert page.evaluate("document.title") == "..."
        assert page.errors() == []
        page.screenshot(Path("/tmp/index-phone.png"))

`chromium_path()` is None when Chromium is not installed; tests skip with that reason.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.server
import itertools
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in a container; the sandbox needs user namespaces we may not have
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


@dataclass
class Event:
    method: str
    params: dict[str, Any]


@dataclass
class Page:
    browser: Browser
    session: str
    target: str
    events: list[Event] = field(default_factory=list)

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def goto(self, url: str, timeout: float = 30) -> None:
        """Navigate and wait for the load event (scripts have run, sub-resources have loaded or failed)."""
        start = len(self.events)
        result = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        if result.get("loaderId"):  # none for a same-document (fragment) navigation: no load event follows
            self.browser.wait_for(
                lambda: self._seen("Page.loadEventFired", start), timeout, what=f"loading {url}"
            )
        self.settle()

    def settle(self, quiet: float = 0.3) -> None:
        """Read events until the page has been quiet for `quiet` seconds (late console messages, requests)."""
        self.browser.pump(quiet)

    def _seen(self, method: str, start: int) -> bool:
        return any(e.method == method for e in self.events[start:])

    def evaluate(self, expression: str) -> Any:
        r = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression!r} threw: {r['exceptionDetails']}")
        return r["result"].get("value")

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        self.settle()

    def set_viewport(self, width: int, height: int, *, mobile: bool = False, scale: float = 1) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile},
        )
        if mobile:
            self.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def console(self) -> list[str]:
        """Every console message, exception and log entry, as `level: text`."""
        out = []
        for e in self.events:
            p = e.params
            if e.method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                out.append(f"{p.get('type')}: {text}")
            elif e.method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e.method == "Log.entryAdded":
                entry = p.get("entry", {})
                out.append(
                    f"{entry.get('level')}: [{entry.get('source')}] {entry.get('text')} {entry.get('url', '')}"
                )
        return out

    def errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and log errors (failed loads, CSP violations)."""
        return [
            line
            for line in self.console()
            if line.split(":", 1)[0] in ("error", "assert", "exception", "warning")
        ]

    def requests(self) -> list[str]:
        """URLs of every request the page started (documents, styles, scripts, images, fetches...)."""
        return [e.params["request"]["url"] for e in self.events if e.method == "Network.requestWillBeSent"]

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})


class Browser:
    def __init__(self, executable: str | None = None, *, extra_flags: list[str] | None = None) -> None:
        exe = executable or chromium_path()
        if exe is None:
            raise BrowserError("chromium is not installed")
        self.exe = exe
        self.flags = [*FLAGS, *(extra_flags or [])]
        self._ids = itertools.count(1)
        self._buf = b""
        self._pages: dict[str, Page] = {}
        self._responses: dict[int, dict[str, Any]] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="monitor-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:
            # In the child before exec: put the pipe ends on 3 and 4, where Chromium looks for them. Move them
            # above 10 first, as either may already sit on 3 or 4 and be clobbered by the other's dup2.
            r, w = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.log = open(Path(self.profile) / "chromium.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.exe, *self.flags, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            preexec_fn=fds,
            pass_fds=(3, 4),  # kept open in the child (preexec_fn runs before the other fds are closed)
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.send("Target.setDiscoverTargets", {"discover": False}, timeout=60)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(BrowserError, OSError):
                self.send("Browser.close", timeout=5)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def page(self, *, width: int = 1280, height: int = 900, mobile: bool = False, scale: float = 1) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        self._pages[session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        page.set_viewport(width, height, mobile=mobile, scale=scale)
        return page

    # protocol plumbing
    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        self.wait_for(lambda: msg_id in self._responses, timeout, what=method)
        reply = self._responses.pop(msg_id)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def wait_for(self, done: Any, timeout: float, what: str = "event") -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out waiting for {what}")
            self._read(left)

    def pump(self, quiet: float) -> None:
        while self._read(quiet):
            pass

    def _read(self, timeout: float) -> bool:
        """Read what Chromium sent within `timeout`; False if nothing came."""
        ready, _, _ = select.select([self._from_child], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(self._from_child, 1 << 20)
        if not chunk:
            raise BrowserError("chromium closed the DevTools pipe (crashed?)")
        self._buf += chunk
        *messages, self._buf = self._buf.split(b"\0")
        for raw in messages:
            msg = json.loads(raw)
            if "id" in msg:
                self._responses[msg["id"]] = msg
            elif "method" in msg:
                page = self._pages.get(msg.get("sessionId", ""))
                if page is not None:
                    page.events.append(Event(msg["method"], msg.get("params", {})))
        return True


class StaticServer:
    """Serves a folder on loopback (what "any web server" does with the site) and logs every request path;
    with `directory=None` it answers 204 to everything, a beacon that shows whether a page reached out."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.requests: list[str] = []

    def __enter__(self) -> StaticServer:
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(server.directory or "."), **kw)

            def _log(self) -> None:
                server.requests.append(self.path)

            def do_GET(self) -> None:
                self._log()
                if server.directory is None:
                    self.send_response(204)
                    self.end_headers()
                    return
                super().do_GET()

            def do_POST(self) -> None:
                self._log()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
