"""Highlighted snippets, built from the stored text by us: every piece is HTML-escaped first, and only then are
the matching words wrapped in <mark>, so nothing in an item's text can become markup."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from monitor.rules.normalize import WORD_RE, fold_with_map
from monitor.search.query import And, Node, Or, Phrase, Term
from monitor.search.text import MAX_WORD, analyse, language_mode, query_lemma_variants, query_word, subwords

SNIPPET_WORDS_BEFORE = 8
SNIPPET_WORDS = 36


@dataclass
class Highlighter:
    """Decides whether a word of a stored text is one the query asked for (excluded terms are not)."""

    surface: set[str] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    lemmas: set[str] = field(default_factory=set)

    @classmethod
    def for_query(cls, node: Node) -> Highlighter:
        h = cls()
        h._add(node)
        return h

    def _add(self, node: Node) -> None:
        if isinstance(node, Term):
            if node.prefix:
                self.prefixes.add(node.word)
            else:
                qw = query_word(node.word)
                self.surface.add(node.word)
                self.lemmas.update(qw.lemmas)
                self.keys.update(qw.lemmas)  # a stored word's other lemmas are among its keys
                self.keys.update(qw.keys)
        elif isinstance(node, Phrase):
            self.surface.update(node.words)
            for v in query_lemma_variants(list(node.words)):
                self.lemmas.update(v)
        elif isinstance(node, Or):
            for p in node.parts:
                self._add(p)
        elif isinstance(node, And):
            for p in node.include:
                self._add(p)

    _memo: dict[str, dict[str, bool]] = field(default_factory=dict)  # mode -> word -> matches

    def matches(self, folded_word: str, mode: str) -> bool:
        """Whether a word of a stored text (already folded, as WORD_RE finds it in folded text) matches."""
        hit = self.memo(mode).get(folded_word)
        return self._decide(folded_word, mode) if hit is None else hit

    def memo(self, mode: str) -> dict[str, bool]:
        """The decisions taken so far for words of `mode` (a caller may look words up in it first)."""
        memo = self._memo.get(mode)
        if memo is None:
            memo = self._memo[mode] = {}
        return memo

    def _decide(self, folded_word: str, mode: str) -> bool:
        if folded_word.isalnum() and len(folded_word) <= MAX_WORD:  # subwords() would return it alone
            hit = self._matches(folded_word, mode)
        else:
            hit = any(self._matches(w, mode) for w in subwords(folded_word))
        memo = self.memo(mode)
        if len(memo) < 50_000:
            memo[folded_word] = hit
        return hit

    def _matches(self, w: str, mode: str) -> bool:
        if w in self.surface or (self.prefixes and w.startswith(tuple(self.prefixes))):
            return True
        entry = analyse(w, mode)
        return entry.lemma in self.lemmas or (bool(entry.keys) and not self.keys.isdisjoint(entry.keys))


def highlight(text: str, hl: Highlighter, language: str | None, *, whole: bool = False) -> tuple[str, bool]:
    """(HTML, found): `text` escaped with the query's words marked. Unless `whole`, only a window of words
    around the first match (or the start of the text), with an ellipsis where text was left out."""
    if not text:
        return "", False
    mode = language_mode(language)
    folded = fold_with_map(text)
    words = WORD_RE.findall(folded.folded)
    if not words:
        return escape(text), False
    known = hl.memo(mode).get  # the decisions already taken (most words of a text, after the first hits)
    decide = hl._decide
    if whole or len(words) <= SNIPPET_WORDS:
        first, last = 0, len(words)
    else:
        anchor = 0
        for i, w in enumerate(words):
            hit = known(w)
            if hit or (hit is None and decide(w, mode)):
                anchor = i
                break
        first = max(0, anchor - SNIPPET_WORDS_BEFORE)
        last = min(len(words), first + SNIPPET_WORDS)
    marked = []
    for i in range(first, last):
        w = words[i]
        hit = known(w)
        if hit or (hit is None and decide(w, mode)):
            marked.append(i)
    # spans of the window's words only: a long text is not mapped back beyond what is shown
    spans = folded.spans_upto(last - 1)
    start = 0 if first == 0 else spans[first][0]
    end = len(text) if last == len(words) else spans[last - 1][1]
    hits = set(marked)
    out: list[str] = ["… "] if start > 0 else []
    pos = start
    for i in range(first, last):
        a, b = spans[i]
        if i in hits:
            out.append(escape(text[pos:a]))
            out.append("<mark>" + escape(text[a:b]) + "</mark>")
            pos = b
    out.append(escape(text[pos:end]))
    if end < len(text):
        out.append(" …")
    return "".join(out), bool(marked)
