"""Analysts' verdicts on classifications, and the categories that hold once they are applied.

    record_verdict(session, item_id, category, "confirm" | "reject" | "add", author=..., note=None) -> Verdict
    effective_categories(session, item_ids) -> {item_id: {category, ...}}
    latest_verdicts(session, item_ids) -> {item_id: {category: Verdict}}
    verdict_history(session, item_id) -> [Verdict, ...] oldest first
    add_note(session, item_id, text, author=...) -> ItemNote
    audit(session, actor, action, target, **detail) -> AuditEntry

Rule for effective categories: start from the rules' `item.categories`; for each (item, category) with a
verdict, the latest verdict decides: "reject" removes it, "confirm" and "add" put it in (a confirmed category
stays even when a later `reclassify` drops it: the analyst's judgement wins over the rules). "Latest" is the
highest row id, the order in which the database accepted the rows, so two analysts answering at once are both
kept and exactly one wins, the same on every read.

Writes join the caller's session (one transaction with whatever else the caller does) and add an audit row.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlmodel import Session, col, select

from monitor.errors import StoreError
from monitor.store.models import Item
from monitor.store.workspace_models import VERDICT_KINDS, AuditEntry, ItemNote, Verdict

MAX_NOTE = 4000


class VerdictError(StoreError):
    """A verdict or note that cannot be recorded: unknown item, unknown category or kind, empty author."""


def audit(session: Session, actor: str, action: str, target: str, **detail: Any) -> AuditEntry:
    entry = AuditEntry(actor=actor, action=action, target=target, detail=detail)
    session.add(entry)
    return entry


def _clean_note(note: str | None) -> str | None:
    if note is None:
        return None
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise VerdictError(f"note is {len(note)} characters long; at most {MAX_NOTE}")
    return note or None


def record_verdict(
    session: Session,
    item_id: int,
    category: str,
    verdict: str,
    *,
    author: str,
    note: str | None = None,
    known_categories: Collection[str] | None = None,
) -> Verdict:
    """Store one verdict (and its audit entry) in the caller's transaction. `known_categories`, when given,
    is the set of category ids the configuration defines; a verdict on any other is refused."""
    if verdict not in VERDICT_KINDS:
        raise VerdictError(f"verdict must be one of {', '.join(VERDICT_KINDS)}, not {verdict!r}")
    category = category.strip()
    if not category:
        raise VerdictError("a verdict needs a category")
    if known_categories is not None and category not in known_categories:
        raise VerdictError(f"unknown category {category!r}")
    if not author.strip():
        raise VerdictError("a verdict needs an author")
    if session.get(Item, item_id) is None:
        raise VerdictError(f"no item {item_id}")
    row = Verdict(item_id=item_id, category=category, verdict=verdict, author=author, note=_clean_note(note))
    session.add(row)
    session.flush()  # the id orders verdicts; the audit entry names it
    audit(
        session,
        author,
        "verdict",
        f"item:{item_id}",
        verdict_id=row.id,
        category=category,
        verdict=verdict,
        note=row.note,
    )
    return row


def add_note(session: Session, item_id: int, text: str, *, author: str) -> ItemNote:
    cleaned = _clean_note(text)
    if not cleaned:
        raise VerdictError("the note is empty")
    if session.get(Item, item_id) is None:
        raise VerdictError(f"no item {item_id}")
    row = ItemNote(item_id=item_id, author=author, text=cleaned)
    session.add(row)
    session.flush()
    audit(session, author, "note", f"item:{item_id}", note_id=row.id, text=cleaned)
    return row


def _chunks(ids: list[int], size: int = 500) -> Iterable[list[int]]:
    # Bound the IN list: SQLite allows 32766 parameters, and long lists plan badly on both databases.
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def latest_verdicts(session: Session, item_ids: Iterable[int]) -> dict[int, dict[str, Verdict]]:
    """The verdict in force per (item, category), for items that have any."""
    ids = sorted(set(item_ids))
    out: dict[int, dict[str, Verdict]] = {}
    for chunk in _chunks(ids):
        rows = session.exec(
            select(Verdict).where(col(Verdict.item_id).in_(chunk)).order_by(col(Verdict.id))
        ).all()
        for v in rows:  # ascending ids: a later row overwrites an earlier one
            out.setdefault(v.item_id, {})[v.category] = v
    return out


def apply_verdicts(rules: Iterable[str], verdicts: dict[str, Verdict] | None) -> set[str]:
    """Pure: the rules' categories for one item with its verdicts in force applied."""
    cats = set(rules)
    for category, v in (verdicts or {}).items():
        if v.verdict == "reject":
            cats.discard(category)
        else:
            cats.add(category)
    return cats


def categories_after(rules: Sequence[str], verdicts: dict[str, Verdict] | None) -> list[str]:
    """Pure: `apply_verdicts` as a list that keeps the rules' order, with added categories after them."""
    if not verdicts:
        return list(rules)
    kept = apply_verdicts(rules, verdicts)
    return [c for c in rules if c in kept] + sorted(kept - set(rules))


def effective_categories(session: Session, item_ids: Iterable[int]) -> dict[int, set[str]]:
    """{item_id: categories after verdicts} for every given item that exists."""
    ids = sorted(set(item_ids))
    rules: dict[int, list[str]] = {}
    for chunk in _chunks(ids):
        for item_id, cats in session.exec(
            select(Item.id, Item.categories).where(col(Item.id).in_(chunk))
        ).all():
            assert item_id is not None
            rules[item_id] = list(cats or [])
    latest = latest_verdicts(session, rules)
    return {item_id: apply_verdicts(cats, latest.get(item_id)) for item_id, cats in rules.items()}


def verdict_history(session: Session, item_id: int) -> list[Verdict]:
    return list(
        session.exec(select(Verdict).where(Verdict.item_id == item_id).order_by(col(Verdict.id))).all()
    )


def item_notes(session: Session, item_id: int) -> list[ItemNote]:
    return list(
        session.exec(select(ItemNote).where(ItemNote.item_id == item_id).order_by(col(ItemNote.id))).all()
    )


__all__ = [
    "VERDICT_KINDS",
    "VerdictError",
    "add_note",
    "apply_verdicts",
    "audit",
    "categories_after",
    "effective_categories",
    "item_notes",
    "latest_verdicts",
    "record_verdict",
    "verdict_history",
]
