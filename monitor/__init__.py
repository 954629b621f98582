"""Civic-space monitor: polls news feeds, classifies items with explainable rules, delivers digests.

The public Python API is what this module exports (see `__all__`) and `monitor.errors`:

    import monitor

    with monitor.open(config="config", db="sqlite:///monitor.db") as m:
        m.poll()
        for inc in m.incidents(country="KZ", limit=10):
            print(inc.severity, inc.title)

Every other module (monitor.config, monitor.ingest, monitor.rules, ...) is internal: it may change between
versions without notice. The CLI (`monitor`, `python -m monitor`) is a layer over this API.
"""

# Read by modules of the package (`from monitor import __version__`), so set before anything is imported.
__version__ = "0.1.0"

from typing import TYPE_CHECKING

from monitor._lazy import exports

if TYPE_CHECKING:
    from monitor._api import Monitor, open
    from monitor._types import (
        Classification,
        DigestResult,
        Explanation,
        FeedPoll,
        Hit,
        Incident,
        Item,
        ItemChange,
        Match,
        Place,
        PollResult,
        ReclassifyResult,
        SiteResult,
    )
    from monitor.errors import (
        ConfigError,
        ConfigErrors,
        DeliveryError,
        FetchError,
        MonitorError,
        NotFoundError,
        ParseError,
        RuleError,
        StoreError,
    )
    from monitor.search import SearchError, SearchFilterError, SearchHit, SearchQueryError, SearchResults

# Where each public name lives. They are imported on first use: a worker process that needs only the parser
# (monitor.ingest.workers) then imports the parser alone, not the whole service (~70 MB and 2 s less each).
_EXPORTS = {
    "Monitor": "monitor._api",
    "open": "monitor._api",
    "Classification": "monitor._types",
    "DigestResult": "monitor._types",
    "Explanation": "monitor._types",
    "FeedPoll": "monitor._types",
    "Hit": "monitor._types",
    "Incident": "monitor._types",
    "Item": "monitor._types",
    "ItemChange": "monitor._types",
    "Match": "monitor._types",
    "Place": "monitor._types",
    "PollResult": "monitor._types",
    "ReclassifyResult": "monitor._types",
    "SiteResult": "monitor._types",
    "ConfigError": "monitor.errors",
    "ConfigErrors": "monitor.errors",
    "DeliveryError": "monitor.errors",
    "FetchError": "monitor.errors",
    "MonitorError": "monitor.errors",
    "NotFoundError": "monitor.errors",
    "ParseError": "monitor.errors",
    "RuleError": "monitor.errors",
    "StoreError": "monitor.errors",
    "SearchError": "monitor.search",
    "SearchFilterError": "monitor.search",
    "SearchHit": "monitor.search",
    "SearchQueryError": "monitor.search",
    "SearchResults": "monitor.search",
}

__all__ = [
    "Classification",
    "ConfigError",
    "ConfigErrors",
    "DeliveryError",
    "DigestResult",
    "Explanation",
    "FeedPoll",
    "FetchError",
    "Hit",
    "Incident",
    "Item",
    "ItemChange",
    "Match",
    "Monitor",
    "MonitorError",
    "NotFoundError",
    "ParseError",
    "Place",
    "PollResult",
    "ReclassifyResult",
    "RuleError",
    "SearchError",
    "SearchFilterError",
    "SearchHit",
    "SearchQueryError",
    "SearchResults",
    "SiteResult",
    "StoreError",
    "__version__",
    "open",
]

__getattr__, __dir__ = exports(__name__, _EXPORTS)
