"""Candidates: the reports a new one is compared with, found by shared keys instead of comparing with every report.

    index_keys(fp) -> keys        what a report is indexed under (and probes with)
    CandidateIndex                postings from key to the reports (`Slot`) indexed under it

A new report is compared (`scoring.compare`) only with the reports that share an index key with it, never with
every report of every open incident. The keys are chosen so that every pair `compare` can accept shares one:

- "names" on a person: `a.persons & b.persons` is non-empty -> they share a "p:" key (every person key is one).
- "text": `jaccard(a.stems, b.stems) >= TEXT_MIN` is required by both of its branches (TEXT_COPY > TEXT_MIN,
  and the near-copy branch is the one that ignores the people veto, so the veto only removes pairs). Prefix
  filter: order all stems by a fixed global order (`token_rank`); J(A, B) >= t implies |A & B| >= t * |A| (the
  union is at least |A|), so the first common stem w (in that order) has at most |A| - |A & B| stems of A before
  it: w is among the first `prefix_length(|A|, t)` = |A| - ceil(t * |A|) + 1 stems of A, and likewise of B. Each
  report is indexed under its prefix stems ("s:") and probes with its own, so the pair meets on w. (ceil is taken
  of t * |A| minus a hair so that float rounding can only lengthen the prefix.)
- "names" on two names: |a.names & b.names| >= NAMES_MIN, so by the same argument with an overlap of 2 the
  first |A| - 1 names of each (same global order) share one: the "n:" keys.
- "places": `place_evidence` returns None unless `a.places & b.places` is non-empty and the two are in other
  languages (`other_language`) -> a shared "g:" key, probed under every (language, script) in the index that
  `other_language` would accept.

The other conditions (a shared category, the time window, not the item itself) are checked on the candidates
(`scoring.choose_incident`); the best match is the maximum of (score, -incident, -report), a total order, so the
order in which candidates come does not matter.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

from monitor.incidents.fingerprint import Fingerprint, LanguageTag, languages_differ
from monitor.incidents.scoring import NAMES_MIN, TEXT_MIN

_RANKS: dict[str, int] = {}


def token_rank(token: str) -> tuple[int, str]:
    """The global token order of the prefix filters: a stable hash, then the token itself."""
    r = _RANKS.get(token)
    if r is None:
        if len(_RANKS) > 500_000:
            _RANKS.clear()
        r = _RANKS[token] = zlib.crc32(token.encode("utf-8"))
    return r, token


def prefix_length(n: int, overlap: float) -> int:
    """How many of a set's first tokens (in `token_rank` order) to index for an overlap of at least `overlap` * n."""
    return n - math.ceil(overlap * n - 1e-9) + 1 if n else 0


def index_keys(m: Fingerprint) -> tuple[str, ...]:
    """The keys a report is indexed under (see `CandidateIndex.candidates` for the keys it probes with)."""
    f = m.features
    keys = [f"p:{p}" for p in f.persons]
    names = sorted(f.names, key=token_rank)
    keys += [f"n:{n}" for n in names[: max(len(names) - NAMES_MIN + 1, 0)]]
    keys += [_place_key(m.tag, g) for g in m.places]
    stems = sorted(f.stems, key=token_rank)
    keys += [f"s:{s}" for s in stems[: prefix_length(len(stems), TEXT_MIN)]]
    return tuple(keys)


def _place_key(tag: LanguageTag, place: str) -> str:
    return f"g:{tag[0] or ''}|{tag[1]}:{place}"


class Slot:
    """One report of one incident in an index."""

    __slots__ = ("inc_id", "keys", "member", "stored")

    def __init__(self, inc_id: int, member: Fingerprint, keys: tuple[str, ...], stored: bool) -> None:
        self.inc_id, self.member, self.keys = inc_id, member, keys
        self.stored = stored  # in the cache's index (a stored fingerprint), else joined in this call


class CandidateIndex:
    def __init__(self) -> None:
        self.postings: dict[str, set[Slot]] = {}
        self.tags: dict[LanguageTag, int] = {}  # (language, script) -> reports indexed under places

    def add(self, slot: Slot) -> None:
        for k in slot.keys:
            self.postings.setdefault(k, set()).add(slot)
        if slot.member.places:
            tag = slot.member.tag
            self.tags[tag] = self.tags.get(tag, 0) + 1

    def remove(self, slot: Slot) -> None:
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

    def candidates(self, m: Fingerprint, keys: Iterable[str], out: set[Slot]) -> None:
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
                if languages_differ(m.tag, tag):
                    for g in m.places:
                        p = self.postings.get(_place_key(tag, g))
                        if p:
                            out |= p
