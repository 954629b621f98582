"""`digest NAME` (deliver now, or `--dry-run --out DIR`), `digest --status`, `digest --retry`, and the digests part
of `monitor check`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from monitor.cli.app import (
    EXIT_OK,
    EXIT_PROBLEMS,
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
from monitor.config.digests import Digests, DigestsSettings
from monitor.config.load import Config, collect, load_config
from monitor.errors import ConfigError, DeliveryError


@register_check
def check_digests(config: Config) -> CheckResult:
    """When each digest runs and where it goes; whether MONITOR_SMTP_URL can be used."""
    from monitor.config.digests import FILE_NAME, next_fire_time
    from monitor.deliver.smtp import ENV_VAR, target_from_env
    from monitor.store.types import utcnow

    result = CheckResult("digests")
    digests = config.digests
    if not digests.path.exists():
        result.notes.append(f"no {FILE_NAME}: no digests")
        return result
    now = utcnow()
    for d in digests:
        nxt = next_fire_time(d, now)
        when = (
            "after each poll" if nxt is None else f"next {nxt.astimezone(d.zone):%Y-%m-%d %H:%M} {d.timezone}"
        )
        to = f"{len(d.email.recipients)} recipient(s)" if d.email else "page only"
        result.notes.append(f"{d.name} ({when}, {to})")
    if any(d.email for d in digests):
        if os.environ.get(ENV_VAR):
            try:
                target_from_env()
            except DeliveryError as exc:
                result.errors.append(ConfigError(str(exc), field=ENV_VAR))
        else:
            result.notes.append(f"{ENV_VAR} is not set: email digests will wait as pending")
    return result


def _describe(run: Any) -> str:
    what = f"{run.incidents} new incident(s)" + (f", {run.updates} update(s)" if run.updates else "")
    if run.status == "delivered":
        to = f"to {len(run.recipients)} recipient(s)" if run.recipients else "(page)"
        again = " (resent after an interrupted attempt, same Message-ID)" if run.maybe_sent else ""
        refused = f"; refused: {', '.join(run.refused)}" if run.refused else ""
        return f"{run.digest}: delivered {what} {to}, {run.message_id}{again}{refused}"
    if run.status == "pending":
        nxt = f"; next attempt {run.next_attempt_at:%Y-%m-%d %H:%M UTC}" if run.next_attempt_at else ""
        return f"{run.digest}: NOT delivered ({what}), attempt {run.attempts}: {run.error}{nxt}"
    if run.status == "empty":
        return f"{run.digest}: nothing new, nothing sent"
    if run.status == "busy":
        return f"{run.digest}: another run is delivering this digest right now"
    if run.status == "dry_run":
        return f"{run.digest}: {what}; wrote {run.eml_path} and {run.html_path} (nothing sent)"
    if run.status == "discarded":
        why = f"; last error: {run.error}" if run.error else ""
        return (
            f"{run.digest}: discarded the undelivered message {run.message_id} ({what}, {run.attempts} "
            f"attempt(s){why}); its incidents go into the next message"
        )
    if run.status == "none":
        return f"{run.digest}: no undelivered message, nothing discarded"
    return f"{run.digest}: {run.status}"


@app.command("digest")
def digest(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Digest name from digests.yaml (e.g. daily)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write the message and page instead of sending."),
    out_dir: Path | None = typer.Option(None, "--out", metavar="DIR", help="Folder for --dry-run output."),
    status: bool = typer.Option(False, "--status", help="Show deliveries and pending (failed) digests."),
    retry: bool = typer.Option(False, "--retry", help="Resend pending digests whose backoff has expired."),
    discard: bool = typer.Option(
        False,
        "--discard",
        help="Drop NAME's undelivered message (it keeps the recipients it was built with and blocks later ones); "
        "its incidents go into the next message.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Build and deliver one digest now; exit 1 if it could not be delivered (it stays pending and is retried)."""
    from monitor.deliver.digest import digest_status, discard_pending, retry_pending

    st = state(ctx)
    if discard:
        if not name or status or retry or dry_run or out_dir:
            fail("--discard takes a digest name and no other option")
        dropped = discard_pending(st.engine(), name)
        if as_json:
            print_json(dropped.to_json())
        else:
            (out if dropped.status != "busy" else err).print(
                _describe(dropped), highlight=False, markup=False
            )
        raise typer.Exit(EXIT_PROBLEMS if dropped.status == "busy" else EXIT_OK)
    if status or retry:
        if name or dry_run or out_dir:
            fail("--status and --retry take no digest name, --dry-run or --out")
        engine = st.engine()
        try:
            digests: Digests | None = load_config(st.config_dir).digests
        except ConfigError as exc:
            # Pending messages are already built; a config broken since must not hold them back.
            digests = None
            if not as_json:
                for e in collect(exc):
                    err.print(f"[yellow]warning:[/yellow] {e.describe()}", highlight=False)
        from monitor.deliver.notify import notify_status, send_due

        runs = retry_pending(engine, digests.settings if digests else DigestsSettings()) if retry else []
        chats = send_due(engine, config=st.config if digests else None) if retry else []
        rows = digest_status(engine)
        targets = notify_status(engine)
        for row in rows:
            row["notify"] = targets.get(row["name"], [])
        _print_status(rows, runs, digests, as_json, chats)
        problems = (
            any(r.status == "pending" for r in runs)
            or any(r["pending"] and r["pending"]["last_error"] for r in rows)
            or any(t["status"] != "delivered" and t["last_error"] for ts in targets.values() for t in ts)
        )
        raise typer.Exit(EXIT_PROBLEMS if problems else EXIT_OK)
    if not name:
        fail("give a digest name (see digests.yaml), or --status")
    if dry_run != (out_dir is not None):
        fail("--dry-run and --out DIR go together")
    try:
        run = st.api().digest(name, dry_run=dry_run, out=out_dir)
    except ConfigError as exc:
        fail_config(exc)
    shown = [r for r in (run.previous, run) if r is not None]
    if as_json:
        print_json(run.to_json())
    else:
        for r in shown:
            (out if r.status != "pending" else err).print(_describe(r), highlight=False, markup=False)
    raise typer.Exit(EXIT_OK if run.ok else EXIT_PROBLEMS)


def _print_status(
    rows: list[dict[str, Any]],
    runs: list[Any],
    digests: Digests | None,
    as_json: bool,
    chats: list[Any] | None = None,
) -> None:
    configured = {d.name: d for d in digests or ()}
    by_name = {r["name"]: r for r in rows}
    for cname in configured:
        by_name.setdefault(
            cname,
            {
                "name": cname,
                "position": None,
                "last_run_at": None,
                "last_delivered_at": None,
                "last_message_id": None,
                "delivered": 0,
                "pending": None,
                "notify": [],
            },
        )
    for r in by_name.values():
        d = configured.get(r["name"])
        r["configured"] = d is not None
        r["schedule"] = d.schedule if d else None
        r["timezone"] = d.timezone if d else None
    items = [by_name[k] for k in sorted(by_name)]
    if as_json:
        print_json(
            {
                "digests": items,
                "retried": [x.to_json() for x in runs],
                "notifications_retried": [c.to_json() for c in chats or []],
            }
        )
        return
    for x in runs:
        out.print("retry: " + _describe(x), highlight=False, markup=False)
    for c in chats or []:
        out.print(f"retry: {c.digest} -> {c.target}: {c.status}", highlight=False, markup=False)
    if not items:
        out.print("no digests configured or delivered yet")
    for r in items:
        sched = f" [{r['schedule']} {r['timezone']}]" if r["schedule"] else " [not in digests.yaml]"
        last = r["last_delivered_at"] or "never"
        out.print(
            f"{r['name']}{sched}: {r['delivered']} delivered, last {last}", highlight=False, markup=False
        )
        p = r["pending"]
        if p:
            line = (
                f"  pending since {p['created_at']}: {p['incidents']} new, {p['updates']} updates; "
                f"attempts {p['attempts']}; next {p['next_attempt_at'] or 'now'}; Message-ID {p['message_id']}"
            )
            out.print(line, highlight=False, markup=False)
            if p["last_error"]:
                err.print(f"  last error: {p['last_error']}", highlight=False, markup=False)
            if p["maybe_sent"]:
                out.print("  an attempt was interrupted: it may have arrived; a resend reuses the Message-ID")
        latest: dict[str, dict[str, Any]] = {}
        for t in r.get("notify", []):
            latest.setdefault(t["target"], t)  # newest first: the latest message per target
        for target, t in latest.items():
            line = f"  notify {target}: {t['status']}, attempts {t['attempts']}"
            if t["status"] != "delivered":
                line += f"; next {t['next_attempt_at'] or 'now'}"
            out.print(line, highlight=False, markup=False)
            if t["status"] != "delivered" and t["last_error"]:
                err.print(f"    last error: {t['last_error']}", highlight=False, markup=False)
