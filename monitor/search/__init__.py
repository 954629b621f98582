"""Full-text search over every stored item, on SQLite (FTS5) and PostgreSQL (tsvector + GIN).

    search(db, "задержать -Астана", filters=SearchFilters(country="KZ")) -> SearchResults

Errors: SearchError (a MonitorError) -> SearchQueryError (malformed query, with position), SearchFilterError.
How text becomes index tokens: monitor.search.text; the query syntax: monitor.search.query.
"""

from typing import TYPE_CHECKING

from monitor._lazy import exports

if TYPE_CHECKING:
    from monitor.search.backends import is_search_table
    from monitor.search.find import SearchFilters, SearchHit, SearchResults, search
    from monitor.search.index import index_items, rebuild_index
    from monitor.search.query import SearchError, SearchFilterError, SearchQueryError, parse_query

__all__ = [
    "SearchError",
    "SearchFilterError",
    "SearchFilters",
    "SearchHit",
    "SearchQueryError",
    "SearchResults",
    "index_items",
    "is_search_table",
    "parse_query",
    "rebuild_index",
    "search",
]

# Imported on first use (monitor._lazy): the language worker needs monitor.search.text alone.
__getattr__, __dir__ = exports(
    __name__,
    {
        "is_search_table": "monitor.search.backends",
        "SearchFilters": "monitor.search.find",
        "SearchHit": "monitor.search.find",
        "SearchResults": "monitor.search.find",
        "search": "monitor.search.find",
        "index_items": "monitor.search.index",
        "rebuild_index": "monitor.search.index",
        "SearchError": "monitor.search.query",
        "SearchFilterError": "monitor.search.query",
        "SearchQueryError": "monitor.search.query",
        "parse_query": "monitor.search.query",
    },
)
