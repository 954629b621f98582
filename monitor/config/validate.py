"""One YAML document against one pydantic schema, with every error naming file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from monitor.config.yamlfile import YamlDoc, format_loc, load_yaml
from monitor.errors import ConfigError, ConfigErrors

M = TypeVar("M", bound=BaseModel)


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
