"""Chat and push notifications of a digest (Apprise: Telegram, Slack, Matrix, Discord, ntfy, JSON webhooks...).

    enqueue_notifications(session, outbox_id, digest, built, now=) -> int    rows for one message, in its transaction
    send_due(engine, now=, digest=None, force=False) -> list[NotifyRun]     every due row, each target on its own
    send_test(config, name) -> list[NotifyRun]                              a test message, no bookkeeping
    notify_status(engine) -> {digest: [target status, ...]}

Exactly once per message and target, as for email: the row exists before the first attempt (written with the
digest message), is claimed with a lease so two processes do not both send it, and is marked delivered after
Apprise reports success. A failing target backs off on its own row (the project's one backoff); the email and
every other target go on. Targets are operator configuration, not feed content, so the feeds' guard against
private addresses does not apply to them (a webhook on the LAN is a normal target).

Messages are short: one line per incident (severity, category, place, headline, link), most severe and most
reported first, as many as the target's length limit allows; the rest are counted with a link to the digest page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_, update
from sqlmodel import Session, col, select

from monitor.backoff import delivery_backoff
from monitor.config.digests import ENV_REF, DigestConfig, redact_target, scheme_and_host
from monitor.deliver.render import CATEGORY_TITLES
from monitor.store.digest_models import DigestOutbox
from monitor.store.engine import session_scope
from monitor.store.models import Incident
from monitor.store.notify_models import NotifyOutbox
from monitor.store.types import utcnow

LEASE = timedelta(minutes=5)
DEFAULT_LIMIT = 4000  # characters, when the plugin declares none: about one chat screen
_ENV_LIST = "MONITOR_NOTIFY_URLS_{}"
_ENV_TARGET = "env:" + _ENV_LIST + "#{}"  # a row's target when it came from the environment list
_SEVERITY_MARK = {"high": "[HIGH]", "medium": "[med]", "low": "[low]"}


class NotifyError(Exception):
    """A target that cannot be resolved (a placeholder whose variable is not set, a list entry that is gone)."""


def env_list_name(digest: str) -> str:
    return _ENV_LIST.format(re.sub(r"[^A-Z0-9]", "_", digest.upper()))


def targets_of(d: DigestConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """The targets of a digest as rows keep them: configured URLs (placeholders unexpanded), then one reference per
    URL listed in MONITOR_NOTIFY_URLS_<DIGEST>."""
    env = os.environ if environ is None else environ
    out = list(d.notify.urls) if d.notify else []
    name = env_list_name(d.name)
    extra = [u for u in re.split(r"[\s,]+", env.get(name, "")) if u]
    out += [_ENV_TARGET.format(re.sub(r"^MONITOR_NOTIFY_URLS_", "", name), i) for i in range(len(extra))]
    return out


def resolve(target: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL to send to, secrets filled in from the environment. Never stored, never logged."""
    env = os.environ if environ is None else environ
    m = re.match(r"^env:(MONITOR_NOTIFY_URLS_[A-Z0-9_]+)#(\d+)$", target)
    if m:
        urls = [u for u in re.split(r"[\s,]+", env.get(m.group(1), "")) if u]
        if int(m.group(2)) >= len(urls):
            raise NotifyError(f"{m.group(1)} no longer lists target {m.group(2)}")
        return urls[int(m.group(2))]

    def fill(ref: re.Match[str]) -> str:
        value = env.get(ref.group(1))
        if value is None:
            raise NotifyError(f"environment variable {ref.group(1)} is not set")
        return value

    return ENV_REF.sub(fill, target)


def shown(target: str, environ: Mapping[str, str] | None = None) -> str:
    """The target as status, errors and logs show it: Apprise's privacy rendering, or the placeholder form."""
    if target.startswith("env:"):
        # The whole URL came from a secret variable: its path and query may be the token, so scheme and host only.
        name, _, index = target[4:].partition("#")
        try:
            where = scheme_and_host(resolve(target, environ)) or "(not set)"
        except NotifyError:
            where = "(not set)"
        return f"{where} ({name} #{index})"
    return redact_target(target) if not ENV_REF.search(target) else target.split("?", 1)[0]


def scrub(message: str, secrets: Iterable[str]) -> str:
    """An error text with every secret taken out (Apprise and httpx may echo the URL)."""
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        message = message.replace(s, "***")
    return message


def _secrets_of(target: str, url: str, environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    found = [env.get(m.group(1), "") for m in ENV_REF.finditer(target)]
    if target.startswith("env:"):
        found.append(url)
        # userinfo, path and query of an env-provided URL may all hold tokens
        found += [p for p in re.split(r"[/:@?&=#]+", url.partition("://")[2]) if len(p) >= 8]
    return found


def limit_of(url: str) -> int:
    import apprise

    obj = apprise.Apprise.instantiate(url)
    n = int(getattr(obj, "body_maxlen", 0) or 0) if obj is not None else 0
    return n if n > 0 else DEFAULT_LIMIT


# ---- composing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    severity: str
    category: str
    place: str
    headline: str
    url: str | None
    reports: int

    def text(self) -> str:
        mark = _SEVERITY_MARK.get(self.severity, f"[{self.severity}]")
        where = f" ({self.place})" if self.place else ""
        link = f" {self.url}" if self.url else ""
        return f"{mark} {self.category}{where}: {self.headline}{link}"


def plain_text(text: str, limit: int = 200) -> str:
    # Feed text goes out as plain text: no control characters, no markup a chat client would render.
    text = re.sub(r"[\x00-\x1f\x7f<>]+", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def compose(
    title: str, lines: Sequence[Line], *, limit: int, more_url: str | None, total: int | None = None
) -> str:
    """Pure: the body for one target: lines in order while they fit in `limit` characters with the footer that
    counts the rest."""
    total = len(lines) if total is None else total
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        text = line.text()
        rest = total - i - 1
        footer = _footer(rest, more_url) if rest else ""
        if used + len(text) + 1 + (len(footer) + 1 if footer else 0) > limit and out:
            break
        if len(text) > limit:
            text = text[: max(limit - len(_footer(total - i, more_url)) - 2, 10)] + "…"
        out.append(text)
        used += len(text) + 1
    rest = total - len(out)
    if rest:
        out.append(_footer(rest, more_url))
    return "\n".join(out) if out else title


def _footer(rest: int, more_url: str | None) -> str:
    return f"…and {rest} more" + (f": {more_url}" if more_url else "")


def lines_for(session: Session, built: Any, d: DigestConfig, titles: Mapping[str, str]) -> list[Line]:
    """One line per incident of a built digest, in the digest's order (most severe, most reported first)."""
    from monitor.deliver.digest.views import incident_page

    picks = list(built.picks)
    ids = [p.id for p in picks]
    rows: dict[int, Incident] = {}
    for start in range(0, len(ids), 500):
        for inc in session.exec(select(Incident).where(col(Incident.id).in_(ids[start : start + 500]))):
            assert inc.id is not None
            rows[inc.id] = inc
    out = []
    for p in picks:
        found = rows.get(p.id)
        if found is None:
            continue
        inc = found
        cat = p.categories[0] if p.categories else (inc.categories[0] if inc.categories else "")
        out.append(
            Line(
                severity=p.severity,
                category=titles.get(cat, cat),
                place=", ".join(inc.countries[:3]),
                headline=plain_text(inc.title) + (" (update)" if p.kind == "update" else ""),
                url=(d.site_url + incident_page(p.id)) if d.site_url else None,
                reports=p.item_count,
            )
        )
    return out


def enqueue_notifications(
    session: Session,
    outbox_id: int,
    d: DigestConfig,
    built: Any,
    *,
    now: datetime,
    titles: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Write one pending row per target for digest message `outbox_id`, in the caller's transaction (the one that
    enqueues the message), with the body composed for that target's length limit."""
    targets = targets_of(d, environ)
    if not targets:
        return 0
    lines = lines_for(session, built, d, titles or CATEGORY_TITLES)
    title = plain_text(built.subject, 250)
    more = d.site_url
    for target in targets:
        try:
            limit = limit_of(resolve(target, environ))
        except NotifyError:
            limit = DEFAULT_LIMIT  # recorded as the send error later; the row must exist now
        session.add(
            NotifyOutbox(
                outbox_id=outbox_id,
                digest=d.name,
                target=target,
                shown=shown(target, environ)[:512],
                title=title,
                body=compose(title, lines, limit=limit - len(title) - 2, more_url=more),
                created_at=now,
                next_attempt_at=now,
            )
        )
    return len(targets)


# ---- sending ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotifyRun:
    digest: str
    target: str  # as shown, never the secret form
    status: str  # delivered | pending | failed (a test)
    attempts: int = 0
    error: str | None = None
    next_attempt_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "target": self.target,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
        }


def _send(
    target: str, title: str, body: str, *, timeout: float, environ: Mapping[str, str] | None
) -> str | None:
    """One send through Apprise; None on success, else the reason (secrets scrubbed)."""
    import apprise

    try:
        url = resolve(target, environ)
    except NotifyError as exc:
        return str(exc)
    secrets = _secrets_of(target, url, environ)
    obj = apprise.Apprise.instantiate(url)
    if obj is None:
        return f"Apprise cannot use {shown(target, environ)}"
    for attr in ("socket_connect_timeout", "socket_read_timeout"):
        if hasattr(obj, attr):
            setattr(obj, attr, timeout)
    logs: list[str] = []
    try:
        with apprise.LogCapture(level=apprise.logging.WARNING) as captured:
            ok = obj.notify(body=body, title=title)
            logs = [line for line in captured.getvalue().splitlines() if line.strip()]
    except Exception as exc:  # a plugin's own failure must not stop the other targets
        return scrub(f"{type(exc).__name__}: {exc}", secrets)
    if ok:
        return None
    return scrub("; ".join(logs[-3:]) or "the target refused the message", secrets)


def _claim(engine: Engine, row_id: int, now: datetime, *, force: bool) -> NotifyOutbox | None:
    with session_scope(engine) as s:
        due = or_(col(NotifyOutbox.next_attempt_at).is_(None), col(NotifyOutbox.next_attempt_at) <= now)
        free = or_(
            col(NotifyOutbox.status) == "pending",
            (col(NotifyOutbox.status) == "sending") & (col(NotifyOutbox.lease_until) < now),
        )
        q = update(NotifyOutbox).where(col(NotifyOutbox.id) == row_id, free)
        if not force:
            q = q.where(due)
        got = s.execute(q.values(status="sending", lease_until=now + LEASE, last_attempt_at=now))
        if not got.rowcount:  # type: ignore[attr-defined]
            return None
        row = s.get(NotifyOutbox, row_id)
        if row is not None:
            s.expunge(row)
        return row


def send_due(
    engine: Engine,
    *,
    config: Any = None,
    now: datetime | None = None,
    digest: str | None = None,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[NotifyRun]:
    """Attempt every undelivered row that is due (`force`: due or not), each target independently."""
    now = now or utcnow()
    with Session(engine) as s:
        q = select(NotifyOutbox.id).where(col(NotifyOutbox.status) != "delivered")
        if digest is not None:
            q = q.where(col(NotifyOutbox.digest) == digest)
        ids = [int(i) for i in s.exec(q.order_by(col(NotifyOutbox.id))) if i is not None]
    timeouts: dict[str, float] = {}
    if config is not None:
        for d in config.digests:
            if d.notify:
                timeouts[d.name] = float(d.notify.timeout)
    runs = []
    for row_id in ids:
        row = _claim(engine, row_id, now, force=force)
        if row is None:
            continue
        error = _send(
            row.target, row.title, row.body, timeout=timeouts.get(row.digest, 20.0), environ=environ
        )
        with session_scope(engine) as s:
            stored = s.get(NotifyOutbox, row_id)
            assert stored is not None
            stored.attempts += 1
            stored.lease_until = None
            if error is None:
                stored.status, stored.delivered_at, stored.last_error = "delivered", now, None
                stored.next_attempt_at = None
            else:
                stored.status, stored.last_error = "pending", error
                stored.next_attempt_at = now + delivery_backoff(stored.attempts)
            s.add(stored)
            runs.append(
                NotifyRun(
                    stored.digest, stored.shown, stored.status, stored.attempts, error, stored.next_attempt_at
                )
            )
    return runs


def send_test(
    config: Any, name: str, *, environ: Mapping[str, str] | None = None, now: datetime | None = None
) -> list[NotifyRun]:
    """A short test message to every target of digest `name` (nothing recorded: it is not a digest)."""
    d = config.digest(name)
    targets = targets_of(d, environ)
    when = (now or utcnow()).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Civic-space monitor: test of digest {name}"
    body = f"This is a test message from the civic-space monitor ({when}). Digest {name} will notify this target."
    timeout = float(d.notify.timeout) if d.notify else 20.0
    out = []
    for target in targets:
        error = _send(target, title, body, timeout=timeout, environ=environ)
        out.append(
            NotifyRun(name, shown(target, environ), "delivered" if error is None else "failed", 1, error)
        )
    return out


def notify_status(engine: Engine, *, per_digest: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Per digest, its latest notification rows (one per message and target), newest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    with Session(engine) as s:
        rows = s.exec(
            select(NotifyOutbox, DigestOutbox.message_id)
            .join(DigestOutbox, col(DigestOutbox.id) == col(NotifyOutbox.outbox_id))
            .order_by(col(NotifyOutbox.id).desc())
            .limit(2000)
        )
        for row, message_id in rows:
            lst = out.setdefault(row.digest, [])
            if len(lst) >= per_digest:
                continue
            lst.append(
                {
                    "target": row.shown,
                    "message_id": message_id,
                    "status": row.status,
                    "attempts": row.attempts,
                    "last_error": row.last_error,
                    "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
                    "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
                }
            )
    return out
