"""The service's calls into the later stages (digests, site), in one place.

Each stage is an ordinary function that the CLI calls too; this module only turns what comes back into something
the scheduler can log and count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from monitor.config.load import Config
from monitor.deliver import digest as _digest
from monitor.deliver import site as _site
from monitor.store.digest_models import DigestState
from monitor.store.engine import session_scope

log = logging.getLogger("monitor.service")


@dataclass(frozen=True)
class DigestOutcome:
    outcome: str  # delivered | empty | pending (failed, to be retried) | failed | skipped
    detail: str = ""
    run: _digest.DigestRun | None = None

    @property
    def digest(self) -> str:
        return self.run.digest if self.run is not None else "?"


def describe_run(run: _digest.DigestRun) -> DigestOutcome:
    """DigestRun.status is delivered | pending | empty | dry_run | busy (another process is sending it)."""
    detail = f"{run.incidents} new incidents, {run.updates} updates"
    if run.error:
        detail += f"; {run.error}"
    mapping = {"delivered": "delivered", "dry_run": "delivered", "empty": "empty", "busy": "skipped"}
    return DigestOutcome(
        mapping.get(run.status, "pending" if run.status == "pending" else "failed"), detail, run
    )


def deliver_digest(
    engine: Engine,
    config: Config,
    name: str,
    *,
    now: datetime | None = None,
    dry_run_out: Path | None = None,
) -> DigestOutcome:
    return describe_run(_digest.deliver_digest(engine, config, name, now=now, dry_run_out=dry_run_out))


def retry_pending(engine: Engine, config: Config) -> list[DigestOutcome]:
    from monitor.deliver.notify import send_due

    runs = [describe_run(r) for r in _digest.retry_pending(engine, config.digests.settings)]
    send_due(engine, config=config)  # chat targets back off on their own rows
    return runs


def last_run_at(engine: Engine, name: str) -> datetime | None:
    """When a digest was last built (sent, queued for retry, or found empty), from the digest stage's state
    table: the scheduler compares it with the slot it is about to serve, so a slot is served once."""
    with session_scope(engine) as s:
        row = s.get(DigestState, name)
        return row.last_run_at if row is not None else None


def build_site(engine: Engine, config: Config, out_dir: Path) -> _site.SiteReport:
    """Rebuild the site in `out_dir`. The builder writes each file under a temporary name and renames it, so the
    HTTP server never serves half a page, and leaves other files there (published digest pages) alone."""
    return _site.build_site(
        engine, out_dir, templates=config.templates_dir, category_titles=config.category_titles
    )
