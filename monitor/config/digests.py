"""config/digests.yaml: what each digest selects, when it runs and where it goes.

    load_digests(path, categories) -> Digests   ConfigErrors naming file, line and field
    Digests.find(name) -> DigestConfig          ConfigError naming the file when there is no such digest
    next_fire_time(digest, after) -> datetime | None   None for "immediate" (alerts run after each poll)

Loaded once with every other file into monitor.config.Config; delivery code reads it from there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from apscheduler.triggers.cron import CronTrigger
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.config.durations import Duration
from monitor.config.validate import validate
from monitor.config.yamlfile import load_yaml
from monitor.errors import ConfigError, ConfigErrors

FILE_NAME = "digests.yaml"
IMMEDIATE = "immediate"
DEFAULT_SUBJECT = "Civic space: {{ count }} new incidents, {{ date }}"
DEFAULT_SENDER = "Civic-space monitor <monitor@example.org>"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# RFC 5321 dot-atom local part and a host name with at least one dot; stricter than the RFC on purpose:
# quoted local parts and address literals are legal but almost always typos in a config file.
_LOCAL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_address(value: str) -> str:
    """`a@b.org` or `Name <a@b.org>`; returns it stripped or raises ValueError saying what is wrong."""
    value = value.strip()
    if any(c in value for c in "\r\n"):
        raise ValueError("an email address cannot contain a line break")
    _display, addr = parseaddr(value)
    if not addr or "@" not in addr:
        raise ValueError(f"not an email address: {value!r}")
    local, _, domain = addr.rpartition("@")
    if not _LOCAL_RE.match(local) or len(local) > 64:
        raise ValueError(f"invalid email address {value!r}: bad part before '@'")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"invalid email address {value!r}: bad domain") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels) or len(ascii_domain) > 253:
        raise ValueError(f"invalid email address {value!r}: bad domain {domain!r}")
    return value


def address_of(value: str) -> str:
    """The bare address of `Name <a@b.org>`, as the SMTP envelope wants it."""
    return parseaddr(value)[1]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DigestFilters(_Strict):
    categories: list[str] = Field(default_factory=list)  # empty: all categories
    countries: list[str] = Field(default_factory=list)  # ISO 3166-1 alpha-2; empty: all countries
    min_severity: Literal["high", "medium", "low"] = "medium"
    feed_tags: list[str] = Field(default_factory=list)  # empty: every feed; else a source's feed carries one

    @field_validator("countries")
    @classmethod
    def _countries(cls, v: list[str]) -> list[str]:
        for code in v:
            if not re.match(r"^[A-Z]{2}$", code):
                raise ValueError(f"country must be an ISO 3166-1 alpha-2 code like KZ, not {code!r}")
        return v


class EmailDelivery(_Strict):
    recipients: list[str] = Field(min_length=1)
    subject: str = DEFAULT_SUBJECT
    sender: str | None = None  # default: the file's `sender`

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
        return [check_address(a) for a in v]

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str | None) -> str | None:
        return None if v is None else check_address(v)

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        try:
            jinja2.Environment().parse(v)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"subject template: {exc.message}") from None
        return v


class PageDelivery(_Strict):
    output: str | None = None  # folder for NAME.html and dated copies; relative to the config folder


ENV_REF = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def _apprise_schemes() -> frozenset[str]:
    import apprise

    schemes: set[str] = set()
    for plugin in apprise.Apprise().details(show_disabled=False).get("schemas", []):
        for key in ("protocols", "secure_protocols"):
            found = plugin.get("details", {}).get(key) or plugin.get(key) or []
            schemes.update(str(p).lower() for p in ([found] if isinstance(found, str) else found))
    return frozenset(schemes)


def check_target(url: str) -> str:
    """An Apprise URL as configured: its scheme must be one Apprise knows; without `{env:NAME}` placeholders it
    must also parse whole (with them, the secrets are only there at send time)."""
    import apprise

    url = url.strip()
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ValueError(f"not an Apprise URL (scheme://...): {redact_target(url)!r}")
    if scheme.lower() not in _apprise_schemes():
        raise ValueError(f"unknown notification scheme {scheme!r} in {redact_target(url)!r}")
    if not ENV_REF.search(url) and apprise.Apprise.instantiate(url) is None:
        raise ValueError(f"Apprise cannot use {redact_target(url)!r} (malformed for its scheme)")
    return url


def redact_target(url: str) -> str:
    """What may be shown of a target: Apprise's own privacy rendering when it parses, else the scheme and host."""
    try:
        import apprise

        obj = apprise.Apprise.instantiate(url) if not ENV_REF.search(url) else None
        if obj is not None:
            return str(obj.url(privacy=True)).split("?", 1)[0]
    except Exception:  # a target that cannot be parsed is shown by its scheme and host only
        pass
    return scheme_and_host(url) or "(unparsable target)"


def scheme_and_host(url: str) -> str | None:
    """`scheme://host/...`, all a target's URL may show when the rest of it may hold a token; None if not a URL."""
    m = re.match(r"^([A-Za-z0-9+.-]+)://(?:[^@/]*@)?([^/?#:]*)", url)
    return f"{m.group(1)}://{m.group(2)}/..." if m else None


class NotifyDelivery(_Strict):
    """Chat and push targets (Apprise URLs). Secrets stay out of the file: write `{env:NAME}` where a token goes,
    or list whole URLs in MONITOR_NOTIFY_URLS_<DIGEST> (separated by spaces or commas)."""

    # Each URL checked on its own, so every bad one is reported with its own line.
    urls: list[Annotated[str, AfterValidator(check_target)]] = Field(default_factory=list)
    timeout: Duration = 20  # seconds for one send to one target


class DigestConfig(_Strict):
    name: str
    title: str | None = None  # heading of the email and page; default from the name
    schedule: str  # 5-field cron ("0 8 * * *") in `timezone`, or "immediate"
    timezone: str = "UTC"
    filters: DigestFilters = Field(default_factory=DigestFilters)
    email: EmailDelivery | None = None
    page: PageDelivery | None = None
    notify: NotifyDelivery | None = None
    send_empty: bool = False
    # How far back the very first digest of a new subscription looks; afterwards the position decides.
    first_lookback: Duration = 86400
    # Incidents shown in full in one message (most severe, most reported first); the rest are counted by
    # category with links to the site. Every one of them counts as delivered.
    max_incidents: int = Field(default=150, ge=1)
    site_url: str | None = None  # default: the file's `site_url`

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("digest name must be 1-64 characters: lower-case letters, digits, '-', '_'")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        v = " ".join(v.split())
        if v == IMMEDIATE:
            return v
        try:
            CronTrigger.from_crontab(v, timezone=UTC)
        except ValueError as exc:
            raise ValueError(
                f'bad cron expression {v!r} (use 5 fields like "0 8 * * *" or "immediate"): {exc}'
            ) from None
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        zone_of(v)
        return v

    @field_validator("site_url")
    @classmethod
    def _site_url(cls, v: str | None) -> str | None:
        return None if v is None else _check_site_url(v)

    @model_validator(mode="after")
    def _somewhere(self) -> DigestConfig:
        if self.email is None and (self.page is None or self.page.output is None) and self.notify is None:
            raise ValueError(
                "a digest needs `email` (recipients), `page.output` or `notify` (urls), or it goes nowhere"
            )
        return self

    @property
    def immediate(self) -> bool:
        return self.schedule == IMMEDIATE

    @property
    def zone(self) -> ZoneInfo:
        return zone_of(self.timezone)

    @property
    def heading(self) -> str:
        return self.title or f"Civic-space digest: {self.name}"


def _check_site_url(v: str) -> str:
    v = v.strip()
    if not re.match(r"^https?://[^\s/?#]+", v, re.I):
        raise ValueError(f"site_url must be an http(s) URL, not {v!r}")
    return v.rstrip("/") + "/"


class DigestsFile(_Strict):
    site_url: str | None = None  # where `site build` output is served; emails link to it
    sender: str = DEFAULT_SENDER
    smtp_timeout: Duration = 30  # seconds per SMTP network operation
    digests: list[DigestConfig] = Field(default_factory=list)

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        return check_address(v)

    @field_validator("site_url")
    @classmethod
    def _site_url(cls, v: str | None) -> str | None:
        return None if v is None else _check_site_url(v)


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Asia/Almaty or UTC)") from None


@dataclass(frozen=True)
class DigestsSettings:
    """The file-level settings, for delivery code that needs them without a particular digest."""

    site_url: str | None = None
    sender: str = DEFAULT_SENDER
    smtp_timeout: float = 30.0


@dataclass(frozen=True)
class Digests:
    """Everything in digests.yaml: the file-level settings and each digest, defaults filled in."""

    path: Path
    settings: DigestsSettings = DigestsSettings()
    items: tuple[DigestConfig, ...] = ()

    def __iter__(self) -> Iterator[DigestConfig]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def find(self, name: str) -> DigestConfig:
        for d in self.items:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.items) or "none"
        raise ConfigError(f"no digest named {name!r} (configured: {known})", file=self.path)


def load_digests(path: Path, categories: Iterable[str] | None) -> Digests:
    """digests.yaml at `path` (no digests when absent); a filter naming a category not in `categories` is an
    error (None: not checked, when the rules themselves failed to load). Page folders are made absolute
    relative to the config folder."""
    path = Path(path)
    if not path.exists():
        return Digests(path)
    config_dir = path.parent
    doc = load_yaml(path)
    parsed = validate(doc, DigestsFile)
    known = set(categories) if categories is not None else None
    errors: list[ConfigError] = []
    seen: dict[str, int] = {}
    out: list[DigestConfig] = []
    for i, d in enumerate(parsed.digests):
        if d.name in seen:
            errors.append(doc.error(f"digest name {d.name!r} is used twice", ("digests", i, "name")))
        seen[d.name] = i
        for j, cat in enumerate(d.filters.categories):
            if known is not None and cat not in known:
                errors.append(
                    doc.error(
                        f"unknown category {cat!r} (known: {', '.join(sorted(known or ()))})",
                        ("digests", i, "filters", "categories", j),
                    )
                )
        update: dict[str, object] = {}
        if d.site_url is None and parsed.site_url:
            update["site_url"] = parsed.site_url
        if d.email is not None and d.email.sender is None:
            update["email"] = d.email.model_copy(update={"sender": parsed.sender})
        if d.page is not None and d.page.output is not None:
            # Relative to the config folder: the service's working directory is whatever systemd chose.
            page_dir = (config_dir / d.page.output).expanduser()
            update["page"] = d.page.model_copy(update={"output": str(page_dir)})
        out.append(d.model_copy(update=update) if update else d)
    if errors:
        raise ConfigErrors(errors)
    settings = DigestsSettings(parsed.site_url, parsed.sender, float(parsed.smtp_timeout))
    return Digests(path, settings, tuple(out))


def next_fire_time(d: DigestConfig, after: datetime) -> datetime | None:
    """The first scheduled run strictly after `after` (aware), in UTC; None for immediate digests."""
    if d.immediate:
        return None
    trigger = CronTrigger.from_crontab(d.schedule, timezone=d.zone)
    # get_next_fire_time returns a time >= now; a whole second later makes it "strictly after" (cron has
    # one-second resolution).
    start = after.replace(microsecond=0) + timedelta(seconds=1)
    fire = trigger.get_next_fire_time(None, start)
    return None if fire is None else fire.astimezone(UTC)
