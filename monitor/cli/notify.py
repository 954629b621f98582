"""`notify test NAME`: a test message to every chat target of a digest."""

from __future__ import annotations

import typer

from monitor.cli.app import (
    EXIT_OK,
    EXIT_PROBLEMS,
    JsonOpt,
    app,
    err,
    fail,
    fail_config,
    out,
    print_json,
    state,
)
from monitor.errors import ConfigError

notify_app = typer.Typer(help="Chat and push notifications of digests (Apprise).", no_args_is_help=True)
app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def notify_test(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A digest name from digests.yaml."),
    as_json: bool = JsonOpt,
) -> None:
    """Send a short test message to each notify target of digest NAME; exit 1 if any target failed."""
    from monitor.deliver.notify import send_test, targets_of

    st = state(ctx)
    try:
        d = st.config.digest(name)
    except ConfigError as exc:
        fail_config(exc)
    if not targets_of(d):
        fail(
            f"digest {name!r} has no notify targets (digests.yaml `notify: urls:` or {name.upper()} env list)"
        )
    runs = send_test(st.config, name)
    if as_json:
        print_json([r.to_json() for r in runs])
    else:
        for r in runs:
            line = f"{r.target}: {r.status}" + (f" ({r.error})" if r.error else "")
            (out if r.status == "delivered" else err).print(line, highlight=False, markup=False)
    raise typer.Exit(EXIT_OK if all(r.status == "delivered" for r in runs) else EXIT_PROBLEMS)
