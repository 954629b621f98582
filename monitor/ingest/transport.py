"""The fetcher's HTTP/1.1 transport: h11 over asyncio streams, idle connections kept per (scheme, host, port).

Why not httpcore's pool (httpx's default): on an unchanged cycle, where each request is a small conditional GET
answered 304, its per-request machinery (a scan of every pooled connection, anyio streams, tracing hooks) cost
more CPU than the request itself; keeping connections alive through it made a cycle of 500 304s slower than
reconnecting each time (0.8 -> 1.1 s CPU). This transport does only what the fetcher needs:

- one request per connection at a time, connections kept idle per origin and reused only for that same scheme,
  host and port, so a connection that passed the SSRF guard (the fetcher checks every URL before the request and
  the connected peer after it) never carries a request for another host;
- a connection comes back to the pool only when its response was read to the end (a bodiless answer such as a
  304 counts as read as soon as its head is in) and neither side asked to close; anything else closes it;
- an idle connection the server has closed is dropped before use; if it closes while our request is on its way
  (a keep-alive race), the request is sent once more on a new connection, before any byte of an answer came;
- timeouts come from httpx's request extensions (connect, read, write), errors are httpx's exception types, so
  the fetcher's classification (dns, connect, timeout, tls, protocol) is unchanged.

TLS uses the context it is given (the fetcher's verifying one) with the URL's host as the server name.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx

_READ = 64 * 1024
# Response heads larger than this are refused (as httpcore does), so a hostile server cannot grow one forever.
MAX_HEAD = 100 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REPEATABLE = frozenset({"GET", "HEAD", "OPTIONS"})

Origin = tuple[str, str, int]


class _Connection:
    """One HTTP/1.1 connection: the asyncio stream pair, its h11 state machine and its peer address."""

    __slots__ = ("h11", "idle_since", "origin", "peer", "reader", "writer")

    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.peer = writer.get_extra_info("peername")
        self.idle_since = 0.0

    # what the fetcher's peer check reads (the same call as on httpcore's network stream)
    def get_extra_info(self, name: str) -> Any:
        if name == "server_addr":
            return self.peer
        return self.writer.get_extra_info(name)

    def usable(self) -> bool:
        """Still fit for another request: open, and nothing unread from the server (between answers a server
        may only close; bytes it sent unasked would be taken for the next answer). StreamReader has no public
        way to ask for what it holds, hence its buffer."""
        buffered = self.reader._buffer  # type: ignore[attr-defined]
        return not (buffered or self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class _Body(httpx.AsyncByteStream):
    """A response's body, read off the connection as the caller iterates; closing it returns the connection to
    the pool when the message is complete, else closes it."""

    def __init__(self, transport: KeepAliveTransport, conn: _Connection, read_timeout: float | None) -> None:
        self._transport = transport
        self._conn = conn
        self._timeout = read_timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while not self._done:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:  # e.g. the server hung up before the promised end
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA:
                conn.h11.receive_data(await _read(conn, self._timeout))
            elif isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
            else:  # h11.PAUSED or ConnectionClosed cannot come before EndOfMessage of a well-formed answer
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} in a response body")

    async def aclose(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None  # type: ignore[assignment]
        if not self._done:
            # Unread: reusable only if what is left is already in h11's buffer (a 304 or a redirect has no
            # body at all); reading more from the network just to keep a connection is not worth a stall.
            try:
                while True:
                    event = conn.h11.next_event()
                    if isinstance(event, h11.EndOfMessage):
                        self._done = True
                        break
                    if event is h11.NEED_DATA or not isinstance(event, h11.Data):
                        break
            except h11.ProtocolError:
                pass
        self._transport._release(conn, reusable=self._done)


async def _read(conn: _Connection, timeout: float | None) -> bytes:
    try:
        if timeout is None:
            data = await conn.reader.read(_READ)
        else:
            async with asyncio.timeout(timeout):
                data = await conn.reader.read(_READ)
    except TimeoutError:
        raise httpx.ReadTimeout("timed out reading the response") from None
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
    return data  # b"" at end of stream: h11 then reports an incomplete message, or a close where allowed


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with idle connections kept per origin; at most `max_idle` idle in all, the oldest closed first,
    none older than `idle_expiry` seconds (servers close idle keep-alive connections after a few seconds)."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 20, idle_expiry: float = 4.0
    ) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._expiry = idle_expiry
        self._idle: dict[Origin, list[_Connection]] = {}
        self._by_age: OrderedDict[_Connection, None] = OrderedDict()  # every idle connection, oldest first
        self._closed = False

    # httpx's transport interface ---------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}")
        origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        timeouts = request.extensions.get("timeout", {})
        conn = self._take_idle(origin)
        if conn is not None:
            try:
                return await self._exchange(conn, request, timeouts)
            except _Stale as exc:
                # The server closed it as we sent: once more on a new connection, as if none was idle. Only a
                # request without a body and without effects may go twice.
                if request.method not in _REPEATABLE:
                    raise httpx.RemoteProtocolError("the server closed the connection unanswered") from exc
        conn = await self._connect(origin, timeouts.get("connect"))
        try:
            return await self._exchange(conn, request, timeouts)
        except _Stale as exc:
            raise httpx.RemoteProtocolError("the server closed the connection without answering") from exc

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._by_age):
            conn.close()
        self._by_age.clear()
        self._idle.clear()

    # internals ---------------------------------------------------------------------------------------------
    def _take_idle(self, origin: Origin) -> _Connection | None:
        conns = self._idle.get(origin)
        if not conns:
            return None
        oldest = time.monotonic() - self._expiry
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to have timed out on the server
            del self._by_age[conn]
            if conn.idle_since >= oldest and conn.usable():
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection, *, reusable: bool) -> None:
        if reusable and not self._closed:
            state = conn.h11
            if state.our_state is h11.DONE and state.their_state is h11.DONE:
                try:
                    state.start_next_cycle()
                except h11.LocalProtocolError:
                    reusable = False
                else:
                    if conn.usable() and not state.trailing_data[0]:
                        self._park(conn)
                        return
        conn.close()

    def _park(self, conn: _Connection) -> None:
        if self._max_idle < 1:
            conn.close()
            return
        if len(self._by_age) >= self._max_idle:
            oldest = next(iter(self._by_age))
            self._idle[oldest.origin].remove(oldest)
            del self._by_age[oldest]
            oldest.close()
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._by_age[conn] = None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self._ssl is None:  # verifying; built once, since loading the CA store is slow
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls is not None else None, limit=_READ
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:  # socket.gaierror and ssl.SSLError included: the fetcher reads the cause
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(origin, reader, writer)

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        """Send `request` on `conn` and read the answer's head. Raises _Stale when the connection turns out
        closed before any byte of an answer arrived (on a reused one, the caller then retries on a new one)."""
        try:
            await self._send(conn, request, timeouts.get("write"))
            event = await self._head(conn, timeouts.get("read"))
        except BaseException:
            conn.close()
            raise
        return httpx.Response(
            event.status_code,
            headers=event.headers.raw_items(),
            stream=_Body(self, conn, timeouts.get("read")),
            extensions={
                "http_version": b"HTTP/" + event.http_version,
                "reason_phrase": bytes(event.reason),
                "network_stream": conn,
            },
        )

    async def _send(self, conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        state = conn.h11
        target = request.url.raw_path
        headers = list(request.headers.raw)
        try:
            out = state.send(h11.Request(method=request.method, target=target, headers=headers))
            assert out is not None
            conn.writer.write(out)
            async for chunk in request.stream:  # type: ignore[union-attr]
                if chunk:
                    data = state.send(h11.Data(data=chunk))
                    assert data is not None
                    conn.writer.write(data)
            end = state.send(h11.EndOfMessage())
            assert end is not None
            conn.writer.write(end)
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        if conn.writer.transport.get_write_buffer_size():
            try:
                async with asyncio.timeout(timeout):
                    await conn.writer.drain()
            except TimeoutError:
                raise httpx.WriteTimeout("timed out sending the request") from None
            except OSError as exc:
                raise _Stale from exc

    async def _head(self, conn: _Connection, timeout: float | None) -> h11.Response:
        state = conn.h11
        received = False
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                if not received:
                    raise _Stale from exc
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA:
                try:
                    data = await _read(conn, timeout)
                except httpx.ReadError as exc:
                    if not received:
                        raise _Stale from exc
                    raise
                received = received or bool(data)
                state.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue and friends: the real answer follows
            raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} before the response head")


class _Stale(Exception):
    """The connection was found closed before any byte of an answer came."""
