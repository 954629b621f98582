"""The fetcher against a real HTTP server on loopback (tests/support/feedserver.py)."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import ipaddress
import socket
import ssl
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

import httpx
import pytest

from monitor.ingest import fetch as fetch_module
from monitor.ingest import netguard
from monitor.ingest.fetch import (
    ACCEPT,
    Fetcher,
    FetchLimits,
    FetchRequest,
    FetchResult,
    classify_exception,
    decode_body,
    parse_max_age,
    parse_retry_after,
)
from monitor.ingest.netguard import is_public_address
from tests.support.feedserver import FeedServer

T = TypeVar("T")

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Test feed</title><link>http://example.org/</link>
<item><title>Activist detained in Almaty</title><link>http://example.org/1</link><guid>1</guid></item>
</channel></rss>
"""

# Loopback tests must opt in: the default refuses private addresses (see test_default_refuses_*).
LOCAL = FetchLimits(allow_private=True, total_timeout=10, connect_timeout=5)


@pytest.fixture
def srv() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment must not silently allow what a test expects to be refused.
    monkeypatch.delenv("MONITOR_ALLOW_PRIVATE_NETWORKS", raising=False)


def run(coro_fn: Callable[[Fetcher], Awaitable[T]], limits: FetchLimits = LOCAL) -> T:
    async def main() -> T:
        async with Fetcher(limits) as fetcher:
            return await coro_fn(fetcher)

    return asyncio.run(main())


def fetch(url: str, limits: FetchLimits = LOCAL, **kw: object) -> FetchResult:
    return run(lambda f: f.fetch(FetchRequest(url, **kw)), limits)  # type: ignore[arg-type]


# --- success, validators, conditional GET ------------------------------------------------------------------


def test_200_returns_body_and_stores_etag_and_last_modified(srv: FeedServer) -> None:
    lm = "Tue, 01 Apr 2025 10:00:00 GMT"
    url = srv.add("/feed.xml", RSS, etag='"v1"', last_modified=lm, content_type="application/rss+xml")
    res = fetch(url)
    assert res.outcome == "ok"
    assert res.status == 200
    assert res.body == RSS
    assert res.etag == '"v1"'
    assert res.last_modified == lm
    assert res.final_url == url and res.permanent_url is None
    assert res.headers["content-type"] == "application/rss+xml"
    assert res.error_kind is None and res.error is None


def test_request_sends_user_agent_accept_and_gzip(srv: FeedServer) -> None:
    url = srv.add("/feed.xml", RSS)
    fetch(url, FetchLimits(allow_private=True, user_agent="test-agent/1"))
    sent = srv.requests_for("/feed.xml")[0].headers
    assert sent["user-agent"] == "test-agent/1"
    assert sent["accept"] == ACCEPT
    assert "gzip" in sent["accept-encoding"] and "br" not in sent["accept-encoding"]
    assert "if-none-match" not in sent and "if-modified-since" not in sent


def test_cookies_a_feed_sets_are_never_sent(srv: FeedServer) -> None:
    # One feed's cookies must not travel to another feed's request (or back to its own): feeds need no sessions.
    first = srv.add("/a.xml", RSS, headers={"Set-Cookie": "session=secret; Path=/"})
    second = srv.add("/b.xml", RSS)

    async def both(f: Fetcher) -> None:
        await f.fetch(FetchRequest(first))
        await f.fetch(FetchRequest(second))
        await f.fetch(FetchRequest(first))

    run(both)
    assert [r.headers.get("cookie") for r in srv.requests] == [None, None, None]


def test_matching_etag_gives_not_modified_and_sends_validators(srv: FeedServer) -> None:
    lm = "Tue, 01 Apr 2025 10:00:00 GMT"
    url = srv.add("/feed.xml", RSS, etag='"v1"', last_modified=lm)
    res = fetch(url, etag='"v1"', last_modified=lm)
    assert res.outcome == "not_modified"
    assert res.status == 304
    assert res.body is None
    assert res.etag == '"v1"' and res.last_modified == lm
    sent = srv.requests_for("/feed.xml")[0].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == lm


def test_matching_last_modified_alone_gives_not_modified(srv: FeedServer) -> None:
    lm = "Tue, 01 Apr 2025 10:00:00 GMT"
    url = srv.add("/feed.xml", RSS, last_modified=lm)
    assert fetch(url, last_modified=lm).outcome == "not_modified"


def test_stale_etag_gets_full_body(srv: FeedServer) -> None:
    url = srv.add("/feed.xml", RSS, etag='"v2"')
    res = fetch(url, etag='"v1"')
    assert res.outcome == "ok" and res.body == RSS and res.etag == '"v2"'


def test_force_full_sends_no_conditional_headers(srv: FeedServer) -> None:
    lm = "Tue, 01 Apr 2025 10:00:00 GMT"
    url = srv.add("/feed.xml", RSS, etag='"v1"', last_modified=lm)
    res = fetch(url, etag='"v1"', last_modified=lm, force_full=True)
    assert res.outcome == "ok" and res.body == RSS
    sent = srv.requests_for("/feed.xml")[0].headers
    assert "if-none-match" not in sent and "if-modified-since" not in sent


def test_cache_control_and_expires_are_reported_for_the_scheduler(srv: FeedServer) -> None:
    url = srv.add(
        "/feed.xml",
        RSS,
        headers={
            "Cache-Control": "public, max-age=1800",
            "Expires": "Wed, 02 Apr 2025 12:00:00 GMT",
        },
    )
    res = fetch(url)
    assert res.cache_control_max_age == 1800
    assert res.fresh_for == 1800  # max-age wins over Expires
    assert res.expires is not None and res.expires.year == 2025 and res.expires.tzinfo is not None


def test_empty_body_is_ok_with_empty_bytes(srv: FeedServer) -> None:
    res = fetch(srv.add("/empty.xml", b""))
    assert res.outcome == "ok" and res.body == b""


def test_chunked_response_without_content_length_is_read_whole(srv: FeedServer) -> None:
    body = RSS * 50
    res = fetch(srv.add("/chunked.xml", body, chunked=True))
    assert res.outcome == "ok" and res.body == body
    assert "content-length" not in res.headers


def test_gzip_encoded_feed_is_decoded(srv: FeedServer) -> None:
    res = fetch(srv.add("/feed.xml", RSS, gzip=True))
    assert res.outcome == "ok"
    assert res.headers["content-encoding"] == "gzip"
    assert res.body == RSS


# --- redirects --------------------------------------------------------------------------------------------


def test_301_chain_sets_permanent_url(srv: FeedServer) -> None:
    final = srv.add("/new.xml", RSS)
    srv.redirect("/mid", "/new.xml", status=308)
    start = srv.redirect("/old", "/mid", status=301)
    res = fetch(start)
    assert res.outcome == "ok" and res.body == RSS
    assert res.url == start
    assert res.final_url == final
    assert res.permanent_url == final


@pytest.mark.parametrize("temporary", [302, 307])
def test_temporary_redirect_in_chain_leaves_permanent_url_unset(srv: FeedServer, temporary: int) -> None:
    final = srv.add("/new.xml", RSS)
    srv.redirect("/mid", "/new.xml", status=temporary)
    start = srv.redirect("/old", "/mid", status=301)
    res = fetch(start)
    assert res.outcome == "ok"
    assert res.final_url == final
    assert res.permanent_url is None


def test_redirect_sends_conditional_headers_on_every_hop(srv: FeedServer) -> None:
    srv.add("/new.xml", RSS, etag='"v1"')
    start = srv.redirect("/old", "/new.xml", status=301)
    res = fetch(start, etag='"v1"')
    assert res.outcome == "not_modified"
    assert res.permanent_url == srv.url("/new.xml")


def test_redirect_loop_is_reported(srv: FeedServer) -> None:
    res = fetch(srv.redirect_loop("/a", "/b"))
    assert res.outcome == "error"
    assert res.error_kind == "redirect_loop"
    assert res.error is not None and "/a" in res.error


def test_too_many_redirects_is_reported(srv: FeedServer) -> None:
    srv.add("/r5", RSS)
    for i in range(5):
        srv.redirect(f"/r{i}", f"/r{i + 1}", status=302)
    res = fetch(srv.url("/r0"), FetchLimits(allow_private=True, max_redirects=3))
    assert res.error_kind == "too_many_redirects"
    # The same chain within the limit is fine.
    assert fetch(srv.url("/r0"), FetchLimits(allow_private=True, max_redirects=5)).outcome == "ok"


def test_redirect_to_non_http_scheme_is_bad_url(srv: FeedServer) -> None:
    res = fetch(srv.redirect("/old", "file:///etc/passwd", status=301))
    assert res.error_kind == "bad_url"
    assert res.final_url.startswith("file:")


# --- HTTP errors ------------------------------------------------------------------------------------------


def test_404_is_http_4xx(srv: FeedServer) -> None:
    res = fetch(srv.url("/missing.xml"))
    assert res.outcome == "error" and res.status == 404 and res.error_kind == "http_4xx"
    assert res.body is None
    assert res.error is not None and srv.url("/missing.xml") in res.error and "404" in res.error


def test_410_is_reported_as_gone(srv: FeedServer) -> None:
    res = fetch(srv.add("/gone.xml", status=410))
    assert res.status == 410 and res.error_kind == "gone"


def test_429_with_retry_after_seconds_is_rate_limited(srv: FeedServer) -> None:
    res = fetch(srv.add("/busy", status=429, headers={"Retry-After": "120"}))
    assert res.error_kind == "rate_limited"
    assert res.retry_after == 120.0


def test_503_with_retry_after_http_date_is_rate_limited(srv: FeedServer) -> None:
    when = email.utils.formatdate(time.time() + 3600, usegmt=True)
    res = fetch(srv.add("/busy", status=503, headers={"Retry-After": when}))
    assert res.error_kind == "rate_limited"
    assert res.retry_after is not None and 3000 < res.retry_after <= 3600


def test_503_without_retry_after_is_http_5xx(srv: FeedServer) -> None:
    res = fetch(srv.add("/down", status=503))
    assert res.error_kind == "http_5xx" and res.retry_after is None


def test_500_is_http_5xx(srv: FeedServer) -> None:
    res = fetch(srv.add("/broken", status=500))
    assert res.status == 500 and res.error_kind == "http_5xx"


# --- hostile and broken servers ---------------------------------------------------------------------------


def test_hanging_server_times_out(srv: FeedServer) -> None:
    res = fetch(srv.add("/hang", hang=True), FetchLimits(allow_private=True, total_timeout=0.5))
    assert res.outcome == "error" and res.error_kind == "timeout"
    assert res.status is None


def test_connection_dropped_before_response_is_protocol_error(srv: FeedServer) -> None:
    res = fetch(srv.add("/drop", RSS, drop="before"))
    assert res.error_kind == "protocol"


def test_connection_dropped_mid_body_is_protocol_error(srv: FeedServer) -> None:
    res = fetch(srv.add("/drop", RSS, drop="mid"))
    assert res.error_kind == "protocol" and res.body is None


def test_nothing_listening_is_connect_error(srv: FeedServer) -> None:
    port = srv.port
    srv.stop()
    res = fetch(f"http://127.0.0.1:{port}/feed.xml")
    assert res.error_kind == "connect"


def _peak_traced(fn: Callable[[], T]) -> tuple[T, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_huge_body_is_refused_as_too_large(srv: FeedServer, declare_length: bool) -> None:
    url = srv.huge("/huge.xml", 50 * 1024 * 1024, declare_length=declare_length)
    limits = FetchLimits(allow_private=True, max_bytes=1024 * 1024)
    res, peak = _peak_traced(lambda: fetch(url, limits))
    assert res.outcome == "error" and res.error_kind == "too_large"
    assert res.body is None
    # Reading stops near the cap: nothing close to the 50 MB the server offered was held.
    assert peak < 10 * 1024 * 1024


def test_gzip_bomb_is_refused_without_inflating_it(srv: FeedServer) -> None:
    url = srv.gzip_bomb("/bomb.xml", 256 * 1024 * 1024)
    limits = FetchLimits(allow_private=True, max_decompressed=8 * 1024 * 1024)
    res, peak = _peak_traced(lambda: fetch(url, limits))
    assert res.outcome == "error" and res.error_kind == "decompression_bomb"
    assert res.body is None
    assert peak < 64 * 1024 * 1024  # far below the 256 MB it would inflate to


def test_corrupt_gzip_is_protocol_error(srv: FeedServer) -> None:
    res = fetch(srv.add("/bad.xml", raw_body=b"not gzip at all", headers={"Content-Encoding": "gzip"}))
    assert res.error_kind == "protocol"


# --- SSRF guard -------------------------------------------------------------------------------------------


def test_default_refuses_loopback_and_private_ip_without_sending_anything(srv: FeedServer) -> None:
    srv.add("/feed.xml", RSS)
    strict = FetchLimits()  # allow_private=False
    res = fetch(srv.url("/feed.xml"), strict)
    assert res.error_kind == "private_address"
    assert srv.requests == []  # refused before connecting
    # 10.0.0.1 is never contacted: an IP literal is checked without any network traffic.
    res = fetch("http://10.0.0.1/feed.xml", strict)
    assert res.error_kind == "private_address"
    assert res.error is not None and "10.0.0.1" in res.error


def test_env_variable_allows_private_networks(srv: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_ALLOW_PRIVATE_NETWORKS", "1")
    assert fetch(srv.add("/feed.xml", RSS), FetchLimits()).outcome == "ok"


def test_every_redirect_hop_goes_through_the_guard(srv: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Trust only this test server, as a deployment trusts public hosts; the redirect then aims at a private
    # address, which the guard must refuse at the second hop, before any connection is made.
    checked: list[str] = []
    real_check = netguard.check_url

    async def guard(url: str, *, allow_private: bool = False) -> object:
        checked.append(url)
        return await real_check(url, allow_private=url.startswith(srv.url("/")))

    monkeypatch.setattr(fetch_module.netguard, "check_url", guard)
    monkeypatch.setattr(fetch_module.netguard, "check_peer", lambda *a, **kw: None)  # the peer is this server
    start = srv.redirect("/old", "http://10.0.0.1/internal", status=301)
    res = fetch(start, FetchLimits())
    assert checked == [start, "http://10.0.0.1/internal"]
    assert res.error_kind == "private_address"
    assert res.final_url == "http://10.0.0.1/internal"


def test_connection_landing_on_private_address_is_refused(
    srv: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name looked public when checked, then the client's own lookup gave a private address.
    # The guard's check of the connected peer must still refuse the response.
    real_check = netguard.check_url

    async def fooled(url: str, *, allow_private: bool = False) -> object:
        return await real_check(url, allow_private=True)

    monkeypatch.setattr(fetch_module.netguard, "check_url", fooled)
    res = fetch(srv.add("/feed.xml", RSS), FetchLimits())
    assert res.error_kind == "private_address"
    assert res.body is None


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:10.0.0.1",
     "2002:c0a8:101::1", "64:ff9b::7f00:1"],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url", ["ftp://example.org/feed", "file:///etc/passwd", "javascript:alert(1)", "http://"]
)
def test_non_http_urls_are_bad_url(url: str) -> None:
    res = fetch(url)
    assert res.outcome == "error" and res.error_kind == "bad_url"


# --- concurrency ------------------------------------------------------------------------------------------


async def gather(f: Fetcher, reqs: Iterable[FetchRequest]) -> list[FetchResult]:
    """Many fetches at once on one fetcher, as the poll runs them; results in the order of `reqs`."""
    return list(await asyncio.gather(*(f.fetch(r) for r in reqs)))


def test_per_host_concurrency_is_bounded(srv: FeedServer) -> None:
    for i in range(8):
        srv.add(f"/slow{i}.xml", RSS, delay=0.15)
    limits = FetchLimits(allow_private=True, per_host=2, max_concurrency=20)
    reqs = [FetchRequest(srv.url(f"/slow{i}.xml")) for i in range(8)]

    results = run(lambda f: gather(f, reqs), limits)
    assert len(results) == 8 and all(r.outcome == "ok" for r in results)
    assert srv.peak_in_flight <= 2


def test_overall_concurrency_is_bounded(srv: FeedServer) -> None:
    for i in range(8):
        srv.add(f"/slow{i}.xml", RSS, delay=0.15)
    limits = FetchLimits(allow_private=True, per_host=10, max_concurrency=3)
    reqs = [FetchRequest(srv.url(f"/slow{i}.xml")) for i in range(8)]
    results = run(lambda f: gather(f, reqs), limits)
    assert [r.url for r in results] == [r.url for r in reqs] and all(r.outcome == "ok" for r in results)
    assert srv.peak_in_flight <= 3


def test_one_failing_feed_does_not_affect_the_others(srv: FeedServer) -> None:
    ok = srv.add("/ok.xml", RSS)
    urls = [ok, srv.add("/hang", hang=True), srv.url("/missing"), srv.add("/drop", drop="before"), "ftp://x/"]
    limits = FetchLimits(allow_private=True, total_timeout=0.5)

    by_url = {r.url: r for r in run(lambda f: gather(f, [FetchRequest(u) for u in urls]), limits)}
    assert set(by_url) == set(urls)
    assert by_url[ok].outcome == "ok" and by_url[ok].body == RSS
    assert [by_url[u].error_kind for u in urls[1:]] == ["timeout", "http_4xx", "protocol", "bad_url"]


# --- pure helpers -----------------------------------------------------------------------------------------


def test_retry_after_parses_seconds_dates_and_rejects_junk() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_max_age_is_read_from_cache_control() -> None:
    assert parse_max_age("no-cache, max-age=60") == 60
    assert parse_max_age("s-maxage=10") is None
    assert parse_max_age(None) is None


def test_decode_body_handles_concatenated_gzip_members_and_raw_deflate() -> None:
    assert decode_body(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = raw.compress(b"hello") + raw.flush()
    assert decode_body(deflated, "deflate", 100) == b"hello"
    assert decode_body(zlib.compress(b"hello"), "deflate", 100) == b"hello"


def test_connect_errors_are_classified_by_their_cause() -> None:
    def connect_error(cause: BaseException) -> httpx.ConnectError:
        try:
            raise httpx.ConnectError("failed") from cause
        except httpx.ConnectError as exc:
            return exc

    assert classify_exception(connect_error(socket.gaierror(-2, "Name or service not known")))[0] == "dns"
    assert classify_exception(connect_error(ssl.SSLCertVerificationError("bad cert")))[0] == "tls"
    assert classify_exception(connect_error(ConnectionRefusedError(111, "refused")))[0] == "connect"
    assert classify_exception(httpx.ReadTimeout("slow"))[0] == "timeout"
    assert classify_exception(TimeoutError())[0] == "timeout"
    assert classify_exception(httpx.RemoteProtocolError("peer closed"))[0] == "protocol"


def test_fetcher_used_outside_its_context_raises() -> None:
    with pytest.raises(RuntimeError):
        asyncio.run(Fetcher(LOCAL).fetch(FetchRequest("http://127.0.0.1/")))
