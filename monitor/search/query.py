"""The query language, parsed by us so that no user text ever reaches FTS5's or PostgreSQL's own syntax.

    query   := or
    or      := and ("OR" and)*
    and     := unary+                  (juxtaposition; an explicit "AND" is allowed and means the same)
    unary   := ("-" | "NOT") atom | atom
    atom    := WORD | WORD "*" | '"' words '"' | "(" or ")"

A WORD is a run of anything but spaces, quotes and brackets; it is normalised like stored text (see
monitor.search.text), so "covid-19" or title:x become the phrase of their words and a colon means nothing.
Every problem is a SearchQueryError naming what is wrong and where (1-based character position).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitor.errors import MonitorError
from monitor.search.text import search_words

MAX_QUERY_CHARS = 1000
MAX_TERMS = 32
MIN_PREFIX = 2


class SearchError(MonitorError):
    """A search could not be run as asked."""


class SearchQueryError(SearchError):
    """The query text is malformed; `position` is the 1-based character where the problem is (None: the
    query as a whole)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.message = message
        self.position = position
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f" (at character {self.position})" if self.position is not None else ""
        return f"invalid search query: {self.message}{where}"

    def to_json(self) -> dict[str, object]:
        return {"message": self.message, "position": self.position}


class SearchFilterError(SearchError):
    """A filter cannot be applied (unknown value, or a filter this database cannot answer yet)."""


# ---- syntax tree -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One word (normalised); `prefix` for word*."""

    word: str
    prefix: bool = False


@dataclass(frozen=True)
class Phrase:
    """Normalised words that must stand together in this order (lemmas compared, see monitor.search.text)."""

    words: tuple[str, ...]


@dataclass(frozen=True)
class And:
    include: tuple[Node, ...]  # at least one
    exclude: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Node, ...]


Node = Term | Phrase | And | Or


# ---- lexer -----------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r'\s+|"|\(|\)|[^\s"()]+')


@dataclass(frozen=True)
class _Tok:
    kind: str  # word, quote-phrase, (, ), OR, AND, NOT
    text: str
    pos: int  # 1-based


def _lex(query: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    n = len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
            continue
        if c == '"':
            end = query.find('"', i + 1)
            if end < 0:
                raise SearchQueryError("unbalanced quote: this phrase is never closed", i + 1)
            toks.append(_Tok("phrase", query[i + 1 : end], i + 1))
            i = end + 1
            continue
        if c in "()":
            toks.append(_Tok(c, c, i + 1))
            i += 1
            continue
        m = _TOKEN_RE.match(query, i)
        assert m is not None
        word = m.group()
        if word in ("OR", "AND", "NOT"):
            toks.append(_Tok(word, word, i + 1))
        elif word.startswith("-") and len(word) > 1:
            toks.append(_Tok("NOT", "-", i + 1))
            toks.append(_Tok("word", word[1:], i + 2))
        elif word == "-":
            # "-" alone before a phrase or bracket negates it; anywhere else it means nothing
            nxt = query[i + 1 : i + 2]
            if nxt in ('"', "("):
                toks.append(_Tok("NOT", "-", i + 1))
            else:
                toks.append(_Tok("word", word, i + 1))
        else:
            toks.append(_Tok("word", word, i + 1))
        i = m.end()
    return toks


# ---- parser ----------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, toks: list[_Tok], length: int) -> None:
        self.toks = toks
        self.i = 0
        self.length = length
        self.terms = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def end_pos(self) -> int:
        return self.length + 1

    def parse(self) -> Node | None:
        node = self.parse_or()
        tok = self.peek()
        if tok is not None:
            # only a stray ")" can stop parse_or before the end
            raise SearchQueryError("unbalanced bracket: ')' without a matching '('", tok.pos)
        return node

    def parse_or(self) -> Node | None:
        start = self.peek()
        if start is not None and start.kind == "OR":
            raise SearchQueryError("OR needs a term before it", start.pos)
        parts: list[Node | None] = [self.parse_and()]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.i += 1
            nxt = self.peek()
            if nxt is None or nxt.kind in ("OR", ")"):
                raise SearchQueryError("OR needs a term after it", tok.pos)
            parts.append(self.parse_and())
        kept = [p for p in parts if p is not None]
        if len(kept) < len(parts) and kept:
            # "a OR !!!": one side has no searchable word, so the OR would silently mean "a"
            raise SearchQueryError("one side of OR has no words to search for")
        if not kept:
            return None
        return kept[0] if len(kept) == 1 else Or(tuple(kept))

    def parse_and(self) -> Node | None:
        include: list[Node] = []
        exclude: list[Node] = []
        first_pos = self.peek().pos if self.peek() is not None else self.end_pos()  # type: ignore[union-attr]
        seen_any = False
        while (tok := self.peek()) is not None and tok.kind not in ("OR", ")"):
            if tok.kind == "AND":
                self.i += 1
                if not seen_any or (nxt := self.peek()) is None or nxt.kind in ("OR", ")", "AND"):
                    raise SearchQueryError("AND needs a term on each side", tok.pos)
                continue
            negate = False
            if tok.kind == "NOT":
                self.i += 1
                negate = True
                nxt = self.peek()
                if nxt is None or nxt.kind in ("OR", ")", "AND", "NOT"):
                    raise SearchQueryError(
                        f"'{tok.text}' must be followed by a word, phrase or bracket", tok.pos
                    )
            node = self.parse_atom()
            seen_any = True
            if node is None:
                continue
            (exclude if negate else include).append(node)
        if not include:
            if exclude:
                raise SearchQueryError(
                    "a query cannot only exclude: add a word to search for besides the '-' terms", first_pos
                )
            return None
        if not exclude and len(include) == 1:
            return include[0]
        return And(tuple(include), tuple(exclude))

    def count(self, pos: int) -> None:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise SearchQueryError(f"too many terms: at most {MAX_TERMS}", pos)

    def parse_atom(self) -> Node | None:
        tok = self.peek()
        assert tok is not None
        self.i += 1
        if tok.kind == "(":
            inner_start = self.peek()
            if inner_start is None:
                raise SearchQueryError("unbalanced bracket: '(' is never closed", tok.pos)
            node = self.parse_or()
            close = self.peek()
            if close is None or close.kind != ")":
                raise SearchQueryError("unbalanced bracket: '(' is never closed", tok.pos)
            self.i += 1
            return node
        if tok.kind == "phrase":
            words = search_words(tok.text)
            if not words:
                return None
            self.count(tok.pos)
            return Term(words[0]) if len(words) == 1 else Phrase(tuple(words))
        if tok.kind == ")":  # pragma: no cover - parse_and stops before ")"
            raise SearchQueryError("unbalanced bracket: ')' without a matching '('", tok.pos)
        return self.word(tok)

    def word(self, tok: _Tok) -> Node | None:
        text = tok.text
        prefix = text.endswith("*")
        body = text.rstrip("*")
        if prefix and not search_words(body):
            raise SearchQueryError("'*' must follow a word (word* finds words starting with it)", tok.pos)
        words = search_words(body)
        if not words:
            return None
        self.count(tok.pos)
        if prefix:
            last = words[-1]
            if len(last) < MIN_PREFIX:
                raise SearchQueryError(
                    f"'{body}*' is too short: a prefix needs at least {MIN_PREFIX} letters", tok.pos
                )
            if len(words) == 1:
                return Term(last, prefix=True)
            # "covid-1*": the words before it as a phrase, and the last word as a prefix
            head = words[:-1]
            before: Node = Term(head[0]) if len(head) == 1 else Phrase(tuple(head))
            return And((before, Term(last, prefix=True)), ())
        return Term(words[0]) if len(words) == 1 else Phrase(tuple(words))


def parse_query(query: str) -> Node:
    """The syntax tree of `query`; SearchQueryError when it is malformed or has nothing to search for."""
    if len(query) > MAX_QUERY_CHARS:
        raise SearchQueryError(
            f"the query is {len(query)} characters long; at most {MAX_QUERY_CHARS}", MAX_QUERY_CHARS + 1
        )
    toks = _lex(query)
    node = _Parser(toks, len(query)).parse()
    if node is None:
        raise SearchQueryError("the query has no words to search for")
    return node
