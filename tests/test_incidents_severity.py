"""The one table of severities: levels, their order, and the taxonomy's level for each category."""

from __future__ import annotations

from pathlib import Path

from monitor.incidents import incident_severity
from monitor.severity import SEVERITIES, TAXONOMY_SEVERITY, default_severity, most_severe, rank


def test_levels_rank_most_severe_first_and_unknown_last() -> None:
    assert [rank(s) for s in SEVERITIES] == [0, 1, 2]
    assert rank("critical") > rank("low")


def test_most_severe_of_none_is_medium() -> None:
    assert most_severe([]) == "medium"
    assert most_severe(["low", "high", "medium"]) == "high"
    assert most_severe(["bogus", "low"]) == "low"


def test_taxonomy_defaults_rate_four_categories_high() -> None:
    high = {"protest_crackdown", "prosecution", "ngo_liquidation", "intimidation", "defamation"}
    assert {c for c in high if default_severity(c) == "high"} == high - {"defamation"}
    assert default_severity("no_such_category") == "medium"


def test_taxonomy_defaults_and_incidents_agree(tmp_path: Path) -> None:
    # Grouping without configured levels uses the taxonomy's level for each of its 13 categories.
    assert len(TAXONOMY_SEVERITY) == 13
    for cid, level in TAXONOMY_SEVERITY.items():
        assert level == incident_severity([cid])


def test_configured_level_wins_over_the_taxonomy() -> None:
    assert incident_severity(["prosecution"], {"prosecution": "low"}) == "low"
    assert incident_severity(["prosecution", "defamation"], {"prosecution": "low"}) == "medium"
