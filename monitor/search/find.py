"""Running a search: parse, filter, rank, and build the highlighted snippets."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    String,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import TableClause

from monitor.search.backends import FILTER_COLUMNS, FILTER_INDEX, FTS_TABLE, PG_TABLE, fts5_match, tsquery
from monitor.search.query import SearchFilterError, parse_query
from monitor.search.snippet import Highlighter, highlight
from monitor.store.models import Item, ItemSource
from monitor.store.workspace_models import Verdict

_ITEM = Item.__table__  # type: ignore[attr-defined]
_SOURCE = ItemSource.__table__  # type: ignore[attr-defined]
_VERDICT = Verdict.__table__  # type: ignore[attr-defined]
MAX_LIMIT = 500
# FTS5's bm25 weights for the columns s, l, k: a word's own lemma counts more than its other readings
_BM25 = f"bm25({FTS_TABLE}, 1.0, 2.0, 1.0)"


@dataclass(frozen=True)
class SearchFilters:
    """Every filter is optional; given ones must all hold. `since` is inclusive and `until` exclusive
    (the CLI turns --until DATE into the end of that day)."""

    category: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    feed: str | None = None  # the item came from this feed (first, or as a duplicate of another's)
    language: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    incident: int | None = None
    # The analysts' verdicts (monitor.store.verdicts): "confirm", "reject" or "add" (the verdict in force on
    # `category` when one is given, else on any category), "any" (reviewed at all) or "none" (not yet).
    verdict: str | None = None


@dataclass(frozen=True)
class SearchHit:
    item_id: int
    score: float  # higher is better; comparable within one result list only
    title: str  # as stored (untrusted: escape it, or use title_html)
    title_html: str  # escaped, matches in <mark>
    snippet_html: str  # escaped window of the text around the first match, matches in <mark>
    url: str | None
    feed: str
    language: str | None
    published: datetime
    categories: list[str]  # the rules' categories with the analysts' verdicts applied
    countries: list[str]
    incident: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "score": self.score,
            "title": self.title,
            "title_html": self.title_html,
            "snippet_html": self.snippet_html,
            "url": self.url,
            "feed": self.feed,
            "language": self.language,
            "published": self.published.isoformat(),
            "categories": self.categories,
            "countries": self.countries,
            "incident": self.incident,
        }


@dataclass(frozen=True)
class SearchResults:
    query: str
    hits: list[SearchHit] = field(default_factory=list)
    offset: int = 0
    more: bool = False  # another page exists after this one

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "offset": self.offset,
            "more": self.more,
            "hits": [h.to_json() for h in self.hits],
        }


def _json_contains(dialect: str, column: str, name: str) -> Any:
    # Lists are JSON, which the two databases unpack differently
    if dialect == "sqlite":
        sql = f"EXISTS (SELECT 1 FROM json_each(item.{column}) WHERE json_each.value = :{name})"
    else:
        sql = f"EXISTS (SELECT 1 FROM json_array_elements_text(item.{column}) AS e(v) WHERE e.v = :{name})"
    return text(sql).bindparams(bindparam(name, type_=String))


VERDICT_FILTERS = ("confirm", "reject", "add", "any", "none")
# The verdict in force on (item, category) is the latest row (highest id), as in monitor.store.verdicts.
_LATEST = "(SELECT v.verdict FROM verdict v WHERE v.item_id = item.id AND v.category = :f_vcat ORDER BY v.id DESC LIMIT 1)"


def _category_condition(dialect: str) -> Any:
    """The item is in the category :f_category once verdicts are applied: the rules put it there and no analyst
    rejected it, or an analyst confirmed or added it (verdicts win over the rules everywhere, search included)."""
    rules = _json_contains(dialect, "categories", "f_category").text
    params = [bindparam("f_vcat", type_=String), bindparam("f_category", type_=String)]
    if dialect == "sqlite":
        # A substring test first, on the covering index's copy of the JSON: most items lack the category, and
        # opening json_each for each of them was an eighth of a filtered query's SQL. The JSON list is
        # Python's json.dumps, so a category it holds appears in it as its own json.dumps; the test only
        # skips rows json_each would refuse too (see _filter_params for ids written otherwise).
        rules = f"instr(item.categories, :f_category_json) AND {rules}"
        params.append(bindparam("f_category_json", type_=String))
    return text(
        f"COALESCE({_LATEST}, CASE WHEN {rules} THEN 'rules' END) IN ('rules', 'confirm', 'add')"
    ).bindparams(*params)


def _verdict_condition(verdict: str, on_category: bool) -> Any:
    on_cat = " AND v.category = :f_vcat" if on_category else ""
    if verdict in ("any", "none"):
        sql = f"EXISTS (SELECT 1 FROM verdict v WHERE v.item_id = item.id{on_cat})"
        if verdict == "none":
            sql = "NOT " + sql
    elif on_category:
        sql = f"{_LATEST} = :f_verdict"
    else:
        sql = (
            "EXISTS (SELECT 1 FROM verdict v WHERE v.item_id = item.id AND v.verdict = :f_verdict AND v.id = "
            "(SELECT max(v2.id) FROM verdict v2 WHERE v2.item_id = v.item_id AND v2.category = v.category))"
        )
    params = [bindparam("f_verdict", type_=String)] if ":f_verdict" in sql else []
    if on_category:
        params.append(bindparam("f_vcat", type_=String))
    return text(sql).bindparams(*params)


class _ThroughFilterIndex(TableClause):
    """The item table as a filtered search reads it on SQLite: through the covering index of the filter
    columns (backends.FILTER_INDEX), named with INDEXED BY because without ANALYZE statistics the planner
    takes the primary key and reads every matching item's whole row (half of a filtered query's time on
    200,000 items with 2.7 KB of html each)."""

    inherit_cache = True


@compiles(_ThroughFilterIndex, "sqlite")
def _indexed_by(element: _ThroughFilterIndex, compiler: Any, **kw: Any) -> str:
    sql: str = compiler.visit_table(element, **kw)
    return f"{sql} INDEXED BY {FILTER_INDEX}" if kw.get("asfrom") else sql


_ITEM_FILTERED = _ThroughFilterIndex("item", *(column(c, _ITEM.c[c].type) for c in ("id", *FILTER_COLUMNS)))


_PLAIN_ID = re.compile(r"[a-z0-9_]+")


def _filter_params(f: SearchFilters) -> dict[str, Any]:
    """The bound values of the filters given. Their names are the shape of the ranked statement, which is
    built once per database, set of filters and verdict filter (_ranked_statement): building it on every
    search cost more than running its SQL on SQLite."""
    p: dict[str, Any] = {}
    if f.category:
        p["f_category"] = p["f_vcat"] = f.category
        # SQLite's substring test (_category_condition); for an id that JSON might escape in more than one
        # way, the empty string, which instr finds in any text, leaves the decision to json_each alone
        safe = _PLAIN_ID.fullmatch(f.category) is not None
        p["f_category_json"] = json.dumps(f.category) if safe else ""
    if f.country:
        p["f_country"] = f.country.upper()
    if f.feed:
        p["f_feed"] = f.feed
    if f.language:
        p["f_language"] = f.language.lower()
    if f.since is not None:
        p["f_since"] = f.since
    if f.until is not None:
        p["f_until"] = f.until
    if f.incident is not None:
        p["f_incident"] = f.incident
    if f.verdict:
        if f.verdict not in VERDICT_FILTERS:
            raise SearchFilterError(f"verdict must be one of {', '.join(VERDICT_FILTERS)}, not {f.verdict!r}")
        if f.verdict not in ("any", "none"):
            p["f_verdict"] = f.verdict
        if f.category:
            p["f_vcat"] = f.category
    return p


def _conditions(dialect: str, given: frozenset[str], verdict: str | None, item: Any) -> list[Any]:
    c: list[Any] = []
    if "f_category" in given:
        c.append(_category_condition(dialect))
    if "f_country" in given:
        c.append(_json_contains(dialect, "countries", "f_country"))
    if "f_feed" in given:
        feed = bindparam("f_feed", type_=String)
        c.append(
            or_(
                item.c.feed_id == feed,
                exists().where(_SOURCE.c.item_id == item.c.id, _SOURCE.c.feed_id == feed),
            )
        )
    if "f_language" in given:
        c.append(item.c.language == bindparam("f_language", type_=item.c.language.type))
    if "f_since" in given:
        c.append(item.c.published >= bindparam("f_since", type_=item.c.published.type))
    if "f_until" in given:
        c.append(item.c.published < bindparam("f_until", type_=item.c.published.type))
    if "f_incident" in given:
        c.append(item.c.incident_id == bindparam("f_incident", type_=item.c.incident_id.type))
    if verdict:
        c.append(_verdict_condition(verdict, "f_category" in given))
    return c


_LIMIT = bindparam("limit", type_=Integer)
_OFFSET = bindparam("offset", type_=Integer)


@lru_cache(maxsize=512)
def _ranked_statement(dialect: str, given: frozenset[str], verdict: str | None) -> Any:
    """(id, score) of the matching items, best first, for a query bound as :match (SQLite) or :tsq."""
    item = _ITEM_FILTERED if dialect == "sqlite" else _ITEM
    conditions = _conditions(dialect, given, verdict, item)
    if dialect == "sqlite":
        fts = table(FTS_TABLE, column("rowid"))
        score = literal_column(_BM25, Float)
        match = text(f"{FTS_TABLE} MATCH :match").bindparams(bindparam("match", type_=String))
        if not conditions:  # the index alone answers: no item row is read for the items not shown
            stmt = select(fts.c.rowid, score).where(match).order_by(score, fts.c.rowid.desc())
        else:
            stmt = (
                select(item.c.id, score)
                .select_from(item.join(fts, fts.c.rowid == item.c.id))
                .where(match, *conditions)
                .order_by(score, item.c.id.desc())
            )
        return stmt.limit(_LIMIT).offset(_OFFSET)
    idx = table(PG_TABLE, column("item_id"), column("doc"), column("head"))
    q = cast(bindparam("tsq", type_=String), TSQUERY)
    # ranked by the title and lead (backends.tsvector_literals): matched rows' whole documents are not read
    rank = func.ts_rank(idx.c.head, q, type_=Float)
    if conditions:
        stmt = (
            select(_ITEM.c.id, rank)
            .select_from(_ITEM.join(idx, idx.c.item_id == _ITEM.c.id))
            .where(idx.c.doc.op("@@")(q), *conditions)
            .order_by(rank.desc(), _ITEM.c.id.desc())
        )
    else:  # as on SQLite, the index alone answers
        stmt = (
            select(idx.c.item_id, rank)
            .where(idx.c.doc.op("@@")(q))
            .order_by(rank.desc(), idx.c.item_id.desc())
        )
    return stmt.limit(_LIMIT).offset(_OFFSET)


# A top-20 query gains nothing from parallel workers, and starting them cost more than the query (58 of 66 ms for
# a common word, 200,000 items on 2 cores): none for the ranked statement, the caller's setting back after it.
_NO_PARALLEL = text(
    "SELECT current_setting('max_parallel_workers_per_gather'), "
    "set_config('max_parallel_workers_per_gather', '0', true)"
)
_SET_PARALLEL = text("SELECT set_config('max_parallel_workers_per_gather', :v, true)")


def _ranked_ids(
    db: Connection,
    query_node: Any,
    params: dict[str, Any],
    verdict: str | None,
    limit: int,
    offset: int,
) -> list[tuple[int, float]]:
    dialect = db.dialect.name
    stmt = _ranked_statement(dialect, frozenset(params), verdict)
    bound = {**params, "limit": limit, "offset": offset}
    if dialect == "sqlite":
        bound["match"] = fts5_match(query_node)
        # bm25 is lower for better matches
        return [(r[0], -float(r[1])) for r in db.execute(stmt, bound)]
    bound["tsq"] = tsquery(query_node)
    before = db.execute(_NO_PARALLEL).scalar_one()
    rows = db.execute(stmt, bound).all()
    # (a failed statement aborts the transaction, whose rollback undoes the setting too)
    db.execute(_SET_PARALLEL, {"v": before})
    return [(r[0], float(r[1])) for r in rows]


def search(
    db: Engine | Session | Connection,
    query: str,
    *,
    filters: SearchFilters | None = None,
    limit: int = 20,
    offset: int = 0,
) -> SearchResults:
    """Items matching `query` (see monitor.search.query for the syntax), best first.

    Raises SearchQueryError for a malformed query (with the position), SearchFilterError for a filter that
    cannot be applied. Reads only; takes an engine, a session or a connection."""
    node = parse_query(query)  # before touching the database: a bad query costs nothing
    f = filters or SearchFilters()
    params = _filter_params(f)  # a bad filter costs nothing either
    limit = max(1, min(int(limit), MAX_LIMIT))
    offset = max(0, int(offset))
    if isinstance(db, Engine):
        with db.connect() as conn:
            return _search(conn, query, node, params, f.verdict or None, limit, offset)
    # A session's own connection (its transaction): the statements are Core, and the session's ORM execution
    # path only added work to each of them
    conn = db.connection() if isinstance(db, Session) else db
    return _search(conn, query, node, params, f.verdict or None, limit, offset)


# The shown items' fields and every verdict on them, in one statement (an item without verdicts comes once, with
# NULLs; one with verdicts once per verdict)
_HIT_ROWS = (
    select(
        _ITEM.c.id,
        _ITEM.c.title,
        _ITEM.c.text,
        _ITEM.c.url,
        _ITEM.c.feed_id,
        _ITEM.c.language,
        _ITEM.c.published,
        _ITEM.c.categories,
        _ITEM.c.countries,
        _ITEM.c.incident_id,
        _VERDICT.c.id,
        _VERDICT.c.category,
        _VERDICT.c.verdict,
    )
    .select_from(_ITEM.outerjoin(_VERDICT, _VERDICT.c.item_id == _ITEM.c.id))
    .where(_ITEM.c.id.in_(bindparam("ids", expanding=True)))
)


def _with_verdicts(rules: list[str], verdicts: dict[str, str]) -> list[str]:
    """The categories a result shows: the analysts' verdicts win over the rules, as everywhere else."""
    cats = [c for c in rules if verdicts.get(c) != "reject"]
    cats += sorted(c for c, v in verdicts.items() if v in ("confirm", "add") and c not in cats)
    return cats


def _search(
    db: Connection,
    query: str,
    node: Any,
    params: dict[str, Any],
    verdict: str | None,
    limit: int,
    offset: int,
) -> SearchResults:
    ranked = _ranked_ids(db, node, params, verdict, limit + 1, offset)
    more = len(ranked) > limit
    ranked = ranked[:limit]
    if not ranked:
        return SearchResults(query=query, offset=offset)
    rows: dict[int, Any] = {}
    found: list[tuple[int, int, str, str]] = []  # (verdict id, item, category, verdict)
    for row in db.execute(_HIT_ROWS, {"ids": [i for i, _ in ranked]}):
        rows.setdefault(row[0], row)
        if row[10] is not None:
            found.append((row[10], row[0], row[11], row[12]))
    # the verdict in force on (item, category) is the latest (highest id), as monitor.store.verdicts orders them
    verdicts: dict[int, dict[str, str]] = {}
    for _, item_id, category, v in sorted(found):
        verdicts.setdefault(item_id, {})[category] = v
    hl = Highlighter.for_query(node)
    hits = []
    for item_id, score in ranked:
        r = rows.get(item_id)
        if r is None:  # the item went between the two reads
            continue
        title_html, _ = highlight(r.title or "", hl, r.language, whole=True)
        snippet_html, _ = highlight(r.text or "", hl, r.language)
        hits.append(
            SearchHit(
                item_id=item_id,
                score=score,
                title=r.title or "",
                title_html=title_html,
                snippet_html=snippet_html,
                url=r.url,
                feed=r.feed_id,
                language=r.language,
                published=r.published,
                categories=_with_verdicts(list(r.categories or []), verdicts.get(item_id, {})),
                countries=list(r.countries or []),
                incident=r.incident_id,
            )
        )
    return SearchResults(query=query, hits=hits, offset=offset, more=more)
