"""Language detection on short headlines and teasers: lingua (restricted to the region) against langdetect and
the script heuristic the parser used (Kazakh letters -> kk, other Cyrillic -> ru, Latin -> en).

Sample: the titles, and separately title + text, of tests/data/eval/*.jsonl, which carry "lang" (en/ru/kk).
Prints accuracy per language and overall, the share of titles lingua is confident about and the accuracy on
those, and microseconds per item. Run: pip install langdetect; python bench/language_detect.py
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.ingest import language as lang_mod  # noqa: E402
from monitor.ingest.parse import detect_language as script_guess  # noqa: E402


def load() -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted((ROOT / "tests/data/eval").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                if d.get("lang"):
                    rows.append((d["lang"], d.get("title", ""), d.get("text", "")))
    return rows


def langdetect_fn() -> Callable[[str], str | None]:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # langdetect is random unless seeded

    def run(text: str) -> str | None:
        try:
            return str(detect(text))
        except LangDetectException:
            return None

    return run


def score(name: str, fn: Callable[[str], str | None], samples: list[tuple[str, str]]) -> None:
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    started = time.perf_counter()
    for gold, text in samples:
        got = fn(text)
        per[gold][0] += got == gold
        per[gold][1] += 1
    us = (time.perf_counter() - started) / len(samples) * 1e6
    total = sum(c for c, _ in per.values()) / sum(n for _, n in per.values())
    cells = "  ".join(f"{k} {per[k][0] / per[k][1]:.3f}" for k in ("en", "ru", "kk"))
    print(f"  {name:<22} {cells}  all {total:.3f}  {us:8.0f} us/item")


def main() -> None:
    rows = load()
    lang_mod.detect("warm up")
    ld = langdetect_fn()
    for label, samples in (
        ("titles only", [(g, t) for g, t, _ in rows if t]),
        ("title + teaser/text", [(g, f"{t}\n{x[:400]}") for g, t, x in rows]),
    ):
        n = len(samples)
        print(
            f"{label}: {n} items (en {sum(g == 'en' for g, _ in samples)}, ru {sum(g == 'ru' for g, _ in samples)},"
            f" kk {sum(g == 'kk' for g, _ in samples)})"
        )
        score("lingua (region)", lambda s: lang_mod.detect(s).language, samples)
        score("langdetect", ld, samples)
        score("script heuristic", script_guess, samples)
        confident = [(g, s) for g, s in samples if lang_mod.detect(s).confidence >= lang_mod.CONFIDENT]
        right = sum(lang_mod.detect(s).language == g for g, s in confident)
        print(
            f"  lingua confident (>= {lang_mod.CONFIDENT}): {len(confident)}/{n} items, accuracy {right / max(1, len(confident)):.3f}"
        )
    # Every item of the sample is in one language: any item taken for mixed is a false alarm.
    mixed = sum(len(lang_mod.decide_language(t, x, g).rules) > 1 for g, t, x in rows)
    print(
        f"items taken for mixed-language: {mixed}/{len(rows)} (each is labelled with its main language; fresh2 holds ~25 that quote another)"
    )


if __name__ == "__main__":
    main()
