"""The soak's feed server: 2,000 feeds of news that changes every period, civic events reported by triplets of
outlets, one long trial, and 5% of feeds failing in nine ways (see bench/soak.py for the whole design)."""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import socket
import threading
import time
from collections import Counter
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
