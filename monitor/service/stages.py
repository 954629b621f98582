"""The service's calls into the later stages (incidents, digests, site), in one place.

Each stage is an ordinary function that the CLI calls too; this module only adapts arguments and turns what
comes back into something the scheduler can log and count. A stage missing from this build (an optional part,
or one still being written) makes its job a logged no-op instead of a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from monitor.service.runtime import Runtime, optional

log = logging.getLogger("monitor.service")


# --- digests ----------------------------------------------------------------------------------------------


def digests_available() -> bool:
    return optional("monitor.deliver.digest", "deliver_digest") is not None


@dataclass(frozen=True)
class DigestOutcome:
    outcome: str  # delivered | empty | pending (failed, to be retried) | failed | skipped | unavailable
    detail: str = ""
    raw: Any = None


def _describe_run(run: Any) -> DigestOutcome:
    """DigestRun.status is delivered | pending | empty | dry_run | busy (another process is sending it)."""
    status = str(getattr(run, "status", "") or "")
    detail = f"{getattr(run, 'incidents', 0)} new incidents, {getattr(run, 'updates', 0)} updates"
    error = getattr(run, "error", None)
    if error:
        detail += f"; {error}"
    mapping = {"delivered": "delivered", "dry_run": "delivered", "empty": "empty", "busy": "skipped"}
    return DigestOutcome(mapping.get(status, "pending" if status == "pending" else "failed"), detail, run)


def deliver_digest(
    engine: Engine,
    runtime: Runtime,
    name: str,
    *,
    now: datetime | None = None,
    dry_run_out: Path | None = None,
) -> DigestOutcome:
    fn = optional("monitor.deliver.digest", "deliver_digest")
    if fn is None:
        return DigestOutcome("unavailable", "digests are not available in this build")
    run = fn(engine, runtime.dir, name, now=now, dry_run_out=dry_run_out)
    return _describe_run(run)


def retry_pending(engine: Engine, runtime: Runtime) -> list[DigestOutcome]:
    fn = optional("monitor.deliver.digest", "retry_pending")
    if fn is None:
        return []
    return [_describe_run(r) for r in fn(engine, runtime.dir)]


def last_run_at(engine: Engine, name: str) -> datetime | None:
    """When a digest was last built (sent, queued for retry, or found empty), from the digest stage's state
    table: the scheduler compares it with the slot it is about to serve, so a slot is served once."""
    try:
        from monitor.store.digest_models import DigestState
    except ImportError:
        return None
    from monitor.store.engine import session_scope

    with session_scope(engine) as s:
        row = s.get(DigestState, name)
        return row.last_run_at if row is not None else None


# --- site -------------------------------------------------------------------------------------------------


def site_available() -> bool:
    return optional("monitor.deliver.site", "build_site") is not None


def build_site(engine: Engine, runtime: Runtime, out_dir: Path) -> Any:
    """Rebuild the site in `out_dir`; None when the site stage is not in this build. The builder writes each
    file under a temporary name and renames it, so the HTTP server never serves half a page, and leaves other
    files there (published digest pages) alone."""
    fn = optional("monitor.deliver.site", "build_site")
    if fn is None:
        return None
    titles: dict[str, str] = {}
    infos = optional("monitor.deliver.digests", "category_infos")
    if infos is not None:
        titles = {cid: meta.title for cid, meta in infos(runtime.dir).items()}
    return fn(engine, out_dir, templates=runtime.config.templates_dir, category_titles=titles)
