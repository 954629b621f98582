"""Article pages for teaser-only entries: fetch through the feed fetcher, decode, vet, extract the main text.

Many outlets of the region publish a headline and a one-line teaser; the story is on the page. The page is
fetched with the same `Fetcher` as feeds (SSRF guard, size and decompression caps, timeouts, conditional GET),
at most one request per host per `interval` seconds (politeness is per host name, across feeds), and whatever
goes wrong comes back as an `ArticleResult` with a `reason` kind and a sentence, never as an exception: the
entry is then stored with its teaser and the article retried later (see `retry_delay`).

The main text is extracted with trafilatura; bench/article_extract.py compares it with readability-lxml on
generated EN/RU/KK news pages (navigation, ads, comments, related links) for token F1 against the known body
and speed.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx

from monitor.ingest.fetch import Fetcher, FetchRequest, FetchResult
from monitor.sanitize import normalize_text

if TYPE_CHECKING:
    from monitor.config.load import Config

__all__ = [
    "ArticleEnricher",
    "ArticleResult",
    "FullText",
    "HostPacer",
    "Reason",
    "decode_html",
    "extract_text",
    "fetch_article",
    "retry_delay",
    "vet_page",
    "wants_article",
]

FullText = Literal["auto", "always", "never"]
Reason = Literal[
    "fetch",  # the fetcher's own error (timeout, 4xx/5xx, too_large, private_address...): see `detail`
    "binary",  # not an HTML page (PDF, image, archive...)
    "login_wall",  # the page asks to sign in instead of showing the story
    "paywall",  # the page says the story is for subscribers
    "other_host",  # redirected to another host (a portal front page, a tracker, a parked domain)
    "no_text",  # an HTML page with no story text on it
    "deferred",  # not tried yet: more teasers in one document than are fetched inline (see ArticleSettings)
]

# "auto": an entry whose feed text is shorter than this is a teaser, and the page is fetched.
TEASER_CHARS = 400
# Extracted text shorter than this is no article (a cookie banner, a caption).
MIN_ARTICLE_CHARS = 200
# Retries: 10 min, 40 min, 2 h 40, ... capped at a day, and given up after MAX_ATTEMPTS.
RETRY_BASE = 600.0
RETRY_CAP = 86400.0
MAX_ATTEMPTS = 6

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_SIGNS = re.compile(rb"^(%PDF|\x89PNG|GIF8|\xff\xd8\xff|PK\x03\x04|\x1f\x8b|Rar!|7z\xbc\xaf)")

# Said by pages that hide the story. Matched on the visible text of pages whose extracted text is short, so a
# story that merely mentions a paywall or a login is not refused.
_PAYWALL = re.compile(
    r"(subscribe to (continue|read)|subscribers only|for subscribers|this (article|story) is for subscribers|"
    r"подпишитесь,? чтобы|только для подписчиков|доступ(ен)? по подписке|оформите подписку|"
    r"жазылушыларға ғана|оқу үшін жазылыңыз)",
    re.I,
)
_LOGIN = re.compile(
    r"(sign in to (continue|read)|log ?in to (continue|read)|please (log|sign) in|"
    r"войдите,? чтобы|авторизуйтесь|войдите в аккаунт|жүйеге кіріңіз|кіру үшін)",
    re.I,
)
_PASSWORD_INPUT = re.compile(rb"<input[^>]+type\s*=\s*[\"']?password", re.I)
_JSONLD_NOT_FREE = re.compile(rb"\"isAccessibleForFree\"\s*:\s*(false|\"false\"|\"False\")")


@dataclass(frozen=True, slots=True)
class ArticleResult:
    url: str  # asked for
    final_url: str  # after redirects
    ok: bool
    text: str = ""  # extracted main text (plain, NFC); empty unless ok
    reason: Reason | None = None
    detail: str | None = None  # a sentence naming the URL and what was wrong
    status: int | None = None
    sha256: str | None = None  # of the raw (decoded transfer, not charset) page, when one arrived
    raw: bytes | None = (
        None  # the page as served, when one arrived (kept compressed only for `archive: true`)
    )
    encoding: str | None = None  # the charset the page was decoded with
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False  # a conditional retry answered 304: the text stored before still holds
    fetched_at: datetime | None = None


def wants_article(mode: FullText, text: str, url: str | None) -> bool:
    """Whether to fetch the page of an entry: `always`, `never`, or for `auto` only when the feed gave a teaser."""
    if not url or mode == "never":
        return False
    return mode == "always" or len(text.strip()) < TEASER_CHARS


def retry_delay(attempts: int) -> float | None:
    """Seconds before the next try after `attempts` failed ones; None once it is time to give up."""
    if attempts >= MAX_ATTEMPTS:
        return None
    return min(RETRY_CAP, RETRY_BASE * 4 ** max(0, attempts - 1))


# --- decoding (pure) --------------------------------------------------------------------------------------


def _charset_of(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


def _known(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(body: bytes, headers: Mapping[str, str]) -> tuple[str, str]:
    """(text, encoding): by BOM, then the Content-Type header, then a <meta> charset in the head, then UTF-8 if
    it decodes, else cp1251 (the legacy encoding of this region's sites). Never raises: bad bytes are replaced."""
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if body.startswith(bom):
            return body.decode(name, errors="replace").lstrip("\ufeff"), name
    encoding = _known(_charset_of(headers.get("content-type")))
    if encoding is None:
        m = _META_CHARSET.search(body[:4096])
        encoding = _known(m.group(1).decode("ascii", "replace")) if m else None
    if encoding is None:
        try:
            return body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            encoding = "cp1251"
    return body.decode(encoding, errors="replace"), encoding


# --- vetting and extraction (pure) ------------------------------------------------------------------------


def _host(url: str) -> str:
    try:
        host = httpx.URL(url).host.lower()
    except (httpx.InvalidURL, ValueError):
        return ""
    return host[4:] if host.startswith("www.") else host


def vet_page(result: FetchResult) -> tuple[Reason, str] | None:
    """Why a fetched page cannot be an article before looking at its text (None: go on)."""
    url = result.url
    if _host(result.final_url) != _host(url):
        return (
            "other_host",
            f"{url}: redirected to another host ({result.final_url}); not taken as the article",
        )
    body = result.body or b""
    ctype = (result.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype and ctype not in _HTML_TYPES and not ctype.startswith("text/"):
        return "binary", f"{url}: not an HTML page (Content-Type {ctype})"
    if _SIGNS.match(body) or b"\x00" in body[:4096]:
        return "binary", f"{url}: the page is binary data, not HTML"
    return None


def extract_text(html: str, url: str | None = None) -> str:
    """The main text of an article page, plain and normalised; empty when none is found."""
    import trafilatura

    text = trafilatura.extract(
        html, url=url, include_comments=False, include_tables=False, include_images=False
    )
    return normalize_text(text or "")


def _walls(raw: bytes, html: str, text: str, url: str) -> tuple[Reason, str] | None:
    """A login wall or paywall: the page says so and shows little story. Checked when the text is short, or
    when structured data marks the story as not free (a long teaser then stands in for the story)."""
    not_free = bool(_JSONLD_NOT_FREE.search(raw))
    if len(text) >= 3 * MIN_ARTICLE_CHARS and not not_free:
        return None
    visible = re.sub(r"<[^>]+>", " ", html)
    if not_free or _PAYWALL.search(visible):
        return "paywall", f"{url}: the page is for subscribers only (paywall); the teaser is kept"
    if _PASSWORD_INPUT.search(raw) or _LOGIN.search(visible):
        return "login_wall", f"{url}: the page asks to sign in (login wall); the teaser is kept"
    return None


def read_page(result: FetchResult) -> ArticleResult:
    """A fetched page -> the article, or the reason it is none. Pure (CPU only)."""
    base = ArticleResult(
        url=result.url,
        final_url=result.final_url,
        ok=False,
        status=result.status,
        etag=result.etag,
        last_modified=result.last_modified,
    )
    if result.outcome == "not_modified":
        return replace(base, ok=True, not_modified=True)
    if result.outcome != "ok":
        return replace(base, reason="fetch", detail=result.error or f"{result.url}: fetch failed")
    raw = result.body or b""
    base = replace(base, sha256=hashlib.sha256(raw).hexdigest(), raw=raw)
    refused = vet_page(result)
    if refused:
        return replace(base, reason=refused[0], detail=refused[1])
    html, encoding = decode_html(raw, result.headers)
    text = extract_text(html, result.final_url)
    wall = _walls(raw, html, text, result.url)
    if wall:
        return replace(base, encoding=encoding, reason=wall[0], detail=wall[1])
    if len(text) < MIN_ARTICLE_CHARS:
        return replace(
            base,
            encoding=encoding,
            reason="no_text",
            detail=f"{result.url}: no article text found on the page ({len(text)} characters extracted)",
        )
    return replace(base, ok=True, text=text, encoding=encoding)


# --- fetching ---------------------------------------------------------------------------------------------


class HostPacer:
    """At most one article request per host per `interval` seconds, shared by every feed of a poll.

    `clock` and `sleep` are time.monotonic and asyncio.sleep; tests pass a fake pair to check the schedule."""

    def __init__(
        self,
        interval: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self._clock, self._sleep = clock, sleep
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, url: str) -> None:
        if self.interval <= 0:
            return
        host = _host(url)
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:  # requests to one host queue up; other hosts go on meanwhile
            now = self._clock()
            due = self._next.get(host, now)
            if due > now:
                await self._sleep(due - now)
            self._next[host] = max(now, due) + self.interval


async def _unreachable(fetcher: Fetcher, url: str) -> str | None:
    """Why no request to `url` could be sent (the fetcher would refuse it before connecting), else None."""
    from monitor.errors import FetchError
    from monitor.ingest import netguard

    allow = netguard.private_networks_allowed(fetcher.limits.allow_private)
    try:
        async with asyncio.timeout(fetcher.limits.connect_timeout):
            parsed = netguard.parse_http_url(url)
            if allow:
                await netguard.resolve(
                    parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80), url=url
                )
            else:
                await netguard.check_url(url, allow_private=False)
    except FetchError as exc:
        return str(exc)
    except TimeoutError:
        return None  # a slow resolver: let the fetcher try, with its own limits
    return None


async def fetch_article(
    fetcher: Fetcher,
    url: str,
    *,
    pacer: HostPacer | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    now: datetime | None = None,
) -> ArticleResult:
    """Fetch and read one article page; never raises for the page's or the network's trouble."""
    from monitor.store.types import utcnow

    when = now or utcnow()
    unreachable = await _unreachable(fetcher, url)
    if unreachable is not None:
        # No request can reach that host (bad URL, no such name, a private address): nothing to pace.
        return ArticleResult(
            url=url, final_url=url, ok=False, reason="fetch", detail=unreachable, fetched_at=when
        )
    if pacer is not None:
        await pacer.wait(url)
    fetched = await fetcher.fetch(FetchRequest(url=url, etag=etag, last_modified=last_modified))
    # Extraction is CPU work of tens of milliseconds on a big page: off the event loop, so fetches go on.
    result = await asyncio.to_thread(read_page, fetched)
    return replace(result, fetched_at=when)


# --- the enrichment stage ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """What enrichment learnt about one entry, waiting for its item id (written by the after-store stage)."""

    teaser: str
    article: ArticleResult | None  # None: no page was fetched (the feed gave the text)
    language: dict[str, object]
    archive: bool


class ArticleEnricher:
    """The pipeline's per-entry enrichment: article text for teaser-only entries, and each entry's language.

    Called per document with the entries the feed has not stored yet; returns them with `text` (the article,
    when one was read) and `language` (the decided one) replaced. Everything else stays the feed's, the content
    hash too, so the next fetch of the same teaser is recognised as unchanged. What is needed to record the
    article and its evidence once the item has an id is kept in `pending`, keyed by (feed id, entry key), and
    taken by `monitor.store.evidence.record_stage`.
    """

    def __init__(self, config: Config, fetcher_factory: Callable[[], Fetcher] | None = None) -> None:
        self.config = config
        self.max_inline = config.settings.articles.max_inline
        self.pacer = HostPacer(config.settings.articles.per_host_interval)
        self.pending: dict[tuple[str, str], Pending] = {}
        self._options = {f.id: f for f in config.feeds}
        self._fetcher_factory = fetcher_factory
        # Start the language worker (its models load in seconds, once) before the poll claims any feed: loading
        # them later would hold up the event loop, and with it the renewal of the feeds' leases.
        from monitor.ingest.workers import warm_workers

        warm_workers()

    def options(self, feed_id: str) -> tuple[FullText, bool]:
        f = self._options.get(feed_id)
        if f is None:
            return "auto", False
        return f.full_text, f.archive

    def _fetcher(self) -> Fetcher:
        if self._fetcher_factory is not None:
            return self._fetcher_factory()
        from monitor.ingest.poll import fetch_limits  # poll loads this module lazily: no cycle

        return Fetcher(fetch_limits(self.config))

    async def __call__(self, feed: object, entries: Sequence[Any]) -> Sequence[Any]:
        from monitor.ingest.workers import decide_and_prepare_off_loop
        from monitor.search.index import Prepared

        feed_id = str(getattr(feed, "id", ""))
        declared = getattr(feed, "language", None)
        mode, archive = self.options(feed_id)
        wanted = [e for e in entries if wants_article(mode, e.text, e.url)]
        articles: dict[str, ArticleResult] = {}
        # A feed's first fetch may bring dozens of teasers from one host, which politeness spaces a second apart:
        # past max_inline they are stored with their teaser now and read by the retries, one per host per poll.
        wanted, later = wanted[: self.max_inline], wanted[self.max_inline :]
        for e in later:
            detail = f"{e.url}: queued (more than {self.max_inline} teasers in one fetch of the feed)"
            articles[e.key] = ArticleResult(
                url=e.url, final_url=e.url, ok=False, reason="deferred", detail=detail
            )
        if wanted:
            async with self._fetcher() as fetcher:
                results = await asyncio.gather(
                    *(fetch_article(fetcher, e.url, pacer=self.pacer) for e in wanted), return_exceptions=True
                )
            for e, res in zip(wanted, results, strict=True):
                if isinstance(res, BaseException):  # a bug, not the page's trouble: keep the teaser
                    res = ArticleResult(
                        url=e.url, final_url=e.url, ok=False, reason="fetch", detail=f"{e.url}: {res!r}"
                    )
                articles[e.key] = res

        arts = [articles.get(e.key) for e in entries]
        texts = [
            a.text if a is not None and a.ok and a.text else e.text
            for e, a in zip(entries, arts, strict=True)
        ]
        # Detection is CPU work (about 0.4 ms an entry, a few ms for an article), and so is the search index's
        # document: the feed's entries go together to the language worker (monitor.ingest.workers), so fetches,
        # lease renewals and the store thread go on.
        done = await decide_and_prepare_off_loop(
            [(e.title, t, declared or e.language, e.language) for e, t in zip(entries, texts, strict=True)]
        )
        out = []
        for e, art, text, (decision, doc) in zip(entries, arts, texts, done, strict=True):
            if art is not None:  # its record is written once the item has an id (record_stage)
                self.pending[(feed_id, e.key)] = Pending(e.text, art, decision.to_json(), archive)
            language = decision.language or e.language
            out.append(
                replace(
                    e,
                    text=text,
                    language=language,
                    rule_languages=decision.rules,
                    prepared=Prepared(e.title, text, language, doc),
                )
            )
        return out

    def record_stage(self, session: Any, batch: Any) -> None:
        """The after-store stage that writes the article records of the items just stored (same transaction)."""
        from monitor.store.evidence import record_articles

        record_articles(session, batch.feed_id, batch.new_item_ids, self.pending, now=batch.now)


# --- retries ----------------------------------------------------------------------------------------------


async def retry_articles(
    engine: Any,
    config: Config,
    classifier: Any | None,
    *,
    now: datetime | None = None,
    limit: int = 100,
    fetcher_factory: Callable[[], Fetcher] | None = None,
) -> dict[str, int]:
    """Fetch again the article pages whose retry is due; an item whose page is now read gets the article as
    its text, is classified again and (re)grouped. Returns counts: {"tried", "read", "failed"}."""
    from monitor.store.engine import write_scope
    from monitor.store.evidence import apply_retry, due_retries, options_by_feed
    from monitor.store.evidence_models import ItemArticle
    from monitor.store.models import Item
    from monitor.store.types import utcnow

    when = now or utcnow()
    with write_scope(engine) as s:
        # One page per host per poll: retries never wait on the politeness interval.
        claimed: dict[str, tuple[int, str, str | None, str | None]] = {}
        for r in due_retries(s, when, limit, host_of=_host):
            claimed.setdefault(_host(r.url), (r.item_id, r.url, r.etag, r.last_modified))
        due = list(claimed.values())
    counts = {"tried": len(due), "read": 0, "failed": 0}
    if not due:
        return counts
    enricher = ArticleEnricher(config, fetcher_factory)
    async with enricher._fetcher() as fetcher:
        results = await asyncio.gather(
            *(
                fetch_article(fetcher, url, pacer=enricher.pacer, etag=etag, last_modified=lm, now=when)
                for _, url, etag, lm in due
            )
        )
    archive = options_by_feed(config)

    def classify(item: Item) -> None:
        from monitor.ingest.classify import apply_classification

        apply_classification(item, classifier)

    changed: list[int] = []
    with write_scope(engine) as s:
        for (item_id, *_), art in zip(due, results, strict=True):
            row = s.get(ItemArticle, item_id)
            item = s.get(Item, item_id)
            if row is None or item is None:
                continue
            if apply_retry(
                s, row, art, now=when, archive=archive.get(item.feed_id, False), classify=classify
            ):
                counts["read"] += 1
                changed.append(item_id)
            elif not art.ok:
                counts["failed"] += 1
        if changed and classifier is not None:
            from monitor.ingest.poll import StoredBatch, group_stage

            s.flush()
            batch = StoredBatch(feed_id="", new_item_ids=[], changed_item_ids=changed, now=when)
            group_stage(config, classifier)(s, batch)
    return counts
