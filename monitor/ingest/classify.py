"""The classify stage: run the rules on entries (or stored items) and turn the result into Item column values.

Runs in the pipeline between deciding and storing, on the entries whose text will be stored; the store only
writes the values this returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from monitor.store.items import EntryLike
from monitor.store.models import Item


class ClassifierLike(Protocol):
    version: str

    def classify(
        self,
        title: str,
        text: str,
        language: str | None = None,
        *,
        languages: tuple[str, ...] | list[str] | None = None,
    ) -> Any: ...


def rule_languages(title: str, text: str, language: str | None) -> tuple[str, ...]:
    """The languages whose rules classify a stored item: the language decision taken again on its text (as the
    poll took it, with the stored language as the declared one), so a mixed item runs both languages' rules."""
    from monitor.ingest.language import decide_language

    return decide_language(title, text, language).rules


def classification_values(
    classifier: ClassifierLike,
    title: str,
    text: str,
    language: str | None,
    languages: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The Item columns a classification fills, as plain values."""
    data = classifier.classify(title, text, language, languages=languages or None).to_json()
    # Each gazetteer entry once, in text order, as places.yaml spells it (grouping makes it spelling-blind), with
    # "title" as its field when the title names it: {"country": "KZ", "entry": "Almaty", "field": "title"}.
    places: dict[tuple[str, str], dict[str, str]] = {}
    for p in data.get("places", []):
        country, entry = str(p.get("country") or ""), str(p.get("entry") or p.get("name") or "")
        if country and entry:
            rec = places.setdefault((country, entry), {"country": country, "entry": entry, "field": "text"})
            if p.get("field") == "title":
                rec["field"] = "title"
    return {
        "categories": list(data.get("categories", [])),
        "countries": list(data.get("countries", [])),
        "matches": dict(data.get("matches", {})),
        "places": list(places.values()),
        "rules_version": classifier.version,
    }


def classify_entries(
    classifier: ClassifierLike | None, entries: Iterable[EntryLike]
) -> Mapping[str, Mapping[str, Any]]:
    """Item column values by entry key; empty without a classifier (items are then stored unclassified)."""
    if classifier is None:
        return {}
    out = {}
    for e in entries:
        # New entries come decided from the enrichment stage (ingest.article), with the languages whose rules
        # run. An undecided one (an edited entry, which enrichment skips, or another enricher) runs every
        # language's rules: its `language` is only what the feed declared, often wrong in this region.
        languages = getattr(e, "rule_languages", None) or None
        out[e.key] = classification_values(
            classifier, e.title, e.text, e.language if languages else None, languages
        )
    return out


def apply_classification(item: Item, classifier: ClassifierLike | None) -> None:
    """Re-classify a stored item in place (reclassify, tests)."""
    if classifier is None:
        return
    languages = rule_languages(item.title, item.text, item.language)
    for name, value in classification_values(
        classifier, item.title, item.text, item.language, languages
    ).items():
        setattr(item, name, value)
