"""Country tagging from `places.yaml`: names, cities, regions and institutions per country and language.

A name counts on its own unless it is listed as `ambiguous` (Petropavlovsk is also a Russian city) or stands
within `context.distance` words of a context word (FC Astana, the Astana cycling team): such a hit only tags
its country together with a second, different name of the same country. Where names overlap, the longest
wins, so "Petropavlovsk-Kamchatsky" is Russia's and not Kazakhstan's "Petropavlovsk".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.config.yamlfile import YamlDoc, load_yaml
from monitor.errors import ConfigError, ConfigErrors
from monitor.rules import syntax
from monitor.rules.compiler import AtomTable, Hits
from monitor.rules.morph import LANGUAGES
from monitor.rules.normalize import fold

_CODE_RE = re.compile(r"[A-Z]{2}")
_LEVEL_WORD_RE = re.compile(r"[^\W\d_]+(?:[- ][^\W\d_]+)*")

Report = Callable[[str, str | None, int | None, str], None]


@dataclass(frozen=True)
class Place:
    country: str
    name: str  # as written in places.yaml
    ambiguous: bool


@dataclass
class Gazetteer:
    places: dict[int, Place] = field(default_factory=dict)  # atom id -> place
    context: set[int] = field(default_factory=set)  # atom ids of context words
    distance: int = 2
    names: dict[str, str] = field(default_factory=dict)  # ISO code -> country name
    # ISO code -> words that tell the country, not the place (`country_level`); None when the file lists none
    country_level: dict[str, tuple[str, ...]] | None = None

    def country_level_words(self) -> list[str] | None:
        """Every country's `country_level` words, or None when places.yaml lists none (grouping then uses the
        shipped lists, so a places.yaml copied before the key existed groups as before)."""
        if self.country_level is None:
            return None
        return [w for words in self.country_level.values() for w in words]

    def resolve(self, hits: Hits) -> list[tuple[str, int, int, int, int]]:
        """(country, atom, field, first word, last word) of every place hit that counts, in text order."""
        places = self.places
        found = [(a, f, s, e) for a in hits if a in places for f, s, e in hits[a]]
        if not found:
            return []
        # longest match wins: drop a hit lying inside a longer place hit
        found.sort(key=lambda h: (h[1], h[2], h[2] - h[3]))
        kept: list[tuple[int, int, int, int]] = []
        # kept hits of several words: only those can be longer than, and so contain, another hit
        longer: list[tuple[int, int, int, int]] = []
        for h in found:
            if longer and any(
                k[1] == h[1] and k[2] <= h[2] and h[3] <= k[3] and (k[3] - k[2]) > (h[3] - h[2])
                for k in longer
            ):
                continue
            kept.append(h)
            if h[3] > h[2]:
                longer.append(h)
        ctx = [(f, s, e) for a in self.context.intersection(hits) for f, s, e in hits[a]]
        d = self.distance + 1
        strong: set[str] = set()
        weak: dict[str, set[str]] = {}
        for a, f, s, e in kept:
            place = self.places[a]
            demoted = place.ambiguous
            if not demoted and ctx:
                demoted = any(
                    cf == f and cs - e <= d and s - ce <= d and not (cs >= s and ce <= e)
                    for cf, cs, ce in ctx
                )
            if demoted:
                # the same name twice, or in two languages (Астана ru/kk), is still one signal
                weak.setdefault(place.country, set()).add(fold(place.name))
            else:
                strong.add(place.country)
        tagged = strong | {c for c, atoms in weak.items() if len(atoms) >= 2}
        out: dict[tuple[str, int, int, int], tuple[str, int, int, int, int]] = {}
        for a, f, s, e in kept:
            country = self.places[a].country
            if country in tagged:  # Алматы is a ru and a kk name: one place hit
                out.setdefault((country, f, s, e), (country, a, f, s, e))
        return list(out.values())


def _country_level(spec: Any, doc: YamlDoc, loc: tuple[str | int, ...], report: Report) -> tuple[str, ...]:
    """A country's `country_level` list: plain words (no rule syntax: they are compared as name keys)."""
    file = str(doc.path)
    if not isinstance(spec, list):
        report("country_level: expected a list of words", file, doc.line_of(loc), "")
        return ()
    out = []
    for i, word in enumerate(spec):
        if not isinstance(word, str) or not _LEVEL_WORD_RE.fullmatch(word):
            report(
                f"country_level: {word!r} is not a word (letters, with '-' or ' ' between parts)",
                file,
                doc.line_of((*loc, i)),
                str(word),
            )
            continue
        out.append(word)
    return tuple(out)


def read_country_level(path: Path) -> dict[str, tuple[str, ...]] | None:
    """Only the `country_level` lists of a places file (for grouping without a classifier); ConfigErrors naming
    file and line when they are malformed, None when the file lists none."""
    doc = load_yaml(path)
    errors: list[ConfigError] = []

    def report(message: str, file: str | None, line: int | None, token: str) -> None:
        errors.append(ConfigError(message, file=file or path, line=line))

    countries = doc.data.get("countries") if isinstance(doc.data, dict) else None
    out: dict[str, tuple[str, ...]] = {}
    for code, cspec in countries.items() if isinstance(countries, dict) else ():
        if isinstance(cspec, dict) and "country_level" in cspec:
            out[str(code)] = _country_level(
                cspec["country_level"], doc, ("countries", code, "country_level"), report
            )
    if errors:
        raise ConfigErrors(errors)
    return out or None


def load_places(path: Path, table: AtomTable, report: Report) -> Gazetteer:
    gaz = Gazetteer()
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        report(exc.message, exc.file or str(path), exc.line, "")
        return gaz
    file = str(path)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("countries"), dict):
        report("places file needs a 'countries:' mapping", file, doc.line_of(()), "")
        return gaz

    def add_names(spec: Any, loc: tuple[str | int, ...], on_atom: Callable[[int, str], None]) -> None:
        if not isinstance(spec, dict):
            report("expected a mapping of language -> list of names", file, doc.line_of(loc), "")
            return
        for lang, names in spec.items():
            if lang not in LANGUAGES:
                report(
                    f"unknown language {lang!r} (use {', '.join(LANGUAGES)})",
                    file,
                    doc.line_of((*loc, lang)),
                    "",
                )
                continue
            if not isinstance(names, list):
                report("expected a list of names", file, doc.line_of((*loc, lang)), "")
                continue
            for i, name in enumerate(names):
                line = doc.line_of((*loc, lang, i))
                ast, problems = syntax.parse(syntax.list_entry(str(name)))
                for p in problems:
                    report(p.message, file, line, p.token)
                if ast is None:
                    continue
                if isinstance(ast, syntax.Term):
                    terms: tuple[syntax.Term, ...] = (ast,)
                elif isinstance(ast, syntax.Phrase):
                    terms = ast.terms
                else:
                    report("a place name is one word or a quoted phrase", file, line, str(name))
                    continue
                if len(terms) == 1:
                    on_atom(table.atom_for(str(lang), terms[0]), str(name))
                else:
                    # multi-word names become one atom per word plus a phrase check: keep it simple by joining
                    # them into a single hyphen-free term the matcher sees as consecutive words
                    joined = syntax.Term(
                        " ".join(t.text for t in terms).replace(" ", "-"),
                        terms[0].offset,
                        prefix=terms[-1].prefix,
                        exact=all(t.exact for t in terms),
                        case_sensitive=any(t.case_sensitive for t in terms),
                    )
                    on_atom(table.atom_for(str(lang), joined), str(name))

    for code, cspec in data["countries"].items():
        loc: tuple[str | int, ...] = ("countries", code)
        if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
            report(
                f"country code {code!r} is not ISO 3166-1 alpha-2 (e.g. KZ)",
                file,
                doc.line_of(loc),
                str(code),
            )
            continue
        if not isinstance(cspec, dict):
            report(
                "expected a mapping with name, names, ambiguous, country_level", file, doc.line_of(loc), ""
            )
            continue
        unknown = set(cspec) - {"name", "names", "ambiguous", "country_level"}
        for key in sorted(map(str, unknown)):
            report(f"unknown key {key!r}", file, doc.line_of((*loc, key)), key)
        gaz.names[code] = str(cspec.get("name", code))
        if "country_level" in cspec:
            levels = gaz.country_level if gaz.country_level is not None else {}
            levels[code] = _country_level(cspec["country_level"], doc, (*loc, "country_level"), report)
            gaz.country_level = levels
        for key, ambiguous in (("names", False), ("ambiguous", True)):
            if key in cspec:

                def on_atom(atom: int, name: str, code: str = code, ambiguous: bool = ambiguous) -> None:
                    prev = gaz.places.get(atom)
                    # the same name in two countries is ambiguous in both
                    if prev is not None and prev.country != code:
                        report(f"{name!r} is listed for {prev.country} and {code}", file, None, name)
                    gaz.places[atom] = Place(code, name, ambiguous)

                add_names(cspec[key], (*loc, key), on_atom)
    ctx = data.get("context")
    if ctx is not None:
        if not isinstance(ctx, dict):
            report("context: expected distance and language lists", file, doc.line_of(("context",)), "")
        else:
            dist = ctx.get("distance", 2)
            if not isinstance(dist, int) or not 0 <= dist <= syntax.MAX_NEAR:
                report(
                    "context.distance must be a whole number", file, doc.line_of(("context", "distance")), ""
                )
            else:
                gaz.distance = dist
            words = {k: v for k, v in ctx.items() if k != "distance"}
            add_names(words, ("context",), lambda atom, name: gaz.context.add(atom))
    return gaz
