"""Finding the config folder and loading settings.yaml and feeds.yaml with every error at once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from monitor.config.models import FeedConfig, FeedsFile, Settings
from monitor.config.yamlfile import YamlDoc, format_loc, load_yaml
from monitor.errors import ConfigError, ConfigErrors

M = TypeVar("M", bound=BaseModel)

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


def validate(doc: YamlDoc, model: type[M]) -> M:
    """Validate one YAML document against a schema; raise ConfigErrors naming file, line and field of each error."""
    data = doc.data if doc.data is not None else {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            errors.append(
                ConfigError(msg, file=doc.path, line=doc.line_of(loc), field=format_loc(loc) or None)
            )
        raise ConfigErrors(errors) from None


def load_file(path: Path, model: type[M], *, required: bool = True) -> M:
    if not path.exists() and not required:
        return model()
    return validate(load_yaml(path), model)


@dataclass(frozen=True)
class Config:
    dir: Path
    settings: Settings
    feeds: tuple[FeedConfig, ...]

    @property
    def templates_dir(self) -> Path | None:
        own = self.dir / "templates"
        return own if own.is_dir() else None


def collect(*loaders: object) -> list[ConfigError]:
    """Errors from several loaders, flattened, so one pass reports them all."""
    out: list[ConfigError] = []
    for err in loaders:
        if isinstance(err, ConfigErrors):
            out.extend(err.errors)
        elif isinstance(err, ConfigError):
            out.append(err)
    return out


def load_config(config_dir: Path) -> Config:
    settings: Settings | None = None
    feeds: FeedsFile | None = None
    problems: list[ConfigError] = []
    try:
        settings = load_file(config_dir / "settings.yaml", Settings, required=False)
    except ConfigError as exc:
        problems += collect(exc)
    try:
        feeds = load_file(config_dir / "feeds.yaml", FeedsFile, required=False)
    except ConfigError as exc:
        problems += collect(exc)
    if problems or settings is None or feeds is None:
        raise ConfigErrors(problems)
    return Config(dir=config_dir, settings=settings, feeds=tuple(feeds.feeds))
