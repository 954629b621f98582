"""The two index formats and the two query languages, generated from our own tokens and syntax tree.

SQLite: an FTS5 table `item_fts(s, l, k)` (rowid = item id; stored contentless where SQLite can delete from
such a table, 3.43 and later), tokenizer `ascii`: our tokens are separated by
spaces and contain no ASCII punctuation, so it keeps each one whole and changes nothing in it.
PostgreSQL: `item_search(item_id, doc tsvector, head tsvector)`, a GIN index on doc; head (title and lead)
is what results are ranked by. The tsvectors are written as literals, so PostgreSQL's parser never sees the
text either; the three streams share positions and are told apart by a mark (surface as is, "~" lemma, "^"
key), and title positions carry weight A so ts_rank prefers them.

Every token placed in a MATCH expression or a tsquery comes from monitor.search.text (word characters only)
and is quoted anyway: user text is never part of either syntax.
"""

from __future__ import annotations

from monitor.search.query import Node, Or, Phrase, Term
from monitor.search.text import Document, query_lemma_variants, query_word

FTS_TABLE = "item_fts"
PG_TABLE = "item_search"
PG_INDEX = "ix_item_search_doc"


# A covering index of the item columns the filters read, keyed by id: a filtered search looks each matching
# id up in it instead of in the item table, whose rows are wide (text, html) and put these columns after them.
FILTER_INDEX = "ix_item_search_filter"
FILTER_COLUMNS = ("language", "published", "feed_id", "incident_id", "categories", "countries")


def is_search_table(name: str) -> bool:
    """Tables (and the index) the search index owns, which the ORM models do not declare (FTS5 adds shadow
    tables; the filter index's columns differ by database)."""
    return name in (PG_TABLE, FTS_TABLE, FILTER_INDEX) or name.startswith(FTS_TABLE + "_")


# ---- SQLite FTS5 -----------------------------------------------------------------------------------------


def fts5_row(doc: Document) -> tuple[str, str, str]:
    """(s, l, k) column values: the streams joined by spaces (made once per document, in the poll's language
    worker for new items)."""
    return doc.joined()


def _fq(tokens: list[str] | tuple[str, ...]) -> str:
    return '"' + " ".join(t.replace('"', '""') for t in tokens) + '"'


def fts5_match(node: Node) -> str:
    """FTS5 MATCH expression for a query tree."""
    if isinstance(node, Term):
        if node.prefix:
            return f"(s : {_fq([node.word])}*)"
        # bm25's cost grows with the number of phrases in the expression: one per lemma, one per key
        qw = query_word(node.word)
        alts = [f"{{l k}} : {_fq([lem])}" for lem in qw.lemmas] + [f"k : {_fq([k])}" for k in qw.keys]
        return "(" + " OR ".join(alts) + ")"
    if isinstance(node, Phrase):
        alts = [f"l : {_fq(v)}" for v in query_lemma_variants(list(node.words))]
        return "(" + " OR ".join(alts) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(fts5_match(p) for p in node.parts) + ")"
    expr = "(" + " AND ".join(fts5_match(p) for p in node.include) + ")"
    for ex in node.exclude:
        expr = f"({expr} NOT {fts5_match(ex)})"
    return expr


# ---- PostgreSQL ------------------------------------------------------------------------------------------

LEMMA_MARK, KEY_MARK = "~", "^"


def _pq(token: str) -> str:
    # tsvector/tsquery literal quoting: a quote is doubled, a backslash escapes
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


# The ranking vector: the title and the start of the text, where news puts what an item is about
HEAD_WORDS = 60


def _tsvector(doc: Document, end: int, *, all_positions: bool) -> str:
    positions: dict[str, list[str]] = {}
    bare: dict[str, None] = {}
    for i in range(end):
        word, lemma, keys = doc.surface[i], doc.lemmas[i], doc.keys[i]
        pos = f"{i + 1}A" if i < doc.title_words else str(i + 1)
        positions.setdefault(LEMMA_MARK + lemma, []).append(pos)
        if all_positions:
            positions.setdefault(word, []).append(pos)
            for k in keys:
                positions.setdefault(KEY_MARK + k, []).append(pos)
        else:
            bare.setdefault(word, None)
            bare.update((KEY_MARK + k, None) for k in keys)
    # PostgreSQL keeps at most 256 positions per lexeme; more are dropped silently, so send no more
    out = [f"{_pq(lex)}:{','.join(ps[:256])}" for lex, ps in positions.items()]
    out += [_pq(lex) for lex in bare if lex not in positions]
    return " ".join(out)


def tsvector_literals(doc: Document) -> tuple[str, str]:
    """(doc, head) tsvector literals. `doc` is what a query matches: positions only on lemmas (phrases are
    matched on lemmas; surface words serve prefixes and keys single words, neither needs a position), which
    keeps it small. `head` is what ts_rank reads: every stream of the title and the first HEAD_WORDS words
    of the text, with positions and the title's weight A; ranking from it reads a few hundred bytes per
    matching row instead of the whole document (a long article's is TOASTed)."""
    n = len(doc.surface)
    return (
        _tsvector(doc, n, all_positions=False),
        _tsvector(doc, min(n, doc.title_words + HEAD_WORDS), all_positions=True),
    )


def tsquery(node: Node) -> str:
    """tsquery text (to be CAST, never parsed by to_tsquery) for a query tree."""
    if isinstance(node, Term):
        if node.prefix:
            return f"{_pq(node.word)}:*"
        qw = query_word(node.word)
        alts = [_pq(m + lem) for lem in qw.lemmas for m in (LEMMA_MARK, KEY_MARK)]
        alts += [_pq(KEY_MARK + k) for k in qw.keys]
        return "(" + " | ".join(alts) + ")"
    if isinstance(node, Phrase):
        alts = []
        for v in query_lemma_variants(list(node.words)):
            alts.append("(" + " <-> ".join(_pq(LEMMA_MARK + w) for w in v) + ")")
        return "(" + " | ".join(alts) + ")"
    if isinstance(node, Or):
        return "(" + " | ".join(tsquery(p) for p in node.parts) + ")"
    expr = "(" + " & ".join(tsquery(p) for p in node.include) + ")"
    for ex in node.exclude:
        expr = f"({expr} & !{tsquery(ex)})"
    return expr
