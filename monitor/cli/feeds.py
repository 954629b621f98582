"""`feeds list|add|remove|import|export`."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy import func
from sqlmodel import col, select

from monitor.cli.app import (
    EXIT_OK,
    EXIT_PROBLEMS,
    JsonOpt,
    err,
    fail,
    feeds_app,
    out,
    print_json,
    state,
)
from monitor.errors import ConfigError
from monitor.ingest import policy
from monitor.ingest.opml import feed_id_for, read_opml, write_opml
from monitor.store.engine import session_scope
from monitor.store.feeds import add_feed, remove_feed, sync_feeds
from monitor.store.models import Feed, ItemSource
from monitor.store.types import utcnow


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    secs = (now - when).total_seconds()
    future = secs < 0
    secs = abs(secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            text = f"{int(secs // size)}{unit}"
            break
    else:
        text = f"{int(secs)}s"
    return f"in {text}" if future else f"{text} ago"


@feeds_app.command("list")
def list_feeds(
    ctx: typer.Context,
    as_json: bool = JsonOpt,
    all_: bool = typer.Option(False, "--all", help="Include removed feeds."),
) -> None:
    """Each feed's health: last success, last error, next check, items."""
    st = state(ctx)
    engine = st.engine()
    now = utcnow()
    p = st.settings.polling
    with session_scope(engine) as s:
        sync_feeds(s, st.feeds)
    with session_scope(engine) as s:
        counts = dict(
            s.exec(
                select(ItemSource.feed_id, func.count(col(ItemSource.id))).group_by(col(ItemSource.feed_id))
            ).all()
        )
        rows = []
        for f in s.exec(select(Feed).order_by(col(Feed.id))):
            if f.removed and not all_:
                continue
            h = policy.feed_health(f, now, p)
            rows.append((f, h, counts.get(f.id, 0)))
    if as_json:
        print_json(
            [
                {
                    "id": f.id,
                    "url": f.url,
                    "title": f.title,
                    "language": f.language,
                    "country": f.country,
                    "tags": f.tags,
                    "enabled": f.enabled,
                    "origin": f.origin,
                    "health": h,
                    "last_success": f.last_success_at,
                    "last_fetch": f.last_fetch_at,
                    "last_error": f.last_error,
                    "last_error_at": f.last_error_at,
                    "error_kind": f.error_kind,
                    "error_count": f.error_count,
                    "muted": f.muted,
                    "mute_reason": f.mute_reason,
                    "next_check": f.next_check_at,
                    "items": n,
                }
                for f, h, n in rows
            ]
        )
        return
    table = Table(title=f"{len(rows)} feeds", show_lines=False)
    for name in ("id", "health", "last success", "last error", "next check", "items"):
        table.add_column(name, overflow="fold")
    colour = {
        "ok": "green",
        "failing": "red",
        "muted": "magenta",
        "rate_limited": "yellow",
        "silent": "yellow",
    }
    for f, h, n in rows:
        error = ""
        if f.last_error and (f.error_count or f.muted or f.error_kind):
            error = f"{f.error_kind or ''} {_ago(f.last_error_at, now)}: {f.last_error}"
        c = colour.get(h, "white")
        table.add_row(
            f.id,
            f"[{c}]{h}[/{c}]",
            _ago(f.last_success_at, now),
            error,
            _ago(f.next_check_at, now) if f.enabled and not f.muted else "-",
            str(n),
        )
    out.print(table)


@feeds_app.command("add")
def add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Feed address (RSS or Atom)."),
    id: str | None = typer.Option(None, "--id", help="Stable id (default: made from the address)."),
    title: str | None = typer.Option(None, "--title"),
    language: str | None = typer.Option(None, "--language"),
    country: str | None = typer.Option(None, "--country"),
    tag: list[str] = typer.Option([], "--tag", help="Repeatable."),
    as_json: bool = JsonOpt,
) -> None:
    """Add a feed to the database (config/feeds.yaml is left as it is)."""
    from monitor.config.models import FeedConfig

    st = state(ctx)
    engine = st.engine()
    with session_scope(engine) as s:
        taken = {f for f in s.exec(select(Feed.id)).all()}
        fid = id or feed_id_for(url, set(taken))
        try:
            fc = FeedConfig(id=fid, url=url, title=title, language=language, country=country, tags=tag)
            add_feed(
                s,
                id=fc.id,
                url=fc.url,
                title=fc.title,
                language=fc.language,
                country=fc.country,
                tags=fc.tags,
            )
        except ValueError as exc:
            fail(str(exc).splitlines()[-1] if "validation error" in str(exc) else str(exc))
    if as_json:
        print_json({"added": fid, "url": url})
    else:
        out.print(f"added feed {fid}: {url}")


@feeds_app.command("remove")
def remove(ctx: typer.Context, feed_id: str, as_json: bool = JsonOpt) -> None:
    """Stop polling a feed. Its items stay; `feeds add` with the same id brings it back."""
    st = state(ctx)
    try:
        with session_scope(st.engine()) as s:
            row = remove_feed(s, feed_id)
            from_config = row.origin == "config"
    except KeyError:
        fail(f"no feed with id {feed_id!r}")
    if as_json:
        print_json({"removed": feed_id})
    else:
        out.print(f"removed feed {feed_id} (its items are kept)")
        if from_config:
            err.print(
                f"note: {feed_id} is listed in {st.config_dir / 'feeds.yaml'}; delete it there too to keep the config tidy"
            )


@feeds_app.command("import")
def import_opml(ctx: typer.Context, file: Path, as_json: bool = JsonOpt) -> None:
    """Add every feed of an OPML file; addresses already present are skipped."""
    st = state(ctx)
    try:
        found = read_opml(file)
    except ConfigError as exc:
        fail(exc.describe())
    added, skipped, invalid = [], [], []
    from monitor.config.models import FeedConfig

    with session_scope(st.engine()) as s:
        existing = {f.url for f in s.exec(select(Feed)).all() if not f.removed} | {
            f.config_url for f in s.exec(select(Feed)).all() if not f.removed
        }
        taken = set(s.exec(select(Feed.id)).all())
        for item in found:
            if item.url in existing:
                skipped.append(item.url)
                continue
            fid = feed_id_for(item.url, taken)
            lang = (item.language or "").split("-")[0].lower() or None
            try:
                fc = FeedConfig(id=fid, url=item.url, title=item.title, language=lang, tags=list(item.tags))
            except ValueError:
                invalid.append(item.url)
                continue
            add_feed(s, id=fc.id, url=fc.url, title=fc.title, language=fc.language, tags=fc.tags)
            existing.add(item.url)
            added.append(fid)
    if as_json:
        print_json({"added": added, "skipped": skipped, "invalid": invalid})
    else:
        out.print(f"{file}: {len(added)} added, {len(skipped)} already present, {len(invalid)} invalid")
        for u in invalid:
            err.print(f"[yellow]skipped invalid address:[/yellow] {u}")
    raise typer.Exit(EXIT_PROBLEMS if invalid else EXIT_OK)


@feeds_app.command("export")
def export_opml(
    ctx: typer.Context,
    out_file: Path | None = typer.Option(None, "--out", help="Write here instead of stdout."),
) -> None:
    """Print every feed as OPML 2.0."""
    st = state(ctx)
    engine = st.engine()
    with session_scope(engine) as s:
        sync_feeds(s, st.feeds)
    with session_scope(engine) as s:
        feeds = [
            (f.url, f.title, f.site_url, f.tags)
            for f in s.exec(select(Feed).order_by(col(Feed.id)))
            if not f.removed
        ]
    text = write_opml(feeds, "civic-space monitor feeds")
    if out_file:
        out_file.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
