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

# First: modules imported below read it (`from monitor import __version__`) while this package is importing.
__version__ = "0.1.0"

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
