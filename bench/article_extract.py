"""Main-text extraction on generated news pages: trafilatura (what monitor.ingest.article uses) against
readability-lxml, in the same run.

Pages are built here, in EN/RU/KK, the way outlets of the region lay them out: a header with navigation, a
breaking-news ticker, ad blocks between paragraphs, a "read also" box inside the story, share buttons, tags,
related links, a comments section and a footer. The body is the "full" items of tests/data/eval/*.jsonl, so the
known text is exact. Scored by token F1 of the extracted text against the body (tokens: lower-cased words), and
milliseconds per page. Run: python bench/article_extract.py [--pages N]

The peer is not a dependency: `pip install readability-lxml` in a throwaway venv, because it pulls in chardet,
and feedparser uses chardet when it is importable to guess undeclared feed encodings (tests/test_parse.py pins
the behaviour without it).
"""

from __future__ import annotations

import argparse
import html
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_WORD = re.compile(r"\w+", re.U)

CHROME = {
    "en": {
        "nav": ["Home", "Politics", "Economy", "Society", "World", "Sport", "Opinion", "Video"],
        "ticker": "Breaking: tenge steady against the dollar; weather warning in the north",
        "ad": "Advertisement. Best mortgage rates in Almaty — apply online today and save up to 2%!",
        "also": "Read also: Parliament debates new budget amendments",
        "related": [
            "Wheat harvest expected to exceed forecasts",
            "New flights from Astana to Istanbul",
            "Football: Kairat wins away match",
            "Heating season starts early in Pavlodar",
        ],
        "comments": [
            "Finally someone writes about this.",
            "This is all lies, I was there.",
            "Who pays for all of this? Taxpayers as usual.",
        ],
        "footer": "© 2026 Steppe News. All rights reserved. Reproduction only with a link to the source.",
        "tags": ["Kazakhstan", "society", "law"],
    },
    "ru": {
        "nav": ["Главная", "Политика", "Экономика", "Общество", "В мире", "Спорт", "Мнения", "Видео"],
        "ticker": "Срочно: курс тенге стабилен; штормовое предупреждение на севере",
        "ad": "Реклама. Ипотека от 7% годовых — оформите заявку онлайн за 5 минут!",
        "also": "Читайте также: Мажилис обсуждает поправки в бюджет",
        "related": [
            "Урожай пшеницы превысит прогнозы",
            "Новые рейсы из Астаны в Стамбул",
            "Футбол: «Кайрат» победил на выезде",
            "Отопительный сезон начнётся раньше в Павлодаре",
        ],
        "comments": [
            "Наконец-то кто-то об этом написал.",
            "Всё враньё, я там был.",
            "А платит за всё это кто? Как всегда, налогоплательщики.",
        ],
        "footer": "© 2026 Степные новости. Все права защищены. Перепечатка только со ссылкой на источник.",
        "tags": ["Казахстан", "общество", "закон"],
    },
    "kk": {
        "nav": ["Басты бет", "Саясат", "Экономика", "Қоғам", "Әлем", "Спорт", "Пікір", "Бейне"],
        "ticker": "Шұғыл: теңге бағамы тұрақты; солтүстікте дауыл туралы ескерту",
        "ad": "Жарнама. Ипотека жылдық 7%-дан — өтінімді 5 минутта онлайн рәсімдеңіз!",
        "also": "Оқыңыз: Мәжіліс бюджетке түзетулерді талқылап жатыр",
        "related": [
            "Бидай өнімі болжамнан асады",
            "Астанадан Стамбұлға жаңа рейстер",
            "Футбол: «Қайрат» қонақта жеңді",
            "Павлодарда жылу маусымы ерте басталады",
        ],
        "comments": [
            "Ақыры біреу бұл туралы жазды.",
            "Бәрі өтірік, мен сонда болдым.",
            "Мұның бәрін кім төлейді? Әдеттегідей салық төлеушілер.",
        ],
        "footer": "© 2026 Дала жаңалықтары. Барлық құқықтар қорғалған. Сілтемемен ғана көшіруге болады.",
        "tags": ["Қазақстан", "қоғам", "заң"],
    },
}


def load_bodies() -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted((ROOT / "tests/data/eval").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line) if line.strip() else {}
            if d.get("lang") in CHROME and len(d.get("text", "")) >= 400:
                rows.append((d["lang"], d["title"], d["text"]))
    return rows


def paragraphs(text: str) -> list[str]:
    sentences = re.split(r"(?<=[.!?»])\s+", text.strip())
    out, cur = [], []
    for s in sentences:
        cur.append(s)
        if len(" ".join(cur)) > 180:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def page(lang: str, title: str, body: str, rng: random.Random, layout: int) -> str:
    c = CHROME[lang]
    e = html.escape
    nav = "".join(f'<li><a href="/{i}">{e(n)}</a></li>' for i, n in enumerate(c["nav"]))
    paras = paragraphs(body)
    parts = []
    for i, p in enumerate(paras):
        parts.append(f"<p>{e(p)}</p>")
        if i == 0 and layout % 2 == 0:
            parts.append(
                f'<div class="ad-slot banner"><a href="/ad?id={rng.randint(1, 999)}">{e(c["ad"])}</a></div>'
            )
        if i == 1:
            parts.append(
                f'<div class="read-also"><a href="/news/{rng.randint(1000, 9999)}">{e(c["also"])}</a></div>'
            )
    related = "".join(f'<li><a href="/news/{rng.randint(1000, 9999)}">{e(r)}</a></li>' for r in c["related"])
    comments = "".join(
        f'<div class="comment"><span class="author">user{rng.randint(1, 500)}</span><p>{e(t)}</p></div>'
        for t in c["comments"]
    )
    tags = "".join(f'<a class="tag" href="/tag/{i}">{e(t)}</a>' for i, t in enumerate(c["tags"]))
    # Real pages are mostly chrome: a long "more news" list and inline scripts bring a page to tens of KiB.
    more = "".join(
        f'<li><a href="/news/{rng.randint(1000, 99999)}">{e(rng.choice(c["related"]))} ({n})</a></li>'
        for n in range(120)
    )
    script = "var cfg=" + json.dumps({"slots": [f"slot-{n}" for n in range(400)]}) + ";"
    wrapper = ("article", "div")[layout % 2]
    return f"""<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{e(title)} | News</title>
<script>window.dataLayer=[];function track(){{}}</script><style>.ad-slot{{height:90px}}</style></head><body>
<header><div class="logo"><a href="/">News</a></div><nav><ul>{nav}</ul></nav>
<div class="ticker">{e(c["ticker"])}</div></header>
<main><div class="content">
<{wrapper} class="post"><h1>{e(title)}</h1><div class="meta"><time>03.12.2026 10:{layout % 60:02d}</time></div>
<div class="share"><a href="#">Facebook</a> <a href="#">Telegram</a> <a href="#">WhatsApp</a></div>
<div class="post-body">{"".join(parts)}</div><div class="tags">{tags}</div></{wrapper}>
<aside class="sidebar"><div class="ad-slot">{e(c["ad"])}</div><h3>Popular</h3><ul>{related}</ul></aside>
<section class="related"><h3>Related</h3><ul>{related}</ul></section>
<section class="more-news"><ul>{more}</ul></section><script>{script}</script>
<section id="comments" class="comments"><h3>Comments (3)</h3>{comments}</section>
</div></main><footer><p>{e(c["footer"])}</p></footer></body></html>"""


def f1(got: str, want: str) -> float:
    g, w = Counter(_WORD.findall(got.lower())), Counter(_WORD.findall(want.lower()))
    common = sum((g & w).values())
    if not common:
        return 0.0
    p, r = common / sum(g.values()), common / sum(w.values())
    return 2 * p * r / (p + r)


def trafilatura_fn(doc: str) -> str:
    from monitor.ingest.article import extract_text

    return extract_text(doc)


def readability_fn(doc: str) -> str:
    from readability import Document

    from monitor.sanitize import html_to_text

    return html_to_text(Document(doc).summary(html_partial=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=240)
    args = ap.parse_args()
    rng = random.Random(7)
    bodies = load_bodies()
    rng.shuffle(bodies)
    pages = [
        (lang, title, body, page(lang, title, body, rng, i))
        for i, (lang, title, body) in enumerate(bodies[: args.pages])
    ]
    print(
        f"{len(pages)} pages (en {sum(p[0] == 'en' for p in pages)}, ru {sum(p[0] == 'ru' for p in pages)}, "
        f"kk {sum(p[0] == 'kk' for p in pages)}), {statistics.mean(len(p[3]) for p in pages) / 1024:.1f} KiB each"
    )
    fns: list[tuple[str, Callable[[str], str]]] = [
        ("trafilatura", trafilatura_fn),
        ("readability-lxml", readability_fn),
    ]
    for name, fn in fns:
        fn(pages[0][3])  # imports and warm-up outside the timing
        scores: dict[str, list[float]] = {"en": [], "ru": [], "kk": []}
        started = time.perf_counter()
        for lang, _title, body, doc in pages:
            scores[lang].append(f1(fn(doc), body))
        ms = (time.perf_counter() - started) / len(pages) * 1000
        allf = [s for v in scores.values() for s in v]
        per = "  ".join(f"{k} {statistics.mean(v):.3f}" for k, v in scores.items() if v)
        low = sum(s < 0.9 for s in allf)
        print(
            f"  {name:<17} token F1 {per}  all {statistics.mean(allf):.3f}  (pages under 0.9: {low})  {ms:6.1f} ms/page"
        )


if __name__ == "__main__":
    main()
