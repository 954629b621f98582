"""Atom 1.0 (RFC 4287) feeds of items (`monitor export --format atom`) and of incidents (the site's feed.atom).

Built with ElementTree, so every text and attribute is escaped by the serialiser, never by hand. Feed content
goes in as text (titles, summaries) or as sanitised HTML (`type="html"` content), and characters XML 1.0 cannot
carry are dropped, so one odd byte in a feed never makes the whole document unreadable.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import escape

from monitor.deliver.render import CATEGORY_TITLES, COUNTRY_NAMES, safe_url
from monitor.sanitize import sanitize_html
from monitor.store.models import Item

__all__ = ["ATOM_NS", "IncidentEntry", "SourceLink", "incidents_atom", "item_tag", "items_atom"]

ATOM_NS = "http://www.w3.org/2005/Atom"
CATEGORY_SCHEME = "https://github.com/civic-space-monitor/taxonomy"  # ids of reference/TAXONOMY.md
_TAG_AUTHORITY = "civic-space-monitor.invalid,2026"  # tag: URIs (RFC 4151) need no live domain
# XML 1.0 Char production: anything else makes the document not well-formed.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
SUMMARY_CHARS = 500


def _x(s: str | None) -> str:
    return _NOT_XML.sub("", s or "")


def _rfc3339(d: datetime) -> str:
    d = d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def item_tag(item_id: int) -> str:
    return f"tag:{_TAG_AUTHORITY}:item:{item_id}"


def incident_tag(incident_id: int) -> str:
    return f"tag:{_TAG_AUTHORITY}:incident:{incident_id}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: _x(v) for k, v in attrs.items()})
    if text is not None:
        el.text = _x(text)
    return el


def _feed(
    title: str, feed_id: str, updated: datetime, self_url: str | None, alternate: str | None
) -> ET.Element:
    feed = ET.Element("feed", {"xmlns": ATOM_NS})
    _sub(feed, "title", title)
    _sub(feed, "id", feed_id)
    _sub(feed, "updated", _rfc3339(updated))
    author = _sub(feed, "author")
    _sub(author, "name", "civic-space monitor")
    _sub(feed, "generator", "civic-space monitor")
    if self_url:
        _sub(feed, "link", rel="self", href=self_url, type="application/atom+xml")
    if alternate:
        _sub(feed, "link", rel="alternate", href=alternate, type="text/html")
    return feed


def _serialise(feed: ET.Element) -> str:
    ET.indent(feed, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"


def _truncate(text: str, n: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + "…"


def _categories(entry: ET.Element, ids: Iterable[str], titles: Mapping[str, str] | None) -> None:
    for c in ids:
        _sub(entry, "category", term=c, scheme=CATEGORY_SCHEME, label=(titles or CATEGORY_TITLES).get(c, c))


def items_atom(
    items: Iterable[Item],
    *,
    title: str = "civic-space monitor: items",
    feed_id: str = f"tag:{_TAG_AUTHORITY}:items",
    self_url: str | None = None,
    updated: datetime | None = None,
    category_titles: Mapping[str, str] | None = None,
) -> str:
    """Atom feed of stored items: title, link, dates, categories, a plain summary and the sanitised HTML."""
    entries: list[ET.Element] = []
    newest: datetime | None = None
    for item in items:
        assert item.id is not None
        changed = item.updated or item.published
        newest = changed if newest is None or changed > newest else newest
        entry = ET.Element("entry")
        _sub(entry, "id", item_tag(item.id))
        _sub(entry, "title", item.title or "(untitled)", type="text")
        _sub(entry, "updated", _rfc3339(changed))
        _sub(entry, "published", _rfc3339(item.published))
        link = safe_url(item.url)
        if link:
            _sub(entry, "link", rel="alternate", href=link, type="text/html")
        if item.author:
            author = _sub(entry, "author")
            _sub(author, "name", item.author)
        _categories(entry, item.categories, category_titles)
        if item.text:
            _sub(entry, "summary", _truncate(item.text), type="text")
        html = sanitize_html(item.html, link)
        if html:
            _sub(entry, "content", html, type="html")
        entries.append(entry)
    feed = _feed(title, feed_id, updated or newest or datetime.now(UTC), self_url, None)
    feed.extend(entries)
    return _serialise(feed)


@dataclass
class SourceLink:
    title: str
    url: str | None
    feed: str


@dataclass
class IncidentEntry:
    """What an incident's Atom entry (and the site's summary rows) need, without the items' texts."""

    id: int
    title: str
    categories: list[str]
    countries: list[str]
    severity: str
    first_seen: datetime
    last_seen: datetime
    updated_at: datetime
    item_count: int
    sources: list[SourceLink] = field(default_factory=list)  # the first few, for summaries


def _incident_html(inc: IncidentEntry, titles: Mapping[str, str] | None, page: str | None) -> str:
    # Built from escaped parts only: nothing from a feed is ever inserted as markup here.
    cats = ", ".join((titles or CATEGORY_TITLES).get(c, c) for c in inc.categories)
    countries = ", ".join(COUNTRY_NAMES.get(c, c) for c in inc.countries) or "—"
    parts = [
        f"<p>{escape(cats)} · {escape(countries)} · severity {escape(inc.severity)} · "
        f"{inc.item_count} report{'s' if inc.item_count != 1 else ''}, "
        f"{_rfc3339(inc.first_seen)[:10]} – {_rfc3339(inc.last_seen)[:10]}</p>",
        "<ul>",
    ]
    for s in inc.sources:
        url = safe_url(s.url)
        label = f"{escape(s.title)} ({escape(s.feed)})"
        if url:
            parts.append(f'<li><a href="{escape(url)}" rel="nofollow noopener noreferrer">{label}</a></li>')
        else:
            parts.append(f"<li>{label}</li>")
    parts.append("</ul>")
    if page:
        parts.append(f'<p><a href="{escape(page)}">All sources and why they were grouped</a></p>')
    return "".join(parts)


def incidents_atom(
    incidents: Sequence[IncidentEntry],
    *,
    title: str = "civic-space monitor: incidents",
    feed_id: str = f"tag:{_TAG_AUTHORITY}:incidents",
    base_url: str | None = None,
    self_url: str | None = None,
    updated: datetime | None = None,
    category_titles: Mapping[str, str] | None = None,
) -> str:
    """Atom feed of incidents, most recently changed first. Entry links point at the site's incident pages:
    absolute when `base_url` (the site's address) is known, otherwise relative to the feed (RFC 4287 allows it)."""
    base = (base_url or "").rstrip("/") + "/" if base_url else ""
    newest = max((i.updated_at for i in incidents), default=updated or datetime.now(UTC))
    feed = _feed(
        title,
        feed_id,
        updated or newest,
        self_url or (base + "feed.atom" if base else None),
        base + "index.html",
    )
    for inc in incidents:
        entry = _sub(feed, "entry")
        page = f"{base}incident/{inc.id}.html"
        _sub(entry, "id", incident_tag(inc.id))
        _sub(entry, "title", inc.title or "(untitled)", type="text")
        _sub(entry, "updated", _rfc3339(inc.updated_at))
        _sub(entry, "published", _rfc3339(inc.first_seen))
        _sub(entry, "link", rel="alternate", href=page, type="text/html")
        _categories(entry, inc.categories, category_titles)
        _sub(entry, "content", _incident_html(inc, category_titles, page), type="html")
    return _serialise(feed)
