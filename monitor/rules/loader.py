"""Read categories.yaml (or categories/*.yaml) and places.yaml, report every problem at once, build a Classifier."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.config.yamlfile import YamlDoc, load_yaml
from monitor.errors import ConfigError, ConfigErrors, RuleError
from monitor.rules import syntax
from monitor.rules.compiler import AtomTable, CompileError, LangCompiler, SetDef
from monitor.rules.explain import CategoryInfo
from monitor.rules.gazetteer import Gazetteer, load_places
from monitor.rules.matcher import Classifier, CompiledCategory, CompiledRule, CompiledWeight, Example
from monitor.rules.morph import LANGUAGES, MORPH_VERSION, Expander, default_cache_dir, dictionary_version
from monitor.severity import SEVERITIES

ENGINE_VERSION = "3"  # 3: the rules of the item's language(s) run, not every language's. 2: articles match on their lead. Bump when matching semantics change: stored classifications become stale
_ID_RE = re.compile(r"[a-z][a-z0-9_]*")
_BLOCK_RE = re.compile(r"(?::|^\s*-)\s*[|>][-+0-9]*\s*(?:#.*)?$")
_CATEGORY_KEYS = {"id", "title", "severity", "description", "rules", "weights", "min_score", "examples"}


@dataclass
class _Errors:
    items: list[ConfigError] = field(default_factory=list)

    def rule(
        self,
        message: str,
        file: str | None,
        line: int | None,
        token: str = "",
        category: str | None = None,
    ) -> None:
        self.items.append(RuleError(message, file=file, line=line, category=category, token=token or None))


@dataclass
class _Source:
    doc: YamlDoc
    lines: list[str]

    @property
    def file(self) -> str:
        return str(self.doc.path)

    def line(self, loc: tuple[str | int, ...]) -> int | None:
        return self.doc.line_of(loc)

    def text_line(self, loc: tuple[str | int, ...], text: str, offset: int) -> int | None:
        """Line of character `offset` inside the string value at `loc` (block scalars start a line below)."""
        base = self.doc.line_of(loc)
        if base is None:
            return None
        src = self.lines[base - 1] if 0 < base <= len(self.lines) else ""
        if _BLOCK_RE.search(src):
            base += 1
        return base + text.count("\n", 0, offset)


def category_files(config_dir: Path) -> list[Path]:
    files = []
    single = config_dir / "categories.yaml"
    if single.is_file():
        files.append(single)
    folder = config_dir / "categories"
    if folder.is_dir():
        files.extend(sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
    return files


def source_version(files: list[Path]) -> str:
    """Hash of the rule and places sources plus everything else that changes results."""
    h = hashlib.sha256()
    h.update(f"engine={ENGINE_VERSION};morph={MORPH_VERSION};".encode())
    for lang in ("ru", "uk"):
        h.update(f"{lang}={dictionary_version(lang)};".encode())
    for f in files:
        h.update(f.name.encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()[:16]


def load_classifier(config_dir: Path, *, cache_dir: Path | None = None) -> Classifier:
    """Compile the categories and gazetteer in `config_dir`; raises ConfigErrors listing every problem."""
    config_dir = Path(config_dir)
    errors = _Errors()
    files = category_files(config_dir)
    if not files:
        raise ConfigErrors(
            [ConfigError("no categories.yaml or categories/*.yaml", file=config_dir / "categories.yaml")]
        )
    sources: list[_Source] = []
    for path in files:
        try:
            doc = load_yaml(path)
        except ConfigError as exc:
            errors.items.append(exc)
            continue
        sources.append(_Source(doc, path.read_text(encoding="utf-8").splitlines()))

    table = AtomTable(Expander(cache_dir if cache_dir is not None else default_cache_dir()))
    sets: dict[str, dict[str, SetDef]] = {lang: {} for lang in LANGUAGES}
    raw_categories: list[tuple[_Source, int, dict[str, Any]]] = []
    for src in sources:
        data = src.doc.data
        if data is None:
            continue
        if not isinstance(data, dict):
            errors.rule("expected a mapping with 'sets' and 'categories'", src.file, src.line(()))
            continue
        for key in data:
            if key not in ("sets", "categories"):
                errors.rule(
                    f"unknown key {key!r} (expected sets, categories)", src.file, src.line((key,)), str(key)
                )
        _read_sets(src, data.get("sets"), sets, errors)
        cats = data.get("categories")
        if cats is None:
            continue
        if not isinstance(cats, list):
            errors.rule("'categories' must be a list", src.file, src.line(("categories",)))
            continue
        for i, c in enumerate(cats):
            if not isinstance(c, dict):
                errors.rule(
                    "a category is a mapping (id, title, severity, rules...)",
                    src.file,
                    src.line(("categories", i)),
                )
                continue
            raw_categories.append((src, i, c))

    def report_for(category: str | None) -> Any:
        def report(message: str, file: str | None, line: int | None, token: str) -> None:
            errors.rule(message, file, line, token, category)

        return report

    compilers = {lang: LangCompiler(lang, table, sets[lang], report_for(None)) for lang in LANGUAGES}
    compiled: list[CompiledCategory] = []
    examples: list[Example] = []
    seen_ids: dict[str, str] = {}
    for src, i, c in raw_categories:
        cat = _compile_category(src, i, c, compilers, errors, seen_ids, examples)
        if cat is not None:
            compiled.append(cat)

    places_path = config_dir / "places.yaml"
    gazetteer = Gazetteer()
    if places_path.is_file():
        gazetteer = load_places(places_path, table, report_for(None))
    table.expander.save()
    if errors.items:
        raise ConfigErrors(errors.items)
    all_files = files + ([places_path] if places_path.is_file() else [])
    return Classifier(
        version=source_version(all_files),
        categories=compiled,
        atoms=table.atoms,
        automaton=table.build(),
        gazetteer=gazetteer,
        examples=examples,
        sources=[str(f) for f in all_files],
    )


def _read_sets(src: _Source, raw: Any, sets: dict[str, dict[str, SetDef]], errors: _Errors) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        errors.rule("'sets' must map set names to languages", src.file, src.line(("sets",)))
        return
    for name, by_lang in raw.items():
        loc: tuple[str | int, ...] = ("sets", name)
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            errors.rule("a set name is letters, digits and _", src.file, src.line(loc), str(name))
            continue
        if not isinstance(by_lang, dict):
            errors.rule(
                f"set {name}: expected languages ({', '.join(LANGUAGES)}) with lists", src.file, src.line(loc)
            )
            continue
        for lang, entries in by_lang.items():
            lloc = (*loc, lang)
            if lang not in LANGUAGES:
                errors.rule(f"set {name}: unknown language {lang!r}", src.file, src.line(lloc), str(lang))
                continue
            if not isinstance(entries, list) or not entries:
                errors.rule(
                    f"set {name}.{lang}: expected a non-empty list of terms", src.file, src.line(lloc)
                )
                continue
            if name in sets[lang]:
                prev = sets[lang][name]
                errors.rule(
                    f"set {name} for {lang} is already defined at {prev.file}:{prev.line}",
                    src.file,
                    src.line(lloc),
                )
                continue
            sets[lang][name] = SetDef(
                name,
                lang,
                [(str(e), src.line((*lloc, j))) for j, e in enumerate(entries)],
                src.file,
                src.line(lloc),
            )


def _compile_expr(
    text: str,
    lang: str,
    src: _Source,
    loc: tuple[str | int, ...],
    compilers: dict[str, LangCompiler],
    errors: _Errors,
    cat_id: str,
) -> Any:
    ast, problems = syntax.parse(text)
    for p in problems:
        errors.rule(p.message, src.file, src.text_line(loc, text, p.offset), p.token, cat_id)
    if ast is None:
        return None
    if not syntax.has_positive(ast):
        errors.rule(
            "a rule needs at least one term that must occur (NOT alone matches everything)",
            src.file,
            src.line(loc),
            text.strip()[:40],
            cat_id,
        )
        return None
    try:
        return compilers[lang].compile(ast)
    except CompileError as exc:
        if not exc.quiet:
            errors.rule(exc.message, src.file, src.text_line(loc, text, exc.offset), exc.token, cat_id)
        return None


def _compile_category(
    src: _Source,
    i: int,
    c: dict[str, Any],
    compilers: dict[str, LangCompiler],
    errors: _Errors,
    seen_ids: dict[str, str],
    examples: list[Example],
) -> CompiledCategory | None:
    base: tuple[str | int, ...] = ("categories", i)
    cat_id = c.get("id")
    if not isinstance(cat_id, str) or not _ID_RE.fullmatch(cat_id):
        errors.rule(
            "category id must be lower_snake_case letters/digits",
            src.file,
            src.line((*base, "id")),
            str(cat_id),
        )
        return None
    ok = True

    def err(message: str, loc: tuple[str | int, ...], token: str = "") -> None:
        nonlocal ok
        ok = False
        errors.rule(message, src.file, src.line(loc), token, cat_id)

    where = f"{src.file}:{src.line(base)}"
    if cat_id in seen_ids:
        err(f"duplicate category id (first at {seen_ids[cat_id]})", (*base, "id"), cat_id)
    seen_ids.setdefault(cat_id, where)
    for key in c:
        if key not in _CATEGORY_KEYS:
            err(f"unknown key {key!r}", (*base, key), str(key))
    severity = c.get("severity")
    if severity not in SEVERITIES:
        err(f"severity must be one of {', '.join(SEVERITIES)}", (*base, "severity"), str(severity))
    title = c.get("title", cat_id)
    description = c.get("description", "")
    if not isinstance(title, str) or not isinstance(description, str):
        err("title and description are text", base)

    rules: list[CompiledRule] = []
    raw_rules = c.get("rules", {})
    if not isinstance(raw_rules, dict):
        err("rules: expected a mapping of language -> rule or list of rules", (*base, "rules"))
        raw_rules = {}
    for lang, value in raw_rules.items():
        loc = (*base, "rules", lang)
        if lang not in LANGUAGES:
            err(f"unknown language {lang!r} (use {', '.join(LANGUAGES)})", loc, str(lang))
            continue
        items = value if isinstance(value, list) else [value]
        for j, text in enumerate(items):
            rloc = (*loc, j) if isinstance(value, list) else loc
            if not isinstance(text, str):
                err("a rule is text", rloc)
                continue
            node = _compile_expr(text, lang, src, rloc, compilers, errors, cat_id)
            if node is None:
                ok = False
                continue
            rules.append(CompiledRule(lang, text, node, src.file, src.line(rloc)))

    weights: list[CompiledWeight] = []
    raw_weights = c.get("weights", {})
    if not isinstance(raw_weights, dict):
        err("weights: expected a mapping of language -> {term: weight}", (*base, "weights"))
        raw_weights = {}
    for lang, entries in raw_weights.items():
        loc = (*base, "weights", lang)
        if lang not in LANGUAGES:
            err(f"unknown language {lang!r}", loc, str(lang))
            continue
        pairs: list[tuple[Any, Any, tuple[str | int, ...]]] = []
        if isinstance(entries, dict):
            pairs = [(k, v, (*loc, k)) for k, v in entries.items()]
        elif isinstance(entries, list):
            for j, e in enumerate(entries):
                if isinstance(e, list) and len(e) == 2:
                    pairs.append((e[0], e[1], (*loc, j)))
                else:
                    err("a weight entry is [rule, weight]", (*loc, j))
        else:
            err("weights: expected {rule: weight} or a list of [rule, weight]", loc)
        for text, weight, wloc in pairs:
            if not isinstance(weight, int | float) or isinstance(weight, bool):
                err("a weight is a number", wloc, str(weight))
                continue
            node = _compile_expr(str(text), lang, src, wloc, compilers, errors, cat_id)
            if node is None:
                ok = False
                continue
            weights.append(CompiledWeight(lang, str(text), node, float(weight)))
    min_score = c.get("min_score")
    if min_score is not None and (not isinstance(min_score, int | float) or isinstance(min_score, bool)):
        err("min_score is a number", (*base, "min_score"), str(min_score))
        min_score = None
    if min_score is not None and not weights:
        err("min_score needs weights", (*base, "min_score"))
    if not rules and not weights and ok:
        err("a category needs rules (or weights)", base)

    raw_examples = c.get("examples", {})
    if not isinstance(raw_examples, dict):
        err("examples: expected match: [...] and no_match: [...]", (*base, "examples"))
        raw_examples = {}
    for key, expected in (("match", True), ("no_match", False)):
        items = raw_examples.get(key, [])
        if not isinstance(items, list):
            err(f"examples.{key}: expected a list", (*base, "examples", key))
            continue
        for j, ex in enumerate(items):
            eloc = (*base, "examples", key, j)
            if isinstance(ex, str):
                t, x = "", ex
            elif isinstance(ex, dict) and set(ex) <= {"title", "text"}:
                t, x = str(ex.get("title", "")), str(ex.get("text", ""))
            else:
                err("an example is text or {title: ..., text: ...}", eloc)
                continue
            examples.append(Example(cat_id, t, x, expected, src.file, src.line(eloc)))
    for key in raw_examples:
        if key not in ("match", "no_match"):
            err(f"examples: unknown key {key!r} (match, no_match)", (*base, "examples", key), str(key))
    if not ok:
        return None
    info = CategoryInfo(cat_id, str(title), str(severity), " ".join(str(description).split()))
    return CompiledCategory(info, rules, weights, float(min_score) if min_score is not None else None)
