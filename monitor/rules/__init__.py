"""Keyword rules: which categories of repression an item reports, in which countries, and why.

    load_classifier(config_dir) -> Classifier      compile categories.yaml + places.yaml (ConfigErrors on problems)
    Classifier.classify(title, text) -> Classification
    Classifier.check_examples() -> [ExampleResult]   the examples written in the config
    evaluate(classifier, path) -> EvalReport         precision/recall/F1 on labelled JSONL

The rule language is documented at the top of config/categories.yaml; the pieces live in syntax (parser),
morph (word forms), compiler (automaton + expression trees), matcher (scan + logic), gazetteer (countries),
explain (results, snippets) and evaluate.
"""

from typing import TYPE_CHECKING

from monitor._lazy import exports

if TYPE_CHECKING:
    from monitor.rules.evaluate import EvalReport, Misclassified, Scores, evaluate, read_labelled
    from monitor.rules.explain import (
        CategoryInfo,
        CategoryMatch,
        Classification,
        ExampleResult,
        HitInfo,
        PlaceHit,
    )
    from monitor.rules.loader import load_classifier
    from monitor.rules.matcher import Classifier

__all__ = [
    "CategoryInfo",
    "CategoryMatch",
    "Classification",
    "Classifier",
    "EvalReport",
    "ExampleResult",
    "HitInfo",
    "Misclassified",
    "PlaceHit",
    "Scores",
    "evaluate",
    "load_classifier",
    "read_labelled",
]

# Imported on first use (monitor._lazy): the search index needs monitor.rules.morph alone.
__getattr__, __dir__ = exports(
    __name__,
    {
        "EvalReport": "monitor.rules.evaluate",
        "Misclassified": "monitor.rules.evaluate",
        "Scores": "monitor.rules.evaluate",
        "evaluate": "monitor.rules.evaluate",
        "read_labelled": "monitor.rules.evaluate",
        "CategoryInfo": "monitor.rules.explain",
        "CategoryMatch": "monitor.rules.explain",
        "Classification": "monitor.rules.explain",
        "ExampleResult": "monitor.rules.explain",
        "HitInfo": "monitor.rules.explain",
        "PlaceHit": "monitor.rules.explain",
        "load_classifier": "monitor.rules.loader",
        "Classifier": "monitor.rules.matcher",
    },
)
