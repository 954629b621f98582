"""Building and delivering one digest, exactly once per incident and subscription.

    deliver_digest(engine, config_dir, name, now=, dry_run_out=) -> DigestRun
    retry_pending(engine, config_dir, now=) -> [DigestRun]      pending messages whose backoff has expired
    discard_pending(engine, name, now=) -> DigestRun             drop an undeliverable message; its incidents wait
    digest_status(engine) -> [dict]                             per digest: position, last delivery, pending message
    delivered_digests(session, name=None) -> [DigestOutbox]     the archive (newest first), for the site

How exactly-once works (tables in monitor.store.digest_models):
1. Select incidents updated since the subscription's position (minus a slack for late commits) that pass the
   filters and whose current version is not already in a delivered digest of this subscription
   (`digest_entry`); an incident that was delivered before at an older version is an *update*.
2. In ONE transaction write the outbox row (the finished message with its Message-ID, `open_key` = the digest)
   and one `digest_entry` per incident version. Nothing has been sent yet.
3. Claim the row (status "sending" with a lease), send, then in a second transaction mark it delivered and
   advance the position. A failed send puts the row back to "pending" with the error and a backoff.
4. A crash between 3's send and its record leaves the row "sending" with an expired lease. The next attempt
   resends the stored bytes, same Message-ID, and flags `maybe_sent`.

The boundary, honestly: incidents are exactly-once (an incident version belongs to one message, enforced by unique
keys), the message is at-least-once. SMTP has no idempotency key, so after a crash in that window, or a timeout
after the server already took the DATA, the same message may arrive twice; it is byte-identical with the same
Message-ID, which mail clients and archives use to drop duplicates. Never resending instead would lose digests.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import Engine, and_, case, delete, false, func, or_, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from monitor.config.load import load_file
from monitor.config.models import PollingSettings, Settings
from monitor.deliver.digests import (
    CategoryMeta,
    DigestConfig,
    DigestsSettings,
    category_infos,
    find_digest,
    load_digests_file,
)
from monitor.deliver.email import (
    build_message,
    domain_of,
    envelope_address,
    inline_css,
    new_message_id,
    serialise,
)
from monitor.deliver.smtp import SmtpError, send_message, target_from_env
from monitor.errors import ConfigError, DeliveryError
from monitor.ingest.policy import feed_health
from monitor.severity import DEFAULT_LEVEL, rank
from monitor.store.digest_models import DigestEntry, DigestOutbox, DigestState
from monitor.store.engine import session_scope
from monitor.store.models import Feed, Incident, Item, ItemSource
from monitor.store.types import utcnow

# Transactions that commit late can carry an updated_at a little before the position; looking back this far
# re-reads them, and digest_entry keeps what was already delivered from coming back.
POSITION_SLACK = timedelta(hours=1)
# An attempt holds its row this long; a row still "sending" after that was interrupted (crash, kill).
ATTEMPT_LEASE = timedelta(minutes=15)
BACKOFF_BASE = 60.0  # seconds after the first failure, doubling
BACKOFF_CAP = 6 * 3600.0
MAX_SOURCES = 8  # per incident in a message; the page on the site has them all
MAX_TERMS = 6
PROBLEM_STATES = ("failing", "silent", "muted", "rate_limited")
INCIDENT_PATH = "incident/{id}.html"  # under site_url: where `site build` writes one page per incident
_CHUNK = 500  # ids per IN (...) query

# Test seam: called after the server accepted the message and before that is recorded (a crash there is what
# the outbox must survive). None in production.
_after_send: Callable[[DigestOutbox], None] | None = None


@dataclass
class DigestRun:
    """What one delivery attempt did. status: delivered | pending | empty | dry_run | busy | discarded | none."""

    digest: str
    status: str
    outbox_id: int | None = None
    message_id: str | None = None
    subject: str = ""
    incidents: int = 0
    updates: int = 0
    recipients: list[str] = field(default_factory=list)
    attempts: int = 0
    error: str | None = None
    next_attempt_at: datetime | None = None
    maybe_sent: bool = False  # resent after an interrupted attempt: recipients may see it twice (same id)
    refused: dict[str, str] = field(default_factory=dict)
    eml_path: Path | None = None
    html_path: Path | None = None
    page_path: Path | None = None
    previous: DigestRun | None = None  # an older pending message of the same digest, retried first

    @property
    def ok(self) -> bool:
        return self.status in ("delivered", "empty", "dry_run") and (
            self.previous is None or self.previous.ok
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "status": self.status,
            "outbox_id": self.outbox_id,
            "message_id": self.message_id,
            "subject": self.subject,
            "incidents": self.incidents,
            "updates": self.updates,
            "recipients": self.recipients,
            "attempts": self.attempts,
            "error": self.error,
            "next_attempt_at": _iso(self.next_attempt_at),
            "maybe_sent": self.maybe_sent,
            "refused": self.refused,
            "eml": str(self.eml_path) if self.eml_path else None,
            "html": str(self.html_path) if self.html_path else None,
            "page": str(self.page_path) if self.page_path else None,
            "previous": self.previous.to_json() if self.previous else None,
        }


# ---------------------------------------------------------------------------------------------------- views


@dataclass
class SourceView:
    title: str
    url: str | None
    feed: str
    date: str
    is_new: bool = False


@dataclass
class IncidentView:
    id: int
    title: str
    kind: str  # new | update
    severity: str
    category: str
    categories: list[str]  # titles, primary first
    countries: list[str]  # names
    first_seen: str
    last_seen: str
    sources: list[SourceView]
    more_sources: int
    terms: list[str]
    snippet: str | None
    new_sources: int
    url: str | None

    @property
    def meta(self) -> str:
        """One line: countries · dates · other categories · new reports (the same in text and HTML)."""
        dates = (
            self.first_seen if self.last_seen == self.first_seen else f"{self.first_seen} – {self.last_seen}"
        )
        parts = [", ".join(self.countries), dates]
        if len(self.categories) > 1:
            parts.append(", ".join(self.categories))
        if self.kind == "update" and self.new_sources:
            parts.append(f"{self.new_sources} new report" + ("s" if self.new_sources != 1 else ""))
        return " · ".join(p for p in parts if p)


@dataclass
class CategoryGroup:
    id: str
    title: str
    severity: str
    incidents: list[IncidentView] = field(default_factory=list)


@dataclass
class FeedProblem:
    id: str
    title: str
    url: str | None
    state: str
    since: str
    error: str | None


@dataclass
class Selected:
    incident: Incident
    kind: str
    prev_version: datetime | None
    prev_items: int
    categories: list[str]  # the incident's categories that pass the filter, most severe first
    items: list[Item]


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
            list_id=_list_id(self.digest),
        )
        return serialise(msg)


# ---------------------------------------------------------------------------------------------------- selection


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def passing_categories(
    incident_categories: Iterable[str], d: DigestConfig, cats: dict[str, CategoryMeta]
) -> list[str]:
    """The incident's categories this digest shows, most severe first (then in config order)."""
    order = {cid: i for i, cid in enumerate(cats)}
    wanted = set(d.filters.categories)
    min_rank = rank(d.filters.min_severity)
    out = []
    for cid in incident_categories:
        if wanted and cid not in wanted:
            continue
        sev = cats[cid].severity if cid in cats else DEFAULT_LEVEL
        if rank(sev) > min_rank:
            continue
        out.append(cid)
    return sorted(
        set(out), key=lambda c: (rank(cats[c].severity if c in cats else "medium"), order.get(c, 99), c)
    )


def select_incidents(
    session: Session,
    d: DigestConfig,
    cats: dict[str, CategoryMeta],
    *,
    now: datetime,
    position: datetime | None,
) -> list[Selected]:
    """Incidents new or updated since `position` that pass the filters and are not yet delivered at this version."""
    lower = position - POSITION_SLACK if position else now - timedelta(seconds=d.first_lookback)
    rows = list(
        session.exec(
            select(Incident)
            .where(col(Incident.updated_at) > lower, col(Incident.updated_at) <= now)
            .order_by(col(Incident.updated_at), col(Incident.id))
        )
    )
    countries = set(d.filters.countries)
    candidates: list[tuple[Incident, list[str]]] = []
    for inc in rows:
        if countries and not countries.intersection(inc.countries or []):
            continue
        passing = passing_categories(inc.categories or [], d, cats)
        if passing:
            candidates.append((inc, passing))
    if not candidates:
        return []
    ids = [inc.id for inc, _ in candidates if inc.id is not None]

    delivered: dict[int, tuple[datetime, int]] = {}
    for chunk in _chunks(ids):
        q = (
            select(DigestEntry.incident_id, DigestEntry.version, DigestEntry.item_count)
            .join(DigestOutbox, col(DigestOutbox.id) == col(DigestEntry.outbox_id))
            .where(
                col(DigestEntry.digest) == d.name,
                col(DigestEntry.incident_id).in_(chunk),
                col(DigestOutbox.status) == "delivered",
            )
        )
        for iid, version, n in session.exec(q):
            if iid not in delivered or version > delivered[iid][0]:
                delivered[iid] = (version, n)

    items: dict[int, list[Item]] = defaultdict(list)
    # A digest shows each report's title, link, source and matched terms, never its text: leaving the texts and
    # HTML in the database takes a quarter off the peak memory of a large digest. raiseload: reading one anyway
    # fails loudly instead of costing a query per report.
    light = [defer(getattr(Item, name), raiseload=True) for name in ("text", "html", "places", "grouping")]
    for chunk in _chunks(ids):
        for it in session.exec(
            select(Item)
            .options(*light)
            .where(col(Item.incident_id).in_(chunk))
            .order_by(col(Item.published), col(Item.id))
        ):
            assert it.incident_id is not None
            items[it.incident_id].append(it)

    tags = set(d.filters.feed_tags)
    feeds_of: dict[int, set[str]] = {}
    if tags:
        feeds_of = _feeds_of_items(
            session, [it.id for its in items.values() for it in its if it.id is not None]
        )
        tagged = {f.id for f in session.exec(select(Feed)) if tags.intersection(f.tags or [])}

    out: list[Selected] = []
    for inc, passing in candidates:
        assert inc.id is not None
        prev = delivered.get(inc.id)
        if prev is not None and prev[0] >= inc.updated_at:
            continue  # this version was delivered already
        its = items.get(inc.id, [])
        if tags:
            feeds = {f for it in its if it.id is not None for f in feeds_of.get(it.id, {it.feed_id})}
            if not feeds & tagged:
                continue
        out.append(
            Selected(
                incident=inc,
                kind="update" if prev else "new",
                prev_version=prev[0] if prev else None,
                prev_items=prev[1] if prev else 0,
                categories=passing,
                items=its,
            )
        )
    return out


def _feeds_of_items(session: Session, item_ids: Sequence[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for chunk in _chunks(list(item_ids)):
        for src in session.exec(select(ItemSource).where(col(ItemSource.item_id).in_(chunk))):
            out[src.item_id].add(src.feed_id)
    return out


# ---------------------------------------------------------------------------------------------------- building


def _fmt(dt: datetime | None, d: DigestConfig, with_time: bool = True) -> str:
    if dt is None:
        return ""
    local = dt.astimezone(d.zone)
    return local.strftime("%Y-%m-%d %H:%M") if with_time else local.strftime("%Y-%m-%d")


def _list_id(d: DigestConfig) -> str:
    sender = d.email.sender if d.email and d.email.sender else "monitor@localhost"
    return f"<{d.name}.digest.{domain_of(sender)}>"


def _terms(sel: Selected) -> tuple[list[str], str | None]:
    """The matched terms (the "why") for the categories shown, and one snippet around a hit."""
    terms: list[str] = []
    seen: set[str] = set()
    snip: str | None = None
    for it in sel.items:
        matches = it.matches if isinstance(it.matches, dict) else {}
        for cid in sel.categories:
            m = matches.get(cid)
            if not isinstance(m, dict):
                continue
            for hit in m.get("hits") or []:
                if not isinstance(hit, dict):
                    continue
                term = str(hit.get("form") or hit.get("term") or "").strip()
                if term and term.casefold() not in seen:
                    seen.add(term.casefold())
                    terms.append(term)
                if snip is None and hit.get("snippet"):
                    snip = str(hit["snippet"])
    return terms[:MAX_TERMS], snip


def _incident_view(
    sel: Selected,
    d: DigestConfig,
    cats: dict[str, CategoryMeta],
    feed_titles: dict[str, str],
    sources: dict[int, list[ItemSource]],
) -> IncidentView:
    from monitor.deliver.render import COUNTRY_NAMES, safe_url

    inc = sel.incident
    assert inc.id is not None
    views: list[SourceView] = []
    for it in sorted(sel.items, key=lambda i: (i.published, i.id or 0)):
        srcs = sources.get(it.id or -1) or []
        feed_ids = [s.feed_id for s in srcs] or [it.feed_id]
        url = safe_url(it.url) or next((u for s in srcs if (u := safe_url(s.url))), None)
        views.append(
            SourceView(
                title=it.title or "(untitled)",
                url=url,
                feed=", ".join(dict.fromkeys(feed_titles.get(f, f) for f in feed_ids)),
                date=_fmt(it.published, d, with_time=False),
                is_new=sel.prev_version is not None and it.fetched > sel.prev_version,
            )
        )
    if sel.kind == "update":
        views.sort(key=lambda v: not v.is_new)  # what is new first
    terms, snip = _terms(sel)
    primary = sel.categories[0]
    return IncidentView(
        id=inc.id,
        title=inc.title or (sel.items[0].title if sel.items else f"Incident {inc.id}"),
        kind=sel.kind,
        severity=cats[primary].severity if primary in cats else inc.severity,
        category=primary,
        categories=[cats[c].title if c in cats else c for c in sel.categories],
        countries=[COUNTRY_NAMES.get(c, c) for c in inc.countries or []],
        first_seen=_fmt(inc.first_seen, d),
        last_seen=_fmt(inc.last_seen, d),
        sources=views[:MAX_SOURCES],
        more_sources=max(0, len(views) - MAX_SOURCES),
        terms=terms,
        snippet=snip,
        new_sources=max(0, inc.item_count - sel.prev_items) if sel.kind == "update" else 0,
        url=(d.site_url + INCIDENT_PATH.format(id=inc.id)) if d.site_url else None,
    )


def _group(views: list[IncidentView], cats: dict[str, CategoryMeta]) -> list[CategoryGroup]:
    order = {cid: i for i, cid in enumerate(cats)}
    groups: dict[str, CategoryGroup] = {}
    for v in views:
        meta = cats.get(v.category)
        g = groups.setdefault(
            v.category,
            CategoryGroup(
                v.category, meta.title if meta else v.category, meta.severity if meta else v.severity
            ),
        )
        g.incidents.append(v)
    for g in groups.values():
        g.incidents.sort(key=lambda v: v.last_seen, reverse=True)
    return sorted(groups.values(), key=lambda g: (rank(g.severity), order.get(g.id, 99), g.id))


def feed_problems(session: Session, polling: PollingSettings, *, now: datetime) -> list[FeedProblem]:
    """Feeds a reader should know about: failing, silent, muted or rate limited (monitor.ingest.policy.health)."""
    out = []
    for f in session.exec(select(Feed).order_by(col(Feed.id))):
        state = feed_health(f, now, polling)
        if state not in PROBLEM_STATES:
            continue
        since = (
            f.last_error_at if state in ("failing", "rate_limited") else f.last_new_item_at or f.created_at
        )
        error = f.mute_reason if state == "muted" else f.last_error if state != "silent" else None
        out.append(
            FeedProblem(
                id=f.id,
                title=f.title or f.id,
                url=f.site_url or f.url,
                state=state,
                since=since.strftime("%Y-%m-%d") if since else "",
                error=" ".join(error.split())[:300] if error else None,
            )
        )
    return out


def _templates(config_dir: Path) -> jinja2.Environment:
    from monitor.deliver.render import environment

    own = Path(config_dir) / "templates"
    return environment(own if own.is_dir() else None)


def _polling(config_dir: Path) -> PollingSettings:
    try:
        return load_file(Path(config_dir) / "settings.yaml", Settings, required=False).polling
    except ConfigError:
        return PollingSettings()  # `monitor check` reports the bad file; the digest still goes out


def build_digest(
    session: Session,
    d: DigestConfig,
    cats: dict[str, CategoryMeta],
    config_dir: Path,
    *,
    now: datetime,
    position: datetime | None,
) -> BuiltDigest:
    selected = select_incidents(session, d, cats, now=now, position=position)
    item_ids = [it.id for s in selected for it in s.items if it.id is not None]
    sources: dict[int, list[ItemSource]] = defaultdict(list)
    for chunk in _chunks(item_ids):
        for src in session.exec(
            select(ItemSource).where(col(ItemSource.item_id).in_(chunk)).order_by(col(ItemSource.id))
        ):
            sources[src.item_id].append(src)
    feed_titles = {f.id: f.title or f.id for f in session.exec(select(Feed))}
    views = [_incident_view(s, d, cats, feed_titles, sources) for s in selected]
    new = [v for v in views if v.kind == "new"]
    upd = [v for v in views if v.kind == "update"]
    problems = feed_problems(session, _polling(config_dir), now=now)
    date = _fmt(now, d, with_time=False)
    context: dict[str, Any] = {
        "name": d.name,
        "heading": d.heading,
        "date": date,
        "generated": _fmt(now, d) + f" ({d.timezone})",
        "count": len(new),
        "updates": len(upd),
        "total": len(views),
        "groups": _group(new, cats),
        "update_groups": _group(upd, cats),
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
    env = _templates(config_dir)
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


# ---------------------------------------------------------------------------------------------------- delivery


def backoff(attempts: int) -> timedelta:
    """Wait before the next automatic retry: 1 min, 2, 4... capped at 6 h (deterministic: one message per digest,
    no thundering herd to spread)."""
    return timedelta(seconds=min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1)))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # readers of the published folder never see half a page


def _write_page(row: DigestOutbox) -> Path | None:
    if not row.page_path:
        return None
    folder = Path(row.page_path)
    stamp = row.created_at.strftime("%Y-%m-%d-%H%M")
    data = row.page_html.encode("utf-8")
    try:
        _write_atomic(folder / f"{row.digest}-{stamp}.html", data)
        _write_atomic(folder / f"{row.digest}.html", data)
    except OSError as exc:
        raise DeliveryError(
            f"cannot write page in {folder}: {exc}", digest=row.digest, channel="page"
        ) from None
    return folder / f"{row.digest}.html"


def _run_of(row: DigestOutbox, status: str | None = None) -> DigestRun:
    return DigestRun(
        digest=row.digest,
        status=status or ("delivered" if row.status == "delivered" else "pending"),
        outbox_id=row.id,
        message_id=row.message_id,
        subject=row.subject,
        incidents=row.incidents,
        updates=row.updates,
        recipients=list(row.recipients),
        attempts=row.attempts,
        error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.status != "delivered" else None,
        maybe_sent=row.maybe_sent,
        refused=dict(row.refused or {}),
        page_path=Path(row.page_path) / f"{row.digest}.html" if row.page_path else None,
    )


def _claim(engine: Engine, outbox_id: int, now: datetime, *, force: bool) -> DigestOutbox | None:
    """Take the row for one attempt, atomically: None when it is delivered, not due, or another attempt holds it."""
    due = or_(
        and_(
            col(DigestOutbox.status) == "pending",
            or_(
                true() if force else false(),
                col(DigestOutbox.next_attempt_at).is_(None),
                col(DigestOutbox.next_attempt_at) <= now,
            ),
        ),
        # still "sending" after its lease: that attempt died, possibly after the server took the message
        and_(col(DigestOutbox.status) == "sending", col(DigestOutbox.lease_until) <= now),
    )
    with session_scope(engine) as s:
        result = s.exec(
            update(DigestOutbox)
            .where(col(DigestOutbox.id) == outbox_id, due)
            .values(
                maybe_sent=case(
                    (col(DigestOutbox.status) == "sending", True), else_=col(DigestOutbox.maybe_sent)
                ),
                status="sending",
                lease_until=now + ATTEMPT_LEASE,
                attempts=col(DigestOutbox.attempts) + 1,
                last_attempt_at=now,
            )
        )
        if result.rowcount != 1:
            return None
    with Session(engine, expire_on_commit=False) as s:
        return s.get(DigestOutbox, outbox_id)


def _attempt(
    engine: Engine, outbox_id: int, settings: DigestsSettings, now: datetime, *, force: bool
) -> DigestRun:
    row = _claim(engine, outbox_id, now, force=force)
    if row is None:
        with Session(engine, expire_on_commit=False) as s:
            current = s.get(DigestOutbox, outbox_id)
        if current is None:
            raise DeliveryError(f"outbox row {outbox_id} vanished")
        if current.status == "sending":
            return _run_of(current, "busy")
        return _run_of(current)
    refused: dict[str, str] = {}
    try:
        _write_page(row)
        if row.recipients:
            refused = send_message(
                target_from_env(),
                row.raw.encode("ascii"),
                envelope_address(row.sender),
                [envelope_address(r) for r in row.recipients],
                timeout=settings.smtp_timeout,
            )
        if _after_send is not None:
            _after_send(row)
    except (
        Exception
    ) as exc:  # a failed attempt is recorded, never lost; BaseException (a crash) is not caught
        error = str(exc) if isinstance(exc, DeliveryError) else f"unexpected {type(exc).__name__}: {exc}"
        if isinstance(exc, SmtpError):
            error = f"smtp {exc.kind}: {exc}"
        return _record_failure(engine, row, error, now)
    return _record_delivery(engine, row, refused, now)


def _record_failure(engine: Engine, row: DigestOutbox, error: str, now: datetime) -> DigestRun:
    with session_scope(engine) as s:
        current = s.get(DigestOutbox, row.id)
        assert current is not None
        current.status = "pending"
        current.lease_until = None
        current.last_error = error
        current.next_attempt_at = now + backoff(current.attempts)
        s.add(current)
    return _run_of(current, "pending")


def _record_delivery(engine: Engine, row: DigestOutbox, refused: dict[str, str], now: datetime) -> DigestRun:
    with session_scope(engine) as s:
        current = s.get(DigestOutbox, row.id)
        assert current is not None
        current.status = "delivered"
        current.open_key = None
        current.lease_until = None
        current.next_attempt_at = None
        current.delivered_at = now
        current.refused = refused
        current.last_error = None
        s.add(current)
        state = s.get(DigestState, current.digest) or DigestState(name=current.digest)
        if state.position is None or current.position > state.position:
            state.position = current.position
        state.last_delivered_at = now
        state.last_message_id = current.message_id
        s.add(state)
    return _run_of(current, "delivered")


def _touch(engine: Engine, name: str, now: datetime) -> None:
    for _ in range(2):  # a concurrent first run may insert the row between our read and write
        try:
            with session_scope(engine) as s:
                state = s.get(DigestState, name) or DigestState(name=name)
                state.last_run_at = now
                s.add(state)
            return
        except IntegrityError:
            continue


def _open_row_id(engine: Engine, name: str) -> int | None:
    with Session(engine) as s:
        return s.exec(select(DigestOutbox.id).where(col(DigestOutbox.open_key) == name)).first()


def deliver_digest(
    engine: Engine,
    config_dir: Path,
    name: str,
    *,
    now: datetime | None = None,
    dry_run_out: Path | None = None,
    force_retry: bool | None = None,
) -> DigestRun:
    """Build digest `name` from what is new and deliver it now (see the module docstring for the guarantees).

    An older message of this digest still pending is retried first (scheduled digests: regardless of its backoff;
    immediate ones: only when due, unless `force_retry`); while it cannot be delivered no new message is built,
    so messages go out in order and an incident is never in two of them. Every call except a dry run records
    `DigestState.last_run_at` (the scheduler serves each slot once by it). Raises ConfigError for an unknown
    digest or an invalid digests.yaml.
    """
    now = now or utcnow()
    config_dir = Path(config_dir)
    cats = category_infos(config_dir)
    settings, digests = load_digests_file(config_dir, cats)
    d = find_digest(digests, name, config_dir)

    if dry_run_out is not None:
        with Session(engine) as s:
            state = s.get(DigestState, name)
            built = build_digest(s, d, cats, config_dir, now=now, position=state.position if state else None)
        out = Path(dry_run_out)
        out.mkdir(parents=True, exist_ok=True)
        eml, html = out / f"{name}.eml", out / f"{name}.html"
        eml.write_bytes(built.message_bytes())
        html.write_text(built.page_html, encoding="utf-8")
        return DigestRun(
            digest=name,
            status="dry_run",
            message_id=built.message_id,
            subject=built.subject,
            incidents=built.count,
            updates=built.updates,
            recipients=list(d.email.recipients) if d.email else [],
            eml_path=eml,
            html_path=html,
        )

    _touch(engine, name, now)
    previous: DigestRun | None = None
    open_id = _open_row_id(engine, name)
    if open_id is not None:
        # Alerts are called after every poll: they honour the backoff. A scheduled or manual run is an explicit
        # request and tries now.
        force = not d.immediate if force_retry is None else force_retry
        previous = _attempt(engine, open_id, settings, now, force=force)
        if previous.status != "delivered":
            return previous

    recipients = list(d.email.recipients) if d.email else []
    try:
        with session_scope(engine) as s:
            state = s.get(DigestState, name) or DigestState(name=name)
            built = build_digest(s, d, cats, config_dir, now=now, position=state.position)
            if built.empty and not d.send_empty:
                # Nothing to deliver is delivered: move on, so the next selection starts here.
                if state.position is None or now > state.position:
                    state.position = now
                s.add(state)
                return DigestRun(digest=name, status="empty", recipients=recipients, previous=previous)
            s.add(state)
            row = DigestOutbox(
                digest=name,
                open_key=name,
                message_id=built.message_id,
                status="pending",
                created_at=now,
                position=now,
                subject=built.subject,
                sender=(d.email.sender or "") if d.email else "",
                recipients=recipients,
                raw=built.message_bytes(recipients).decode("ascii"),
                page_html=built.page_html,
                page_path=d.page.output if d.page and d.page.output else None,
                incidents=built.count,
                updates=built.updates,
            )
            s.add(row)
            s.flush()
            assert row.id is not None
            for sel in built.selected:
                assert sel.incident.id is not None
                s.add(
                    DigestEntry(
                        outbox_id=row.id,
                        digest=name,
                        incident_id=sel.incident.id,
                        version=sel.incident.updated_at,
                        kind=sel.kind,
                        item_count=sel.incident.item_count,
                    )
                )
            outbox_id = row.id
    except IntegrityError:
        # Another process built this digest's next message at the same moment (open_key is unique): it sends.
        return DigestRun(digest=name, status="busy", recipients=recipients, previous=previous)

    run = _attempt(engine, outbox_id, settings, now, force=True)
    run.previous = previous
    return run


def retry_pending(engine: Engine, config_dir: Path, *, now: datetime | None = None) -> list[DigestRun]:
    """Attempt every undelivered message whose backoff has expired (or whose attempt was interrupted)."""
    now = now or utcnow()
    try:
        settings, _ = load_digests_file(Path(config_dir))
    except ConfigError:
        # Pending messages are already built; a config broken since must not hold them back.
        settings = DigestsSettings(None, "", 30.0)
    with Session(engine) as s:
        ids = list(
            s.exec(
                select(DigestOutbox.id)
                .where(
                    or_(
                        and_(
                            col(DigestOutbox.status) == "pending",
                            or_(
                                col(DigestOutbox.next_attempt_at).is_(None),
                                col(DigestOutbox.next_attempt_at) <= now,
                            ),
                        ),
                        and_(col(DigestOutbox.status) == "sending", col(DigestOutbox.lease_until) <= now),
                    )
                )
                .order_by(col(DigestOutbox.id))
            )
        )
    return [_attempt(engine, i, settings, now, force=False) for i in ids if i is not None]


def discard_pending(engine: Engine, name: str, *, now: datetime | None = None) -> DigestRun:
    """Drop digest `name`'s undelivered message, for one that can never go out as built (a recipient the server
    refuses for good, an address fixed in digests.yaml since: a pending message keeps the recipients it was built
    with, and blocks every later message of its digest). Its incidents are released, so the next message
    includes them. Returns status "discarded", "none" (nothing undelivered) or "busy" (an attempt is running)."""
    now = now or utcnow()
    with session_scope(engine) as s:
        row = s.exec(select(DigestOutbox).where(col(DigestOutbox.open_key) == name)).first()
        if row is None:
            return DigestRun(digest=name, status="none")
        idle = or_(
            col(DigestOutbox.status) == "pending",
            and_(col(DigestOutbox.status) == "sending", col(DigestOutbox.lease_until) <= now),
        )
        # One conditional UPDATE, as in _claim: an attempt that starts meanwhile wins and this does nothing.
        taken = s.exec(
            update(DigestOutbox)
            .where(col(DigestOutbox.id) == row.id, idle)
            .values(status="discarded", open_key=None, next_attempt_at=None, lease_until=None)
        )
        if taken.rowcount != 1:
            return _run_of(row, "busy")
        s.exec(delete(DigestEntry).where(col(DigestEntry.outbox_id) == row.id))
    return _run_of(row, "discarded")


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def digest_status(engine: Engine) -> list[dict[str, Any]]:
    """Per digest known to the database: position, last delivery, and the undelivered message if any."""
    with Session(engine) as s:
        states = {st.name: st for st in s.exec(select(DigestState))}
        counts = dict(
            s.exec(
                select(DigestOutbox.digest, func.count())
                .where(col(DigestOutbox.status) == "delivered")
                .group_by(col(DigestOutbox.digest))
            ).all()
        )
        open_rows = {
            r.digest: r for r in s.exec(select(DigestOutbox).where(col(DigestOutbox.open_key).is_not(None)))
        }
    out = []
    for name in sorted(set(states) | set(open_rows) | set(counts)):
        st = states.get(name)
        row = open_rows.get(name)
        pending = None
        if row is not None:
            interrupted = row.status == "sending"
            pending = {
                "outbox_id": row.id,
                "message_id": row.message_id,
                "subject": row.subject,
                "created_at": _iso(row.created_at),
                "status": "sending" if interrupted else "pending",
                "attempts": row.attempts,
                "last_attempt_at": _iso(row.last_attempt_at),
                "last_error": row.last_error,
                "next_attempt_at": _iso(row.next_attempt_at if not interrupted else row.lease_until),
                "maybe_sent": row.maybe_sent or interrupted,
                "incidents": row.incidents,
                "updates": row.updates,
            }
        out.append(
            {
                "name": name,
                "position": _iso(st.position) if st else None,
                "last_run_at": _iso(st.last_run_at) if st else None,
                "last_delivered_at": _iso(st.last_delivered_at) if st else None,
                "last_message_id": st.last_message_id if st else None,
                "delivered": int(counts.get(name, 0)),
                "pending": pending,
            }
        )
    return out


def delivered_digests(
    session: Session, name: str | None = None, limit: int | None = None
) -> list[DigestOutbox]:
    """Delivered digest messages, newest first: the archive of past digests (`page_html` is the page)."""
    q = select(DigestOutbox).where(col(DigestOutbox.status) == "delivered")
    if name:
        q = q.where(col(DigestOutbox.digest) == name)
    q = q.order_by(col(DigestOutbox.delivered_at).desc(), col(DigestOutbox.id).desc())
    if limit:
        q = q.limit(limit)
    return list(session.exec(q))
