"""The demo, step by step: the same functions the service runs, on a fresh database and a copy of the config.

Each step reports what it did; a step that is not available in this build (or fails) is reported and the rest
carries on, so the demo always ends with a summary saying where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from sqlmodel import col, func, select

from monitor.config.load import packaged_dir
from monitor.demo.server import DemoServer, sample_feeds

FEED_META = {
    "steppe-rights-en": ("Steppe Rights Monitor (demo)", "en"),
    "vesti-stepi-ru": ("Вести степи (демо)", "ru"),
    "qazaq-habar-kk": ("Қазақ хабар (демо)", "kk"),
    "central-asia-wire-en": ("Central Asia Wire (demo)", "en"),
}


@dataclass
class Step:
    name: str
    ok: bool
    detail: str


@dataclass
class DemoResult:
    out: Path
    db_url: str
    config_dir: Path
    steps: list[Step] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)
    items: int = 0
    matched: int = 0
    incidents: int = 0
    digest_files: list[Path] = field(default_factory=list)
    site_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def print_summary(self, console: Console | None = None) -> None:
        c = console or Console(highlight=False, soft_wrap=True)
        c.print("[bold]civic-space monitor demo[/bold]")
        for s in self.steps:
            mark = "[green]✓[/green]" if s.ok else "[yellow]![/yellow]"
            c.print(f" {mark} {s.name}: {s.detail}")
        if self.categories:
            c.print("\n[bold]items by category[/bold]")
            for cat, n in sorted(self.categories.items(), key=lambda kv: (-kv[1], kv[0])):
                c.print(f"   {cat:<24} {n}")
        c.print("\n[bold]where to look[/bold]")
        for p in self.digest_files:
            c.print(f"   digest:   {p}")
        if self.site_dir is not None:
            c.print(f"   site:     {self.site_dir / 'index.html'}")
        c.print(f"   database: {self.db_url}")
        c.print(f"   config:   {self.config_dir}")
        c.print(
            "\nTry next:\n"
            f"   monitor --db {self.db_url} explain --item 1\n"
            f"   monitor --db {self.db_url} export --matched\n"
            "   monitor demo --serve   (the same, then the site on http://127.0.0.1:8080/)"
        )


def _write_config(config_dir: Path, srv: DemoServer) -> None:
    if config_dir.exists():
        shutil.rmtree(config_dir)
    shutil.copytree(packaged_dir("config"), config_dir)
    feeds = []
    for path in sample_feeds():
        fid = path.stem
        title, lang = FEED_META.get(fid, (fid, "en"))
        feeds.append(
            {"id": fid, "url": srv.url(path.name), "title": title, "language": lang, "country": "KZ"}
        )
    header = (
        "# Demo feeds: bundled samples served on loopback by `monitor demo` (invented outlets and events).\n"
    )
    (config_dir / "feeds.yaml").write_text(
        header + yaml.safe_dump({"feeds": feeds}, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    settings_file = config_dir / "settings.yaml"
    settings: dict[str, Any] = yaml.safe_load(settings_file.read_text(encoding="utf-8")) or {}
    # Loopback is refused by default (SSRF guard); this demo config, and only it, fetches from loopback.
    settings.setdefault("http", {})["allow_private_networks"] = True
    settings.setdefault("database", {})["url"] = None
    settings_file.write_text(
        "# Demo settings: a copy of the packaged ones that allows loopback feeds.\n"
        + yaml.safe_dump(settings, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )


def run_demo(out: Path, progress: Callable[[str], None] = lambda _m: None) -> DemoResult:
    from monitor.config.load import load_config
    from monitor.ingest.poll import poll_once
    from monitor.service import stages
    from monitor.store import ensure_schema, make_engine
    from monitor.store.engine import session_scope
    from monitor.store.models import Incident, Item

    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    db_file = out / "demo.db"
    for suffix in ("", "-wal", "-shm"):  # a fresh database each run, so the demo shows a first poll
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    for stale in ("site", "digest"):  # pages of an earlier run would point at incidents that are gone
        shutil.rmtree(out / stale, ignore_errors=True)
    result = DemoResult(out=out, db_url=f"sqlite:///{db_file}", config_dir=out / "config")

    with DemoServer() as srv:
        _write_config(result.config_dir, srv)
        progress(f"sample feeds on {srv.url('')}; config in {result.config_dir}")
        progress("loading rules (the first run builds the word-form cache, later runs are quick)")
        config = load_config(result.config_dir)
        engine = make_engine(result.db_url)
        try:
            ensure_schema(engine)
            progress("polling")
            report = asyncio.run(poll_once(engine, config, config.rules, ignore_schedule=True))
            counts = report.counts()
            failed = [f"{r.feed}: {r.error}" for r in report.failed]
            result.steps.append(
                Step(
                    "poll",
                    not failed,
                    f"{counts['feeds']} feeds, {counts['new_items']} new items"
                    + (f"; failed: {'; '.join(failed)}" if failed else ""),
                )
            )
            with session_scope(engine) as s:
                items = list(s.exec(select(Item)).all())
            result.items = len(items)
            for it in items:
                result.matched += bool(it.categories)
                for cat in it.categories:
                    result.categories[cat] = result.categories.get(cat, 0) + 1
            result.steps.append(
                Step("classify", True, f"{result.matched} of {result.items} items matched a category")
            )

            progress("grouping into incidents")
            try:
                # The poll grouped the items as it stored them; count what came of it.
                with session_scope(engine) as s:
                    result.incidents = s.exec(select(func.count()).select_from(Incident)).one()
                    multi = s.exec(
                        select(func.count()).select_from(Incident).where(col(Incident.item_count) > 1)
                    ).one()
                result.steps.append(
                    Step(
                        "incidents", True, f"{result.incidents} incidents ({multi} reported by several feeds)"
                    )
                )
            except Exception as exc:
                result.steps.append(Step("incidents", False, f"failed: {type(exc).__name__}: {exc}"))

            progress("writing the daily digest")
            digest_dir = out / "digest"
            try:
                outcome = stages.deliver_digest(engine, config, "daily", dry_run_out=digest_dir)
                run = outcome.run
                files = [p for p in (run.eml_path, run.html_path) if p] if run else []
                result.digest_files = [Path(p) for p in files]
                result.steps.append(
                    Step("digest", True, f"`daily` written (dry run, nothing sent): {outcome.detail}")
                )
            except Exception as exc:
                result.steps.append(Step("digest", False, f"failed: {type(exc).__name__}: {exc}"))

            progress("building the site")
            site_dir = out / "site"
            try:
                stages.build_site(engine, config, site_dir)
                result.site_dir = site_dir
                pages = sum(1 for p in site_dir.rglob("*") if p.is_file())
                result.steps.append(Step("site", True, f"{pages} files in {site_dir}"))
            except Exception as exc:
                result.steps.append(Step("site", False, f"failed: {type(exc).__name__}: {exc}"))
        finally:
            engine.dispose()
    return result


def serve_site(directory: Path, port: int = 0) -> None:
    """Serve `directory` on 127.0.0.1 until Ctrl-C (for `monitor demo --serve`)."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
    with ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        print(
            f"serving {directory} on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C to stop)", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()


__all__ = ["DemoResult", "Step", "run_demo", "serve_site"]
