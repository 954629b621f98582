"""What a classification says and why: the result objects, snippets, and their JSON form."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from monitor.severity import rank

SNIPPET_CONTEXT = 60  # characters of context on each side of a hit
_WS_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class CategoryInfo:
    id: str
    title: str
    severity: str
    description: str

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "description": self.description,
        }


@dataclass(frozen=True)
class HitInfo:
    """One matched term: `term` as written in the rule, `form` as found in the item."""

    term: str
    field: str  # "title" | "text"
    start: int  # character offsets in that field of the original item
    end: int
    form: str
    snippet: str
    set: str | None = None
    language: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "term": self.term,
            "field": self.field,
            "start": self.start,
            "end": self.end,
            "snippet": self.snippet,
            "form": self.form,
            "language": self.language,
        }
        if self.set:
            out["set"] = self.set
        return out


@dataclass
class CategoryMatch:
    category: str
    rule: str  # "ru: <rule text>" of the rule that fired, or the weights summary
    score: float
    hits: list[HitInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "score": self.score, "hits": [h.to_json() for h in self.hits]}


@dataclass(frozen=True)
class PlaceHit:
    country: str
    name: str
    field: str
    start: int
    end: int
    entry: str = ""  # the gazetteer name that matched (name is the text as found)

    def to_json(self) -> dict[str, Any]:
        return {
            "country": self.country,
            "name": self.name,
            "field": self.field,
            "start": self.start,
            "end": self.end,
            "entry": self.entry,
        }


@dataclass
class Classification:
    categories: list[str]
    countries: list[str]
    matches: dict[str, CategoryMatch]
    places: list[PlaceHit] = field(default_factory=list)
    # the languages whose rules ran (a mixed item has two); empty when no language was known and all ran
    languages: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = {
            "categories": list(self.categories),
            "countries": list(self.countries),
            "matches": {cat: m.to_json() for cat, m in self.matches.items()},
            "places": [p.to_json() for p in self.places],
        }
        if self.languages:
            out["languages"] = list(self.languages)
        return out


@dataclass(frozen=True)
class ExampleResult:
    category: str
    title: str
    text: str
    expected: bool  # True: must match; False: must not
    got: bool
    file: str | None
    line: int | None
    got_categories: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.expected == self.got

    def describe(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file else ""
        want = "should match" if self.expected else "should not match"
        shown = (self.title + " | " if self.title else "") + self.text
        if len(shown) > 120:
            shown = shown[:117] + "..."
        return (
            f"{where}category {self.category}: example {want} but {'did' if self.got else 'did not'}: {shown}"
        )


def snippet(text: str, start: int, end: int, context: int = SNIPPET_CONTEXT) -> str:
    """The hit with about `context` characters either side, cut at spaces, whitespace collapsed."""
    lo = max(0, start - context)
    hi = min(len(text), end + context)
    if lo > 0:
        sp = text.find(" ", lo, start)
        lo = sp + 1 if sp != -1 else lo
    if hi < len(text):
        sp = text.rfind(" ", end, hi)
        hi = sp if sp != -1 else hi
    core = _WS_RE.sub(" ", text[lo:hi]).strip()
    return ("…" if lo > 0 else "") + core + ("…" if hi < len(text) else "")


def sort_categories(ids: list[str], infos: dict[str, CategoryInfo]) -> list[str]:
    return sorted(ids, key=lambda c: (rank(infos[c].severity), c))
