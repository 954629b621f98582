"""The `monitor` command: global options, shared state, and helpers every command module uses.

Command modules import `app` (or a sub-app) from here and register with decorators; monitor/cli/__init__.py
imports them all. Exit codes (DESIGN.md): 0 ok, 1 the operation found problems, 2 bad usage or invalid config.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine

from monitor._api import Monitor
from monitor.config.load import Config, load_config, load_feeds, load_settings, resolve_config_dir
from monitor.config.models import FeedConfig, Settings
from monitor.errors import ConfigError, ConfigErrors, StoreError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="monitor",
    help="Civic-space monitor: poll news feeds, classify items with explainable rules, deliver digests.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
feeds_app = typer.Typer(help="List, add, remove, import and export feeds (OPML 2.0).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(feeds_app, name="feeds")
app.add_typer(db_app, name="db")

out = Console(highlight=False, soft_wrap=True)
# Error lines stay whole (no wrapping), so "file:line" can be grepped.
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@dataclass
class State:
    config_option: str | None = None
    db_option: str | None = None
    _engine: Engine | None = field(default=None, repr=False)
    _monitor: Monitor | None = field(default=None, repr=False)

    @cached_property
    def config_dir(self) -> Path:
        try:
            return resolve_config_dir(self.config_option)
        except ConfigError as exc:
            fail_config(exc)

    @cached_property
    def config(self) -> Config:
        """Every file of the config folder, loaded once; an invalid one exits 2 naming file and line."""
        try:
            return load_config(self.config_dir)
        except ConfigError as exc:
            fail_config(exc)

    @cached_property
    def settings(self) -> Settings:
        """settings.yaml alone: commands that only need the database (db upgrade, feeds) do not fail on a
        broken rule file, and do not pay for compiling the rules."""
        if "config" in self.__dict__:
            return self.config.settings
        try:
            return load_settings(self.config_dir)
        except ConfigError as exc:
            fail_config(exc)

    @cached_property
    def feeds(self) -> tuple[FeedConfig, ...]:
        if "config" in self.__dict__:
            return self.config.feeds
        try:
            return load_feeds(self.config_dir)
        except ConfigError as exc:
            fail_config(exc)

    @property
    def db_url(self) -> str:
        from monitor.store.engine import resolve_db_url

        return resolve_db_url(self.db_option, self.settings.database.url)

    def api(self) -> Monitor:
        """The public API on the config and database in use: what the commands that have a Monitor method
        call, so the CLI and a Python script do the same thing."""
        if self._monitor is None:
            try:
                self._monitor = Monitor(self.config, self.db_option)
            except StoreError as exc:
                err.print(f"[red]{exc}[/red]", highlight=False)
                raise typer.Exit(EXIT_USAGE) from None
        return self._monitor

    def engine(self, *, upgrade: bool = True) -> Engine:
        """The database, with its schema brought up to date (cheap when already current)."""
        if self._engine is None:
            from monitor.store import ensure_schema, make_engine

            try:
                self._engine = make_engine(self.db_url)
                if upgrade:
                    ensure_schema(self._engine)
            except Exception as exc:  # a bad URL or an unreachable server is a usage problem, not a crash
                err.print(f"[red]database {self.db_url_safe}: {exc}[/red]")
                raise typer.Exit(EXIT_USAGE) from None
        return self._engine

    @property
    def db_url_safe(self) -> str:
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.db_url).render_as_string(hide_password=True)
        except Exception:
            return "<invalid URL>"


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def fail_config(exc: ConfigError) -> NoReturn:
    errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
    for e in errors:
        err.print(f"[red]error:[/red] {e.describe()}", markup=True, highlight=False)
    raise typer.Exit(EXIT_USAGE)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


@app.callback()
def main_options(
    ctx: typer.Context,
    config: str | None = typer.Option(
        None,
        "--config",
        metavar="DIR",
        help="Config folder (default: ./config if present, else the packaged one; env MONITOR_CONFIG).",
    ),
    db: str | None = typer.Option(
        None, "--db", metavar="URL", help="SQLAlchemy URL (default sqlite:///./monitor.db; env MONITOR_DB)."
    ),
) -> None:
    ctx.obj = State(config_option=config, db_option=db)


@dataclass
class CheckResult:
    """What one part of `monitor check` found. Errors (invalid config) exit 2; failures (e.g. a rule example
    that does not match) exit 1; notes are printed for information."""

    name: str
    errors: list[ConfigError] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Check = Callable[[Config], CheckResult]
# What `monitor check` runs on a configuration that loaded (rule examples, digest schedules...), in order.
CHECKS: list[Check] = []


def register_check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn
