"""Package exports imported on first use.

A package's `__init__` that imports everything it exports makes every import of any of its modules pay for all
of them: the parse worker processes imported the whole service (SQLAlchemy, Alembic, Jinja2: ~70 MB and 2 s
each) to reach the parser. With `exports`, `from monitor.search import search` and `monitor.search.search`
work as before, and `import monitor.search.text` imports only that module and what it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, which exports each name of `where` from the module named."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # once looked up, an ordinary attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
