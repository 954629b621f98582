"""CSRF protection: a random token per session, in every form, checked on every POST.

The session cookie is signed (it cannot be forged) but a browser sends it along with any cross-site form post;
the token is what another site cannot read and so cannot send. It lives in the session, is compared in constant
time, and is renewed at login so a token seen before login is worthless after.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from typing import Any

FIELD = "csrf"
HEADER = "x-csrf-token"


def token(session: dict[str, Any]) -> str:
    value = session.get(FIELD)
    if not isinstance(value, str) or len(value) < 32:
        value = secrets.token_urlsafe(32)
        session[FIELD] = value
    return value


def renew(session: dict[str, Any]) -> str:
    session[FIELD] = secrets.token_urlsafe(32)
    return str(session[FIELD])


def valid(session: Mapping[str, Any], form: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    expected = session.get(FIELD)
    given = form.get(FIELD) or headers.get(HEADER)
    if not isinstance(expected, str) or not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
