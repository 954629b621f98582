"""Full-text search over 200,000 stored items, beside a LIKE '%word%' scan of the same table.

    .venv/bin/python bench/search.py [--items 200000] [--db URL] [--runs 40] [--rounds 5]

Items are generated (seeded): a third each English, Russian and Kazakh, a title and ~70 words of text drawn
from a Zipf-distributed vocabulary per language (real words, with their inflected forms, plus filler words
for a long tail), published over a year, with categories and countries. Then, in the same run:

- index build: `rebuild_index` over the stored rows (what `monitor db upgrade` does for an existing archive),
  with the index's size on disk for SQLite;
- our search: `monitor.search.search(...)` end to end (parse, ranked query, rows, highlighted snippets) for
  a word, a phrase and a filtered query (word + language + category + date range), each from a list of
  queries cycled over --runs calls; p50 / p95 wall time (and the CPU time of this process, which on SQLite
  is all of the work and is less disturbed by other load on the machine), over --rounds rounds, each round
  timing ours and then the scan, the median round printed with the range of speed-ups;
- baseline: a scan of the item table for `title LIKE '%w%' OR text LIKE '%w%'` returning every matching id,
  which a search without an index needs to rank or count its results. Its matching is weaker (no inflection;
  SQLite's LIKE folds only ASCII case), so it is given the lower-case stem. Printed too, without a target:
  the 20 newest matches (`ORDER BY published DESC LIMIT 20`), which walks the date index and stops at the
  20th match, so it reads only a fraction of the table for a common word (and all of it for a rare one).

Targets (issue 10): our p95 under 50 ms on SQLite, and at least 50x faster than the scan.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, text  # noqa: E402

from monitor.search import SearchFilters, rebuild_index, search  # noqa: E402
from monitor.store import ensure_schema, make_engine  # noqa: E402
from monitor.store.engine import session_scope  # noqa: E402
from monitor.store.models import Feed, Item  # noqa: E402

START = datetime(2025, 12, 1, tzinfo=UTC)

# Real words in several forms; the first few of each list are frequent (Zipf), the rest rarer.
RU = [
    "в",
    "на",
    "и",
    "по",
    "что",
    "не",
    "с",
    "о",
    "за",
    "суд",
    "полиция",
    "как",
    "из",
    "года",
    "после",
    "также",
    "заявил",
    "задержали",
    "задержан",
    "задержание",
    "активистов",
    "активист",
    "активисты",
    "журналист",
    "журналиста",
    "журналистов",
    "митинг",
    "митинга",
    "митинге",
    "приговор",
    "приговорил",
    "штраф",
    "оштрафовали",
    "оштрафован",
    "суда",
    "судом",
    "дело",
    "дела",
    "уголовное",
    "обвинение",
    "обвиняют",
    "власти",
    "закон",
    "закона",
    "законопроект",
    "организации",
    "организация",
    "некоммерческих",
    "правозащитники",
    "правозащитник",
    "свободы",
    "слова",
    "собрания",
    "протест",
    "протеста",
    "протестующих",
    "акимат",
    "акимата",
    "жителей",
    "блогер",
    "блогера",
    "арестован",
    "арест",
    "ареста",
    "суток",
    "административного",
    "статье",
    "кодекса",
]
KK = [
    "және",
    "бойынша",
    "мен",
    "сот",
    "полиция",
    "бұл",
    "деп",
    "жылы",
    "кейін",
    "журналист",
    "журналистер",
    "белсенділер",
    "белсенді",
    "қамалды",
    "қамауға",
    "қамау",
    "ұсталды",
    "ұстады",
    "ұстау",
    "наразылық",
    "наразылығы",
    "наразылықтар",
    "жиын",
    "жиынға",
    "айыппұл",
    "айыппұл",
    "салынды",
    "заң",
    "заңы",
    "заңға",
    "ұйым",
    "ұйымдар",
    "үкімет",
    "билік",
    "сөз",
    "бостандығы",
    "құқық",
    "қорғаушы",
    "қорғаушылар",
    "іс",
    "ісі",
    "қылмыстық",
    "айып",
    "тағылды",
    "тұрғындар",
    "әкімдік",
    "шешім",
    "шешімі",
]
EN = [
    "the",
    "of",
    "to",
    "and",
    "in",
    "a",
    "for",
    "on",
    "that",
    "said",
    "court",
    "police",
    "was",
    "with",
    "journalist",
    "journalists",
    "detained",
    "detention",
    "protesters",
    "protest",
    "rally",
    "arrested",
    "arrest",
    "charged",
    "charges",
    "fined",
    "fine",
    "law",
    "bill",
    "organisations",
    "ngo",
    "rights",
    "activists",
    "activist",
    "freedom",
    "speech",
    "assembly",
    "government",
    "authorities",
    "criminal",
    "case",
    "sentenced",
    "prison",
    "days",
    "administrative",
    "code",
    "blogger",
    "newspaper",
    "editor",
    "released",
]
SYLLABLES = {
    "ru": [
        "ка",
        "ро",
        "ми",
        "на",
        "те",
        "ло",
        "ва",
        "ри",
        "до",
        "сы",
        "пе",
        "зу",
        "ко",
        "ла",
        "ни",
        "то",
        "ме",
        "ду",
        "ры",
        "са",
    ],
    "kk": [
        "қа",
        "ба",
        "ты",
        "ңы",
        "жа",
        "ұс",
        "ке",
        "ді",
        "сі",
        "ғы",
        "ал",
        "ер",
        "ме",
        "тұ",
        "ын",
        "ар",
        "өз",
        "ше",
        "лы",
    ],
    "en": [
        "ka",
        "ro",
        "mi",
        "na",
        "te",
        "lo",
        "va",
        "ri",
        "do",
        "sy",
        "pe",
        "zu",
        "ko",
        "la",
        "ni",
        "to",
        "me",
        "du",
        "ry",
        "sa",
    ],
}
REAL = {"ru": RU, "kk": KK, "en": EN}
CATEGORIES = ["protest_crackdown", "prosecution", "media_restriction", "ngo_restriction", "intimidation"]

# (query, LIKE pattern of the baseline)
WORD_QUERIES = [
    ("оштрафован", "штраф"),
    ("приговор", "приговор"),
    ("блогер", "блогер"),
    ("айыппұл", "айыппұл"),
    ("sentenced", "sentenced"),
    ("editor", "editor"),
    ("законопроект", "законопроект"),
    ("bill", "bill"),
]
PHRASE_QUERIES = [
    ('"задержали активистов"', "задержали активистов"),
    ('"freedom of speech"', "freedom of speech"),
    ('"сөз бостандығы"', "сөз бостандығы"),
    ('"уголовное дело"', "уголовное дело"),
]
FILTERED = [
    ("журналист", "журналист", "ru"),
    ("journalist", "journalist", "en"),
    ("журналист", "журналист", "kk"),
]


def vocabulary(rng: random.Random, lang: str, filler: int) -> list[str]:
    """Words by falling frequency: the first 8 real words (function words) lead, the other real words are
    spread over ranks 100-3000, so a query word is found in roughly 0.2-2% of the items, as a name or a
    specific term is; filler words make the long tail."""
    real = REAL[lang]
    syl = SYLLABLES[lang]
    seen = set(real)
    filler_words: list[str] = []
    while len(filler_words) < filler:
        w = "".join(rng.choice(syl) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            filler_words.append(w)
    words = real[:8] + filler_words
    for w in real[8:]:
        words.insert(rng.randint(100, 3000), w)
    return words


def fill(engine: Engine, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    vocab = {lang: vocabulary(rng, lang, 4000) for lang in REAL}
    weights = {lang: [1.0 / (i + 1) ** 1.05 for i in range(len(v))] for lang, v in vocab.items()}
    phrases = {
        "ru": ["задержали активистов", "уголовное дело"],
        "en": ["freedom of speech"],
        "kk": ["сөз бостандығы"],
    }
    item = Item.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as s:
        for lang in REAL:
            s.add(
                Feed(
                    id=f"feed-{lang}",
                    url=f"https://{lang}.example.org/rss",
                    config_url=f"https://{lang}.example.org/rss",
                )
            )
    batch: list[dict[str, Any]] = []
    for i in range(n):
        lang = ("en", "ru", "kk")[i % 3]
        words = rng.choices(vocab[lang], weights[lang], k=rng.randint(50, 90))
        if rng.random() < 0.01:
            words.insert(rng.randrange(len(words)), rng.choice(phrases[lang]))
        title = " ".join(rng.choices(vocab[lang], weights[lang], k=8)).capitalize()
        body = " ".join(words).capitalize() + "."
        published = START + timedelta(seconds=rng.randrange(365 * 86400))
        batch.append(
            {
                "feed_id": f"feed-{lang}",
                "url": f"https://{lang}.example.org/n/{i}",
                "title": title,
                "text": body,
                "html": "",
                "author": None,
                "language": lang,
                "published": published,
                "published_estimated": False,
                "fetched": published,
                "updated": None,
                "content_hash": hashlib.sha1(f"{i}".encode()).hexdigest(),
                "hash_updates": 0,
                "categories": rng.sample(CATEGORIES, rng.randint(0, 2)),
                "countries": ["KZ"] if rng.random() < 0.7 else [],
                "matches": {},
                "places": [],
                "rules_version": None,
                "incident_id": None,
                "pruned": False,
            }
        )
        if len(batch) == 5000:
            with session_scope(engine) as s:
                s.execute(item.insert(), batch)
            batch = []
    if batch:
        with session_scope(engine) as s:
            s.execute(item.insert(), batch)


def timed(fn: Callable[[int], Any], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each call fn(0), fn(1), ...: the index picks the query, so queries are
    cycled."""
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(runs):
        c = time.process_time()
        t = time.perf_counter()
        fn(i)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return wall, cpu


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file in a temporary folder)")
    ap.add_argument("--runs", type=int, default=40, help="calls per query kind")
    ap.add_argument("--keep", action="store_true", help="keep the SQLite file and print its path")
    ap.add_argument("--baseline-runs", type=int, default=5, help="calls per query kind for the LIKE scan")
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds (ours and the scan each round)")
    args = ap.parse_args()

    tmp = None if args.db else tempfile.mkdtemp(prefix="bench-search-")  # (none to leave behind for --db)
    url = args.db or f"sqlite:///{tmp}/bench.db"
    engine = make_engine(url)
    ensure_schema(
        engine
    )  # on an empty database, so the migration indexes nothing and the build is timed here
    with session_scope(engine) as s:
        if s.execute(text("SELECT count(*) FROM item")).scalar_one():
            sys.exit(f"{url}: the database must start empty")
    print(f"database: {engine.url.render_as_string(hide_password=True)} ({engine.dialect.name})")

    t = time.perf_counter()
    fill(engine, args.items)
    print(f"generated and stored {args.items:,} items in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    with session_scope(engine) as s:
        n = rebuild_index(s)
    build = time.perf_counter() - t
    size = ""
    if engine.dialect.name == "sqlite":
        with engine.connect() as c:
            pages = c.execute(text("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'item_fts%'")).scalar()
            if pages:
                size = f", index {pages / 2**20:.0f} MiB on disk"
            c.execute(text("ANALYZE"))
    else:
        with engine.connect() as c:
            mb = c.execute(text("SELECT pg_total_relation_size('item_search')")).scalar_one() / 2**20
            size = f", index {mb:.0f} MiB"
        # VACUUM as well: it marks the pages all-visible, which an archive's table is once autovacuum (on by
        # default) has been after a bulk insert, and without which the covering filter index cannot be read
        # alone (every matching item's row was fetched from the heap)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE"))
    print(f"index build: {n:,} items in {build:.1f} s ({n / build:,.0f} items/s){size}")

    like = "(title LIKE :p OR text LIKE :p)"
    scan_sql = text(f"SELECT id FROM item WHERE {like}")
    newest_sql = text(f"SELECT id FROM item WHERE {like} ORDER BY published DESC LIMIT 20")
    scan_filtered_sql = text(
        f"SELECT id FROM item WHERE {like} AND language = :lang AND published >= :since AND published < :until"
    )
    since, until = START + timedelta(days=60), START + timedelta(days=240)
    kinds: list[tuple[str, Callable[[int], Any], Callable[[int], Any], Callable[[int], Any] | None]] = []

    def ours(q: str, f: SearchFilters | None = None) -> Any:
        return search(engine, q, filters=f, limit=20)

    def scan(sql: Any, **params: Any) -> Any:
        with engine.connect() as c:
            return c.execute(sql, params).all()

    kinds.append(
        (
            "word",
            lambda i: ours(WORD_QUERIES[i % len(WORD_QUERIES)][0]),
            lambda i: scan(scan_sql, p=f"%{WORD_QUERIES[i % len(WORD_QUERIES)][1]}%"),
            lambda i: scan(newest_sql, p=f"%{WORD_QUERIES[i % len(WORD_QUERIES)][1]}%"),
        )
    )
    kinds.append(
        (
            "phrase",
            lambda i: ours(PHRASE_QUERIES[i % len(PHRASE_QUERIES)][0]),
            lambda i: scan(scan_sql, p=f"%{PHRASE_QUERIES[i % len(PHRASE_QUERIES)][1]}%"),
            lambda i: scan(newest_sql, p=f"%{PHRASE_QUERIES[i % len(PHRASE_QUERIES)][1]}%"),
        )
    )

    def filtered(i: int) -> Any:
        q, _, lang = FILTERED[i % len(FILTERED)]
        return ours(q, SearchFilters(language=lang, category="prosecution", since=since, until=until))

    def filtered_scan(i: int) -> Any:
        _, p, lang = FILTERED[i % len(FILTERED)]
        return scan(
            scan_filtered_sql,
            p=f"%{p}%",
            lang=lang,
            since=since.replace(tzinfo=None),
            until=until.replace(tzinfo=None),
        )

    kinds.append(("filtered", filtered, filtered_scan, None))

    # warm-up: every query of each list once, ours and the scan alike (loads the morphology dictionaries and
    # fills the caches; with only the first query warmed, the others' first calls fell into the timed p95)
    cycle = max(len(WORD_QUERIES), len(PHRASE_QUERIES), len(FILTERED))
    sqlite = engine.dialect.name == "sqlite"
    for _, f_ours, f_scan, _newest in kinds:
        for i in range(cycle):
            f_ours(i)
        f_scan(0)
    print(
        f"\n{args.rounds} rounds of {args.runs} calls (ours) and {args.baseline_runs} (LIKE) per query kind;"
    )
    print("figures are the median over the rounds; x = LIKE p95 / ours p95 within a round; cpu: this process")
    print(
        f"{'query':<9} {'ours p50':>9} {'ours p95':>9} {'LIKE p50':>9} {'LIKE p95':>9} {'x (min-max)':>15}"
        f"{'cpu p95':>9} {'cpu x':>6}  target"
    )
    newest_rows = []
    for name, f_ours, f_scan, f_newest in kinds:
        rounds = []
        for _ in range(args.rounds):
            ours_ms, ours_cpu = timed(f_ours, args.runs)
            scan_ms, scan_cpu = timed(f_scan, args.baseline_runs)
            rounds.append((ours_ms, ours_cpu, scan_ms, scan_cpu))
        med = statistics.median
        o50 = med(pct(r[0], 50) for r in rounds)
        o95 = med(pct(r[0], 95) for r in rounds)
        s50 = med(pct(r[2], 50) for r in rounds)
        s95 = med(pct(r[2], 95) for r in rounds)
        ratios = sorted(pct(r[2], 95) / pct(r[0], 95) for r in rounds)
        c95 = med(pct(r[1], 95) for r in rounds)
        # on PostgreSQL the scan's work is the server's: a CPU ratio of this process would mean nothing
        cx = f"{med(pct(r[3], 95) / pct(r[1], 95) for r in rounds):>5.0f}x" if sqlite else "    -"
        x = med(ratios)
        ok = o95 < 50 and x >= 50
        print(
            f"{name:<9} {o50:>7.1f}ms {o95:>7.1f}ms {s50:>7.0f}ms {s95:>7.0f}ms "
            f"{x:>5.0f}x ({ratios[0]:.0f}-{ratios[-1]:.0f}) {c95:>7.1f}ms {cx}  "
            f"{'PASS' if ok else 'FAIL'} (p95 < 50 ms, >= 50x)"
        )
        if f_newest is not None:
            n_ms, _ = timed(f_newest, args.baseline_runs)
            newest_rows.append(f"{name:<9} {pct(n_ms, 50):>7.0f}ms {pct(n_ms, 95):>7.0f}ms")
    if not sqlite:
        print("(cpu on PostgreSQL is the client's only: the server's work is not in it)")
    print("\nLIKE, 20 newest matches only (stops early; no ranking, no count):")
    print(f"{'query':<9} {'p50':>9} {'p95':>9}")
    print("\n".join(newest_rows))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cpus)")
    hits = {q: len(search(engine, q, limit=500).hits) for q, _ in WORD_QUERIES[:3] + PHRASE_QUERIES[:2]}
    print("\nresults per query (capped at 500):", ", ".join(f"{q} {n}" for q, n in hits.items()))
    if args.keep:
        print("kept", url)
    elif tmp is not None:
        engine.dispose()
        shutil.rmtree(tmp)  # the WAL and shared-memory files too (the WAL held 640 MB after a run)


if __name__ == "__main__":
    main()
