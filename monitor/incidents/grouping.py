"""group_items: the grouping call. It reads the items, asks `scoring.choose_incident` where each one goes, and
writes the answer (`updates.refresh`); the cache (monitor.incidents.cache) keeps it from rereading incidents."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from monitor.incidents.cache import EXPIRE_STEPS, GroupingCache, OpenIncident, chunks, held
from monitor.incidents.display import display_record, fresh_display
from monitor.incidents.explanation import EXPLANATION, describe, first_entry, join_entry
from monitor.incidents.features import CountryLevel, shipped_country_level
from monitor.incidents.fingerprint import Fingerprint, utc
from monitor.incidents.index import CandidateIndex, Slot, index_keys
from monitor.incidents.scoring import choose_incident
from monitor.incidents.updates import Changes, GroupStats, incident_severity, lock_grouping, refresh
from monitor.store.models import Incident, Item

WINDOW_HOURS = 72.0


def pinned(item: Item) -> bool:
    """Whether an analyst put the item in its incident (moved it, or merged its incident): grouping leaves it."""
    return bool(item.grouping and item.grouping.get("pinned"))


def group_items(
    session: Session,
    item_ids: Sequence[int],
    *,
    now: datetime,
    window_hours: float = WINDOW_HOURS,
    severity: Mapping[str, str] | None = None,
    country_level: CountryLevel | None = None,
    cache: GroupingCache | None = None,
) -> GroupStats:
    """Assign each given classified item to an open incident or a new one, and bring those incidents up to date.

    Items without categories are left out (and leave the incident they were in, e.g. after `reclassify`); an
    item already in an incident that still shares a category with it stays there, and so does one an analyst
    put there. `severity`: the configured level of each category; `country_level`: places.yaml's words that
    tell only the country (default: the shipped list); `cache`: the fingerprints cache (default: the
    process's). Flushes but does not commit.
    """
    stats = GroupStats()
    levels = country_level if country_level is not None else shipped_country_level()
    now = utc(now)
    window = timedelta(hours=window_hours)
    ids = sorted(set(item_ids))
    if ids:
        lock_grouping(session)
    # Most reports of a poll match no category and were never grouped: tell them apart without loading texts.
    wanted: list[int] = []
    for chunk in chunks(ids):
        light = sa_select(col(Item.id), col(Item.categories), col(Item.incident_id), col(Item.pruned))
        for item_id, categories, incident_id, pruned in session.execute(light.where(col(Item.id).in_(chunk))):
            if incident_id is not None or (categories and not pruned):
                wanted.append(item_id)
    items: list[Item] = []
    for chunk in chunks(wanted):
        items.extend(session.exec(select(Item).where(col(Item.id).in_(chunk))))
    found = {i.id for i in items}
    stats.skipped.extend(i for i in ids if i not in found)
    items.sort(key=lambda i: (utc(i.published), i.id or 0))

    changes = Changes()
    to_match: list[Item] = []
    for item in items:
        assert item.id is not None
        if item.pruned or not item.categories:
            if item.incident_id is not None:
                changes.left(item.incident_id)
                item.incident_id = None
                item.grouping = None
            stats.skipped.append(item.id)
            continue
        changes.fresh[item.id] = Fingerprint.of(item, levels)
        if item.incident_id is not None:
            inc = session.get(Incident, item.incident_id)
            if inc is not None and (pinned(item) or set(inc.categories) & set(item.categories)):
                # its text, categories or countries may have changed: refresh the fingerprint and the labels
                changes.touched.add(item.incident_id)
                changes.full.add(item.incident_id)
                stats.assigned[item.id] = item.incident_id
                _refresh_display(item)
                continue
            # It no longer fits (reclassified into other categories): it leaves and is grouped afresh.
            changes.left(item.incident_id)
            item.incident_id = None
            item.grouping = None
        to_match.append(item)

    if not to_match and not changes.touched:
        return stats  # nothing classified (most polls): no incident to read
    with held(cache) as c:
        if to_match:
            lo = utc(to_match[0].published) - window
            hi = utc(to_match[-1].published) + window
        else:
            lo = hi = now - window  # nothing to match: the cache need only follow the database
        synced = c.sync(session, lo, hi)
        opened = synced.before
        overlay = CandidateIndex()  # the reports joined in this call

        for item in to_match:
            assert item.id is not None
            me = changes.fresh[item.id]
            join = choose_incident(
                me, _candidates(me, c, overlay, opened), window=window, country_level=levels
            )
            if join is None:
                inc = Incident(
                    title=item.title,
                    categories=sorted(item.categories),
                    countries=sorted(item.countries),
                    severity=incident_severity(item.categories, severity),
                    first_seen=me.published,
                    last_seen=me.published,
                    updated_at=now,
                    item_count=0,
                    explanation=EXPLANATION,
                )
                session.add(inc)
                session.flush()
                assert inc.id is not None
                stats.new_incidents.append(inc.id)
                c.drop(inc.id)  # an id last seen in a transaction that rolled back
                op = opened[inc.id] = OpenIncident(
                    inc.id, None, me.published, me.published, set(item.categories)
                )
                entry = first_entry(inc.id, item.categories)
            else:
                op = opened[join.incident_id]
                entry = join_entry(me, join, op.categories)
            entry["text"] = describe(entry, window_hours)
            op.add(me, overlay)
            item.incident_id = op.inc_id
            stats.assigned[item.id] = op.inc_id
            item.grouping = entry
            _refresh_display(item)  # written with the assignment, in the same UPDATE
            changes.touched.add(op.inc_id)
            changes.members_changed.add(op.inc_id)
            changes.added.setdefault(op.inc_id, []).append((me, item.title))

        session.flush()
        for chunk in chunks(sorted(changes.touched)):
            refresh(
                session, chunk, changes, now=now, severity=severity, stats=stats, cache=c, seq=synced.head + 1
            )
        c.expire(lo, window / EXPIRE_STEPS)
    stats.new_incidents.sort()
    stats.updated_incidents.sort()
    return stats


def _refresh_display(item: Item) -> None:
    """Work out what the site shows of a grouped report (monitor.incidents.display) unless its record is current:
    once here instead of at every site build."""
    if fresh_display(item.display, item.url, item.title, item.text, item.html) is None:
        item.display = display_record(item.url, item.title, item.text, item.html)


def _candidates(
    me: Fingerprint, cache: GroupingCache, overlay: CandidateIndex, opened: dict[int, OpenIncident]
) -> Iterator[tuple[OpenIncident, Fingerprint]]:
    """(incident, report) pairs sharing an index key with `me`: the cache's current stored reports and those joined
    in this call."""
    found: set[Slot] = set()
    keys = index_keys(me)
    cache.index.candidates(me, keys, found)
    overlay.candidates(me, keys, found)
    for slot in found:
        op = opened.get(slot.inc_id)
        if op is None:
            stored = cache.incidents.get(slot.inc_id)
            if stored is None:
                continue
            op = opened[slot.inc_id] = OpenIncident.of(slot.inc_id, stored)
        if op.current(slot):
            yield op, slot.member
