"""What grouping compares: content-word stems (same-language near-duplicates) and name keys (across languages).

Pure functions of an item's title and text, so they can be tested with plain strings and stored in an incident's
`signature` without reloading items.

- **Stems**: case-folded words of three letters or more, minus function words, cut to six letters. Cutting is a
  crude stemmer, but it makes "задержали"/"задержан" or "detained"/"detains" the same token, which is what a
  cheap near-duplicate test over title and lead needs.
- **Name keys**: capitalised words not at the start of a sentence (so not "Police" in "Police detained..."),
  transliterated to Latin and reduced to a spelling-blind key: "Zhanbolat Mamai", "Janbolat Mamay" and
  "Жанболат Мамай" (also inflected: "Жанболата Мамая") all give `janbo` and `mamai`. Two capitalised words in a
  row give a *person* key (`janbo+mamai`, order-free, as Russian often puts the surname first).
- **Place keys**: the gazetteer entries the classifier found (`Item.places`), reduced the same way and prefixed
  with their country, so "Mazhilis", "Мажилис" and "Мәжіліс" are all `KZ:majil`. Entries that only say which
  country (places.yaml `country_level`: its names and adjectives, the currency, the head of state, the akimat
  that every town has) are left out: sharing "Kazakhstan" says nothing about which event. Sets of the classifier's hits (`@detain`, `@ngo`)
  are named the same in every language and are read from `Item.matches` as `category/set`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate

from monitor.errors import ConfigError

__all__ = [
    "CountryLevel",
    "Features",
    "extract",
    "hit_sets",
    "jaccard",
    "name_key",
    "persons",
    "place_keys",
    "shipped_country_level",
    "translit",
]

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_WORD_SPLIT = re.compile(f"({_WORD.pattern})")  # the words and the gaps between them, in one list
_SENTENCE_END = re.compile(r"[.!?…\n]\s*[\"'«»“”„(\[]*\s*$")
LEAD_WORDS = 80  # title + this many words of text: the lead says what happened; later paragraphs drift
STEM = 6
KEY = 5  # name keys are this long: long enough to tell names apart, short enough to ignore case endings

_CYR = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
    "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "",
    "э": "e", "ю": "yu", "я": "ya",
    # Kazakh
    "ә": "a", "ғ": "g", "қ": "k", "ң": "n", "ө": "o", "ұ": "u", "ү": "u", "һ": "h", "і": "i",
    # Ukrainian, Belarusian, Kyrgyz, Tajik, Uzbek Cyrillic
    "є": "e", "ї": "i", "ґ": "g", "ў": "u", "ӊ": "n", "ҳ": "h", "ҷ": "j", "ӣ": "i", "ӯ": "u",
}  # fmt: skip
_YE = re.compile(r"(?:(?<=[аеёиоуыэюяәөұүі])|^)е")
_TRANS = str.maketrans({k: v for k, v in _CYR.items() if len(k) == 1})
# Applied in order to Latin text: different romanisations of the same Cyrillic name converge.
_SPELLING = [
    (re.compile(r"shch|sch"), "s"),
    (re.compile(r"dzh|dj|zh"), "j"),
    (re.compile(r"kh"), "h"),
    (re.compile(r"ts|tz"), "c"),
    (re.compile(r"ch"), "c"),
    (re.compile(r"sh"), "s"),
    (re.compile(r"ph"), "f"),
    (re.compile(r"w"), "v"),
    (re.compile(r"x"), "ks"),
    (re.compile(r"q"), "k"),
    (re.compile(r"^ye|^yo"), "e"),  # Yerlan / Ерлан
    (re.compile(r"y"), "i"),
    (re.compile(r"(.)\1+"), r"\1"),  # Kassym / Касым
]

# Capitalised words that are not names of people or places (sentence-initial ones are skipped anyway, but titles
# and quotes capitalise freely). Stored as keys, so each line covers every spelling and case ending.
_NOT_NAMES = """
the a an and or but of in on at to for from with by as after before over under into about during against near
police court supreme city district regional region ministry interior justice internal affairs prosecutor office
general president parliament government state republic national international committee security service agency
human rights watch amnesty freedom house radio free europe liberty news press agency reuters tass interfax
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december mr mrs ms dr
kazakhstan kyrgyzstan uzbekistan tajikistan turkmenistan russia belarus azerbaijan ukraine
в на и по с к о у за из от до для при что как это его её их он она они мы вы я не
суд полиция прокуратура министерство внутренних дел генеральная генеральный президент парламент правительство
республика республики области город района районный областной комитет национальной безопасности служба агентство
понедельник вторник среда четверг пятница суббота воскресенье января февраля марта апреля мая июня июля
августа сентября октября ноября декабря
казахстан кыргызстан киргизия узбекистан таджикистан туркменистан россия беларусь азербайджан украина
"""
_STOP_STEMS_SRC = """
the and for with from that this was were are has have had been will would not but its his her their they them
which who whom said says also after before over into about than then there here when while where what more most
other some such only very can could may might must should under against during between including including
и в во на по с со к ко о об от до для при что как это этот эта эти его ее её их он она они мы вы не но же ли бы
был была были было быть будет также того том этом после перед через между который которая которые которых
сказал сообщил заявил года году лет а из за у же уже ещё еще или
және мен бен пен да де та те үшін бойынша туралы деп бұл осы ол олар
"""


def translit(word: str) -> str:
    """Lower-case Latin transliteration (diacritics dropped), e.g. "Жанболат" -> "zhanbolat"."""
    # "е" after a vowel or at the start is "ye" in every common romanisation (Токаев -> Tokayev, Ерлан -> Yerlan).
    w = _YE.sub("ye", word.lower().replace("ё", "е")).translate(_TRANS)
    w = unicodedata.normalize("NFKD", w)
    return "".join(c for c in w if not unicodedata.combining(c))


@functools.lru_cache(maxsize=8192)  # names recur from report to report; a key costs a transliteration
def name_key(word: str) -> str:
    """Spelling-blind key of a name: transliterated, romanisation variants merged, cut to KEY letters."""
    w = translit(word)
    for pattern, repl in _SPELLING:
        w = pattern.sub(repl, w)
    return w[:KEY]


_NOT_NAME_KEYS = frozenset(name_key(w) for w in _NOT_NAMES.split())


@dataclass(frozen=True)
class CountryLevel:
    """Name keys of the words that tell the country, not the place (places.yaml `country_level`): the country's
    names and adjectives, its currency, head of state, ruling party, security service, the local government every
    town has. Sharing one says nothing about which event."""

    keys: frozenset[str] = frozenset()

    @classmethod
    def of(cls, words: Iterable[str]) -> CountryLevel:
        # "Nur-Otan" is keyed as "Nur Otan": the gazetteer writes the party's name both ways
        return cls(frozenset(name_key(w.replace("-", " ")) for w in words))

    def __contains__(self, key: object) -> bool:
        return key in self.keys


@functools.cache
def shipped_country_level() -> CountryLevel:
    """The `country_level` words of the packaged places.yaml: what grouping uses when no configuration says."""
    from monitor.config.load import packaged_dir
    from monitor.rules.gazetteer import read_country_level

    path = packaged_dir("config") / "places.yaml"
    found = read_country_level(path)
    if not found:
        raise ConfigError("the shipped places file lists no country_level words", file=path)
    return CountryLevel.of(w for words in found.values() for w in words)


def place_keys(places: object, country_level: CountryLevel) -> tuple[dict[str, str], frozenset[str]]:
    """Specific places of an item's stored `places`: {"KZ:almat": "Almaty"} (key -> entry as first written),
    and which of those keys its title names. Country-level entries and malformed records are skipped."""
    keys: dict[str, str] = {}
    in_title: set[str] = set()
    for p in places if isinstance(places, list) else ():
        if not isinstance(p, Mapping):
            continue
        country, entry = str(p.get("country") or ""), str(p.get("entry") or "")
        key = name_key(entry)
        if not country or len(key) < 2 or key in country_level:
            continue
        k = f"{country}:{key}"
        keys.setdefault(k, entry)
        if p.get("field") == "title":
            in_title.add(k)
    return keys, frozenset(in_title)


def hit_sets(matches: object) -> frozenset[str]:
    """`category/set` of every classifier hit that came from a named term set (the same name in every language)."""
    out: set[str] = set()
    for cat, m in matches.items() if isinstance(matches, Mapping) else ():
        hits = m.get("hits") if isinstance(m, Mapping) else None
        for h in hits if isinstance(hits, list) else ():
            name = h.get("set") if isinstance(h, Mapping) else None
            if isinstance(name, str) and name:
                out.add(f"{cat}/{name}")
    return frozenset(out)


_STOP_STEMS = frozenset(w.replace("ё", "е")[:STEM] for w in _STOP_STEMS_SRC.split())


def _stem(word: str) -> str:
    return word.lower().replace("ё", "е")[:STEM]


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass(frozen=True)
class Features:
    stems: frozenset[str]
    names: frozenset[str]  # single name keys
    persons: frozenset[str]  # "a+b" keys of two capitalised words in a row, sorted
    # key or stem -> the words as first written, to explain a match in the reader's words (not stored)
    surface: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def shown(self, keys: Iterable[str]) -> list[str]:
        return [self.surface.get(k, k) for k in keys]


def _is_title_case(title: str) -> bool:
    words = _WORD.findall(title)
    long = [w for w in words if len(w) > 3]
    return len(long) >= 3 and sum(w[0].isupper() for w in long) / len(long) > 0.6


# Patronymics, inflected too: Нурланович/Нурлановича, Нурлановна/Нурлановной, Нұрланұлы, Nurlanovich, Nurlanuly.
_PATRONYMIC = re.compile(
    r"(?:ович|евич|овн|евн|ичн)[а-я]{0,3}$|(?:ұлы|улы|қызы|кызы|ovich|evich|ovna|evna|uly|kyzy|qyzy)\w{0,2}$"
)


def _names(
    text: str, surface: dict[str, str], *, body: int = 0, limit: int | None = None
) -> tuple[set[str], set[str]]:
    """Single names and person keys of `text`; with `limit`, the text ends at the limit-th word from offset
    `body` on (a title, then a report's lead, read in one pass)."""
    names: set[str] = set()
    persons: set[str] = set()
    # One split in C gives the words and what lies between them: parts = [gap, word, gap, word, ..., gap], word i
    # is parts[2i + 1], the gap before it parts[2i], and it starts at offsets[2i].
    parts = _WORD_SPLIT.split(text)
    words = parts[1::2]
    offsets = list(accumulate(map(len, parts)))
    if limit is not None:
        # Words starting at `body` or later count towards the limit; the limit-th of them is the last one read.
        before = bisect_left(offsets[0::2], body)  # words starting before `body`
        words = words[: before + max(limit, 1)]
    # Runs of capitalised name words, each word as (key, word, starts a sentence).
    runs: list[list[tuple[str, str, bool]]] = []
    run: list[tuple[str, str, bool]] = []
    prev = -2  # the index of the last name word
    # Most words are not names: only the capitalised ones are looked at. Any other word between two name words
    # ends a run as a gap that is not blank does, which `prev` tells.
    for i in [i for i, w in enumerate(words) if w[0].isupper()]:
        word = words[i]
        if len(word) < 3 or len(key := name_key(word)) < 3 or key in _NOT_NAME_KEYS:
            continue
        start = offsets[2 * i]
        initial = i == 0 or bool(_SENTENCE_END.search(text[max(0, start - 4) : start]))
        if not (prev == i - 1 and parts[2 * i].strip(" -\u00a0") == ""):
            run = []
            runs.append(run)
        run.append((key, word, initial))
        prev = i
    # Stems of the words the text writes in lower case somewhere (common nouns), made when a sentence opens with a
    # run of two or more.
    lower: set[str] | None = None
    for run_words in runs:
        key, word, initial = run_words[0]
        # A capitalised word opening a sentence is a name only if it could be one: "Blogger Daniyar Sadykov" or
        # "Blogger Daniyar ... a blogger" puts a common noun before the name, and must not make "Blogger
        # Daniyar" a person whom every blogger called Daniyar would share.
        # A patronymic in second place ("Marat Nurlanovich Ospanov") says the run is one full name.
        full_name = len(run_words) >= 3 and bool(_PATRONYMIC.search(run_words[1][1].casefold()))
        if initial and len(run_words) > 1:
            if lower is None:
                lower = {_stem(w) for w in words if w[0].islower()}
            if (len(run_words) >= 3 and not full_name) or _stem(word) in lower:
                run_words = run_words[1:]
                # what is left is a full name only if its own second word is a patronymic ("Blogger Nurlanovich
                # Ospanov" leaves two words, "Blogger Marat Nurlanovich Ospanov" a full name)
                full_name = len(run_words) >= 3 and bool(_PATRONYMIC.search(run_words[1][1].casefold()))
        for n, (key, word, initial) in enumerate(run_words):
            if n:
                persons.add(_person(run_words[n - 1], run_words[n], surface))
                names.add(run_words[n - 1][0])
            if not initial:
                names.add(key)
            surface.setdefault(key, word)
        if full_name:  # "Marat Nurlanovich Ospanov" is also "Marat Ospanov"
            persons.add(_person(run_words[0], run_words[2], surface))
    return names, persons


def _person(a: tuple[str, str, bool], b: tuple[str, str, bool], surface: dict[str, str]) -> str:
    """The order-free person key of two name words (key, word, ...), noting how the text wrote them."""
    pair = "+".join(sorted((a[0], b[0])))
    surface.setdefault(pair, f"{a[1]} {b[1]}")
    return pair


def _lead(text: str) -> tuple[str, list[str]]:
    """The text up to its LEAD_WORDS-th word (punctuation kept: name extraction needs the sentence boundaries),
    and those words."""
    lead_end = 0
    words: list[str] = []
    for m in _WORD.finditer(text):
        words.append(m.group())
        lead_end = m.end()
        if len(words) >= LEAD_WORDS:
            break
    return text[:lead_end], words


def _name_source(title: str, lead: str) -> str:
    # Headline Title Case capitalises every word; names then come from the text alone.
    return ("" if _is_title_case(title) else title + ".\n") + lead


def extract(title: str, text: str) -> Features:
    lead, words = _lead(text)
    surface: dict[str, str] = {}
    stems: set[str] = set()
    for w in [*_WORD.findall(title), *words]:
        st = _stem(w)
        if len(st) >= 3 and st not in _STOP_STEMS:
            stems.add(st)
            surface.setdefault(st, w.lower())
    names, persons = _names(_name_source(title, lead), surface)
    return Features(
        stems=frozenset(stems), names=frozenset(names), persons=frozenset(persons), surface=surface
    )


def persons(title: str, text: str) -> dict[str, str]:
    """The person keys `extract(title, text)` finds, each with the words as the text wrote them: the actors an
    export names, without the stems and single names only grouping needs."""
    surface: dict[str, str] = {}
    head = _name_source(title, "")
    _, found = _names(head + text, surface, body=len(head), limit=LEAD_WORDS)
    return {key: surface.get(key, key) for key in found}
