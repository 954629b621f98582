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
_FIND_MIN = 3  # words shorter than this are located by the regex walk (see Folded.spans_of)
_word_char_memo: dict[str, bool] = {}


def _is_word_char(ch: str) -> bool:
    """`is_word_char` for one character, memoised: the boundary test of Folded.spans_of."""
    r = _word_char_memo.get(ch)
    if r is None:
        r = WORD_RE.match(ch) is not None
        if len(_word_char_memo) < 65536:
            _word_char_memo[ch] = r
    return r


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

    def spans_of(self, indices: list[int], words: list[str] | None = None) -> dict[int, tuple[int, int]]:
        """Original-text spans of the words with these (sorted) indices.

        `words`, if given, must be this field's words (`WORD_RE.findall(self.folded)`, e.g. the token string
        split). Word k is then found as the m-th whole-word occurrence of its text after the previous word
        found, m being counted in the list: C-level `find` and `count` instead of a regex walk over every word
        in between. Short words, which occur inside many others, still take the regex walk."""
        out: dict[int, tuple[int, int]] = {}
        pos = 0
        cur = 0  # index of the next word at or after pos
        text = self.folded
        size = len(text)
        for k in indices:
            if words is not None and k < len(words) and len(words[k]) >= _FIND_MIN:
                w = words[k]
                m = words[cur:k].count(w) if k > cur else 0
                n = len(w)
                p = text.find(w, pos)
                while p >= 0:
                    if (p == 0 or not _is_word_char(text[p - 1])) and (
                        p + n >= size or not _is_word_char(text[p + n])
                    ):
                        if m == 0:
                            break
                        m -= 1
                    # a whole-word occurrence cannot start inside another occurrence: all its letters are word
                    # characters, so the character before it would be one
                    p = text.find(w, p + n)
                if p < 0:  # cannot happen: `words` are this text's words
                    return out
                out[k] = (p, p + n) if self.index_map is None else self.to_original(p, p + n)
                pos, cur = p + n, k + 1
                continue
            for step, skip in ((32, _SKIP_RE), (4, _SKIP4_RE)):
                while k - cur >= step:
                    mt = skip.match(text, pos)
                    if mt is None:
                        return out
                    pos, cur = mt.end(), cur + step
            for mt in WORD_RE.finditer(text, pos):
                if cur == k:
                    out[k] = mt.span() if self.index_map is None else self.to_original(*mt.span())
                    pos, cur = mt.end(), cur + 1
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


# Punctuation that sticks to the edges of words in news text; stripping it lets most chunks skip the regex.
_EDGE_PUNCT = ".,;:!?\"'()[]«»‹›“”„‟‘’‚—–-…/*"


def folded_words(folded: str) -> list[str]:
    """`WORD_RE.findall(folded)`, faster: most whitespace-separated chunks are one word, perhaps with punctuation
    at its edges, and `str.isalnum` (\\w without the underscore) says so at C speed; only the other chunks take
    the regex. The result is the same list (tests/test_rules_matching.py compares them)."""
    out: list[str] = []
    app, ext, findall = out.append, out.extend, WORD_RE.findall
    strip = _EDGE_PUNCT
    for chunk in folded.split():
        if chunk.isalnum():
            app(chunk)
            continue
        core = chunk.strip(strip)
        if core.isalnum():
            app(core)
        else:
            ext(findall(chunk))
    return out


def tokens_of_folded(folded: str) -> str:
    """Token string of already folded text; a single space when there are no words."""
    ws = folded_words(folded)
    return " " + " ".join(ws) + " " if ws else " "


def is_word_char(ch: str) -> bool:
    return bool(WORD_RE.fullmatch(ch))
