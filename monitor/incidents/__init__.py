"""Group items into incidents: one event, reported by several outlets in several languages over a day or two.

    group_items(session, item_ids, now=...) -> GroupStats   assign classified items to open incidents or new ones
    explain_incident(session, item_id) -> dict | None       which incident an item is in, and why

An item joins an *open* incident (one whose reports lie within `window_hours` of it) that shares a category with
it, when, compared with one of the incident's reports:

- **text**: the stems of title and lead overlap (Jaccard >= TEXT_MIN) - the same story in the same language,
  reworded or reprinted - unless each names people and they name none in common (two detentions written from one
  template are two incidents); a near-copy (>= TEXT_COPY) joins regardless; or
- **names**: they name the same person (two capitalised words, transliteration-blind, so "Zhanbolat Mamai" is
  "Жанболата Мамая"), or share two other names (people, places, organisations), and their countries agree - the
  same story across languages; or
- **places**: they are in different languages, published within CROSS_HOURS of each other, name the same
  specific place or institution (a gazetteer entry other than the country itself: "Mazhilis" is "Мажилис" is
  "Мәжіліс"), their headlines do not name different places, they do not name different people, and the
  language-independent evidence adds up to PLACES_MIN points:

      each shared specific place (at most 2)                  2
      each shared name that is not a place (at most 2)        1
      each shared category after the first (at most 2)        0.5
      each shared term set of a shared category (at most 2)   0.5   (@detain, @ngo: named alike in every language)
      published within CLOSE_HOURS of each other              0.5

  A shared place alone (2) is not enough - the Mazhilis passes several bills a day and a city sees several
  detentions - it needs corroboration: a second place, a name, or two of the weaker signals. Sharing only the
  country ("Kazakhstan", the tenge, the akimat) counts nothing.

Among several matching incidents the strongest match wins (a places match ranks below any other), then the
lowest incident id, and items are taken in order of publication, so the same items always give the same
incidents. Each decision is stored on its item (`Item.grouping`), so `monitor explain --item` can say why, and
the features compared in the incident's `signature`, so later reports are matched without reloading texts. A
report joining an incident updates it from what it stored (counts, dates, labels, where its title came from):
the cost of a join does not grow with the size of the incident.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, func
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlmodel import Session, col, select

from monitor.incidents.features import COUNTRY_LEVEL_KEYS, Features, extract, hit_sets, jaccard, place_keys
from monitor.severity import default_severity, most_severe
from monitor.store.locks import transaction_lock
from monitor.store.models import Incident, Item

__all__ = [
    "WINDOW_HOURS",
    "GroupStats",
    "explain_incident",
    "group_items",
    "incident_severity",
    "lock_grouping",
]

WINDOW_HOURS = 72.0
TEXT_MIN = 0.45  # below this, same-language rewrites of different events start to look alike
TEXT_COPY = 0.8  # a reprint: joins even when a misspelt name makes the people look different
NAMES_MIN = 2  # shared names (not a full person name) needed to join across languages
# The places rule (the module docstring says why these numbers).
CROSS_HOURS = 36.0  # reports in two languages further apart than this are not matched on places
CLOSE_HOURS = 12.0  # reports this close earn CLOSE_POINTS
PLACES_MIN = 3.0  # points needed: a shared specific place (2) plus corroboration worth 1
PLACE_POINTS = 2.0  # each shared specific place, at most 2 counted
NAME_POINTS = 1.0  # each shared name that is not a place, at most 2 counted
CATEGORY_POINTS = 0.5  # each shared category after the first, at most 2 counted
SET_POINTS = 0.5  # each shared term set of a shared category, at most 2 counted
CLOSE_POINTS = 0.5
MAX_MEMBERS = 20  # fingerprints kept per incident: the latest reports are what a new one is compared with
_BATCH = 500  # ids per IN (...) query


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


def incident_severity(categories: Iterable[str], severity: Mapping[str, str] | None = None) -> str:
    """The most severe of the categories' severities (`severity` as configured, else the taxonomy's)."""
    table = severity or {}
    return most_severe(table.get(c) or default_severity(c) for c in categories)


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _language(tag: str | None) -> str | None:
    """Primary language subtag: "en-GB" -> "en"."""
    lang = (tag or "").strip().lower().replace("_", "-").split("-")[0]
    return lang or None


def _script(text: str) -> str:
    """The alphabet most letters of the text are in, "cyrl" or "latn": tells languages apart when feeds do not."""
    cyr = lat = 0
    for ch in text[:400]:
        if ch.isalpha():
            if "\u0400" <= ch <= "\u04ff":
                cyr += 1
            elif ch.isascii():
                lat += 1
    return "cyrl" if cyr > lat else "latn"


@dataclass(frozen=True)
class _Member:
    item_id: int
    published: datetime
    categories: frozenset[str]
    countries: frozenset[str]
    features: Features
    language: str | None = None
    script: str = "latn"
    places: frozenset[str] = frozenset()  # "KZ:majil": specific places, spelling-blind (features.place_keys)
    title_places: frozenset[str] = frozenset()  # those of them the headline names
    sets: frozenset[str] = frozenset()  # "protest_crackdown/detain": term sets of the classifier's hits
    # place key -> the gazetteer entry as this report's language spells it, to explain a match (not stored)
    place_names: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        f = self.features
        out: dict[str, Any] = {
            "t": _utc(self.published).isoformat(),
            "c": sorted(self.categories),
            "k": sorted(self.countries),
            "s": sorted(f.stems),
            "n": sorted(f.names),
            "p": sorted(f.persons),
            "w": self.script,
        }
        if self.language:
            out["l"] = self.language
        if self.places:
            out["g"] = sorted(self.places)
        if self.title_places:
            out["gt"] = sorted(self.title_places)
        if self.sets:
            out["z"] = sorted(self.sets)
        return out

    @classmethod
    def from_json(cls, item_id: int, d: Mapping[str, Any]) -> _Member:
        return cls(
            item_id=item_id,
            published=_utc(datetime.fromisoformat(d["t"])),
            categories=frozenset(d.get("c", ())),
            countries=frozenset(d.get("k", ())),
            features=Features(
                stems=frozenset(d.get("s", ())),
                names=frozenset(d.get("n", ())),
                persons=frozenset(d.get("p", ())),
            ),
            language=d.get("l"),
            script=d.get("w", "latn"),
            places=frozenset(d.get("g", ())),
            title_places=frozenset(d.get("gt", ())),
            sets=frozenset(d.get("z", ())),
        )

    @classmethod
    def of(cls, item: Item) -> _Member:
        assert item.id is not None
        places, title_places = place_keys(item.places)
        return cls(
            item_id=item.id,
            published=_utc(item.published),
            categories=frozenset(item.categories),
            countries=frozenset(item.countries),
            features=extract(item.title or "", item.text or ""),
            language=_language(item.language),
            script=_script(f"{item.title or ''} {item.text or ''}"),
            places=frozenset(places),
            title_places=title_places,
            sets=hit_sets(item.matches),
            place_names=places,
        )

    @property
    def tag(self) -> tuple[str | None, str]:
        return self.language, self.script

    def other_language(self, other: _Member) -> bool:
        """Whether the two are written in different languages (by the feeds' word, else by their alphabets)."""
        return _languages_differ(self.tag, other.tag)


def _languages_differ(a: tuple[str | None, str], b: tuple[str | None, str]) -> bool:
    """`other_language` on (language, script) pairs, as the candidate index keeps them."""
    if a[0] and b[0]:
        return a[0] != b[0]
    return a[1] != b[1]


@dataclass
class _Match:
    kind: str  # "text" | "names" | "places"
    score: float
    member: _Member
    shared_terms: list[str]
    shared_names: list[str]
    shared_persons: list[str]
    shared_places: list[str] = field(default_factory=list)
    shared_sets: list[str] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)  # points by kind, for the places rule


def _place_evidence(
    a: _Member, b: _Member, names: frozenset[str]
) -> tuple[dict[str, float], list[str], list[str], list[str]] | None:
    """Points for the places rule, with the shared place keys, names and sets; None when it cannot apply."""
    shared = a.places & b.places
    if not shared or not a.other_language(b):
        return None
    if a.title_places and b.title_places and not (a.title_places & b.title_places):
        return None  # the headlines say where it happened, and they say different places
    hours = abs((a.published - b.published).total_seconds()) / 3600
    if hours > CROSS_HOURS:
        return None
    categories = a.categories & b.categories
    sets = sorted({s.split("/", 1)[1] for s in a.sets & b.sets if s.split("/", 1)[0] in categories})
    place_words = {k.split(":", 1)[1] for k in a.places | b.places}
    other_names = sorted(n for n in names if n not in place_words and n not in COUNTRY_LEVEL_KEYS)
    points = {"places": PLACE_POINTS * min(len(shared), 2)}
    if other_names:
        points["names"] = NAME_POINTS * min(len(other_names), 2)
    if len(categories) > 1:
        points["categories"] = CATEGORY_POINTS * min(len(categories) - 1, 2)
    if sets:
        points["sets"] = SET_POINTS * min(len(sets), 2)
    if hours <= CLOSE_HOURS:
        points["close"] = CLOSE_POINTS
    return points, sorted(shared), other_names, sets


def _compare(item: _Member, other: _Member) -> _Match | None:
    """Whether two reports tell the same event (categories and time are checked by the caller)."""
    a, b = item.features, other.features
    j = jaccard(a.stems, b.stems)
    persons = a.persons & b.persons
    names = a.names & b.names
    different_people = bool(a.persons and b.persons and not persons)
    countries_agree = not item.countries or not other.countries or bool(item.countries & other.countries)
    kind, score = "", 0.0
    if persons and countries_agree:
        kind, score = "names", 0.6 + 0.04 * min(len(persons) + len(names), 4)
    if (j >= TEXT_COPY or (j >= TEXT_MIN and not different_people)) and j > score:
        kind, score = "text", j
    if not kind and len(names) >= NAMES_MIN and countries_agree and not different_people:
        kind, score = "names", 0.5 + 0.05 * min(len(names), 4)
    if not kind and countries_agree and not different_people:
        found = _place_evidence(item, other, names)
        if found is not None and sum(found[0].values()) >= PLACES_MIN:
            points, places, other_names, sets = found
            total = sum(points.values())
            return _Match(
                kind="places",
                # ranks below every text or names match (>= 0.45): places are the weakest kind of evidence
                score=round(min(0.3 + 0.02 * total, 0.44), 4),
                member=other,
                shared_terms=[],
                shared_names=a.shown(other_names),
                shared_persons=[],
                shared_places=[item.place_names.get(k, k) for k in places],
                shared_sets=sets,
                evidence=points,
            )
    if not kind:
        return None
    return _Match(
        kind=kind,
        score=round(score, 4),
        member=other,
        # in the new report's own words (the stored fingerprints keep only keys)
        shared_terms=a.shown(sorted(a.stems & b.stems)[:20]),
        shared_names=a.shown(sorted(names)),
        shared_persons=a.shown(sorted(persons)),
    )


# ---- candidates ---------------------------------------------------------------------------------------------
#
# A new report is compared (`_compare`) only with the reports that share an index key with it, never with every
# report of every open incident. The keys are chosen so that every pair `_compare` can accept shares one:
#
# - "names" on a person: `a.persons & b.persons` is non-empty -> they share a "p:" key (every person key is one).
# - "text": `jaccard(a.stems, b.stems) >= TEXT_MIN` is required by both of its branches (TEXT_COPY > TEXT_MIN,
#   and the near-copy branch is the one that ignores the people veto, so the veto only removes pairs). Prefix
#   filter: order all stems by a fixed global order (`_rank`); J(A, B) >= t implies |A & B| >= t * |A| (the union
#   is at least |A|), so the first common stem w (in that order) has at most |A| - |A & B| stems of A before it:
#   w is among the first `_prefix(|A|, t)` = |A| - ceil(t * |A|) + 1 stems of A, and likewise of B. Each report is
#   indexed under its prefix stems ("s:") and probes with its own, so the pair meets on w. (ceil is taken of
#   t * |A| minus a hair so that float rounding can only lengthen the prefix.)
# - "names" on two names: |a.names & b.names| >= NAMES_MIN, so by the same argument with an overlap of 2 the
#   first |A| - 1 names of each (same global order) share one: the "n:" keys.
# - "places": `_place_evidence` returns None unless `a.places & b.places` is non-empty and the two are in other
#   languages (`other_language`) -> a shared "g:" key, probed under every (language, script) in the index that
#   `other_language` would accept.
#
# The other conditions (a shared category, the time window, not the item itself) are checked on the candidates
# exactly as before; the best match is the maximum of (score, -incident, -report), a total order, so the order in
# which candidates come does not matter.

_RANKS: dict[str, int] = {}


def _rank(token: str) -> tuple[int, str]:
    """The global token order of the prefix filters: a stable hash, then the token itself."""
    r = _RANKS.get(token)
    if r is None:
        if len(_RANKS) > 500_000:
            _RANKS.clear()
        r = _RANKS[token] = zlib.crc32(token.encode("utf-8"))
    return r, token


def _prefix(n: int, overlap: float) -> int:
    """How many of a set's first tokens (in `_rank` order) to index for an overlap of at least `overlap` * n."""
    return n - math.ceil(overlap * n - 1e-9) + 1 if n else 0


def _keys(m: _Member) -> tuple[str, ...]:
    """The keys a report is indexed under (see `_Index.candidates` for the keys it probes with)."""
    f = m.features
    keys = [f"p:{p}" for p in f.persons]
    names = sorted(f.names, key=_rank)
    keys += [f"n:{n}" for n in names[: max(len(names) - NAMES_MIN + 1, 0)]]
    keys += [_place_key(m.tag, g) for g in m.places]
    stems = sorted(f.stems, key=_rank)
    keys += [f"s:{s}" for s in stems[: _prefix(len(stems), TEXT_MIN)]]
    return tuple(keys)


def _place_key(tag: tuple[str | None, str], place: str) -> str:
    return f"g:{tag[0] or ''}|{tag[1]}:{place}"


class _Slot:
    """One report of one incident in an index."""

    __slots__ = ("inc_id", "keys", "member", "stored")

    def __init__(self, inc_id: int, member: _Member, keys: tuple[str, ...], stored: bool) -> None:
        self.inc_id, self.member, self.keys = inc_id, member, keys
        self.stored = stored  # in the cache's index (a stored fingerprint), else joined in this call


class _Index:
    def __init__(self) -> None:
        self.postings: dict[str, set[_Slot]] = {}
        self.tags: dict[
            tuple[str | None, str], int
        ] = {}  # (language, script) -> reports indexed under places

    def add(self, slot: _Slot) -> None:
        for k in slot.keys:
            self.postings.setdefault(k, set()).add(slot)
        if slot.member.places:
            tag = slot.member.tag
            self.tags[tag] = self.tags.get(tag, 0) + 1

    def remove(self, slot: _Slot) -> None:
        for k in slot.keys:
            p = self.postings.get(k)
            if p is not None:
                p.discard(slot)
                if not p:
                    del self.postings[k]
        if slot.member.places:
            tag = slot.member.tag
            left = self.tags[tag] - 1
            if left:
                self.tags[tag] = left
            else:
                del self.tags[tag]

    def candidates(self, m: _Member, keys: Iterable[str], out: set[_Slot]) -> None:
        """The reports sharing a key with `m`, whose index keys are `keys`. Place keys carry the language:
        `m` probes them only under the languages the places rule can pair it with, so that reports in one
        language, which never match on places alone, are not compared for sharing a city."""
        for k in keys:
            if k.startswith("g:"):
                continue
            p = self.postings.get(k)
            if p:
                out |= p
        if m.places:
            for tag in self.tags:
                if _languages_differ(m.tag, tag):
                    for g in m.places:
                        p = self.postings.get(_place_key(tag, g))
                        if p:
                            out |= p


# ---- the stored fingerprints, cached per process --------------------------------------------------------------
#
# Every call used to read every open incident (a light query) to learn which cached fingerprints were still
# current: a cost that grew with the number of open incidents, paid for every feed. Now each incident carries
# `seq`, the number of the grouping call that last changed it: one more than the highest `seq` stored when that
# call began. Grouping calls run one at a time (an advisory lock on PostgreSQL, the write lock on SQLite, taken
# before anything is read), so a call that read the highest `seq` as H sees every change numbered H or lower,
# and every later change is numbered above H. The cache remembers the H it is up to date with and reads only
# the incidents changed since, plus those it wrote itself in its last call, which are checked against their
# stored "_rev" (a call whose transaction rolled back leaves the cache ahead of the database: those revs differ,
# or the incident is gone). The cache holds every incident with reports since `horizon`; a call reaching
# further back reads that stretch the old way. Another database, or one rebuilt, starts the cache afresh.

_REV = re.compile(r'^\{\s*"_rev"\s*:\s*"([0-9a-f]{32})"')
_REV_CHARS = 64
# The horizon moves on in steps of a twelfth of the window (6 h of 72 h), not with every call.
EXPIRE_STEPS = 12


def _rev_of(body: Mapping[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@dataclass
class _Cached:
    rev: str | None  # None: not to be trusted by a later call (a signature without "_rev")
    slots: dict[int, _Slot]  # report id -> its slot in the cache's index
    first: datetime
    last: datetime
    categories: frozenset[str]


class _Cache:
    def __init__(self) -> None:
        self.incidents: dict[int, _Cached] = {}
        self.index = _Index()
        self.lock = threading.Lock()
        self.db: str | None = None  # the database it describes
        self.seq = -1  # up to date with every change numbered this or lower
        self.horizon: datetime | None = None  # holds every incident with reports since then
        self.pending: set[int] = set()  # incidents the last call wrote: not known to have committed

    def reset(self, db: str | None) -> None:
        self.incidents.clear()
        self.index = _Index()
        self.db, self.seq, self.horizon, self.pending = db, -1, None, set()

    def get(self, inc_id: int, rev: str | None) -> _Cached | None:
        c = self.incidents.get(inc_id)
        if c is None or rev is None or c.rev != rev:
            return None
        return c

    def install(
        self,
        inc_id: int,
        rev: str | None,
        members: Mapping[int, _Member],
        first: datetime,
        last: datetime,
        categories: Iterable[str],
    ) -> _Cached:
        old = self.incidents.get(inc_id)
        old_slots = old.slots if old is not None else {}
        slots: dict[int, _Slot] = {}
        for item_id, m in members.items():
            s = old_slots.get(item_id)
            if s is None or s.member is not m:
                s = _Slot(inc_id, m, _keys(m), True)
                self.index.add(s)
            slots[item_id] = s
        for item_id, s in old_slots.items():
            if slots.get(item_id) is not s:
                self.index.remove(s)
        c = self.incidents[inc_id] = _Cached(rev, slots, _utc(first), _utc(last), frozenset(categories))
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


_CACHE = _Cache()


@contextmanager
def _cache() -> Iterator[_Cache]:
    """The process's cache, or a throwaway one while another thread is grouping (never wait for it)."""
    cache = _CACHE
    if not cache.lock.acquire(blocking=False):
        yield _Cache()
        return
    try:
        yield cache
    finally:
        cache.lock.release()


@dataclass
class _Open:
    """An incident as grouping sees it: its dates and categories, and the reports joined in this call."""

    inc_id: int
    stored: _Cached | None  # its reports' fingerprints as stored (None for an incident opened in this call)
    first: datetime
    last: datetime
    categories: set[str]
    replaced: set[int] = field(default_factory=set)  # stored reports grouped again in this call: the new wins

    def add(self, m: _Member, overlay: _Index) -> None:
        if self.stored is not None and m.item_id in self.stored.slots:
            self.replaced.add(m.item_id)
        overlay.add(_Slot(self.inc_id, m, _keys(m), False))
        self.first = min(self.first, m.published)
        self.last = max(self.last, m.published)
        self.categories |= m.categories


def lock_grouping(session: Session) -> None:
    """Make this transaction the only one changing incidents until it ends; take it before anything is read.

    Two workers grouping reports of one event at once would each open an incident for it, and the cache's `seq`
    numbering (see above) relies on one grouping call at a time. Taking it again in the same transaction is free.
    """
    if session.get_bind().dialect.name == "sqlite":
        # A write takes SQLite's write lock (reads alone would not): an update that changes no row.
        session.execute(sa_update(Incident).where(col(Incident.id) == -1).values(seq=0))
    else:
        transaction_lock(session, "incidents")


def _light(session: Session, where: Any) -> list[tuple[int, datetime, datetime, list[str], str | None, int]]:
    q = sa_select(
        col(Incident.id),
        col(Incident.first_seen),
        col(Incident.last_seen),
        col(Incident.categories),
        func.substr(cast(col(Incident.signature), Text), 1, _REV_CHARS),
        col(Incident.item_count),
    ).where(where)
    return [tuple(r) for r in session.execute(q)]


def _absorb(session: Session, cache: _Cache, rows: Iterable[tuple[Any, ...]]) -> dict[int, _Cached]:
    """Bring the cache up to date with these light rows: current entries stay, others are read in full."""
    out: dict[int, _Cached] = {}
    stale: list[int] = []
    for inc_id, first, last, categories, head, count in rows:
        if not count:
            cache.drop(inc_id)
            continue
        found = _REV.match(head or "")
        c = cache.get(inc_id, found.group(1) if found else None)
        if c is None:
            stale.append(inc_id)
            continue
        c.first, c.last, c.categories = _utc(first), _utc(last), frozenset(categories)
        out[inc_id] = c
    for chunk in _chunks(stale):
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
            members = {int(k): _Member.from_json(int(k), v) for k, v in raw.items()}
            rev = sig.get("_rev") if isinstance(sig.get("_rev"), str) else None
            out[inc_id] = cache.install(inc_id, rev, members, first, last, categories)
    return out


def _sync(session: Session, cache: _Cache, lo: datetime, hi: datetime) -> tuple[int, dict[int, _Open]]:
    """Bring the cache up to date for items published between lo and hi (window included); returns the highest
    `seq` stored, and the incidents open then that lie before the cache's horizon (read the old way)."""
    # group_items took lock_grouping before reading anything.
    db = session.get_bind().engine.url.render_as_string(hide_password=True)
    head = session.execute(sa_select(func.coalesce(func.max(col(Incident.seq)), 0))).scalar_one()
    if cache.db != db or head < cache.seq or cache.horizon is None:
        cache.reset(db)
        _absorb(session, cache, _light(session, col(Incident.last_seen) >= lo))
        cache.horizon = lo
    else:
        changed = col(Incident.seq) > cache.seq
        if cache.pending:
            changed = changed | col(Incident.id).in_(sorted(cache.pending))
        rows = _light(session, changed)
        seen = {r[0] for r in rows}
        for inc_id in cache.pending - seen:
            cache.drop(inc_id)  # opened by a call that rolled back
        # changes to incidents it does not hold matter only when they lie after the horizon
        horizon = cache.horizon
        _absorb(session, cache, [r for r in rows if r[0] in cache.incidents or _utc(r[2]) >= horizon])
    cache.seq, cache.pending = head, set()
    before: dict[int, _Open] = {}
    if lo < cache.horizon:
        rows = _light(
            session,
            (col(Incident.last_seen) >= lo)
            & (col(Incident.last_seen) < cache.horizon)
            & (col(Incident.first_seen) <= hi),
        )
        for inc_id, c in _absorb(session, cache, rows).items():
            before[inc_id] = _Open(inc_id, c, c.first, c.last, set(c.categories))
    return head, before


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), _BATCH):
        yield ids[i : i + _BATCH]


def _describe(entry: Mapping[str, Any], window_hours: float) -> str:
    inc = entry["incident"]
    if entry["reason"] == "first":
        return (
            f"started incident {inc}: no open incident within {window_hours:g} h shared a category and "
            "near-duplicate text, the same names, or (in another language) the same specific places"
        )
    cats = ", ".join(entry.get("categories", []))
    ago = f"{entry.get('hours_apart', 0):g} h apart"
    other = entry.get("similar_to")
    if entry["reason"] == "text":
        terms = ", ".join(entry.get("shared_terms", [])[:8])
        return (
            f"joined incident {inc}: same category ({cats}) and near-duplicate text of item {other} "
            f"(word overlap {entry.get('score')} in title and lead: {terms}...), {ago}"
        )
    if entry["reason"] == "names":
        names = ", ".join(entry.get("shared_persons") or entry.get("shared_names") or [])
        return f"joined incident {inc}: same category ({cats}) and the same names ({names}) as item {other}, {ago}"
    if entry["reason"] == "places":
        evidence = entry.get("evidence", {})
        also = [
            f"{label} ({', '.join(entry[key])})"
            for label, key in (("names", "shared_names"), ("term sets", "shared_sets"))
            if entry.get(key)
        ]
        langs = " and ".join(entry.get("languages", [])) or "two languages"
        return (
            f"joined incident {inc}: reported in {langs}, same category ({cats}), {ago}, and the same specific "
            f"places ({', '.join(entry.get('shared_places', []))}) as item {other}"
            + (f"; also shared: {'; '.join(also)}" if also else "")
            + f"; evidence {entry.get('points', 0):g} points >= {PLACES_MIN:g} ("
            + ", ".join(f"{k} {v:g}" for k, v in evidence.items())
            + ")"
        )
    return f"in incident {inc}"


def group_items(
    session: Session,
    item_ids: Sequence[int],
    *,
    now: datetime,
    window_hours: float = WINDOW_HOURS,
    severity: Mapping[str, str] | None = None,
) -> GroupStats:
    """Assign each given classified item to an open incident or a new one, and bring those incidents up to date.

    Items without categories are left out (and leave the incident they were in, e.g. after `reclassify`); an
    item already in an incident that still shares a category with it stays there. Flushes but does not commit.
    """
    stats = GroupStats()
    now = _utc(now)
    window = timedelta(hours=window_hours)
    ids = sorted(set(item_ids))
    if ids:
        lock_grouping(session)
    # Most reports of a poll match no category and were never grouped: tell them apart without loading texts.
    wanted: list[int] = []
    for chunk in _chunks(ids):
        light = sa_select(col(Item.id), col(Item.categories), col(Item.incident_id), col(Item.pruned))
        for item_id, categories, incident_id, pruned in session.execute(light.where(col(Item.id).in_(chunk))):
            if incident_id is not None or (categories and not pruned):
                wanted.append(item_id)
    items: list[Item] = []
    for chunk in _chunks(wanted):
        items.extend(session.exec(select(Item).where(col(Item.id).in_(chunk))))
    found = {i.id for i in items}
    stats.skipped.extend(i for i in ids if i not in found)
    items.sort(key=lambda i: (_utc(i.published), i.id or 0))

    touched: set[int] = set()  # incidents whose members or fingerprints changed
    members_changed: set[int] = set()
    full: set[int] = set()  # incidents to recompute from all their members (a report left or changed)
    added: dict[
        int, list[tuple[_Member, str]]
    ] = {}  # incident id -> reports that joined it, with their titles
    fresh: dict[int, _Member] = {}  # fingerprints of the given items, by item id

    to_match: list[Item] = []
    for item in items:
        assert item.id is not None
        if item.pruned or not item.categories:
            if item.incident_id is not None:
                touched.add(item.incident_id)
                members_changed.add(item.incident_id)
                full.add(item.incident_id)
                item.incident_id = None
                item.grouping = None
            stats.skipped.append(item.id)
            continue
        fresh[item.id] = _Member.of(item)
        if item.incident_id is not None:
            inc = session.get(Incident, item.incident_id)
            if inc is not None and set(inc.categories) & set(item.categories):
                # its text, categories or countries may have changed: refresh the fingerprint and the labels
                touched.add(item.incident_id)
                full.add(item.incident_id)
                stats.assigned[item.id] = item.incident_id
                continue
            # It no longer fits (reclassified into other categories): it leaves and is grouped afresh.
            touched.add(item.incident_id)
            members_changed.add(item.incident_id)
            full.add(item.incident_id)
            item.incident_id = None
            item.grouping = None
        to_match.append(item)

    if not to_match and not touched:
        return stats  # nothing classified (most polls): no incident to read or lock
    with _cache() as cache:
        if to_match:
            lo = _utc(to_match[0].published) - window
            hi = _utc(to_match[-1].published) + window
        else:
            lo = hi = now - window  # nothing to match: the cache need only follow the database
        head, opened = _sync(session, cache, lo, hi)
        overlay = _Index()  # the reports joined in this call

        for item in to_match:
            assert item.id is not None
            me = fresh[item.id]
            candidates: set[_Slot] = set()
            keys = _keys(me)
            cache.index.candidates(me, keys, candidates)
            overlay.candidates(me, keys, candidates)
            best: tuple[float, int, _Match] | None = None
            for slot in candidates:
                inc_id, other = slot.inc_id, slot.member
                op = opened.get(inc_id)
                if op is None:
                    c = cache.incidents.get(inc_id)
                    if c is None:
                        continue
                    op = opened[inc_id] = _Open(inc_id, c, c.first, c.last, set(c.categories))
                if slot.stored and (
                    op.stored is None
                    or op.stored.slots.get(other.item_id) is not slot
                    or other.item_id in op.replaced
                ):
                    continue  # not the incident's current stored report (or superseded in this call)
                if not (op.categories & me.categories):
                    continue
                if me.published < op.first - window or me.published > op.last + window:
                    continue
                if other.item_id == item.id or not (other.categories & me.categories):
                    continue
                m = _compare(me, other)
                # strongest match first; ties go to the oldest incident, then the oldest report
                if m is not None and (
                    best is None
                    or (m.score, -inc_id, -other.item_id) > (best[0], -best[1], -best[2].member.item_id)
                ):
                    best = (m.score, inc_id, m)
            if best is None:
                inc = Incident(
                    title=item.title,
                    categories=sorted(item.categories),
                    countries=sorted(item.countries),
                    severity=incident_severity(item.categories, severity),
                    first_seen=me.published,
                    last_seen=me.published,
                    updated_at=now,
                    item_count=0,
                    explanation=_EXPLANATION,
                )
                session.add(inc)
                session.flush()
                assert inc.id is not None
                stats.new_incidents.append(inc.id)
                cache.drop(inc.id)  # an id last seen in a transaction that rolled back
                op = _Open(inc.id, None, me.published, me.published, set(item.categories))
                opened[inc.id] = op
                entry: dict[str, Any] = {
                    "incident": inc.id,
                    "reason": "first",
                    "categories": sorted(item.categories),
                }
            else:
                _, inc_id, m = best
                op = opened[inc_id]
                entry = {
                    "incident": inc_id,
                    "reason": m.kind,
                    "similar_to": m.member.item_id,
                    "score": m.score,
                    "categories": sorted(op.categories & me.categories),
                    "hours_apart": round(abs((me.published - m.member.published).total_seconds()) / 3600, 1),
                    "shared_terms": m.shared_terms,
                    "shared_names": m.shared_names,
                    "shared_persons": m.shared_persons,
                }
                if m.kind == "places":
                    entry["shared_places"] = m.shared_places
                    entry["shared_sets"] = m.shared_sets
                    entry["evidence"] = m.evidence
                    entry["points"] = sum(m.evidence.values())
                    entry["languages"] = [me.language or me.script, m.member.language or m.member.script]
            entry["text"] = _describe(entry, window_hours)
            op.add(me, overlay)
            item.incident_id = op.inc_id
            stats.assigned[item.id] = op.inc_id
            item.grouping = entry
            touched.add(op.inc_id)
            members_changed.add(op.inc_id)
            added.setdefault(op.inc_id, []).append((me, item.title))

        session.flush()
        for chunk in _chunks(sorted(touched)):
            _refresh(
                session, chunk, now, severity, fresh, added, full, members_changed, stats, cache, head + 1
            )
        cache.expire(lo, window / EXPIRE_STEPS)
    stats.new_incidents.sort()
    stats.updated_incidents.sort()
    return stats


@dataclass
class _Summary:
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


def _key_json(key: tuple[datetime, int] | None) -> list[Any] | None:
    return None if key is None else [_utc(key[0]).isoformat(), key[1]]


def _key_of(value: Any) -> tuple[datetime, int] | None:
    return None if not value else (_utc(datetime.fromisoformat(value[0])), int(value[1]))


def _summaries(
    session: Session, incident_ids: Sequence[int]
) -> tuple[dict[int, _Summary], dict[int, datetime]]:
    """Recompute from every member (after a report left or changed); also each member's publication date."""
    rows: dict[int, list[tuple[datetime, int]]] = {i: [] for i in incident_ids}
    published: dict[int, datetime] = {}
    labels: dict[int, tuple[set[str], set[str]]] = {i: (set(), set()) for i in incident_ids}
    for chunk in _chunks(list(incident_ids)):
        # The members' ids and dates (no texts, no JSON), ...
        q = sa_select(col(Item.incident_id), col(Item.id), col(Item.published)).where(
            col(Item.incident_id).in_(chunk)
        )
        for inc_id, item_id, when in session.execute(q):
            rows[inc_id].append((_utc(when), item_id))
            published[item_id] = _utc(when)
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
        out[inc_id] = _Summary(
            title=title,
            categories=labels[inc_id][0],
            countries=labels[inc_id][1],
            count=len(members),
            first=members[0] if members else None,
            last=members[-1][0] if members else None,
            titled=titled,
        )
    return out, published


def _summary_after(inc: Incident, joined: Sequence[tuple[_Member, str]]) -> _Summary | None:
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
    last = None if empty else _utc(inc.last_seen)
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
    return _Summary(title, categories, countries, inc.item_count + len(joined), first, last, titled)


_EXPLANATION = {
    "rule": (
        f"same category, within the window, and near-duplicate title and lead (Jaccard >= {TEXT_MIN}) "
        f"or the same person / {NAMES_MIN}+ names with agreeing countries, or in another language "
        f"within {CROSS_HOURS:g} h the same specific place with evidence >= {PLACES_MIN:g} points"
    ),
}


def _refresh(
    session: Session,
    incident_ids: Sequence[int],
    now: datetime,
    severity: Mapping[str, str] | None,
    fresh: Mapping[int, _Member],
    added: Mapping[int, Sequence[tuple[_Member, str]]],
    full: set[int],
    members_changed: set[int],
    stats: GroupStats,
    cache: _Cache,
    seq: int,
) -> None:
    """Bring the touched incidents' fields up to date; bump `updated_at` only on a real change.

    An incident that reports only joined is updated from what it stored and the newcomers, whatever its size; one
    that a report left, or whose report changed, is recomputed from all its members."""
    incidents = {
        inc.id: inc for inc in session.exec(select(Incident).where(col(Incident.id).in_(incident_ids)))
    }
    summaries: dict[int, _Summary] = {}
    for inc_id, row in incidents.items():
        assert inc_id is not None
        found = None if inc_id in full else _summary_after(row, added.get(inc_id, ()))
        if found is not None:
            summaries[inc_id] = found
    recomputed, published = _summaries(
        session, [i for i in incident_ids if i in incidents and i not in summaries]
    )
    summaries.update(recomputed)
    new = set(stats.new_incidents)
    for inc_id in incident_ids:
        inc = incidents.get(inc_id)
        if inc is None:
            continue
        sm = summaries[inc_id]
        before = (
            inc.title,
            inc.categories,
            inc.countries,
            inc.severity,
            inc.first_seen,
            inc.last_seen,
            inc.item_count,
        )
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
        if inc_id in recomputed:  # reports may have left: keep the fingerprints of members only
            fps = {i: v for i, v in fps.items() if i in published}
            for item_id in published.keys() & fresh.keys():
                fps[item_id] = fresh[item_id].to_json()
        else:
            for m, _ in added.get(inc_id, ()):
                fps[m.item_id] = fresh[m.item_id].to_json()
        order = {
            i: published[i] if i in published else _utc(datetime.fromisoformat(v["t"]))
            for i, v in fps.items()
        }
        keep = sorted(fps, key=lambda i: (order[i], i))[-MAX_MEMBERS:]
        kept = {i: fps[i] for i in keep}
        body = {
            "window_members": MAX_MEMBERS,
            "first": _key_json(sm.first),
            "titled": _key_json(sm.titled),
            "names": sorted({n for v in kept.values() for n in v.get("n", ())}),
            "persons": sorted({p for v in kept.values() for p in v.get("p", ())}),
            "places": sorted({g for v in kept.values() for g in v.get("g", ())}),
            "members": {str(i): kept[i] for i in keep},
        }
        rev = _rev_of(body)
        signature = {"_rev": rev, **body}  # first, so that a light query can read it (_light)
        after = (
            inc.title,
            inc.categories,
            inc.countries,
            inc.severity,
            inc.first_seen,
            inc.last_seen,
            inc.item_count,
        )
        changed = before != after or inc_id in members_changed
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
                {i: reuse[i] if i in reuse else _Member.from_json(i, kept[i]) for i in keep},
                inc.first_seen,
                inc.last_seen,
                inc.categories,
            )
        if inc.explanation != _EXPLANATION:
            inc.explanation = (
                _EXPLANATION  # an incident written before revision 0005 held every report's reason
            )
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
        for chunk in _chunks(sorted(wanted)):
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


def explain_incident(session: Session, item_id: int) -> dict[str, Any] | None:
    """Which incident a stored item belongs to and why; None when the item is unknown or not in an incident."""
    item = session.get(Item, item_id)
    if item is None or item.incident_id is None:
        return None
    inc = session.get(Incident, item.incident_id)
    if inc is None:
        return None
    entry = dict(item.grouping or {})
    entry.setdefault("reason", "unknown")
    entry.setdefault("text", f"in incident {inc.id} (grouped before explanations were recorded)")
    return {
        "item": item_id,
        "incident": {
            "id": inc.id,
            "title": inc.title,
            "categories": list(inc.categories),
            "countries": list(inc.countries),
            "severity": inc.severity,
            "first_seen": _utc(inc.first_seen).isoformat(),
            "last_seen": _utc(inc.last_seen).isoformat(),
            "item_count": inc.item_count,
        },
        **{k: v for k, v in entry.items() if k != "incident"},
    }
