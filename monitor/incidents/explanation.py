"""Why a report is in its incident, in data and in words.

first_entry / join_entry -> dict      the decision stored on the item (`Item.grouping`)
describe(entry, window_hours) -> str  that decision as a sentence
explain_incident(session, item_id)    which incident a stored item is in, and why (`monitor explain --item`)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlmodel import Session

from monitor.incidents.fingerprint import Fingerprint, utc
from monitor.incidents.scoring import CROSS_HOURS, NAMES_MIN, PLACES_MIN, TEXT_MIN, Join
from monitor.store.models import Incident, Item

# The rule in words, stored on every incident (`Incident.explanation`); each report's reason is on its item.
EXPLANATION = {
    "rule": (
        f"same category, within the window, and near-duplicate title and lead (Jaccard >= {TEXT_MIN}) "
        f"or the same person / {NAMES_MIN}+ names with agreeing countries, or in another language "
        f"within {CROSS_HOURS:g} h the same specific place with evidence >= {PLACES_MIN:g} points"
    ),
}


def first_entry(incident_id: int, categories: Iterable[str]) -> dict[str, Any]:
    return {"incident": incident_id, "reason": "first", "categories": sorted(categories)}


def join_entry(report: Fingerprint, join: Join, incident_categories: Iterable[str]) -> dict[str, Any]:
    m = join.match
    entry: dict[str, Any] = {
        "incident": join.incident_id,
        "reason": m.kind,
        "similar_to": m.member.item_id,
        "score": m.score,
        "categories": sorted(set(incident_categories) & report.categories),
        "hours_apart": round(abs((report.published - m.member.published).total_seconds()) / 3600, 1),
        "shared_terms": m.shared_terms,
        "shared_names": m.shared_names,
        "shared_persons": m.shared_persons,
    }
    if m.kind == "places":
        entry["shared_places"] = m.shared_places
        entry["shared_sets"] = m.shared_sets
        entry["evidence"] = m.evidence
        entry["points"] = sum(m.evidence.values())
        entry["languages"] = [report.language or report.script, m.member.language or m.member.script]
    return entry


def describe(entry: Mapping[str, Any], window_hours: float) -> str:
    inc = entry["incident"]
    if entry["reason"] == "first":
        return (
            f"started incident {inc}: no open incident within {window_hours:g} h shared a category and "
            "near-duplicate text, the same names, or (in another language) the same specific places"
        )
    cats = ", ".join(entry.get("categories", []))
    ago = f"{entry.get('hours_apart', 0):g} h apart"
    other = entry.get("similar_to")
    if entry["reason"] == "text":
        terms = ", ".join(entry.get("shared_terms", [])[:8])
        return (
            f"joined incident {inc}: same category ({cats}) and near-duplicate text of item {other} "
            f"(word overlap {entry.get('score')} in title and lead: {terms}...), {ago}"
        )
    if entry["reason"] == "names":
        names = ", ".join(entry.get("shared_persons") or entry.get("shared_names") or [])
        return f"joined incident {inc}: same category ({cats}) and the same names ({names}) as item {other}, {ago}"
    if entry["reason"] == "places":
        evidence = entry.get("evidence", {})
        also = [
            f"{label} ({', '.join(entry[key])})"
            for label, key in (("names", "shared_names"), ("term sets", "shared_sets"))
            if entry.get(key)
        ]
        langs = " and ".join(entry.get("languages", [])) or "two languages"
        return (
            f"joined incident {inc}: reported in {langs}, same category ({cats}), {ago}, and the same specific "
            f"places ({', '.join(entry.get('shared_places', []))}) as item {other}"
            + (f"; also shared: {'; '.join(also)}" if also else "")
            + f"; evidence {entry.get('points', 0):g} points >= {PLACES_MIN:g} ("
            + ", ".join(f"{k} {v:g}" for k, v in evidence.items())
            + ")"
        )
    return f"in incident {inc}"


def explain_incident(session: Session, item_id: int) -> dict[str, Any] | None:
    """Which incident a stored item belongs to and why; None when the item is unknown or not in an incident."""
    item = session.get(Item, item_id)
    if item is None or item.incident_id is None:
        return None
    inc = session.get(Incident, item.incident_id)
    if inc is None:
        return None
    entry = dict(item.grouping or {})
    entry.setdefault("reason", "unknown")
    entry.setdefault("text", f"in incident {inc.id} (grouped before explanations were recorded)")
    return {
        "item": item_id,
        "incident": {
            "id": inc.id,
            "title": inc.title,
            "categories": list(inc.categories),
            "countries": list(inc.countries),
            "severity": inc.severity,
            "first_seen": utc(inc.first_seen).isoformat(),
            "last_seen": utc(inc.last_seen).isoformat(),
            "item_count": inc.item_count,
            **({"triage": inc.explanation["triage"]} if "triage" in (inc.explanation or {}) else {}),
        },
        **{k: v for k, v in entry.items() if k != "incident"},
    }
