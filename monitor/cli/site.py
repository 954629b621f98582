"""`site build`: the static web site of incidents (pages, Atom feed, JSON/CSV exports)."""

from __future__ import annotations

from pathlib import Path

import typer

from monitor.cli.app import JsonOpt, app, out, print_json, state

site_app = typer.Typer(help="The static web site of incidents.", no_args_is_help=True)
app.add_typer(site_app, name="site")


@site_app.command("build")
def build(
    ctx: typer.Context,
    out_dir: Path = typer.Option(..., "--out", metavar="DIR", help="Folder to write the site into."),
    templates: Path | None = typer.Option(
        None, "--templates", metavar="DIR", help="Your templates, overriding the packaged ones by name."
    ),
    base_url: str | None = typer.Option(
        None, "--base-url", metavar="URL", help="Where the site will be served (absolute links in feed.atom)."
    ),
    recent_days: int = typer.Option(30, "--recent-days", help="Days of incidents on the index page."),
    as_json: bool = JsonOpt,
) -> None:
    """Write index.html, one page per incident and category, feed.atom and JSON/CSV exports into DIR."""
    report = state(ctx).api().site(out_dir, templates=templates, base_url=base_url, recent_days=recent_days)
    if as_json:
        print_json(report.to_json())
    else:
        out.print(
            f"wrote {report.pages} pages for {report.incidents} incidents and {report.items} items "
            + (f"({report.unchanged} pages unchanged, left as they were) " if report.unchanged else "")
            + f"into {out_dir}/ (index.html, feed.atom, incidents.json/csv, items.json/csv)"
            + (f"; {report.digests} digests listed" if report.digests else "")
        )
