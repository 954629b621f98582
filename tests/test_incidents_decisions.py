"""Join or open, on plain values: fingerprints built by hand, no database, no cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.errors import ConfigErrors
from monitor.incidents.features import CountryLevel, extract, shipped_country_level
from monitor.incidents.fingerprint import Fingerprint
from monitor.incidents.scoring import Span, choose_incident, compare
from monitor.rules import load_classifier
from monitor.rules.gazetteer import read_country_level

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
WINDOW = timedelta(hours=72)
NONE = CountryLevel()


def fp(
    item_id: int,
    title: str,
    text: str = "",
    *,
    hours: float = 0,
    categories: tuple[str, ...] = ("prosecution",),
    countries: tuple[str, ...] = ("KZ",),
    language: str = "en",
    places: tuple[str, ...] = (),
) -> Fingerprint:
    return Fingerprint(
        item_id=item_id,
        published=T0 + timedelta(hours=hours),
        categories=frozenset(categories),
        countries=frozenset(countries),
        features=extract(title, text),
        language=language,
        script="cyrl" if language in ("ru", "kk") else "latn",
        places=frozenset(places),
    )


ARREST = "Court in Almaty jails activist Marat Ospanov for ten days"
ARREST_TEXT = "Activist Marat Ospanov was jailed for ten days after a rally in Almaty, his lawyer said."


def span(inc_id: int, *members: Fingerprint, categories: tuple[str, ...] = ("prosecution",)) -> Span:
    return Span(
        inc_id, min(m.published for m in members), max(m.published for m in members), frozenset(categories)
    )


def test_a_report_with_no_candidate_opens_an_incident() -> None:
    assert choose_incident(fp(1, ARREST, ARREST_TEXT), [], window=WINDOW, country_level=NONE) is None


def test_the_same_story_joins_and_the_match_says_why() -> None:
    old = fp(1, ARREST, ARREST_TEXT)
    new = fp(2, ARREST + " (updated)", ARREST_TEXT, hours=3)
    join = choose_incident(new, [(span(7, old), old)], window=WINDOW, country_level=NONE)
    assert join is not None and join.incident_id == 7
    assert join.match.member is old and join.match.kind in ("text", "names")


def test_ties_go_to_the_oldest_incident_whatever_the_order() -> None:
    a, b = fp(1, ARREST, ARREST_TEXT), fp(2, ARREST, ARREST_TEXT)
    new = fp(3, ARREST, ARREST_TEXT, hours=1)
    pairs = [(span(9, b), b), (span(4, a), a)]
    for order in (pairs, pairs[::-1]):
        join = choose_incident(new, order, window=WINDOW, country_level=NONE)
        assert join is not None and join.incident_id == 4


@pytest.mark.parametrize(
    ("hours", "categories", "joins"),
    [
        (10, ("prosecution",), True),
        (80, ("prosecution",), False),  # beyond the window of the incident's reports
        (10, ("defamation",), False),  # no category in common
    ],
)
def test_window_and_categories_gate_a_join(hours: float, categories: tuple[str, ...], joins: bool) -> None:
    old = fp(1, ARREST, ARREST_TEXT)
    new = fp(2, ARREST, ARREST_TEXT, hours=hours, categories=categories)
    join = choose_incident(new, [(span(5, old), old)], window=WINDOW, country_level=NONE)
    assert (join is not None) == joins


def test_a_report_is_never_matched_with_itself() -> None:
    me = fp(1, ARREST, ARREST_TEXT)
    assert choose_incident(me, [(span(5, me), me)], window=WINDOW, country_level=NONE) is None


def test_country_level_words_earn_no_points_across_languages() -> None:
    # One specific place (2 points) plus a shared name: a name that only says the country earns nothing.
    en = fp(1, "Oil workers protest", "Police detained workers, Akorda said.", places=("KZ:janao",))
    ru = fp(2, "Протест нефтяников", "Полиция задержала рабочих, сообщила Акорда.", language="ru", hours=1,
            places=("KZ:janao",))  # fmt: skip
    found = compare(en, ru, NONE)
    assert found is not None and found.kind == "places" and found.evidence["names"] == 1
    assert compare(en, ru, CountryLevel.of(["Akorda"])) is None  # the place and closeness alone: 2.5 < 3


def test_shipped_country_level_words_come_from_places_yaml() -> None:
    levels = shipped_country_level()
    assert "Kazakhstan" not in levels  # keys, not words
    assert CountryLevel.of(["Қазақстан"]).keys <= levels.keys
    assert CountryLevel.of(["Nur-Otan"]).keys == CountryLevel.of(["Nur Otan"]).keys <= levels.keys
    assert not CountryLevel.of(["Almaty"]).keys & levels.keys


PLACES = """\
countries:
  KZ:
    name: Kazakhstan
    names:
      en: [Kazakhstan, Almaty, Akorda]
    country_level: [Kazakhstan, Akorda]
"""


def _config(tmp_path: Path, places: str) -> Path:
    (tmp_path / "categories.yaml").write_text(
        "categories:\n  - {id: c, title: C, severity: low, rules: {en: arrest}}\n", encoding="utf-8"
    )
    (tmp_path / "places.yaml").write_text(places, encoding="utf-8")
    return tmp_path


def test_the_configured_country_level_words_reach_grouping(tmp_path: Path) -> None:
    clf = load_classifier(_config(tmp_path, PLACES), cache_dir=tmp_path / "cache")
    assert clf.gazetteer.country_level_words() == ["Kazakhstan", "Akorda"]
    assert read_country_level(tmp_path / "places.yaml") == {"KZ": ("Kazakhstan", "Akorda")}


def test_a_places_file_without_country_level_says_none(tmp_path: Path) -> None:
    places = PLACES.replace("    country_level: [Kazakhstan, Akorda]\n", "")
    clf = load_classifier(_config(tmp_path, places), cache_dir=tmp_path / "cache")
    assert clf.gazetteer.country_level_words() is None  # grouping then uses the shipped lists


@pytest.mark.parametrize(
    ("value", "line", "message"),
    [
        ("Kazakhstan", 6, "expected a list of words"),
        ("[Kazakhstan, '=KNB']", 6, "'=KNB' is not a word"),
        ("\n      - Kazakhstan\n      - 42", 8, "42 is not a word"),
    ],
)
def test_a_malformed_country_level_names_file_and_line(
    tmp_path: Path, value: str, line: int, message: str
) -> None:
    places = PLACES.replace("[Kazakhstan, Akorda]", value)
    _config(tmp_path, places)
    with pytest.raises(ConfigErrors) as exc:
        load_classifier(tmp_path, cache_dir=tmp_path / "cache")
    found = [e for e in exc.value.errors if message in e.message]
    assert found and found[0].line == line and found[0].file == str(tmp_path / "places.yaml")
    with pytest.raises(ConfigErrors) as light:
        read_country_level(tmp_path / "places.yaml")
    assert [e.line for e in light.value.errors if message in e.message] == [line]
