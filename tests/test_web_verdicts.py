"""Verdicts on classifications: stored in their own table, applied over the rules, kept through `reclassify`,
and concurrent opposite verdicts both kept with the later one winning. Both databases."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

import monitor.cli  # noqa: F401 - registers every command on `app`
from monitor.cli.app import app
from monitor.store.engine import session_scope
from monitor.store.models import Item
from monitor.store.verdicts import (
    VerdictError,
    add_note,
    effective_categories,
    latest_verdicts,
    record_verdict,
    verdict_history,
)
from monitor.store.workspace_models import AuditEntry, Verdict
from tests.support.stories import Story, store


def two_items(engine: Engine) -> tuple[int, int]:
    a, b = store(
        engine,
        [
            Story(
                "Police detain protesters at rally in Almaty", "Police detained ten.", ["protest_crackdown"]
            ),
            Story("Wheat harvest beats forecast", "Farmers are pleased.", []),
        ],
    )
    return a, b


def test_rejected_category_leaves_and_added_one_joins_with_an_audit_row_each(engine: Engine) -> None:
    a, b = two_items(engine)
    with session_scope(engine) as s:
        record_verdict(s, a, "protest_crackdown", "reject", author="aigerim", note="a sports rally")
        record_verdict(s, b, "civil_society_closure", "add", author="aigerim")
    with Session(engine) as s:
        assert effective_categories(s, [a, b]) == {a: set(), b: {"civil_society_closure"}}
        # The rules' own column is untouched: verdicts are applied over it, not written into it.
        assert s.get(Item, a).categories == ["protest_crackdown"]  # type: ignore[union-attr]
        entries = s.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()
        assert [(e.actor, e.action, e.target, e.detail["verdict"]) for e in entries] == [
            ("aigerim", "verdict", f"item:{a}", "reject"),
            ("aigerim", "verdict", f"item:{b}", "add"),
        ]
        assert entries[0].detail["note"] == "a sports rally"


def test_a_later_verdict_overrides_an_earlier_one_and_history_keeps_both(engine: Engine) -> None:
    a, _ = two_items(engine)
    with session_scope(engine) as s:
        record_verdict(s, a, "protest_crackdown", "reject", author="aigerim")
    with session_scope(engine) as s:
        record_verdict(s, a, "protest_crackdown", "confirm", author="dmitri")
    with Session(engine) as s:
        assert effective_categories(s, [a]) == {a: {"protest_crackdown"}}
        assert [(v.author, v.verdict) for v in verdict_history(s, a)] == [
            ("aigerim", "reject"),
            ("dmitri", "confirm"),
        ]
        assert latest_verdicts(s, [a])[a]["protest_crackdown"].author == "dmitri"


def test_bad_verdicts_are_refused_with_a_reason(engine: Engine) -> None:
    a, _ = two_items(engine)
    with Session(engine) as s:
        with pytest.raises(VerdictError, match="verdict must be one of"):
            record_verdict(s, a, "protest_crackdown", "maybe", author="x")
        with pytest.raises(VerdictError, match="unknown category 'nonsense'"):
            record_verdict(s, a, "nonsense", "add", author="x", known_categories={"protest_crackdown"})
        with pytest.raises(VerdictError, match="no item 999999"):
            record_verdict(s, 999999, "protest_crackdown", "reject", author="x")
        with pytest.raises(VerdictError, match="note is empty"):
            add_note(s, a, "   ", author="x")
        with pytest.raises(VerdictError, match="at most"):
            record_verdict(s, a, "protest_crackdown", "reject", author="x", note="n" * 5000)


def test_two_analysts_answering_at_once_are_both_recorded_and_the_later_wins(engine: Engine) -> None:
    a, _ = two_items(engine)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def analyst(name: str, verdict: str) -> None:
        try:
            with session_scope(engine) as s:
                barrier.wait(timeout=30)
                record_verdict(s, a, "protest_crackdown", verdict, author=name)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=analyst, args=("aigerim", "reject")),
        threading.Thread(target=analyst, args=("dmitri", "confirm")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with Session(engine) as s:
        rows = s.exec(select(Verdict).order_by(col(Verdict.id))).all()
        assert sorted(r.author for r in rows) == ["aigerim", "dmitri"]
        later = rows[-1]
        expected = set() if later.verdict == "reject" else {"protest_crackdown"}
        assert effective_categories(s, [a]) == {a: expected}
        assert len(s.exec(select(AuditEntry)).all()) == 2


def test_verdicts_survive_reclassify(config_dir: Path, db_url: str, engine: Engine) -> None:
    a, b = two_items(engine)
    with session_scope(engine) as s:
        # The rules match item a; the analyst says they are wrong. Item b matched nothing; the analyst adds one.
        record_verdict(s, a, "protest_crackdown", "reject", author="aigerim")
        record_verdict(s, b, "civil_society_closure", "add", author="aigerim")
    result = CliRunner().invoke(app, ["--config", str(config_dir), "--db", db_url, "reclassify", "--json"])
    assert result.exit_code == 0, result.output
    with Session(engine) as s:
        # The rules found the match again; the stored categories are theirs with the verdicts applied.
        assert "protest_crackdown" in s.get(Item, a).matches  # type: ignore[union-attr]
        assert s.get(Item, a).categories == []  # type: ignore[union-attr]
        assert s.get(Item, b).categories == ["civil_society_closure"]  # type: ignore[union-attr]
        assert effective_categories(s, [a, b]) == {a: set(), b: {"civil_society_closure"}}
        assert len(s.exec(select(Verdict)).all()) == 2
