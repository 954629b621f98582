"""`explain`, `eval`, `reclassify`, and the rules part of `monitor check`."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

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
from monitor.errors import ConfigError


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


def _print_explanation(title: str, body: str, result: Any, categories: dict[str, Any]) -> None:
    if title:
        out.print(Text(title, style="bold"))
    if not result.categories:
        out.print("no category matched")
    for cid in result.categories:
        info = categories[cid]
        m = result.matches[cid]
        style = {"high": "red", "medium": "yellow"}.get(info.severity, "white")
        out.print(Text.assemble((f"{cid}", f"bold {style}"), f"  {info.title} ({info.severity})"))
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
    clf = st.config.rules
    language = None
    incident: dict[str, Any] | None = None
    if text is not None:
        body = text
    elif file is not None:
        try:
            body = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{file}: {exc}")
    else:
        from sqlmodel import Session

        from monitor.store.models import Item

        with Session(st.engine()) as session:
            row = session.get(Item, item)
            if row is None:
                fail(f"no stored item with id {item}")
            title, body, language = row.title, row.text, row.language
            from monitor.incidents import explain_incident

            incident = explain_incident(session, row.id) if row.id is not None else None
    result = clf.classify(title, body, language)
    if as_json:
        data = result.to_json()
        data["rules_version"] = clf.version
        if item is not None:
            data["item"] = item
            data["incident"] = incident
        print_json(data)
    else:
        _print_explanation(title, body, result, clf.categories)
        if item is not None:
            if incident:
                out.print(f"\n[bold]incident {incident['incident']['id']}[/bold]: {incident.get('text', '')}")
            else:
                out.print("\nnot part of an incident (it matched no category, or was not grouped yet)")
    raise typer.Exit(EXIT_OK)


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
    from sqlmodel import Session, col, select

    from monitor.store.engine import session_scope
    from monitor.store.items import apply_classification
    from monitor.store.models import Item

    st = state(ctx)
    clf = st.config.rules
    engine = st.engine()
    gained: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    countries_changed = 0
    changed_items: list[dict[str, Any]] = []
    total = 0
    last_id = 0
    batch = 500
    while True:
        # batches by id, each in its own transaction, so a large database is neither held in memory nor locked
        with Session(engine) if dry_run else session_scope(engine) as session:
            rows = list(
                session.exec(
                    select(Item)
                    .where(col(Item.id) > last_id, col(Item.pruned).is_(False))
                    .order_by(col(Item.id))
                    .limit(batch)
                )
            )
            if not rows:
                break
            regroup: list[int] = []
            for row in rows:
                assert row.id is not None
                last_id = row.id
                total += 1
                before = set(row.categories or [])
                before_countries = list(row.countries or [])
                if dry_run:
                    result = clf.classify(row.title, row.text, row.language)
                    after, after_countries = set(result.categories), result.countries
                else:
                    apply_classification(row, clf)
                    session.add(row)
                    after, after_countries = set(row.categories), row.countries
                plus, minus = sorted(after - before), sorted(before - after)
                gained.update(plus)
                lost.update(minus)
                if after_countries != before_countries:
                    countries_changed += 1
                if plus or minus:
                    changed_items.append({"id": row.id, "title": row.title, "gained": plus, "lost": minus})
                    regroup.append(row.id)
            if regroup and not dry_run:
                # Incidents follow the new categories: an item that lost them leaves its incident.
                from monitor.incidents import CountryLevel, group_items
                from monitor.store.types import utcnow

                session.flush()
                severity = {cid: info.severity for cid, info in clf.categories.items()}
                window_hours = st.config.settings.grouping.window / 3600
                words = clf.gazetteer.country_level_words()
                group_items(
                    session,
                    regroup,
                    now=utcnow(),
                    severity=severity,
                    window_hours=window_hours,
                    country_level=CountryLevel.of(words) if words is not None else None,
                )
    per_category = {
        cid: {"gained": gained.get(cid, 0), "lost": lost.get(cid, 0)}
        for cid in sorted(set(clf.categories) | set(gained) | set(lost))
    }
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "rules_version": clf.version,
                "items": total,
                "changed": len(changed_items),
                "countries_changed": countries_changed,
                "categories": per_category,
                "changed_items": changed_items,
            }
        )
        raise typer.Exit(EXIT_OK)
    verb = "would change" if dry_run else "changed"
    out.print(f"{total} items, categories {verb} on {len(changed_items)}, countries on {countries_changed}")
    table = Table()
    table.add_column("category")
    table.add_column("gained", justify="right")
    table.add_column("lost", justify="right")
    for cid, d in per_category.items():
        if d["gained"] or d["lost"]:
            table.add_row(cid, f"+{d['gained']}", f"-{d['lost']}")
    if changed_items:
        out.print(table)
    for c in changed_items[:50]:
        out.print(
            Text(f"  #{c['id']} ")
            + Text("".join(f"+{x} " for x in c["gained"]), style="green")
            + Text("".join(f"-{x} " for x in c["lost"]), style="red")
            + Text(str(c["title"])[:90], style="dim")
        )
    if len(changed_items) > 50:
        out.print(f"  ... and {len(changed_items) - 50} more (use --json for all)")
    if dry_run:
        err.print("dry run: nothing stored")
    raise typer.Exit(EXIT_OK)


__all__ = ["EXIT_USAGE", "check_rules", "eval_cmd", "explain", "reclassify"]
