"""The compiled classifier: one automaton scan per item, then rule logic over the word positions of the hits."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any

import ahocorasick

from monitor.rules.compiler import (
    FIELD_NAMES,
    PREFIX,
    TEXT,
    TITLE,
    WHOLE,
    Atom,
    CNode,
    Hit,
    Hits,
    atoms_of,
    requirements,
)
from monitor.rules.explain import (
    CategoryInfo,
    CategoryMatch,
    Classification,
    ExampleResult,
    HitInfo,
    PlaceHit,
    snippet,
    sort_categories,
)
from monitor.rules.gazetteer import Gazetteer
from monitor.rules.morph import KK_NOUN_RE, KK_NOUN_VOICED_RE, KK_VERB_RE
from monitor.rules.normalize import WORD_RE, Folded, fold_with_map, folded_words, tokens_of_folded

# An article (a text of ARTICLE_WORDS words or more) is matched on its headline and lead, the first LEAD_WORDS
# words of the text: news puts the event there, and what follows is background (an earlier case, what the law
# says, who else was once detained) that fired categories the item is not about. Teasers are matched whole.
ARTICLE_WORDS = 80
LEAD_WORDS = 60
MAX_HITS_SHOWN = 20  # per category; an article repeating a word 50 times needs no 50 snippets
WEIGHT_CAP = 3  # occurrences of one weighted entry that count towards the score

_CHECKS = (None, None, KK_NOUN_RE.fullmatch, KK_NOUN_VOICED_RE.fullmatch, KK_VERB_RE.fullmatch)
_MEMO_MAX = 50_000  # endings remembered per check kind; a flood of odd words only empties the memo


@dataclass
class CompiledRule:
    lang: str
    text: str
    node: CNode
    file: str | None
    line: int | None
    trigger: frozenset[int] = frozenset()
    _described: str = ""

    def __post_init__(self) -> None:
        self.trigger = frozenset(atoms_of(self.node))
        self._described = f"{self.lang}: {' '.join(self.text.split())}"

    def describe(self) -> str:
        return self._described


@dataclass
class CompiledWeight:
    lang: str
    text: str
    node: CNode
    weight: float


@dataclass
class CompiledCategory:
    info: CategoryInfo
    rules: list[CompiledRule]
    weights: list[CompiledWeight] = field(default_factory=list)
    min_score: float | None = None

    def trigger_atoms(self) -> set[int]:
        out: set[int] = set()
        for r in self.rules:
            out |= atoms_of(r.node)
        for w in self.weights:
            if w.weight > 0:
                out |= atoms_of(w.node)
        return out


@dataclass(frozen=True)
class Example:
    category: str
    title: str
    text: str
    expected: bool
    file: str | None
    line: int | None


_NEVER = -1  # the id of an empty atom set: never satisfied


@dataclass(frozen=True)
class _CategoryPlan:
    category: CompiledCategory
    gate: frozenset[int]  # set ids one of which must be satisfied for the category to be worth evaluating
    checks: tuple[tuple[frozenset[int], CompiledRule], ...]  # per rule, in order: set ids it needs
    wchecks: tuple[tuple[frozenset[int], CompiledWeight], ...]


@dataclass
class _Scan:
    """One item after the automaton pass."""

    fields: tuple[Folded, Folded]
    hits: Hits
    spans: list[dict[int, tuple[int, int]]] = field(default_factory=lambda: [{}, {}])
    lead: Hits | None = None  # an article's: the hits of its title and lead (see classify)

    def prepare(self, needed: list[set[int]]) -> None:
        """Find the original offsets of the words explanations show, and only those."""
        for fld in (TITLE, TEXT):
            if needed[fld]:
                self.spans[fld] = self.fields[fld].spans_of(sorted(needed[fld]), self.hits.words(fld))

    def offsets(self, fld: int, s: int, e: int) -> tuple[int, int]:
        spans = self.spans[fld]
        if s not in spans or e not in spans:  # cannot happen: scan and spans share one tokenisation
            return 0, 0
        return spans[s][0], spans[e][1]


class Classifier:
    def __init__(
        self,
        *,
        version: str,
        categories: list[CompiledCategory],
        atoms: list[Atom],
        automaton: ahocorasick.Automaton,
        gazetteer: Gazetteer,
        examples: list[Example],
        sources: list[str],
    ) -> None:
        self.version = version
        self.categories: dict[str, CategoryInfo] = {c.info.id: c.info for c in categories}
        self.compiled = categories
        self.atoms = atoms
        self.automaton = automaton
        self.gazetteer = gazetteer
        self.examples = examples
        self.sources = sources
        self._empty = len(automaton) == 0
        self._has_case_sensitive = any(a.case_form is not None for a in atoms)
        self._plan = self._plan_categories(categories)
        self.languages = tuple(
            sorted(
                {r.lang for c in categories for r in c.rules}
                | {w.lang for c in categories for w in c.weights}
            )
        )
        self._plans: dict[frozenset[str], list[_CategoryPlan]] = {frozenset(self.languages): self._plan}
        self._check_memo: list[dict[str, bool]] = [{} for _ in _CHECKS]

    def _plan_categories(self, categories: list[CompiledCategory]) -> list[_CategoryPlan]:
        """Which rules of which categories are worth evaluating for an item, decided from the atoms that hit.

        Every atom set a rule needs (its trigger, and each set from `requirements`) gets an id; an item's
        *satisfied* ids are those of the sets one of its atoms belongs to. A rule is evaluated only if all its
        ids are satisfied: otherwise some set it needs has no hit and `eval` would return None anyway, so the
        results are the same as evaluating every rule whose trigger hit, only without the work."""
        ids: dict[frozenset[int], int] = {}

        def id_of(atom_set: frozenset[int]) -> int:
            if not atom_set:
                return _NEVER
            return ids.setdefault(atom_set, len(ids))

        plans = []
        for cat in categories:
            checks = []
            for rule in cat.rules:
                need = {id_of(rule.trigger)} | {id_of(s) for s in requirements(rule.node)}
                checks.append((frozenset(need), rule))
            wchecks = [(frozenset(id_of(s) for s in requirements(w.node)), w) for w in cat.weights]
            if cat.rules:  # a rule must fire, and no rule is evaluated unless its trigger hit
                gate = frozenset(id_of(r.trigger) for r in cat.rules)
            else:  # weights only: evaluated when an atom of a positive weight hit
                gate = frozenset((id_of(frozenset(cat.trigger_atoms())),))
            plans.append(_CategoryPlan(cat, gate, tuple(checks), tuple(wchecks)))
        self._set_ids = ids
        by_atom: dict[int, list[int]] = {}
        for atom_set, i in ids.items():
            for a in atom_set:
                by_atom.setdefault(a, []).append(i)
        self._atom_sets = {a: tuple(v) for a, v in by_atom.items()}
        return plans

    def _plans_for(self, languages: frozenset[str]) -> list[_CategoryPlan]:
        """The plan with only the rules and weights written for `languages` (every set they need has an id
        already: the full plan registered them)."""
        plans = self._plans.get(languages)
        if plans is None:
            plans = []
            for plan in self._plan:
                cat = plan.category
                checks = tuple((need, r) for need, r in plan.checks if r.lang in languages)
                wchecks = tuple((need, w) for need, w in plan.wchecks if w.lang in languages)
                if cat.rules:
                    gate = frozenset(self._set_ids[r.trigger] if r.trigger else _NEVER for _n, r in checks)
                else:  # the gate of every language's weights: a looser filter, never a wrong result
                    gate = plan.gate
                plans.append(_CategoryPlan(cat, gate, checks, wchecks))
            self._plans[languages] = plans
        return plans

    # ---- scanning ----------------------------------------------------------------------------------------

    def _scan(self, title: str, text: str) -> _Scan:
        ft = fold_with_map(title or "")
        fx = fold_with_map(text or "")
        tw, xw = folded_words(ft.folded), folded_words(fx.folded)
        head = " " + " ".join(tw) + " " if tw else " "
        body = " " + " ".join(xw) + " " if xw else " "
        hits = Hits((head, body), (tw, xw))
        if self._empty:
            return _Scan((ft, fx), hits)
        # the fields are scanned apart (no pattern holds a line break, so the matches are those of one scan over
        # "head\nbody"), which spares every match the question which field it is in
        cs_pending: list[tuple[int, int, int, int]] = []
        if tw:
            self._scan_field(head, TITLE, hits, cs_pending, -1)
        lead: dict[int, int] | None = None
        if xw:
            # an article is matched on its lead (see classify): the offset of the space after the lead's last
            # word, past which every match ends beyond the lead
            cut = 1 + len(" ".join(xw[:LEAD_WORDS])) if len(xw) >= ARTICLE_WORDS else -1
            lead = self._scan_field(body, TEXT, hits, cs_pending, cut)
        for atom, fld, s, e in cs_pending:
            if self._original_words((ft, fx)[fld], s, e) == self.atoms[atom].case_form:
                lst = hits.get(atom)
                if lst is None:
                    hits[atom] = [(fld, s, e)]
                else:
                    lst.append((fld, s, e))
        scan = _Scan((ft, fx), hits)
        if len(xw) >= ARTICLE_WORDS:
            scan.lead = self._lead_hits(hits, lead, cs_pending)
        return scan

    @staticmethod
    def _lead_hits(
        hits: Hits, lead: dict[int, int] | None, cs_pending: list[tuple[int, int, int, int]]
    ) -> Hits:
        """The hits of the title and of the text's first LEAD_WORDS words (what `Hits.within` would give).

        Matches come in the order of their end, so the lead's are the first of each atom's list: `lead` holds
        each atom's count when the scan passed the lead, None if it never did."""
        out = Hits(hits._strings, (hits.words(TITLE), hits.words(TEXT)))
        if lead is None:
            out.update(hits)
        else:
            for atom, n in lead.items():
                spans = hits[atom]
                out[atom] = spans if len(spans) == n else spans[:n]
            if cs_pending:  # case-sensitive hits are added after the scan: filter them as within() does
                last = LEAD_WORDS - 1
                for atom in {p[0] for p in cs_pending}:
                    found = hits.get(atom)
                    if found:
                        kept = [sp for sp in found if sp[0] != TEXT or sp[2] <= last]
                        if kept:
                            out[atom] = kept
        out.whole = hits
        return out

    def _scan_field(
        self, tstring: str, fld: int, hits: Hits, cs_pending: list[tuple[int, int, int, int]], cut: int
    ) -> dict[int, int] | None:
        """Add the field's matches to `hits`. With `cut` >= 0, return each atom's count of hits that end at or
        before offset `cut` of `tstring` (None if no match ends after it)."""
        lead: dict[int, int] | None = None
        if cut < 0:
            cut = len(tstring)
        # word index of a match = spaces before it, counted from the previous match (matches come in order of
        # their end; a longer match may start before the previous one, hence the step back)
        pos = 0
        word = 0
        count = tstring.count
        find = tstring.find
        hits_get = hits.get
        memo = self._check_memo
        for end, (back, atom, more_words, rare) in self.automaton.iter(tstring):
            if end > cut:
                lead = {a: len(v) for a, v in hits.items()}
                cut = len(tstring)
            start = end - back
            if start >= pos:
                word += count(" ", pos, start)
            else:
                word -= count(" ", start, pos)
            pos = start
            if rare is None:  # one atom, whole word or prefix: the common case
                span = (fld, word, word + more_words)
                lst = hits_get(atom)
                if lst is None:
                    hits[atom] = [span]
                elif span not in lst:
                    lst.append(span)
                continue
            fast, entries = rare
            if fast is not None:
                for atom, more_words in fast:
                    span = (fld, word, word + more_words)
                    lst = hits_get(atom)
                    if lst is None:
                        hits[atom] = [span]
                    elif span not in lst:
                        lst.append(span)
                continue
            rest: str | None = None
            for atom, kind, more_words, case_sensitive in entries:
                if kind > PREFIX:
                    if rest is None:
                        rest = tstring[end + 1 : find(" ", end + 1)]
                    # the suffix grammar's answer for one ending, remembered: endings repeat across words
                    # and items, and a dict lookup is much cheaper than the regex
                    known = memo[kind]
                    ok = known.get(rest)
                    if ok is None:
                        ok = known[rest] = _CHECKS[kind](rest) is not None  # type: ignore[misc]
                        if len(known) > _MEMO_MAX:
                            known.clear()
                    if not ok:
                        continue
                span = (fld, word, word + more_words)
                if case_sensitive:
                    cs_pending.append((atom, *span))
                    continue
                lst = hits_get(atom)
                if lst is None:
                    hits[atom] = [span]
                elif span not in lst:  # two forms of one term at one place (қама-, қамау-)
                    lst.append(span)
        return lead

    @staticmethod
    def _original_words(folded: Folded, s: int, e: int) -> str:
        spans = folded.word_spans
        if e >= len(spans):
            return ""
        raw = folded.original[spans[s][0] : spans[e][1]]
        return " ".join(
            WORD_RE.findall(unicodedata.normalize("NFKC", raw).replace("ё", "е").replace("Ё", "Е"))
        )

    # ---- classification ----------------------------------------------------------------------------------

    def classify(
        self,
        title: str,
        text: str,
        language: str | None = None,
        *,
        languages: tuple[str, ...] | list[str] | None = None,
    ) -> Classification:
        """Categories, countries and explanations for one item.

        The rules that run are those written for `languages` (the language decision of monitor.ingest.language:
        the item's language, and a second one for an item substantially in two), else for `language`, else every
        language's (a text of unknown language, or of one no rule is written in). Place names are found in every
        language. The result's `languages` names the asked languages whose rules ran (empty: every language's).
        """
        asked = languages if languages else (language,) if language else ()
        # a language no rule is written in (Ukrainian, Belarusian) is treated as unknown: every rule runs
        run = tuple(sorted(set(asked) & set(self.languages)))
        plan = self._plan
        if run and len(run) < len(self.languages):
            plan = self._plans_for(frozenset(run))
        scan = self._scan(title, text)
        hits = scan.hits if scan.lead is None else scan.lead
        matches: dict[str, CategoryMatch] = {}
        found: list[tuple[str, str, float, list[Hit]]] = []
        if hits:
            sat = set(chain.from_iterable(map(self._atom_sets.get, hits, repeat(()))))
            if sat:
                for cplan in plan:
                    if cplan.gate.isdisjoint(sat):
                        continue
                    m = self._match_category(cplan, hits, sat)
                    if m is not None:
                        found.append(m)
        places = self.gazetteer.resolve(scan.hits) if scan.hits else []  # places: the whole text
        needed: list[set[int]] = [set(), set()]
        for _c, _rule, _score, chosen in found:
            for h in chosen:
                needed[h[1]].update((h[2], h[3]))
        for p in places:
            needed[p[2]].update((p[3], p[4]))
        scan.prepare(needed)
        for cat_id, rule_text, score, chosen in found:
            matches[cat_id] = CategoryMatch(cat_id, rule_text, score, self._hit_infos(chosen, scan))
        countries = sorted({p[0] for p in places})
        place_hits = []
        for country, atom, fld, s, e in places:
            o_start, o_end = scan.offsets(fld, s, e)
            src = scan.fields[fld].original
            entry = self.gazetteer.places[atom].name
            place_hits.append(PlaceHit(country, src[o_start:o_end], FIELD_NAMES[fld], o_start, o_end, entry))
        cats = sort_categories(list(matches), self.categories)
        return Classification(cats, countries, {c: matches[c] for c in cats}, place_hits, run)

    def _match_category(
        self, plan: _CategoryPlan, hits: Hits, sat: set[int]
    ) -> tuple[str, str, float, list[Hit]] | None:
        """(category, rule text, score, the hits to show) if the category matches."""
        cat = plan.category
        fired: CompiledRule | None = None
        spans: list[Any] = []
        for need, rule in plan.checks:
            if need <= sat:
                r = rule.node.eval(hits, None)
                if r is not None:
                    if hits.whole is not hits:  # fired in the lead: show every place it holds in the article
                        r = rule.node.eval(hits.whole, None) or r
                    fired, spans = rule, r
                    break
        if cat.rules and fired is None:
            return None
        score = 1.0
        rule_text = fired.describe() if fired else ""
        if cat.weights:
            score = 0.0
            parts = []
            for need, w in plan.wchecks:
                if not need <= sat:
                    continue  # some atom set the weight needs has no hit: it cannot be true
                r = w.node.eval(hits, None)
                if r is None:
                    continue
                n = min(len({(s[0], s[1]) for s in r}) or 1, WEIGHT_CAP)
                score += n * w.weight
                parts.append(f"{w.lang}: {w.text} ({w.weight:g} x{n})")
                if w.weight > 0:
                    spans = spans + r
            if cat.min_score is not None and score < cat.min_score:
                return None
            summary = f"score {score:g} >= {cat.min_score:g}: " if cat.min_score is not None else ""
            summary += "; ".join(parts)
            rule_text = f"{rule_text} AND {summary}" if rule_text else summary
        if not cat.rules and score <= 0:
            return None
        # one hit per place in the text: задержать and задержанный both match "задержали"; show the first term
        by_place: dict[tuple[int, int, int], Hit] = {}
        for h in sorted({h for sp in spans for h in sp[3]}, key=lambda h: (h[1], h[2], h[3], h[0])):
            by_place.setdefault((h[1], h[2], h[3]), h)
        return cat.info.id, rule_text, score, list(by_place.values())[:MAX_HITS_SHOWN]

    def _hit_infos(self, chosen: list[Hit], scan: _Scan) -> list[HitInfo]:
        out: list[HitInfo] = []
        for atom, fld, s, e in chosen:
            start, end = scan.offsets(fld, s, e)
            src = scan.fields[fld].original
            a = self.atoms[atom]
            out.append(
                HitInfo(
                    term=a.term,
                    field=FIELD_NAMES[fld],
                    start=start,
                    end=end,
                    form=src[start:end],
                    snippet=snippet(src, start, end),
                    set=a.set_name,
                    language=a.lang,
                )
            )
        return out

    # ---- bench/floor and examples ----------------------------------------------------------------------------

    def scan_only(self, title: str, text: str) -> int:
        """Normalise and run the automaton with no rule logic (the bench's floor). Returns the raw match count."""
        ft = fold_with_map(title or "")
        fx = fold_with_map(text or "")
        tstring = tokens_of_folded(ft.folded) + "\n" + tokens_of_folded(fx.folded)
        return sum(1 for _ in self.automaton.iter(tstring))

    def check_examples(self) -> list[ExampleResult]:
        out = []
        for ex in self.examples:
            c = self.classify(ex.title, ex.text)
            got = ex.category in c.categories
            out.append(
                ExampleResult(
                    category=ex.category,
                    title=ex.title,
                    text=ex.text,
                    expected=ex.expected,
                    got=got,
                    file=ex.file,
                    line=ex.line,
                    got_categories=tuple(c.categories),
                )
            )
        return out


__all__ = ["WHOLE", "Classifier", "CompiledCategory", "CompiledRule", "CompiledWeight", "Example"]
