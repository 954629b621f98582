"""An analyst's corrections to grouping: merge two incidents, move a report out of one.

    merge_incidents(session, into_id, from_id, *, by, why) -> Merged    every report of one moves into the other
    move_item(session, item_id, *, by, why, into_id=None) -> Moved      into another incident, or a new one
    resolve_incident(session, incident_id) -> int | None                where an incident's reports are now

Both take the grouping lock, write who, when and why on each report moved (`Item.grouping`) and on each incident
(`Incident.explanation["triage"]`), recompute the incidents' counts, dates, labels, severity and fingerprints,
and number the change like a grouping call (`seq`), so every process's cache learns of it. They flush but do not
commit: the caller's transaction decides.

What the analyst decided stays decided. A report moved, or merged into another incident, is *pinned*: later
grouping (a poll that sees it again, `reclassify`) leaves it where it was put, whatever its categories, as long
as it has any (an incident holds only classified reports). The merged-away incident is kept, empty, as a
tombstone (`explanation["merged_into"]`), so a link to it still finds the incident its reports are in; an empty
incident is never a candidate for grouping, so the two stay merged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from monitor.errors import MonitorError
from monitor.incidents.cache import held
from monitor.incidents.explanation import EXPLANATION
from monitor.incidents.features import CountryLevel, shipped_country_level
from monitor.incidents.fingerprint import Fingerprint, utc
from monitor.incidents.updates import (
    MAX_MEMBERS,
    Changes,
    GroupStats,
    incident_explanation,
    incident_severity,
    lock_grouping,
    refresh,
)
from monitor.store.models import Incident, Item
from monitor.store.types import utcnow

_MAX_HOPS = 64  # a chain of merges longer than this is a loop written by hand


class TriageError(MonitorError):
    """A merge or move that cannot be done (unknown or merged-away incident, unclassified item...); nothing
    was changed."""


@dataclass(frozen=True)
class Merged:
    into_id: int  # the incident that now holds every report
    from_id: int  # the tombstone
    items: list[int]  # the reports moved, in order of publication


@dataclass(frozen=True)
class Moved:
    item_id: int
    from_id: int | None  # the incident it left (None: it was in none)
    into_id: int
    opened: bool  # into a new incident


def resolve_incident(session: Session, incident_id: int) -> int | None:
    """The incident that holds the reports of `incident_id` now: itself, or the survivor of the merges it went
    through; None when there is no such incident."""
    seen: set[int] = set()
    current = incident_id
    while len(seen) < _MAX_HOPS:
        inc = session.get(Incident, current)
        if inc is None:
            return None
        into = (inc.explanation or {}).get("merged_into")
        if not isinstance(into, int) or into in seen:
            return current
        seen.add(current)
        current = into
    return current


def merge_incidents(
    session: Session,
    into_id: int,
    from_id: int,
    *,
    by: str,
    why: str,
    now: datetime | None = None,
    severity: Mapping[str, str] | None = None,
    country_level: CountryLevel | None = None,
) -> Merged:
    """Move every report of incident `from_id` into `into_id`; `from_id` stays as a tombstone pointing to it.

    `by`: who (the analyst's account name); `why`: their reason, in words. `severity`: the configured level of each
    category, and `country_level`: places.yaml's country-level words, as `group_items` takes them (defaults: the
    taxonomy's levels, the shipped words). Raises TriageError and changes nothing when
    either incident is unknown, empty or merged away already, or when they are the same.
    """
    record = _record(by, why, now)
    lock_grouping(session)
    if into_id == from_id:
        raise TriageError(f"cannot merge incident {into_id} into itself")
    into = _live(session, into_id)
    src = _live(session, from_id)
    items = list(
        session.exec(
            select(Item).where(col(Item.incident_id) == from_id).order_by(col(Item.published), col(Item.id))
        )
    )
    seq = _next_seq(session)
    text = f"moved by {record['by']} from incident {from_id} into incident {into_id} when merging them"
    for item in items:
        _place(item, into_id, "merged", record, text, merged_from=from_id)
    fresh = _fingerprints(src, items, country_level or shipped_country_level())
    _note(into, {"action": "merged", "from": from_id, "items": len(items), **record})
    _note(src, {"action": "merged_into", "into": into_id, "items": len(items), **record}, merged_into=into_id)
    kept_updated = src.updated_at
    session.flush()
    _apply(session, [into_id, from_id], fresh, record, severity, seq, GroupStats())
    # The event did not change, it moved: a digest must not announce the tombstone as an update with no reports.
    src.updated_at = kept_updated
    session.flush()
    return Merged(into_id, from_id, [i.id for i in items if i.id is not None])


def move_item(
    session: Session,
    item_id: int,
    *,
    by: str,
    why: str,
    into_id: int | None = None,
    now: datetime | None = None,
    severity: Mapping[str, str] | None = None,
    country_level: CountryLevel | None = None,
) -> Moved:
    """Move a report out of its incident into incident `into_id`, or into a new incident of its own (None).

    `by`, `why`, `severity` as for `merge_incidents`; `country_level` as for `group_items` (the report's fingerprint
    is computed afresh). Raises TriageError and changes nothing when the item is unknown, pruned or unclassified,
    or the target is unknown, empty, merged away, or where the item already is.
    """
    record = _record(by, why, now)
    lock_grouping(session)
    item = session.get(Item, item_id)
    if item is None:
        raise TriageError(f"no item {item_id}")
    if item.pruned or not item.categories:
        raise TriageError(f"item {item_id} has no category (or its text was pruned): only classified reports are "
                          "grouped")  # fmt: skip
    src_id = item.incident_id
    if into_id is not None:
        if into_id == src_id:
            raise TriageError(f"item {item_id} is in incident {into_id} already")
        target = _live(session, into_id)
    seq = _next_seq(session)
    at = datetime.fromisoformat(record["at"])
    stats = GroupStats()
    if into_id is None:
        target = Incident(
            title=item.title,
            categories=sorted(item.categories),
            countries=sorted(item.countries),
            severity=incident_severity(item.categories, severity),
            first_seen=utc(item.published),
            last_seen=utc(item.published),
            updated_at=at,
            item_count=0,
            explanation=dict(EXPLANATION),
        )
        session.add(target)
        session.flush()
        assert target.id is not None
        stats.new_incidents.append(target.id)
    assert target.id is not None
    where = f"incident {target.id}" if into_id is not None else f"a new incident ({target.id})"
    source = f"out of incident {src_id} " if src_id is not None else ""
    _place(
        item, target.id, "moved", record, f"moved by {record['by']} {source}into {where}", moved_from=src_id
    )
    _note(target, {"action": "moved_in", "item": item_id, "from": src_id, **record})
    touched = [target.id]
    src = session.get(Incident, src_id) if src_id is not None else None
    if src is not None and src_id is not None:
        _note(src, {"action": "moved_out", "item": item_id, "into": target.id, **record})
        touched.append(src_id)
    kept_updated = src.updated_at if src is not None else None
    session.flush()
    levels = country_level if country_level is not None else shipped_country_level()
    fresh = {item_id: Fingerprint.of(item, levels)}
    _apply(session, touched, fresh, record, severity, seq, stats)
    if src is not None and kept_updated is not None and src.item_count == 0:
        src.updated_at = kept_updated  # emptied by the move: as after a merge, nothing new to announce
        session.flush()
    return Moved(item_id, src_id, target.id, into_id is None)


def _record(by: str, why: str, now: datetime | None) -> dict[str, Any]:
    by, why = (by or "").strip(), " ".join((why or "").split())
    if not by:
        raise TriageError("say who is making the change (by=...)")
    if not why:
        raise TriageError("say why (why=...): the reason is kept with the change")
    return {"by": by, "why": why, "at": utc(now or utcnow()).isoformat()}


def _live(session: Session, inc_id: int) -> Incident:
    inc = session.get(Incident, inc_id)
    if inc is None:
        raise TriageError(f"no incident {inc_id}")
    into = (inc.explanation or {}).get("merged_into")
    if into is not None:
        raise TriageError(f"incident {inc_id} was merged into incident {resolve_incident(session, inc_id)}")
    if inc.item_count <= 0:
        raise TriageError(f"incident {inc_id} has no reports")
    return inc


def _next_seq(session: Session) -> int:
    """The number of this change: one above every stored one (the lock is held), as a grouping call numbers its
    changes, so each process's cache rereads what this touched (monitor.incidents.cache)."""
    head = session.execute(sa_select(func.coalesce(func.max(col(Incident.seq)), 0))).scalar_one()
    return int(head) + 1


def _place(item: Item, inc_id: int, reason: str, record: Mapping[str, Any], text: str, **where: Any) -> None:
    earlier = item.grouping or {}
    item.incident_id = inc_id
    item.grouping = {
        "incident": inc_id,
        "reason": reason,
        "pinned": True,  # grouping leaves it here (grouping.pinned)
        **where,
        **record,
        # what put it where it was, briefly (the full record of that is replaced)
        "earlier": {k: earlier[k] for k in ("incident", "reason", "text", "by", "at") if k in earlier},
        "text": f"{text}: {record['why']} ({record['at']})",
    }


def _note(inc: Incident, action: dict[str, Any], **also: Any) -> None:
    explanation = incident_explanation(inc.explanation)
    explanation["triage"] = [*explanation.get("triage", []), action]
    inc.explanation = {**explanation, **also}  # a new dict: the JSON column sees the change


def _fingerprints(src: Incident, items: list[Item], levels: CountryLevel) -> dict[int, Fingerprint]:
    """The moved reports' fingerprints as their old incident stored them. Only its latest MAX_MEMBERS are kept
    there, and only the latest MAX_MEMBERS of the merged incident are kept after: those are among them."""
    stored = (src.signature or {}).get("members", {})
    out = {}
    for item in items[-MAX_MEMBERS:]:
        assert item.id is not None
        fp = stored.get(str(item.id))
        if fp is not None:
            out[item.id] = Fingerprint.from_json(item.id, fp)
        else:  # a signature written by an older version
            out[item.id] = Fingerprint.of(item, levels)
    return out


def _apply(
    session: Session,
    incident_ids: list[int],
    fresh: dict[int, Fingerprint],
    record: Mapping[str, Any],
    severity: Mapping[str, str] | None,
    seq: int,
    stats: GroupStats,
) -> None:
    changes = Changes(fresh=fresh)
    for inc_id in incident_ids:
        changes.left(inc_id)  # members changed: recompute from all of them
    at = datetime.fromisoformat(record["at"])
    with held(None) as cache:
        for inc_id in stats.new_incidents:
            cache.drop(inc_id)  # an id last seen in a transaction that rolled back
        refresh(
            session,
            sorted(incident_ids),
            changes,
            now=at,
            severity=severity,
            stats=stats,
            cache=cache,
            seq=seq,
        )
