"""Morphology: which surface words a rule term stands for.

- Russian and Ukrainian: a term is expanded at compile time to every form of its lexeme with pymorphy3, so
  `задержать` matches задержали, задержан, задержанных (pymorphy counts participles and gerunds as forms of the
  verb). Deverbal nouns (задержание) and the other aspect (задерживать) are separate lemmas in the dictionary:
  rules name them explicitly, which keeps every expansion predictable (`задержать OR задержание`). A term that is
  not a dictionary form expands from its most likely lemma; a word pymorphy does not know is left as written
  (its guesser invents paradigms for names, e.g. Жанаозен -> "жанаозный"), so write such words with `*` or list
  their forms.
- English: regular inflection (-s, -es, -ed, -ing, y -> ies/ied, final e, doubled consonant). Irregular forms
  (seized is regular; beaten, shut are not) are written out.
- Kazakh: kazstem (qazmorph) needs an HFST toolchain and compiled FST resources that are not installed and cannot
  be fetched offline, so Kazakh uses a suffix grammar instead. A noun term is a stem that may be followed by a
  chain plural + possessive + case + -ғы (Алматыдағы); a term ending in -у/-ю is a verb in its dictionary form
  and its root (қамау -> қама-, жабу -> жаб-/жап-) may be followed by voice (passive -ыл/-л/-ын, causative),
  negation, and a tense, participle, converb or verbal-noun ending with its own noun chain. Stem-final к/қ/п
  voice before vowels (наразылық -> наразылығы, мектеп -> мектебі), verb roots devoice (жабу -> жапты, шығу ->
  шықты), and a high vowel after a sonorant drops before a vowel (орын -> орны, халық -> халқы). Limits: vowel harmony and consonant assimilation are not
  enforced (an impossible suffix only matches words that do not exist), stems that change inside are not
  handled, and derivation (-лық, -шы) is not expansion: such words are their own terms.

Expansions of Russian/Ukrainian words are cached on disk, keyed by the dictionary package version.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from monitor.rules.normalize import fold

MORPH_VERSION = "3"  # bump when expansion logic changes, so cached expansions are rebuilt
LANGUAGES = ("en", "ru", "uk", "kk")

# ---- Kazakh suffix grammar ---------------------------------------------------------------------------

_PL = "(?:лар|лер|дар|дер|тар|тер)"
_POSS = "(?:ымыз|іміз|мыз|міз|ыңыз|іңіз|ңыз|ңіз|ым|ім|ың|ің|сы|сі|ы|і|м|ң)"
_CASE = (
    "(?:ның|нің|дың|дің|тың|тің|ға|ге|қа|ке|на|не|а|е|ны|ні|ды|ді|ты|ті|н"
    "|нда|нде|да|де|та|те|нан|нен|дан|ден|тан|тен|менен|бенен|пенен|мен|бен|пен|ша|ше)"
)
# -ғы/-гі makes adjectives of locatives (Алматыдағы); after anything else it would let жала match жалақы
_LOC_ADJ = "(?:да|де|та|те|нда|нде)(?:ғы|гі|қы|кі)"
# the -ғы adjective is a noun again: Алматыдағылар, соттағыны
_NOUN_TAIL = f"{_PL}?{_POSS}?(?:{_LOC_ADJ}{_PL}?{_CASE}?|{_CASE})?"
# predicative person endings after a participle: ұсталғанмын, қамалғанбыз
_PRED = "(?:мын|мін|бын|бін|пын|пін|сың|сің|сыз|сіз|мыз|міз|быз|біз|пыз|піз)?"
_VOICE = "(?:ыл|іл|л|ын|ін|н|ыс|іс|с|ғыз|гіз|қыз|кіз|дыр|дір|тыр|тір|т){0,2}"
_NEG = "(?:ма|ме|ба|бе|па|пе)?"
_PERSON = "(?:м|ң|ңыз|ңіз|қ|к|ңдар|ңдер|ңыздар|ңіздер|лар|лер)"
_VERB_END = (
    "(?:"
    f"(?:ды|ді|ты|ті){_PERSON}?"  # past: ұсталды, жаптық
    "|(?:ыпты|іпті|пты|пті)(?:мын|мін|сың|сің|сыз|сіз|мыз|міз)?"  # evidential: ұстапты
    "|(?:а|е|й)(?:ды|ді|мын|мін|сың|сің|сыз|сіз|мыз|міз|сыңдар|сіңдер|сыздар|сіздер)?"  # present: ұстайды
    "|(?:ып|іп|п)"  # converb: ұстап
    f"|(?:са|се){_PERSON}?"  # conditional
    "|(?:мақшы|мекші|бақшы|бекші|пақшы|пекші)"  # intention
    "|(?:сын|сін|айын|ейін|йын|йін|айық|ейік|йық|йік)"  # optative/imperative
    "|(?:ыңыз|іңіз|ңыз|ңіз|ыңдар|іңдер|ңдар|ңдер|ыңыздар|іңіздер|ңыздар|ңіздер)"  # polite/plural imperative
    "|(?:стан|стен)"  # after negation: -мастан (without doing)
    "|(?:ған|ген|қан|кен|атын|етін|йтын|йтін|ар|ер|р|мақ|мек|бақ|бек|пақ|пек|ушы|уші|у"
    f"|ғалы|гелі|қалы|келі|ғанша|генше|қанша|кенше){_NOUN_TAIL}{_PRED}"  # participles, verbal nouns: ұсталғандар
    ")"
)
KK_NOUN_RE = re.compile(_NOUN_TAIL)
KK_NOUN_VOICED_RE = re.compile(f"(?=[аәеиоөұүыіэюя]){_NOUN_TAIL}")
KK_VERB_RE = re.compile(f"{_VOICE}{_NEG}{_VERB_END}")
KK_CHECKS = {"kk_noun": KK_NOUN_RE, "kk_noun_v": KK_NOUN_VOICED_RE, "kk_verb": KK_VERB_RE}

_KK_VOWELS = set("аәеиоөұүыіэюя")
_KK_BACK = set("аоұыя")
_VOICING = {"к": "г", "қ": "ғ", "п": "б"}
_DEVOICING = {v: k for k, v in _VOICING.items()}
_DROP_AFTER = set("рлйуң")


def kazakh_stems(word: str) -> list[tuple[str, str]]:
    """(stem, check) pairs for a folded Kazakh word: the stem is matched as a word prefix and the rest of the
    word must satisfy KK_CHECKS[check]."""
    out: list[tuple[str, str]] = []
    # three letters make a verb when a consonant comes before -у (алу, ету, оқу) or it ends in -ю (жою, қою);
    # шоу, ту are nouns
    if word[-1] in "ую" and (
        len(word) >= 4 or (len(word) == 3 and (word[-1] == "ю" or word[1] not in _KK_VOWELS))
    ):
        root = word[:-1] + ("й" if word[-1] == "ю" else "")
        roots = {root}
        if root[-1] not in _KK_VOWELS:
            # оқу = оқы- + у: a consonant before -у may hide a stem vowel
            roots.add(root + ("ы" if _last_vowel_back(root) else "і"))
        if root[-1] in _DEVOICING:  # жабу -> жап-ты
            roots.add(root[:-1] + _DEVOICING[root[-1]])
        # the -у form itself also takes noun endings (тергеуде, қамауға): covered by the verbal-noun branch
        out.extend((r, "kk_verb") for r in sorted(roots))
        out.append((word, "kk_noun"))
        return out
    out.append((word, "kk_noun"))
    if word[-1] in _VOICING:
        out.append((word[:-1] + _VOICING[word[-1]], "kk_noun_v"))
    if len(word) >= 4 and word[-2] in "ыі" and word[-3] in _DROP_AFTER and word[-1] not in _KK_VOWELS:
        # a high vowel between a sonorant and the final consonant drops before a vowel, and the consonant then
        # stays voiceless: орын -> орны, халық -> халқы, ғұрып -> ғұрпы, көңіл -> көңлі
        out.append((word[:-2] + word[-1], "kk_noun_v"))
    return out


def kazakh_voiced_stem(stem: str) -> bool:
    """Whether kazakh_stems can give `stem` the kk_noun_v check: a final к/қ/п voiced (наразылығ-, мектеб-) or a
    high vowel dropped before the final consonant (орн-, халқ-)."""
    return len(stem) >= 2 and (
        stem[-1] in _DEVOICING or (stem[-2] in _DROP_AFTER and stem[-1] not in _KK_VOWELS)
    )


# shortest verb root kazakh_stems gives: алу, ету -> ал-, ет-
KK_MIN_VERB_ROOT = 2


def kazakh_matches(term: str, word: str) -> bool:
    """Whether the Kazakh rule term `term` matches the folded word `word` (a stem of it, then a valid ending)."""
    return any(
        word.startswith(stem) and KK_CHECKS[check].fullmatch(word[len(stem) :]) is not None
        for stem, check in kazakh_stems(term)
    )


def kazakh_dictionary_forms(word: str) -> list[str]:
    """The dictionary forms a folded Kazakh word may be an inflection of, the word itself first: the grammar
    above read backwards (қамалды -> қамау, қамалу, қамал; наразылығы -> наразылық; орны -> орын; жапты ->
    жабу; оқыды -> оқу), keeping only the forms whose rule term matches `word`, so a word and its dictionary
    form mean what a rule term means. Readings the grammar allows but no dictionary has (қамалд-ы) come along:
    they stand only for forms of the same word."""
    forms: dict[str, None] = {word: None}
    for i in range(2, len(word)):
        stem, rest = word[:i], word[i:]
        if KK_NOUN_RE.fullmatch(rest):
            forms.setdefault(stem, None)
            if rest[0] in _KK_VOWELS:
                if stem[-1] in _DEVOICING:  # наразылығ-ы -> наразылық
                    forms.setdefault(stem[:-1] + _DEVOICING[stem[-1]], None)
                if len(stem) >= 3 and stem[-2] in _DROP_AFTER and stem[-1] not in _KK_VOWELS:
                    vowel = "ы" if _last_vowel_back(stem) else "і"
                    base = stem[:-1] + vowel + stem[-1]  # орн-ы -> орын, халқ-ы -> халық
                    forms.setdefault(base, None)
                    if stem[-1] in _DEVOICING:
                        forms.setdefault(base[:-1] + _DEVOICING[stem[-1]], None)
        if KK_VERB_RE.fullmatch(rest):
            roots = {stem}
            if stem[-1] in _VOICING:  # жап-ты -> жабу, шық-ты -> шығу
                roots.add(stem[:-1] + _VOICING[stem[-1]])
            for root in sorted(roots):
                forms.setdefault(root[:-1] + "ю" if root[-1] == "й" else root + "у", None)
            if len(stem) >= 3 and stem[-1] in "ыі" and stem[-2] not in _KK_VOWELS:
                forms.setdefault(stem[:-1] + "у", None)  # оқы-ды -> оқу
    found = [f for f in forms if f == word or kazakh_matches(f, word)]
    # a two-letter stem reads too many words (ор-ны, ор-да; ал-ды, ал-да): only when there is no longer reading
    if any(len(f) > 2 for f in found[1:]):
        found = [f for f in found if len(f) > 2 or f == word]
    return found


def _last_vowel_back(word: str) -> bool:
    for c in reversed(word):
        if c in _KK_VOWELS:
            return c in _KK_BACK
    return True


# ---- English -------------------------------------------------------------------------------------------

_EN_VOWELS = set("aeiou")


def english_forms(word: str) -> list[str]:
    """Regular inflections of an English word (over-generation only produces words that do not occur)."""
    forms = {word}
    if not word.isalpha() or len(word) < 3:
        return sorted(forms)
    forms.add(word + "s")
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(word + "es")
    if word.endswith("y") and word[-2] not in _EN_VOWELS:
        forms.update({word[:-1] + "ies", word[:-1] + "ied"})
    elif word.endswith("e"):
        forms.update({word + "d", word[:-1] + "ing"})
    else:
        forms.update({word + "ed", word + "ing"})
        # ban -> banned, jail -> jailed (no doubling after two vowels or for long words ending unstressed)
        if (
            len(word) <= 5
            and word[-1] not in _EN_VOWELS | set("wxy")
            and word[-2] in _EN_VOWELS
            and word[-3] not in _EN_VOWELS
        ):
            forms.update({word + word[-1] + "ed", word + word[-1] + "ing"})
    return sorted(forms)


# ---- Russian / Ukrainian (pymorphy3, cached) ---------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "civic-space-monitor"


def dictionary_version(lang: str) -> str:
    try:
        return importlib.metadata.version(f"pymorphy3-dicts-{lang}")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


class Expander:
    """Expands words to their forms; one per compile. Loads pymorphy3 only for words not in the cache."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self._analyzers: dict[str, Any] = {}
        self._cache: dict[str, dict[str, list[str]]] = {}
        self._dirty: set[str] = set()
        self.computed = 0  # how many words needed the analyser (tests and the bench look at this)

    def _cache_file(self, lang: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"morph-{MORPH_VERSION}-{lang}-{dictionary_version(lang)}.json"

    def _load(self, lang: str) -> dict[str, list[str]]:
        if lang in self._cache:
            return self._cache[lang]
        data: dict[str, list[str]] = {}
        path = self._cache_file(lang)
        if path is not None:
            # a missing, unreadable or corrupt cache only costs time
            with contextlib.suppress(OSError, ValueError):
                raw = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(raw, dict):
                    data = {k: v for k, v in raw.items() if isinstance(v, list)}
        self._cache[lang] = data
        return data

    def save(self) -> None:
        """Write new expansions; silently skipped if the cache folder is not writable."""
        for lang in self._dirty:
            path = self._cache_file(lang)
            if path is None:
                continue
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(self._cache[lang], f, ensure_ascii=False, separators=(",", ":"))
                os.replace(tmp, path)  # atomic: concurrent readers see the old or the new file
            except OSError:
                with contextlib.suppress(OSError, UnboundLocalError):
                    os.unlink(tmp)
        self._dirty.clear()

    def _analyzer(self, lang: str) -> Any:
        if lang not in self._analyzers:
            import pymorphy3

            self._analyzers[lang] = pymorphy3.MorphAnalyzer(lang=lang)
        return self._analyzers[lang]

    def slavic_forms(self, lang: str, word: str) -> list[str]:
        cache = self._load(lang)
        hit = cache.get(word)
        if hit is not None:
            return hit
        self.computed += 1
        parses = [p for p in self._analyzer(lang).parse(word) if p.is_known]
        if not parses:
            forms = [word]
        else:
            chosen = [p for p in parses if p.normal_form == word] or [
                p for p in parses if p.normal_form == parses[0].normal_form
            ]
            seen: set[str] = {word}
            for p in chosen:
                seen.update(fold(f.word) for f in p.lexeme)
            forms = sorted(seen)
        cache[word] = forms
        self._dirty.add(lang)
        return forms

    def forms(self, lang: str, word: str) -> list[str]:
        """Folded surface forms of a single folded word (not used for Kazakh, see kazakh_stems)."""
        if lang in ("ru", "uk"):
            return self.slavic_forms(lang, word)
        if lang == "en":
            return english_forms(word)
        return [word]
