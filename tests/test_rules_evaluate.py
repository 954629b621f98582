"""evaluate(): labelled JSONL in, per-category and micro precision/recall/F1 out; bad files name their lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.errors import ConfigErrors
from monitor.rules import Classifier, evaluate, load_classifier


@pytest.fixture
def clf(tmp_path: Path) -> Classifier:
    (tmp_path / "categories.yaml").write_text(
        "categories:\n"
        "  - {id: arrest, title: A, severity: high, rules: {en: arrest}}\n"
        "  - {id: ban, title: B, severity: medium, rules: {en: ban}}\n",
        encoding="utf-8",
    )
    return load_classifier(tmp_path, cache_dir=tmp_path / "cache")


def write(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def test_scores(clf: Classifier, tmp_path: Path) -> None:
    f = write(
        tmp_path / "set.jsonl",
        [
            {"id": "1", "title": "Arrest", "text": "", "categories": ["arrest"]},  # tp arrest
            {"id": "2", "title": "", "text": "ban and arrest", "categories": ["ban"]},  # tp ban, fp arrest
            {"id": "3", "title": "Detention", "text": "", "categories": ["arrest"]},  # fn arrest
            {"id": "4", "title": "Weather", "text": "sunny", "categories": [], "lang": "en"},  # tn
        ],
    )
    r = evaluate(clf, f)
    assert r.items == 4
    a = r.categories["arrest"]
    assert (a.tp, a.fp, a.fn) == (1, 1, 1)
    assert a.precision == 0.5 and a.recall == 0.5 and a.f1 == 0.5
    b = r.categories["ban"]
    assert (b.tp, b.fp, b.fn) == (1, 0, 0) and b.f1 == 1.0
    assert (r.micro.tp, r.micro.fp, r.micro.fn) == (2, 1, 1)
    assert r.micro.f1 == pytest.approx(2 / 3)
    assert [m.id for m in r.misclassified] == ["2", "3"]
    assert r.misclassified[0].extra == ("arrest",)
    assert r.misclassified[1].missing == ("arrest",)
    js = r.to_json()
    assert set(js["categories"]["arrest"]) >= {"tp", "fp", "fn", "precision", "recall", "f1"}
    assert js["micro"]["tp"] == 2


def test_unknown_category_names_file_and_line(clf: Classifier, tmp_path: Path) -> None:
    f = write(
        tmp_path / "bad.jsonl",
        [
            {"id": "1", "title": "Arrest", "text": "", "categories": ["arrest"]},
            {"id": "2", "title": "x", "text": "", "categories": ["torture"]},
            "{not json",
        ],
    )
    with pytest.raises(ConfigErrors) as info:
        evaluate(clf, f)
    lines = {(e.file, e.line) for e in info.value.errors}
    assert lines == {(str(f), 2), (str(f), 3)}
    assert "unknown category torture" in info.value.describe()


def test_missing_file(clf: Classifier, tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="file not found"):
        evaluate(clf, tmp_path / "nope.jsonl")


def test_scores_by_form_split_teasers_from_full_articles(clf: Classifier, tmp_path: Path) -> None:
    f = write(
        tmp_path / "forms.jsonl",
        [
            {"id": "1", "form": "teaser", "title": "Arrest", "text": "", "categories": ["arrest"]},  # tp
            {"id": "2", "form": "teaser", "title": "Detention", "text": "", "categories": ["arrest"]},  # fn
            {"id": "3", "form": "full", "title": "Ban", "text": "a ban, an arrest", "categories": ["ban"]},
            {"id": "4", "title": "Arrest", "text": "", "categories": ["arrest"]},  # no form: micro only
        ],
    )
    r = evaluate(clf, f)
    teaser, full = r.by_form["teaser"], r.by_form["full"]
    assert (teaser.tp, teaser.fp, teaser.fn) == (1, 0, 1)
    assert (full.tp, full.fp, full.fn) == (1, 1, 0)
    assert full.precision == 0.5 and teaser.recall == 0.5
    assert (r.micro.tp, r.micro.fp, r.micro.fn) == (3, 1, 1)
    js = r.to_json()["by_form"]
    assert set(js) == {"full", "teaser"}
    assert js["teaser"]["recall"] == 0.5 and js["full"]["precision"] == 0.5


def test_file_without_forms_has_no_breakdown(clf: Classifier, tmp_path: Path) -> None:
    f = write(
        tmp_path / "plain.jsonl", [{"id": "1", "title": "Arrest", "text": "", "categories": ["arrest"]}]
    )
    assert evaluate(clf, f).to_json()["by_form"] == {}


def test_form_must_be_a_string(clf: Classifier, tmp_path: Path) -> None:
    f = write(tmp_path / "bad.jsonl", [{"id": "1", "form": 3, "title": "A", "text": "", "categories": []}])
    with pytest.raises(ConfigErrors, match="'form' must be a string") as info:
        evaluate(clf, f)
    assert info.value.errors[0].line == 1
