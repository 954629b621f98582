"""The keep-alive transport (monitor.ingest.transport) through the fetcher, against real servers on loopback.

A small asyncio server written here answers each request with bytes chosen by the test, so the tests can count
connections and make a server close, go quiet or answer in chunks exactly when they need to.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from monitor.ingest import fetch as fetch_module
from monitor.ingest import netguard
from monitor.ingest.fetch import Fetcher, FetchLimits, FetchRequest, FetchResult

LOCAL = FetchLimits(allow_private=True, total_timeout=10, connect_timeout=5)
RSS = b"<rss version='2.0'><channel><title>t</title></channel></rss>"


def ok(body: bytes = RSS, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", 'ETag: "v1"', f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + b"0\r\n\r\n"


NOT_MODIFIED = b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n'

# (connection number, request number on that connection, request path) -> what to send back; None: hang up
Answer = Callable[[int, int, str], bytes | None]


@dataclass
class RawServer:
    answer: Answer
    close_after_answer: bool = False  # hang up right after each answer, as a server whose keep-alive expired
    connections: int = 0
    requests: list[tuple[int, str]] = field(default_factory=list)  # (connection number, path)
    server: asyncio.Server | None = None
    tls: ssl.SSLContext | None = None

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    def url(self, path: str) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.requests.append((number, path))
                reply = self.answer(number, served, path)
                served += 1
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or the test is over
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def run_with(
    servers: list[RawServer],
    body: Callable[[Fetcher], Awaitable[list[FetchResult]]],
    limits: FetchLimits = LOCAL,
) -> list[FetchResult]:
    async def main() -> list[FetchResult]:
        for s in servers:
            await s.start()
        try:
            async with Fetcher(limits) as fetcher:
                return await body(fetcher)
        finally:
            for s in servers:
                await s.stop()

    return asyncio.run(main())


def one_after_another(
    *urls: str | Callable[[], str], etag: str | None = None
) -> Callable[..., Awaitable[list[FetchResult]]]:
    async def body(f: Fetcher) -> list[FetchResult]:
        out = []
        for u in urls:
            url = u() if callable(u) else u
            out.append(await f.fetch(FetchRequest(url, etag=etag)))
        return out

    return body


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONITOR_ALLOW_PRIVATE_NETWORKS", raising=False)


def test_one_connection_carries_content_length_chunked_and_304_answers() -> None:
    answers = {"/a": ok(), "/b": chunked(RSS), "/c": NOT_MODIFIED, "/d": ok(b"after the 304")}
    srv = RawServer(lambda conn, n, path: answers[path])
    results = run_with([srv], one_after_another(*(lambda p=p: srv.url(p) for p in answers)))
    assert [r.outcome for r in results] == ["ok", "ok", "not_modified", "ok"]
    assert results[0].body == RSS and results[1].body == RSS and results[3].body == b"after the 304"
    assert results[2].etag == '"v1"'
    assert srv.connections == 1 and [c for c, _ in srv.requests] == [1, 1, 1, 1]


def test_a_connection_the_server_closed_after_answering_is_not_reused() -> None:
    srv = RawServer(lambda conn, n, path: ok(), close_after_answer=True)
    results = run_with([srv], one_after_another(*[lambda: srv.url("/f")] * 3))
    assert [r.outcome for r in results] == ["ok"] * 3
    assert srv.connections == 3


def test_connection_close_from_the_server_is_honoured() -> None:
    srv = RawServer(lambda conn, n, path: ok(RSS, "Connection: close"))
    results = run_with([srv], one_after_another(*[lambda: srv.url("/f")] * 2))
    assert [r.outcome for r in results] == ["ok", "ok"]
    assert srv.connections == 2


def test_a_stale_keepalive_connection_is_retried_once_on_a_new_one() -> None:
    # The first connection answers once, then hangs up on the next request without a byte of answer: the race
    # where a server's keep-alive timer fires as our request arrives. The request goes again on a new connection.
    srv = RawServer(lambda conn, n, path: None if (conn, n) == (1, 1) else ok())
    results = run_with([srv], one_after_another(*[lambda: srv.url("/f")] * 3))
    assert [r.outcome for r in results] == ["ok"] * 3
    assert srv.requests == [(1, "/f"), (1, "/f"), (2, "/f"), (2, "/f")]


def test_a_new_connection_closed_without_answer_is_a_protocol_error_and_not_retried() -> None:
    srv = RawServer(lambda conn, n, path: None)
    (res,) = run_with([srv], one_after_another(lambda: srv.url("/f")))
    assert res.outcome == "error" and res.error_kind == "protocol"
    assert srv.connections == 1


def test_a_server_hanging_up_mid_body_is_a_protocol_error_and_the_next_fetch_reconnects() -> None:
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + RSS
    srv = RawServer(lambda conn, n, path: truncated if conn == 1 else ok(), close_after_answer=True)
    first, second = run_with([srv], one_after_another(*[lambda: srv.url("/f")] * 2))
    assert first.error_kind == "protocol"
    assert second.outcome == "ok" and second.body == RSS
    assert srv.connections == 2


def test_connections_are_kept_per_origin() -> None:
    a = RawServer(lambda conn, n, path: ok(b"from a"))
    b = RawServer(lambda conn, n, path: ok(b"from b"))
    results = run_with(
        [a, b], one_after_another(lambda: a.url("/f"), lambda: b.url("/f"), lambda: a.url("/g"))
    )
    assert [r.body for r in results] == [b"from a", b"from b", b"from a"]
    assert (a.connections, b.connections) == (1, 1)
    assert a.requests == [(1, "/f"), (1, "/g")]


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_cap_closes_its_connection(declared: bool) -> None:
    big = b"x" * 1_000_000  # more than one read: it cannot all be in the buffer when the fetcher gives up
    srv = RawServer(
        lambda conn, n, path: (ok(big) if declared else chunked(big, 10_000)) if path == "/big" else ok()
    )
    limits = FetchLimits(allow_private=True, total_timeout=10, max_bytes=1000)
    big_res, small = run_with(
        [srv], one_after_another(lambda: srv.url("/big"), lambda: srv.url("/f")), limits
    )
    assert big_res.error_kind == "too_large"
    assert small.outcome == "ok" and small.body == RSS
    assert srv.connections == 2  # the refused body was left unread: its connection could not carry another


def test_the_peer_guard_runs_on_every_answer_of_a_reused_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    peers: list[str] = []
    real_check = netguard.check_url

    async def trusting(url: str, *, allow_private: bool = False) -> object:
        return await real_check(url, allow_private=True)

    def record(address: str, *, url: str, allow_private: bool = False) -> None:
        peers.append(address)

    monkeypatch.setattr(fetch_module.netguard, "check_url", trusting)
    monkeypatch.setattr(fetch_module.netguard, "check_peer", record)
    srv = RawServer(lambda conn, n, path: NOT_MODIFIED)
    results = run_with([srv], one_after_another(*[lambda: srv.url("/f")] * 3, etag='"v1"'), FetchLimits())
    assert [r.outcome for r in results] == ["not_modified"] * 3
    assert srv.connections == 1 and peers == ["127.0.0.1"] * 3


def test_the_guard_refuses_a_reused_connection_landing_on_a_private_address() -> None:
    # Without the opt-in, loopback is refused: the first answer on the connection is refused, and so is the next
    # one (the connection, if kept, never lets an answer through unchecked).
    srv = RawServer(lambda conn, n, path: NOT_MODIFIED)
    limits = FetchLimits(total_timeout=10)

    async def body(f: Fetcher) -> list[FetchResult]:
        real_check = netguard.check_url

        async def fooled(url: str, *, allow_private: bool = False) -> object:
            return await real_check(url, allow_private=True)

        fetch_module.netguard.check_url = fooled  # type: ignore[assignment]
        try:
            return [await f.fetch(FetchRequest(srv.url("/f"))) for _ in range(2)]
        finally:
            fetch_module.netguard.check_url = real_check  # type: ignore[assignment]

    results = run_with([srv], body, limits)
    assert [r.error_kind for r in results] == ["private_address", "private_address"]


# --- https on loopback with a self-signed certificate ------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a certificate")
    where = tmp_path_factory.mktemp("tls")
    key, crt = where / "key.pem", where / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, crt


def _server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[1]), str(cert[0]))
    return ctx


def test_https_certificate_is_verified(cert: tuple[Path, Path]) -> None:
    srv = RawServer(lambda conn, n, path: ok(), tls=_server_tls(cert))
    (res,) = run_with([srv], one_after_another(lambda: srv.url("/f")))
    assert res.outcome == "error" and res.error_kind == "tls"  # self-signed: not in the trust store


def test_https_with_a_trusted_certificate_reuses_its_connection(
    cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    trusting = ssl.create_default_context(cafile=str(cert[1]))
    monkeypatch.setattr(fetch_module, "_SSL", trusting)
    srv = RawServer(lambda conn, n, path: NOT_MODIFIED if n else ok(), tls=_server_tls(cert))
    results = run_with([srv], one_after_another(*[lambda: srv.url("/f")] * 3))
    assert [r.outcome for r in results] == ["ok", "not_modified", "not_modified"]
    assert results[0].body == RSS
    assert srv.connections == 1
