"""Building the static site (and a digest) from 20,000 stored items in 5,000 incidents, beside just loading the rows.

    .venv/bin/python bench/digest_site.py [--items 20000] [--incidents 5000] [--db URL] [--out DIR]

The database is filled with generated data (seeded): incidents of 1-8 reports in English, Russian or Kazakh, each
item ~1.5 KB of text with HTML (paragraphs, stored through the sanitiser as ingestion stores an HTML body), rule
matches with snippets, one or two sources; incidents carry grouping signatures and explanations, and items the
`display` record (actors, HTML already sanitised), as `group_items` writes them. Then, in the same run:

- baseline: load every row the site reads (items with their sources, incidents, feeds), in batches, touching
  each object, and nothing else;
- `build_site`: every page, feed.atom and the JSON/CSV exports, each run into an empty folder (a fresh build);
- `build_digest` for the packaged `daily` digest with every incident new (the worst case: one 5,000-incident
  message, of which `max_incidents` are shown in full), beside the same digest over a fifth of the incidents (peak
  memory should not grow with the number of incidents) and beside one showing every incident in full (what
  digests did before `max_incidents`).

Each step runs `--repeat` times (default 3) for time, then once more under tracemalloc for the peak of Python
allocations (tracemalloc slows the code, so the two are not measured together). Times are medians of the runs,
wall and CPU (the process's own, `time.process_time`: the machine is shared, and other processes' load shows in
wall time only); the baseline and the site build run by turns, and the ratio is the median of each pair's CPU
ratio, so a spell of load falls on both alike (this VM's speed moves by a third within minutes); every run's CPU
and wall time are printed so one slow run stands out. Under load, wall time swings with the disk (a build writes
~300 MiB of blocks: 175 MiB of site and its temporary files) while CPU time moves less. Peak RSS of the whole
process is printed at the end.
"""

from __future__ import annotations

import argparse
import itertools
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, insert  # noqa: E402
from sqlmodel import col, select  # noqa: E402

from monitor.config.load import Config, load_config, packaged_dir  # noqa: E402
from monitor.deliver.site import build_site  # noqa: E402
from monitor.incidents import incident_severity  # noqa: E402
from monitor.incidents.display import display_record  # noqa: E402
from monitor.incidents.features import extract  # noqa: E402
from monitor.sanitize import sanitize_html  # noqa: E402
from monitor.store import ensure_schema, make_engine  # noqa: E402
from monitor.store.engine import session_scope  # noqa: E402
from monitor.store.models import Feed, Incident, Item, ItemSource  # noqa: E402

START = datetime(2026, 9, 1, tzinfo=UTC)
SITE_TARGET = 3.0  # issue 12: site build within 3x the CPU time of loading the rows
DIGEST_PEAK_MIB = 80  # issue 12: a 5,000-incident digest under 80 MiB peak
CATEGORIES = [
    "protest_crackdown", "prosecution", "defamation", "media_restriction", "ngo_restriction", "ngo_liquidation",
    "union_pressure", "party_barriers", "religious_restriction", "funding_restriction", "intimidation",
    "digital_repression", "restrictive_law",
]  # fmt: skip


def _w(s: str) -> list[str]:
    return s.split()


COUNTRIES = ["KZ", "KZ", "KZ", "KG", "UZ", "RU", "TJ", "BY"]
WORDS = {
    "en": _w(
        "police detained activist journalist court sentenced rally protest charge prison fine lawyer said "
        "hearing case editor newspaper ministry statement city region opposition trial days"
    ),
    "ru": _w(
        "полиция задержала активиста журналиста суд приговорил митинг протест обвинение штраф адвокат заявил "
        "заседание дело редактор газета министерство город область оппозиция процесс суток"
    ),
    "kk": _w(
        "полиция белсендіні журналисті ұстады сот үкім митинг наразылық айып айыппұл адвокат мәлімдеді "
        "отырыс іс редактор газет министрлік қала облыс оппозиция"
    ),
}
NAMES = _w("Aigul Serik Yerlan Dana Marat Asel Nurlan Zhanna Bolat Gulnara Timur Aliya Daniyar Saule")
SURNAMES = _w("Utepova Mamai Zhumabaev Sadykov Akhmetova Nurpeisov Kasymov Iskakova Baimukhanov Tokayeva")


def _text(rng: random.Random, lang: str, name: str, chars: int = 1500) -> str:
    words = WORDS[lang]
    out: list[str] = []
    n = 0
    while n < chars:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(8, 16)))
        if rng.random() < 0.3:
            sentence += f" {name}"
        sentence = sentence.capitalize() + "."
        out.append(sentence)
        n += len(sentence) + 1
    return " ".join(out)


def fill(engine: Engine, n_items: int, n_incidents: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    feeds = [f"feed-{i:02d}" for i in range(20)]
    # incident sizes: 1..8 reports, adjusted so the total is exactly n_items
    sizes = [1] * n_incidents
    for _ in range(n_items - n_incidents):
        sizes[rng.randrange(n_incidents)] += 1
    span = timedelta(days=90)
    with session_scope(engine) as s:
        s.execute(
            insert(Feed),
            [
                {
                    "id": f,
                    "url": f"https://{f}.example.org/rss",
                    "config_url": f"https://{f}.example.org/rss",
                    "title": f"Feed {f}",
                    "tags": [],
                    "created_at": START,
                }
                for f in feeds
            ],
        )
    item_id = 0
    batch_items: list[dict[str, Any]] = []
    batch_sources: list[dict[str, Any]] = []
    batch_incidents: list[dict[str, Any]] = []

    def flush() -> None:
        with session_scope(engine) as s:
            if batch_incidents:
                s.execute(insert(Incident), batch_incidents)
            if batch_items:
                s.execute(insert(Item), batch_items)
            if batch_sources:
                s.execute(insert(ItemSource), batch_sources)
        batch_items.clear()
        batch_sources.clear()
        batch_incidents.clear()

    for inc_id in range(1, n_incidents + 1):
        first = START + span * rng.random()
        cats = sorted(set(rng.sample(CATEGORIES, rng.choice([1, 1, 2]))))
        countries = [rng.choice(COUNTRIES)]
        person = f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}"
        members: dict[str, Any] = {}
        expl: dict[str, Any] = {}
        published = first
        title0 = ""
        for k in range(sizes[inc_id - 1]):
            item_id += 1
            lang = rng.choice(["en", "en", "ru", "ru", "kk"])
            published = first + timedelta(hours=rng.randint(0, 48) if k else 0)
            title = f"{rng.choice(WORDS[lang]).capitalize()} {rng.choice(WORDS[lang])} {person} #{item_id}"
            title0 = title0 or title
            text = _text(rng, lang, person)
            hit = WORDS[lang][1]
            matches = {
                c: {
                    "rule": f"{lang}: {hit} NEAR/5 {WORDS[lang][0]}",
                    "score": 1.0,
                    "hits": [{"term": hit, "field": "text", "start": 10, "end": 20, "snippet": text[:120]}],
                }
                for c in cats
            }
            f = extract(title, text[:600])
            members[str(item_id)] = {
                "t": published.isoformat(),
                "c": cats,
                "k": countries,
                "s": sorted(f.stems),
                "n": sorted(f.names),
                "p": sorted(f.persons),
            }
            expl[str(item_id)] = {
                "incident": inc_id,
                "reason": "first" if k == 0 else "names",
                "text": f"joined incident {inc_id}: same category and the same names ({person})",
            }
            feed = feeds[item_id % len(feeds)]
            url = f"https://{feed}.example.org/news/{item_id}"
            # The HTML as ingestion stores an HTML body (through the sanitiser), and what grouping works out for
            # the site when it puts the report in an incident.
            html = sanitize_html("<p>" + text.replace(". ", ".</p><p>") + "</p>", url)
            batch_items.append(
                {
                    "id": item_id,
                    "feed_id": feed,
                    "url": url,
                    "title": title,
                    "text": text,
                    "html": html,
                    "language": lang,
                    "published": published,
                    "published_estimated": False,
                    "fetched": published + timedelta(minutes=7),
                    "content_hash": f"{item_id:064x}",
                    "hash_updates": 0,
                    "categories": cats,
                    "countries": countries,
                    "matches": matches,
                    "incident_id": inc_id,
                    "pruned": False,
                    "display": display_record(url, title, text, html),
                }
            )
            for j in range(rng.choice([1, 1, 2])):
                src_feed = feed if j == 0 else feeds[(item_id + 7) % len(feeds)]
                batch_sources.append(
                    {
                        "item_id": item_id,
                        "feed_id": src_feed,
                        "entry_key": f"{src_feed}:{item_id}",
                        "url": url,
                        "first_seen": published,
                    }
                )
        last = max(START, published)
        batch_incidents.append(
            {
                "id": inc_id,
                "title": title0,
                "categories": cats,
                "countries": countries,
                "severity": incident_severity(cats),
                "first_seen": first,
                "last_seen": max(first, last),
                "updated_at": max(first, last) + timedelta(minutes=10),
                "item_count": sizes[inc_id - 1],
                "signature": {"members": dict(list(members.items())[-20:])},
                "explanation": {"items": expl},
            }
        )
        if len(batch_items) >= 2000:
            flush()
    flush()


def load_rows(engine: Engine) -> int:
    """The baseline: every row the site reads, in batches, each object touched; no rendering, no writing."""
    n = 0
    with session_scope(engine) as s:
        feeds = list(s.exec(select(Feed)))
        n += len(feeds)
        last = 0
        while True:
            incs = list(
                s.exec(select(Incident).where(col(Incident.id) > last).order_by(col(Incident.id)).limit(200))
            )
            if not incs:
                break
            last = incs[-1].id or last
            ids = [i.id for i in incs]
            items = list(s.exec(select(Item).where(col(Item.incident_id).in_(ids))))
            srcs = list(s.exec(select(ItemSource).where(col(ItemSource.item_id).in_([i.id for i in items]))))
            n += len(incs) + len(items) + len(srcs)
            n += sum(len(i.text) > 0 for i in items)
            s.expunge_all()
    return n


def build_digest_once(
    engine: Engine, config: Config, *, days: int = 101, max_incidents: int | None = None
) -> str:
    """The packaged `daily` digest over the incidents updated in the last `days` of the data (all of them by
    default), every one new; `max_incidents` overrides the digest's own (None: as configured). `config` is loaded
    beforehand, so its compiled rules are not counted."""
    from monitor.deliver.digest import build_digest

    d = config.digest("daily")
    if max_incidents is not None:
        d = d.model_copy(update={"max_incidents": max_incidents})
    now = START + timedelta(days=100)
    with session_scope(engine) as s:
        built = build_digest(
            s,
            d,
            config.categories,
            polling=config.settings.polling,
            templates_dir=config.templates_dir,
            now=now,
            position=now - timedelta(days=days),
        )
        size = len(built.message_bytes())
    return f"{len(built.picks)} incidents, {built.shown} in full, message {size / 1e6:.1f} MB"


@dataclass
class Measured:
    wall: float  # medians of the runs
    cpu: float
    peak: int  # bytes, from the tracemalloc run
    cpus: list[float]


def site_charts_once(engine: Engine, out: Path) -> str:
    from monitor.deliver.charts import site_charts
    from monitor.deliver.render import CATEGORY_TITLES

    with session_scope(engine) as s:
        cs = site_charts(s, out, now=START + timedelta(days=100), category_titles=CATEGORY_TITLES)
    return f"{len(cs.charts)} charts, {len(cs.sparklines)} sparklines"


def _timed(fn: Callable[[], Any], fresh: bool) -> tuple[float, float, Any]:
    """One run of `fn`: (wall, CPU, its result). `fresh`: the drawings a process keeps are forgotten first."""
    from monitor.deliver.charts import clear_cache

    if fresh:
        clear_cache()
    t, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t, time.process_time() - c, result


def _peak(fn: Callable[[], Any], fresh: bool, setup: Callable[[], Any] | None) -> int:
    """The peak of Python allocations of one more run, under tracemalloc (which slows the code, so it is a run
    of its own)."""
    from monitor.deliver.charts import clear_cache

    if setup is not None:
        setup()
    if fresh:
        clear_cache()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _report(label: str, walls: list[float], cpus: list[float], peak: int, result: Any) -> Measured:
    m = Measured(statistics.median(walls), statistics.median(cpus), peak, cpus)
    runs = " ".join(f"{c:.2f}/{w:.2f}" for c, w in zip(cpus, walls, strict=True))
    print(
        f"  {label:<36} {m.wall:6.2f} s wall {m.cpu:6.2f} s cpu (runs cpu/wall: {runs})   peak {peak / 2**20:6.1f} MiB"
        f"   {result if isinstance(result, str) else ''}"
    )
    return m


def measure(
    label: str,
    fn: Callable[[], Any],
    repeat: int,
    *,
    fresh: bool = True,
    setup: Callable[[], Any] | None = None,
) -> Measured:
    """`fresh`: every run draws its charts anew (the drawings a process keeps are forgotten first), so a run
    costs what the first build or digest of a process does. `setup` runs before each run, untimed."""
    walls: list[float] = []
    cpus: list[float] = []
    result: Any = None
    for _ in range(repeat):
        if setup is not None:
            setup()
        wall, cpu, result = _timed(fn, fresh)
        walls.append(wall)
        cpus.append(cpu)
    return _report(label, walls, cpus, _peak(fn, fresh, setup), result)


def measure_pairs(
    base: tuple[str, Callable[[], Any]],
    subject: tuple[str, Callable[[], Any]],
    repeat: int,
    *,
    setup: Callable[[], Any] | None = None,
) -> tuple[Measured, Measured, list[float]]:
    """The baseline and the subject run by turns (base, subject, base, subject...), so a spell of load on this
    shared machine falls on both alike; returns both and each pair's CPU ratio, subject over baseline.
    `setup` runs before each run of the subject, untimed."""
    sides = ((base, None), (subject, setup))
    walls: tuple[list[float], list[float]] = ([], [])
    cpus: tuple[list[float], list[float]] = ([], [])
    results: list[Any] = [None, None]
    for _ in range(repeat):
        for i, ((_, fn), before) in enumerate(sides):
            if before is not None:
                before()
            wall, cpu, results[i] = _timed(fn, True)
            walls[i].append(wall)
            cpus[i].append(cpu)
    b, s = (
        _report(label, walls[i], cpus[i], _peak(fn, True, before), results[i])
        for i, ((label, fn), before) in enumerate(sides)
    )
    ratios = [sc / bc for sc, bc in zip(s.cpus, b.cpus, strict=True)]
    return b, s, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--incidents", type=int, default=5_000)
    ap.add_argument("--db", help="SQLAlchemy URL of an EMPTY database (default: a temporary SQLite file)")
    ap.add_argument(
        "--out",
        type=Path,
        help="folder for the sites built, one per run (default: temporary, removed afterwards)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each step (medians are printed)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-digest-site-"))
    try:
        engine = make_engine(args.db or f"sqlite:///{tmp / 'bench.db'}")
        ensure_schema(engine)
        t = time.perf_counter()
        fill(engine, args.items, args.incidents)
        print(
            f"{engine.dialect.name}: filled {args.items} items in {args.incidents} incidents "
            f"in {time.perf_counter() - t:.1f} s"
        )
        sites = args.out or tmp / "sites"
        runs = itertools.count()
        out = sites / "0"

        def new_folder() -> None:
            # A new empty folder each run, the old ones kept until the end: on ext4 without a journal (this
            # VM's disk) creating a file scans past every inode freed in its block group in the last minute or
            # more, so removing the previous 5,000-file site just before a build made it quadratic in the files
            # removed (perf: recently_deleted() under ext4_create), up to 3 s of system time, varying run to run.
            nonlocal out
            out = sites / str(next(runs))

        def site() -> str:
            r = build_site(engine, out, now=START + timedelta(days=100))
            return f"{r.pages} pages ({r.unchanged} unchanged), {r.incidents} incidents, {r.items} items"

        r = args.repeat
        # Every run builds into an empty folder: a fresh build, as the target means it.
        base, site_m, pair_ratios = measure_pairs(
            ("baseline: load the rows", lambda: load_rows(engine)),
            ("build_site (all pages + exports)", site),
            r,
            setup=new_folder,
        )
        # Building again over the last run's site, nothing having changed: what a service's rebuild after a quiet
        # poll costs. Unchanged files are not written again.
        again_site = measure("build_site again, over that site", site, r)
        config: Config = load_config(packaged_dir("config"))
        # The digest: a fifth of the incidents, all of them, and all of them shown in full (what every digest
        # did before max_incidents). Flat means the first two peaks are alike and well under the third.
        small = measure(
            "build_digest (daily, last 20 days)", lambda: build_digest_once(engine, config, days=20), r
        )
        dig = measure("build_digest (daily, all new)", lambda: build_digest_once(engine, config), r)
        full = measure(
            "build_digest (all new, all in full)",
            lambda: build_digest_once(engine, config, max_incidents=args.incidents),
            r,
        )
        # What charts cost a digest: the same message with for_digest switched off (no charts on the page or in
        # the email), and a site's charts alone (count, draw, write).
        import monitor.deliver.digest.compose as compose

        with_charts = compose.for_digest
        compose.for_digest = lambda *a, **k: None
        try:
            bare = measure("build_digest (daily, no charts)", lambda: build_digest_once(engine, config), r)
        finally:
            compose.for_digest = with_charts
        charts_m = measure("site charts alone", lambda: site_charts_once(engine, out), r)
        # A second digest with the same numbers in the same process (another subscription with the same
        # filters at the same slot, or after a site build of the same incidents): its charts are drawn already.
        again = measure(
            "build_digest (daily, charts drawn)", lambda: build_digest_once(engine, config), r, fresh=False
        )
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"  site: {size / 2**20:.1f} MiB on disk")
        ratio = statistics.median(pair_ratios)
        print(
            f"  site build = {ratio:.1f}x the CPU time of loading the rows "
            f"({site_m.wall / base.wall:.1f}x wall), {site_m.peak / max(base.peak, 1):.1f}x their peak memory"
        )
        print(
            f"  site rebuilt over an unchanged site: {again_site.cpu:.2f} s cpu, "
            f"{again_site.cpu / base.cpu:.1f}x loading the rows"
        )
        print(
            f"  target (issue 12): site build within {SITE_TARGET:g}x of loading the rows (CPU, median of the "
            f"runs taken by turns: {' '.join(f'{x:.2f}x' for x in pair_ratios)}): "
            f"{'PASS' if ratio <= SITE_TARGET else 'FAIL'} ({ratio:.2f}x; ratio of medians "
            f"{site_m.cpu:.2f} s / {base.cpu:.2f} s = {site_m.cpu / base.cpu:.2f}x); "
            f"digest peak under {DIGEST_PEAK_MIB} MiB: {'PASS' if dig.peak < DIGEST_PEAK_MIB * 2**20 else 'FAIL'} "
            f"({dig.peak / 2**20:.1f} MiB)"
        )
        print(
            f"  digest peak: {dig.peak / 2**20:.1f} MiB for every incident, {small.peak / 2**20:.1f} MiB for a "
            f"fifth (baseline: loading the rows {base.peak / 2**20:.1f} MiB; every incident in full "
            f"{full.peak / 2**20:.1f} MiB)"
        )
        print(
            f"  charts: {dig.cpu - bare.cpu:.2f} s cpu of a digest ({dig.cpu:.2f} s with, {bare.cpu:.2f} s without), "
            f"{charts_m.cpu:.2f} s cpu of a site build; a digest whose charts are drawn already {again.cpu:.2f} s"
        )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak RSS of this process: {rss:.0f} MiB")
        engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
