"""Join or open: whether two reports tell one event, and which open incident a new report joins.

    compare(a, b, country_level) -> Match | None          the rules of the package docstring, on two fingerprints
    choose_incident(report, candidates, ...) -> Join | None   the strongest match among open incidents, or None:
                                                              open a new incident

Pure functions of fingerprints and plain values: no database, no cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from monitor.incidents.features import CountryLevel, jaccard
from monitor.incidents.fingerprint import Fingerprint

TEXT_MIN = 0.45  # below this, same-language rewrites of different events start to look alike
TEXT_COPY = 0.8  # a reprint: joins even when a misspelt name makes the people look different
NAMES_MIN = 2  # shared names (not a full person name) needed to join across languages
# The places rule (the package docstring says why these numbers).
CROSS_HOURS = 36.0  # reports in two languages further apart than this are not matched on places
CLOSE_HOURS = 12.0  # reports this close earn CLOSE_POINTS
PLACES_MIN = 3.0  # points needed: a shared specific place (2) plus corroboration worth 1
PLACE_POINTS = 2.0  # each shared specific place, at most 2 counted
NAME_POINTS = 1.0  # each shared name that is not a place, at most 2 counted
CATEGORY_POINTS = 0.5  # each shared category after the first, at most 2 counted
SET_POINTS = 0.5  # each shared term set of a shared category, at most 2 counted
CLOSE_POINTS = 0.5


@dataclass(frozen=True)
class Match:
    kind: str  # "text" | "names" | "places"
    score: float
    member: Fingerprint  # the incident's report it matched
    shared_terms: list[str]
    shared_names: list[str]
    shared_persons: list[str]
    shared_places: list[str] = field(default_factory=list)
    shared_sets: list[str] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)  # points by kind, for the places rule


@dataclass(frozen=True)
class PlaceEvidence:
    points: dict[str, float]  # by kind: places, names, categories, sets, close
    places: list[str]  # shared place keys
    names: list[str]  # shared names that are neither places nor country-level
    sets: list[str]  # shared term sets of shared categories

    @property
    def total(self) -> float:
        return sum(self.points.values())


def place_evidence(
    a: Fingerprint, b: Fingerprint, names: AbstractSet[str], country_level: CountryLevel
) -> PlaceEvidence | None:
    """Points for the places rule, with the shared place keys, names and sets; None when it cannot apply."""
    shared = a.places & b.places
    if not shared or not a.other_language(b):
        return None
    if a.title_places and b.title_places and not (a.title_places & b.title_places):
        return None  # the headlines say where it happened, and they say different places
    hours = abs((a.published - b.published).total_seconds()) / 3600
    if hours > CROSS_HOURS:
        return None
    categories = a.categories & b.categories
    sets = sorted({s.split("/", 1)[1] for s in a.sets & b.sets if s.split("/", 1)[0] in categories})
    place_words = {k.split(":", 1)[1] for k in a.places | b.places}
    other_names = sorted(n for n in names if n not in place_words and n not in country_level)
    points = {"places": PLACE_POINTS * min(len(shared), 2)}
    if other_names:
        points["names"] = NAME_POINTS * min(len(other_names), 2)
    if len(categories) > 1:
        points["categories"] = CATEGORY_POINTS * min(len(categories) - 1, 2)
    if sets:
        points["sets"] = SET_POINTS * min(len(sets), 2)
    if hours <= CLOSE_HOURS:
        points["close"] = CLOSE_POINTS
    return PlaceEvidence(points, sorted(shared), other_names, sets)


def compare(item: Fingerprint, other: Fingerprint, country_level: CountryLevel) -> Match | None:
    """Whether two reports tell the same event (categories and time are checked by `choose_incident`)."""
    a, b = item.features, other.features
    j = jaccard(a.stems, b.stems)
    persons = a.persons & b.persons
    names = a.names & b.names
    different_people = bool(a.persons and b.persons and not persons)
    countries_agree = not item.countries or not other.countries or bool(item.countries & other.countries)
    kind, score = "", 0.0
    if persons and countries_agree:
        kind, score = "names", 0.6 + 0.04 * min(len(persons) + len(names), 4)
    if (j >= TEXT_COPY or (j >= TEXT_MIN and not different_people)) and j > score:
        kind, score = "text", j
    if not kind and len(names) >= NAMES_MIN and countries_agree and not different_people:
        kind, score = "names", 0.5 + 0.05 * min(len(names), 4)
    if not kind and countries_agree and not different_people:
        found = place_evidence(item, other, names, country_level)
        if found is not None and found.total >= PLACES_MIN:
            return Match(
                kind="places",
                # ranks below every text or names match (>= 0.45): places are the weakest kind of evidence
                score=round(min(0.3 + 0.02 * found.total, 0.44), 4),
                member=other,
                shared_terms=[],
                shared_names=a.shown(found.names),
                shared_persons=[],
                shared_places=[item.place_names.get(k, k) for k in found.places],
                shared_sets=found.sets,
                evidence=found.points,
            )
    if not kind:
        return None
    return Match(
        kind=kind,
        score=round(score, 4),
        member=other,
        # in the new report's own words (the stored fingerprints keep only keys)
        shared_terms=a.shown(sorted(a.stems & b.stems)[:20]),
        shared_names=a.shown(sorted(names)),
        shared_persons=a.shown(sorted(persons)),
    )


class IncidentSpan(Protocol):
    """An open incident as the decision needs it: its id, the dates of its reports, its categories."""

    @property
    def inc_id(self) -> int: ...
    @property
    def first(self) -> datetime: ...
    @property
    def last(self) -> datetime: ...
    @property
    def categories(self) -> AbstractSet[str]: ...


@dataclass(frozen=True)
class Span:
    """A plain `IncidentSpan`."""

    inc_id: int
    first: datetime
    last: datetime
    categories: frozenset[str]


@dataclass(frozen=True)
class Join:
    """The decision to add a report to an incident, and the match that earned it."""

    incident_id: int
    match: Match


def choose_incident(
    report: Fingerprint,
    candidates: Iterable[tuple[IncidentSpan, Fingerprint]],
    *,
    window: timedelta,
    country_level: CountryLevel,
) -> Join | None:
    """The incident `report` joins among (incident, one of its reports) pairs, or None: it opens a new one.

    A candidate counts when its incident shares a category with the report and the report lies within `window`
    of the incident's reports, and the two reports share a category and `compare` accepts them. The strongest
    match wins; ties go to the oldest incident, then the oldest report, so the order of candidates is irrelevant.
    """
    best: Join | None = None
    for inc, other in candidates:
        if not (inc.categories & report.categories):
            continue
        if report.published < inc.first - window or report.published > inc.last + window:
            continue
        if other.item_id == report.item_id or not (other.categories & report.categories):
            continue
        m = compare(report, other, country_level)
        if m is not None and (
            best is None
            or (m.score, -inc.inc_id, -other.item_id)
            > (best.match.score, -best.incident_id, -best.match.member.item_id)
        ):
            best = Join(inc.inc_id, m)
    return best
