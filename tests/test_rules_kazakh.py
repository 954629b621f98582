"""Kazakh suffix grammar, checked against inflection tables: one test per case, possessive, plural, verb chain and
consonant alternation, each with a form that must match and a look-alike that must not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.rules import Classifier, load_classifier
from monitor.rules.morph import KK_NOUN_RE, KK_VERB_RE, kazakh_stems


@pytest.fixture(scope="module")
def clf(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    terms = {
        "school": "мектеп",  # п/б: мектебі
        "right": "құқық",  # қ/ғ: құқығы
        "wish": "тілек",  # к/г: тілегі
        "book": "кітап",
        "court": "сот",
        "place": "орын",  # vowel drop: орны
        "people": "халық",  # vowel drop without voicing: халқы
        "close": "жабу",  # verb root devoices: жапты
        "leave": "шығу",  # ғ/қ in a verb root: шықты
        "detain": "ұстау",
        "arrest": "қамау",
        "read": "оқу",  # hidden stem vowel: оқыды
    }
    path = tmp_path_factory.mktemp("kk")
    body = "".join(
        f"  - id: {cid}\n    title: {cid}\n    severity: low\n    rules:\n      kk: {json.dumps(term)}\n"
        for cid, term in terms.items()
    )
    (path / "categories.yaml").write_text("categories:\n" + body, encoding="utf-8")
    return load_classifier(path, cache_dir=path / "cache")


def cats(c: Classifier, text: str) -> list[str]:
    return sorted(c.classify("", text).categories)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # cases after a consonant: genitive, dative, accusative, locative, ablative, instrumental, equative
        ("соттың шешімі", ["court"]),
        ("сотқа жүгінді", ["court"]),
        ("сотты сынады", ["court"]),
        ("сотта қаралды", ["court"]),
        ("соттан шықты", ["court", "leave"]),
        ("сотпен келісті", ["court"]),
        ("сотпенен келісті", ["court"]),
        # plural, possessive, plural + possessive + case
        ("соттар", ["court"]),
        ("соты", ["court"]),
        ("соттарымыздың", ["court"]),
        ("соттарыңызға", ["court"]),
        # possessive 3rd person takes н-cases: сотында, сотынан, сотына
        ("сотында", ["court"]),
        ("сотынан", ["court"]),
        # locative adjective, and that adjective as a noun again
        ("Алматыдағы соттағылар", ["court"]),
        ("соттағыны", ["court"]),
    ],
)
def test_noun_cases_possessives_and_plurals(clf: Classifier, text: str, expected: list[str]) -> None:
    assert cats(clf, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("мектебі жабылды", ["close", "school"]),  # п -> б before a vowel
        ("мектепте", ["school"]),  # п stays before a consonant
        ("мектептің", ["school"]),
        ("кітабын оқыды", ["book", "read"]),
        ("құқығы бұзылды", ["right"]),  # қ -> ғ
        ("құқықтары", ["right"]),
        ("тілегін айтты", ["wish"]),  # к -> г
        ("тілектері", ["wish"]),
    ],
)
def test_stem_final_consonants_voice_before_vowels(clf: Classifier, text: str, expected: list[str]) -> None:
    assert cats(clf, text) == expected


def test_voiced_stem_needs_a_vowel_after_it(clf: Classifier) -> None:
    # *мектебте and *құқығта are not Kazakh: the voiced stem only takes vowel-initial endings
    assert cats(clf, "мектебте") == []
    assert cats(clf, "құқығта") == []
    assert ("мектеб", "kk_noun_v") in kazakh_stems("мектеп")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("орны бос", ["place"]),  # орын -> орны
        ("орнына келді", ["place"]),
        ("орындар", ["place"]),  # before a consonant the vowel stays
        ("халқы наразы", ["people"]),  # халық -> халқы: the қ stays voiceless after the drop
        ("халқының", ["people"]),
        ("халықтың", ["people"]),
    ],
)
def test_high_vowel_drops_after_a_sonorant(clf: Classifier, text: str, expected: list[str]) -> None:
    assert cats(clf, text) == expected


def test_vowel_drop_needs_a_vowel_ending(clf: Classifier) -> None:
    assert cats(clf, "орн") == []
    assert ("халқ", "kk_noun_v") in kazakh_stems("халық")
    assert ("сот", "kk_noun") in kazakh_stems("сот") and len(kazakh_stems("сот")) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("редакцияны жапты", ["close"]),  # жабу: root devoices before a consonant
        ("газетті жабады", ["close"]),  # and stays voiced before a vowel
        ("сайт жабылды", ["close"]),  # passive
        ("жабылмады", ["close"]),  # passive + negation + past
        ("жабылмастан", ["close"]),  # without being closed
        ("елден шықты", ["leave"]),  # шығу: ғ -> қ before a consonant
        ("шығады", ["leave"]),
    ],
)
def test_verb_roots_alternate(clf: Classifier, text: str, expected: list[str]) -> None:
    assert cats(clf, text) == expected


@pytest.mark.parametrize(
    "form",
    [
        "ұсталды",  # past
        "ұсталдық",  # past 1pl
        "ұстайды",  # present
        "ұстамайды",  # negative present
        "ұстапты",  # evidential
        "ұстап",  # converb
        "ұстаса",  # conditional
        "ұстамақшы",  # intention
        "ұстаңыз",  # polite imperative
        "ұсталған",  # past participle
        "ұсталғандардың",  # participle + plural + genitive
        "ұсталғанмын",  # participle + person: I have been detained
        "ұсталатын",  # future participle
        "ұстаушы",  # agent
        "ұстауда",  # verbal noun + locative
        "ұсталғалы",  # since being detained
    ],
)
def test_verb_tense_and_participle_chains(clf: Classifier, form: str) -> None:
    assert cats(clf, form) == ["detain"], form


def test_look_alikes_are_not_forms(clf: Classifier) -> None:
    assert cats(clf, "ұстаз сабақ берді") == []  # teacher
    assert cats(clf, "ол сотталды") == []  # соттау (to convict) is its own verb
    assert cats(clf, "қамқорлық") == []  # care: қам- is not қама-


def test_suffix_patterns_are_whole_chains() -> None:
    assert KK_NOUN_RE.fullmatch("тарымыздың")
    assert not KK_NOUN_RE.fullmatch("хаттама")
    assert KK_VERB_RE.fullmatch("ылмады")
    assert not KK_VERB_RE.fullmatch("ылмадыз")


def test_short_verbs_and_short_nouns() -> None:
    assert ("ал", "kk_verb") in kazakh_stems("алу")  # алу: a verb, алды / алынды
    assert ("жой", "kk_verb") in kazakh_stems("жою")  # жою -> жойылды
    assert all(check != "kk_verb" for _stem, check in kazakh_stems("шоу"))  # a show, not a verb "шо-"


def test_liquidation_forms_of_a_three_letter_verb(tmp_path: Path) -> None:
    (tmp_path / "categories.yaml").write_text(
        "categories:\n  - {id: gone, title: G, severity: low, rules: {kk: жою}}\n"
        "  - {id: show, title: S, severity: low, rules: {kk: шоу}}\n",
        encoding="utf-8",
    )
    c = load_classifier(tmp_path, cache_dir=tmp_path / "cache")
    assert cats(c, "қор жойылды") == ["gone"]
    assert cats(c, "банк шоттары бұғатталды") == []  # шоттары is not a form of шоу
    assert cats(c, "шоуға қатысты") == ["show"]
