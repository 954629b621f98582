"""Soak test: `monitor run` for a long stretch against a loopback server of feeds that change every cycle.

    python bench/soak.py                              # 2,000 feeds, 60 s cycles, 10 minutes, SQLite
    python bench/soak.py --duration 3m --period 30s   # shorter
    python bench/soak.py --db postgresql://...        # on PostgreSQL
    python bench/soak.py --window 5m                  # incidents close within the run: memory levels off

The feed server runs in its own process (`python bench/soak.py serve ...`). Feed i at cycle k lists its ten latest
entries (k-9..k), so every cycle adds one new entry per feed; 5% of the feeds fail in assorted ways (HTTP 500, 404,
429 with Retry-After, a hang past the fetch timeout, a dropped connection, malformed XML, an HTML page, a broken
gzip body, an empty body). The server records which version of each feed it served.

The news reads like news: about one story in eight is a civic-space event, the rest everyday news (libraries,
harvests, football, buses, weather...) that no rule classifies. Feeds come in triplets of outlets (3m, 3m+1,
3m+2); when a triplet has an event at an entry, its three feeds report the same event (a detention at a rally, a
fine against an editor, a prosecutor seeking an NGO's liquidation, a blogger charged with "spreading false
information", a journalist's accreditation revoked), each in its own words, naming the same person, city and
facts, and no two events name the same person: each event should make one incident of three reports. Besides, the
feeds 7, 107, 207... follow one long trial, a report at every entry: one incident that grows all through the soak.
`--no-civic` serves everyday news only (nothing classified or grouped).

At the end the server stops changing the feeds, the service gets one more interval to fetch the last versions,
then it is stopped with SIGTERM and the report compares:

- entries served (the union of every version the server actually sent) with items stored: none lost, none twice;
- complete cycles: versions that every healthy feed served to the service;
- memory (RSS) of the service after the first cycle and at the end, CPU seconds per cycle;
- the baseline: the CPU one bare round of fetching all feeds costs (httpx, no parsing, no database), measured in
  the same run against the same server, so the service's CPU per cycle can be read against it;
- grouping, read from the database: incidents, the reports in them, the largest and the median incident, beside
  the civic events served (about one incident each, plus one for the long trial), with the events whose reports
  went to more than one incident and the incidents holding more than one event.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

# Run as a script: bench/ is on sys.path, so its private modules import by name.
from _soak_feeds import BIG_STORY_KEY, FAIL_KINDS, WINDOW, parse_seconds, serve
from _soak_report import (
    LATE,
    baseline_round,
    db_facts,
    expected_entries,
    fetch_schedule,
    grouping_facts,
    http_get,
    last_success,
    metric,
    proc_stats,
    served_entries,
    story_of,
    write_config,
)


def soak(args: argparse.Namespace) -> int:
    duration, period = parse_seconds(args.duration), parse_seconds(args.period)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="monitor-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    db_url = args.db or f"sqlite:///{work / 'soak.db'}"
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "serve",
            "--feeds",
            str(args.feeds),
            "--period",
            str(period),
            "--failing",
            str(args.failing),
            *(["--no-civic"] if args.no_civic else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    base = server.stdout.readline().strip()
    service: subprocess.Popen[bytes] | None = None
    try:
        stats0 = json.loads(http_get(base + "/__stats"))
        failing = {int(i) for i in stats0["failing"]}
        print(f"feed server {base}: {args.feeds} feeds, {len(failing)} failing ({', '.join(FAIL_KINDS)})")
        base_cpu, base_wall = baseline_round(base, args.feeds, failing)
        print(
            f"baseline: one bare round of {args.feeds - len(failing)} GETs: {base_cpu:.2f} s CPU, {base_wall:.2f} s wall"
        )

        cfg = write_config(work, base, args.feeds, period, args.window)
        log_path = work / "service.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        with socket.socket() as probe:  # a free port for the service's HTTP server
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "--config",
                str(cfg),
                "--db",
                db_url,
                "run",
                "--port",
                str(port),
                "--tick",
                "2s",
                "--watch",
                "0",
                "--log-format",
                "json",
                "--log-level",
                args.log_level,
                "--report-every",
                "1h",
                "--no-site",  # the site has its own benchmark (bench/digest_site.py); this one is ingestion
            ],
            stderr=log_path.open("wb"),
            stdout=subprocess.DEVNULL,
            cwd=work,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                http_get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                if time.monotonic() > deadline or service.poll() is not None:
                    raise SystemExit(f"the service did not start; see {log_path}") from None
                time.sleep(0.5)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        started = time.monotonic()
        cpu_start, rss_start = proc_stats(service.pid)
        samples: list[tuple[float, float, int, float]] = []  # (t, cpu, rss, polls)
        first_cycle: tuple[float, int] | None = None
        print(f"service pid {service.pid}, http {port}, database {db_url}; running {duration:.0f} s")
        while time.monotonic() - started < duration:
            time.sleep(5)
            if service.poll() is not None:
                raise SystemExit(f"the service exited with {service.returncode}; see {log_path}")
            cpu, rss = proc_stats(service.pid)
            polls = metric(http_get(metrics_url).decode(), "monitor_feed_polls_total")
            t = time.monotonic() - started
            samples.append((t, cpu, rss, polls))
            if first_cycle is None and polls >= args.feeds - len(failing):
                first_cycle = (cpu, rss)
            if len(samples) % 12 == 0:
                print(
                    f"  {t:6.0f} s  polls {polls:8.0f}  rss {rss / 2**20:6.1f} MiB  cpu {cpu - cpu_start:7.1f} s"
                )

        frozen = int(http_get(base + "/__freeze"))
        t_freeze = datetime.now(UTC)
        healthy = [f"soak-{i:04d}" for i in range(args.feeds) if i not in failing]
        print(f"froze the feeds at version {frozen}; waiting for every healthy feed to be fetched once more")
        deadline = time.monotonic() + 3 * period + 60
        while time.monotonic() < deadline:
            done = last_success(db_url)
            behind = [f for f in healthy if (done.get(f) or t_freeze) <= t_freeze]
            if not behind:
                break
            time.sleep(2)
        cpu_end, rss_end = proc_stats(service.pid)
        service.send_signal(signal.SIGTERM)
        code = service.wait(120)
        stats = json.loads(http_get(base + "/__stats"))
        if args.keep:  # what the server saw, for a closer look (which feeds were fetched when)
            (work / "served.json").write_text(json.dumps(stats), encoding="utf-8")
        urls, _ = db_facts(db_url)
        sizes, largest, members = grouping_facts(db_url)
        # Served with civic content: reports of each story (an event (m, j), or the big story).
        civic: Counter[tuple[int, int]] = Counter()
        if not args.no_civic:
            civic.update(filter(None, (story_of(i, j) for i, j in served_entries(stats["served"]))))
        big_reports = civic.pop(BIG_STORY_KEY, 0)
        incidents_of: dict[tuple[int, int], set[int]] = {}  # story -> the incidents its reports are in
        stories_in: dict[int, set[tuple[int, int] | None]] = {}  # incident -> the stories it holds
        for inc, i, j in members:
            story = story_of(i, j) if not args.no_civic else None
            stories_in.setdefault(inc, set()).add(story)
            if story is not None:
                incidents_of.setdefault(story, set()).add(inc)
        everyday_grouped = sum(1 for _, i, j in members if args.no_civic or story_of(i, j) is None)
        served = set(expected_entries(stats["served"]))
        stored = [u for u in urls if u is not None]
        lost = served - set(stored)
        dup = len(stored) - len(set(stored))
        extra = set(stored) - served
        versions = [set(stats["served"].get(str(i), [])) for i in range(args.feeds) if i not in failing]
        complete = sum(1 for k in range(WINDOW, frozen + 1) if all(k in v for v in versions))
        schedule = fetch_schedule(stats, [i for i in range(args.feeds) if i not in failing], period)
        warm_cpu, warm_rss = first_cycle or (cpu_start, rss_start)
        warm_polls = next((p for _, c, _, p in samples if c >= warm_cpu), 0.0)
        total_polls = samples[-1][3] if samples else 0.0
        steady_rounds = max(1e-9, (total_polls - warm_polls) / args.feeds)
        minute = [x for n, x in enumerate(samples) if n % 12 == 11]
        cpu_trend = [b[1] - a[1] for a, b in itertools.pairwise([(0.0, cpu_start, 0, 0.0), *minute])]
        print()
        print(
            f"soak: {args.feeds} feeds ({len(failing)} failing), {period:.0f} s cycles, "
            f"{duration / 60:.1f} min, {db_url.split(':', 1)[0]}"
        )
        print(
            f"  cycles completed            {schedule['rounds']} rounds in which every healthy feed was fetched "
            f"({schedule['expected']} due by its own cadence); {schedule['behind']} of {schedule['due']} fetches "
            f"due were not made"
        )
        print(
            f"  time between two fetches    median {schedule['median']:.1f} s, p99 {schedule['p99']:.1f} s, "
            f"max {schedule['max']:.1f} s (interval {period:.0f} s); {schedule['late']} gaps over {period + LATE:.0f} s, "
            f"the last {schedule['last_late']:.0f} s into the run"
        )
        print(
            f"  versions seen by all feeds  {complete} of {frozen - WINDOW + 1} (a feed fetched just after its "
            "change skips one version: its entries come with the next)"
        )
        print(
            f"  feed polls                  {total_polls:.0f} ({total_polls / args.feeds:.1f} rounds of all feeds)"
        )
        print(f"  items served / stored       {len(served)} / {len(stored)}")
        print(f"  lost / duplicated / extra   {len(lost)} / {dup} / {len(extra)}")
        print(
            f"  incidents (database)        {len(sizes)}, holding {sum(sizes)} reports; largest "
            f"{max(sizes, default=0)} ({largest[:50]!r}), median {statistics.median(sizes) if sizes else 0:g}"
        )
        print(
            f"  civic stories served        {len(civic)} events ({sum(civic.values())} reports) + the big story "
            f"({big_reports} reports): expect ~{len(civic) + (1 if big_reports else 0)} incidents"
        )
        print(
            f"  grouping vs stories         {sum(1 for v in incidents_of.values() if len(v) > 1)} stories split "
            f"over incidents, {sum(1 for v in stories_in.values() if len(v) > 1)} incidents mixing stories, "
            f"{everyday_grouped} everyday reports in incidents"
        )
        print(
            f"  memory (RSS)                start {rss_start / 2**20:.1f} MiB, after the first cycle "
            f"{warm_rss / 2**20:.1f} MiB, end {rss_end / 2**20:.1f} MiB"
        )
        print("  RSS by minute (MiB)         " + " ".join(f"{m[2] / 2**20:.0f}" for m in minute))
        print(
            f"  CPU per cycle (service)     first {warm_cpu - cpu_start:.1f} s; then "
            f"{(cpu_end - warm_cpu) / steady_rounds:.1f} s per round of {args.feeds} polls; total {cpu_end - cpu_start:.1f} s"
        )
        print("  CPU by minute (s)           " + " ".join(f"{c:.0f}" for c in cpu_trend))
        print(f"  baseline (bare fetch round) {base_cpu:.2f} s CPU, {base_wall:.2f} s wall")
        print(f"  server answered             {stats['statuses']}")
        print(f"  service exit code           {code}; log {log_path}")
        ok = not lost and not dup and not extra and code == 0
        print("  verdict                     " + ("OK" if ok else "PROBLEMS"))
        return 0 if ok else 1
    finally:
        if service is not None and service.poll() is None:
            service.kill()
        server.terminate()
        server.wait(10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode")
    srv = sub.add_parser("serve", help="(internal) the feed server process")
    for p in (parser, srv):
        p.add_argument("--feeds", type=int, default=2000)
        p.add_argument("--period", default="60s", help="how often every feed changes (and is polled)")
        p.add_argument("--failing", type=float, default=0.05, help="share of feeds that always fail")
        p.add_argument(
            "--no-civic", action="store_true", help="everyday news only (nothing to classify or group)"
        )
    srv.add_argument("--port", type=int, default=0)
    parser.add_argument("--duration", default="10m")
    parser.add_argument("--log-level", default="warning", help="the service's (info: a line per poll tick)")
    parser.add_argument(
        "--window",
        default=None,
        help="grouping window (default: the packaged 72h); entries are one period apart, so e.g. 5m closes "
        "incidents five cycles after their last report, within the run",
    )
    parser.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in the work folder)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="work in DIR and keep it (database, log)")
    args = parser.parse_args(argv)
    if args.mode == "serve":
        serve(args)
        return 0
    return soak(args)


if __name__ == "__main__":
    raise SystemExit(main())
