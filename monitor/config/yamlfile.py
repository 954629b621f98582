"""YAML loading that remembers where every value came from, so errors can name the file and line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitor.errors import ConfigError

Loc = tuple[str | int, ...]


@dataclass
class YamlDoc:
    """Plain Python data from one YAML file plus the line (1-based) of every mapping key and list item."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        """Line of the deepest known prefix of `loc` (pydantic error locations may go deeper than YAML)."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)

    def error(self, message: str, loc: Iterable[str | int] = (), field: str | None = None) -> ConfigError:
        loc = tuple(loc)
        return ConfigError(
            message, file=self.path, line=self.line_of(loc), field=field or format_loc(loc) or None
        )


def format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _Loader(yaml.SafeLoader):
    pass


def _convert(node: yaml.Node, loc: Loc, lines: dict[Loc, int], loader: _Loader) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve YAML merge keys (<<)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise ConfigError("a mapping key must be a plain value", line=key_node.start_mark.line + 1)
            if key in out:
                raise ConfigError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1)
            sub = (*loc, key)
            lines[sub] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, sub, lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, child in enumerate(node.value):
            sub = (*loc, i)
            lines[sub] = child.start_mark.line + 1
            items.append(_convert(child, sub, lines, loader))
        return items
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, path: Path) -> YamlDoc:
    lines: dict[Loc, int] = {}
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else _convert(node, (), lines, loader)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=path, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML: {exc.problem or exc}", file=path, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=path) from None
    finally:
        loader.dispose()
    return YamlDoc(path=path, data=data, lines=lines)


def load_yaml(path: Path) -> YamlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=path) from None
    return parse_yaml(text, path)
