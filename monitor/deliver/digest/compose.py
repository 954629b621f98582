"""Composing one digest message: selection -> views -> the email and page templates -> RFC 5322 bytes.

build_digest(session, digest, categories, polling=, templates_dir=, now=, position=) -> BuiltDigest
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from sqlmodel import Session, col, select

from monitor.config.digests import DigestConfig
from monitor.config.models import PollingSettings
from monitor.deliver.digest.selection import Selected, chunks, select_incidents
from monitor.deliver.digest.views import feed_problems, fmt, group_views, incident_view
from monitor.deliver.email import build_message, domain_of, inline_css, new_message_id, serialise
from monitor.deliver.render import environment
from monitor.rules.explain import CategoryInfo
from monitor.store.models import Feed, ItemSource


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
    selected: list[Selected]
    context: dict[str, Any]

    @property
    def count(self) -> int:
        return sum(1 for s in self.selected if s.kind == "new")

    @property
    def updates(self) -> int:
        return sum(1 for s in self.selected if s.kind == "update")

    @property
    def empty(self) -> bool:
        return not self.selected

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
        )
        return serialise(msg)


def templates(templates_dir: Path | None) -> jinja2.Environment:
    """The template environment: the config folder's own `templates/` first (when given), then the packaged."""
    return environment(templates_dir)


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
    selected = select_incidents(session, d, cats, now=now, position=position)
    item_ids = [it.id for s in selected for it in s.items if it.id is not None]
    sources: dict[int, list[ItemSource]] = defaultdict(list)
    for chunk in chunks(item_ids):
        for src in session.exec(
            select(ItemSource).where(col(ItemSource.item_id).in_(chunk)).order_by(col(ItemSource.id))
        ):
            sources[src.item_id].append(src)
    feed_titles = {f.id: f.title or f.id for f in session.exec(select(Feed))}
    views = [incident_view(s, d, cats, feed_titles, sources) for s in selected]
    new = [v for v in views if v.kind == "new"]
    upd = [v for v in views if v.kind == "update"]
    problems = feed_problems(session, polling, now=now)
    date = fmt(now, d, with_time=False)
    context: dict[str, Any] = {
        "name": d.name,
        "heading": d.heading,
        "date": date,
        "generated": fmt(now, d) + f" ({d.timezone})",
        "count": len(new),
        "updates": len(upd),
        "total": len(views),
        "groups": group_views(new, cats),
        "update_groups": group_views(upd, cats),
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
    env = templates(templates_dir)
    text = env.get_template("email/digest.txt").render(context)
    page_html = env.get_template("email/digest.html").render(context)
    sender = d.email.sender if d.email and d.email.sender else "monitor@localhost"
    return BuiltDigest(
        digest=d,
        subject=" ".join(subject.split()),
        text=text,
        page_html=page_html,
        email_html=inline_css(page_html),
        message_id=new_message_id(d.name, sender),
        date=now,
        selected=selected,
        context=context,
    )
