"""Storage: tables, engines, schema migrations and the queries the stages share."""

from monitor.store.engine import make_engine, resolve_db_url, session_scope
from monitor.store.migrate import ensure_schema, upgrade
from monitor.store.models import Feed, Item, ItemSource

__all__ = [
    "Feed",
    "Item",
    "ItemSource",
    "ensure_schema",
    "make_engine",
    "resolve_db_url",
    "session_scope",
    "upgrade",
]
