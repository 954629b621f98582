"""The notification outbox: one row per digest message and chat target, so each target gets each message once.

A row is written in the transaction that enqueues its digest message (with the message's body), so a message
either has all its notification rows or none; `status` goes pending -> sending -> delivered, and a failing target
backs off on its own row without holding back the email or any other target. The target is kept as configured
(with `{env:NAME}` placeholders, or a reference to MONITOR_NOTIFY_URLS_<DIGEST>), never with its secrets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from monitor.store.types import UTCDateTime, utcnow


def _dt(index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True, index=index))


class NotifyOutbox(SQLModel, table=True):
    __tablename__ = "notify_outbox"
    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(foreign_key="digest_outbox.id", index=True)  # the digest message it announces
    digest: str = Field(max_length=64, index=True)
    target: str = Field(sa_column=Column(Text, nullable=False))  # as configured: no secrets in it
    shown: str = Field(default="", max_length=512)  # the target as status and logs may show it
    title: str = Field(default="", sa_column=Column(Text, nullable=False))
    body: str = Field(default="", sa_column=Column(Text, nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending | sending | delivered
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    last_attempt_at: datetime | None = _dt()
    next_attempt_at: datetime | None = _dt(index=True)
    lease_until: datetime | None = _dt()
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    delivered_at: datetime | None = _dt()

    __table_args__ = (UniqueConstraint("outbox_id", "target", name="uq_notify_outbox_target"),)
