"""The stored fingerprints, cached per process, and how the cache follows the database.

    read_heads(session, where) -> [IncidentHead]   the light query: dates, labels and "_rev" of some incidents
    GroupingCache.absorb(session, heads)           bring entries up to date, reading stale ones in full
    GroupingCache.sync(session, lo, hi) -> Synced  up to date for a grouping call; must hold `lock_grouping`
    process_cache()                                the process's cache (a throwaway one while another thread groups)

Every call used to read every open incident (a light query) to learn which cached fingerprints were still
current: a cost that grew with the number of open incidents, paid for every feed. Now each incident carries
`seq`, the number of the grouping call that last changed it: one more than the highest `seq` stored when that
call began. Grouping calls run one at a time (`lock_grouping`: an advisory lock on PostgreSQL, the write lock on
SQLite, taken before anything is read), so a call that read the highest `seq` as H sees every change numbered H
or lower, and every later change is numbered above H. The cache remembers the H it is up to date with and reads
only the incidents changed since, plus those it wrote itself in its last call, which are checked against their
stored "_rev" (a call whose transaction rolled back leaves the cache ahead of the database: those revs differ,
or the incident is gone). The cache holds every incident with reports since `horizon`; a call reaching further
back reads that stretch the old way. Another database, or one rebuilt, starts the cache afresh. Anything else
that changes incidents (an analyst's merge or move) numbers its change the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from monitor.incidents.fingerprint import Fingerprint, utc
from monitor.incidents.index import CandidateIndex, Slot, index_keys
from monitor.store.models import Incident

BATCH = 500  # ids per IN (...) query
_REV = re.compile(r'^\{\s*"_rev"\s*:\s*"([0-9a-f]{32})"')
_REV_CHARS = 64
# The horizon moves on in steps of a twelfth of the window (6 h of 72 h), not with every call.
EXPIRE_STEPS = 12


def chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), BATCH):
        yield ids[i : i + BATCH]


def rev_of(body: Mapping[str, Any]) -> str:
    """The revision of a signature body: what tells a cache its copy is the stored one."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class IncidentHead:
    """An incident as the light query reads it: no fingerprints, only the revision of its signature."""

    id: int
    first_seen: datetime
    last_seen: datetime
    categories: frozenset[str]
    rev: str | None  # None: a signature without "_rev" (written by an older version), never trusted
    item_count: int


def read_heads(session: Session, where: Any) -> list[IncidentHead]:
    q = sa_select(
        col(Incident.id),
        col(Incident.first_seen),
        col(Incident.last_seen),
        col(Incident.categories),
        # "_rev" is written first (see updates.refresh), so the head of the stored text is enough
        func.substr(cast(col(Incident.signature), Text), 1, _REV_CHARS),
        col(Incident.item_count),
    ).where(where)
    out = []
    for inc_id, first, last, categories, head, count in session.execute(q):
        found = _REV.match(head or "")
        out.append(
            IncidentHead(
                inc_id, utc(first), utc(last), frozenset(categories), found.group(1) if found else None, count
            )
        )
    return out


@dataclass
class CachedIncident:
    rev: str | None  # None: not to be trusted by a later call (a signature without "_rev")
    slots: dict[int, Slot]  # report id -> its slot in the cache's index
    first: datetime
    last: datetime
    categories: frozenset[str]


@dataclass
class OpenIncident:
    """An incident as grouping sees it: its dates and categories, and the reports joined in this call."""

    inc_id: int
    stored: CachedIncident | None  # its reports' fingerprints as stored (None for one opened in this call)
    first: datetime
    last: datetime
    categories: set[str]
    replaced: set[int] = field(default_factory=set)  # stored reports grouped again in this call: the new wins

    @classmethod
    def of(cls, inc_id: int, c: CachedIncident) -> OpenIncident:
        return cls(inc_id, c, c.first, c.last, set(c.categories))

    def add(self, m: Fingerprint, overlay: CandidateIndex) -> None:
        if self.stored is not None and m.item_id in self.stored.slots:
            self.replaced.add(m.item_id)
        overlay.add(Slot(self.inc_id, m, index_keys(m), False))
        self.first = min(self.first, m.published)
        self.last = max(self.last, m.published)
        self.categories |= m.categories

    def current(self, slot: Slot) -> bool:
        """Whether a slot of the cache's index is this incident's stored report, not superseded in this call."""
        if not slot.stored:
            return True
        m = slot.member.item_id
        return self.stored is not None and self.stored.slots.get(m) is slot and m not in self.replaced


@dataclass(frozen=True)
class Synced:
    head: int  # the highest `seq` stored when the call began
    before: dict[
        int, OpenIncident
    ]  # incidents open then that lie before the cache's horizon (read the old way)


class GroupingCache:
    def __init__(self) -> None:
        self.incidents: dict[int, CachedIncident] = {}
        self.index = CandidateIndex()
        self.lock = threading.Lock()
        self.db: str | None = None  # the database it describes
        self.seq = -1  # up to date with every change numbered this or lower
        self.horizon: datetime | None = None  # holds every incident with reports since then
        self.pending: set[int] = set()  # incidents the last call wrote: not known to have committed
        self.read: list[int] = []  # incidents the last `sync` read with the light query (what a call costs)

    def reset(self, db: str | None) -> None:
        self.incidents.clear()
        self.index = CandidateIndex()
        self.db, self.seq, self.horizon, self.pending = db, -1, None, set()

    def get(self, inc_id: int, rev: str | None) -> CachedIncident | None:
        c = self.incidents.get(inc_id)
        if c is None or rev is None or c.rev != rev:
            return None
        return c

    def install(
        self,
        inc_id: int,
        rev: str | None,
        members: Mapping[int, Fingerprint],
        first: datetime,
        last: datetime,
        categories: Iterable[str],
    ) -> CachedIncident:
        old = self.incidents.get(inc_id)
        old_slots = old.slots if old is not None else {}
        slots: dict[int, Slot] = {}
        for item_id, m in members.items():
            s = old_slots.get(item_id)
            if s is None or s.member is not m:
                s = Slot(inc_id, m, index_keys(m), True)
                self.index.add(s)
            slots[item_id] = s
        for item_id, s in old_slots.items():
            if slots.get(item_id) is not s:
                self.index.remove(s)
        c = self.incidents[inc_id] = CachedIncident(rev, slots, utc(first), utc(last), frozenset(categories))
        return c

    def drop(self, inc_id: int) -> None:
        c = self.incidents.pop(inc_id, None)
        for s in c.slots.values() if c is not None else ():
            self.index.remove(s)

    def expire(self, before: datetime, slack: timedelta) -> None:
        """Forget incidents whose last report is older than `before`, once the horizon is `slack` behind it."""
        if self.horizon is None or before - self.horizon < slack:
            return
        for inc_id in [i for i, c in self.incidents.items() if c.last < before]:
            self.drop(inc_id)
        self.horizon = before

    def absorb(self, session: Session, heads: Iterable[IncidentHead]) -> dict[int, CachedIncident]:
        """Bring the cache up to date with these heads: current entries stay, others are read in full."""
        out: dict[int, CachedIncident] = {}
        stale: list[int] = []
        for h in heads:
            if not h.item_count:
                self.drop(h.id)
                continue
            c = self.get(h.id, h.rev)
            if c is None:
                stale.append(h.id)
                continue
            c.first, c.last, c.categories = h.first_seen, h.last_seen, h.categories
            out[h.id] = c
        for chunk in chunks(stale):
            full = sa_select(
                col(Incident.id),
                col(Incident.first_seen),
                col(Incident.last_seen),
                col(Incident.categories),
                col(Incident.signature),
            ).where(col(Incident.id).in_(chunk))
            for inc_id, first, last, categories, signature in session.execute(full):
                sig = signature or {}
                raw = sig.get("members", {})
                members = {int(k): Fingerprint.from_json(int(k), v) for k, v in raw.items()}
                rev = sig.get("_rev") if isinstance(sig.get("_rev"), str) else None
                out[inc_id] = self.install(inc_id, rev, members, first, last, categories)
        return out

    def sync(self, session: Session, lo: datetime, hi: datetime) -> Synced:
        """Bring the cache up to date for items published between lo and hi (window included). The caller holds
        `lock_grouping`, taken before it read anything."""
        db = session.get_bind().engine.url.render_as_string(hide_password=True)
        head = session.execute(sa_select(func.coalesce(func.max(col(Incident.seq)), 0))).scalar_one()
        self.read = []
        if self.db != db or head < self.seq or self.horizon is None:
            self.reset(db)
            self.absorb(session, self._heads(session, col(Incident.last_seen) >= lo))
            self.horizon = lo
        else:
            changed = col(Incident.seq) > self.seq
            if self.pending:
                changed = changed | col(Incident.id).in_(sorted(self.pending))
            rows = self._heads(session, changed)
            seen = {r.id for r in rows}
            for inc_id in self.pending - seen:
                self.drop(inc_id)  # opened by a call that rolled back
            # changes to incidents it does not hold matter only when they lie after the horizon
            horizon = self.horizon
            self.absorb(session, [r for r in rows if r.id in self.incidents or r.last_seen >= horizon])
        self.seq, self.pending = head, set()
        before: dict[int, OpenIncident] = {}
        if lo < self.horizon:
            rows = self._heads(
                session,
                (col(Incident.last_seen) >= lo)
                & (col(Incident.last_seen) < self.horizon)
                & (col(Incident.first_seen) <= hi),
            )
            for inc_id, c in self.absorb(session, rows).items():
                before[inc_id] = OpenIncident.of(inc_id, c)
        return Synced(head, before)

    def _heads(self, session: Session, where: Any) -> list[IncidentHead]:
        rows = read_heads(session, where)
        self.read.extend(r.id for r in rows)
        return rows


_CACHE = GroupingCache()


@contextmanager
def process_cache() -> Iterator[GroupingCache]:
    """The process's cache, or a throwaway one while another thread is grouping (never wait for it)."""
    cache = _CACHE
    if not cache.lock.acquire(blocking=False):
        yield GroupingCache()
        return
    try:
        yield cache
    finally:
        cache.lock.release()


@contextmanager
def held(cache: GroupingCache | None) -> Iterator[GroupingCache]:
    """`cache` when given (tests, tools that keep their own), else the process's."""
    if cache is None:
        with process_cache() as c:
            yield c
        return
    yield cache
