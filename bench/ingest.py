"""Ingestion benchmark: our poll cycle against the feedparser floor and the peer feed reader `reader`.

    .venv/bin/python bench/ingest.py                      # 500 feeds x 50 items: full + unchanged cycles
    .venv/bin/python bench/ingest.py --feeds 100 --items 20 --repeat 3
    .venv/bin/python bench/ingest.py --memory             # 5,000 feeds x 10 items: peak memory
    .venv/bin/python bench/ingest.py --profile            # plus a stage breakdown and a cProfile of our cycle

One run generates the feeds (RSS 2.0 and Atom, English and Russian, ~1-2 KB an item) into a temporary folder and
serves them from a separate process (`bench/_feeds.py serve`: ETag / Last-Modified, 304 on a match). Every
contender then runs in its own fresh interpreter, so imports, caches and memory of one never help or hurt another,
and its peak RSS is its own. Only the measured call is inside the timer: database creation, config building,
adding feeds to reader and fetching the floor's bytes happen before it.

- floor: `feedparser.parse(bytes)` over every document (bytes fetched once beforehand): the parse-only lower bound.
- ours: `monitor.ingest.poll.poll_once(engine, config, ignore_schedule=True)` on a fresh SQLite file, then again
  when every feed answers 304. With `monitor.rules.load_classifier` available, a third fresh-database cycle
  classifies every item with the shipped config's rules.
- reader: `make_reader` on a fresh SQLite file, `add_feed` each URL, `update_feeds(workers=W)`, then again with
  `scheduled=False` (every feed answers 304).

The server, the temporary folder and every child process are cleaned up however the run ends.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# Targets of issue 2 ("Measure"), tightened by issue 13 for the full and the unchanged cycle.
FLOOR_FACTOR = 1.1  # full cycle wall time within 1.1x of the feedparser floor
READER_RATE_FACTOR = 1.5  # at least 1.5x reader's entries per second
UNCHANGED_FACTOR = 2.5  # unchanged cycle at least 2.5x faster than reader's
MEMORY_LIMIT_MB = 300.0  # peak memory at 5,000 feeds

Result = dict[str, Any]

# What the --profile breakdown times (function wrapped -> label), in print order; indentation shows nesting.
STAGES = (
    ("sync", "Poller.sync (feeds from config into the DB)"),
    ("_store", "Poller._store: store thread busy, per feed"),
    ("parse_feed", "  parse_feed (ours, incl. feedparser)"),
    ("feedparser.parse", "    feedparser.parse"),
    ("_normalise_entry", "    _normalise_entry (all entries)"),
    ("load_known", "  load_known"),
    ("classify_entries", "  classify_entries"),
    ("write_entries", "  write_entries"),
    ("commit", "  Session.commit (every transaction)"),
)


# --- measuring helpers (used inside the workers) ------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _status_mb(pid: int | str, key: str, missing: float) -> float:
    """A memory figure of /proc/PID/status in MB; `missing` for a process that has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return missing


def peak_rss_of(pid: int) -> float:
    """Peak RSS of another (still running) process: a worker of ours."""
    return _status_mb(pid, "VmHWM", 0.0)  # a worker that has gone adds nothing


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds of other (still running) processes so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def current_rss_mb() -> float:
    return _status_mb("self", "VmRSS", float("nan"))


@contextmanager
def timed(into: Result, key: str) -> Iterator[None]:
    """Wall and CPU (all threads) seconds of the block, stored as `key` and `key_cpu`."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    yield
    into[key] = time.perf_counter() - wall0
    into[key + "_cpu"] = time.process_time() - cpu0


def feed_urls(base: str, data_dir: Path) -> list[tuple[str, str, str]]:
    """(id, url, language) of every generated feed, in order."""
    manifest: dict[str, str] = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    out = []
    for i, name in enumerate(sorted(manifest)):
        lang = "en" if (i // 2) % 2 == 0 else "ru"  # as bench/_feeds.py generates them
        out.append((name.split(".", 1)[0], base + name, lang))
    return out


# --- workers: each runs in its own interpreter ----------------------------------------------------------------


def work_floor(args: argparse.Namespace) -> Result:
    import gc
    import urllib.request

    import feedparser

    feeds = feed_urls(args.base, args.dir)
    bodies = []
    for _, url, _ in feeds:
        with urllib.request.urlopen(url, timeout=30) as resp:
            bodies.append(resp.read())
    gc.collect()
    res: Result = {"feeds": len(bodies), "bytes": sum(map(len, bodies))}
    entries = 0
    with timed(res, "full"):  # feedparser's defaults: its own HTML sanitiser and relative-URI resolution on
        for body in bodies:
            entries += len(feedparser.parse(body).entries)
    res["entries"] = entries
    gc.collect()
    with timed(res, "bare"):  # the options our parser passes: it sanitises with nh3 afterwards instead
        for body in bodies:
            feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def work_http_floor(args: argparse.Namespace) -> Result:
    """The network part of an unchanged cycle with nothing around it: every feed asked with its ETag over
    keep-alive connections (as many as our max_concurrency), on bare asyncio streams and h11. What a fetcher
    without httpx's per-request machinery could at best reach here; no database, no redirects, no guards."""
    import asyncio
    import urllib.request

    import h11

    feeds = feed_urls(args.base, args.dir)
    etags = []
    for _, url, _ in feeds:  # learn the validators first, outside the timer
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
            etags.append((url, resp.headers.get("ETag") or ""))
    host, port = args.base.split("//", 1)[1].rstrip("/").split(":")
    statuses: list[int] = []

    async def lane(todo: Any) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        conn = h11.Connection(h11.CLIENT)
        for url, etag in todo:
            path = "/" + url.split("/", 3)[3]
            headers = [("Host", f"{host}:{port}"), ("If-None-Match", etag), ("Accept", "*/*")]
            writer.write(conn.send(h11.Request(method="GET", target=path, headers=headers)))
            writer.write(conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(event, h11.Response):
                    statuses.append(event.status_code)
                if isinstance(event, h11.EndOfMessage):
                    break
            conn.start_next_cycle()
        writer.close()

    async def main(n: int) -> None:
        todo = iter(etags)
        await asyncio.gather(*(lane(todo) for _ in range(n)))

    res: Result = {}
    with timed(res, "unchanged"):
        asyncio.run(main(min(len(etags), args.lanes)))
    res["not_modified"] = statuses.count(304)
    return res


def _our_config(args: argparse.Namespace) -> Any:
    import dataclasses

    from monitor.config.load import load_config, packaged_dir
    from monitor.config.models import FeedConfig

    base = load_config(packaged_dir("config"))
    http = base.settings.http
    per_host = args.per_host if args.per_host else http.max_concurrency
    settings = base.settings.model_copy(
        update={"http": http.model_copy(update={"allow_private_networks": True, "per_host": per_host})}
    )
    feeds = tuple(
        FeedConfig(id=fid, url=url, language=lang) for fid, url, lang in feed_urls(args.base, args.dir)
    )
    return dataclasses.replace(base, settings=settings, feeds=feeds)


def _run_poll(engine: Any, config: Any, classifier: Any = None) -> Any:
    import asyncio

    from monitor.ingest.poll import poll_once

    return asyncio.run(poll_once(engine, config, classifier, ignore_schedule=True))


def _summary(report: Any) -> dict[str, Any]:
    counts = report.counts()
    counts["entries"] = sum(r.entries for r in report.results)
    errors = [r.error for r in report.results if r.error]
    counts["first_errors"] = errors[:3]
    return counts


def work_ours(args: argparse.Namespace) -> Result:
    import gc

    from monitor.store import ensure_schema, make_engine

    config = _our_config(args)
    classifier = None
    res: Result = {
        "per_host": config.settings.http.per_host,
        "concurrency": config.settings.http.max_concurrency,
    }
    if args.classify:
        try:
            from monitor.rules import load_classifier  # type: ignore[attr-defined]
        except (ImportError, AttributeError) as exc:
            return {"skipped": f"monitor.rules.load_classifier is not available ({exc})"}
        try:
            with timed(res, "classifier_load"):
                classifier = load_classifier(ROOT / "config")
        except Exception as exc:  # the rules are being built by someone else: report, do not abort the bench
            return {"skipped": f"load_classifier(config) failed: {type(exc).__name__}: {exc}"}
    engine = make_engine(f"sqlite:///{args.work / 'ours.db'}")
    ensure_schema(engine)
    # The poller imports these lazily: load them before the clock starts, as a long-running service has.
    importlib.import_module("monitor.ingest.fetch")
    importlib.import_module("monitor.ingest.parse")
    # ... and starts its worker processes (parsers, the language detector) before it claims feeds.
    workers = importlib.import_module("monitor.ingest.workers")
    workers.warm_workers()

    gc.collect()
    res["rss_before_mb"] = current_rss_mb()
    # The CPU figures count the workers' seconds too: the floor's parsing happens in one process.
    cpu0 = cpu_of(workers.worker_pids())
    with timed(res, "full"):
        report = _run_poll(engine, config, classifier)
    res["full_cpu"] += cpu_of(workers.worker_pids()) - cpu0
    res["full_summary"] = _summary(report)
    res["entries"] = res["full_summary"]["entries"]
    res["peak_rss_full_mb"] = peak_rss_mb()
    if not args.classify:
        gc.collect()
        cpu0 = cpu_of(workers.worker_pids())
        with timed(res, "unchanged"):
            report = _run_poll(engine, config, classifier)
        res["unchanged_cpu"] += cpu_of(workers.worker_pids()) - cpu0
        res["unchanged_summary"] = _summary(report)
    res["peak_rss_mb"] = peak_rss_mb()
    res["workers"] = len(workers.worker_pids())
    res["workers_peak_rss_mb"] = sum(peak_rss_of(pid) for pid in workers.worker_pids())
    res["language_worker_peak_rss_mb"] = sum(
        peak_rss_of(pid) for pid in workers.worker_pids(language_only=True)
    )
    engine.dispose()
    return res


def work_reader(args: argparse.Namespace) -> Result:
    import gc

    from reader import UpdateError, make_reader

    feeds = feed_urls(args.base, args.dir)
    rd = make_reader(str(args.work / "reader.sqlite"))
    for _, url, _ in feeds:
        rd.add_feed(url)
    gc.collect()
    res: Result = {"workers": args.reader_workers, "rss_before_mb": current_rss_mb()}

    def cycle(scheduled: bool) -> dict[str, int]:
        out = {"updated": 0, "not_modified": 0, "error": 0, "new": 0}
        for _, value in rd.update_feeds_iter(workers=args.reader_workers, scheduled=scheduled):
            if value is None:
                out["not_modified"] += 1
            elif isinstance(value, UpdateError):
                out["error"] += 1
            else:
                out["updated"] += 1
                out["new"] += value.new
        return out

    with timed(res, "full"):
        res["full_summary"] = cycle(scheduled=True)
    res["entries"] = rd.get_entry_counts().total
    res["peak_rss_full_mb"] = peak_rss_mb()
    gc.collect()
    with timed(res, "unchanged"):
        res["unchanged_summary"] = cycle(scheduled=False)  # not due yet by reader's schedule: force it
    res["peak_rss_mb"] = peak_rss_mb()
    rd.close()
    return res


def work_breakdown(args: argparse.Namespace) -> Result:
    """Our full and unchanged cycles with cheap timers around their stages; with --cprofile, again under cProfile."""
    import feedparser
    from sqlmodel import Session

    import monitor.ingest.parse as parse_mod
    import monitor.ingest.poll as poll_mod
    from monitor.store import ensure_schema, make_engine

    totals: dict[str, float] = {}
    originals: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def timed_call(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed_call)

    config = _our_config(args)
    engine = make_engine(f"sqlite:///{args.work / 'breakdown.db'}")
    ensure_schema(engine)
    importlib.import_module("monitor.ingest.fetch")
    wrap(poll_mod.Poller, "sync", "sync")
    wrap(poll_mod.Poller, "_store", "_store")
    wrap(parse_mod, "parse_feed", "parse_feed")
    wrap(feedparser, "parse", "feedparser.parse")
    wrap(parse_mod, "_normalise_entry", "_normalise_entry")
    wrap(poll_mod, "load_known", "load_known")
    wrap(poll_mod, "classify_entries", "classify_entries")
    wrap(poll_mod, "write_entries", "write_entries")
    wrap(Session, "commit", "commit")
    res: Result = {}
    for phase in ("full", "unchanged"):
        totals.clear()
        with timed(res, phase):
            report = _run_poll(engine, config)
        res[f"stages_{phase}"] = dict(totals)
    res["entries"] = _summary(report)["entries"]
    engine.dispose()
    for owner, name, original in reversed(originals):
        setattr(owner, name, original)
    if args.cprofile:
        _cprofile_cycles(args, config, poll_mod, make_engine, ensure_schema)
    return res


def _cprofile_cycles(
    args: argparse.Namespace, config: Any, poll_mod: Any, make_engine: Any, ensure: Any
) -> None:
    """Full then unchanged cycle under cProfile: one profiler on the event loop, one in the writer thread."""
    import cProfile
    import pstats

    engine = make_engine(f"sqlite:///{args.work / 'cprofile.db'}")
    ensure(engine)
    process = poll_mod.Poller._store
    out = args.work.parent / "profiles"
    out.mkdir(exist_ok=True)
    for phase in ("full", "unchanged"):
        writer_prof, loop_prof = cProfile.Profile(), cProfile.Profile()

        def profiled(self: Any, *a: Any, _prof: cProfile.Profile = writer_prof, **kw: Any) -> Any:
            _prof.enable()  # cProfile sees only the thread that enables it: the writer thread here
            try:
                return process(self, *a, **kw)
            finally:
                _prof.disable()

        poll_mod.Poller._store = profiled
        loop_prof.enable()
        _run_poll(engine, config)
        loop_prof.disable()
        poll_mod.Poller._store = process
        for where, prof in (("writer thread: parse + store", writer_prof), ("event loop: fetch", loop_prof)):
            stats = pstats.Stats(prof, stream=sys.stdout).strip_dirs()
            for order in ("tottime", "cumulative"):
                print(f"\n=== cProfile, {phase} cycle, {where}: top {args.cprofile} by {order} ===")
                stats.sort_stats(order).print_stats(args.cprofile)
            prof.dump_stats(str(out / f"{phase}-{'writer' if prof is writer_prof else 'loop'}.prof"))
    engine.dispose()


WORKERS: dict[str, Callable[[argparse.Namespace], Result]] = {
    "floor": work_floor,
    "ours": work_ours,
    "reader": work_reader,
    "breakdown": work_breakdown,
    "http_floor": work_http_floor,
}


def worker_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    result = WORKERS[args.worker](args)
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


# --- the orchestrator -----------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
        self.data = self.tmp / "feeds"
        self.server: subprocess.Popen[str] | None = None
        self.base = ""
        self.runs = 0

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_server()
        if self.args.keep:
            print(f"(kept {self.tmp})")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start_server(self) -> None:
        cmd = [sys.executable, str(BENCH / "_feeds.py"), "serve", str(self.data)]
        if self.args.gzip:
            cmd.append("--gzip")
        self.server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.server.stdout is not None
        line = self.server.stdout.readline().strip()  # the server prints its URL once its docs are loaded
        if not line.startswith("http://"):
            raise RuntimeError(f"feed server did not start (said {line!r})")
        self.base = line

    def stop_server(self) -> None:
        if self.server is None:
            return
        self.server.terminate()
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.server = None

    def run(self, worker: str, **extra: Any) -> Result:
        """Run one worker in a fresh interpreter with a fresh work folder; returns what it measured."""
        self.runs += 1
        work = self.tmp / f"run{self.runs}-{worker}"
        work.mkdir()
        out = work / "result.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            worker,
            "--base",
            self.base,
            "--dir",
            str(self.data),
            "--work",
            str(work),
            "--out",
            str(out),
            "--reader-workers",
            str(self.args.reader_workers),
            "--per-host",
            str(self.args.per_host),
            "--cprofile",
            str(extra.get("cprofile", 0)),
        ]
        if extra.get("classify"):
            cmd.append("--classify")
        if extra.get("lanes"):
            cmd += ["--lanes", str(extra["lanes"])]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(cmd, check=True, timeout=self.args.timeout, env=env)
        result: Result = json.loads(out.read_text(encoding="utf-8"))
        shutil.rmtree(work, ignore_errors=True)  # databases can be large; free the disk as we go
        return result

    def repeated(self, worker: str, **extra: Any) -> Result:
        """Median of --repeat runs for every timing, the largest peak RSS."""
        runs = [self.run(worker, **extra) for _ in range(self.args.repeat)]
        if "skipped" in runs[0]:
            return runs[0]
        merged = dict(runs[-1])
        for key, value in runs[0].items():
            if isinstance(value, float):
                values = [r[key] for r in runs]
                merged[key] = max(values) if "rss" in key else statistics.median(values)
        merged["runs"] = len(runs)
        return merged


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_rate(entries: int, seconds: float) -> str:
    return f"{entries / seconds:,.0f}" if seconds > 0 else "-"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def check_complete(name: str, res: Result, expected: int) -> list[str]:
    """Problems that would make the comparison meaningless (missing entries, failed feeds)."""
    problems = []
    if res.get("entries") != expected:
        problems.append(f"{name}: {res.get('entries')} entries, expected {expected}")
    for key in ("full_summary", "unchanged_summary"):
        summary = res.get(key) or {}
        if summary.get("error"):
            problems.append(
                f"{name} {key}: {summary['error']} failed feeds {summary.get('first_errors', '')}"
            )
    return problems


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    print(line)
    for r in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    print(line)


def throughput(args: argparse.Namespace, b: Bench) -> int:
    n_entries = args.feeds * args.items
    progress("floor: feedparser.parse over the same bytes")
    floor = b.repeated("floor")
    progress("ours: full cycle, then unchanged (304) cycle")
    ours = b.repeated("ours")
    progress("ours + classify: full cycle on a fresh database")
    classify = b.repeated("ours", classify=True)
    progress("http floor: bare asyncio + h11 conditional GETs over keep-alive connections")
    http_floor = b.repeated("http_floor", lanes=ours["concurrency"])
    reader: Result | None = None
    if not args.skip_reader:
        progress(f"reader: update_feeds(workers={args.reader_workers}) full, then unchanged")
        reader = b.repeated("reader")
    breakdown = None
    if args.profile:
        progress(
            "ours: full and unchanged cycles again, with stage timers"
            + (" and cProfile" if args.cprofile else "")
        )
        breakdown = b.run("breakdown", cprofile=args.cprofile)

    problems = check_complete("floor", floor, n_entries) + check_complete("ours", ours, n_entries)
    if reader is not None:
        problems += check_complete("reader", reader, n_entries)

    mb = floor["bytes"] / 1e6
    print()
    print(
        f"Ingestion benchmark: {args.feeds} feeds x {args.items} items = {n_entries:,} entries, {mb:.1f} MB "
        f"of RSS/Atom (EN/RU), served {'gzip' if args.gzip else 'uncompressed'} from a separate process "
        f"on loopback; {os.cpu_count()} CPUs; median of {args.repeat} run(s)."
    )
    print(
        f"ours: max_concurrency={ours['concurrency']}, per_host={ours['per_host']} (all bench feeds share one "
        f"host); reader {_reader_version()}: update_feeds(workers={args.reader_workers})."
    )
    rows: list[tuple[str, ...]] = []

    def row(
        name: str, wall: float, cpu: float | None, entries: int | None, rss: float | None, note: str
    ) -> None:
        rows.append(
            (
                name,
                f"{wall:.2f}",
                "-" if cpu is None else f"{cpu:.2f}",
                fmt_rate(entries, wall) if entries else "-",
                "-" if rss is None else f"{rss:.0f}",
                note,
            )
        )

    row(
        "floor, bare: feedparser.parse(bytes, ...)",
        floor["bare"],
        floor["bare_cpu"],
        floor["entries"],
        None,
        "sanitize_html=False, resolve_relative_uris=False, as parse_feed",
    )
    row(
        "floor: feedparser.parse(bytes)",
        floor["full"],
        floor["full_cpu"],
        floor["entries"],
        None,
        "defaults (its own HTML sanitiser); bytes in memory",
    )
    row(
        "ours: full cycle",
        ours["full"],
        ours["full_cpu"],
        ours["entries"],
        ours["peak_rss_full_mb"],
        f"{ours['full'] / floor['full']:.2f}x floor, {ours['full'] / floor['bare']:.2f}x bare floor; "
        f"new items {ours['full_summary']['new_items']:,}; +{ours.get('workers_peak_rss_mb', 0):.0f} MB in "
        f"{ours.get('workers', 0)} workers",
    )
    row(
        "ours: unchanged cycle (304)",
        ours["unchanged"],
        ours["unchanged_cpu"],
        None,
        ours["peak_rss_mb"],
        _outcomes(ours["unchanged_summary"]),
    )
    row(
        "http floor: asyncio + h11, 304s only",
        http_floor["unchanged"],
        http_floor["unchanged_cpu"],
        None,
        None,
        f"not_modified {http_floor['not_modified']}; no DB, no httpx: the network part's lower bound",
    )
    if "skipped" in classify:
        rows.append(("ours + classify: full cycle", "-", "-", "-", "-", "skipped (see below)"))
    else:
        row(
            "ours + classify: full cycle",
            classify["full"],
            classify["full_cpu"],
            classify["entries"],
            classify["peak_rss_full_mb"],
            f"+{classify['full'] - ours['full']:.2f} s vs unclassified; "
            f"rules loaded in {classify['classifier_load']:.1f} s (untimed)",
        )
    if reader is not None:
        row(
            "reader: full update",
            reader["full"],
            reader["full_cpu"],
            reader["entries"],
            reader["peak_rss_full_mb"],
            f"new entries {reader['full_summary']['new']:,}",
        )
        row(
            "reader: unchanged update (304)",
            reader["unchanged"],
            reader["unchanged_cpu"],
            None,
            reader["peak_rss_mb"],
            _outcomes(reader["unchanged_summary"]),
        )
    print_table(rows, ("", "wall s", "cpu s", "entries/s", "peak RSS MB", "notes"))

    if "skipped" in classify:
        print(f"ours + classify skipped: {classify['skipped']}")
    print(
        "\nTargets (issues 2 and 13), on wall time (in brackets: the same ratio on CPU seconds, less sensitive to"
    )
    print("other processes sharing the machine):")

    def ratio(a: Result, ak: str, b: Result, bk: str) -> tuple[float, float]:
        return a[ak] / b[bk], a[ak + "_cpu"] / b[bk + "_cpu"]

    wall, cpu = ratio(ours, "full", floor, "full")
    print(
        f"  full cycle within {FLOOR_FACTOR}x of the feedparser floor: {wall:.2f}x [{cpu:.2f}x]  "
        f"-> {verdict(wall <= FLOOR_FACTOR)}"
    )
    wall, cpu = ratio(ours, "full", floor, "bare")
    print(
        f"    stricter reading, against the bare floor (parse_feed's options): {wall:.2f}x [{cpu:.2f}x]  "
        f"-> {verdict(wall <= FLOOR_FACTOR)}"
    )
    if reader is not None:
        # Same entry count on both sides, so the entries/s ratio is the inverse ratio of the times.
        wall, cpu = ratio(reader, "full", ours, "full")
        print(
            f"  entries/s >= {READER_RATE_FACTOR}x reader's: {wall:.2f}x [{cpu:.2f}x]  "
            f"-> {verdict(wall >= READER_RATE_FACTOR)}"
        )
        wall, cpu = ratio(reader, "unchanged", ours, "unchanged")
        print(
            f"  unchanged cycle >= {UNCHANGED_FACTOR}x faster than reader's: {wall:.2f}x [{cpu:.2f}x]  "
            f"-> {verdict(wall >= UNCHANGED_FACTOR)}"
        )
    print("  peak memory < 300 MB at 5,000 feeds: see --memory")
    if breakdown is not None:
        print_breakdown(breakdown)
    return report_problems(problems)


def memory(args: argparse.Namespace, b: Bench) -> int:
    n_entries = args.feeds * args.items
    progress("ours: full cycle, then unchanged cycle")
    ours = b.repeated("ours")
    reader = None
    if not args.skip_reader:
        progress(f"reader: update_feeds(workers={args.reader_workers}) full, then unchanged")
        reader = b.repeated("reader")
    problems = check_complete("ours", ours, n_entries)
    if reader is not None:
        problems += check_complete("reader", reader, n_entries)
    print()
    print(
        f"Memory at scale: {args.feeds:,} feeds x {args.items} items = {n_entries:,} entries; peak RSS of "
        f"the process (ru_maxrss, includes the interpreter and imports); ours has worker processes too, "
        f"counted in the target below."
    )
    rows = [
        (
            "ours",
            f"{ours['rss_before_mb']:.0f}",
            f"{ours['peak_rss_full_mb']:.0f}",
            f"{ours['peak_rss_mb']:.0f}",
            f"{ours['full']:.1f}",
            f"{ours['unchanged']:.1f}",
        )
    ]
    if reader is not None:
        rows.append(
            (
                "reader",
                f"{reader['rss_before_mb']:.0f}",
                f"{reader['peak_rss_full_mb']:.0f}",
                f"{reader['peak_rss_mb']:.0f}",
                f"{reader['full']:.1f}",
                f"{reader['unchanged']:.1f}",
            )
        )
    print_table(
        rows, ("", "RSS before MB", "peak after full MB", "peak after unchanged MB", "full s", "unchanged s")
    )
    workers = ours.get("workers_peak_rss_mb", 0.0)
    language = ours.get("language_worker_peak_rss_mb", 0.0)
    peak = ours["peak_rss_mb"] + workers
    print(
        f"\nTarget: peak memory < {MEMORY_LIMIT_MB:.0f} MB at {args.feeds:,} feeds, the polling process and its "
        f"{ours.get('workers', 0)} workers together: {ours['peak_rss_mb']:.0f} + {workers:.0f} = {peak:.0f} MB  "
        f"-> {verdict(peak < MEMORY_LIMIT_MB)}\n"
        f"  of which the language worker (lingua's models and the morphology): {language:.0f} MB; the rest, "
        f"polling process and parsers: {peak - language:.0f} MB"
    )
    return report_problems(problems)


def print_breakdown(res: Result) -> None:
    for phase in ("full", "unchanged"):
        wall, stages = res[phase], res[f"stages_{phase}"]
        print(
            f"\nStage breakdown, {phase} cycle, one more run with timers around the stages "
            f"(wall {wall:.2f} s, cpu {res[phase + '_cpu']:.2f} s):"
        )
        for key, label in STAGES:
            seconds = stages.get(key, 0.0)
            print(f"  {label:<48} {seconds:8.2f} s  {100 * seconds / wall:5.1f}% of wall")
        idle = wall - stages.get("_store", 0.0) - stages.get("sync", 0.0)
        label = "rest: writer idle (waiting for fetches), setup"
        print(f"  {label:<48} {idle:8.2f} s  {100 * idle / wall:5.1f}% of wall")


def report_problems(problems: list[str]) -> int:
    if problems:
        print("\nWARNING: incomplete runs, comparisons are not meaningful:")
        for p in problems:
            print("  " + p)
        return 1
    return 0


def _outcomes(summary: dict[str, Any]) -> str:
    keys = ("ok", "updated", "not_modified", "unchanged", "error")
    return ", ".join(f"{k} {summary[k]}" for k in keys if summary.get(k))


def _reader_version() -> str:
    try:
        from importlib.metadata import version

        return version("reader")
    except Exception:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--feeds", type=int, default=None, help="number of feeds (default 500; 5000 with --memory)"
    )
    p.add_argument("--items", type=int, default=None, help="items per feed (default 50; 10 with --memory)")
    p.add_argument("--memory", action="store_true", help="peak-memory mode: 5,000 feeds x 10 items")
    p.add_argument("--repeat", type=int, default=1, help="runs of each contender; timings are medians")
    p.add_argument("--reader-workers", type=int, default=20, help="reader's update_feeds(workers=...)")
    p.add_argument(
        "--per-host",
        type=int,
        default=0,
        help="our per-host limit (default: max_concurrency, since every bench feed is on one host)",
    )
    p.add_argument("--skip-reader", action="store_true")
    p.add_argument("--gzip", action="store_true", help="serve gzip to clients that accept it")
    p.add_argument("--profile", action="store_true", help="add a stage breakdown of our full cycle")
    p.add_argument(
        "--cprofile",
        type=int,
        default=0,
        metavar="N",
        help="with --profile: also print the top N functions of a cProfiled cycle",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per contender run")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (feeds, profiles)")
    # Internal: one contender in a child interpreter.
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--classify", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lanes", type=int, default=20, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args)
        return 0

    args.feeds = args.feeds or (5000 if args.memory else 500)
    args.items = args.items or (10 if args.memory else 50)
    if args.cprofile:
        args.profile = True
    from _feeds import generate

    with Bench(args) as b:
        progress(f"generating {args.feeds} feeds x {args.items} items in {b.data}")
        generate(b.data, args.feeds, args.items)
        b.start_server()
        progress(f"feed server (pid {b.server.pid if b.server else '?'}) at {b.base}")
        return memory(args, b) if args.memory else throughput(args, b)


if __name__ == "__main__":
    sys.exit(main())
