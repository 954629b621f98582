"""Severity: which levels exist, how they rank, and the taxonomy's level for each category.

    SEVERITIES                      ("high", "medium", "low"), most severe first
    rank(level) -> int              0 for high; an unknown level ranks after every known one
    default_severity(category_id)   the taxonomy's level; "medium" for a category it does not rate
    most_severe(levels) -> str      the highest of some levels ("medium" when there are none)

categories.yaml rates each category; the taxonomy's levels (reference/TAXONOMY.md) are what a report gets
when no configuration says otherwise (a category file that cannot be read, an id nobody rated).
"""

from __future__ import annotations

from collections.abc import Iterable

SEVERITIES = ("high", "medium", "low")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
DEFAULT_LEVEL = "medium"
_UNKNOWN_RANK = 9  # after every known level, so a misspelt level never outranks a real one

# reference/TAXONOMY.md: high for protest_crackdown, prosecution, ngo_liquidation, intimidation; medium for the rest.
TAXONOMY_SEVERITY: dict[str, str] = {
    "protest_crackdown": "high",
    "prosecution": "high",
    "defamation": "medium",
    "media_restriction": "medium",
    "ngo_restriction": "medium",
    "ngo_liquidation": "high",
    "union_pressure": "medium",
    "party_barriers": "medium",
    "religious_restriction": "medium",
    "funding_restriction": "medium",
    "intimidation": "high",
    "digital_repression": "medium",
    "restrictive_law": "medium",
}


def rank(level: str) -> int:
    """0 for the most severe level; unknown levels rank last."""
    return SEVERITY_RANK.get(level, _UNKNOWN_RANK)


def default_severity(category_id: str) -> str:
    return TAXONOMY_SEVERITY.get(category_id, DEFAULT_LEVEL)


def most_severe(levels: Iterable[str]) -> str:
    return min(levels, key=rank, default=DEFAULT_LEVEL)
