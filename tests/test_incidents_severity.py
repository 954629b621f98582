"""The one table of severities: levels, their order, and the taxonomy's level for each category."""

from __future__ import annotations

from pathlib import Path

from monitor.deliver.digests import category_infos
from monitor.incidents import incident_severity
from monitor.severity import SEVERITIES, default_severity, most_severe, rank


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


def test_digest_fallback_and_incidents_agree_on_the_defaults(tmp_path: Path) -> None:
    # No categories.yaml: the digest falls back to the taxonomy, as grouping does without configured levels.
    metas = category_infos(tmp_path)
    assert len(metas) == 13
    for cid, meta in metas.items():
        assert meta.severity == incident_severity([cid])


def test_configured_level_wins_over_the_taxonomy() -> None:
    assert incident_severity(["prosecution"], {"prosecution": "low"}) == "low"
    assert incident_severity(["prosecution", "defamation"], {"prosecution": "low"}) == "medium"
