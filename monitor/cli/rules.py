"""`explain`, `eval`, `reclassify`, and the rules part of `monitor check`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from monitor._types import Explanation
from monitor.cli.app import (
    EXIT_OK,
    EXIT_USAGE,
    CheckResult,
    JsonOpt,
    app,
    err,
    fail,
    fail_config,
    out,
    print_json,
    register_check,
    state,
)
from monitor.config.load import Config
from monitor.errors import ConfigError, NotFoundError


@register_check
def check_rules(config: Config) -> CheckResult:
    """Every example in categories.yaml and places.yaml gives the expected answer."""
    result = CheckResult("rules")
    clf = config.rules
    examples = clf.check_examples()
    result.failures += [r.describe() for r in examples if not r.ok]
    result.notes.append(
        f"{len(clf.categories)} categories, {len(clf.gazetteer.names)} countries, "
        f"{sum(r.ok for r in examples)}/{len(examples)} examples pass, version {clf.version}"
    )
    return result


# ---- explain ----------------------------------------------------------------------------------------------


def _highlighted(snippet: str, form: str) -> Text:
    text = Text(snippet)
    if form:
        text.highlight_words([form], style="bold black on yellow", case_sensitive=True)
    return text


def _print_explanation(title: str, result: Explanation) -> None:
    if title:
        out.print(Text(title, style="bold"))
    if not result.categories:
        out.print("no category matched")
    for m in result.matches:
        style = {"high": "red", "medium": "yellow"}.get(m.severity, "white")
        out.print(Text.assemble((f"{m.category}", f"bold {style}"), f"  {m.title} ({m.severity})"))
        out.print(Text("  rule: ", style="dim") + Text(m.rule))
        for h in m.hits:
            where = Text(f"    {h.field}[{h.start}:{h.end}] ", style="dim")
            out.print(where + Text(h.term, style="cyan") + Text(" -> ") + _highlighted(h.snippet, h.form))
    countries = ", ".join(result.countries) or "none"
    out.print(Text("countries: ", style="bold") + Text(countries))
    for p in result.places:
        out.print(Text(f"    {p.country} ", style="dim") + Text(f"{p.name} ({p.field}[{p.start}:{p.end}])"))


@app.command()
def explain(
    ctx: typer.Context,
    text: str | None = typer.Option(None, "--text", help="Classify this text."),
    title: str = typer.Option("", "--title", help="Headline to go with --text or --file."),
    file: Path | None = typer.Option(
        None, "--file", help="Classify the text in this file ('-' reads stdin)."
    ),
    item: int | None = typer.Option(None, "--item", help="Classify a stored item by id."),
    as_json: bool = JsonOpt,
) -> None:
    """Classify a text, a file or a stored item, and show which rules and words matched, and where."""
    st = state(ctx)
    given = [x is not None for x in (text, file, item)]
    if sum(given) != 1:
        fail("give exactly one of --text, --file or --item")
    api = st.api()
    if item is not None:
        try:
            result = api.explain(item=item)
        except NotFoundError as exc:
            fail(str(exc))
    else:
        if file is not None:
            try:
                text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                fail(f"{file}: {exc}")
        result = api.explain(text, title=title)
    if as_json:
        print_json(result.to_json())
        raise typer.Exit(EXIT_OK)
    _print_explanation(result.title, result)
    if item is not None:
        _print_source(result.source)
        inc = result.incident
        if inc:
            out.print(f"\n[bold]incident {inc['incident']['id']}[/bold]: {inc.get('text', '')}")
        else:
            out.print("\nnot part of an incident (it matched no category, or was not grouped yet)")
    raise typer.Exit(EXIT_OK)


def _print_source(source: dict[str, Any] | None) -> None:
    """Which text was classified and the evidence kept of the article page (untrusted text: no markup)."""
    if not source:
        return
    classified = source.get("classified")
    what = {"feed": "the feed's text", "article": "the article page's text", "teaser": "the feed's teaser"}
    out.print(f"\nclassified: {what.get(str(classified), classified)}", markup=False)
    lang = source.get("language") or {}
    if lang:
        rules = ", ".join(lang.get("rules") or [])
        out.print(
            f"language: {lang.get('language')} ({lang.get('source')}; detected {lang.get('detected')} "
            f"at {lang.get('confidence')}, declared {lang.get('declared')}; rules: {rules})",
            markup=False,
        )
    art = source.get("article")
    if not art:
        return
    out.print(f"article: {art['url']} [{art['state']}, {art['attempts']} attempt(s)]", markup=False)
    if art.get("reason"):
        retry = f"; next try {art['next_attempt_at']}" if art.get("next_attempt_at") else "; given up"
        out.print(f"  not read: {art['reason']}: {art.get('detail')}{retry}", markup=False)
    if art.get("fetched_at"):
        out.print(
            f"  fetched {art['fetched_at']} from {art.get('final_url')} (HTTP {art.get('http_status')}), "
            f"sha256 {art.get('sha256')}",
            markup=False,
        )
    if art.get("evidence"):
        kept = f", raw page archived ({art['archived_bytes']} bytes)" if art.get("archived_bytes") else ""
        out.print(
            f"  evidence kept: extracted text of {len(art.get('text') or '')} characters{kept}", markup=False
        )


# ---- eval ---------------------------------------------------------------------------------------------------


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    path: Path = typer.Argument(..., metavar="FILE", help="Labelled JSONL: id, title, text, categories."),
    as_json: bool = JsonOpt,
) -> None:
    """Per-category precision, recall and F1 of the rules on a labelled file, and the items they got wrong."""
    from monitor.rules import evaluate

    st = state(ctx)
    clf = st.config.rules
    try:
        report = evaluate(clf, path)
    except ConfigError as exc:
        fail_config(exc)
    if as_json:
        print_json(report.to_json())
        raise typer.Exit(EXIT_OK)
    table = Table(title=f"{path} ({report.items} items)")
    for col in ("category", "tp", "fp", "fn", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for cid, s in sorted(report.categories.items()):
        table.add_row(
            cid, str(s.tp), str(s.fp), str(s.fn), f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}"
        )
    m = report.micro
    table.add_row(
        "micro",
        str(m.tp),
        str(m.fp),
        str(m.fn),
        f"{m.precision:.3f}",
        f"{m.recall:.3f}",
        f"{m.f1:.3f}",
        style="bold",
    )
    out.print(table)
    out.print(f"macro F1 {report.macro_f1:.3f}")
    for form, s in sorted(report.by_form.items()):
        out.print(
            f"{form}: precision {s.precision:.3f} recall {s.recall:.3f} F1 {s.f1:.3f}"
            f" (tp {s.tp}, fp {s.fp}, fn {s.fn})"
        )
    if report.misclassified:
        out.print(f"\nmisclassified ({len(report.misclassified)}):")
        for w in report.misclassified:
            line = Text(f"  {w.id} (line {w.line}) ")
            if w.missing:
                line += Text("missing " + ",".join(w.missing) + " ", style="red")
            if w.extra:
                line += Text("extra " + ",".join(w.extra) + " ", style="yellow")
            line += Text(w.title[:100], style="dim")
            out.print(line)
    raise typer.Exit(EXIT_OK)


# ---- reclassify ---------------------------------------------------------------------------------------------


@app.command()
def reclassify(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would change; store nothing."),
    as_json: bool = JsonOpt,
) -> None:
    """Re-run the current rules over stored items and report, per category, what was gained and lost."""
    result = state(ctx).api().reclassify(dry_run=dry_run)
    if as_json:
        print_json(result.to_json())
        raise typer.Exit(EXIT_OK)
    changed_items = result.changes
    total, countries_changed = result.items, result.countries_changed
    verb = "would change" if dry_run else "changed"
    out.print(f"{total} items, categories {verb} on {len(changed_items)}, countries on {countries_changed}")
    table = Table()
    table.add_column("category")
    table.add_column("gained", justify="right")
    table.add_column("lost", justify="right")
    for cid in result.gained:
        if result.gained[cid] or result.lost[cid]:
            table.add_row(cid, f"+{result.gained[cid]}", f"-{result.lost[cid]}")
    if changed_items:
        out.print(table)
    for c in changed_items[:50]:
        out.print(
            Text(f"  #{c.id} ")
            + Text("".join(f"+{x} " for x in c.gained), style="green")
            + Text("".join(f"-{x} " for x in c.lost), style="red")
            + Text(c.title[:90], style="dim")
        )
    if len(changed_items) > 50:
        out.print(f"  ... and {len(changed_items) - 50} more (use --json for all)")
    if dry_run:
        err.print("dry run: nothing stored")
    raise typer.Exit(EXIT_OK)


__all__ = ["EXIT_USAGE", "check_rules", "eval_cmd", "explain", "reclassify"]
