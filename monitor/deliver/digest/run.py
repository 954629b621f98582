"""One digest run, start to end: retry the older undelivered message, select and compose, enqueue, attempt.

deliver_digest(engine, config, name, now=, dry_run_out=, force_retry=) -> DigestRun
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from monitor.config.load import Config
from monitor.deliver.digest.compose import build_digest
from monitor.deliver.digest.outbox import DigestRun, Entry, attempt, enqueue, open_row_id, touch
from monitor.deliver.notify import enqueue_notifications, send_due
from monitor.store.digest_models import DigestState
from monitor.store.engine import session_scope
from monitor.store.types import utcnow


def deliver_digest(
    engine: Engine,
    config: Config,
    name: str,
    *,
    now: datetime | None = None,
    dry_run_out: Path | None = None,
    force_retry: bool | None = None,
) -> DigestRun:
    """Build digest `name` from what is new and deliver it now (monitor.deliver.digest.outbox says what is
    guaranteed).

    An older message of this digest still pending is retried first (scheduled digests: regardless of its backoff;
    immediate ones: only when due, unless `force_retry`); while it cannot be delivered no new message is built,
    so messages go out in order and an incident is never in two of them. Every call except a dry run records
    `DigestState.last_run_at` (the scheduler serves each slot once by it). Raises ConfigError for a digest
    that is not in the config.
    """
    now = now or utcnow()
    cats = config.categories
    settings = config.digests.settings
    d = config.digest(name)
    polling, templates_dir = config.settings.polling, config.templates_dir

    if dry_run_out is not None:
        with Session(engine) as s:
            state = s.get(DigestState, name)
            built = build_digest(
                s,
                d,
                cats,
                polling=polling,
                templates_dir=templates_dir,
                now=now,
                position=state.position if state else None,
            )
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

    touch(engine, name, now)
    previous: DigestRun | None = None
    open_id = open_row_id(engine, name)
    if open_id is not None:
        # Alerts are called after every poll: they honour the backoff. A scheduled or manual run is an explicit
        # request and tries now.
        force = not d.immediate if force_retry is None else force_retry
        previous = attempt(engine, open_id, settings, now, force=force)
        if previous.status != "delivered":
            return previous

    recipients = list(d.email.recipients) if d.email else []
    try:
        with session_scope(engine) as s:
            state = s.get(DigestState, name) or DigestState(name=name)
            built = build_digest(
                s, d, cats, polling=polling, templates_dir=templates_dir, now=now, position=state.position
            )
            if built.empty and not d.send_empty:
                # Nothing to deliver is delivered: move on, so the next selection starts here.
                if state.position is None or now > state.position:
                    state.position = now
                s.add(state)
                return DigestRun(digest=name, status="empty", recipients=recipients, previous=previous)
            s.add(state)
            entries = (Entry(p.id, p.version, p.kind, p.item_count) for p in built.picks)
            outbox_id = enqueue(
                s,
                digest=name,
                message_id=built.message_id,
                now=now,
                subject=built.subject,
                sender=(d.email.sender or "") if d.email else "",
                recipients=recipients,
                raw=built.message_bytes(recipients).decode("ascii"),
                page_html=built.page_html,
                page_path=d.page.output if d.page and d.page.output else None,
                incidents=built.count,
                updates=built.updates,
                entries=entries,
            )
            # In the same transaction: a message has its notification rows from the start, or none at all.
            enqueue_notifications(s, outbox_id, d, built, now=now, titles=config.category_titles)
    except IntegrityError:
        # Another process built this digest's next message at the same moment (open_key is unique): it sends.
        return DigestRun(digest=name, status="busy", recipients=recipients, previous=previous)

    run = attempt(engine, outbox_id, settings, now, force=True)
    run.previous = previous
    # Each chat target on its own row: a failing one backs off without holding back the email or the others.
    run.notifications = send_due(engine, config=config, now=now, digest=name)
    return run
