"""What the analysts' verdicts say about the rules: labelled items for `eval`, suggestions for a rule author, and
the precision of each category as judged.

    labelled_items(session, since=None) -> Iterator[dict]     eval JSONL records of every item with a verdict
    suggest(session, category, ...) -> Suggestion             missed items, rejected matches, candidate terms
    category_precision(session, days=30, now=...) -> {id: Precision}

A verdict counts once per (item, category): the latest one, as everywhere else. Nothing here edits config.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from monitor.rules.normalize import words
from monitor.store.models import Item
from monitor.store.verdicts import categories_after, latest_verdicts
from monitor.store.workspace_models import Verdict

_BATCH = 500
_MIN_LEN = 3  # shorter words are particles and prepositions in all three languages
_CONTEXT_LIMIT = 2000  # items of the rest of the archive a suggestion compares against


def _verdict_item_ids(session: Session, since: datetime | None, category: str | None = None) -> list[int]:
    q = select(Verdict.item_id).distinct()
    if since is not None:
        q = q.where(col(Verdict.created_at) >= since)
    if category is not None:
        q = q.where(col(Verdict.category) == category)
    return sorted({int(i) for i in session.exec(q)})


def _items(session: Session, ids: list[int]) -> Iterator[Item]:
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        yield from session.exec(select(Item).where(col(Item.id).in_(chunk)).order_by(col(Item.id)))


def labelled_items(session: Session, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """One `eval` record per item that has a verdict (given since `since`), its categories as the analysts left
    them: the rules' categories with every verdict in force applied."""
    ids = _verdict_item_ids(session, since)
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        latest = latest_verdicts(session, chunk)
        for item in _items(session, chunk):
            assert item.id is not None
            if item.pruned:
                continue  # the text is gone: nothing left to score the rules on
            yield {
                "id": str(item.id),
                "title": item.title,
                "text": item.text,
                "categories": categories_after(item.categories or [], latest.get(item.id)),
                "lang": item.language,
            }


@dataclass(frozen=True)
class Judged:
    id: int
    title: str
    author: str
    at: datetime
    terms: tuple[str, ...] = ()  # for a rejected match: the terms that made the rules fire

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "author": self.author,
            "at": self.at.isoformat(),
            "terms": list(self.terms),
        }


@dataclass(frozen=True)
class Candidate:
    term: str
    missed: int  # missed items that have it
    elsewhere: int  # other items compared that have it
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "missed": self.missed,
            "elsewhere": self.elsewhere,
            "score": round(self.score, 3),
        }


@dataclass(frozen=True)
class Suggestion:
    category: str
    missed: tuple[Judged, ...] = ()
    rejected: tuple[Judged, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    rejected_terms: Mapping[str, int] = field(default_factory=dict)  # term -> rejected matches it fired in

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "missed": [j.to_json() for j in self.missed],
            "rejected": [j.to_json() for j in self.rejected],
            "rejected_terms": dict(self.rejected_terms),
            "candidates": [c.to_json() for c in self.candidates],
        }


def _terms_of(matches: Mapping[str, Any], category: str) -> tuple[str, ...]:
    """The terms that fired for `category`, in the order stored (see Explanation.to_json)."""
    found = matches.get(category)
    hits: Iterable[Any]
    if isinstance(found, Mapping):
        hits = found.get("hits") or found.get("terms") or []
    elif isinstance(found, list):
        hits = found
    else:
        return ()
    out: list[str] = []
    for h in hits:
        term = h.get("term") if isinstance(h, Mapping) else h
        if isinstance(term, str) and term not in out:
            out.append(term)
    return tuple(out)


def _vocabulary(title: str, text: str) -> set[str]:
    return {w for w in words(f"{title} {text}") if len(w) >= _MIN_LEN and not w.isdigit()}


def candidate_terms(
    missed: Iterable[set[str]], rest: Iterable[set[str]], *, limit: int = 25
) -> list[Candidate]:
    """Pure: words frequent in the missed items and rare in the rest, by smoothed log-odds of document frequency.
    A word must occur in at least two missed items when there are several, so one item's vocabulary does not
    crowd out what they share."""
    missed_sets, rest_sets = list(missed), list(rest)
    n_m, n_r = len(missed_sets), len(rest_sets)
    if not n_m:
        return []
    df_m: Counter[str] = Counter(w for s in missed_sets for w in s)
    df_r: Counter[str] = Counter(w for s in rest_sets for w in s)
    need = 2 if n_m >= 3 else 1
    scored = []
    for w, a in df_m.items():
        if a < need:
            continue
        b = df_r.get(w, 0)
        score = math.log((a + 0.5) / (n_m - a + 0.5)) - math.log((b + 0.5) / (n_r - b + 0.5))
        scored.append(Candidate(w, a, b, score))
    scored.sort(key=lambda c: (-c.score, -c.missed, c.term))
    return scored[:limit]


def suggest(session: Session, category: str, *, limit: int = 25) -> Suggestion:
    """From the verdicts on `category`: the items the rules missed (an analyst added it), the matches analysts
    rejected with the terms that fired, and candidate terms from the missed items' words (folded as the rules
    fold them: case, ё/е, NFKC). Candidate words are compared with the rest of the archive's recent items."""
    ids = _verdict_item_ids(session, None, category)
    latest = latest_verdicts(session, ids)
    missed: list[Judged] = []
    rejected: list[Judged] = []
    missed_vocab: list[set[str]] = []
    rejected_terms: Counter[str] = Counter()
    judged_ids: set[int] = set()
    for item in _items(session, ids):
        assert item.id is not None
        v = latest.get(item.id, {}).get(category)
        if v is None:
            continue
        judged_ids.add(item.id)
        if v.verdict == "add":
            missed.append(Judged(item.id, item.title, v.author, v.created_at))
            missed_vocab.append(_vocabulary(item.title, item.text))
        elif v.verdict == "reject":
            terms = _terms_of(item.matches or {}, category)
            rejected_terms.update(terms)
            rejected.append(Judged(item.id, item.title, v.author, v.created_at, terms))
    rest = session.exec(
        select(Item.id, Item.title, Item.text)
        .where(col(Item.pruned).is_(False))
        .order_by(col(Item.id).desc())
        .limit(_CONTEXT_LIMIT)
    )
    rest_vocab = [_vocabulary(t, x) for i, t, x in rest if i not in judged_ids]
    return Suggestion(
        category=category,
        missed=tuple(missed),
        rejected=tuple(rejected),
        candidates=tuple(candidate_terms(missed_vocab, rest_vocab, limit=limit)),
        rejected_terms=dict(rejected_terms.most_common()),
    )


@dataclass(frozen=True)
class Precision:
    category: str
    confirmed: int = 0
    rejected: int = 0
    added: int = 0  # misses: not a judged match, shown beside it

    @property
    def judged(self) -> int:
        return self.confirmed + self.rejected

    @property
    def precision(self) -> float | None:
        return self.confirmed / self.judged if self.judged else None

    def to_json(self) -> dict[str, Any]:
        p = self.precision
        return {
            "category": self.category,
            "confirmed": self.confirmed,
            "rejected": self.rejected,
            "added": self.added,
            "precision": None if p is None else round(p, 4),
        }


def category_precision(session: Session, *, days: int = 30, now: datetime) -> dict[str, Precision]:
    """Per category, over the verdicts in force given in the last `days`: confirmed and rejected matches, their
    precision, and the misses analysts added."""
    since = now - timedelta(days=days)
    ids = _verdict_item_ids(session, since)
    counts: dict[str, Counter[str]] = {}
    for start in range(0, len(ids), _BATCH):
        for per_cat in latest_verdicts(session, ids[start : start + _BATCH]).values():
            for cat, v in per_cat.items():
                if v.created_at >= since:
                    counts.setdefault(cat, Counter())[v.verdict] += 1
    return {
        cat: Precision(cat, c.get("confirm", 0), c.get("reject", 0), c.get("add", 0))
        for cat, c in sorted(counts.items())
    }
