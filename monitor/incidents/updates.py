"""Incidents as stored: the grouping lock, and bringing an incident's fields and signature up to date.

lock_grouping(session)                       one transaction at a time changes incidents
refresh(session, ids, changes, ...)          counts, dates, labels, severity, fingerprints, `seq`, after a call
recount(session, ids) -> {id: Summary}       an incident's fields recomputed from all its members
summary_after(incident, joined) -> Summary   ... or from what it stored, when reports only joined
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlmodel import Session, col, select

from monitor.incidents.cache import GroupingCache, chunks, rev_of
from monitor.incidents.explanation import EXPLANATION
from monitor.incidents.fingerprint import Fingerprint, utc
from monitor.severity import default_severity, most_severe
from monitor.store.advisory_locks import transaction_lock
from monitor.store.models import Incident, Item

MAX_MEMBERS = 20  # fingerprints kept per incident: the latest reports are what a new one is compared with


def lock_grouping(session: Session) -> None:
    """Make this transaction the only one changing incidents until it ends; take it before anything is read.

    Two workers grouping reports of one event at once would each open an incident for it, and the caches' `seq`
    numbering (monitor.incidents.cache) relies on one change at a time. Taking it again in one transaction is free.
    """
    if session.get_bind().dialect.name == "sqlite":
        # A write takes SQLite's write lock (reads alone would not): an update that changes no row.
        session.execute(sa_update(Incident).where(col(Incident.id) == -1).values(seq=0))
    else:
        transaction_lock(session, "incidents")


def incident_severity(categories: Iterable[str], severity: Mapping[str, str] | None = None) -> str:
    """The most severe of the categories' severities (`severity` as configured, else the taxonomy's)."""
    table = severity or {}
    return most_severe(table.get(c) or default_severity(c) for c in categories)


@dataclass
class GroupStats:
    new_incidents: list[int] = field(default_factory=list)
    updated_incidents: list[int] = field(
        default_factory=list
    )  # existing incidents that changed (not new ones)
    assigned: dict[int, int] = field(default_factory=dict)  # item id -> incident id, for the items given
    skipped: list[int] = field(default_factory=list)  # unknown, pruned or unclassified items

    def to_json(self) -> dict[str, Any]:
        return {
            "new_incidents": self.new_incidents,
            "updated_incidents": self.updated_incidents,
            "assigned": {str(k): v for k, v in self.assigned.items()},
            "skipped": self.skipped,
        }


@dataclass
class Changes:
    """What one call did to incidents, for `refresh`."""

    fresh: dict[int, Fingerprint] = field(default_factory=dict)  # fingerprints of the items given, by id
    added: dict[int, list[tuple[Fingerprint, str]]] = field(default_factory=dict)  # joined, with their titles
    touched: set[int] = field(default_factory=set)  # incidents whose members or fingerprints changed
    members_changed: set[int] = field(default_factory=set)
    full: set[int] = field(
        default_factory=set
    )  # to recompute from all their members (a report left or changed)

    def left(self, inc_id: int) -> None:
        """A report left the incident."""
        self.touched.add(inc_id)
        self.members_changed.add(inc_id)
        self.full.add(inc_id)


@dataclass
class Summary:
    """An incident's fields that follow from its members."""

    title: str
    categories: set[str]
    countries: set[str]
    count: int
    first: tuple[datetime, int] | None  # (published, id) of the first report
    last: datetime | None
    titled: (
        tuple[datetime, int] | None
    )  # the first report with a title that is not blank: the incident's title


def key_json(key: tuple[datetime, int] | None) -> list[Any] | None:
    return None if key is None else [utc(key[0]).isoformat(), key[1]]


def _key_of(value: Any) -> tuple[datetime, int] | None:
    return None if not value else (utc(datetime.fromisoformat(value[0])), int(value[1]))


def recount(
    session: Session, incident_ids: Sequence[int]
) -> tuple[dict[int, Summary], dict[int, dict[int, datetime]]]:
    """Recompute from every member (after a report left or changed); also, per incident, its members' publication
    dates."""
    rows: dict[int, list[tuple[datetime, int]]] = {i: [] for i in incident_ids}
    published: dict[int, dict[int, datetime]] = {i: {} for i in incident_ids}
    labels: dict[int, tuple[set[str], set[str]]] = {i: (set(), set()) for i in incident_ids}
    for chunk in chunks(list(incident_ids)):
        # The members' ids and dates (no texts, no JSON), ...
        q = sa_select(col(Item.incident_id), col(Item.id), col(Item.published)).where(
            col(Item.incident_id).in_(chunk)
        )
        for inc_id, item_id, when in session.execute(q):
            rows[inc_id].append((utc(when), item_id))
            published[inc_id][item_id] = utc(when)
        # ... their distinct categories and countries (as stored text: the database leaves out the repeats) ...
        distinct = (
            sa_select(
                col(Item.incident_id), cast(col(Item.categories), Text), cast(col(Item.countries), Text)
            )
            .where(col(Item.incident_id).in_(chunk))
            .distinct()
        )
        for inc_id, cats_text, countries_text in session.execute(distinct):
            labels[inc_id][0].update(_labels(cats_text))
            labels[inc_id][1].update(_labels(countries_text))
    for members in rows.values():
        members.sort()
    # ... and the title of the first report that has one.
    titles = _first_titles(session, rows)
    out = {}
    for inc_id, members in rows.items():
        title, titled = titles.get(inc_id, ("", None))
        out[inc_id] = Summary(
            title=title,
            categories=labels[inc_id][0],
            countries=labels[inc_id][1],
            count=len(members),
            first=members[0] if members else None,
            last=members[-1][0] if members else None,
            titled=titled,
        )
    return out, published


def summary_after(inc: Incident, joined: Sequence[tuple[Fingerprint, str]]) -> Summary | None:
    """The incident's fields once the reports in `joined` (and nothing else) have joined it; None when the stored
    signature does not say where its title came from (written by an older version): recompute in full."""
    sig = inc.signature or {}
    if inc.item_count > 0 and "first" not in sig:
        return None
    empty = inc.item_count == 0
    first = None if empty else _key_of(sig["first"])
    titled = None if empty else _key_of(sig.get("titled"))
    title = "" if empty else inc.title
    categories = set() if empty else set(inc.categories)
    countries = set() if empty else set(inc.countries)
    last = None if empty else utc(inc.last_seen)
    titled_new = first_new = None
    for m, t in joined:
        k = (m.published, m.item_id)
        categories |= m.categories
        countries |= m.countries
        last = m.published if last is None else max(last, m.published)
        if first is None or k < first:
            first, first_new = k, t
        if t.strip() and (titled is None or k < titled):
            titled, titled_new = k, t
    if titled_new is not None:
        title = titled_new
    elif titled is None and first_new is not None:
        title = first_new  # no report has a title: the first one's stands in
    return Summary(title, categories, countries, inc.item_count + len(joined), first, last, titled)


# What an analyst did to an incident (merges, moves), kept beside the rule whatever grouping does later.
TRIAGE_KEYS = ("triage", "merged_into")


def incident_explanation(current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The rule in words, plus the analysts' record the incident already carries."""
    kept = {k: current[k] for k in TRIAGE_KEYS if current and k in current}
    return {**EXPLANATION, **kept}


def _fields(inc: Incident) -> tuple[Any, ...]:
    return (
        inc.title,
        inc.categories,
        inc.countries,
        inc.severity,
        inc.first_seen,
        inc.last_seen,
        inc.item_count,
    )


def refresh(
    session: Session,
    incident_ids: Sequence[int],
    changes: Changes,
    *,
    now: datetime,
    severity: Mapping[str, str] | None,
    stats: GroupStats,
    cache: GroupingCache,
    seq: int,
) -> None:
    """Bring the touched incidents' fields up to date; bump `updated_at` only on a real change.

    An incident that reports only joined is updated from what it stored and the newcomers, whatever its size; one
    that a report left, or whose report changed, is recomputed from all its members."""
    fresh, added = changes.fresh, changes.added
    incidents = {
        inc.id: inc for inc in session.exec(select(Incident).where(col(Incident.id).in_(incident_ids)))
    }
    summaries: dict[int, Summary] = {}
    for inc_id, row in incidents.items():
        assert inc_id is not None
        found = None if inc_id in changes.full else summary_after(row, added.get(inc_id, ()))
        if found is not None:
            summaries[inc_id] = found
    recomputed, published = recount(
        session, [i for i in incident_ids if i in incidents and i not in summaries]
    )
    summaries.update(recomputed)
    new = set(stats.new_incidents)
    for inc_id in incident_ids:
        inc = incidents.get(inc_id)
        if inc is None:
            continue
        sm = summaries[inc_id]
        before = _fields(inc)
        if sm.first is not None and sm.last is not None:
            categories = sorted(sm.categories)
            inc.title = sm.title
            inc.categories = categories
            inc.countries = sorted(sm.countries)
            inc.severity = incident_severity(categories, severity)
            inc.first_seen = sm.first[0]
            inc.last_seen = sm.last
        inc.item_count = sm.count

        old_sig = inc.signature or {}
        fps: dict[int, dict[str, Any]] = {int(k): v for k, v in old_sig.get("members", {}).items()}
        mine = published.get(inc_id, {})
        if inc_id in recomputed:  # reports may have left: keep the fingerprints of its members only
            fps = {i: v for i, v in fps.items() if i in mine}
            for item_id in mine.keys() & fresh.keys():
                fps[item_id] = fresh[item_id].to_json()
        else:
            for m, _ in added.get(inc_id, ()):
                fps[m.item_id] = fresh[m.item_id].to_json()
        order = {i: mine[i] if i in mine else utc(datetime.fromisoformat(v["t"])) for i, v in fps.items()}
        keep = sorted(fps, key=lambda i: (order[i], i))[-MAX_MEMBERS:]
        kept = {i: fps[i] for i in keep}
        body = {
            "window_members": MAX_MEMBERS,
            "first": key_json(sm.first),
            "titled": key_json(sm.titled),
            "names": sorted({n for v in kept.values() for n in v.get("n", ())}),
            "persons": sorted({p for v in kept.values() for p in v.get("p", ())}),
            "places": sorted({g for v in kept.values() for g in v.get("g", ())}),
            "members": {str(i): kept[i] for i in keep},
        }
        rev = rev_of(body)
        signature = {"_rev": rev, **body}  # first, so that a light query can read it (cache.read_heads)
        changed = before != _fields(inc) or inc_id in changes.members_changed
        if signature != old_sig:
            inc.signature = signature
        if changed or signature != old_sig:
            inc.seq = seq  # other processes' caches learn of the change by this
        # The cache follows: reports kept from the old signature keep their fingerprints if it was the cached one.
        cache.pending.add(inc_id)
        if not sm.count:
            cache.drop(inc_id)
        else:
            was = cache.get(inc_id, old_sig.get("_rev"))
            reuse = {i: s.member for i, s in was.slots.items() if i not in fresh} if was is not None else {}
            cache.install(
                inc_id,
                rev,
                {i: reuse[i] if i in reuse else Fingerprint.from_json(i, kept[i]) for i in keep},
                inc.first_seen,
                inc.last_seen,
                inc.categories,
            )
        explanation = incident_explanation(inc.explanation)
        if inc.explanation != explanation:
            inc.explanation = explanation  # one written before revision 0005 held every report's reason
        if changed:
            inc.updated_at = now
            if inc_id not in new:
                stats.updated_incidents.append(inc_id)
    session.flush()


_LABELS: dict[str, frozenset[str]] = {}


def _labels(text: str) -> frozenset[str]:
    """A stored JSON list of categories or countries, decoded once per process."""
    found = _LABELS.get(text)
    if found is None:
        if len(_LABELS) > 50_000:
            _LABELS.clear()
        found = _LABELS[text] = frozenset(json.loads(text))
    return found


def _first_titles(
    session: Session, rows: Mapping[int, Sequence[tuple[datetime, int]]]
) -> dict[int, tuple[str, tuple[datetime, int] | None]]:
    """Per incident, the title of its first report (in order of publication) whose title is not blank, with that
    report's key, else the first report's title and None: read a few titles at a time, as the first is almost
    always the one."""
    out: dict[int, tuple[str, tuple[datetime, int] | None]] = {}
    pending = {inc_id: 0 for inc_id, members in rows.items() if members}
    step = 2
    while pending:
        wanted = {
            m[1]: inc_id for inc_id, start in pending.items() for m in rows[inc_id][start : start + step]
        }
        found: dict[int, str] = {}
        for chunk in chunks(sorted(wanted)):
            q = sa_select(col(Item.id), col(Item.title)).where(col(Item.id).in_(chunk))
            found.update((item_id, title) for item_id, title in session.execute(q))

        for inc_id, start in list(pending.items()):
            members = rows[inc_id]
            titled = next((m for m in members[start : start + step] if found[m[1]].strip()), None)
            if titled is not None:
                out[inc_id] = (found[titled[1]], titled)
                del pending[inc_id]
            elif start + step >= len(members):
                first = members[0][1]
                title = (
                    found[first]
                    if first in found
                    else session.execute(sa_select(col(Item.title)).where(col(Item.id) == first)).scalar_one()
                )
                out[inc_id] = (title, None)
                del pending[inc_id]
            else:
                pending[inc_id] = start + step
        step *= 4
    return out
