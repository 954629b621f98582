"""OPML 2.0, the format every feed reader imports and exports."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit

from monitor.errors import ConfigError


@dataclass(frozen=True)
class OpmlFeed:
    url: str
    title: str | None = None
    language: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


def read_opml(path: Path) -> list[OpmlFeed]:
    """Every outline with an xmlUrl, at any depth; the titles of enclosing folders become tags."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ConfigError(f"not valid OPML (XML error: {exc})", file=path, line=exc.position[0]) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from None
    if root.tag != "opml":
        raise ConfigError(f"not an OPML document (root element is <{root.tag}>)", file=path)
    body = root.find("body")
    if body is None:
        raise ConfigError("OPML document has no <body>", file=path)
    found: list[OpmlFeed] = []

    def walk(node: ET.Element, folders: tuple[str, ...]) -> None:
        for child in node.findall("outline"):
            name = (child.get("title") or child.get("text") or "").strip() or None
            url = (child.get("xmlUrl") or "").strip()
            if url:
                found.append(OpmlFeed(url=url, title=name, language=child.get("language"), tags=folders))
            else:
                walk(child, (*folders, slug(name)) if name else folders)

    walk(body, ())
    return found


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-") or "feed"


def feed_id_for(url: str, taken: set[str]) -> str:
    """A readable id from the address (host and path), unique among `taken`."""
    parts = urlsplit(url)
    host = (parts.hostname or "feed").removeprefix("www.")
    base = slug(host + " " + parts.path.replace("rss", " ").replace("feed", " "), 56)
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def write_opml(feeds: Iterable[tuple[str, str | None, str | None, Iterable[str]]], title: str) -> str:
    """feeds: (url, title, site url, tags). Tags are written as the OPML `category` attribute."""
    opml = ET.Element("opml", version="2.0")
    head = ET.SubElement(opml, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = format_datetime(datetime.now(UTC))
    body = ET.SubElement(opml, "body")
    for url, name, site, tags in feeds:
        attrs = {"type": "rss", "text": name or url, "title": name or url, "xmlUrl": url}
        if site:
            attrs["htmlUrl"] = site
        tag_list = [t for t in tags if t]
        if tag_list:
            attrs["category"] = ",".join(tag_list)
        ET.SubElement(body, "outline", attrs)
    ET.indent(opml)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(opml, encoding="unicode") + "\n"
