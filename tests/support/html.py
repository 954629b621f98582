"""What markup a page really contains: its start tags, parsed rather than searched for with regexes."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

Tag = tuple[str, dict[str, str | None]]


class _StartTags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[Tag] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def start_tags(html: str | Path) -> list[Tag]:
    """Every start tag of `html` (a string, or a file read as UTF-8) with its attributes, in order."""
    p = _StartTags()
    p.feed(html.read_text(encoding="utf-8") if isinstance(html, Path) else html)
    return p.tags
