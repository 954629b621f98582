"""Accounts of the workspace: argon2id password hashes, creation and removal, and the login check.

argon2-cffi because argon2id is the current recommendation for password storage (memory-hard, so a stolen
table is costly to crack on GPUs), the library is the reference implementation's binding, and its PHC strings
carry their own parameters, so raising the cost later rehashes each account at its next login.

The login check costs the same whether or not the name exists: an unknown name is verified against a dummy
hash, so neither the answer nor its time tells which names have accounts.
"""

from __future__ import annotations

import re
import secrets
import threading
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from monitor.errors import MonitorError
from monitor.store.engine import write_scope
from monitor.store.types import utcnow
from monitor.store.verdicts import audit
from monitor.store.workspace_models import User

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 10
# argon2 hashes any length, but a megabyte "password" on every login attempt is a cheap way to burn our CPU.
MAX_PASSWORD = 1024

_hasher = PasswordHasher()  # argon2id, RFC 9106's second recommended profile (t=3, m=64 MiB, p=4)
# At most two hashes at once: each takes 64 MiB, and a burst of login attempts must not take the service down.
_slots = threading.BoundedSemaphore(2)


class AccountError(MonitorError):
    """A name or password that cannot be used, or an account that does not exist."""


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(24))


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME.match(name):
        raise AccountError(
            f"user name {name!r} is not usable: 1 to 64 letters, digits or . _ @ -, starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is too long: at most {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    with _slots:
        return _hasher.hash(password)


def create_user(engine: Engine, name: str, password: str, *, by: str = "cli") -> User:
    name, password = check_name(name), check_password(password)
    hashed = hash_password(password)
    with write_scope(engine) as s:
        if s.exec(select(User).where(User.name == name)).first() is not None:
            raise AccountError(f"user {name!r} exists already")
        user = User(name=name, password_hash=hashed)
        s.add(user)
        audit(s, by, "user_add", f"user:{name}")
    return user


def remove_user(engine: Engine, name: str, *, by: str = "cli") -> None:
    """Remove the account; its sessions end at their next request, its verdicts and audit rows stay."""
    with write_scope(engine) as s:
        user = s.exec(select(User).where(User.name == name)).first()
        if user is None:
            raise AccountError(f"no user {name!r}")
        s.delete(user)
        audit(s, by, "user_remove", f"user:{name}")


def list_users(engine: Engine) -> list[User]:
    with Session(engine) as s:
        return list(s.exec(select(User).order_by(col(User.name))).all())


def user_exists(engine: Engine, name: str) -> bool:
    with Session(engine) as s:
        return s.exec(select(User.id).where(User.name == name)).first() is not None


def verify_login(engine: Engine, name: str, password: str) -> bool:
    """True when `name` has an account and `password` is its password. One argon2 verification either way."""
    stored: str | None = None
    if NAME.match(name) and len(password) <= MAX_PASSWORD:
        with Session(engine) as s:
            stored = s.exec(select(User.password_hash).where(User.name == name)).first()
    candidate = password[:MAX_PASSWORD]
    ok = False
    with _slots:
        try:
            ok = _hasher.verify(stored or _dummy_hash(), candidate) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
    if ok and stored is not None:
        rehash = _hasher.check_needs_rehash(stored)
        new_hash = hash_password(password) if rehash else None
        with write_scope(engine) as s:
            user = s.exec(select(User).where(User.name == name)).first()
            if user is not None:
                user.last_login_at = utcnow()
                if new_hash:
                    user.password_hash = new_hash
                s.add(user)
    return ok


__all__ = [
    "AccountError",
    "check_name",
    "check_password",
    "create_user",
    "hash_password",
    "list_users",
    "remove_user",
    "user_exists",
    "verify_login",
]
