"""What the index stores for a text, and what a query word stands for: one function for both sides.

Neither SQLite's FTS5 nor PostgreSQL sees raw text. Both receive tokens we made ourselves, so the same query
finds the same items on either (FTS5 folds Cyrillic case but keeps ё apart from е; PostgreSQL stems Russian
but knows no Kazakh). A text becomes three token streams, aligned by word position:

- S, the surface: each word folded as the rules fold it (NFKC, case-fold, ё -> е), marks such as stress accents
  dropped;
- L, one lemma per word: pymorphy3's most likely normal form for Russian and Ukrainian, a regular-inflection
  stem for English, the word itself for Kazakh (which has no dictionary here). Phrases are matched on L, so
  "задержали активистов" also finds "задержан активист";
- K, a bag of keys per word: the other lemmas an ambiguous word may have (стали: L стать, K сталь) and, for
  Kazakh, the rules' own suffix grammar turned around: "n"/"v"/"w" + stem for each way the word splits into a
  stem and a valid noun / voiced-noun / verb ending (monitor.rules.morph). A query word asks for its keys, so
  Kazakh search means exactly what a rule term means: қамау finds қамалды, қамауға; наразылық finds
  наразылығы.

A query word matches a stored word when one of the query word's lemmas (in any language it may be in, and the
word itself) is the stored word's L or one of its K lemmas, or when one of its Kazakh keys is among the stored
word's keys. S serves prefix queries.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from monitor.rules.morph import (
    KK_CHECKS,
    KK_MIN_VERB_ROOT,
    KK_NOUN_RE,
    KK_NOUN_VOICED_RE,
    KK_VERB_RE,
    kazakh_dictionary_forms,
    kazakh_stems,
    kazakh_voiced_stem,
)
from monitor.rules.normalize import WORD_RE, fold

# A word longer than this is not indexed (nor searchable): no language has such words, and PostgreSQL caps
# a lexeme at 2 KB. The same cap on both sides keeps the backends in agreement.
MAX_WORD = 100
# PostgreSQL positions stop at 16383; words past this many are not indexed, on either backend.
MAX_POSITIONS = 16000

_CYRILLIC_RE = re.compile(r"[\u0400-\u04ff]")
_MARK_RE = re.compile(r"[\u0300-\u036f\u0483-\u0489]")  # the combining marks WORD_RE takes into words
_KK_LETTERS = set("әғқңөұүһі")
_KK_ONLY = set("әғқңөұүһ")  # і is Ukrainian too
_LATIN_RE = re.compile(r"^[a-z]+$")
_KK_TAG = {"kk_noun": "n", "kk_noun_v": "v", "kk_verb": "w"}


def search_words(text: str) -> list[str]:
    """The words of `text` as the index sees them: folded, split at underscores (which FTS5 and PostgreSQL
    both treat as separators), combining marks dropped, over-long words left out."""
    folded = fold(text)
    if "_" not in folded and not _MARK_RE.search(folded):
        # Every word is alphanumeric then (WORD_RE's other characters are the underscore and the marks), so
        # each is its own index word: what subwords gives, without a call per word.
        return [w for w in WORD_RE.findall(folded) if len(w) <= MAX_WORD]
    out: list[str] = []
    for w in WORD_RE.findall(folded):
        out.extend(subwords(w))
    return out


@lru_cache(maxsize=65536)
def subwords(folded_word: str) -> tuple[str, ...]:
    """Index words of one WORD_RE word of folded text (usually just itself)."""
    if folded_word.isalnum():  # the common case: nothing to drop or split
        return (folded_word,) if len(folded_word) <= MAX_WORD else ()
    out = []
    for part in folded_word.split("_"):
        part = "".join(c for c in part if not unicodedata.combining(c))
        if part and len(part) <= MAX_WORD:
            out.append(part)
    return tuple(out)


def language_mode(language: str | None) -> str:
    """How Cyrillic words of an item in `language` are analysed: "ru", "uk", "kk", or "any" (unknown)."""
    lang = (language or "").lower()[:2]
    return lang if lang in ("ru", "uk", "kk") else "ru" if lang else "any"


# ---- morphology ------------------------------------------------------------------------------------------

_analyzers: dict[str, Any] = {}


def _analyzer(lang: str) -> Any:
    if lang not in _analyzers:
        import pymorphy3

        _analyzers[lang] = pymorphy3.MorphAnalyzer(lang=lang)
    return _analyzers[lang]


# Cache sizes: a year of news has a few hundred thousand distinct words, but the hot ones are far fewer, and a
# long-running service should not hold more than some tens of MB for this.
@lru_cache(maxsize=50_000)
def slavic_lemmas(lang: str, word: str) -> tuple[str, ...]:
    """Normal forms of a folded Russian/Ukrainian word, most likely first; () when pymorphy does not know it
    (its guesses for names are inventions, see monitor.rules.morph)."""
    seen: dict[str, None] = {}
    for p in _analyzer(lang).parse(word):
        if p.is_known:
            seen.setdefault(fold(p.normal_form), None)
    return tuple(seen)


@lru_cache(maxsize=65536)
def english_stem(word: str) -> str:
    """Regular English inflection removed (the inverse of monitor.rules.morph.english_forms, roughly):
    detained, detains, detaining -> detain; banned -> ban; charges, charged -> charg."""
    if len(word) <= 3 or not _LATIN_RE.match(word):
        return word
    base = word
    if word.endswith(("ies", "ied")) and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("ing") and len(word) >= 6:
        base = word[:-3]
    elif word.endswith("ed") and len(word) >= 5:
        base = word[:-2]
    elif word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        return word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        base = word[:-1]
    else:
        base = word
    if base is not word and len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "aeiouslz":
        base = base[:-1]  # banned -> ban, but not pressed -> pres
    if len(base) > 3 and base.endswith("e"):
        base = base[:-1]  # charge, charged, charges -> charg
    return base


@lru_cache(maxsize=50_000)
def kazakh_keys(word: str) -> tuple[str, ...]:
    """Every (stem, ending class) split of a folded Kazakh word the rules' grammar allows, as K keys; the word
    with no ending is left out (its L is the word itself, which a query asks for anyway). A "v" key only for
    stems kazakh_stems can give that class (a voiced or vowel-dropped stem: наразылығ-ы, орн-ы, халқ-ы)."""
    keys: list[str] = []
    for i in range(2, len(word)):
        stem, rest = word[:i], word[i:]
        if KK_NOUN_RE.fullmatch(rest):
            keys.append("n" + stem)
        if kazakh_voiced_stem(stem) and KK_NOUN_VOICED_RE.fullmatch(rest):
            keys.append("v" + stem)
        if i >= KK_MIN_VERB_ROOT and KK_VERB_RE.fullmatch(rest):
            keys.append("w" + stem)
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class WordKeys:
    """What one word of a stored text puts in the index."""

    lemma: str  # L stream
    keys: tuple[str, ...]  # K bag: other lemmas, Kazakh stem keys


@lru_cache(maxsize=100_000)
def analyse(word: str, mode: str) -> WordKeys:
    """Index entry of one folded word of an item whose Cyrillic words are analysed as `mode`."""
    if _LATIN_RE.match(word):
        return WordKeys(english_stem(word), ())
    if not _CYRILLIC_RE.search(word):
        return WordKeys(word, ())  # digits, other scripts: the surface is all
    kazakh = mode == "kk" or any(c in _KK_LETTERS for c in word)
    if kazakh:
        return WordKeys(word, kazakh_keys(word))
    lemmas = slavic_lemmas("uk" if mode == "uk" else "ru", word)
    keys = lemmas[1:]
    if mode == "any":  # unknown language: a Cyrillic word may be Kazakh written without its own letters
        keys += kazakh_keys(word)
    return WordKeys(lemmas[0] if lemmas else word, keys)


class Document:
    """The index entry of one item: S and L are aligned by position; K[i] are the keys of word i.

    The poll's language worker makes one for every new item and sends it back, and there the lists (hundreds
    of strings each) cost more to unpickle than all the rest of the result: so a Document travels as its
    streams joined by spaces, which is what FTS5 stores (`joined`, backends.fts5_row), and its lists are split
    again only when something asks for them (PostgreSQL's tsvectors, tests)."""

    __slots__ = ("_joined", "_lists", "_sparse", "title_words")

    def __init__(
        self, surface: list[str], lemmas: list[str], keys: list[tuple[str, ...]], title_words: int
    ) -> None:
        self._lists: tuple[list[str], list[str], list[tuple[str, ...]]] | None = (surface, lemmas, keys)
        self._joined: tuple[str, str, str] | None = None
        self._sparse: tuple[tuple[int, tuple[str, ...]], ...] = ()  # a packed one's keys: (position, keys)
        self.title_words = title_words  # the first this many positions come from the title

    @property
    def surface(self) -> list[str]:
        return self._unpacked()[0]

    @property
    def lemmas(self) -> list[str]:
        return self._unpacked()[1]

    @property
    def keys(self) -> list[tuple[str, ...]]:
        return self._unpacked()[2]

    def joined(self) -> tuple[str, str, str]:
        """S, L and every word's K keys in order, each stream's tokens joined by single spaces."""
        if self._joined is None:
            surface, lemmas, keys = self._unpacked()
            self._joined = (" ".join(surface), " ".join(lemmas), " ".join(k for ks in keys for k in ks))
        return self._joined

    def _unpacked(self) -> tuple[list[str], list[str], list[tuple[str, ...]]]:
        if self._lists is None:
            assert self._joined is not None
            surface, lemmas = self._joined[0].split(" "), self._joined[1].split(" ")
            keys: list[tuple[str, ...]] = [()] * len(surface)
            for i, ks in self._sparse:
                keys[i] = ks
            self._lists = (surface, lemmas, keys)
        return self._lists

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Document):
            return NotImplemented
        return self.title_words == other.title_words and self._unpacked() == other._unpacked()

    __hash__ = None  # type: ignore[assignment]  # it holds lists, as the dataclass it replaced did

    def __repr__(self) -> str:
        surface, lemmas, keys = self._unpacked()
        return (
            f"Document(surface={surface!r}, lemmas={lemmas!r}, keys={keys!r}, title_words={self.title_words})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        surface, lemmas, keys = self._unpacked()
        joined = self.joined()
        # The joined streams split back into the same words only if none holds a space (ours never do: words
        # are WORD_RE matches, and lemmas single words) and there is at least one.
        if surface and joined[0].count(" ") == len(surface) - 1 and joined[1].count(" ") == len(lemmas) - 1:
            return (_packed, (joined, tuple((i, ks) for i, ks in enumerate(keys) if ks), self.title_words))
        return (Document, (surface, lemmas, keys, self.title_words))


def _packed(
    joined: tuple[str, str, str], sparse: tuple[tuple[int, tuple[str, ...]], ...], title_words: int
) -> Document:
    """A Document from its pickled form (Document.__reduce__): the joined streams now, the lists when asked."""
    doc = Document.__new__(Document)
    doc._joined, doc._lists, doc._sparse, doc.title_words = joined, None, sparse, title_words
    return doc


def document(title: str, text: str, language: str | None) -> Document:
    mode = language_mode(language)
    t = search_words(title)
    words = (t + search_words(text))[:MAX_POSITIONS]
    entries = [analyse(w, mode) for w in words]
    return Document(
        surface=words,
        lemmas=[e.lemma for e in entries],
        keys=[e.keys for e in entries],
        title_words=min(len(t), len(words)),
    )


# ---- the query side --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryWord:
    """What one query word asks for: any of `lemmas` as a stored word's L or K lemma, or any of `keys`
    (Kazakh stem keys) among its K keys."""

    lemmas: tuple[str, ...]
    keys: tuple[str, ...]


@lru_cache(maxsize=4096)
def query_word(word: str) -> QueryWord:
    """The lemmas of a folded query word in every language it may be in, the word itself among them, and for
    Cyrillic words the Kazakh stems a rule term of that spelling would match (morph.kazakh_stems).

    A word that is Kazakh (a letter only Kazakh has, or no Russian reading) is first taken back to
    the dictionary forms it may be an inflection of (morph.kazakh_dictionary_forms: қамалды -> қамау), and
    each of those asks for its own stems, so қамалды finds қамау, қамауға and ұсталды-like forms of the
    same verb, as қамау does."""
    if _LATIN_RE.match(word):
        return QueryWord((english_stem(word),), ())
    if not _CYRILLIC_RE.search(word):
        return QueryWord((word,), ())
    lemmas: dict[str, None] = {word: None}
    russian = slavic_lemmas("ru", word)
    for lem in russian + slavic_lemmas("uk", word):
        lemmas.setdefault(lem, None)
    # Ukrainian's dictionary has readings for Kazakh words (мектебі), so only a Russian one keeps a word
    # without Kazakh letters as written
    kazakh = not russian or not _KK_ONLY.isdisjoint(word)
    forms = kazakh_dictionary_forms(word) if kazakh else [word]
    keys: dict[str, None] = {}
    for form in forms:
        lemmas.setdefault(form, None)
        for stem, check in kazakh_stems(form):
            if check in KK_CHECKS:
                keys.setdefault(_KK_TAG[check] + stem, None)
    return QueryWord(tuple(lemmas), tuple(keys))


def query_lemma_variants(words: list[str]) -> list[list[str]]:
    """L-stream spellings of a phrase, one per language it may be in (Russian, Ukrainian, Kazakh/as written),
    without repeats: a phrase is matched on lemmas, in order and adjacent."""
    variants: dict[tuple[str, ...], None] = {}
    for mode in ("ru", "uk", "kk"):
        variants.setdefault(tuple(analyse(w, mode).lemma for w in words), None)
    return [list(v) for v in variants]
