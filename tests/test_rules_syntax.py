"""Rule language: parsing, and compile errors that name file, line, category and token, all at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from monitor.errors import ConfigErrors, RuleError
from monitor.rules import load_classifier, syntax


def make_config(tmp_path: Path, categories: str, places: str | None = None) -> Path:
    (tmp_path / "categories.yaml").write_text(textwrap.dedent(categories), encoding="utf-8")
    if places is not None:
        (tmp_path / "places.yaml").write_text(textwrap.dedent(places), encoding="utf-8")
    return tmp_path


def problems(rule: str) -> list[str]:
    return [p.message for p in syntax.parse(rule)[1]]


def test_precedence_not_near_and_or() -> None:
    node, errs = syntax.parse("a OR b AND c NEAR/3 d NOT e")
    assert not errs
    assert isinstance(node, syntax.Or)
    left, right = node.children
    assert isinstance(left, syntax.Term) and left.text == "a"
    assert isinstance(right, syntax.And)
    near, neg = right.children[1], right.children[2]
    assert isinstance(near, syntax.Near) and near.distance == 3
    assert isinstance(neg, syntax.Not)


def test_term_markers() -> None:
    node, _ = syntax.parse("=КНБ")
    assert isinstance(node, syntax.Term) and node.exact and node.case_sensitive
    node, _ = syntax.parse("=press")
    assert isinstance(node, syntax.Term) and node.exact and not node.case_sensitive
    node, _ = syntax.parse("detain*")
    assert isinstance(node, syntax.Term) and node.prefix
    node, _ = syntax.parse('title:"уголовное дело"')
    assert isinstance(node, syntax.Field) and node.name == "title"
    assert isinstance(node.child, syntax.Phrase) and len(node.child.terms) == 2


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("arrest NEAR protest", "NEAR needs a distance: NEAR/5"),
        ("ar*", "wildcard needs 3 letters before *"),
        ("de*tain", "a wildcard * may only end a word"),
        ("arrest and protest", "operators are written in capitals: AND"),
        ("arrest protest", 'missing operator (AND, OR, NEAR/n) or quotes for a "phrase"'),
        ('"cardiac arrest', "unclosed quote"),
        ("(arrest OR detain", "missing )"),
        ("arrest OR detain)", "unmatched )"),
        ("arrest AND", "expected a term, phrase, @set or ("),
        ("author:arrest", "unknown field author: (use title: or text:)"),
        ("(a AND b) NEAR/3 c", "NEAR operands must be terms, phrases, sets or OR-groups, not AND"),
    ],
)
def test_parse_errors(rule: str, message: str) -> None:
    assert message in problems(rule)


def test_every_problem_in_a_rule_is_reported() -> None:
    found = problems("ar* NEAR protest OR x*")
    assert found.count("wildcard needs 3 letters before *") == 2
    assert "NEAR needs a distance: NEAR/5" in found


def test_compile_errors_all_at_once_with_file_line_category_token(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        """\
        sets:
          protest:
            en: [protest, rally]
        categories:
          - id: protest_crackdown
            title: Protest crackdown
            severity: high
            rules:
              en: "arrest NEAR @protest"
          - id: prosecution
            title: Prosecution
            severity: high
            rules:
              en: |
                charged AND
                @protests
          - id: other
            title: Other
            severity: urgent
            rules:
              en: "ar*"
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_classifier(cfg, cache_dir=tmp_path / "cache")
    errors = info.value.errors
    assert all(isinstance(e, RuleError) for e in errors)
    by_msg = {e.message.split(" (at ")[0]: e for e in errors}
    near = by_msg["NEAR needs a distance: NEAR/5"]
    assert isinstance(near, RuleError)
    assert (near.line, near.category, near.token) == (9, "protest_crackdown", "NEAR")
    assert near.file == str(cfg / "categories.yaml")
    unknown = by_msg["unknown set @protests for language en"]
    assert isinstance(unknown, RuleError)
    # a block scalar starts on the line after "en: |"; the set is on its second line
    assert (unknown.line, unknown.category, unknown.token) == (16, "prosecution", "@protests")
    wildcard = by_msg["wildcard needs 3 letters before *"]
    assert isinstance(wildcard, RuleError) and wildcard.category == "other"
    assert any("severity must be one of high, medium, low" in e.message for e in errors)
    assert "categories.yaml:9" in info.value.describe()


def test_set_errors_point_at_the_set_entry(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        """\
        sets:
          detain:
            en:
              - detain
              - "de*"
        categories:
          - id: c
            title: C
            severity: low
            rules: {en: "@detain"}
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_classifier(cfg, cache_dir=tmp_path / "cache")
    [err] = info.value.errors
    assert err.line == 5 and "wildcard" in err.message


def test_rule_of_only_negations_is_refused(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        """\
        categories:
          - id: c
            title: C
            severity: low
            rules: {en: "NOT football"}
        """,
    )
    with pytest.raises(ConfigErrors, match="at least one term"):
        load_classifier(cfg, cache_dir=tmp_path / "cache")


def test_duplicate_ids_unknown_keys_and_languages(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        """\
        categories:
          - id: c
            title: C
            severity: low
            rules: {en: arrest, de: verhaften}
            colour: red
          - id: c
            title: C again
            severity: low
            rules: {en: arrest}
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_classifier(cfg, cache_dir=tmp_path / "cache")
    text = info.value.describe()
    assert "unknown language 'de'" in text
    assert "unknown key 'colour'" in text
    assert "duplicate category id" in text


def test_invalid_yaml_is_a_config_error_with_line(tmp_path: Path) -> None:
    (tmp_path / "categories.yaml").write_text("categories:\n  - id: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_classifier(tmp_path, cache_dir=tmp_path / "cache")
    assert info.value.errors[0].line is not None
