"""Command-line interface. Each module registers its commands on `monitor.cli.app.app`."""

from __future__ import annotations

import importlib

from monitor.cli.app import app

# Command modules; a module that is not there yet (work in progress) must not break the others.
_MODULES = ["core", "feeds", "ingest", "rules", "site", "deliver", "service"]


def _register() -> None:
    for name in _MODULES:
        try:
            importlib.import_module(f"monitor.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"monitor.cli.{name}":
                raise


def main() -> None:
    _register()
    app()
