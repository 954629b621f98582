"""PostgreSQL advisory locks: the stable key of a name, and the lock held until a transaction ends."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlmodel import Session


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name (PostgreSQL keys are bigint)."""
    digest = hashlib.blake2b(f"civic-space-monitor:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def transaction_lock(session: Session, name: str) -> None:
    """Hold `name` until the session's transaction ends (PostgreSQL); SQLite already has a single writer."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
