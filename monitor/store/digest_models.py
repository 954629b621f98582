"""Tables of digest delivery: the subscription's position, the outbox, and what each digest included.

Exactly-once rests on three database facts rather than on timing:
- `digest_entry` has one row per (digest, incident, incident version) ever put in a digest, unique, so the same
  version of an incident cannot enter two digests of one subscription;
- `digest_outbox.open_key` is the digest name while a message is undelivered and NULL afterwards, unique, so a
  subscription never has two undelivered messages (a second concurrent builder fails on insert);
- the message is stored whole (`raw`) with its Message-ID before the first attempt, so every retry sends the
  same bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from monitor.store.types import UTCDateTime, utcnow


def _dt(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class DigestState(SQLModel, table=True):
    """One row per subscription (digest name): how far delivery has got."""

    __tablename__ = "digest_state"
    name: str = Field(primary_key=True, max_length=64)
    # Incidents updated at or before this instant were considered by a delivered (or empty) digest.
    position: datetime | None = _dt()
    last_run_at: datetime | None = _dt()
    last_delivered_at: datetime | None = _dt()
    last_message_id: str | None = Field(default=None, max_length=255)


class DigestOutbox(SQLModel, table=True):
    """One digest message: written before the first send attempt, marked delivered after the server took it."""

    __tablename__ = "digest_outbox"
    id: int | None = Field(default=None, primary_key=True)
    digest: str = Field(max_length=64, index=True)
    # = digest while not delivered, NULL once delivered; unique, so at most one open message per subscription.
    open_key: str | None = Field(default=None, max_length=64, unique=True)
    message_id: str = Field(max_length=255, unique=True)
    status: str = Field(default="pending", max_length=16)  # pending | sending | delivered
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    position: datetime = Field(
        sa_column=Column(UTCDateTime(), nullable=False)
    )  # the state's position once delivered
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    sender: str = Field(default="", max_length=500)
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    raw: str = Field(default="", sa_column=Column(Text, nullable=False))  # RFC 5322, ASCII (encoded parts)
    page_html: str = Field(default="", sa_column=Column(Text, nullable=False))
    page_path: str | None = Field(default=None, max_length=2048)
    incidents: int = 0  # new incidents in this digest
    updates: int = 0  # incidents delivered before, shown again as updates
    attempts: int = 0
    last_attempt_at: datetime | None = _dt()
    next_attempt_at: datetime | None = _dt(index=True)
    lease_until: datetime | None = _dt()  # an attempt in progress; past and still "sending" = interrupted
    maybe_sent: bool = False  # an attempt was interrupted after the server may have accepted the message
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    refused: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    delivered_at: datetime | None = _dt()


class DigestEntry(SQLModel, table=True):
    """One incident (at one version) included in one digest message."""

    __tablename__ = "digest_entry"
    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(foreign_key="digest_outbox.id", index=True)
    digest: str = Field(max_length=64)
    incident_id: int
    version: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))  # incident.updated_at included
    kind: str = Field(default="new", max_length=8)  # new | update
    item_count: int = 0

    __table_args__ = (
        UniqueConstraint("digest", "incident_id", "version", name="uq_digest_entry_version"),
        Index("ix_digest_entry_digest_incident", "digest", "incident_id"),
    )
