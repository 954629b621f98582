"""`check` and `db upgrade`."""

from __future__ import annotations

import typer

from monitor.cli.app import (
    CHECKS,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    CheckResult,
    JsonOpt,
    app,
    db_app,
    err,
    out,
    print_json,
    state,
)
from monitor.config.load import collect, load_config
from monitor.errors import ConfigError


@app.command()
def check(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Validate every config file and run every rule example; report all problems at once."""
    st = state(ctx)
    base = CheckResult("configuration")
    results = [base]
    try:
        cfg = load_config(st.config_dir)
    except ConfigError as exc:
        base.errors += collect(exc)  # every file's problems at once; the checks below need a loaded config
    else:
        base.notes.append(f"{len(cfg.feeds)} feeds, {sum(f.enabled for f in cfg.feeds)} enabled")
        results += [fn(cfg) for fn in CHECKS]
    errors = [e for r in results for e in r.errors]
    failures = [f for r in results for f in r.failures]
    code = EXIT_USAGE if errors else EXIT_PROBLEMS if failures else EXIT_OK
    if as_json:
        print_json(
            {
                "ok": code == EXIT_OK,
                "config": str(st.config_dir),
                "errors": [e.to_json() for e in errors],
                "failures": failures,
                "parts": [
                    {"name": r.name, "notes": r.notes, "errors": len(r.errors), "failures": len(r.failures)}
                    for r in results
                ],
            }
        )
    else:
        out.print(f"config: {st.config_dir}")
        for r in results:
            mark = "[red]✗[/red]" if r.errors or r.failures else "[green]✓[/green]"
            out.print(f"{mark} {r.name}" + (f": {'; '.join(r.notes)}" if r.notes else ""))
        for e in errors:
            err.print(f"[red]error:[/red] {e.describe()}", highlight=False)
        for f in failures:
            err.print(f"[yellow]failed:[/yellow] {f}", highlight=False)
        if code == EXIT_OK:
            out.print("[green]all checks passed[/green]")
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Apply schema migrations (run after installing a new version)."""
    from monitor.store import make_engine, upgrade

    st = state(ctx)
    try:
        before, after = upgrade(make_engine(st.db_url))
    except Exception as exc:
        err.print(f"[red]error:[/red] database {st.db_url_safe}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        print_json({"database": st.db_url_safe, "from": before, "to": after})
    else:
        out.print(f"{st.db_url_safe}: schema {before or 'empty'} -> {after}")
