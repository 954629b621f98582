"""`search QUERY`: full-text search over every stored item."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, time, timedelta

import typer
from rich.markup import escape as rich_escape

from monitor.cli.app import EXIT_USAGE, JsonOpt, app, db_app, err, fail, out, print_json, state

_MARK_RE = re.compile(r"<mark>(.*?)</mark>", re.DOTALL)


def parse_when(value: str, option: str, *, end_of_day: bool = False) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise). A bare date given to --until means the end of
    that day, so --since D --until D is the day D."""
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            start = datetime.combine(d, time(0), tzinfo=UTC)
            return start + timedelta(days=1) if end_of_day else start
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: not a date (YYYY-MM-DD) or ISO date-time")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def terminal_text(fragment: str) -> str:
    """A highlighted HTML fragment as rich markup: matches bold, everything else literal."""
    parts: list[str] = []
    pos = 0
    for m in _MARK_RE.finditer(fragment):
        parts.append(rich_escape(html.unescape(fragment[pos : m.start()])))
        parts.append("[bold yellow]" + rich_escape(html.unescape(m.group(1))) + "[/bold yellow]")
        pos = m.end()
    parts.append(rich_escape(html.unescape(fragment[pos:])))
    return "".join(parts)


@app.command("search")
def search_command(
    ctx: typer.Context,
    query: str = typer.Argument(
        ..., metavar="QUERY", help='Words (all must occur), "a phrase", -excluded, a OR b, prefix*.'
    ),
    category: str | None = typer.Option(
        None, "--category", metavar="ID", help="Only items in this category."
    ),
    country: str | None = typer.Option(
        None, "--country", metavar="CC", help="Only items about this country."
    ),
    feed: str | None = typer.Option(None, "--feed", metavar="ID", help="Only items from this feed."),
    lang: str | None = typer.Option(None, "--lang", metavar="LL", help="Only items in this language."),
    since: str | None = typer.Option(None, "--since", metavar="DATE", help="Published on or after DATE."),
    until: str | None = typer.Option(None, "--until", metavar="DATE", help="Published on or before DATE."),
    incident: int | None = typer.Option(
        None, "--incident", metavar="ID", help="Only reports of this incident."
    ),
    verdict: str | None = typer.Option(
        None,
        "--verdict",
        metavar="KIND",
        help="confirm, reject or add (the analysts' verdict in force, on --category if given), any, none.",
    ),
    limit: int = typer.Option(20, "--limit", min=1, max=500, help="At most this many results."),
    as_json: bool = JsonOpt,
) -> None:
    """Search every stored item; best matches first, with the matching words highlighted."""
    from monitor.search import SearchError, SearchFilters, search

    filters = SearchFilters(
        category=category,
        country=country,
        feed=feed,
        language=lang,
        since=parse_when(since, "--since") if since else None,
        until=parse_when(until, "--until", end_of_day=True) if until else None,
        incident=incident,
        verdict=verdict,
    )
    engine = state(ctx).engine()
    try:
        results = search(engine, query, filters=filters, limit=limit)
    except SearchError as exc:
        if as_json:
            print_json({"error": str(exc), **(exc.to_json() if hasattr(exc, "to_json") else {})})
        err.print(f"[red]error:[/red] {rich_escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        print_json(results.to_json())
        return
    if not results.hits:
        out.print("no items found")
        return
    for h in results.hits:
        out.print(
            f"[bold]#{h.item_id}[/bold] {h.published:%Y-%m-%d} {rich_escape(h.feed)} "
            f"{rich_escape(h.language or '')}  {terminal_text(h.title_html)}"
        )
        if h.snippet_html:
            out.print("    " + terminal_text(h.snippet_html))
        if h.url:
            out.print("    " + rich_escape(h.url), style="dim")
    if results.more:
        out.print(f"(more than {len(results.hits)} results: use --limit or narrow the query)", style="dim")


@db_app.command("reindex")
def db_reindex(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Rebuild the search index from the stored items (after an upgrade that changes how text is indexed)."""
    from monitor.search import rebuild_index
    from monitor.store.engine import write_scope

    st = state(ctx)
    engine = st.engine()
    with write_scope(engine) as s:
        n = rebuild_index(s)
    if as_json:
        print_json({"database": st.db_url_safe, "indexed": n})
    else:
        out.print(f"{st.db_url_safe}: search index rebuilt for {n} items")
