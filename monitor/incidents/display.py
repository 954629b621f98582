"""What the site shows of a report that can be worked out once, when grouping puts it in an incident, rather than at
every site build: the actors its incident export names, and whether its stored HTML is already exactly what the
sanitiser makes of it (then the page shows it as stored instead of sanitising it again).

Kept on the item as `display` (revision 0011):

    {"key": "<32 hex>", "html": true, "actors": {"aigul+utepo": "Aigul Utepova", ...}}

`key` is a hash of everything the record was worked out from: the report's link, title, lead and HTML, and the
source code of the sanitiser, of the name extraction and of this module, with nh3's version. A report edited since
(an updated entry, an article's text, retention), a hand-edited row or a newer version of the code finds its record
stale, and the site works everything out afresh, as it did before there were records. `actors` is null when the
name extraction raised: the export then raises at build time, as it always did.

Feed HTML still never reaches a page without our sanitiser: `html` is true only when `sanitize_html(stored HTML,
the link)` returned the stored HTML unchanged, so the page shows the same bytes either way.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Mapping
from typing import Any

import nh3
from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlmodel import col

from monitor import sanitize
from monitor.incidents import features
from monitor.sanitize import SanitizedHtml, safe_url, sanitize_html
from monitor.store.engine import session_scope
from monitor.store.models import Item

__all__ = ["LEAD_CHARS", "Display", "display_record", "fresh_display", "refresh_displays"]

LEAD_CHARS = 600  # of a report's text read for names: the lead is where a report says who


def _fingerprint() -> bytes | None:
    parts = [nh3.__version__ if hasattr(nh3, "__version__") else "?"]
    for module in (sanitize, features, sys.modules[__name__]):
        try:
            parts.append(inspect.getsource(module))
        except (OSError, TypeError):
            return None  # no source to tell versions apart (a frozen build): records are never trusted
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


_FINGERPRINT: bytes | None = None
_FINGERPRINT_READ = False


def _code() -> bytes | None:
    global _FINGERPRINT, _FINGERPRINT_READ
    if not _FINGERPRINT_READ:  # read on first use: importing this module stays cheap
        _FINGERPRINT, _FINGERPRINT_READ = _fingerprint(), True
    return _FINGERPRINT


def _key(url: str | None, title: str, lead: str, html: str) -> str | None:
    code = _code()
    if code is None:
        return None
    h = hashlib.blake2b(code, digest_size=16)
    for part in (url or "", title, lead, html):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


class Display:
    """A report's valid record, as the site uses it."""

    __slots__ = ("actors", "html_clean")

    def __init__(self, html_clean: bool, actors: Mapping[str, str] | None) -> None:
        self.html_clean = html_clean
        self.actors = actors

    def html(self, stored: str) -> str:
        """The stored HTML, marked (SanitizedHtml) when the record says it is the sanitiser's output already."""
        return SanitizedHtml(stored) if self.html_clean else stored


def display_record(url: str | None, title: str, text: str, html: str) -> dict[str, Any] | None:
    """The `display` record of a report (None when there is no source to key it by)."""
    lead = (text or "")[:LEAD_CHARS]
    key = _key(url, title or "", lead, html or "")
    if key is None:
        return None
    actors: dict[str, str] | None
    try:
        actors = features.persons(title or "", lead) if (title or lead) else {}
    except Exception:  # left to the export, which raises as before
        actors = None
    clean = sanitize_html(html or "", safe_url(url)) == (html or "")
    return {"key": key, "html": clean, "actors": actors}


def fresh_display(record: object, url: str | None, title: str, text: str, html: str) -> Display | None:
    """`record` (an item's `display`) when it was worked out from exactly this report by this code, else None."""
    if not isinstance(record, dict):
        return None
    key = record.get("key")
    if not isinstance(key, str) or key != _key(url, title or "", (text or "")[:LEAD_CHARS], html or ""):
        return None
    actors = record.get("actors")
    return Display(record.get("html") is True, actors if isinstance(actors, dict) else None)


def refresh_displays(engine: Engine, *, batch: int = 500) -> int:
    """Write the record of every report in an incident whose record is missing or stale (stored before 0011,
    edited since, or worked out by other code: every record goes stale when the sanitiser or the name extraction
    changes), in batches of one transaction each; returns how many were written. Housekeeping (the service's
    retention job): a site build only reads records, and one without them is as slow as before."""
    written = 0
    last = 0
    while True:
        with session_scope(engine) as s:
            rows = s.execute(
                sa_select(
                    col(Item.id),
                    col(Item.url),
                    col(Item.title),
                    col(Item.text),
                    col(Item.html),
                    col(Item.display),
                )
                .where(col(Item.id) > last, col(Item.incident_id).is_not(None), col(Item.pruned).is_(False))
                .order_by(col(Item.id))
                .limit(batch)
            ).all()
            if not rows:
                return written
            last = rows[-1].id
            for r in rows:
                if fresh_display(r.display, r.url, r.title, r.text, r.html) is None:
                    record = display_record(r.url, r.title, r.text, r.html)
                    s.execute(sa_update(Item).where(col(Item.id) == r.id).values(display=record))
                    written += 1
