"""Composing one digest message: selection -> views -> the email and page templates -> RFC 5322 bytes.

build_digest(session, digest, categories, polling=, templates_dir=, now=, position=) -> BuiltDigest

A message of any size: selection keeps ids and a few columns per incident; only the `max_incidents` shown in full
are loaded (in chunks, reports without their text) and turned into views; the rest are counted by category
(views.count_rest). So the memory a digest needs grows with `max_incidents`, not with how many incidents it holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from monitor.config.digests import DigestConfig
from monitor.config.models import PollingSettings
from monitor.deliver.charts import InlineImage, email_variant, for_digest
from monitor.deliver.digest.selection import CHUNK, Pick, chunks, message_order, select_incidents
from monitor.deliver.digest.views import (
    IncidentView,
    Loaded,
    count_rest,
    feed_problems,
    fmt,
    group_views,
    incident_view,
)
from monitor.deliver.email import build_message, domain_of, inline_css, new_message_id, serialise
from monitor.deliver.render import environment
from monitor.rules.explain import CategoryInfo
from monitor.store.models import Feed, Incident, Item, ItemSource

# A digest shows each report's title, link, source and matched terms, never its text, and nothing of an incident's
# grouping record: leaving those in the database keeps a message's rows small. raiseload: reading one anyway fails
# loudly instead of costing a query per row.
_LIGHT_ITEM = [defer(getattr(Item, name), raiseload=True) for name in ("text", "html", "places", "grouping")]
_LIGHT_INCIDENT = [defer(getattr(Incident, name), raiseload=True) for name in ("signature", "explanation")]


def list_id(d: DigestConfig) -> str:
    sender = d.email.sender if d.email and d.email.sender else "monitor@localhost"
    return f"<{d.name}.digest.{domain_of(sender)}>"


@dataclass
class BuiltDigest:
    digest: DigestConfig
    subject: str
    text: str
    page_html: str  # the web page (with a <style> block)
    email_html: str  # the same, CSS inlined
    message_id: str
    date: datetime
    picks: list[Pick]  # every incident the message delivers, shown in full or counted
    shown: int  # how many of them the message shows in full
    context: dict[str, Any]
    images: list[InlineImage] = field(default_factory=list)  # the email's charts, attached by cid

    @property
    def count(self) -> int:
        return sum(1 for p in self.picks if p.kind == "new")

    @property
    def updates(self) -> int:
        return sum(1 for p in self.picks if p.kind == "update")

    @property
    def empty(self) -> bool:
        return not self.picks

    def message_bytes(self, recipients: Sequence[str] | None = None) -> bytes:
        email = self.digest.email
        msg = build_message(
            subject=self.subject,
            sender=(email.sender if email and email.sender else "monitor@localhost"),
            recipients=list(recipients if recipients is not None else (email.recipients if email else [])),
            text=self.text,
            html=self.email_html,
            message_id=self.message_id,
            date=self.date,
            list_id=list_id(self.digest),
            images=self.images,
        )
        return serialise(msg)


def templates(templates_dir: Path | None) -> jinja2.Environment:
    """The template environment: the config folder's own `templates/` first (when given), then the packaged."""
    return environment(templates_dir)


def load_views(
    session: Session, picks: Sequence[Pick], d: DigestConfig, cats: dict[str, CategoryInfo]
) -> Iterator[IncidentView]:
    """Views of `picks`, in their order, reading their rows a chunk at a time; an incident gone since it was
    selected (merged away) is skipped here and still counts as delivered."""
    feed_titles = {fid: title or fid for fid, title in session.exec(select(Feed.id, Feed.title))}
    for start in range(0, len(picks), CHUNK):
        part = picks[start : start + CHUNK]
        ids = [p.id for p in part]
        incidents = {
            i.id: i
            for i in session.exec(select(Incident).options(*_LIGHT_INCIDENT).where(col(Incident.id).in_(ids)))
        }
        items: dict[int, list[Item]] = defaultdict(list)
        for it in session.exec(
            select(Item)
            .options(*_LIGHT_ITEM)
            .where(col(Item.incident_id).in_(ids))
            .order_by(col(Item.published), col(Item.id))
        ):
            assert it.incident_id is not None
            items[it.incident_id].append(it)
        sources: dict[int, list[ItemSource]] = defaultdict(list)
        for item_ids in chunks([it.id for its in items.values() for it in its if it.id is not None]):
            for src in session.exec(
                select(ItemSource).where(col(ItemSource.item_id).in_(item_ids)).order_by(col(ItemSource.id))
            ):
                sources[src.item_id].append(src)
        for pick in part:
            inc = incidents.get(pick.id)
            if inc is not None:
                yield incident_view(Loaded(pick, inc, items.get(pick.id, [])), d, cats, feed_titles, sources)


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    # generate() hands the template's output over piece by piece; the parts are joined once, into the one
    # string the message part (and the outbox row) needs.
    return "".join(env.get_template(name).generate(context))


def build_digest(
    session: Session,
    d: DigestConfig,
    cats: dict[str, CategoryInfo],
    *,
    polling: PollingSettings,
    templates_dir: Path | None,
    now: datetime,
    position: datetime | None,
) -> BuiltDigest:
    picks = select_incidents(session, d, cats, now=now, position=position)
    ordered = message_order(picks, cats)
    shown, rest = ordered[: d.max_incidents], ordered[d.max_incidents :]
    views = list(load_views(session, shown, d, cats))
    problems = feed_problems(session, polling, now=now)
    date = fmt(now, d, with_time=False)
    count = sum(1 for p in picks if p.kind == "new")
    context: dict[str, Any] = {
        "name": d.name,
        "heading": d.heading,
        "date": date,
        "generated": fmt(now, d) + f" ({d.timezone})",
        "count": count,  # every new incident the message delivers, shown or counted
        "updates": len(picks) - count,
        "total": len(picks),
        "shown": len(views),
        "max_incidents": d.max_incidents,
        "groups": group_views((v for v in views if v.kind == "new"), cats),
        "update_groups": group_views((v for v in views if v.kind == "update"), cats),
        "rest": count_rest(rest, d, cats),
        "feed_problems": problems,
        "site_url": d.site_url,
        "immediate": d.immediate,
        "filters": d.filters,
    }
    subject_env = jinja2.Environment(autoescape=False)  # a header, not HTML; build_message flattens lines
    subject = subject_env.from_string(d.email.subject if d.email else "{{ name }}: {{ date }}").render(
        context
    )
    context["subject"] = subject
    context["charts"] = for_digest(session, d, cats, now=now)  # monitor.deliver.charts
    env = templates(templates_dir)
    text = _render(env, "email/digest.txt", context)
    page_html = _render(env, "email/digest.html", context)
    sender = d.email.sender if d.email and d.email.sender else "monitor@localhost"
    email_html, images = email_variant(page_html, context["charts"], env, domain_of(sender))
    return BuiltDigest(
        digest=d,
        subject=" ".join(subject.split()),
        text=text,
        page_html=page_html,
        email_html=inline_css(email_html),
        message_id=new_message_id(d.name, sender),
        date=now,
        picks=picks,
        shown=len(views),
        context=context,
        images=images,
    )
