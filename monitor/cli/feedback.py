"""`labels export` and `rules suggest`: the analysts' verdicts turned back into rule work."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from monitor.cli.app import EXIT_OK, JsonOpt, app, err, fail, out, print_json, state

labels_app = typer.Typer(help="Analysts' verdicts as labelled data.", no_args_is_help=True)
rules_app = typer.Typer(help="Suggestions for rule authors, from the verdicts.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")
app.add_typer(rules_app, name="rules")


def _date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: not a date (YYYY-MM-DD or an ISO 8601 time): {value!r}")
    return d if d.tzinfo else d.replace(tzinfo=UTC)


@labels_app.command("export")
def labels_export(
    ctx: typer.Context,
    out_path: Path = typer.Option(..., "--out", help="The JSONL file to write (the `eval` format)."),
    since: str | None = typer.Option(
        None, "--since", help="Only items with a verdict given since (YYYY-MM-DD)."
    ),
) -> None:
    """Write every item with a verdict as a labelled `eval` record: its categories as the analysts left them,
    so `monitor eval FILE` scores the shipped rules against their judgement."""
    from sqlmodel import Session

    from monitor.rules.feedback import labelled_items

    after = _date(since, "--since")
    n = 0
    tmp = out_path.with_name(out_path.name + ".tmp")
    with Session(state(ctx).engine()) as s, tmp.open("w", encoding="utf-8") as f:
        for record in labelled_items(s, since=after):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out_path)  # a half-written file never stands where eval would read it
    err.print(f"{n} labelled items written to {out_path}")
    raise typer.Exit(EXIT_OK)


@rules_app.command("suggest")
def rules_suggest(
    ctx: typer.Context,
    category: str = typer.Argument(..., help="A category id from categories.yaml."),
    limit: int = typer.Option(25, "--limit", min=1, help="Candidate terms to list."),
    as_json: bool = JsonOpt,
) -> None:
    """From the verdicts on CATEGORY: the items the rules missed, the matches analysts rejected with the terms
    responsible, and candidate terms (frequent in the missed items, rare in the rest). It proposes; it never
    edits config."""
    from sqlmodel import Session

    from monitor.rules.feedback import suggest

    st = state(ctx)
    known = st.config.rules.categories
    if category not in known:
        fail(f"unknown category {category!r}; categories.yaml defines: {', '.join(sorted(known))}")
    with Session(st.engine()) as s:
        result = suggest(s, category, limit=limit)
    if as_json:
        print_json(result.to_json())
        raise typer.Exit(EXIT_OK)
    out.print(
        f"[bold]{category}[/bold]: {len(result.missed)} missed, {len(result.rejected)} rejected matches"
    )
    if result.missed:
        t = Table("item", "missed (category added by)", title="Missed by the rules")
        for j in result.missed:
            t.add_row(str(j.id), f"{j.title}  [dim]({j.author})[/dim]")
        out.print(t)
    if result.rejected:
        t = Table("item", "rejected match", "terms that fired", title="Rejected matches")
        for j in result.rejected:
            t.add_row(str(j.id), j.title, ", ".join(j.terms))
        out.print(t)
    if result.candidates:
        t = Table(
            "term", "in missed", "elsewhere", "score", title="Candidate terms (to add, after reading them)"
        )
        for c in result.candidates:
            t.add_row(c.term, str(c.missed), str(c.elsewhere), f"{c.score:.2f}")
        out.print(t)
    if result.rejected_terms:
        terms = ", ".join(f"{t} ({n})" for t, n in result.rejected_terms.items())
        out.print(f"Terms behind rejected matches (exclusion candidates): {terms}")
    raise typer.Exit(EXIT_OK)
