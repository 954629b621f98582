"""Country tagging: names in three languages, ambiguous names, sports context, longest match."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from monitor.errors import ConfigErrors
from monitor.rules import Classifier, load_classifier

PLACES = """\
countries:
  KZ:
    name: Kazakhstan
    names:
      en: [Kazakhstan, Astana, Almaty, akimat, =KNB]
      ru: [Казахстан, Астана, Алматы, акимат, =КНБ]
      kk: [Қазақстан, Астана, Алматы]
    ambiguous:
      en: [Petropavlovsk]
      ru: [Петропавловск]
  RU:
    name: Russia
    names:
      en: [Russia, Petropavlovsk-Kamchatsky]
      ru: [Россия, Петропавловск-Камчатский]
context:
  distance: 2
  en: [FC, club, team, cycling]
  ru: [ФК, клуб, команда]
  kk: [клуб, футбол]
"""


@pytest.fixture
def clf(tmp_path: Path) -> Classifier:
    (tmp_path / "categories.yaml").write_text(
        "categories:\n  - {id: c, title: C, severity: low, rules: {en: arrest}}\n", encoding="utf-8"
    )
    (tmp_path / "places.yaml").write_text(PLACES, encoding="utf-8")
    return load_classifier(tmp_path, cache_dir=tmp_path / "cache")


def countries(c: Classifier, text: str, title: str = "") -> list[str]:
    return c.classify(title, text).countries


def test_names_in_three_languages_and_inflections(clf: Classifier) -> None:
    assert countries(clf, "Police detained protesters in Astana") == ["KZ"]
    assert countries(clf, "В Казахстане задержали активистов") == ["KZ"]
    assert countries(clf, "Алматыда митинг өтті") == ["KZ"]
    assert countries(clf, "Қазақстанның азаматтары") == ["KZ"]
    assert countries(clf, "Weather in Oslo") == []


def test_ambiguous_name_needs_a_second_signal(clf: Classifier) -> None:
    assert countries(clf, "Petropavlovsk residents complain about heating") == []
    assert countries(clf, "Petropavlovsk Petropavlovsk again") == []  # the same name twice is one signal
    assert countries(clf, "Petropavlovsk: the akimat says heating is back") == ["KZ"]


def test_longest_name_wins(clf: Classifier) -> None:
    assert countries(clf, "Flights to Petropavlovsk-Kamchatsky resumed") == ["RU"]
    assert countries(clf, "Рейсы в Петропавловск-Камчатский") == ["RU"]


def test_sports_context_demotes_a_city_name(clf: Classifier) -> None:
    assert countries(clf, "FC Astana beat the visitors 2-1") == []
    assert countries(clf, "«Астана» футбол клубы жеңді") == []
    assert countries(clf, "FC Astana fans clashed with police in Almaty") == ["KZ"]
    assert countries(clf, "The Astana cycling team won the stage") == []


def test_case_sensitive_acronym(clf: Classifier) -> None:
    assert countries(clf, "Сотрудники КНБ провели обыск") == ["KZ"]
    assert countries(clf, "кнб") == []


def test_places_in_json(clf: Classifier) -> None:
    js = clf.classify("Arrest in Almaty", "").to_json()
    assert js["countries"] == ["KZ"]
    assert js["places"] == [
        {"country": "KZ", "name": "Almaty", "field": "title", "start": 10, "end": 16, "entry": "Almaty"}
    ]


def test_bad_places_file_reports_every_problem(tmp_path: Path) -> None:
    (tmp_path / "categories.yaml").write_text(
        "categories:\n  - {id: c, title: C, severity: low, rules: {en: arrest}}\n", encoding="utf-8"
    )
    (tmp_path / "places.yaml").write_text(
        textwrap.dedent(
            """\
            countries:
              Kazakhstan:
                names: {en: [Astana]}
              KZ:
                names: {fr: [Astana], en: [ab*]}
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigErrors) as info:
        load_classifier(tmp_path, cache_dir=tmp_path / "cache")
    text = info.value.describe()
    assert "places.yaml:2" in text and "ISO 3166-1" in text
    assert "unknown language 'fr'" in text
    assert "wildcard needs 3 letters" in text
