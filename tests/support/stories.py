"""Stored items for incident, site and export tests: real rows written through the models, no mocks.

The stories are the kind the service sees: one detention reported in English, Russian and Kazakh by several
outlets, an unrelated detention on the same day, and hostile items whose HTML tries to run script or load things.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from monitor.store.engine import session_scope
from monitor.store.models import Feed, Item, ItemSource

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@dataclass
class Story:
    title: str
    text: str
    categories: list[str]
    countries: list[str] = field(default_factory=lambda: ["KZ"])
    language: str = "en"
    hours: float = 0.0  # published this many hours after T0
    feed: str = "feed-en"
    url: str | None = None
    html: str | None = None
    also_in: list[str] = field(default_factory=list)  # other feeds carrying the same entry
    matches: dict[str, Any] | None = None


def hit_matches(story: Story, term: str) -> dict[str, Any]:
    """A `matches` record like the rule engine's, pointing at `term` in the title (or text)."""
    where, field_name = (story.title, "title") if term in story.title else (story.text, "text")
    start = max(where.find(term), 0)
    snippet = where[max(0, start - 40) : start + len(term) + 40]
    return {
        c: {
            "rule": f"{story.language}: {term}",
            "score": 1.0,
            "hits": [
                {
                    "term": term,
                    "field": field_name,
                    "start": start,
                    "end": start + len(term),
                    "snippet": snippet,
                }
            ],
        }
        for c in story.categories
    }


def ensure_feeds(session: Session, ids: Sequence[str]) -> None:
    for fid in ids:
        if session.get(Feed, fid) is None:
            session.add(
                Feed(
                    id=fid,
                    url=f"https://{fid}.example.org/rss",
                    config_url=f"https://{fid}.example.org/rss",
                    title=f"{fid.upper()} News",
                    site_url=f"https://{fid}.example.org/",
                )
            )
    session.flush()


def store(engine: Engine, stories: Sequence[Story]) -> list[int]:
    """Insert the stories as items (with their sources); returns their ids in the given order."""
    ids: list[int] = []
    with session_scope(engine) as s:
        ensure_feeds(s, sorted({f for st in stories for f in [st.feed, *st.also_in]}))
        for st in stories:
            published = T0 + timedelta(hours=st.hours)
            url = st.url or f"https://{st.feed}.example.org/news/{uuid.uuid4().hex[:12]}"
            item = Item(
                feed_id=st.feed,
                url=url,
                title=st.title,
                text=st.text,
                html=st.html if st.html is not None else f"<p>{st.text}</p>",
                language=st.language,
                published=published,
                fetched=published + timedelta(minutes=5),
                content_hash=hashlib.sha256(f"{url}{st.title}{st.text}".encode()).hexdigest(),
                categories=list(st.categories),
                countries=list(st.countries),
                matches=st.matches if st.matches is not None else {},
            )
            s.add(item)
            s.flush()
            assert item.id is not None
            for k, fid in enumerate([st.feed, *st.also_in]):
                s.add(
                    ItemSource(
                        item_id=item.id,
                        feed_id=fid,
                        entry_key=f"{fid}:{item.id}:{k}",
                        url=url if k == 0 else f"https://{fid}.example.org/copy/{item.id}",
                        first_seen=published,
                    )
                )
            ids.append(item.id)
    return ids


MAMAI_EN = Story(
    title="Journalist detained in Almaty after rally",
    text=(
        "Police in Almaty on Tuesday detained journalist Zhanbolat Mamai, editor of the Tribuna newspaper, "
        "after a peaceful rally in support of political prisoners. His lawyer said he was taken to a police station "
        "and faces an administrative charge of organising an unsanctioned gathering."
    ),
    categories=["protest_crackdown", "prosecution"],
    hours=0,
    feed="feed-en",
)
MAMAI_EN_REPRINT = Story(
    title="Journalist detained in Almaty after rally",
    text=(
        "Police in Almaty detained journalist Zhanbolat Mamai, the editor of the Tribuna newspaper, after a "
        "peaceful rally in support of political prisoners on Tuesday. His lawyer said he was taken to a police "
        "station and faces an administrative charge of organising an unsanctioned gathering."
    ),
    categories=["protest_crackdown"],
    hours=3,
    feed="feed-wire",
)
MAMAI_RU = Story(
    title="В Алматы задержали главного редактора «Трибуны»",
    text=(
        "Во вторник в Алматы полиция задержала журналиста Жанболата Мамая, главного редактора газеты «Трибуна», "
        "после мирного митинга в поддержку политзаключённых. Адвокат сообщил, что ему грозит административное "
        "обвинение в организации несанкционированного собрания."
    ),
    categories=["protest_crackdown"],
    language="ru",
    hours=5,
    feed="feed-ru",
)
MAMAI_KK = Story(
    title="Алматыда журналист Жанболат Мамай ұсталды",
    text="Сейсенбі күні Алматыда полиция «Трибуна» газетінің бас редакторы Жанболат Мамайды митингтен кейін ұстады.",
    categories=["protest_crackdown"],
    language="kk",
    hours=30,
    feed="feed-kk",
)
# Same day, same category, same template wording - but another person in another city.
OTHER_DETENTION = Story(
    title="Activist detained in Shymkent after picket",
    text=(
        "Police in Shymkent on Tuesday detained activist Aigul Utepova after a single-person picket outside the "
        "regional akimat. Her lawyer said she was taken to a police station and faces an administrative charge of "
        "organising an unsanctioned gathering."
    ),
    categories=["protest_crackdown"],
    hours=2,
    feed="feed-en",
)
OTHER_DETENTION_RU = Story(
    title="В Шымкенте задержали активистку",
    text=(
        "Во вторник в Шымкенте полиция задержала активистку Айгуль Утепову после одиночного пикета у здания "
        "областного акимата."
    ),
    categories=["protest_crackdown"],
    language="ru",
    hours=4,
    feed="feed-ru",
)
NGO_LAW = Story(
    title="Parliament passes bill tightening foreign funding rules for NGOs",
    text=(
        "The Mazhilis approved amendments that oblige non-governmental organisations to report every foreign grant "
        "to the tax authorities within ten days."
    ),
    categories=["restrictive_law", "funding_restriction"],
    hours=1,
    feed="feed-en",
)

# What a hostile feed might send. None of it may run, load or restyle our pages.
HOSTILE_HTML = (
    '<p>Hostile <b>bold</b> <script>document.title="PWNED-script";fetch("{beacon}/script")</script>'
    '<img src="{beacon}/img" onerror="document.title=\'PWNED-img\'">'
    '<a href="javascript:document.title=\'PWNED-link\'" id="jslink">click</a>'
    '<a href="{beacon}/anchor" onclick="document.title=\'PWNED-click\'" id="clk">site</a>'
    '<iframe src="{beacon}/iframe"></iframe>'
    '<svg onload="document.title=\'PWNED-svg\'"><circle r="4"/></svg>'
    "<style>body{{background:url({beacon}/style-bg)}} .item{{display:none}}</style>"
    '<span style="background-image:url({beacon}/style-attr)">styled</span>'
    '<link rel="stylesheet" href="{beacon}/link.css">'
    '<object data="{beacon}/object"></object><embed src="{beacon}/embed">'
    '<meta http-equiv="refresh" content="0;url={beacon}/refresh">'
    '<form action="{beacon}/form"><input autofocus onfocus="document.title=\'PWNED-focus\'"></form>'
    '<video poster="{beacon}/poster"><source src="{beacon}/video"></video>'
    "<details open ontoggle=\"document.title='PWNED-toggle'\">x</details></p>"
)


def hostile_story(beacon: str) -> Story:
    html = HOSTILE_HTML.format(beacon=beacon)
    title = '<script>document.title="PWNED-title"</script><img src=x onerror="document.title=\'PWNED-t\'"> detained'
    st = Story(
        title=title,
        text=(
            f'Activist detained. <img src="{beacon}/text-img"> </title><script>document.title="PWNED-text"</script> '
            "Police detained activist Serik Zhumabaev."
        ),
        categories=["protest_crackdown"],
        hours=48,
        feed="feed-evil",
        url=f"javascript:document.title='PWNED-url'//{beacon}",
        html=html,
    )
    st.matches = {
        "protest_crackdown": {
            "rule": "<script>document.title='PWNED-rule'</script>",
            "score": 1.0,
            "hits": [
                {
                    "term": '"><img src=x onerror="document.title=\'PWNED-term\'">',
                    "field": "text",
                    "start": 0,
                    "end": 9,
                    "snippet": f'<img src="{beacon}/snippet" onerror="document.title=\'PWNED-snippet\'">',
                }
            ],
        }
    }
    return st
