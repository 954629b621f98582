"""Compile rule ASTs into one Aho-Corasick automaton plus small trees evaluated over hit positions.

An *atom* is one rule term in one language (e.g. ru `задержать`); it owns many *patterns* (its surface forms as
token strings: " задержали ", " задержанных " ...). Every pattern of every atom, from every category and the
gazetteer, goes into one automaton keyed by pattern; its value lists which atoms the pattern belongs to and how
a hit must be checked (whole word, prefix, or prefix + Kazakh suffix grammar).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import ahocorasick

from monitor.rules import syntax
from monitor.rules.morph import KK_CHECKS, Expander, kazakh_stems
from monitor.rules.normalize import WORD_RE, fold

# how a pattern hit is accepted
WHOLE, PREFIX = 0, 1
CHECK_KINDS: dict[str, int] = {"kk_noun": 2, "kk_noun_v": 3, "kk_verb": 4}
CHECK_REGEX: dict[int, re.Pattern[str]] = {CHECK_KINDS[k]: v for k, v in KK_CHECKS.items()}
CHECK_REGEX[-1] = re.compile("")  # kk_exact, only used by word tests
CHECK_KINDS["kk_exact"] = -1

TITLE, TEXT = 0, 1
FIELD_IDS = {"title": TITLE, "text": TEXT}
FIELD_NAMES = ("title", "text")


@dataclass
class Atom:
    id: int
    term: str  # as written in the rule, e.g. "задержать", "=КНБ", "detain*"
    lang: str
    set_name: str | None
    case_form: str | None  # case-sensitive terms: the words as written, space-joined (after NFKC, ё -> е)


@dataclass
class AtomTable:
    """All atoms and the patterns that find them."""

    expander: Expander
    atoms: list[Atom] = field(default_factory=list)
    # pattern -> [(atom id, check kind, words in the pattern)]
    patterns: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    _by_key: dict[tuple[str, str, str | None], int] = field(default_factory=dict)

    def atom_for(self, lang: str, term: syntax.Term, set_name: str | None = None) -> int:
        key = (lang, term.source(), set_name)
        if key in self._by_key:
            return self._by_key[key]
        atom_id = len(self.atoms)
        case_form = None
        if term.case_sensitive:
            import unicodedata

            case_form = " ".join(
                WORD_RE.findall(unicodedata.normalize("NFKC", term.text).replace("ё", "е").replace("Ё", "Е"))
            )
        self.atoms.append(Atom(atom_id, term.source(), lang, set_name, case_form))
        self._by_key[key] = atom_id
        for pattern, kind in self._patterns_of(lang, term):
            nwords = pattern.count(" ") - (1 if kind == WHOLE else 0)
            self.patterns.setdefault(pattern, []).append((atom_id, kind, nwords))
        return atom_id

    def label_atom(self, lang: str, source: str, set_name: str | None) -> int:
        """An atom with no patterns of its own: names a phrase in explanations."""
        key = (lang, source, set_name)
        if key not in self._by_key:
            self._by_key[key] = len(self.atoms)
            self.atoms.append(Atom(len(self.atoms), source, lang, set_name, None))
        return self._by_key[key]

    def word_test(self, lang: str, word: str, term: syntax.Term, last: bool) -> WordTest:
        """A test for one token (already folded) at a non-anchor position of a phrase."""
        if term.prefix and last:
            return lambda tok: tok.startswith(word)
        if term.exact or not last:
            return lambda tok: tok == word
        if lang == "kk":
            stems = [
                (stem, CHECK_REGEX[CHECK_KINDS[check]].fullmatch) for stem, check in self._kazakh(word, term)
            ]
            return lambda tok: any(
                tok.startswith(st) and chk(tok[len(st) :]) is not None for st, chk in stems
            )
        forms = frozenset(self.expander.forms(lang, word))
        return forms.__contains__

    @staticmethod
    def _kazakh(word: str, term: syntax.Term) -> list[tuple[str, str]]:
        # acronyms (БАҚ, ҮЕҰ) take their endings after a hyphen, i.e. as a separate token: no stem alternation
        if term.text.isupper() and len(term.text) <= 5:
            return [(word, "kk_exact")]
        return kazakh_stems(word)

    def _patterns_of(self, lang: str, term: syntax.Term) -> list[tuple[str, int]]:
        parts = WORD_RE.findall(fold(term.text))
        head = " " + "".join(p + " " for p in parts[:-1])
        last = parts[-1]
        if term.prefix:
            return [(head + last, PREFIX)]
        if term.exact:
            return [(head + last + " ", WHOLE)]
        # compounds (Нур-Султан, Усть-Каменогорск) inflect at the end: expand the last word only
        if lang == "kk":
            return [
                (head + stem + " ", WHOLE) if check == "kk_exact" else (head + stem, CHECK_KINDS[check])
                for stem, check in self._kazakh(last, term)
            ]
        return [(head + form + " ", WHOLE) for form in self.expander.forms(lang, last)]

    def build(self) -> ahocorasick.Automaton:
        """The automaton. A pattern's value is (len - 1, atom, words - 1, None) in the common case: one atom,
        a whole word or prefix, no letter case to verify. Otherwise (len - 1, -1, 0, (fast, entries)): `fast`
        holds (atom, words - 1) pairs when every entry is that simple, else `entries` holds
        (atom, check kind, words - 1, case-sensitive?) for the matcher to verify one by one."""
        auto = ahocorasick.Automaton()
        for pattern, entries in self.patterns.items():
            back = len(pattern) - 1
            simple = all(kind <= PREFIX and self.atoms[a].case_form is None for a, kind, _n in entries)
            if simple and len(entries) == 1:
                atom, _kind, n = entries[0]
                auto.add_word(pattern, (back, atom, n - 1, None))
            elif simple:
                auto.add_word(pattern, (back, -1, 0, (tuple((a, n - 1) for a, _kind, n in entries), None)))
            else:
                full = tuple((a, kind, n - 1, self.atoms[a].case_form is not None) for a, kind, n in entries)
                auto.add_word(pattern, (back, -1, 0, (None, full)))
        if self.patterns:
            auto.make_automaton()
        return auto


# ---- compiled expressions --------------------------------------------------------------------------------
# A result is None (false) or a list of spans (true; may be empty after NOT). A span is
# (field, first word, last word, hits) and a hit is (atom id, field, first word, last word).

Hit = tuple[int, int, int, int]
Span = tuple[int, int, int, tuple[Hit, ...]]
Result = list[Span] | None


class Hits(dict[int, list[tuple[int, int, int]]]):
    """atom id -> [(field, first word, last word)], plus the words of each field for checking phrases."""

    def __init__(
        self, fields: tuple[str, str] = (" ", " "), words: tuple[list[str], list[str]] | None = None
    ) -> None:
        super().__init__()
        self._strings = fields
        # the scan already has each field's word list: no need to split its token string again
        self._words: list[list[str] | None] = [None, None] if words is None else list(words)
        self._whole: Hits | None = None  # see `whole`

    @property
    def whole(self) -> Hits:
        """What NOT looks in: the whole item, also when matching only its lead. Held as None for "self": a
        reference to itself would make every item's hits a cycle, freed only by the garbage collector."""
        return self if self._whole is None else self._whole

    @whole.setter
    def whole(self, hits: Hits) -> None:
        self._whole = None if hits is self else hits

    def words(self, fld: int) -> list[str]:
        w = self._words[fld]
        if w is None:
            w = self._words[fld] = self._strings[fld].split()
        return w

    def within(self, fld: int, last_word: int) -> Hits:
        """The hits of field `fld` that end at or before word `last_word`, and every hit of the other field."""
        out = Hits(self._strings, (self.words(TITLE), self.words(TEXT)))
        # an atom's spans come in text order (the scan appends them as it goes), so most lists are wholly inside
        # or wholly outside: share those instead of copying, and filter only the lists that straddle the limit
        for atom, spans in self.items():
            end = spans[-1]
            if end[0] != fld or end[2] <= last_word:
                out[atom] = spans
                continue
            first = spans[0]
            if first[0] == fld and first[2] > last_word:
                continue
            kept = [sp for sp in spans if sp[0] != fld or sp[2] <= last_word]
            if kept:
                out[atom] = kept
        out.whole = self.whole
        return out


WordTest = Callable[[str], bool]


class CNode:
    __slots__ = ()

    def eval(self, hits: Hits, fld: int | None) -> Result:
        raise NotImplementedError


class CAtom(CNode):
    __slots__ = ("atom",)

    def __init__(self, atom: int) -> None:
        self.atom = atom

    def eval(self, hits: Hits, fld: int | None) -> Result:
        found = hits.get(self.atom)
        if not found:
            return None
        a = self.atom
        spans: list[Span] = [(f, s, e, ((a, f, s, e),)) for f, s, e in found if fld is None or f == fld]
        return spans or None


class CPhrase(CNode):
    """Words at consecutive positions, found through one *anchor* word (the longest, so that "the" or "в" are
    never automaton patterns); the other words are tested on the neighbouring tokens. One hit, named by the
    `label` atom, covers the whole phrase."""

    __slots__ = ("anchor", "index", "label", "tests")

    def __init__(self, anchor: int, index: int, tests: list[WordTest | None], label: int) -> None:
        self.anchor, self.index, self.tests, self.label = anchor, index, tests, label

    def eval(self, hits: Hits, fld: int | None) -> Result:
        found = hits.get(self.anchor)
        if not found:
            return None
        out: list[Span] = []
        n = len(self.tests)
        for f, s, _e in found:
            if fld is not None and f != fld:
                continue
            first = s - self.index
            words = hits.words(f)
            if first < 0 or first + n > len(words):
                continue
            for i, test in enumerate(self.tests):
                if test is not None and not test(words[first + i]):
                    break
            else:
                out.append((f, first, first + n - 1, ((self.label, f, first, first + n - 1),)))
        return out or None


class COr(CNode):
    """Sets are large ORs of plain words: those are looked up by intersecting with the atoms that hit, instead of
    asking each of a hundred children in turn."""

    __slots__ = ("atoms", "children", "others", "phrases")

    def __init__(self, children: list[CNode]) -> None:
        self.children = children
        self.atoms = frozenset(c.atom for c in children if isinstance(c, CAtom))
        self.phrases: dict[int, list[CPhrase]] = {}
        for c in children:
            if isinstance(c, CPhrase):
                self.phrases.setdefault(c.anchor, []).append(c)
        self.others = [c for c in children if not isinstance(c, CAtom | CPhrase)]

    def eval(self, hits: Hits, fld: int | None) -> Result:
        out: list[Span] | None = None
        # frozenset.intersection(dict) walks the small dict; `frozenset & dict.keys()` copies the large set
        for a in self.atoms.intersection(hits):
            for f, s, e in hits[a]:
                if fld is None or f == fld:
                    if out is None:
                        out = []
                    out.append((f, s, e, ((a, f, s, e),)))
        if self.phrases:
            phrases = self.phrases
            for a in [a for a in hits if a in phrases]:
                for p in self.phrases[a]:
                    r = p.eval(hits, fld)
                    if r is not None:
                        if out is None:
                            out = []
                        out.extend(r)
        for c in self.others:
            r = c.eval(hits, fld)
            if r is not None:
                if out is None:
                    out = []
                out.extend(r)
        return out


class CAnd(CNode):
    __slots__ = ("children",)

    def __init__(self, children: list[CNode]) -> None:
        # cheap negations last is not needed for correctness; keep order as written for readable explanations
        self.children = children

    def eval(self, hits: Hits, fld: int | None) -> Result:
        out: list[Span] = []
        for c in self.children:
            r = c.eval(hits, fld)
            if r is None:
                return None
            out += r
        return out


class CNot(CNode):
    __slots__ = ("child",)

    def __init__(self, child: CNode) -> None:
        self.child = child

    def eval(self, hits: Hits, fld: int | None) -> Result:
        # an exclusion anywhere in the item counts: "football" in the fifth paragraph still says what it is about
        return [] if self.child.eval(hits.whole, fld) is None else None


class CNear(CNode):
    """Both sides in the same field with at most `distance` words between them, in either order."""

    __slots__ = ("distance", "left", "right")

    def __init__(self, left: CNode, right: CNode, distance: int) -> None:
        self.left, self.right, self.distance = left, right, distance

    def eval(self, hits: Hits, fld: int | None) -> Result:
        a = self.left.eval(hits, fld)
        if not a:
            return None
        b = self.right.eval(hits, fld)
        if not b:
            return None
        d = self.distance + 1
        out: list[Span] = []
        for fa, sa, ea, ha in a:
            for fb, sb, eb, hb in b:
                if fa == fb and sb - ea <= d and sa - eb <= d and ha != hb:
                    out.append((fa, min(sa, sb), max(ea, eb), ha + hb))
        return out or None


class CField(CNode):
    __slots__ = ("child", "field")

    def __init__(self, fld: int, child: CNode) -> None:
        self.field, self.child = fld, child

    def eval(self, hits: Hits, fld: int | None) -> Result:
        return self.child.eval(hits, self.field)


def atoms_of(node: CNode) -> set[int]:
    """Trigger atoms: `node` can only be true if one of them occurs. For AND and NEAR every positive side must
    occur, so the smallest side's atoms suffice; this keeps common words from waking up rules they are only a
    part of."""
    if isinstance(node, CAtom):
        return {node.atom}
    if isinstance(node, CPhrase):
        return {node.anchor}
    if isinstance(node, COr):
        out: set[int] = set()
        for c in node.children:
            out |= atoms_of(c)
        return out
    if isinstance(node, CAnd):
        sides = [atoms_of(c) for c in node.children if not isinstance(c, CNot)]
        return min(sides, key=len) if sides else set()
    if isinstance(node, CNear):
        return min(atoms_of(node.left), atoms_of(node.right), key=len)
    if isinstance(node, CField):
        return atoms_of(node.child)
    return set()


def requirements(node: CNode) -> list[frozenset[int]]:
    """Sets of atoms that must *each* have a hit for `node` to be true (a necessary condition, never a
    sufficient one): every positive side of an AND or NEAR contributes its own sets, an OR one set (one
    requirement of each alternative, joined). An empty list means no condition is known (NOT, unknown nodes).
    The matcher skips evaluating a rule when one of these sets has no hit, so this must never be stricter than
    `eval`: each set returned here is one that `eval` cannot be true without."""
    if isinstance(node, CAtom):
        return [frozenset((node.atom,))]
    if isinstance(node, CPhrase):
        return [frozenset((node.anchor,))]
    if isinstance(node, COr):
        joined: set[int] = set()
        for c in node.children:
            r = requirements(c)
            if not r:
                return []
            joined |= min(r, key=len)
        return [frozenset(joined)]
    if isinstance(node, CAnd):
        return [s for c in node.children for s in requirements(c)]
    if isinstance(node, CNear):
        return requirements(node.left) + requirements(node.right)
    if isinstance(node, CField):
        return requirements(node.child)
    return []


# ---- AST -> compiled -----------------------------------------------------------------------------------


@dataclass
class SetDef:
    name: str
    lang: str
    entries: list[tuple[str, int | None]]  # (entry text, line)
    file: str
    line: int | None


class CompileError(Exception):
    def __init__(self, message: str, offset: int, token: str, *, quiet: bool = False) -> None:
        self.message, self.offset, self.token = message, offset, token
        self.quiet = quiet  # already reported where the set is defined


@dataclass
class LangCompiler:
    """Compiles rule ASTs of one language; sets are compiled once and shared."""

    lang: str
    table: AtomTable
    sets: dict[str, SetDef]
    report: Callable[[str, str | None, int | None, str], None]  # (message, file, line, token)
    _compiled_sets: dict[str, CNode | None] = field(default_factory=dict)
    _in_progress: set[str] = field(default_factory=set)

    def compile(self, node: syntax.Node, set_name: str | None = None) -> CNode:
        if isinstance(node, syntax.Term):
            return CAtom(self.table.atom_for(self.lang, node, set_name))
        if isinstance(node, syntax.Phrase):
            return self.phrase(node, set_name)
        if isinstance(node, syntax.SetRef):
            return self.set_node(node)
        if isinstance(node, syntax.Or):
            return COr([self.compile(c, set_name) for c in node.children])
        if isinstance(node, syntax.And):
            return CAnd([self.compile(c, set_name) for c in node.children])
        if isinstance(node, syntax.Not):
            return CNot(self.compile(node.child, set_name))
        if isinstance(node, syntax.Near):
            return CNear(self.compile(node.left, set_name), self.compile(node.right, set_name), node.distance)
        if isinstance(node, syntax.Field):
            return CField(FIELD_IDS[node.name], self.compile(node.child, set_name))
        raise TypeError(node)

    def phrase(self, node: syntax.Phrase, set_name: str | None) -> CNode:
        # one entry per token: hyphenated terms (Нур-Султан) are several tokens, inflected at the end only
        words: list[tuple[str, syntax.Term, bool]] = []
        for t in node.terms:
            parts = WORD_RE.findall(fold(t.text))
            words.extend((p, t, i == len(parts) - 1) for i, p in enumerate(parts))
        if len(node.terms) == 1 and len(words) == 1:
            return CAtom(self.table.atom_for(self.lang, node.terms[0], set_name))
        anchor = max(range(len(words)), key=lambda i: (len(words[i][0]), -i))
        word, term, last = words[anchor]
        anchor_term = syntax.Term(
            word, term.offset, prefix=term.prefix and last, exact=term.exact or not last, case_sensitive=False
        )
        tests: list[WordTest | None] = [
            None if i == anchor else self.table.word_test(self.lang, w, t, is_last)
            for i, (w, t, is_last) in enumerate(words)
        ]
        return CPhrase(
            self.table.atom_for(self.lang, anchor_term, set_name),
            anchor,
            tests,
            self.table.label_atom(self.lang, node.source(), set_name),
        )

    def set_node(self, ref: syntax.SetRef) -> CNode:
        name = ref.name
        if name in self._compiled_sets:
            cached = self._compiled_sets[name]
            if cached is None:
                raise CompileError(f"set @{name} has errors", ref.offset, "@" + name, quiet=True)
            return cached
        sdef = self.sets.get(name)
        if sdef is None:
            raise CompileError(f"unknown set @{name} for language {self.lang}", ref.offset, "@" + name)
        if name in self._in_progress:
            raise CompileError(f"set @{name} refers to itself", ref.offset, "@" + name)
        self._in_progress.add(name)
        children: list[CNode] = []
        ok = True
        for text, line in sdef.entries:
            ast, problems = syntax.parse(syntax.list_entry(text))
            for p in problems:
                self.report(f"set @{name}: {p.message}", sdef.file, line, p.token)
            if ast is None:
                ok = False
                continue
            try:
                children.append(self.compile(ast, name))
            except CompileError as exc:
                self.report(f"set @{name}: {exc.message}", sdef.file, line, exc.token)
                ok = False
        self._in_progress.discard(name)
        node: CNode | None = (
            (children[0] if len(children) == 1 else COr(children)) if ok and children else None
        )
        self._compiled_sets[name] = node
        if node is None:
            raise CompileError(f"set @{name} has errors", ref.offset, "@" + name, quiet=True)
        return node
