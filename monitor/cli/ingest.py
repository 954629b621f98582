"""`poll` and `export`."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

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
from monitor.deliver.exports import (
    IncidentOptions,
    iter_incidents,
    write_incidents_csv,
    write_incidents_json,
    write_items_csv,
    write_items_json,
    write_xlsx,
)
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
    format: str = typer.Option(
        "json", "--format", help="json, csv, atom or xlsx (incidents and items sheets)."
    ),
    since: datetime | None = typer.Option(None, "--since", help="Only items fetched since (ISO date)."),
    limit: int | None = typer.Option(None, "--limit"),
    matched: bool = typer.Option(False, "--matched", help="Only items that matched a category."),
    incidents: bool = typer.Option(
        False, "--incidents", help="Incidents instead of items, one row each (README: Incident exports)."
    ),
    out_file: Path | None = typer.Option(None, "--out", metavar="FILE", help="Write here instead of stdout."),
    base_url: str | None = typer.Option(
        None, "--base-url", metavar="URL", help="Where the site is served: absolute incident links."
    ),
) -> None:
    """Print stored items (or, with --incidents, incidents) as JSON (an array), CSV or Atom; --format xlsx
    writes a spreadsheet of both to --out FILE."""
    st = state(ctx)
    engine = st.engine()
    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    fmt = format.lower()
    if fmt not in ("json", "csv", "atom", "xlsx"):
        fail(f"unknown export format {format!r}: use json, csv, atom or xlsx")
    if fmt == "xlsx" and out_file is None:
        fail("--format xlsx writes a binary file: name it with --out FILE.xlsx")
    if incidents and fmt == "atom":
        fail("incidents come as json, csv or xlsx; their Atom feed is feed.atom of `monitor site build`")
    # Only incident rows show category titles: item exports keep working with a rule file that does not load.
    titles = (
        {c: info.title for c, info in st.config.categories.items()} if incidents or fmt == "xlsx" else None
    )
    options = IncidentOptions(base_url=base_url, category_titles=titles)
    with (
        session_scope(engine) as s,
        (
            out_file.open("w", encoding="utf-8", newline="")
            if out_file and fmt != "xlsx"
            else nullcontext(sys.stdout)
        ) as fh,
    ):
        rows = iter_items(s, since=since, limit=limit, matched_only=matched)
        if fmt == "xlsx":
            assert out_file is not None
            write_xlsx(iter_incidents(s), rows, out_file, options)
        elif incidents and fmt == "json":
            write_incidents_json(iter_incidents(s), fh, options)
        elif incidents:
            write_incidents_csv(iter_incidents(s), fh, options)
        elif fmt == "json":
            write_items_json(rows, fh)
        elif fmt == "csv":
            write_items_csv(rows, fh)
        else:
            from monitor.deliver.atom import items_atom

            fh.write(items_atom([item for item, _ in rows]))
