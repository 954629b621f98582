"""Delivery state of digest messages: the outbox row, claiming it for one attempt, sending, recording, retrying.

    enqueue(session, ...) -> outbox id                         the finished message and its incidents, one transaction
    attempt(engine, outbox_id, settings, now, force=) -> DigestRun   claim, send (SMTP) and write the page, record
    retry_pending(engine, settings, now=) -> [DigestRun]         pending messages whose backoff has expired
    discard_pending(engine, name, now=) -> DigestRun             drop an undeliverable message; its incidents wait
    digest_status(engine) -> [dict]                             per digest: position, last delivery, pending message
    delivered_digests(session, name=None) -> [DigestOutbox]     the archive (newest first), for the site

How exactly-once works (tables in monitor.store.digest_models):
1. Selection (monitor.deliver.digest.selection) takes incidents updated since the subscription's position that
   pass the filters and whose current version is not already in a delivered digest of this subscription
   (`digest_entry`); an incident that was delivered before at an older version is an *update*.
2. In ONE transaction `enqueue` writes the outbox row (the finished message with its Message-ID, `open_key` = the
   digest) and one `digest_entry` per incident version. Nothing has been sent yet.
3. `attempt` claims the row (status "sending" with a lease), sends, then in a second transaction marks it
   delivered and advances the position. A failed send puts the row back to "pending" with the error and a backoff.
4. A crash between 3's send and its record leaves the row "sending" with an expired lease. The next attempt
   resends the stored bytes, same Message-ID, and flags `maybe_sent`.

The boundary, honestly: incidents are exactly-once (an incident version belongs to one message, enforced by unique
keys), the message is at-least-once. SMTP has no idempotency key, so after a crash in that window, or a timeout
after the server already took the DATA, the same message may arrive twice; it is byte-identical with the same
Message-ID, which mail clients and archives use to drop duplicates. Never resending instead would lose digests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, case, delete, false, func, insert, or_, true, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from monitor.backoff import delivery_backoff
from monitor.config.digests import DigestsSettings
from monitor.deliver.email import envelope_address
from monitor.deliver.smtp import SmtpError, send_message, target_from_env
from monitor.errors import DeliveryError
from monitor.store.digest_models import DigestEntry, DigestOutbox, DigestState
from monitor.store.engine import session_scope
from monitor.store.types import utcnow

# An attempt holds its row this long; a row still "sending" after that was interrupted (crash, kill).
ATTEMPT_LEASE = timedelta(minutes=15)
_ENTRY_BATCH = 500

# Test seam: called after the server accepted the message and before that is recorded (a crash there is what
# the outbox must survive). None in production.
_after_send: Callable[[DigestOutbox], None] | None = None


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


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
    notifications: list[Any] = field(
        default_factory=list
    )  # monitor.deliver.notify.NotifyRun, per chat target

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
            "notifications": [n.to_json() for n in self.notifications],
        }


@dataclass(frozen=True)
class Entry:
    """One incident version a message includes (a `digest_entry` row)."""

    incident_id: int
    version: datetime  # the incident's updated_at when selected
    kind: str  # new | update
    item_count: int


def enqueue(
    session: Session,
    *,
    digest: str,
    message_id: str,
    now: datetime,
    subject: str,
    sender: str,
    recipients: list[str],
    raw: str,
    page_html: str,
    page_path: str | None,
    incidents: int,
    updates: int,
    entries: Iterable[Entry],
) -> int:
    """Write the undelivered message and what it includes, in the caller's transaction; returns its outbox id.
    Raises IntegrityError when the digest already has an undelivered message (another builder won)."""
    row = DigestOutbox(
        digest=digest,
        open_key=digest,
        message_id=message_id,
        status="pending",
        created_at=now,
        position=now,
        subject=subject,
        sender=sender,
        recipients=recipients,
        raw=raw,
        page_html=page_html,
        page_path=page_path,
        incidents=incidents,
        updates=updates,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    # Plain INSERTs in batches: a message of thousands of incidents keeps no ORM object per entry.
    batch: list[dict[str, Any]] = []
    for e in entries:
        batch.append(
            {
                "outbox_id": row.id,
                "digest": digest,
                "incident_id": e.incident_id,
                "version": e.version,
                "kind": e.kind,
                "item_count": e.item_count,
            }
        )
        if len(batch) >= _ENTRY_BATCH:
            session.execute(insert(DigestEntry), batch)
            batch = []
    if batch:
        session.execute(insert(DigestEntry), batch)
    return row.id


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


def run_of(row: DigestOutbox, status: str | None = None) -> DigestRun:
    """The DigestRun describing an outbox row as it stands."""
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


def attempt(
    engine: Engine, outbox_id: int, settings: DigestsSettings, now: datetime, *, force: bool
) -> DigestRun:
    """One delivery attempt of an outbox row: "busy" when another attempt holds it, the row's state when it is
    delivered or not due (and not `force`d), else the outcome of sending it now."""
    row = _claim(engine, outbox_id, now, force=force)
    if row is None:
        with Session(engine, expire_on_commit=False) as s:
            current = s.get(DigestOutbox, outbox_id)
        if current is None:
            raise DeliveryError(f"outbox row {outbox_id} vanished")
        if current.status == "sending":
            return run_of(current, "busy")
        return run_of(current)
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
        current.next_attempt_at = now + delivery_backoff(current.attempts)
        s.add(current)
    return run_of(current, "pending")


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
    return run_of(current, "delivered")


def touch(engine: Engine, name: str, now: datetime) -> None:
    """Record that digest `name` ran at `now` (the scheduler serves each slot once by it)."""
    for _ in range(2):  # a concurrent first run may insert the row between our read and write
        try:
            with session_scope(engine) as s:
                state = s.get(DigestState, name) or DigestState(name=name)
                state.last_run_at = now
                s.add(state)
            return
        except IntegrityError:
            continue


def open_row_id(engine: Engine, name: str) -> int | None:
    """The outbox id of digest `name`'s undelivered message, if it has one."""
    with Session(engine) as s:
        return s.exec(select(DigestOutbox.id).where(col(DigestOutbox.open_key) == name)).first()


def retry_pending(
    engine: Engine, settings: DigestsSettings, *, now: datetime | None = None
) -> list[DigestRun]:
    """Attempt every undelivered message whose backoff has expired (or whose attempt was interrupted).
    `settings` (digests.yaml's file-level ones) only sets the SMTP timeout: the messages are already built."""
    now = now or utcnow()
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
    return [attempt(engine, i, settings, now, force=False) for i in ids if i is not None]


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
            return run_of(row, "busy")
        s.exec(delete(DigestEntry).where(col(DigestEntry.outbox_id) == row.id))
    return run_of(row, "discarded")


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
