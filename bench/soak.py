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
import asyncio
import gzip
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
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 10  # entries per feed document
FAIL_KINDS = ("500", "404", "429", "hang", "drop", "malformed", "html", "badgzip", "empty")
HANG_SECONDS = 20.0  # longer than the fetch timeout the soak config sets (10 s)

# The content. Feeds come in triplets (3m, 3m+1, 3m+2): three outlets that cover the same events. At each item
# index j, one triplet in EVENT_EVERY carries a civic-space event (`civic_slot`); its three feeds each report it in
# their own words (EVENTS: five kinds of event, three wordings each, chosen by i % 3), naming the same person, city
# and facts. Every other entry is everyday news (EVERYDAY, never classified). And one long-running story: the feeds
# with i % BIG_STORY_EVERY == BIG_STORY_AT report, at every j, a day of the trial of BIG_STORY_PERSON (BIG_STORY,
# three wordings), which wins over a civic event of their triplet: one incident that grows all through the soak.
#
# What makes each event its own incident: a person nobody else in the run is named after (`event_person`), and
# details that differ from event to event, so two reports of different events in the same wording never look
# like near-copies to the grouping engine (it joins those whatever names they carry). Each detail is the event
# number e (`Feeds.event_number`) modulo its own period: kind 5, city 8, weekday 7, number 9 and topic 13
# (pairwise coprime), first name 47 and surname 400. Two events of one kind are a multiple of 5 apart, so among
# the first 2,520 events (30 item indices of 2,000 feeds) they differ in the person and in at least two of city,
# weekday, number and topic: checked over 3,300 events, two reports of different events in the same wording
# share at most 0.71 of their words, where the engine's near-copy threshold (TEXT_COPY) is 0.8.
EVENT_EVERY = 8  # about one story in eight is a civic-space event
BIG_STORY_EVERY, BIG_STORY_AT = 100, 7  # feeds 7, 107, 207, ... carry the big story
BIG_STORY_PERSON, BIG_STORY_CITY = "Marat Ospanov", "Almaty"
BIG_STORY_KEY = (-1, -1)  # the big story among the events (m, j) in the report
# Each kind of event: three wordings (headline, text), one per outlet of the triplet.
EVENTS: tuple[tuple[tuple[str, str], ...], ...] = (
    (  # detention at a rally
        (
            "Police detain activist {person} at rally in {city}",
            "{person} and {n} other protesters were detained on {day} at a peaceful rally against {topic}.",
        ),
        (
            "Rally against {topic} broken up in {city}",
            "Riot police dispersed the protest on {day} and detained {n} people, among them its organiser, {person}.",
        ),
        (
            "{person} jailed for {n} days after {city} protest",
            "A court gave the activist {person} {n} days of administrative detention for leading {day}'s rally "
            "against {topic}.",
        ),
    ),
    (  # a fine against an editor and a newspaper
        (
            "Court fines editor {person} in libel suit brought by official",
            "On {day} a court in {city} ordered {person} to pay {n} million tenge in damages over an article about "
            "{topic}.",
        ),
        (
            "Newspaper editor {person} ordered to pay damages for defamation",
            "On {day} a court in {city} sided with the deputy akim over a report on {topic} and set the damages at "
            "{n} million tenge.",
        ),
        (
            "{city} weekly and its editor lose libel case to akimat",
            "The paper and its editor, {person}, were fined {n} million tenge on {day} over a story on {topic} that "
            "the court called defamatory.",
        ),
    ),
    (  # a prosecutor seeking the liquidation of an NGO
        (
            "Prosecutor asks court to liquidate rights group led by {person}",
            "The {city} association, known for its reports on {topic}, was audited {n} times this year, {person} "
            "said on {day}.",
        ),
        (
            "{city} prosecutors seek to dissolve NGO headed by {person}",
            "{person} said on {day} that the public association, which has documented {topic} for {n} years, will "
            "contest the lawsuit.",
        ),
        (
            "Rights organisation of {person} faces liquidation in {city}",
            "Prosecutors filed the suit on {day}, citing breaches of its charter; {person} calls it revenge for "
            "{n} years of work on {topic}.",
        ),
    ),
    (  # a blogger charged with "spreading false information"
        (
            "Police charge blogger {person} with spreading false information",
            "{person}, a blogger from {city}, was charged on {day} over a video about {topic} and faces up to {n} "
            "years in prison.",
        ),
        (
            "{city} blogger faces criminal case over video on {topic}",
            "Investigators accused {person} on {day} of spreading knowingly false information; the charge carries "
            "up to {n} years.",
        ),
        (
            "Criminal case against blogger {person} over posts about {topic}",
            "The blogger, who has {n} thousand followers in {city}, was charged on {day} with spreading false "
            "information and denies it.",
        ),
    ),
    (  # a journalist's accreditation revoked
        (
            "Akimat strips journalist {person} of accreditation",
            "{person} lost the press accreditation to cover the {city} city council for {n} months on {day}, after "
            "reporting on {topic}.",
        ),
        (
            "{city} authorities revoke accreditation of reporter {person}",
            "Officials withdrew the accreditation of {person} on {day}, a week after a report on {topic}; the "
            "reporter is barred from briefings for {n} months.",
        ),
        (
            "Press accreditation of journalist {person} withdrawn in {city}",
            "The correspondent was stripped of accreditation on {day} for {n} months over coverage of {topic}, "
            "colleagues said.",
        ),
    ),
)
TOPICS = (  # no word in two of them
    "utility tariffs",
    "a new landfill",
    "water shortages",
    "overcrowded clinics",
    "land sales",
    "broken roads",
    "a coal plant",
    "housing queues",
    "bus fare rises",
    "air pollution",
    "pension delays",
    "felled park trees",
    "unpaid wages",
)
NUMBERS = ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The big story, by outlet: {d} the day of the trial, {witness} who testified, {n} hours.
BIG_STORY = (
    (
        "Trial of activist {person}, day {d}: court hears {witness}",
        "{person}, accused of inciting social discord in posts about corruption, denies the charges; {witness} "
        "testified for {n} hours.",
    ),
    (
        "{surname} trial: {witness} testifies on day {d}",
        "The court in {city} continued the trial of the activist {person}, charged with inciting social discord; "
        "the hearing lasted {n} hours.",
    ),
    (
        "Day {d} in court for activist {person}",
        "The court heard {witness} as the criminal case against the activist {person} went into day {d}; he is "
        "accused of inciting social discord.",
    ),
)
WITNESSES = (
    "a police officer who led the search",
    "a linguistic expert",
    "a former colleague",
    "the investigator",
    "two neighbours",
    "a university lecturer",
    "a bank clerk",
    "the akimat's press officer",
)
# Everyday news: no rule classifies it (each entry's text is its own: "Story j of feed i").
EVERYDAY = (
    ("{city} opens new public library", "The library holds {n} thousand books and a reading room."),
    ("Wheat harvest in {city} region ahead of last year", "Farmers report {n} percent more grain."),
    ("Football: {city} club wins regional cup", "The final ended {n}-1 after extra time."),
    ("New bus routes connect {city} suburbs", "Twelve routes will run every {n} minutes."),
    ("Weather: warm week ahead in {city}", "Temperatures will rise to {n} degrees."),
    (
        "{city} theatre opens its season with a new comedy",
        "Tickets for all {n} performances sold out in a day.",
    ),
    ("Apple growers in {city} region expect a big crop", "Orchards cover {n} hectares more than last year."),
    ("{city} zoo welcomes two snow leopard cubs", "Visitors will be able to see them in {n} days."),
)
# Names: a first name and a surname of two syllables and an ending. The first name and the first five letters of
# the surname (what the grouping engine compares, spelling-blind) differ between any two of these lists' entries.
FIRST = (
    "Aigerim", "Daniyar", "Saule", "Yerlan", "Zhanna", "Nurlan", "Dina", "Askar", "Gulnara", "Timur", "Aidos",
    "Aliya", "Arman", "Asel", "Ainur", "Bakhyt", "Berik", "Gaukhar", "Dauren", "Dariga", "Yerzhan", "Kairat",
    "Kuanysh", "Laura", "Madina", "Meruyert", "Nazira", "Olzhas", "Raushan", "Rustem", "Samal", "Serik",
    "Sholpan", "Talgat", "Togzhan", "Yerbol", "Zarina", "Zhandos", "Almas", "Bolat", "Erkin", "Galym", "Inkar",
    "Kanat", "Lazzat", "Mukhtar", "Nurgul",
)  # fmt: skip
SURNAME_HEADS = (
    "Ba", "Be", "Bo", "Da", "Du", "Ka", "Ke", "Ku", "Ma", "Mu", "Na", "Nu", "Sa", "Se", "Su", "Ta", "Te", "To",
    "Tu", "Zha",
)  # fmt: skip
SURNAME_BODIES = (
    "legen", "rsen", "ken", "bek", "dyk", "mukh", "rat", "lim", "man", "nar", "tan", "gal", "bol", "mir", "set",
    "ker", "rim", "dos", "zhan", "mat",
)  # fmt: skip
SURNAME_TAILS = ("ov", "uly", "bayev", "ov", "in")  # -ov twice: the commonest
SURNAMES = len(SURNAME_HEADS) * len(SURNAME_BODIES)
CITIES = ("Almaty", "Astana", "Shymkent", "Karaganda", "Aktobe", "Pavlodar", "Oral", "Semey")


def civic_slot(m: int, j: int) -> bool:
    """Whether feed triplet m carries a civic-space event at item index j: at each j the triplets of one residue
    modulo EVENT_EVERY (a different one at each j), so every triplet has one every EVENT_EVERY entries."""
    return (m + 3 * j) % EVENT_EVERY == 0


def big_story_feed(i: int) -> bool:
    return i % BIG_STORY_EVERY == BIG_STORY_AT


def event_person(e: int) -> str:
    """The person event e is about: the same for no two events below len(FIRST) * SURNAMES (18,800)."""
    s = (e * 7) % SURNAMES  # 7 is prime to SURNAMES: neighbouring events get unrelated surnames
    head, body = SURNAME_HEADS[s % len(SURNAME_HEADS)], SURNAME_BODIES[s // len(SURNAME_HEADS)]
    return f"{FIRST[e % len(FIRST)]} {head}{body}{SURNAME_TAILS[e % len(SURNAME_TAILS)]}"


def parse_seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip()
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


# --- the feed server (its own process) ----------------------------------------------------------------------


class Feeds:
    def __init__(self, count: int, period: float, failing: float, civic: bool = True) -> None:
        self.count, self.period = count, period
        # Without civic stories nothing is classified or grouped: isolates ingestion from incident grouping.
        self.civic = civic
        # Events at one item index, numbered in a row (see event_number).
        triplets = (count + 2) // 3
        self.events_per_index = (triplets + EVENT_EVERY - 1) // EVENT_EVERY
        self.start = time.monotonic()
        self.base = datetime.now(UTC).replace(microsecond=0)
        self.frozen_at: int | None = None
        self.frozen_t = 0.0  # when (s since start) the feeds stopped changing
        step = max(1, round(1 / failing)) if failing > 0 else 0
        self.failing = (
            {i: FAIL_KINDS[n % len(FAIL_KINDS)] for n, i in enumerate(range(0, count, step))} if step else {}
        )
        self.lock = threading.Lock()
        self.served: dict[int, set[int]] = {}
        self.hits: dict[int, list[float]] = {}  # healthy feed -> when the service fetched it (s since start)
        self.statuses: Counter[str] = Counter()

    def version(self) -> int:
        if self.frozen_at is not None:
            return self.frozen_at
        # Start with full documents: a feed that grew from one entry to ten over the first cycles would make
        # every cycle cost more than the last, by construction, and hide a real trend.
        return WINDOW + int((time.monotonic() - self.start) / self.period)

    def event_number(self, m: int, j: int) -> int:
        """Event of triplet m at item index j (civic_slot(m, j)), numbered 0, 1, 2... by j, then by m."""
        return j * self.events_per_index + m // EVENT_EVERY

    def entry(self, i: int, j: int) -> tuple[str, str]:
        """Headline and text of feed i's entry j (without the suffixes that make every entry unique)."""
        if self.civic and big_story_feed(i):
            title, text = BIG_STORY[(i // BIG_STORY_EVERY) % len(BIG_STORY)]
            facts = {
                "person": BIG_STORY_PERSON,
                "surname": BIG_STORY_PERSON.rsplit(" ", 1)[-1],
                "city": BIG_STORY_CITY,
                "d": j + 1,
                "witness": WITNESSES[j % len(WITNESSES)],
                "n": 2 + j % 5,
            }
            return title.format(**facts), text.format(**facts)
        if self.civic and civic_slot(i // 3, j):
            e = self.event_number(i // 3, j)
            title, text = EVENTS[e % len(EVENTS)][i % 3]
            facts = {
                "person": event_person(e),
                "city": CITIES[e % len(CITIES)],
                "day": DAYS[e % len(DAYS)],
                "topic": TOPICS[e % len(TOPICS)],
                "n": NUMBERS[e % len(NUMBERS)],
            }
            return title.format(**facts), text.format(**facts)
        title, text = EVERYDAY[(i + j) % len(EVERYDAY)]
        city = CITIES[(i * 7 + j) % len(CITIES)]
        return title.format(city=city, n=j), text.format(n=j + i % 9)

    def document(self, i: int, k: int) -> bytes:
        parts = [
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
            f"<title>Soak feed {i}</title><link>https://soak{i % 50}.example.org/</link><language>en</language>",
        ]
        for j in range(max(0, k - WINDOW + 1), k + 1):
            title, text = self.entry(i, j)
            when = self.base - timedelta(days=1) + timedelta(seconds=j * self.period)
            parts.append(
                f"<item><title>{escape(title)} (#{i}.{j})</title>"
                f"<link>https://soak{i % 50}.example.org/{i}/{j}</link>"
                f'<guid isPermaLink="false">soak-{i}-{j}</guid><pubDate>{format_datetime(when)}</pubDate>'
                f"<description>{escape(text)} Story {j} of feed {i}.</description></item>"
            )
        parts.append("</channel></rss>")
        return "".join(parts).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        feeds = self.server.feeds
        path = self.path.split("?", 1)[0]
        if path == "/__stats":
            with feeds.lock:
                data = {
                    "served": {str(i): sorted(v) for i, v in feeds.served.items()},
                    "failing": {str(i): kind for i, kind in feeds.failing.items()},
                    "statuses": dict(feeds.statuses),
                    "version": feeds.version(),
                    "hits": {str(i): v for i, v in feeds.hits.items()},
                    "frozen_t": feeds.frozen_t,
                }
            self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})
            return
        if path == "/__freeze":
            feeds.frozen_at = feeds.version()
            feeds.frozen_t = time.monotonic() - feeds.start
            self._send(200, str(feeds.frozen_at).encode())
            return
        try:
            i = int(path.strip("/").removeprefix("f").removesuffix(".xml"))
        except ValueError:
            self._send(404, b"no such feed")
            return
        baseline = self.headers.get("X-Soak-Baseline") == "1"
        kind = feeds.failing.get(i)
        with feeds.lock:
            feeds.statuses[kind or "ok"] += 0 if baseline else 1
        if kind == "500":
            self._send(500, b"internal error")
        elif kind == "404":
            self._send(404, b"not found")
        elif kind == "429":
            self._send(429, b"slow down", {"Retry-After": "120"})
        elif kind == "hang":
            time.sleep(HANG_SECONDS)
            self.close_connection = True
        elif kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "malformed":
            # Cut inside the channel title: nothing before the cut is an entry a lenient parser could salvage.
            body = feeds.document(i, feeds.version()).split(b"</title>", 1)[0]
            self._send(200, body, {"Content-Type": "application/rss+xml"})
        elif kind == "html":
            self._send(
                200,
                b"<!doctype html><html><body><p>Our feed moved.</p></body></html>",
                {"Content-Type": "text/html"},
            )
        elif kind == "badgzip":
            self._send(
                200,
                b"\x1f\x8b\x08\x00garbage" * 10,
                {"Content-Encoding": "gzip", "Content-Type": "application/xml"},
            )
        elif kind == "empty":
            self._send(200, b"", {"Content-Type": "application/rss+xml"})
        else:
            k = feeds.version()
            etag = f'"{i}-{k}"'
            if not baseline:
                with feeds.lock:
                    feeds.hits.setdefault(i, []).append(round(time.monotonic() - feeds.start, 3))
            if self.headers.get("If-None-Match") == etag:
                self._send(304, b"", {"ETag": etag})
                return
            body = feeds.document(i, k)
            headers = {"Content-Type": "application/rss+xml; charset=utf-8", "ETag": etag}
            if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                body = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
            self._send(200, body, headers)
            if not baseline:
                with feeds.lock:
                    feeds.served.setdefault(i, set()).add(k)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    feeds: Feeds

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on the "hang" and "drop" feeds are part of the test


def serve(args: argparse.Namespace) -> None:
    srv = _Server(("127.0.0.1", args.port), _Handler)
    srv.feeds = Feeds(args.feeds, parse_seconds(args.period), args.failing, civic=not args.no_civic)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown, daemon=True).start())
    print(f"http://127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever(poll_interval=0.2)


# --- measuring the service --------------------------------------------------------------------------------


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, RSS bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return cpu, rss


def baseline_round(base: str, count: int, failing: set[int]) -> tuple[float, float]:
    """CPU and wall seconds for one bare round of GETs of every healthy feed: httpx, 20 at a time."""
    import httpx

    async def run() -> None:
        sem = asyncio.Semaphore(20)
        async with httpx.AsyncClient(headers={"X-Soak-Baseline": "1"}, timeout=10) as client:

            async def one(i: int) -> None:
                async with sem:
                    r = await client.get(f"{base}/f{i}.xml")
                    r.raise_for_status()

            await asyncio.gather(*(one(i) for i in range(count) if i not in failing))

    cpu0, t0 = time.process_time(), time.perf_counter()
    asyncio.run(run())
    return time.process_time() - cpu0, time.perf_counter() - t0


def http_get(url: str, timeout: float = 10) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def write_config(folder: Path, base: str, count: int, period: float, window: str | None = None) -> Path:
    import yaml

    from monitor.config.load import packaged_dir

    cfg = folder / "config"
    shutil.copytree(packaged_dir("config"), cfg)
    interval = f"{int(period)}s"
    feeds = [{"id": f"soak-{i:04d}", "url": f"{base}/f{i}.xml", "interval": interval} for i in range(count)]
    (cfg / "feeds.yaml").write_text(yaml.safe_dump({"feeds": feeds}), encoding="utf-8")
    settings = yaml.safe_load((cfg / "settings.yaml").read_text(encoding="utf-8"))
    settings["database"]["url"] = None
    settings["http"].update(
        {"allow_private_networks": True, "per_host": 20, "max_concurrency": 20, "total_timeout": "10s"}
    )
    settings["polling"].update({"min_interval": interval, "default_interval": interval})
    if window:
        settings.setdefault("grouping", {})["window"] = window
    (cfg / "settings.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    (cfg / "digests.yaml").unlink(missing_ok=True)  # no SMTP here: the soak is about ingestion
    return cfg


def db_facts(db_url: str) -> tuple[list[str | None], dict[str, datetime | None]]:
    from sqlmodel import Session, select

    from monitor.store import make_engine
    from monitor.store.models import Feed, Item

    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            urls = list(s.exec(select(Item.url)).all())
            fetched = {f.id: f.last_success_at for f in s.exec(select(Feed)).all()}
        return urls, fetched
    finally:
        engine.dispose()


def last_success(db_url: str) -> dict[str, datetime | None]:
    from sqlmodel import Session, select

    from monitor.store import make_engine
    from monitor.store.models import Feed

    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            return {f.id: f.last_success_at for f in s.exec(select(Feed)).all()}
    finally:
        engine.dispose()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def served_entries(served: dict[str, list[int]]) -> Iterator[tuple[int, int]]:
    """(feed, item index) of every entry in the versions the server sent."""
    for i, versions in served.items():
        seen: set[int] = set()
        for k in versions:
            seen.update(range(max(0, k - WINDOW + 1), k + 1))
        for j in seen:
            yield int(i), j


def expected_entries(served: dict[str, list[int]]) -> Iterator[str]:
    for i, j in served_entries(served):
        yield f"https://soak{i % 50}.example.org/{i}/{j}"


LATE = 10.0  # a fetch this much past its due time is late (the service's tick is 2 s)


def fetch_schedule(stats: dict[str, Any], healthy: list[int], period: float) -> dict[str, Any]:
    """How well the service kept each healthy feed's cadence, from when the server saw it fetch each one (up to
    the freeze): a feed first fetched at t0 is due at t0 + n * period, whatever the server's own clock. A fetch
    due less than LATE before the freeze is not counted as due: it may be on its way."""
    frozen_t = float(stats["frozen_t"])
    hits = {i: [t for t in stats["hits"].get(str(i), []) if t < frozen_t] for i in healthy}
    made = [len(v) for v in hits.values()]
    due = [max(int((frozen_t - LATE - v[0]) // period) + 1, 1) if v else 1 for v in hits.values()]
    pairs = [(a, b) for v in hits.values() for a, b in itertools.pairwise(v)]
    gaps = sorted(b - a for a, b in pairs)
    late = [b for a, b in pairs if b - a > period + LATE]
    return {
        "rounds": min(made, default=0),
        "expected": min(due, default=0),
        "due": sum(due),
        "behind": sum(max(0, d - m) for d, m in zip(due, made, strict=True)),
        "median": statistics.median(gaps) if gaps else 0.0,
        "p99": gaps[int(0.99 * (len(gaps) - 1))] if gaps else 0.0,
        "max": gaps[-1] if gaps else 0.0,
        "late": len(late),
        "last_late": max(late, default=0.0),
    }


def story_of(i: int, j: int) -> tuple[int, int] | None:
    """What feed i's entry j reports: (m, j) for an event of triplet m, BIG_STORY_KEY, or None (everyday news)."""
    if big_story_feed(i):
        return BIG_STORY_KEY
    return (i // 3, j) if civic_slot(i // 3, j) else None


def grouping_facts(db_url: str) -> tuple[list[int], str, list[tuple[int, int, int]]]:
    """Sizes of the incidents (ascending), the largest one's title, and (incident, feed, item index) of every
    report in an incident."""
    from sqlmodel import Session, col, select

    from monitor.store import make_engine
    from monitor.store.models import Incident, Item

    engine = make_engine(db_url)
    try:
        with Session(engine) as s:
            sizes = sorted(s.exec(select(Incident.item_count).where(col(Incident.item_count) > 0)).all())
            largest = s.exec(
                select(Incident.title).order_by(col(Incident.item_count).desc(), col(Incident.id)).limit(1)
            ).first()
            rows = s.exec(select(Item.incident_id, Item.url).where(col(Item.incident_id).is_not(None))).all()
    finally:
        engine.dispose()
    members = []
    for inc, url in rows:
        if inc is not None and url is not None:  # https://soak{i % 50}.example.org/{i}/{j}
            i, j = url.rsplit("/", 2)[1:]
            members.append((inc, int(i), int(j)))
    return sizes, largest or "", members


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
