"""The one Jinja2 environment for pages and emails.

Templates are looked up first in the user's folder (`settings`/`--templates`), then in the packaged `templates/`,
so a user overrides one template by putting a file with the same name (e.g. `site/incident.html`) in their folder
and keeps the rest. Autoescaping is on for every template except plain text (`.txt`), where HTML entities would
show up literally in a mail body. Feed HTML reaches a page only through the `safe_html` filter, which sanitises it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator
from markupsafe import Markup, escape

try:
    from markupsafe._speedups import _escape_inner
except ImportError:  # markupsafe without its C extension
    from markupsafe._native import _escape_inner

from monitor.config.load import packaged_dir
from monitor.sanitize import SanitizedHtml, safe_url, sanitize_html

__all__ = [
    "CATEGORY_TITLES",
    "COUNTRY_NAMES",
    "category_page",
    "environment",
    "incident_page",
    "month_page",
    "safe_url",
    "slug",
    "truncate_text",
]

# Fallbacks when no classifier is loaded (taxonomy ids are a public contract, see reference/TAXONOMY.md);
# the configured category titles win when they are passed in.
CATEGORY_TITLES: dict[str, str] = {
    "protest_crackdown": "Protest crackdown",
    "prosecution": "Prosecution",
    "defamation": "Defamation suits",
    "media_restriction": "Media restriction",
    "ngo_restriction": "NGO restriction",
    "ngo_liquidation": "NGO liquidation",
    "union_pressure": "Union pressure",
    "party_barriers": "Barriers to parties",
    "religious_restriction": "Religious restriction",
    "funding_restriction": "Funding restriction",
    "intimidation": "Intimidation",
    "digital_repression": "Digital repression",
    "restrictive_law": "Restrictive law",
}
COUNTRY_NAMES: dict[str, str] = {
    "KZ": "Kazakhstan",
    "KG": "Kyrgyzstan",
    "UZ": "Uzbekistan",
    "TJ": "Tajikistan",
    "TM": "Turkmenistan",
    "RU": "Russia",
    "BY": "Belarus",
    "AZ": "Azerbaijan",
    "UA": "Ukraine",
    "GE": "Georgia",
    "AM": "Armenia",
    "MN": "Mongolia",
    "CN": "China",
}
_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")


def slug(value: object) -> str:
    """A safe file name for a category or other config-defined id, the same in links and on disk."""
    return _SLUG_BAD.sub("-", str(value).lower()).strip("-") or "x"


def incident_page(incident_id: int) -> str:
    """Where `site build` writes an incident's page, relative to the site's root (emails link to it too)."""
    return f"incident/{incident_id}.html"


def category_page(category_id: str) -> str:
    """The site's list of every incident of one category."""
    return f"category/{slug(category_id)}.html"


def month_page(month: str) -> str:
    """The site's list of the incidents first reported in `month` (YYYY-MM, UTC)."""
    return f"archive/{month}.html"


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The filters below run several times for every report and list row of a site build: isoformat() gives the same
# text as strftime() at a fraction of its cost, for years of four digits (strftime writes year 999 as "999").


def _date(value: datetime | None) -> str:
    if not value:
        return ""
    v = _as_utc(value)
    return v.date().isoformat() if v.year >= 1000 else v.strftime("%Y-%m-%d")


def _datetime(value: datetime | None) -> str:
    if not value:
        return ""
    v = _as_utc(value)
    return v.isoformat(" ", "minutes")[:16] + " UTC" if v.year >= 1000 else v.strftime("%Y-%m-%d %H:%M UTC")


def _isodate(value: datetime | None) -> str:
    """RFC 3339 in UTC, as Atom and <time datetime> want it."""
    if not value:
        return ""
    v = _as_utc(value)
    return v.isoformat("T", "seconds")[:19] + "Z" if v.year >= 1000 else v.strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe_html(value: str | None, base_url: str | None = None) -> Markup:
    # Sanitised again at display time, even though ingestion stored sanitised HTML: the stored value may come
    # from an older sanitiser or a hand-edited database, and this is the last point before a browser sees it.
    # Only SanitizedHtml is not cleaned again: the site build checked it is this sanitiser's output for the
    # report's own link (monitor.incidents.display), so cleaning it would return the same text.
    if isinstance(value, SanitizedHtml):
        return Markup(value)
    return Markup(sanitize_html(value or "", base_url))


def _country_name(code: str | None, names: Mapping[str, str] | None = None) -> str:
    if not code:
        return ""
    return (names or COUNTRY_NAMES).get(code, code)


def truncate_text(value: str | None, length: int = 300) -> str:
    value = value or ""
    if len(value) > length:
        # When the first length+1 characters hold no whitespace but single spaces between words, collapsing
        # spaces leaves them as they are (every whitespace character but the space is unprintable), so they are
        # the start of the collapsed text: cut them without collapsing anything.
        head = value[: length + 1]
        if head.isprintable() and "  " not in head and head[0] != " " and head[-1] != " ":
            cut = head[:length].rsplit(" ", 1)[0]
            return (cut or head[:length]) + "…"
    # Only the start can show: spaces are collapsed in a head of the text, twice `length` long and grown only
    # when its spaces collapse to `length` characters or fewer. Collapsing a prefix gives a prefix of the
    # collapsed whole, so its first `length` characters are those of the whole text.
    size = 2 * length
    while size < len(value):
        head = " ".join(value[:size].split())
        if len(head) > length:
            cut = head[:length].rsplit(" ", 1)[0]
            return (cut or head[:length]) + "…"
        size *= 4
    text = " ".join(value.split())
    if len(text) <= length:
        return text
    cut = text[:length].rsplit(" ", 1)[0]
    return (cut or text[:length]) + "…"


def _not_txt(name: str | None) -> bool:
    # Strings rendered with env.from_string() have no name: escape them too (the safe default).
    return not (name or "").endswith((".txt", ".text"))


_new_str = str.__new__


def _escape_output(value: object) -> Markup:
    """markupsafe's `escape`, for what a template prints, with the commonest cases first: a str escaped and wrapped
    without Markup's constructor (which asks the text for `__html__` first), an int as its digits, Markup as it is.
    Every `{{ ... }}` of a page calls it; the result is the same string `escape` returns."""
    t = type(value)
    if t is str:
        return _new_str(Markup, _escape_inner(value))  # type: ignore[arg-type]
    if t is Markup:
        return value  # type: ignore[return-value]
    if t is int:
        return _new_str(Markup, int.__repr__(value))
    return escape(value)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, printing autoescaped values through `_escape_output` (an attribute of the
    environment, as every compiled template has the environment at hand) instead of `escape`."""

    def _output_child_pre(self, node: Any, frame: Any, finalize: Any) -> None:
        if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape:
            super()._output_child_pre(node, frame, finalize)
            return
        self.write("environment.escape_output(")
        if finalize.src is not None:
            self.write(finalize.src)


class _Environment(jinja2.Environment):
    # The hook is a Jinja internal (3.1): where a Jinja release lacks it, templates compile as Jinja's own.
    code_generator_class = _CodeGenerator if hasattr(CodeGenerator, "_output_child_pre") else CodeGenerator
    escape_output = staticmethod(_escape_output)


def environment(user_templates: Path | None = None) -> jinja2.Environment:
    """Jinja2 environment: `user_templates` (if given) overrides the packaged templates by name."""
    loaders: list[jinja2.BaseLoader] = []
    if user_templates is not None:
        loaders.append(jinja2.FileSystemLoader(str(user_templates)))
    loaders.append(jinja2.FileSystemLoader(str(packaged_dir("templates"))))
    env = _Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=_not_txt,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.Undefined,
    )
    env.filters.update(
        date=_date,
        datetime=_datetime,
        isodate=_isodate,
        safe_html=_safe_html,
        safe_url=safe_url,
        country_name=_country_name,
        truncate_text=truncate_text,
        slug=slug,
    )
    env.globals.update(category_titles=CATEGORY_TITLES, country_names=COUNTRY_NAMES)
    return env
