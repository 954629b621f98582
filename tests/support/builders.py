"""Feed documents built in tests, so each test shows the entries it relies on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape


@dataclass
class It:
    title: str
    text: str = ""
    link: str | None = None
    guid: str | None = None
    published: datetime | None = None


def rss(
    items: Iterable[It], *, title: str = "Test feed", language: str = "en", ttl: int | None = None
) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title><link>https://example.org/</link><language>{language}</language>",
    ]
    if ttl:
        parts.append(f"<ttl>{ttl}</ttl>")
    for it in items:
        parts.append("<item>")
        parts.append(f"<title>{escape(it.title)}</title>")
        if it.link:
            parts.append(f"<link>{escape(it.link)}</link>")
        if it.guid:
            parts.append(f'<guid isPermaLink="false">{escape(it.guid)}</guid>')
        if it.published:
            parts.append(f"<pubDate>{format_datetime(it.published)}</pubDate>")
        parts.append(f"<description>{escape(it.text)}</description></item>")
    parts.append("</channel></rss>")
    return "".join(parts).encode("utf-8")


def dated(
    n: int, *, prefix: str = "Item", site: str = "https://news.example.org", hours: int = 3
) -> list[It]:
    """n distinct entries published `hours` apart, newest first."""
    base = datetime(2026, 11, 20, 12, tzinfo=UTC)
    return [
        It(
            title=f"{prefix} {i}",
            text=f"Body of {prefix.lower()} {i}.",
            link=f"{site}/{prefix.lower()}/{i}?utm_source=rss",
            guid=f"{site}/g/{prefix.lower()}/{i}",
            published=base - timedelta(hours=hours * i),
        )
        for i in range(n)
    ]
