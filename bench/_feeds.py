"""Synthetic feeds for the ingestion benchmark, and the stdlib HTTP server that serves them.

Generation is deterministic (seeded): N feeds of M items, alternating RSS 2.0 / Atom 1.0 and English / Russian,
items of about 1-2 KB (HTML body of a few paragraphs, unique GUIDs and links, dates in the recent past); a
quarter of the items use civic-space vocabulary (arrests, courts, media law...), the rest everyday news. Every
tenth Russian RSS feed is encoded in Windows-1251 (declared in the XML and in Content-Type), as some do in this
field.

The server (`python bench/_feeds.py serve DIR`) loads every file of DIR into memory, answers GET with an ETag and a
Last-Modified, and 304 to a matching If-None-Match (or If-Modified-Since when no ETag is sent). It prints its base
URL on the first line of stdout and serves until SIGTERM / SIGINT. Standard library only, so it starts fast and
shares nothing with the clients being measured.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import json
import random
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from xml.sax.saxutils import escape, quoteattr

_EN_TEXT = (
    "the police detained an activist in Almaty on Tuesday after a peaceful protest near the city akimat "
    "journalists said the court fined the editor of an independent newspaper for spreading false information "
    "human rights defenders called on the government to release political prisoners and to end the pressure "
    "on civil society organisations the ministry of information proposed amendments to the law on mass media "
    "that would require foreign correspondents to obtain accreditation while bloggers face criminal charges "
    "for insulting officials several opposition supporters were sentenced to administrative arrest of ten days "
    "and lawyers were denied access to their clients international observers expressed concern about the "
    "closure of a nongovernmental organisation that monitored elections in the region as well as the blocking "
    "of messaging apps during rallies held in Astana Shymkent and other cities of Kazakhstan and Kyrgyzstan"
)

_RU_TEXT = (
    "полиция задержала активиста в Алматы во вторник после мирного митинга у здания акимата журналисты "
    "сообщили что суд оштрафовал редактора независимой газеты за распространение ложной информации "
    "правозащитники призвали правительство освободить политических заключённых и прекратить давление на "
    "гражданское общество министерство информации предложило поправки в закон о средствах массовой "
    "информации которые обяжут иностранных корреспондентов получать аккредитацию а блогерам грозит уголовное "
    "преследование за оскорбление чиновников несколько сторонников оппозиции приговорены к административному "
    "аресту на десять суток адвокатов не допустили к подзащитным международные наблюдатели выразили "
    "обеспокоенность закрытием неправительственной организации которая наблюдала за выборами в регионе а также "
    "блокировкой мессенджеров во время акций протеста в Астане Шымкенте и других городах Казахстана и Киргизии"
)
EN_WORDS = tuple(_EN_TEXT.split())
RU_WORDS = tuple(_RU_TEXT.split())

# Most news is not about civic space: the other items are drawn from everyday vocabulary.
_EN_NEUTRAL = (
    "the national bank kept the base rate unchanged as inflation slowed in October while wheat exports grew "
    "and the new terminal at the airport opened for passengers the football club won its home match on Sunday "
    "weather forecasters expect snow in the northern regions and farmers prepared for the winter season "
    "the ministry of energy announced a tender for a wind farm near the lake and tourists visited the mountains "
    "a new railway line will connect the capital with the western oil fields before the end of next year"
)
_RU_NEUTRAL = (
    "национальный банк сохранил базовую ставку так как инфляция замедлилась в октябре а экспорт пшеницы вырос "
    "новый терминал аэропорта открылся для пассажиров футбольный клуб выиграл домашний матч в воскресенье "
    "синоптики ожидают снег в северных регионах и фермеры готовятся к зимнему сезону министерство энергетики "
    "объявило тендер на строительство ветровой электростанции у озера туристы посетили горы новая железная "
    "дорога соединит столицу с западными нефтяными месторождениями до конца следующего года"
)
NEUTRAL = {"en": tuple(_EN_NEUTRAL.split()), "ru": tuple(_RU_NEUTRAL.split())}
CIVIC = {"en": EN_WORDS, "ru": RU_WORDS}
CIVIC_SHARE = 0.25  # share of items about civic space (what the classifier will mostly match)


@dataclass(frozen=True)
class FeedFile:
    name: str  # file name under the served directory, also the URL path
    format: str  # "rss" | "atom"
    language: str  # "en" | "ru"
    encoding: str  # "utf-8" | "windows-1251"
    items: int


def _sentence(rng: random.Random, words: tuple[str, ...], lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    start = rng.randrange(len(words))
    picked = [words[(start + k * rng.randint(1, 3)) % len(words)] for k in range(n)]
    text = " ".join(picked)
    return text[0].upper() + text[1:]


def _body_html(rng: random.Random, words: tuple[str, ...], target_chars: int, link: str) -> str:
    paras: list[str] = []
    size = 0
    while size < target_chars:
        para = ". ".join(_sentence(rng, words, 8, 18) for _ in range(rng.randint(2, 4))) + "."
        if rng.random() < 0.3:
            para += f' <a href="{link}#more">Read more &amp; comments</a>'
        paras.append(f"<p>{para}</p>")
        size += len(para) + 7
    if rng.random() < 0.2:
        paras.insert(1, f'<p><img src="{link}/photo.jpg" alt="photo" width="640" height="480"/></p>')
    return "\n".join(paras)


def _feed_document(index: int, spec: FeedFile, rng: random.Random, now: datetime) -> bytes:
    # Cyrillic is two bytes a character in UTF-8: fewer characters give the same 1-2 KB per item.
    lo, hi = (700, 1400) if spec.language == "en" else (380, 720)
    site = f"https://news{index % 97}.example.org"
    title = (
        f"Feed {index} - {'Civic space news' if spec.language == 'en' else 'Новости гражданского общества'}"
    )
    items: list[str] = []
    for j in range(spec.items):
        link = f"{site}/{spec.language}/{index}/{j}-{rng.randrange(10**6)}?utm_source=rss&utm_medium=feed"
        guid = f"bench-{index}-{j}-{hashlib.blake2b(link.encode(), digest_size=6).hexdigest()}"
        when = now - timedelta(minutes=37 * j + index % 60 + 5)
        words = CIVIC[spec.language] if rng.random() < CIVIC_SHARE else NEUTRAL[spec.language]
        head = _sentence(rng, words, 8, 14)
        body = _body_html(rng, words, rng.randint(lo, hi), link.split("?", 1)[0])
        author = "Staff reporter" if spec.language == "en" else "Корреспондент"
        if spec.format == "rss":
            items.append(
                "<item>"
                f"<title>{escape(head)}</title><link>{escape(link)}</link>"
                f'<guid isPermaLink="false">{escape(guid)}</guid>'
                f"<pubDate>{email.utils.format_datetime(when)}</pubDate>"
                f"<dc:creator>{escape(author)}</dc:creator><category>news</category>"
                f"<description>{escape(body)}</description>"
                "</item>"
            )
        else:
            stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            items.append(
                "<entry>"
                f'<title type="text">{escape(head)}</title><link rel="alternate" href={quoteattr(link)}/>'
                f"<id>tag:news{index % 97}.example.org,2026:{escape(guid)}</id>"
                f"<published>{stamp}</published><updated>{stamp}</updated>"
                f"<author><name>{escape(author)}</name></author>"
                f'<content type="html">{escape(body)}</content>'
                "</entry>"
            )
    decl = f'<?xml version="1.0" encoding="{spec.encoding}"?>\n'
    if spec.format == "rss":
        doc = (
            f'{decl}<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
            f"<title>{escape(title)}</title><link>{site}/</link><language>{spec.language}</language>"
            f"<description>Synthetic benchmark feed</description>{''.join(items)}</channel></rss>"
        )
    else:
        doc = (
            f'{decl}<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{spec.language}">'
            f"<title>{escape(title)}</title><id>{site}/feed/{index}</id>"
            f'<link rel="alternate" href="{site}/"/><updated>{now.strftime("%Y-%m-%dT%H:%M:%SZ")}</updated>'
            f"{''.join(items)}</feed>"
        )
    return doc.encode(spec.encoding)


def generate(directory: Path, feeds: int, items: int, seed: int = 20261120) -> list[FeedFile]:
    """Write `feeds` documents of `items` entries into `directory`; returns what was written, in order.

    A `manifest.json` beside them gives each file's content type for the server.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    specs: list[FeedFile] = []
    manifest: dict[str, str] = {}
    for i in range(feeds):
        fmt = "rss" if i % 2 == 0 else "atom"
        lang = "en" if (i // 2) % 2 == 0 else "ru"
        enc = "windows-1251" if (fmt == "rss" and lang == "ru" and i % 40 == 2) else "utf-8"
        spec = FeedFile(name=f"f{i:05d}.{fmt}", format=fmt, language=lang, encoding=enc, items=items)
        (directory / spec.name).write_bytes(_feed_document(i, spec, rng, now))
        kind = "application/rss+xml" if fmt == "rss" else "application/atom+xml"
        manifest[spec.name] = f"{kind}; charset={enc}"
        specs.append(spec)
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return specs


# --- the server -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Doc:
    body: bytes
    gz: bytes | None
    content_type: str
    etag: str
    last_modified: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = (
        1024  # the default backlog of 5 drops SYNs under 20+ concurrent connects (1 s stalls)
    )
    docs: dict[str, _Doc]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real feed hosts do
    timeout = 60
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        doc = self.server.docs.get(self.path.split("?", 1)[0].lstrip("/"))
        if doc is None:
            self._reply(404, b"not found\n", {"Content-Type": "text/plain"})
            return
        validators = {"ETag": doc.etag, "Last-Modified": doc.last_modified}
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        if (inm is not None and doc.etag in [t.strip() for t in inm.split(",")]) or (
            inm is None and ims is not None and ims.strip() == doc.last_modified
        ):
            self._reply(304, b"", validators)
            return
        headers = {**validators, "Content-Type": doc.content_type}
        body = doc.body
        if doc.gz is not None and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = doc.gz
            headers["Content-Encoding"] = "gzip"
        self._reply(200, body, headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


def load_docs(directory: Path, *, use_gzip: bool = False) -> dict[str, _Doc]:
    manifest: dict[str, str] = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    stamp = email.utils.formatdate(1_790_000_000, usegmt=True)
    docs = {}
    for name, content_type in manifest.items():
        body = (directory / name).read_bytes()
        docs[name] = _Doc(
            body=body,
            gz=gzip.compress(body, 6) if use_gzip else None,
            content_type=content_type,
            etag='"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"',
            last_modified=stamp,
        )
    return docs


def serve(directory: Path, *, port: int = 0, use_gzip: bool = False) -> None:
    httpd = _Server(("127.0.0.1", port), _Handler)
    httpd.docs = load_docs(directory, use_gzip=use_gzip)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    print(f"http://127.0.0.1:{httpd.server_address[1]}/", flush=True)
    stop.wait()
    httpd.shutdown()
    httpd.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate or serve synthetic feeds for bench/ingest.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("dir", type=Path)
    gen.add_argument("--feeds", type=int, default=500)
    gen.add_argument("--items", type=int, default=50)
    srv = sub.add_parser("serve")
    srv.add_argument("dir", type=Path)
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--gzip", action="store_true", help="send gzip to clients that accept it")
    args = parser.parse_args(argv)
    if args.cmd == "generate":
        specs = generate(args.dir, args.feeds, args.items)
        print(f"{len(specs)} feeds written to {args.dir}", file=sys.stderr)
    else:
        serve(args.dir, port=args.port, use_gzip=args.gzip)


if __name__ == "__main__":
    main()
