"""Feed document (bytes) -> normalised entries with a stable identity.

feedparser reads every feed dialect (RSS 0.9x/1.0/2.0, Atom) and recovers entries from broken XML; everything it
gives us is then treated as untrusted: HTML goes through `monitor.sanitize` (our nh3 pass is the one we trust, so
feedparser's own slower sanitiser is switched off), text is plain and NFC, fields are capped, dates are aware UTC
and never in the future, and each entry gets a key that identifies it within its feed across fetches.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import os
import re
import select
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from html import escape
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import feedparser

from monitor.errors import ParseError
from monitor.ingest.urls import canonical_url
from monitor.sanitize import html_to_text, normalize_text, sanitize_html_and_text, strip_control

if TYPE_CHECKING:
    from monitor.search.index import Prepared

__all__ = ["Entry", "ParseLimits", "ParsedFeed", "detect_language", "normalize_language", "parse_feed"]


@dataclass(frozen=True)
class ParseLimits:
    max_entries: int = 500
    max_title: int = 1000
    max_text: int = 100_000
    max_url: int = 2048
    max_guid: int = 1024


@dataclass(frozen=True)
class Entry:
    key: str
    guid: str | None
    url: str | None
    title: str
    text: str
    html: str
    published: datetime
    published_estimated: bool
    language: str | None
    author: str | None
    content_hash: str
    # the languages whose rules classify the entry, from the language decision (monitor.ingest.language): two
    # for a mixed item; empty until decided, and then `language`'s rules run
    rule_languages: tuple[str, ...] = ()
    # the search index's document, made with the language decision; used only if it still fits the title,
    # text and language stored (monitor.search.index.Prepared.fits)
    prepared: Prepared | None = None


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    language: str | None
    ttl_minutes: int | None
    entries: list[Entry]
    warning: str | None
    dropped: int


# A publisher's clock a little ahead of ours is normal; beyond this the date is wrong (or a trick to stay on top).
FUTURE_TOLERANCE = timedelta(hours=1)
_WEB = ("http://", "https://")
_MAX_AUTHOR = 300
_DERIVED_TITLE = 140
# Raw HTML larger than this many times the text cap is cut before sanitising, to bound the work per entry.
_RAW_HTML_FACTOR = 4

# bozo exceptions that say nothing is wrong with the XML: a server's Content-Type, or a charset declared wrongly
# that feedparser corrected. Reporting them would flag most feeds on the web.
_BENIGN_BOZO = (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride)

_SY_PERIOD_MINUTES = {"hourly": 60, "daily": 1440, "weekly": 10080, "monthly": 43200, "yearly": 525600}
_MAX_TTL_MINUTES = 525600

# Tags seen in the wild that are not ISO 639-1 codes (kz is the country, not the language).
_LANGUAGE_ALIASES = {"kz": "kk", "kaz": "kk", "rus": "ru", "eng": "en", "qaz": "kk"}
_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}")
_KAZAKH_LETTERS = re.compile("[әғқңөұүһіӘҒҚҢӨҰҮҺІ]")
_CYRILLIC_RUN = re.compile("[\u0400-\u04ff]+")
_LATIN_RUN = re.compile("[A-Za-z]+")
_LANGUAGE_SAMPLE = 1000


def normalize_language(tag: str | None) -> str | None:
    """Primary subtag of a language tag, lower case: "ru-RU" -> "ru", "kk_KZ" -> "kk"; None for junk."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    primary = _LANGUAGE_ALIASES.get(primary, primary)
    return primary if _LANGUAGE_TAG.fullmatch(primary) else None


def detect_language(text: str) -> str | None:
    """Cheap guess from the script when nothing declares a language: Kazakh-specific letters -> "kk", other
    Cyrillic -> "ru", Latin -> "en"."""
    sample = text[:_LANGUAGE_SAMPLE]
    cyrillic = sum(len(run) for run in _CYRILLIC_RUN.findall(sample))
    latin = sum(len(run) for run in _LATIN_RUN.findall(sample))
    if cyrillic and cyrillic >= latin:
        return "kk" if _KAZAKH_LETTERS.search(sample) else "ru"
    if latin:
        return "en"
    return None


# Russian and Kazakh month names, for feeds that localise their dates (feedparser only knows English ones).
_MONTHS = {
    "янв": 1, "фев": 2, "мар": 3, "апр": 4, "мая": 5, "май": 5, "июн": 6, "июл": 7, "авг": 8, "сен": 9,
    "окт": 10, "ноя": 11, "дек": 12,
    "қаң": 1, "ақп": 2, "нау": 3, "сәу": 4, "мам": 5, "мау": 6, "шіл": 7, "там": 8, "қыр": 9, "қаз": 10,
    "қар": 11, "жел": 12,
}  # fmt: skip
_LOCAL_DATE = re.compile(
    r"(?P<day>\d{1,2})\s+(?P<month>[^\W\d_]{3})[^\W\d_]*\.?\s+(?P<year>\d{4})(?:\s*г\.?)?,?"
    r"(?:\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?"
    r"(?:\s*(?P<tz>[+-]\d{2}:?\d{2}|UTC|GMT|Z))?",
)


def _parse_local_date(value: str) -> datetime | None:
    m = _LOCAL_DATE.search(value)
    if not m:
        return None
    month = _MONTHS.get(m["month"].lower())
    if month is None:
        return None
    offset = timedelta(0)
    tz = m["tz"]
    if tz and tz[0] in "+-":
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if tz[0] == "-":
            offset = -offset
    try:
        local = datetime(
            int(m["year"]), month, int(m["day"]), int(m["hour"] or 0), int(m["minute"] or 0),
            int(m["second"] or 0), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None
    return local - offset


def _struct_to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, time.struct_time):
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _entry_date(raw: Mapping[str, Any], field: str) -> datetime | None:
    parsed = _struct_to_datetime(raw.get(field + "_parsed"))
    if parsed is None and isinstance(raw.get(field), str):
        parsed = _parse_local_date(raw[field])
    return parsed


def _truncate(s: str, limit: int) -> str:
    if len(s) <= limit:
        return s
    return s[: max(limit - 1, 0)].rstrip() + "…"


def _is_html(detail: Any) -> bool:
    kind = detail.get("type", "text/html") if isinstance(detail, Mapping) else "text/html"
    return "html" in kind


# Titles are declared plain text but often carry markup anyway (CDATA-wrapped tags, a <script> from a compromised
# CMS). Text that looks like tags is read as HTML, so no markup or script source reaches titles or the rules.
_LOOKS_LIKE_TAG = re.compile(r"<[A-Za-z/!?]")


def _plain(value: Any, detail: Any) -> str:
    if not isinstance(value, str) or not value:
        return ""
    if _is_html(detail) or _LOOKS_LIKE_TAG.search(value):
        return html_to_text(value)
    return normalize_text(value)


def _text_as_html(text: str) -> str:
    return "".join(f"<p>{escape(line)}</p>" for line in text.split("\n") if line)


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()


@dataclass(frozen=True)
class _Context:
    feed_url: str
    feed_language: str | None
    default_language: str | None
    now: datetime
    limits: ParseLimits


def _pick_body(raw: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    # Full content (Atom <content>, RSS <content:encoded>) beats the summary/description teaser.
    for part in raw.get("content") or ():
        value = part.get("value")
        if isinstance(value, str) and value.strip():
            return value, part
    summary = raw.get("summary")
    if isinstance(summary, str) and summary.strip():
        return summary, raw.get("summary_detail")
    return "", None


def _normalise_entry(raw: Mapping[str, Any], ctx: _Context) -> Entry | None:
    limits = ctx.limits
    raw_link = raw.get("link")
    if raw.get("guidislink") and isinstance(raw_link, str) and not raw_link.lower().startswith(_WEB):
        # feedparser copies a permalink GUID into a missing <link>; "12345" is no address, don't invent one.
        raw_link = None
    url = canonical_url(raw_link, ctx.feed_url) if isinstance(raw_link, str) else None
    if url is not None and len(url) > limits.max_url:
        url = None

    guid = raw.get("id")
    guid = strip_control(guid).strip() if isinstance(guid, str) else None
    if not guid or len(guid) > limits.max_guid:
        guid = None  # an over-long GUID is junk, not an identity: fall back to the URL

    title = _plain(raw.get("title"), raw.get("title_detail"))

    body, detail = _pick_body(raw)
    if body and detail is not None and _is_html(detail):
        body = body[: limits.max_text * _RAW_HTML_FACTOR]
        # xml:base where the document sets one (feedparser tracks it per element), else the entry's own page.
        declared_base = detail.get("base")
        base = urljoin(ctx.feed_url, declared_base) if declared_base else url or ctx.feed_url
        html, text = sanitize_html_and_text(body, base)
    else:
        text = normalize_text(body[: limits.max_text * _RAW_HTML_FACTOR])
        html = ""
    text = _truncate(text, limits.max_text)
    if not html and text:
        html = _text_as_html(text)

    if not title and not text and not url:
        return None  # nothing to show, classify or link to
    if not title and text:
        # Some feeds (micro-posts, Telegram bridges) have no titles; the digest still needs a line to show.
        title = _truncate(text.split("\n", 1)[0], _DERIVED_TITLE)
    title = _truncate(title, limits.max_title)

    published = _entry_date(raw, "published") or _entry_date(raw, "updated")
    estimated = False
    if published is None or published > ctx.now + FUTURE_TOLERANCE:
        published, estimated = ctx.now, True

    declared = raw.get("language")
    if not declared:
        for part in (detail, raw.get("title_detail")):
            if isinstance(part, Mapping) and part.get("language"):
                declared = part["language"]
                break
    language = (
        normalize_language(declared if isinstance(declared, str) else None)
        or ctx.feed_language
        or ctx.default_language
        or detect_language(f"{title}\n{text}")
    )

    raw_author = raw.get("author")
    author = _truncate(normalize_text(raw_author), _MAX_AUTHOR) if isinstance(raw_author, str) else ""

    digest = content_hash(title, text)
    if guid is not None:
        key = f"guid:{guid}"
    elif url is not None:
        key = f"url:{url}"
    else:
        key = f"hash:{digest}"
    return Entry(
        key=key,
        guid=guid,
        url=url,
        title=title,
        text=text,
        html=html,
        published=published,
        published_estimated=estimated,
        language=language,
        author=author or None,
        content_hash=digest,
    )


def _short_hash(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def _disambiguate(entries: list[Entry]) -> list[Entry]:
    """Give entries that share a key within one document distinct, deterministic keys.

    Broken feeds repeat one GUID (or one link, often the home page) on different articles; merging them would lose
    all but one. The suffix depends only on the entry itself (its URL when the URLs differ, else its content), not
    on its position, so the keys stay the same when the feed reorders. Exact repeats are dropped.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, entry in enumerate(entries):
        groups[entry.key].append(i)
    if all(len(group) == 1 for group in groups.values()):
        return entries
    result: list[Entry | None] = list(entries)
    for key, group in groups.items():
        if len(group) == 1:
            continue
        members = [entries[i] for i in group]
        urls = [e.url for e in members]
        by_url = key.startswith("guid:") and None not in urls and len(set(urls)) == len(urls)
        seen: set[str] = set()
        for i, entry in zip(group, members, strict=True):
            suffix = _short_hash(entry.url) if by_url and entry.url else entry.content_hash[:16]
            if suffix in seen:
                result[i] = None
                continue
            seen.add(suffix)
            if not key.startswith("hash:"):
                result[i] = replace(entry, key=f"{key}#{suffix}")
    return [e for e in result if e is not None]


def _ttl_minutes(feed: Mapping[str, Any]) -> int | None:
    try:
        ttl = int(str(feed.get("ttl", "")).strip())
    except ValueError:
        ttl = 0
    if 0 < ttl <= _MAX_TTL_MINUTES:
        return ttl
    period = _SY_PERIOD_MINUTES.get(str(feed.get("sy_updateperiod", "")).strip().lower())
    if period is None:
        return None
    try:
        frequency = int(str(feed.get("sy_updatefrequency", "1")).strip() or "1")
    except ValueError:
        frequency = 1
    return max(1, period // max(frequency, 1))


class _FeedLinkFinder(HTMLParser):
    """Collects <link rel="alternate" type="application/rss+xml|atom+xml" href> (and <base href>) from a page."""

    _FEED_TYPES = frozenset({"application/rss+xml", "application/atom+xml", "application/rdf+xml"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("link", "base"):
            return
        a = {k: (v or "") for k, v in attrs}
        if tag == "base":
            self.base = self.base or a.get("href") or None
            return
        rels = a.get("rel", "").lower().split()
        kind = a.get("type", "").split(";", 1)[0].strip().lower()
        if "alternate" in rels and kind in self._FEED_TYPES and a.get("href"):
            self.hrefs.append(a["href"])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def _advertised_feeds(body: bytes, url: str, encoding: str | None) -> list[str]:
    text = body[:1_000_000].decode(encoding or "utf-8", errors="replace")
    finder = _FeedLinkFinder()
    try:
        finder.feed(text)
        finder.close()
    except Exception:  # HTMLParser is lenient, but this is only a hint for an error message
        pass
    base = canonical_url(finder.base, url) if finder.base else url
    links: list[str] = []
    for href in finder.hrefs:
        absolute = canonical_url(href, base or url)
        if absolute and absolute not in links:
            links.append(absolute)
    return links[:10]


# A bare "&" (most often in a query string: "?id=5&lang=ru") makes the XML ill-formed, and feedparser's lenient
# fallback then reads "&lang" as the HTML entity for "〈" and corrupts the link. Escaping bare ampersands first
# keeps such links intact and often lets the strict parser succeed. CDATA sections are left as they are: a bare
# "&" is legal there.
_BARE_AMPERSAND = re.compile(
    rb"<!\[CDATA\[.*?\]\]>|&(?!#[0-9]+;|#[xX][0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9._-]*;)", re.DOTALL
)


_BARE_AMPERSAND_ANYWHERE = re.compile(rb"&(?!#[0-9]+;|#[xX][0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9._-]*;)")


def _escape_bare_ampersands(body: bytes) -> bytes:
    # The quick search (no CDATA awareness) answers "nothing to do" for almost every feed.
    if b"&" not in body or not _BARE_AMPERSAND_ANYWHERE.search(body):
        return body
    return _BARE_AMPERSAND.sub(lambda m: m.group(0) if m.group(0) != b"&" else b"&amp;", body)


def _describe(exc: object) -> str:
    message = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def parse_feed(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    now: datetime,
    default_language: str | None = None,
    limits: ParseLimits = ParseLimits(),
) -> ParsedFeed:
    """Parse a fetched feed document into normalised entries.

    `headers` are the HTTP response headers: the charset of Content-Type decides the decoding (RFC 3023), which
    is how a KOI8-R or Windows-1251 feed that declares nothing in its XML still reads right.
    Raises ParseError(kind="empty") for an empty body and ParseError(kind="not_a_feed") for anything that is not a
    feed, naming the feeds an HTML page advertises.
    """
    if not body or not body.strip():
        raise ParseError("the server sent an empty document", url=url, kind="empty")
    now = _utc(now)
    # feedparser matches header names in lower case. Content-Location is left out on purpose: feedparser would
    # resolve non-URL GUIDs against it, making entry identity depend on the address the feed was fetched from.
    response_headers = {k.lower(): v for k, v in (headers or {}).items()}
    response_headers.pop("content-location", None)
    # Content-Language is kept out too: feedparser would let it override the feed's own <language>; it is only a
    # fallback for feeds that declare nothing.
    header_language = normalize_language(response_headers.pop("content-language", "").split(",")[0])
    try:
        result = feedparser.parse(
            io.BytesIO(_escape_bare_ampersands(body)),
            response_headers=response_headers,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Exception as exc:  # a bug in feedparser on hostile input must not stop the cycle
        raise ParseError(f"the feed parser failed: {_describe(exc)}", url=url, kind="not_a_feed") from exc

    raw_entries = result.get("entries") or []
    version = result.get("version") or ""
    bozo = result.get("bozo_exception") if result.get("bozo") else None
    if not version and not raw_entries:
        looks_html = b"<html" in body[:4096].lower() or b"<!doctype html" in body[:4096].lower()
        links = _advertised_feeds(body, url, result.get("encoding") or None)
        if looks_html or links:
            message = "this is an HTML page, not a feed"
        elif body.lstrip()[:1] == b"{" and b"jsonfeed.org" in body[:2048]:
            message = "JSON Feed is not supported; the site may also offer RSS or Atom"
        elif bozo is not None:
            message = f"not a feed ({_describe(bozo)})"
        else:
            message = "not a feed: no RSS or Atom document found"
        raise ParseError(message, url=url, kind="not_a_feed", feed_links=links)

    warning = None
    if bozo is not None and not isinstance(bozo, _BENIGN_BOZO):
        warning = _describe(bozo)

    feed = result.get("feed") or {}
    feed_language = normalize_language(feed.get("language")) or header_language
    default = normalize_language(default_language)
    ctx = _Context(url, feed_language, default, now, limits)

    kept = raw_entries[: limits.max_entries]
    entries = [e for e in (_normalise_entry(raw, ctx) for raw in kept) if e is not None]
    title = _truncate(_plain(feed.get("title"), feed.get("title_detail")), limits.max_title) or None
    link = feed.get("link")
    return ParsedFeed(
        title=title,
        link=canonical_url(link, url) if isinstance(link, str) else None,
        language=feed_language,
        ttl_minutes=_ttl_minutes(feed),
        entries=_disambiguate(entries),
        warning=warning,
        dropped=len(raw_entries) - len(kept),
    )


# ---- in a worker process ----------------------------------------------------------------------------------
# Here rather than in the poller, so that a parse worker imports this module and feedparser, not the database layer.


@dataclass(frozen=True)
class ParseFailure:
    kind: str
    message: str


ParseOutcome = ParsedFeed | ParseFailure


def parse_job(
    body: bytes, url: str, headers: dict[str, str], now: datetime, language: str | None, max_entries: int
) -> ParseOutcome:
    """Parse one document; errors come back as values, since exceptions with extra fields do not survive
    the trip back from a worker process intact."""
    try:
        return parse_feed(
            body,
            url=url,
            headers=headers,
            now=now,
            default_language=language,
            limits=ParseLimits(max_entries=max_entries),
        )
    except ParseError as exc:
        return ParseFailure(exc.kind, str(exc).removeprefix(f"{url}: "))
    except Exception as exc:  # a parser bug must not stop the cycle; record it like any failure
        return ParseFailure("parse", f"could not parse: {type(exc).__name__}: {exc}")


def worker_init(pid: int) -> None:
    """Pool initializer. Ctrl-C reaches every process of the terminal's group: the service handles it and
    shuts the pool down, so a worker ignores it (instead of printing a traceback). And the worker ends when
    process `pid` (the one that started the pool) ends, even by SIGKILL. Without that the workers outlive it:
    each holds the write end of the pool's job queue, so none ever reads end-of-file, and they keep the
    forkserver alive too."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)  # Linux: readable once the process has ended
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                time.sleep(2)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
        os._exit(0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
