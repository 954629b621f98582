"""Analysts' verdicts made to hold: an item's stored categories are the rules' with its verdicts applied.

    settle_verdicts(session, item_ids, *, now, ...) -> list[int]   the items whose categories changed

`Item.categories` is what every reader uses (digest selection, site, exports, Atom, search filters, grouping),
so applying verdicts there, once, is what makes a rejected category disappear everywhere and an added one appear
everywhere, without each reader having to know about verdicts. `Item.matches` keeps what the rules found, so the
explanation of a rejected match stays visible. Re-applying is harmless: the verdict in force decides each category
it names, whatever the set it is applied to, so `reclassify` applies them again after the rules run.

Items whose categories changed are regrouped: one that lost its last category leaves its incident, one that
gained its first joins or opens one, and the incidents involved are recounted (labels, severity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from monitor.incidents.features import CountryLevel
from monitor.incidents.grouping import WINDOW_HOURS, group_items
from monitor.store.models import Item
from monitor.store.verdicts import categories_after, latest_verdicts


def settle_verdicts(
    session: Session,
    item_ids: Sequence[int],
    *,
    now: datetime,
    window_hours: float = WINDOW_HOURS,
    severity: Mapping[str, str] | None = None,
    country_level: CountryLevel | None = None,
) -> list[int]:
    """Write each item's categories with its verdicts in force applied and regroup those that changed. Flushes,
    does not commit: call it in the transaction that recorded the verdicts."""
    ids = sorted(set(item_ids))
    if not ids:
        return []
    latest = latest_verdicts(session, ids)
    changed: list[int] = []
    for item in session.exec(select(Item).where(col(Item.id).in_(ids))):
        assert item.id is not None
        if item.pruned:
            continue
        before = list(item.categories or [])
        after = categories_after(before, latest.get(item.id))
        if set(after) != set(before):
            item.categories = after
            session.add(item)
            changed.append(item.id)
    if changed:
        session.flush()
        group_items(
            session,
            changed,
            now=now,
            window_hours=window_hours,
            severity=severity,
            country_level=country_level,
        )
    return changed
