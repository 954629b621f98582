"""`run` (the service) and `demo` (the offline first experience)."""

from __future__ import annotations

from pathlib import Path

import typer

from monitor.cli.app import JsonOpt, app, err, fail, print_json, state
from monitor.config.durations import parse_duration


def _seconds(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _port(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        port = int(value)
    except ValueError:
        raise typer.BadParameter(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise typer.BadParameter(f"port out of range: {port}")
    return port


@app.command()
def run(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address of the HTTP server (health, metrics, site)."
    ),
    port: str = typer.Option(
        "8080",
        "--port",
        envvar="MONITOR_HTTP_PORT",
        help="HTTP port (0: any free port; env MONITOR_HTTP_PORT).",
    ),
    no_http: bool = typer.Option(False, "--no-http", help="Run without the HTTP server."),
    log_format: str = typer.Option("human", "--log-format", help="human or json (one JSON object per line)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    tick: str = typer.Option("30s", "--tick", help="How often to look for due feeds."),
    batch: int = typer.Option(200, "--batch", min=1, help="Feeds claimed at once (several workers share)."),
    lanes: int = typer.Option(
        4, "--lanes", min=1, help="Batches polled side by side, sharing the concurrency limits."
    ),
    lease: str = typer.Option(
        "15m", "--lease", help="How long a claimed feed stays reserved to this worker."
    ),
    site_dir: Path = typer.Option(
        Path("site"),
        "--site-dir",
        envvar="MONITOR_SITE_DIR",
        help="Rebuild the static site here (after new items) and serve it over HTTP.",
    ),
    no_site: bool = typer.Option(False, "--no-site", help="Neither build nor serve the site."),
    watch: str = typer.Option(
        "5s", "--watch", help="How often to check the config folder for changes (0: off)."
    ),
    shutdown_timeout: str = typer.Option("45s", "--shutdown-timeout", help="Deadline for a graceful stop."),
    report_every: str = typer.Option(
        "1h", "--report-every", help="How often to log failing and silent feeds."
    ),
    worker: str | None = typer.Option(None, "--worker", help="Name of this worker (default host:pid)."),
    db_wait: str = typer.Option("30s", "--db-wait", help="How long to wait for the database at start-up."),
) -> None:
    """Run the service: poll, classify, deliver digests on their schedules; /healthz, /metrics and the site.

    SIGTERM or Ctrl-C stops it after the work in progress; SIGHUP (or editing a config file) reloads the
    configuration. On SQLite one service per database; on PostgreSQL start as many as you need.
    """
    from monitor.config.load import load_settings
    from monitor.errors import ConfigError
    from monitor.service.logs import setup_logging
    from monitor.service.run import run_service
    from monitor.service.scheduler import ServiceOptions
    from monitor.store.engine import resolve_db_url

    if log_format not in ("human", "json"):
        fail(f"--log-format must be human or json, not {log_format!r}")
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    setup_logging(log_format, log_level)
    st = state(ctx)
    config_dir = st.config_dir
    try:
        settings_url = load_settings(config_dir).database.url
    except ConfigError:
        settings_url = None  # run_service reports every config error with file and line
    opts = ServiceOptions(
        host=host,
        port=None if no_http else _port(port),
        tick=_seconds(tick),
        batch=batch,
        lanes=lanes,
        lease=_seconds(lease),
        watch_interval=_seconds(watch),
        shutdown_timeout=_seconds(shutdown_timeout),
        report_every=_seconds(report_every),
        site_dir=None if no_site else site_dir.resolve(),
    )
    if worker:
        opts.worker = worker
    if opts.tick <= 0:
        fail("--tick must be positive")
    code = run_service(
        resolve_db_url(st.db_option, settings_url), config_dir, opts, db_wait=_seconds(db_wait)
    )
    raise typer.Exit(code)


@app.command()
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(
        Path("demo"), "--out", help="Folder for the demo database, config, digest and site."
    ),
    serve: bool = typer.Option(False, "--serve", help="Afterwards, serve the site on --port until Ctrl-C."),
    port: str = typer.Option("8080", "--port", envvar="MONITOR_HTTP_PORT", help="Port for --serve."),
    as_json: bool = JsonOpt,
) -> None:
    """Offline demo: serve bundled sample feeds (EN/RU/KK) on loopback, poll and classify them, write the
    `daily` digest and the site, and print where to look. Uses its own database and config under --out."""
    from monitor.demo.run import run_demo

    del ctx  # the demo never touches the configured database or config
    try:
        result = run_demo(out, progress=lambda msg: err.print(f"[dim]{msg}[/dim]"))
    except OSError as exc:
        fail(f"demo: {exc}")
    if as_json:
        print_json(
            {
                "ok": result.ok,
                "steps": [{"name": st.name, "ok": st.ok, "detail": st.detail} for st in result.steps],
                "items": result.items,
                "matched": result.matched,
                "incidents": result.incidents,
                "categories": result.categories,
                "digest": [str(f) for f in result.digest_files],
                "site": str(result.site_dir) if result.site_dir else None,
                "database": result.db_url,
                "config": str(result.config_dir),
            }
        )
    else:
        result.print_summary()
    if serve:
        from monitor.demo.run import serve_site

        p = _port(port)
        serve_site(result.site_dir if result.site_dir else out, port=p or 0)
    raise typer.Exit(0 if result.ok else 1)
