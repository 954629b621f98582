"""Score a classifier against labelled JSONL: {"id", "title", "text", "categories": [...], "lang"?} per line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError, ConfigErrors
from monitor.rules.matcher import Classifier


@dataclass(frozen=True)
class LabelledItem:
    id: str
    title: str
    text: str
    categories: frozenset[str]
    lang: str | None
    line: int
    # "teaser" (headline and a line) or "full" (the article): scored apart when the file says
    form: str | None = None


@dataclass
class Scores:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        # no predictions means no false claims
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def support(self) -> int:
        return self.tp + self.fn

    def to_json(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "support": self.support,
        }


@dataclass(frozen=True)
class Misclassified:
    id: str
    line: int
    title: str
    text: str
    expected: tuple[str, ...]
    got: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(c for c in self.expected if c not in self.got)

    @property
    def extra(self) -> tuple[str, ...]:
        return tuple(c for c in self.got if c not in self.expected)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "line": self.line,
            "title": self.title,
            "expected": list(self.expected),
            "got": list(self.got),
            "missing": list(self.missing),
            "extra": list(self.extra),
        }


@dataclass
class EvalReport:
    file: str
    items: int
    categories: dict[str, Scores]
    micro: Scores
    misclassified: list[Misclassified] = field(default_factory=list)
    # micro scores per item "form" (teaser, full), only for files whose items say their form
    by_form: dict[str, Scores] = field(default_factory=dict)

    @property
    def macro_f1(self) -> float:
        used = [s for s in self.categories.values() if s.tp + s.fp + s.fn]
        return sum(s.f1 for s in used) / len(used) if used else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "items": self.items,
            "categories": {c: s.to_json() for c, s in self.categories.items()},
            "micro": self.micro.to_json(),
            "macro_f1": round(self.macro_f1, 4),
            "by_form": {f: s.to_json() for f, s in sorted(self.by_form.items())},
            "misclassified": [m.to_json() for m in self.misclassified],
        }


def read_labelled(path: Path, known: set[str]) -> list[LabelledItem]:
    """Every item of the file; ConfigErrors naming file and line for every bad line or unknown category."""
    errors: list[ConfigError] = []
    items: list[LabelledItem] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigErrors([ConfigError("file not found", file=path)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([ConfigError(f"cannot read: {exc}", file=path)]) from None
    ids: set[str] = set()
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(ConfigError(f"not valid JSON: {exc.msg}", file=path, line=n))
            continue
        if not isinstance(obj, dict):
            errors.append(ConfigError("each line must be a JSON object", file=path, line=n))
            continue
        cats = obj.get("categories")
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            errors.append(ConfigError("'categories' must be a list of category ids", file=path, line=n))
            continue
        unknown = [c for c in cats if c not in known]
        if unknown:
            errors.append(
                ConfigError(f"unknown category {', '.join(unknown)} (not in config)", file=path, line=n)
            )
            continue
        title, text = obj.get("title") or "", obj.get("text") or ""
        if not isinstance(title, str) or not isinstance(text, str):
            errors.append(ConfigError("'title' and 'text' must be strings", file=path, line=n))
            continue
        item_id = str(obj.get("id", f"line{n}"))
        if item_id in ids:
            errors.append(ConfigError(f"duplicate id {item_id!r}", file=path, line=n))
        ids.add(item_id)
        lang, form = obj.get("lang"), obj.get("form")
        if form is not None and not isinstance(form, str):
            errors.append(ConfigError("'form' must be a string (teaser, full)", file=path, line=n))
            continue
        items.append(
            LabelledItem(
                item_id,
                title,
                text,
                frozenset(cats),
                lang if isinstance(lang, str) else None,
                n,
                form or None,
            )
        )
    if errors:
        raise ConfigErrors(errors)
    return items


def evaluate(classifier: Classifier, path: Path) -> EvalReport:
    items = read_labelled(Path(path), set(classifier.categories))
    per = {c: Scores() for c in classifier.categories}
    micro = Scores()
    by_form: dict[str, Scores] = {}
    wrong: list[Misclassified] = []
    for item in items:
        got = set(classifier.classify(item.title, item.text, item.lang).categories)
        tallies = [micro] if item.form is None else [micro, by_form.setdefault(item.form, Scores())]
        for c in per:
            g, e = c in got, c in item.categories
            for s in (per[c], *tallies):
                if g and e:
                    s.tp += 1
                elif g:
                    s.fp += 1
                elif e:
                    s.fn += 1
        if got != item.categories:
            wrong.append(
                Misclassified(
                    item.id,
                    item.line,
                    item.title,
                    item.text,
                    tuple(sorted(item.categories)),
                    tuple(sorted(got)),
                )
            )
    return EvalReport(str(path), len(items), per, micro, wrong, by_form)
