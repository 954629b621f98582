"""Stored feeds, items and incidents for digest tests, written straight to the tables so each test shows exactly
what a digest has to select (grouping itself is tested with the incidents code)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from monitor.store.engine import session_scope
from monitor.store.models import Feed, Incident, Item, ItemSource

T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)


def add_feed(
    engine: Engine, feed_id: str, *, title: str | None = None, tags: Sequence[str] = (), **kw: Any
) -> None:
    with session_scope(engine) as s:
        s.add(
            Feed(
                id=feed_id,
                url=f"https://{feed_id}.example.org/rss",
                config_url=f"https://{feed_id}.example.org/rss",
                title=title or feed_id,
                tags=list(tags),
                last_fetch_at=kw.pop("last_fetch_at", T0),
                last_new_item_at=kw.pop("last_new_item_at", T0),
                created_at=kw.pop("created_at", T0 - timedelta(days=30)),
                **kw,
            )
        )


def hit(term: str, snippet: str = "", field: str = "title") -> dict[str, Any]:
    return {"term": term, "field": field, "start": 0, "end": len(term), "snippet": snippet or term}


def add_incident(
    engine: Engine,
    title: str,
    *,
    categories: Sequence[str] = ("prosecution",),
    countries: Sequence[str] = ("KZ",),
    severity: str = "high",
    at: datetime = T0,
    feed: str = "kz-news",
    items: int = 1,
    terms: Sequence[str] = ("арест",),
    url: str | None = None,
) -> int:
    """An incident updated at `at` with `items` items from `feed`; returns its id."""
    with session_scope(engine) as s:
        inc = Incident(
            title=title,
            categories=list(categories),
            countries=list(countries),
            severity=severity,
            first_seen=at,
            last_seen=at,
            updated_at=at,
            item_count=items,
        )
        s.add(inc)
        s.flush()
        assert inc.id is not None
        for n in range(items):
            _add_item(s, inc.id, title if n == 0 else f"{title} ({n})", at, feed, categories, terms, url, n)
        return inc.id


def _add_item(
    s: Any,
    incident_id: int,
    title: str,
    at: datetime,
    feed: str,
    categories: Sequence[str],
    terms: Sequence[str],
    url: str | None,
    n: int,
) -> None:
    key = hashlib.sha256(f"{incident_id}/{title}/{n}/{at}".encode()).hexdigest()
    link = url if (url is not None and n == 0) else f"https://{feed}.example.org/news/{key[:12]}"
    item = Item(
        feed_id=feed,
        url=link,
        title=title,
        text=f"{title}. " + " ".join(terms),
        published=at,
        fetched=at,
        content_hash=key,
        categories=list(categories),
        countries=["KZ"],
        matches={
            c: {"rule": "test", "score": 1.0, "hits": [hit(t, f"… {t} …") for t in terms]} for c in categories
        },
        incident_id=incident_id,
    )
    s.add(item)
    s.flush()
    s.add(ItemSource(item_id=item.id, feed_id=feed, entry_key=key, url=link, first_seen=at))


def add_report(engine: Engine, incident_id: int, title: str, *, at: datetime, feed: str = "kz-news") -> None:
    """A later report joining an incident: a new item, and the incident's updated_at/last_seen/item_count move."""
    with session_scope(engine) as s:
        inc = s.get(Incident, incident_id)
        assert inc is not None
        _add_item(s, incident_id, title, at, feed, inc.categories, ("суд",), None, inc.item_count)
        inc.item_count += 1
        inc.last_seen = at
        inc.updated_at = at
        s.add(inc)


def write_digests(config_dir: Path, body: str) -> Path:
    path = config_dir / "digests.yaml"
    path.write_text(body, encoding="utf-8")
    return path


SIMPLE = """\
site_url: https://monitor.example.org/
sender: "Монитор <monitor@example.org>"
smtp_timeout: 2s
digests:
  - name: daily
    schedule: "0 8 * * *"
    timezone: Asia/Almaty
    email:
      recipients: ["Аналитик <analyst@example.org>", other@example.org]
      subject: "Гражданское пространство: {{ count }} новых, {{ date }}"
"""
