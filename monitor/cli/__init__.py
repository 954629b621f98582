"""Command-line interface: a thin layer over the public API (monitor.open / Monitor) plus the commands that
manage the service and its config (run, check, feeds, db).

One module per command group; each registers its commands on `monitor.cli.app.app` when imported. A new
group adds its module to the import list below (explicit, so a broken module fails loudly at start-up).
"""

from __future__ import annotations

from monitor.cli import core, deliver, feedback, feeds, ingest, notify, rules, search, service, site, users
from monitor.cli.app import app

COMMAND_MODULES = (core, feeds, ingest, rules, feedback, site, deliver, notify, service, users, search)


def main() -> None:
    app()
