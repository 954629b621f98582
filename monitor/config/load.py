"""Finding the config folder and loading every file in it, once, into one `Config`.

    load_config(dir) -> Config     settings, feeds, categories + places (compiled rules) and digests; every
                                   problem of every file in one ConfigErrors (file, line, field)
    load_settings(dir) -> Settings           settings.yaml alone, for commands that only need the database
    load_feeds(dir) -> (FeedConfig, ...)     feeds.yaml alone, for the feed-list commands

The service loads a new Config on reload and swaps it whole for the running one, so no stage ever sees the rules
of one version with the digests of another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from monitor.config.digests import FILE_NAME as DIGESTS_FILE
from monitor.config.digests import DigestConfig, Digests, load_digests
from monitor.config.models import FeedConfig, FeedsFile, Settings
from monitor.config.validate import load_file, validate
from monitor.errors import ConfigError, ConfigErrors
from monitor.rules.explain import CategoryInfo
from monitor.rules.loader import load_classifier
from monitor.rules.matcher import Classifier
from monitor.store.types import utcnow

__all__ = [
    "Config",
    "collect",
    "load_config",
    "load_feeds",
    "load_file",
    "load_settings",
    "packaged_dir",
    "resolve_config_dir",
    "validate",
]

_PACKAGE = Path(__file__).resolve().parent.parent


def packaged_dir(name: str) -> Path:
    """`config` or `templates` as shipped: inside the wheel, or at the top of a source checkout."""
    inside = _PACKAGE / "_defaults" / name
    return inside if inside.is_dir() else _PACKAGE.parent / name


def resolve_config_dir(option: str | Path | None = None) -> Path:
    """--config, else MONITOR_CONFIG, else ./config when present, else the packaged defaults."""
    chosen = option or os.environ.get("MONITOR_CONFIG")
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            raise ConfigError("config folder not found", file=path)
        return path
    local = Path("config")
    if (local / "feeds.yaml").is_file() or (local / "settings.yaml").is_file():
        return local
    return packaged_dir("config")


@dataclass(frozen=True)
class Config:
    """Every file of one config folder, validated: what each stage is handed."""

    dir: Path
    settings: Settings
    feeds: tuple[FeedConfig, ...]
    rules: Classifier  # categories.yaml (or categories/*.yaml) and places.yaml, compiled
    digests: Digests
    loaded_at: datetime = field(default_factory=utcnow, compare=False)

    @property
    def templates_dir(self) -> Path | None:
        own = self.dir / "templates"
        return own if own.is_dir() else None

    @property
    def categories(self) -> dict[str, CategoryInfo]:
        """Configured categories (id, title, severity, description), in config order."""
        return self.rules.categories

    @property
    def category_titles(self) -> dict[str, str]:
        return {cid: info.title for cid, info in self.rules.categories.items()}

    def digest(self, name: str) -> DigestConfig:
        """The digest called `name`; ConfigError naming digests.yaml when there is none."""
        return self.digests.find(name)


def collect(*loaders: object) -> list[ConfigError]:
    """Errors from several loaders, flattened, so one pass reports them all."""
    out: list[ConfigError] = []
    for err in loaders:
        if isinstance(err, ConfigErrors):
            out.extend(err.errors)
        elif isinstance(err, ConfigError):
            out.append(err)
    return out


def load_settings(config_dir: Path) -> Settings:
    return load_file(Path(config_dir) / "settings.yaml", Settings, required=False)


def load_feeds(config_dir: Path) -> tuple[FeedConfig, ...]:
    return tuple(load_file(Path(config_dir) / "feeds.yaml", FeedsFile, required=False).feeds)


def load_config(config_dir: Path) -> Config:
    """Every file in `config_dir`; raises one ConfigErrors with the problems of all of them."""
    config_dir = Path(config_dir)
    problems: list[ConfigError] = []
    settings: Settings | None = None
    feeds: tuple[FeedConfig, ...] | None = None
    rules: Classifier | None = None
    digests: Digests | None = None
    try:
        settings = load_settings(config_dir)
    except ConfigError as exc:
        problems += collect(exc)
    try:
        feeds = load_feeds(config_dir)
    except ConfigError as exc:
        problems += collect(exc)
    try:
        rules = load_classifier(config_dir)
    except ConfigError as exc:
        problems += collect(exc)
    # Digest filters are checked against the categories that compiled; with broken rules only the rest of
    # digests.yaml is, rather than every filter reported as unknown because another file failed.
    try:
        digests = load_digests(config_dir / DIGESTS_FILE, rules.categories if rules else None)
    except ConfigError as exc:
        problems += collect(exc)
    if problems or settings is None or feeds is None or rules is None or digests is None:
        raise ConfigErrors(problems or [ConfigError("could not load the configuration", file=config_dir)])
    return Config(dir=config_dir, settings=settings, feeds=feeds, rules=rules, digests=digests)
