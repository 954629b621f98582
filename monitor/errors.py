"""Every error the monitor raises on purpose.

    MonitorError
    ├── ConfigError        a config file is invalid (file, line, field); many are gathered in ConfigErrors
    │   └── ConfigErrors   several ConfigError at once, so `monitor check` reports them all
    ├── RuleError          a rule does not compile (file, line, category, token)
    ├── FetchError         a feed could not be fetched (url, kind: dns, connect, timeout, tls, http_4xx, ...)
    ├── ParseError         a fetched document is not a usable feed (url, kind, advertised feed links)
    ├── StoreError         the database cannot be opened or refused an operation
    ├── NotFoundError      no stored item (or incident) with that id; also a LookupError
    └── DeliveryError      a digest could not be delivered (digest, channel)

Each carries the place it concerns so the message a user reads says what was wrong and where. Catch MonitorError
for all of them. A feed that fails during `Monitor.poll()` is reported in the result, not raised, so one broken
feed never stops a cycle; `DigestResult.raise_for_status()` turns an undelivered digest into a DeliveryError.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


class MonitorError(Exception):
    """Base of every error raised on purpose by the monitor."""


class ConfigError(MonitorError):
    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(self.describe())

    def describe(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.message}"

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors: list[ConfigError] = list(errors)
        super().__init__("\n".join(e.describe() for e in self.errors) or "invalid configuration")

    def describe(self) -> str:
        return "\n".join(e.describe() for e in getattr(self, "errors", [])) or self.message


class RuleError(ConfigError):
    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        category: str | None = None,
        token: str | None = None,
    ) -> None:
        self.category = category
        self.token = token
        field = f"category {category}" if category else None
        if token:
            message = f"{message} (at {token!r})"
        super().__init__(message, file=file, line=line, field=field)


class FetchError(MonitorError):
    def __init__(self, message: str, *, url: str, kind: str) -> None:
        self.url = url
        self.kind = kind
        super().__init__(f"{url}: {kind}: {message}")


class ParseError(MonitorError):
    def __init__(
        self, message: str, *, url: str = "", kind: str = "not_a_feed", feed_links: Sequence[str] = ()
    ) -> None:
        self.url = url
        self.kind = kind
        self.feed_links = list(feed_links)
        if self.feed_links:
            message = f"{message}; the page advertises these feeds: {', '.join(self.feed_links)}"
        super().__init__(f"{url}: {message}" if url else message)


class StoreError(MonitorError):
    pass


class NotFoundError(MonitorError, LookupError):
    pass


class DeliveryError(MonitorError):
    def __init__(self, message: str, *, digest: str = "", channel: str = "") -> None:
        self.digest = digest
        self.channel = channel
        super().__init__(f"digest {digest} ({channel}): {message}" if digest else message)
