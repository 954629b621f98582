"""A report's fingerprint: what grouping compares, computed once from the item and stored in its incident.

Fingerprint.of(item, country_level)   from a stored item (texts, places, classifier hits)
Fingerprint.to_json() / from_json()   the compact form kept in `Incident.signature["members"]`
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.incidents.features import CountryLevel, Features, extract, hit_sets, place_keys
from monitor.store.models import Item

LanguageTag = tuple[str | None, str]  # (language from the feed or None, script)


def utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def primary_language(tag: str | None) -> str | None:
    """Primary language subtag: "en-GB" -> "en"."""
    lang = (tag or "").strip().lower().replace("_", "-").split("-")[0]
    return lang or None


def script_of(text: str) -> str:
    """The alphabet most letters of the text are in, "cyrl" or "latn": tells languages apart when feeds do not."""
    cyr = lat = 0
    for ch in text[:400]:
        if ch.isalpha():
            if "\u0400" <= ch <= "\u04ff":
                cyr += 1
            elif ch.isascii():
                lat += 1
    return "cyrl" if cyr > lat else "latn"


def languages_differ(a: LanguageTag, b: LanguageTag) -> bool:
    """Whether two reports are in different languages: by the feeds' word when both say, else by their alphabets."""
    if a[0] and b[0]:
        return a[0] != b[0]
    return a[1] != b[1]


@dataclass(frozen=True)
class Fingerprint:
    item_id: int
    published: datetime
    categories: frozenset[str]
    countries: frozenset[str]
    features: Features
    language: str | None = None
    script: str = "latn"
    places: frozenset[str] = frozenset()  # "KZ:majil": specific places, spelling-blind (features.place_keys)
    title_places: frozenset[str] = frozenset()  # those of them the headline names
    sets: frozenset[str] = frozenset()  # "protest_crackdown/detain": term sets of the classifier's hits
    # place key -> the gazetteer entry as this report's language spells it, to explain a match (not stored)
    place_names: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        f = self.features
        out: dict[str, Any] = {
            "t": utc(self.published).isoformat(),
            "c": sorted(self.categories),
            "k": sorted(self.countries),
            "s": sorted(f.stems),
            "n": sorted(f.names),
            "p": sorted(f.persons),
            "w": self.script,
        }
        if self.language:
            out["l"] = self.language
        if self.places:
            out["g"] = sorted(self.places)
        if self.title_places:
            out["gt"] = sorted(self.title_places)
        if self.sets:
            out["z"] = sorted(self.sets)
        return out

    @classmethod
    def from_json(cls, item_id: int, d: Mapping[str, Any]) -> Fingerprint:
        return cls(
            item_id=item_id,
            published=utc(datetime.fromisoformat(d["t"])),
            categories=frozenset(d.get("c", ())),
            countries=frozenset(d.get("k", ())),
            features=Features(
                stems=frozenset(d.get("s", ())),
                names=frozenset(d.get("n", ())),
                persons=frozenset(d.get("p", ())),
            ),
            language=d.get("l"),
            script=d.get("w", "latn"),
            places=frozenset(d.get("g", ())),
            title_places=frozenset(d.get("gt", ())),
            sets=frozenset(d.get("z", ())),
        )

    @classmethod
    def of(cls, item: Item, country_level: CountryLevel) -> Fingerprint:
        assert item.id is not None
        places, title_places = place_keys(item.places, country_level)
        return cls(
            item_id=item.id,
            published=utc(item.published),
            categories=frozenset(item.categories),
            countries=frozenset(item.countries),
            features=extract(item.title or "", item.text or ""),
            language=primary_language(item.language),
            script=script_of(f"{item.title or ''} {item.text or ''}"),
            places=frozenset(places),
            title_places=title_places,
            sets=hit_sets(item.matches),
            place_names=places,
        )

    @property
    def tag(self) -> LanguageTag:
        return self.language, self.script

    def other_language(self, other: Fingerprint) -> bool:
        """Whether the two are written in different languages (by the feeds' word, else by their alphabets)."""
        return languages_differ(self.tag, other.tag)
