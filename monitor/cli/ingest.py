"""`poll` and `export`."""

from __future__ import annotations

import sys
from datetime import datetime

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from monitor._types import FeedPoll
from monitor.cli.app import (
    EXIT_OK,
    EXIT_PROBLEMS,
    JsonOpt,
    app,
    err,
    fail,
    out,
    print_json,
    state,
)
from monitor.deliver.exports import write_items_csv, write_items_json
from monitor.store.engine import session_scope
from monitor.store.queries import iter_items


@app.command()
def poll(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Poll every enabled feed now, ignoring schedules."),
    feed: list[str] = typer.Option([], "--feed", help="Poll only this feed id (repeatable), even if muted."),
    as_json: bool = JsonOpt,
) -> None:
    """Run one polling cycle and print a summary. Exit 1 if any feed failed."""
    api = state(ctx).api()
    show_progress = not as_json and sys.stderr.isatty()
    progress = Progress(
        TextColumn("polling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
        disable=not show_progress,
    )
    task = progress.add_task("", total=None)

    def started(n: int) -> None:
        progress.update(task, total=n)

    def done(r: FeedPoll) -> None:
        progress.update(task, advance=1, description=r.feed)

    with progress:
        report = api.poll(all=all_, feeds=feed or None, on_start=started, on_feed=done)
    if feed:
        unknown = sorted(set(feed) - {r.feed for r in report.feeds})
        if unknown:
            fail(f"unknown or removed feed id: {', '.join(unknown)}")
    counts = report.counts()
    if as_json:
        print_json(report.to_json())
    else:
        table = Table(title="poll summary")
        for c in ("feed", "result", "new", "updated", "detail"):
            table.add_column(c, overflow="fold")
        for r in report.feeds:
            colour = "red" if r.outcome == "error" else "green" if r.outcome == "ok" else "cyan"
            detail = f"{r.error_kind}: {r.error}" if r.outcome == "error" else (r.warning or "")
            table.add_row(r.feed, f"[{colour}]{r.outcome}[/{colour}]", str(r.new), str(r.updated), detail)
        out.print(table)
        out.print(
            f"{counts['feeds']} feeds: {counts['ok']} ok, {counts['not_modified'] + counts['unchanged']} not modified, "
            f"{counts['error']} failed; {counts['new_items']} new items"
            + (f", {counts['linked_items']} already seen in other feeds" if counts["linked_items"] else "")
        )
        if not report.feeds:
            out.print("no feed was due; `monitor poll --all` polls every feed now")
    raise typer.Exit(EXIT_PROBLEMS if report.failed else EXIT_OK)


@app.command()
def export(
    ctx: typer.Context,
    format: str = typer.Option("json", "--format", help="json, csv or atom."),
    since: datetime | None = typer.Option(None, "--since", help="Only items fetched since (ISO date)."),
    limit: int | None = typer.Option(None, "--limit"),
    matched: bool = typer.Option(False, "--matched", help="Only items that matched a category."),
) -> None:
    """Print stored items as JSON (an array), CSV or Atom."""
    st = state(ctx)
    engine = st.engine()
    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    fmt = format.lower()
    if fmt not in ("json", "csv", "atom"):
        fail(f"unknown export format {format!r}: use json, csv or atom")
    with session_scope(engine) as s:
        rows = iter_items(s, since=since, limit=limit, matched_only=matched)
        if fmt == "json":
            write_items_json(rows, sys.stdout)
        elif fmt == "csv":
            write_items_csv(rows, sys.stdout)
        else:
            from monitor.deliver.atom import items_atom

            sys.stdout.write(items_atom([item for item, _ in rows]))
