"""Text normalisation shared by the rule compiler and the matcher.

Both sides fold text the same way: NFKC, case-fold, ё -> е. Words are runs of letters, digits and combining
marks (so Cyrillic and Kazakh letters ә ғ қ ң ө ұ ү һ і are word characters, and text in decomposed form keeps
its words whole). Everything else is a separator.

The matcher scans a *token string*: the folded words joined by single spaces with a space at each end
(" police detained protesters "). Patterns carry the spaces that stand for word boundaries, so a pattern
" суд " can only match the whole word, and " detain" (a prefix) only at the start of one. The number of spaces
before a match is its word index, which is what proximity counts in.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

# Letters/digits (\w minus the underscore) plus combining marks, which NFKC normally composes away but which
# text in NFD still carries; without them "й" written as и + U+0306 would split a word in two.
WORD_RE = re.compile(r"[\w\u0300-\u036f\u0483-\u0489]+")
# skips 32 words in one C-level match, so finding word 300 of a long text does not build 300 match objects
_SKIP_RE = re.compile(r"(?:[^\w\u0300-\u036f\u0483-\u0489]*[\w\u0300-\u036f\u0483-\u0489]+){32}")
_SKIP4_RE = re.compile(r"(?:[^\w\u0300-\u036f\u0483-\u0489]*[\w\u0300-\u036f\u0483-\u0489]+){4}")
# A cluster = one base character and the combining marks after it; folding cluster by cluster keeps an exact
# map from folded characters back to the original text.
_CLUSTER_RE = re.compile(r".[\u0300-\u036f\u0483-\u0489]*", re.DOTALL)


def fold(text: str) -> str:
    """Case-insensitive, compatibility-normalised form of `text` (NFKC, casefold, ё -> е)."""
    return unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")


def words(text: str) -> list[str]:
    """The folded words of `text`, in order."""
    return WORD_RE.findall(fold(text))


def token_string(text: str) -> str:
    """ " w1 w2 ... " for `text`: what the automaton scans, and the form patterns are built in."""
    return " " + " ".join(WORD_RE.findall(fold(text))) + " "


@dataclass
class Folded:
    """One field of an item, folded, with the map back to the original text (for explanations)."""

    original: str
    folded: str
    # folded index -> original index; None means identity (the common case, see fold_with_map).
    index_map: list[int] | None

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        if self.index_map is None:
            return start, end
        m = self.index_map
        o_start = m[start] if start < len(m) else len(self.original)
        o_end = m[end - 1] + 1 if end - 1 < len(m) else len(self.original)
        # extend to the end of the original cluster the last folded char came from
        while o_end < len(self.original) and unicodedata.combining(self.original[o_end]):
            o_end += 1
        return o_start, o_end

    @cached_property
    def word_spans(self) -> list[tuple[int, int]]:
        """Original-text (start, end) of every word, in the same order as the token string's words."""
        return self.spans_upto(-1)

    def spans_of(self, indices: list[int]) -> dict[int, tuple[int, int]]:
        """Original-text spans of the words with these (sorted) indices."""
        out: dict[int, tuple[int, int]] = {}
        pos = 0
        cur = 0  # index of the next word at or after pos
        text = self.folded
        for k in indices:
            for step, skip in ((32, _SKIP_RE), (4, _SKIP4_RE)):
                while k - cur >= step:
                    m = skip.match(text, pos)
                    if m is None:
                        return out
                    pos, cur = m.end(), cur + step
            for m in WORD_RE.finditer(text, pos):
                if cur == k:
                    out[k] = m.span() if self.index_map is None else self.to_original(*m.span())
                    pos, cur = m.end(), cur + 1
                    break
                cur += 1
            else:
                return out
        return out

    def spans_upto(self, last: int) -> list[tuple[int, int]]:
        """Spans of words 0..last (all words if last < 0): explanations rarely need the end of a long text."""
        it: Iterator[re.Match[str]] = WORD_RE.finditer(self.folded)
        if last >= 0:
            it = itertools.islice(it, last + 1)
        if self.index_map is None:
            return [m.span() for m in it]
        return [self.to_original(m.start(), m.end()) for m in it]


def fold_with_map(text: str) -> Folded:
    """Fold `text`, remembering where each folded character came from.

    Casefold maps every character to one or more characters, so if the text is already NFKC and its casefold
    has the same length, every character maps to exactly one: positions are unchanged and no map is needed.
    Otherwise (ß, ligatures, decomposed letters...) fold cluster by cluster and keep the map.
    """
    if unicodedata.is_normalized("NFKC", text):
        cf = text.casefold()
        if len(cf) == len(text):
            return Folded(text, cf.replace("ё", "е"), None)
    parts: list[str] = []
    index_map: list[int] = []
    for m in _CLUSTER_RE.finditer(text):
        f = fold(m.group())
        parts.append(f)
        index_map.extend([m.start()] * len(f))
    return Folded(text, "".join(parts), index_map)


def tokens_of_folded(folded: str) -> str:
    """Token string of already folded text; a single space when there are no words."""
    ws = WORD_RE.findall(folded)
    return " " + " ".join(ws) + " " if ws else " "


def is_word_char(ch: str) -> bool:
    return bool(WORD_RE.fullmatch(ch))
