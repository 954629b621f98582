"""Tables of the analyst workspace: accounts, verdicts on classifications, notes, and the audit log.

Verdicts are facts in their own right: `item.categories` holds the rules' categories with the verdicts in force
applied (monitor.incidents.settle_verdicts, and `reclassify` after the rules run), but this table is the record
that decides, so the analyst's judgement outlives every re-run of the rules. Every verdict is a new row (nothing is updated or
deleted), so two analysts disagreeing at the same moment are both on record; the later row wins (see
monitor.store.verdicts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from monitor.store.types import UTCDateTime, utcnow

VERDICT_KINDS = ("confirm", "reject", "add")


def _now() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class User(SQLModel, table=True):
    """An analyst who may write (and, on a non-loopback bind, read). Created by `monitor users add NAME`."""

    __tablename__ = "workspace_user"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    # argon2id, PHC string format ($argon2id$v=19$m=...): parameters travel with the hash.
    password_hash: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _now()
    last_login_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class Verdict(SQLModel, table=True):
    """One analyst's judgement of one category on one item: confirm, reject, or add (a category the rules
    missed). The latest row per (item, category) is the one that counts."""

    __tablename__ = "verdict"
    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id")
    category: str = Field(max_length=64)
    verdict: str = Field(max_length=8)  # confirm | reject | add
    author: str = Field(max_length=64)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = _now()

    __table_args__ = (
        Index("ix_verdict_item_category", "item_id", "category"),
        Index("ix_verdict_created_at", "created_at"),
    )


class ItemNote(SQLModel, table=True):
    """A free-text note an analyst left on an item."""

    __tablename__ = "item_note"
    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    author: str = Field(max_length=64)
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _now()


class AuditEntry(SQLModel, table=True):
    """Who did what, when: every write made through the workspace or the users command."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True))
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)  # verdict | note | merge | move | user_add | user_remove
    target: str = Field(max_length=128)  # item:12, incident:3, user:alice
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
