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
            return [(head + stem, CHECK_KINDS[check]) for stem, check in kazakh_stems(last)]
        return [(head + form + " ", WHOLE) for form in self.expander.forms(lang, last)]

    def build(self) -> ahocorasick.Automaton:
        auto = ahocorasick.Automaton()
        for pattern, entries in self.patterns.items():
            auto.add_word(pattern, (len(pattern), tuple(entries)))
        if self.patterns:
            auto.make_automaton()
        return auto


# ---- compiled expressions --------------------------------------------------------------------------------
# A result is None (false) or a list of spans (true; may be empty after NOT). A span is
# (field, first word, last word, hits) and a hit is (atom id, field, first word, last word).

Hit = tuple[int, int, int, int]
Span = tuple[int, int, int, tuple[Hit, ...]]
Hits = dict[int, list[tuple[int, int, int]]]
Result = list[Span] | None


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
    """Words at consecutive positions; one hit (named by the `label` atom) covering the whole phrase."""

    __slots__ = ("atoms", "label")

    def __init__(self, atoms: tuple[int, ...], label: int) -> None:
        self.atoms = atoms
        self.label = label

    def eval(self, hits: Hits, fld: int | None) -> Result:
        lists = []
        for a in self.atoms:
            found = hits.get(a)
            if not found:
                return None
            lists.append(found)
        # next word of the phrase must start right after the previous one ended
        starts = [{(f, s): e for f, s, e in lst} for lst in lists[1:]]
        out: list[Span] = []
        for f, s, e in lists[0]:
            if fld is not None and f != fld:
                continue
            end = e
            for nxt in starts:
                ne = nxt.get((f, end + 1))
                if ne is None:
                    break
                end = ne
            else:
                out.append((f, s, end, ((self.label, f, s, end),)))
        return out or None


class COr(CNode):
    __slots__ = ("children",)

    def __init__(self, children: list[CNode]) -> None:
        self.children = children

    def eval(self, hits: Hits, fld: int | None) -> Result:
        out: Result = None
        for c in self.children:
            r = c.eval(hits, fld)
            if r is not None:
                out = r if out is None else out + r
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
        return [] if self.child.eval(hits, fld) is None else None


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
    """Atoms whose presence can make `node` true (atoms only under NOT cannot)."""
    if isinstance(node, CAtom):
        return {node.atom}
    if isinstance(node, CPhrase):
        return {node.atoms[0]}
    if isinstance(node, COr | CAnd):
        out: set[int] = set()
        for c in node.children:
            out |= atoms_of(c)
        return out
    if isinstance(node, CNear):
        return atoms_of(node.left) | atoms_of(node.right)
    if isinstance(node, CField):
        return atoms_of(node.child)
    return set()


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
            ids = tuple(self.table.atom_for(self.lang, t, set_name) for t in node.terms)
            if len(ids) == 1:
                return CAtom(ids[0])
            return CPhrase(ids, self.table.label_atom(self.lang, node.source(), set_name))
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
