"""Fetch feeds over HTTP: conditional GET, manual redirects through the SSRF guard, size and decompression caps.

`Fetcher.fetch` never raises for network or HTTP trouble. Whatever happens comes back as a `FetchResult` whose
`outcome` is "ok", "not_modified" or "error"; an error carries `error_kind` (see `ErrorKind`) so the polling policy
can decide what to do (back off, mute a 410, honour Retry-After) and `error`, a sentence naming the URL.

Why the fetcher does things by hand that httpx could do:
- redirects: every hop must pass the SSRF guard, and a 301/308-only chain should update the stored feed URL while
  a 302/307 must not;
- content decoding: httpx would inflate gzip without a bound; a hostile feed could send a 300 KB body that
  inflates to gigabytes, so bytes are read raw (capped on the wire) and inflated with a cap on the output.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, get_args

import httpx

from monitor.errors import FetchError
from monitor.ingest import netguard
from monitor.ingest.transport import KeepAliveTransport

log = logging.getLogger(__name__)

Outcome = Literal["ok", "not_modified", "error"]
ErrorKind = Literal[
    "dns",
    "connect",
    "timeout",
    "tls",
    "http_4xx",
    "http_5xx",
    "gone",
    "rate_limited",
    "too_large",
    "decompression_bomb",
    "redirect_loop",
    "too_many_redirects",
    "private_address",
    "bad_url",
    "protocol",
]

_KINDS = frozenset(get_args(ErrorKind))

ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
# No "br": brotli is not a dependency, and decoding is ours (bounded), so we only ask for what we can decode.
ACCEPT_ENCODING = "gzip, deflate"
DEFAULT_USER_AGENT = "civic-space-monitor/0.1"

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT = frozenset({301, 308})
_DECODE_IN_THREAD = 256 * 1024


@dataclass(frozen=True)
class FetchLimits:
    max_concurrency: int = 20  # requests in flight overall
    per_host: int = 2  # requests in flight to one host name (politeness)
    connect_timeout: float = 10
    total_timeout: float = 60  # one fetch, all redirect hops included
    max_bytes: int = 15 * 1024 * 1024  # on the wire, before decoding; enforced while streaming
    max_decompressed: int = 50 * 1024 * 1024  # after gzip/deflate decoding; enforced while inflating
    max_redirects: int = 5
    user_agent: str = DEFAULT_USER_AGENT
    allow_private: bool = False  # also allowed by MONITOR_ALLOW_PRIVATE_NETWORKS=1


@dataclass(frozen=True)
class FetchRequest:
    url: str
    etag: str | None = None
    last_modified: str | None = None
    # Periodic full fetch: send no validators, because some servers answer 304 for content that changed.
    force_full: bool = False


@dataclass(frozen=True, kw_only=True)
class FetchResult:
    url: str  # as asked for
    final_url: str  # after redirects
    outcome: Outcome
    # The new address to store: set only when the request was redirected and every hop was 301/308.
    permanent_url: str | None = None
    status: int | None = None  # of the last response, None when no response arrived
    headers: Mapping[str, str] = field(default_factory=dict)  # of the last response, lower-case names
    body: bytes | None = None  # decoded (gzip/deflate removed); None unless outcome == "ok"
    etag: str | None = None  # for not_modified: the server's new one, else the one we sent
    last_modified: str | None = None
    cache_control_max_age: int | None = None
    expires: datetime | None = None  # aware UTC; None when absent or unparsable
    # Seconds the server says the response stays fresh: max-age, else Expires - Date; None when it does not say.
    fresh_for: float | None = None
    error_kind: ErrorKind | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds from the response's arrival, not capped here
    elapsed: float = 0.0  # seconds, including time spent waiting for a free slot

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


# --- header parsing (pure) --------------------------------------------------------------------------------


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # HTTP dates are GMT; parsedate gives naive for "-0000"
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait, from delta-seconds or an HTTP-date (a date in the past gives 0); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def parse_max_age(cache_control: str | None) -> int | None:
    if not cache_control:
        return None
    for directive in cache_control.split(","):
        name, _, arg = directive.strip().partition("=")
        if name.strip().lower() == "max-age":
            arg = arg.strip().strip('"')
            if arg.isdigit():
                return int(arg)
    return None


def _freshness(max_age: int | None, expires: datetime | None, date: datetime | None) -> float | None:
    if max_age is not None:
        return float(max_age)  # max-age overrides Expires (RFC 9111 §5.3)
    if expires is None:
        return None
    # Measured against the server's own clock when it gives one, so clock skew does not matter.
    return max(0.0, (expires - (date or datetime.now(UTC))).total_seconds())


# --- bounded decoding (pure) ------------------------------------------------------------------------------


class _Bomb(Exception):
    pass


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Inflate `data`, never producing more than `limit` bytes of output (raises _Bomb past that)."""
    out = bytearray()
    pending = data
    while pending:
        d = zlib.decompressobj(wbits)
        buf = pending
        while True:
            chunk = d.decompress(buf, limit + 1 - len(out))
            out += chunk
            if len(out) > limit:
                raise _Bomb
            buf = d.unconsumed_tail
            if d.eof or (not buf and not chunk):
                break
        if not d.eof:
            raise zlib.error("compressed stream is truncated")
        # gzip allows several members back to back; anything else after the end is trailing junk.
        pending = d.unused_data if wbits > 16 else b""
        if pending and not pending.startswith(b"\x1f\x8b"):
            break
    return bytes(out)


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding with an output cap. Raises _Bomb (too big), zlib.error (corrupt) or
    ValueError (an encoding we cannot decode)."""
    if not content_encoding:
        return raw
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    body = raw
    for coding in reversed(codings):  # listed in the order they were applied
        if coding in ("identity", "none"):
            continue
        if not body:
            continue  # an empty body "encoded" as gzip is still just empty
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, limit)
        elif coding == "deflate":
            # "deflate" should be zlib-wrapped, but some servers send a raw deflate stream.
            try:
                body = _inflate(body, zlib.MAX_WBITS, limit)
            except zlib.error:
                body = _inflate(body, -zlib.MAX_WBITS, limit)
        else:
            raise ValueError(f"unsupported Content-Encoding {coding!r}")
    return body


# --- exception classification (pure) ----------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify_exception(exc: BaseException) -> tuple[ErrorKind, str]:
    """Map an exception raised while fetching to an error kind and a short description."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout", "timed out" + (f" ({detail})" if isinstance(exc, httpx.TimeoutException) else "")
    chain = list(_causes(exc))
    if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain):
        return "tls", f"TLS failed: {detail}"
    if isinstance(exc, httpx.ConnectError):
        if any(isinstance(e, socket.gaierror) for e in chain):
            return "dns", f"cannot resolve host: {detail}"
        return "connect", f"cannot connect: {detail}"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return "bad_url", detail
    if isinstance(exc, httpx.ProxyError):
        return "connect", f"proxy failed: {detail}"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError | httpx.CloseError):
        return "protocol", f"connection broken: {detail}"
    if isinstance(exc, httpx.LocalProtocolError):
        return "protocol", f"cannot send the request: {detail}"
    if isinstance(exc, OSError):
        return "connect", f"network error: {detail}"
    return "protocol", f"{type(exc).__name__}: {detail}"


# --- the fetcher ------------------------------------------------------------------------------------------


@dataclass
class _Trace:
    """Where a fetch got to, so an exception can still be reported with the hop and response it hit."""

    url: str
    permanent: bool = True
    hops: int = 0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every cycle: loading the CA store again cost a cycle of 304s about a tenth
    of its CPU (py-spy, bench/ingest.py at 500 feeds)."""
    global _SSL
    if _SSL is None:
        _SSL = httpx.create_ssl_context(trust_env=False)
    return _SSL


class Fetcher:
    """Fetches feeds over one shared keep-alive transport; use as `async with Fetcher(limits) as f:`.

    Requests go straight to the transport (monitor.ingest.transport), not through an httpx.AsyncClient: the
    fetcher does its own redirects, decoding and guard checks, sends no cookies (one feed's must never travel to
    another's; feeds need no sessions) and uses no proxies (the SSRF guard must check the feed host, not a
    proxy), so the client would only add per-request work (a fifth of a 304's CPU)."""

    def __init__(self, limits: FetchLimits = FetchLimits()) -> None:
        self.limits = limits
        self._transport: KeepAliveTransport | None = None
        self._global = asyncio.Semaphore(limits.max_concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        # httpx's timeout extension, read by the transport; the whole fetch is bounded by total_timeout too.
        self._timeouts = {
            "connect": limits.connect_timeout,
            "read": limits.total_timeout,
            "write": limits.total_timeout,
            "pool": limits.total_timeout,
        }

    async def __aenter__(self) -> Fetcher:
        # At most max_concurrency connections are busy at once (the fetcher's slots); as many may wait idle.
        self._transport = KeepAliveTransport(ssl_context=_ssl_context(), max_idle=self.limits.max_concurrency)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    # public ----------------------------------------------------------------------------------------------
    async def fetch(self, req: FetchRequest) -> FetchResult:
        """Fetch one feed. Never raises for network or HTTP problems: they come back as outcome="error"."""
        if self._transport is None:  # a programming error, not a network one: let it raise
            raise RuntimeError("Fetcher must be used as `async with Fetcher() as fetcher:`")
        started = time.monotonic()
        trace = _Trace(url=req.url)
        try:
            return await self._fetch(req, trace, started)
        except FetchError as exc:
            kind: ErrorKind = exc.kind if exc.kind in _KINDS else "protocol"  # type: ignore[assignment]
            return self._failure(req, trace, started, kind, _strip_prefix(exc), trace.status)
        except Exception as exc:
            kind, detail = classify_exception(exc)
            if kind == "protocol" and not isinstance(exc, httpx.HTTPError):
                # Not a network condition we know: keep the service running, but leave a trace for a bug hunt.
                log.warning("unexpected error fetching %s", req.url, exc_info=True)
            if isinstance(exc, httpx.ConnectTimeout):
                detail = f"{detail} (connect limit {self.limits.connect_timeout:g} s)"
            elif kind == "timeout":
                detail = f"{detail} (limit {self.limits.total_timeout:g} s for the whole fetch)"
            return self._failure(req, trace, started, kind, detail, None)

    # internals -------------------------------------------------------------------------------------------
    def _request_headers(self, req: FetchRequest) -> dict[str, str]:
        headers = {"User-Agent": self.limits.user_agent, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
        if not req.force_full:
            if req.etag:
                headers["If-None-Match"] = req.etag
            if req.last_modified:
                headers["If-Modified-Since"] = req.last_modified
        return headers

    def _host_slot(self, host: str) -> asyncio.Semaphore:
        sem = self._hosts.get(host)
        if sem is None:
            sem = self._hosts[host] = asyncio.Semaphore(self.limits.per_host)
        return sem

    async def _fetch(self, req: FetchRequest, trace: _Trace, started: float) -> FetchResult:
        lim = self.limits
        headers = self._request_headers(req)
        visited: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        url = req.url
        while True:
            trace.url = url
            try:
                # Name resolution runs in a thread and can stall on a broken resolver: bound it separately.
                async with asyncio.timeout(lim.connect_timeout):
                    parsed = await netguard.check_url(url, allow_private=lim.allow_private)
            except TimeoutError:
                raise FetchError("DNS lookup timed out", url=url, kind="dns") from None
            key = str(parsed.copy_with(fragment=None))
            if key in visited:
                raise FetchError(f"redirect loop back to {url}", url=req.url, kind="redirect_loop")
            visited.add(key)

            # Per host first, then global: waiting on a busy host must not hold one of the global slots.
            # Slots are held per hop, never two at once, so a redirect to another host cannot deadlock.
            async with self._host_slot(parsed.host.lower()), self._global:
                if deadline is None:
                    deadline = loop.time() + lim.total_timeout  # the clock starts once we hold a slot
                async with asyncio.timeout_at(deadline):
                    location = await self._one_hop(req, trace, parsed, headers, started)
            if isinstance(location, FetchResult):
                return location
            trace.hops += 1
            if trace.hops > lim.max_redirects:
                raise FetchError(
                    f"more than {lim.max_redirects} redirects (last to {location})",
                    url=req.url,
                    kind="too_many_redirects",
                )
            url = location

    async def _one_hop(
        self,
        req: FetchRequest,
        trace: _Trace,
        url: httpx.URL,
        headers: dict[str, str],
        started: float,
    ) -> FetchResult | str:
        """One request: the finished result, or the next URL when the answer is a redirect."""
        assert self._transport is not None
        lim = self.limits
        request = httpx.Request("GET", url, headers=headers, extensions={"timeout": self._timeouts})
        async with _opened(await self._transport.handle_async_request(request)) as resp:
            self._check_peer(resp, str(url))
            status = resp.status_code
            resp_headers = {k.lower(): v for k, v in resp.headers.items()}
            trace.status, trace.headers = status, resp_headers

            if status in _REDIRECTS:
                return self._redirect_target(trace, url, status, resp_headers.get("location"))

            base = self._base_result(req, trace, str(url), resp_headers, started)
            # A 304 (or a redirect, or an error page already received whole) left unread still goes back to
            # the pool: the transport keeps a connection whose answer is complete in its buffer.
            if status == 304:
                return replace(
                    base,
                    outcome="not_modified",
                    etag=resp_headers.get("etag") or req.etag,
                    last_modified=resp_headers.get("last-modified") or req.last_modified,
                )
            if not 200 <= status < 300:
                return _error(base, *_status_error(status, resp_headers))
            raw = await self._read_capped(resp)
            if raw is None:
                return _error(
                    base, "too_large", f"the response is larger than {lim.max_bytes} bytes; refused"
                )

        encoding = resp_headers.get("content-encoding")
        try:
            if len(raw) > _DECODE_IN_THREAD:
                # Inflating tens of MB takes a while; keep the event loop free for the other fetches.
                body = await asyncio.to_thread(decode_body, raw, encoding, lim.max_decompressed)
            else:
                body = decode_body(raw, encoding, lim.max_decompressed)
        except _Bomb:
            return _error(
                base,
                "decompression_bomb",
                f"the {encoding} body inflates past {lim.max_decompressed} bytes; refused",
            )
        except (zlib.error, ValueError) as exc:
            return _error(base, "protocol", f"cannot decode the {encoding} body ({exc})")
        return replace(
            base,
            outcome="ok",
            body=body,
            etag=resp_headers.get("etag"),
            last_modified=resp_headers.get("last-modified"),
            elapsed=time.monotonic() - started,
        )

    def _redirect_target(self, trace: _Trace, url: httpx.URL, status: int, location: str | None) -> str:
        if not location:
            raise FetchError(f"{status} redirect without a Location header", url=str(url), kind="protocol")
        try:
            target = str(url.join(location.strip()))
        except (httpx.InvalidURL, ValueError) as exc:
            raise FetchError(
                f"{status} redirect to an invalid URL {location!r} ({exc})", url=str(url), kind="bad_url"
            ) from None
        if status not in _PERMANENT:
            trace.permanent = False
        return target

    async def _read_capped(self, resp: httpx.Response) -> bytes | None:
        """The raw (still encoded) body, or None as soon as it is known to exceed max_bytes."""
        limit = self.limits.max_bytes
        declared = resp.headers.get("content-length", "")
        if declared.strip().isdigit() and int(declared) > limit:
            return None  # refused without reading a byte of it
        raw = bytearray()
        async for chunk in resp.aiter_raw():
            raw += chunk
            if len(raw) > limit:
                return None  # leaving the stream context closes the connection mid-body
        return bytes(raw)

    def _check_peer(self, resp: httpx.Response, url: str) -> None:
        if netguard.private_networks_allowed(self.limits.allow_private):
            return
        stream = resp.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if isinstance(peer, tuple) and peer:
            netguard.check_peer(str(peer[0]), url=url, allow_private=False)

    def _base_result(
        self, req: FetchRequest, trace: _Trace, final_url: str, headers: dict[str, str], started: float
    ) -> FetchResult:
        """What every answer that reached its final hop shares; callers replace outcome and friends."""
        max_age = parse_max_age(headers.get("cache-control"))
        expires = _http_date(headers.get("expires"))
        return FetchResult(
            url=req.url,
            final_url=final_url,
            outcome="error",
            permanent_url=final_url if trace.hops and trace.permanent else None,
            status=trace.status,
            headers=headers,
            cache_control_max_age=max_age,
            expires=expires,
            fresh_for=_freshness(max_age, expires, _http_date(headers.get("date"))),
            retry_after=parse_retry_after(headers.get("retry-after")),
            elapsed=time.monotonic() - started,
        )

    def _failure(
        self,
        req: FetchRequest,
        trace: _Trace,
        started: float,
        kind: ErrorKind,
        detail: str,
        status: int | None,
    ) -> FetchResult:
        if trace.url != req.url and trace.url not in detail:
            detail = f"{detail} (at redirect target {trace.url})"
        return FetchResult(
            url=req.url,
            final_url=trace.url,
            outcome="error",
            status=status,
            headers=trace.headers if status is not None else {},
            error_kind=kind,
            error=f"{req.url}: {kind}: {detail}",
            retry_after=parse_retry_after(trace.headers.get("retry-after")) if status is not None else None,
            elapsed=time.monotonic() - started,
        )


@asynccontextmanager
async def _opened(resp: httpx.Response) -> AsyncIterator[httpx.Response]:
    """The response, closed on the way out (back to the pool if it was read whole, else hung up)."""
    try:
        yield resp
    finally:
        await resp.aclose()


def _error(base: FetchResult, kind: ErrorKind, what: str) -> FetchResult:
    return replace(base, outcome="error", error_kind=kind, error=f"{base.url}: {kind}: {what}")


def _status_error(status: int, headers: Mapping[str, str]) -> tuple[ErrorKind, str]:
    if status == 410:
        return "gone", "the server answered 410 Gone: the feed was removed for good"
    if status == 429:
        return "rate_limited", "the server answered 429 Too Many Requests" + _after(headers)
    if status == 503 and parse_retry_after(headers.get("retry-after")) is not None:
        return "rate_limited", "the server answered 503 Service Unavailable" + _after(headers)
    if 400 <= status < 500:
        return "http_4xx", f"the server answered {status}"
    if 500 <= status < 600:
        return "http_5xx", f"the server answered {status}"
    return "protocol", f"unexpected status {status}"


def _after(headers: Mapping[str, str]) -> str:
    seconds = parse_retry_after(headers.get("retry-after"))
    return "" if seconds is None else f", retry after {math.ceil(seconds)} s"


def _strip_prefix(exc: FetchError) -> str:
    """FetchError renders as 'url: kind: message'; results re-add the URL asked for, so keep the message."""
    text = str(exc)
    prefix = f"{exc.url}: {exc.kind}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
