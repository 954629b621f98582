"""Field names other tools rely on, written out from DESIGN.md (not imported from the code under test)."""

# `monitor export --format json`: each stored item has at least these.
EXPORT_ITEM_FIELDS = (
    "id",
    "feed",
    "url",
    "title",
    "published",
    "fetched",
    "categories",
    "countries",
    "incident",
    "matches",
)
