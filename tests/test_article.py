"""Article pages: fetched through the real fetcher from a loopback server, decoded, vetted and extracted."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from monitor.ingest.article import (
    ArticleResult,
    HostPacer,
    decode_html,
    fetch_article,
    retry_delay,
    wants_article,
)
from monitor.ingest.fetch import Fetcher, FetchLimits
from tests.support.feedserver import FeedServer

PAGES = Path(__file__).resolve().parent / "data" / "articles"
HTML = "text/html; charset=utf-8"


@pytest.fixture
def server() -> FeedServer:
    with FeedServer() as srv:
        yield srv


def fetch(url: str, **limits: object) -> object:
    async def run() -> object:
        async with Fetcher(FetchLimits(allow_private=True, **limits)) as f:  # type: ignore[arg-type]
            return await fetch_article(f, url)

    return asyncio.run(run())


def test_teaser_rule_auto_always_never() -> None:
    assert wants_article("auto", "A one-line teaser.", "https://x.example/a")
    assert not wants_article("auto", "x" * 400, "https://x.example/a")
    assert wants_article("always", "x" * 5000, "https://x.example/a")
    assert not wants_article("never", "short", "https://x.example/a")
    assert not wants_article("always", "short", None)


def test_retries_back_off_and_give_up() -> None:
    delays = [retry_delay(n) for n in range(1, 8)]
    assert delays[0] == 600 and delays[1] == 2400
    assert all(a is None or b is None or a <= b for a, b in itertools.pairwise(delays))
    assert delays[-1] is None


def test_article_text_is_extracted_without_navigation_ads_or_comments(server: FeedServer) -> None:
    server.add("/news/1", (PAGES / "ru_utf8.html").read_bytes(), content_type=HTML)
    art = fetch(server.url("/news/1"))
    assert art.ok, art.detail
    assert "арестовал на десять суток" in art.text and "потребовали освободить" in art.text
    assert "Реклама" not in art.text and "позор" not in art.text and "Политика" not in art.text
    assert art.sha256 and len(art.sha256) == 64 and art.final_url == server.url("/news/1")


@pytest.mark.parametrize(
    ("name", "content_type", "encoding"),
    [
        ("ru_cp1251_meta.html", "text/html", "cp1251"),  # declared by <meta charset> only
        ("ru_koi8r_header.html", "text/html; charset=koi8-r", "koi8-r"),  # by the header only
    ],
)
def test_a_page_in_a_legacy_encoding_is_decoded_by_its_header_or_meta(
    server: FeedServer, name: str, content_type: str, encoding: str
) -> None:
    server.add("/a", (PAGES / name).read_bytes(), content_type=content_type)
    art = fetch(server.url("/a"))
    assert art.ok, art.detail
    assert art.encoding == encoding
    assert "Медеуского района Алматы" in art.text


def test_undeclared_non_utf8_bytes_fall_back_to_cp1251() -> None:
    text, enc = decode_html("<p>Суд арестовал активиста</p>".encode("cp1251"), {})
    assert enc == "cp1251" and "арестовал" in text


@pytest.mark.parametrize(("name", "reason"), [("paywall.html", "paywall"), ("login.html", "login_wall")])
def test_walls_are_refused_with_their_reason(server: FeedServer, name: str, reason: str) -> None:
    server.add("/w", (PAGES / name).read_bytes(), content_type=HTML)
    art = fetch(server.url("/w"))
    assert not art.ok and art.reason == reason
    assert server.url("/w") in (art.detail or "")
    assert art.sha256  # what was served is still fingerprinted


def test_a_binary_page_is_refused(server: FeedServer) -> None:
    server.add("/doc.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 40, content_type="application/pdf")
    art = fetch(server.url("/doc.pdf"))
    assert not art.ok and art.reason == "binary" and "application/pdf" in (art.detail or "")
    server.add("/disguised", b"\x89PNG\r\n\x1a\n" + bytes(2000), content_type="text/html")
    assert fetch(server.url("/disguised")).reason == "binary"


def test_a_huge_page_is_refused_by_the_fetchers_cap(server: FeedServer) -> None:
    server.huge("/huge", size=3 * 1024 * 1024)
    art = fetch(server.url("/huge"), max_bytes=1024 * 1024)
    assert not art.ok and art.reason == "fetch" and "too_large" in (art.detail or "")


def test_a_redirect_to_another_host_is_not_taken_as_the_article(server: FeedServer) -> None:
    # localhost and 127.0.0.1 are the same server but two host names: a publisher's redirect to a portal.
    server.add("/story", (PAGES / "ru_utf8.html").read_bytes(), content_type=HTML)
    other = server.url("/story").replace("127.0.0.1", "localhost")
    server.redirect("/moved", other)
    art = fetch(server.url("/moved"))
    assert not art.ok and art.reason == "other_host" and "localhost" in (art.detail or "")


def test_a_page_without_story_text_says_so(server: FeedServer) -> None:
    server.add("/empty", b"<html><body><nav><a href='/'>Home</a></nav></body></html>", content_type=HTML)
    art = fetch(server.url("/empty"))
    assert not art.ok and art.reason == "no_text"


def test_requests_to_one_host_are_paced_and_other_hosts_are_not_held_up() -> None:
    clock = [100.0]
    released: list[tuple[str, float]] = []

    async def sleep(seconds: float) -> None:  # a fake clock: sleeping moves time on, nothing waits for real
        clock[0] += seconds
        await asyncio.sleep(0)

    pacer = HostPacer(1.0, clock=lambda: clock[0], sleep=sleep)

    async def go(url: str) -> None:
        await pacer.wait(url)
        released.append((url, clock[0]))

    urls = ["https://a.example/1", "https://www.a.example/2", "https://a.example/3", "https://b.example/1"]

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(go(u) for u in urls)), 5)

    asyncio.run(main())
    a_times = sorted(t for u, t in released if "a.example" in u)
    assert a_times == [100.0, 101.0, 102.0]  # www. is the same host
    assert next(t for u, t in released if "b.example" in u) <= 101.0  # not queued behind a.example's three


def test_an_unreachable_host_is_refused_without_waiting_for_its_turn() -> None:
    waited: list[str] = []

    class Recording(HostPacer):
        async def wait(self, url: str) -> None:
            waited.append(url)

    async def run() -> ArticleResult:
        async with Fetcher(FetchLimits()) as f:  # private networks not allowed: the guard refuses loopback
            return await fetch_article(f, "http://127.0.0.1:9/private", pacer=Recording())

    art = asyncio.run(run())
    assert not art.ok and art.reason == "fetch" and "private_address" in (art.detail or "")
    assert waited == []
