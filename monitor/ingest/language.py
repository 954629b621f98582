"""Which language an item is written in, and so which language's rules classify it.

Feeds of this region often declare the wrong language (a Kazakh service posting Russian items and the reverse),
so each item is detected on its own text. The detector is lingua, restricted to the languages of the region that
it knows (ky, uz and tg it does not have); restricting it matters twice: a short Kazakh headline is otherwise often
taken for Mongolian or Tatar, and fewer models load faster. See bench/language_detect.py for the accuracy on short
headlines against langdetect and the script heuristic of monitor.ingest.parse.

Policy, in `decide_language`: the detected language when the detector is confident, the feed's declared language
otherwise; an item whose text is substantially in a second language (a Kazakh report quoting Russian) is "mixed"
and both languages' rules run.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lingua import ConfidenceValue, LanguageDetector

__all__ = [
    "SUPPORTED",
    "Detection",
    "LanguageDecision",
    "decide_language",
    "decide_languages",
    "detect",
    "detect_many",
    "warm_up",
]

# ISO 639-1 codes the detector chooses among (lingua has no Kyrgyz, Uzbek or Tajik model).
SUPPORTED = ("en", "ru", "kk", "uk", "be", "az")

# Below this top confidence the declared language wins: on a five-word headline lingua's values spread out, and
# Russian/Ukrainian/Belarusian share most of their words. Chosen on the eval sets' titles (bench/language_detect.py).
CONFIDENT = 0.6
# Fewer words than this never count as confident: a brand or a name ("KazTAG", "Kaspi.kz") in a Kazakh feed
# is confidently "English" to lingua, and is no evidence against the feed's declared language.
MIN_WORDS = 3
# A second language covering at least this share of the letters (and this many letters) makes the item mixed.
MIXED_SHARE = 0.2
MIXED_MIN_CHARS = 40
SEGMENT_CONFIDENT = 0.8
# Sentences and quoted runs: the units a second language comes in; shorter runs say too little to count.
_RUNS = re.compile(r"[^.!?…«»\"“”„\n]+")
SEGMENT_MIN_LETTERS = 20
# A text this long in the Russian alphabet (none of the letters of Kazakh, Ukrainian or Belarusian) or in ASCII
# letters, with at most PLAIN_OTHER_SHARE of its letters from the other of the two, is Russian or English without
# asking lingua: lingua gave every such text that language at 1.0, on the eval sets (881 of their 1,726 items are
# such texts) and on 2,000 entries of the bench's generated feeds (all of which are).
PLAIN_MIN_LETTERS = 200
PLAIN_OTHER_SHARE = 0.1
# Text beyond this is not looked at: the language is settled long before, and lingua's cost grows with length.
SAMPLE_CHARS = 2000

# Letters for `_plain_language` and `_may_differ`: Kazakh's own (і too, which Ukrainian and Belarusian share), and those only
# Ukrainian or Belarusian have among the Cyrillic languages of SUPPORTED.
_KAZAKH = frozenset("әғқңөұүһіӘҒҚҢӨҰҮҺІ")
_NEIGHBOURS = frozenset("їєґўЇЄҐЎ")
_CYRILLIC = frozenset(chr(c) for c in range(0x400, 0x500))
_PLAIN_RUSSIAN = frozenset("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ")
_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Languages for which `_may_differ` of a text is False only if it is False for every run of it.
_MONOTONE = frozenset({"ru", "en"})

_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Detection:
    language: str | None  # the most likely of SUPPORTED, None for text without letters
    confidence: float  # 0..1, lingua's value for `language`
    secondary: str | None = None  # a second language found in a substantial part of the text
    secondary_share: float = 0.0


@dataclass(frozen=True, slots=True)
class LanguageDecision:
    language: str | None  # what is stored on the item and chosen for its rules
    source: str  # "detected" | "declared" | "none"
    rules: tuple[str, ...]  # every language whose rules should run (two for a mixed item)
    detected: str | None
    confidence: float
    declared: str | None

    def __reduce__(self) -> tuple[object, ...]:
        # Sent back from the language worker for every entry: rebuilt by the constructor, which costs a third
        # of what a frozen slots dataclass's default unpickling does.
        return (
            LanguageDecision,
            (self.language, self.source, self.rules, self.detected, self.confidence, self.declared),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "language": self.language,
            "source": self.source,
            "rules": list(self.rules),
            "detected": self.detected,
            "confidence": round(self.confidence, 3),
            "declared": self.declared,
        }


@lru_cache(maxsize=1)
def _detector() -> LanguageDetector:
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in SUPPORTED]
    # Preloaded: the first item of a poll should not pay for loading models while holding up its feed.
    return LanguageDetectorBuilder.from_languages(*langs).with_preloaded_language_models().build()


def warm_up() -> None:
    """Load the detector's models now rather than on the first item."""
    _detector()


def _code(language: object) -> str:
    return str(language.iso_code_639_1.name).lower()  # type: ignore[attr-defined]


def detect(text: str) -> Detection:
    """The language of `text` among SUPPORTED, with lingua's confidence, and a second language if one covers a
    substantial part of a longer text."""
    return detect_many([text])[0]


def detect_many(texts: Sequence[str]) -> list[Detection]:
    """`detect` for many texts at once (one feed's new entries), in two of lingua's parallel calls, which
    spread the texts over the cores: the whole samples, then every run that may be in a second language.
    lingua holds the GIL while it works, so the poll runs this in a worker process (monitor.ingest.workers)."""
    samples = [text[:SAMPLE_CHARS] for text in texts]
    letters = [_letters(sample) for sample in samples]
    todo = [i for i, n in enumerate(letters) if n]
    out = [Detection(None, 0.0)] * len(samples)
    if not todo:
        return out
    tops: dict[int, tuple[str, float]] = {}
    ask = []
    alphabets: dict[int, set[str]] = {}  # a sample's letters, worked out once for both tests below
    for i in todo:
        plain = None
        if letters[i] >= PLAIN_MIN_LETTERS:
            alphabets[i] = _alphabet(samples[i])
            plain = _plain_language(samples[i], letters[i], alphabets[i])
        if plain is not None:
            tops[i] = (plain, 1.0)
        else:
            ask.append(i)
    detector = _detector()
    # lingua's detector is shared; calls from the store thread and the event loop must not interleave.
    with _lock:
        if ask:
            for i, values in zip(ask, _confidences(detector, [samples[i] for i in ask]), strict=True):
                if values and values[0].value > 0:
                    tops[i] = (_code(values[0].language), float(values[0].value))
        # A second language shows as whole sentences or quotes in it. Each such run is asked about alone;
        # lingua's own segmenter (detect_multiple_languages_of) cost seven times that and split plain Russian
        # into Ukrainian or Belarusian runs now and then.
        runs: list[tuple[int, int, str]] = []  # (text index, letters, run)
        for i in tops:
            if letters[i] < 2 * MIXED_MIN_CHARS:
                continue
            top = tops[i][0]
            if top in _MONOTONE and not _may_differ(samples[i], top, alphabets.get(i)):
                continue  # no run of the text can have a letter the whole text lacks
            for run in _RUNS.findall(samples[i]):
                n = _letters(run)
                if n >= SEGMENT_MIN_LETTERS and _may_differ(run, top):
                    runs.append((i, n, run))
        counts: dict[int, dict[str, int]] = {}
        if runs:
            for (i, n, _), values in zip(runs, _confidences(detector, [r for _, _, r in runs]), strict=True):
                best = values[0]
                code = _code(best.language)
                if code != tops[i][0] and best.value >= SEGMENT_CONFIDENT:
                    per = counts.setdefault(i, {})
                    per[code] = per.get(code, 0) + n
    for i, (top, confidence) in tops.items():
        secondary, share = None, 0.0
        if i in counts:
            n, code = max((n, c) for c, n in counts[i].items())
            if n >= MIXED_MIN_CHARS and n / letters[i] >= MIXED_SHARE:
                secondary, share = code, n / letters[i]
        out[i] = Detection(top, confidence, secondary, share)
    return out


def _alphabet(text: str) -> set[str]:
    """The distinct letters of `text`."""
    return {ch for ch in set(text) if ch.isalpha()}


def _plain_language(text: str, letters: int, alphabet: set[str] | None = None) -> str | None:
    """ "ru" for a text written in the Russian alphabet, "en" for one in ASCII letters, with at most a tenth of
    its `letters` from the other one (a brand, a handle); None for any other text. With PLAIN_MIN_LETTERS
    letters or more, lingua's answer for such a text is that language at 1.0. `alphabet`: `_alphabet(text)`."""
    if alphabet is None:
        alphabet = _alphabet(text)
    if alphabet <= _PLAIN_RUSSIAN:
        return "ru"
    if alphabet <= _ASCII:
        return "en"
    if not alphabet <= _PLAIN_RUSSIAN | _ASCII:
        return None
    russian = sum(map(_PLAIN_RUSSIAN.__contains__, text)) / letters
    return "ru" if russian >= 1 - PLAIN_OTHER_SHARE else "en" if russian <= PLAIN_OTHER_SHARE else None


def _may_differ(run: str, top: str, alphabet: set[str] | None = None) -> bool:
    """Whether a run could be in another language than the text's `top` one. A run in top's own script with
    none of the letters that set a neighbour apart is taken to be in top without asking lingua: on the eval
    sets that skips 98% of the runs, and of the 9,007 runs there lingua put only one of the skipped ones in
    another language (a list of Kazakh place names in a Russian sentence), changing no decision.
    `alphabet`: `_alphabet(run)`, if known."""
    letters = _alphabet(run) if alphabet is None else alphabet
    if top == "ru":
        return not letters <= _PLAIN_RUSSIAN
    if top == "en":
        return not letters <= _ASCII
    if top == "kk":
        return not (letters <= _CYRILLIC and letters & _KAZAKH and not letters & _NEIGHBOURS)
    return True


def _confidences(detector: LanguageDetector, texts: list[str]) -> list[list[ConfidenceValue]]:
    if len(texts) == 1:  # the parallel call's thread pool hand-off is not worth it for one text
        return [detector.compute_language_confidence_values(texts[0])]
    return detector.compute_language_confidence_values_in_parallel(texts)


def decide_language(title: str, text: str, declared: str | None) -> LanguageDecision:
    """The language to store and the rules to run: detected when confident, declared otherwise; both for mixed."""
    return decide_languages([(title, text, declared)])[0]


def decide_languages(items: Sequence[tuple[str, str, str | None]]) -> list[LanguageDecision]:
    """`decide_language` for many (title, text, declared) at once, detected together (`detect_many`)."""
    samples = [f"{title}\n{text}".strip() for title, text, _ in items]
    return [
        _decide(sample, det, declared)
        for sample, det, (_, _, declared) in zip(samples, detect_many(samples), items, strict=True)
    ]


def _letters(text: str) -> int:
    return sum(map(str.isalpha, text))


def _has_words(text: str, n: int) -> bool:
    """Whether `text` has at least `n` words of two letters or more (counting stops there)."""
    if n <= 0:
        return True
    for word in text.split():
        if _letters(word) >= 2:
            n -= 1
            if n <= 0:
                return True
    return False


def _decide(sample: str, det: Detection, declared: str | None) -> LanguageDecision:
    if (
        det.language is not None
        and det.confidence >= CONFIDENT
        and _has_words(sample[:SAMPLE_CHARS], MIN_WORDS)
    ):
        language, source = det.language, "detected"
    elif declared:
        language, source = declared, "declared"
    elif det.language is not None:
        language, source = det.language, "detected"  # nothing declared: a weak guess beats none
    else:
        return LanguageDecision(None, "none", (), None, 0.0, declared)
    rules = [language]
    if det.secondary and det.secondary != language:
        rules.append(det.secondary)
    return LanguageDecision(language, source, tuple(rules), det.language, det.confidence, declared)
