"""What the service runs with: the config, the compiled rules and the digest list, loaded together and swapped
as one on reload; and the watcher that notices when a config file changes.

A reload either yields a complete new `Runtime` or raises ConfigError(s) naming file and line; the caller keeps
the running one in that case, so a typo in a YAML file never stops a service that was working.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.config.load import Config, collect, load_config
from monitor.errors import ConfigError, ConfigErrors
from monitor.store.types import utcnow

log = logging.getLogger("monitor.service")


def optional(module: str, name: str) -> Callable[..., Any] | None:
    """A function from a stage that may not be installed in this build (or is still being written)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return None
        raise
    fn = getattr(mod, name, None)
    return fn if callable(fn) else None


@dataclass(frozen=True)
class DigestPlan:
    """A digest as the scheduler sees it: its name, a 5-field cron string or "immediate", and a time zone."""

    name: str
    schedule: str
    timezone: str = "UTC"

    @property
    def immediate(self) -> bool:
        return self.schedule.strip().lower() == "immediate"


@dataclass(frozen=True)
class Runtime:
    config: Config
    classifier: Any | None
    digests: tuple[DigestPlan, ...]
    loaded_at: datetime = field(default_factory=utcnow)

    @property
    def dir(self) -> Path:
        return self.config.dir


def _plan(d: Any) -> DigestPlan:
    return DigestPlan(
        name=str(d.name), schedule=str(d.schedule), timezone=str(getattr(d, "timezone", None) or "UTC")
    )


def load_runtime(config_dir: Path) -> Runtime:
    """Load settings, feeds, rules and digests; every problem of every file in one ConfigErrors."""
    problems: list[ConfigError] = []
    config = classifier = None
    digests: tuple[DigestPlan, ...] = ()
    try:
        config = load_config(config_dir)
    except ConfigError as exc:
        problems += collect(exc)
    load_classifier = optional("monitor.rules", "load_classifier")
    if load_classifier is not None:
        try:
            classifier = load_classifier(config_dir)
        except ConfigError as exc:
            problems += collect(exc)
    load_digests = optional("monitor.deliver.digests", "load_digests")
    if load_digests is not None:
        try:
            digests = tuple(_plan(d) for d in load_digests(config_dir))
        except ConfigError as exc:
            problems += collect(exc)
    if problems or config is None:
        raise ConfigErrors(problems or [ConfigError("could not load the configuration", file=config_dir)])
    return Runtime(config=config, classifier=classifier, digests=digests)


# Editors write swap and backup files next to the real one; they are not config.
_IGNORED_SUFFIXES = (".swp", ".swx", ".tmp", "~", ".bak", ".orig")


class ConfigWatcher:
    """Notices a change to any file under the config folder by comparing (mtime, size) snapshots.

    Polling every few seconds costs a few stat() calls and needs no inotify dependency; it also works on the
    network and bind-mounted folders where inotify does not.
    """

    def __init__(self, root: Path, max_files: int = 2000) -> None:
        self.root = root
        self.max_files = max_files
        self._last = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        snap: dict[str, tuple[int, int]] = {}
        try:
            paths = sorted(self.root.rglob("*"))
        except OSError:
            return snap
        for p in paths[: self.max_files]:
            rel = p.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts) or p.name.endswith(_IGNORED_SUFFIXES):
                continue
            try:
                st = p.stat()
            except OSError:
                continue  # deleted between listing and stat: the next snapshot will tell
            if p.is_file():
                snap[str(rel)] = (st.st_mtime_ns, st.st_size)
        return snap

    def changed(self) -> list[str]:
        """Files added, removed or modified since the last call (and since construction)."""
        now = self.snapshot()
        diff = sorted(k for k in now.keys() | self._last.keys() if now.get(k) != self._last.get(k))
        self._last = now
        return diff
