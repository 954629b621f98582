"""The rule language: tokenizer and parser producing a small AST.

Grammar (operators in capitals; precedence NOT > NEAR > AND > OR):

    expr    := and ("OR" and)*
    and     := near (("AND" | implicit-NOT) near)*      "A NOT B" means "A AND NOT B"
    near    := unary ("NEAR/" N unary)*
    unary   := "NOT" unary | field? primary
    field   := "title:" | "text:"
    primary := "(" expr ")" | "@set" | '"phrase words"' | term
    term    := word | word* | =word

Parsing never stops at the first problem: every problem found is returned with its offset in the rule text,
so a config with five mistakes reports five errors at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_NEAR = 100
MIN_WILDCARD_LETTERS = 3
FIELDS = ("title", "text")


@dataclass(frozen=True)
class Problem:
    message: str
    offset: int
    token: str


# ---- AST -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One word. `prefix`: matches any word starting with it. `exact`: no morphological expansion.
    `case_sensitive`: `=` and a capital letter in the term (acronyms such as =КНБ)."""

    text: str
    offset: int
    prefix: bool = False
    exact: bool = False
    case_sensitive: bool = False

    def source(self) -> str:
        return ("=" if self.exact else "") + self.text + ("*" if self.prefix else "")


@dataclass(frozen=True)
class Phrase:
    terms: tuple[Term, ...]
    offset: int

    def source(self) -> str:
        return '"' + " ".join(t.source() for t in self.terms) + '"'


@dataclass(frozen=True)
class SetRef:
    name: str
    offset: int


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node
    offset: int


@dataclass(frozen=True)
class Near:
    left: Node
    right: Node
    distance: int
    offset: int


@dataclass(frozen=True)
class Field:
    name: str
    child: Node
    offset: int


Node = Term | Phrase | SetRef | And | Or | Not | Near | Field


# ---- tokenizer ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tok:
    kind: str  # LP RP OR AND NOT NEAR FIELD SET PHRASE TERM BAD END
    text: str
    offset: int
    value: int | str | None = None


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<phrase>"[^"]*"?)
  | (?P<near>NEAR(?:/\S*)?)(?=[\s()"]|$)
  | (?P<op>AND|OR|NOT)(?=[\s()"]|$)
  | (?P<field>[A-Za-z]+):(?=\S)
  | (?P<set>@[^\s()"]*)
  | (?P<word>[^\s()"]+)
    """,
    re.VERBOSE,
)

# A term: letters/digits with inner hyphens, apostrophes or dots (Нур-Султан, O'Brien, U.S), optional = and *.
_TERM_RE = re.compile(r"(=)?((?:[^\W_]|[\u0300-\u036f])+(?:[-'’.](?:[^\W_]|[\u0300-\u036f])+)*)(\*)?")
_SET_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOWER_OPERATORS = {"and", "or", "not", "near"}


def tokenize(text: str) -> tuple[list[Tok], list[Problem]]:
    toks: list[Tok] = []
    problems: list[Problem] = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        s = m.group()
        off = m.start()
        if kind == "ws":
            continue
        if kind == "lp":
            toks.append(Tok("LP", s, off))
        elif kind == "rp":
            toks.append(Tok("RP", s, off))
        elif kind == "phrase":
            if len(s) < 2 or not s.endswith('"'):
                problems.append(Problem("unclosed quote", off, s))
                continue
            toks.append(Tok("PHRASE", s, off, s[1:-1]))
        elif kind == "near":
            dist = s[5:] if s.startswith("NEAR/") else ""
            if not dist:
                problems.append(Problem("NEAR needs a distance: NEAR/5", off, s))
                toks.append(Tok("NEAR", s, off, 5))
            elif not dist.isdigit() or int(dist) > MAX_NEAR:
                problems.append(Problem(f"NEAR distance must be a whole number 0..{MAX_NEAR}", off, s))
                toks.append(Tok("NEAR", s, off, 5))
            else:
                toks.append(Tok("NEAR", s, off, int(dist)))
        elif kind == "op":
            toks.append(Tok(s, s, off))
        elif kind == "field":
            name = m.group("field")
            if name not in FIELDS:
                problems.append(Problem(f"unknown field {name}: (use title: or text:)", off, s))
            toks.append(Tok("FIELD", s, off, name))
        elif kind == "set":
            name = s[1:]
            if not _SET_NAME_RE.fullmatch(name):
                problems.append(Problem("a set name is letters, digits and _ after @", off, s))
            toks.append(Tok("SET", s, off, name))
        else:
            toks.append(Tok("TERM", s, off))
    toks.append(Tok("END", "", len(text)))
    return toks, problems


def parse_term(s: str, offset: int, problems: list[Problem], *, in_phrase: bool = False) -> Term | None:
    s = s.rstrip("'’")  # writers' union: a trailing apostrophe is punctuation, as in the text
    m = _TERM_RE.fullmatch(s)
    if m is None:
        if "*" in s[:-1]:
            problems.append(Problem("a wildcard * may only end a word", offset, s))
        elif s.lower() in _LOWER_OPERATORS and not in_phrase:
            problems.append(Problem(f"operators are written in capitals: {s.upper()}", offset, s))
        else:
            problems.append(Problem("not a valid term (letters, digits, inner - ' or .)", offset, s))
        return None
    exact, word, star = m.group(1), m.group(2), m.group(3)
    if s.lower() in _LOWER_OPERATORS and not in_phrase:
        problems.append(Problem(f"operators are written in capitals: {s.upper()}", offset, s))
        return None
    if star:
        letters = len(re.match(r"(?:[^\W_]|[\u0300-\u036f])*", word).group())  # type: ignore[union-attr]
        if letters < MIN_WILDCARD_LETTERS:
            problems.append(Problem(f"wildcard needs {MIN_WILDCARD_LETTERS} letters before *", offset, s))
        if exact:
            problems.append(Problem("= and * cannot be combined", offset, s))
    case_sensitive = bool(exact) and any(c.isupper() for c in word)
    return Term(word, offset, prefix=bool(star), exact=bool(exact), case_sensitive=case_sensitive)


@dataclass
class _Parser:
    toks: list[Tok]
    problems: list[Problem] = field(default_factory=list)
    i: int = 0

    def peek(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        t = self.toks[self.i]
        if t.kind != "END":
            self.i += 1
        return t

    def expr(self) -> Node | None:
        items = [self.and_()]
        while self.peek().kind == "OR":
            self.take()
            items.append(self.and_())
        kept = [n for n in items if n is not None]
        if len(kept) != len(items):
            return None
        return kept[0] if len(kept) == 1 else Or(tuple(kept))

    def and_(self) -> Node | None:
        items = [self.near()]
        while True:
            t = self.peek()
            if t.kind == "AND":
                self.take()
                items.append(self.near())
            elif t.kind == "NOT":  # "A NOT B" = "A AND NOT B"
                items.append(self.near())
            elif t.kind in ("TERM", "PHRASE", "SET", "LP", "FIELD"):
                self.problems.append(
                    Problem('missing operator (AND, OR, NEAR/n) or quotes for a "phrase"', t.offset, t.text)
                )
                items.append(self.near())
            else:
                break
        kept = [n for n in items if n is not None]
        if len(kept) != len(items):
            return None
        return kept[0] if len(kept) == 1 else And(tuple(kept))

    def near(self) -> Node | None:
        left = self.unary()
        while self.peek().kind == "NEAR":
            t = self.take()
            right = self.unary()
            if left is None or right is None:
                left = None
                continue
            for side in (left, right):
                bad = _not_positional(side)
                if bad:
                    self.problems.append(
                        Problem(
                            f"NEAR operands must be terms, phrases, sets or OR-groups, not {bad}",
                            t.offset,
                            t.text,
                        )
                    )
            assert isinstance(t.value, int)
            left = Near(left, right, t.value, t.offset)
        return left

    def unary(self) -> Node | None:
        t = self.peek()
        if t.kind == "NOT":
            self.take()
            child = self.unary()
            return None if child is None else Not(child, t.offset)
        if t.kind == "FIELD":
            self.take()
            child = self.primary()
            if child is None:
                return None
            assert isinstance(t.value, str)
            return Field(t.value, child, t.offset)
        return self.primary()

    def primary(self) -> Node | None:
        t = self.take()
        if t.kind == "LP":
            inner = self.expr()
            if self.peek().kind == "RP":
                self.take()
            else:
                nt = self.peek()
                self.problems.append(Problem("missing )", nt.offset, nt.text or "end of rule"))
            return inner
        if t.kind == "SET":
            assert isinstance(t.value, str)
            return SetRef(t.value, t.offset)
        if t.kind == "PHRASE":
            assert isinstance(t.value, str)
            return parse_phrase(t.value, t.offset, self.problems)
        if t.kind == "TERM":
            return parse_term(t.text, t.offset, self.problems)
        what = t.text or "end of rule"
        self.problems.append(Problem("expected a term, phrase, @set or (", t.offset, what))
        # skip a stray operator so the rest of the rule is still checked
        if t.kind in ("RP", "OR", "AND", "NEAR"):
            return None
        return None


def parse_phrase(inner: str, offset: int, problems: list[Problem]) -> Phrase | None:
    terms: list[Term] = []
    ok = True
    for m in re.finditer(r"\S+", inner):
        term = parse_term(m.group(), offset + 1 + m.start(), problems, in_phrase=True)
        if term is None:
            ok = False
        else:
            terms.append(term)
    if not terms:
        if ok:
            problems.append(Problem("empty phrase", offset, '""'))
        return None
    if not ok:
        return None
    return Phrase(tuple(terms), offset)


def _not_positional(node: Node) -> str | None:
    """Why `node` cannot be an operand of NEAR (it has no single position), or None if it can."""
    if isinstance(node, Term | Phrase | SetRef | Near):
        return None
    if isinstance(node, Field):
        return _not_positional(node.child)
    if isinstance(node, Or):
        for c in node.children:
            bad = _not_positional(c)
            if bad:
                return bad
        return None
    if isinstance(node, And):
        return "AND"
    return "NOT"


def parse(text: str) -> tuple[Node | None, list[Problem]]:
    """Parse one rule. Returns the AST (None if it has errors) and every problem found."""
    toks, problems = tokenize(text)
    if len(toks) == 1:
        return None, problems or [Problem("empty rule", 0, "")]
    p = _Parser(toks, problems)
    node = p.expr()
    while p.peek().kind != "END":
        t = p.take()
        if t.kind == "RP":
            p.problems.append(Problem("unmatched )", t.offset, t.text))
        else:
            p.problems.append(Problem("unexpected token", t.offset, t.text))
            # keep going so later problems are reported too
            rest = p.expr()
            del rest
    if p.problems:
        return None, sorted(p.problems, key=lambda x: x.offset)
    return node, []


_EXPRESSION_RE = re.compile(r'["()@]|\b(?:AND|OR|NOT|NEAR(?:/\d*)?)\b')


def list_entry(text: str) -> str:
    """A list entry (set member, place name) with spaces and no operators is a phrase: YAML already ate the
    quotes of `["rights defender", ...]`, so put them back."""
    text = text.strip()
    if any(c.isspace() for c in text) and not _EXPRESSION_RE.search(text):
        return '"' + text + '"'
    return text


def set_refs(node: Node) -> list[SetRef]:
    out: list[SetRef] = []
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, SetRef):
            out.append(n)
        elif isinstance(n, And | Or):
            stack.extend(n.children)
        elif isinstance(n, Not | Field):
            stack.append(n.child)
        elif isinstance(n, Near):
            stack.extend((n.left, n.right))
    return out


def has_positive(node: Node) -> bool:
    """True if the node can only be true when some term occurs (a rule of NOTs alone would match anything)."""
    if isinstance(node, Term | Phrase | SetRef | Near):
        return True
    if isinstance(node, Field):
        return has_positive(node.child)
    if isinstance(node, And):
        return any(has_positive(c) for c in node.children)
    if isinstance(node, Or):
        return all(has_positive(c) for c in node.children)
    return False
