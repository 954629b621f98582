"""The two index formats and the two query languages, generated from our own tokens and syntax tree.

SQLite: an FTS5 table `item_fts(s, l, k)` (rowid = item id; stored contentless where SQLite can delete from
such a table, 3.43 and later), tokenizer `ascii`: our tokens are separated by
spaces and contain no ASCII punctuation, so it keeps each one whole and changes nothing in it.
PostgreSQL: `item_search(item_id, doc tsvector)` with a GIN index. The tsvector is written as a literal, so
PostgreSQL's parser never sees the text either; the three streams share positions and are told apart by a
mark (surface as is, "~" lemma, "^" key), and title positions carry weight A so ts_rank prefers them.

Every token placed in a MATCH expression or a tsquery comes from monitor.search.text (word characters only)
and is quoted anyway: user text is never part of either syntax.
"""

from __future__ import annotations

from monitor.search.query import Node, Or, Phrase, Term
from monitor.search.text import Document, query_lemma_variants, query_word

FTS_TABLE = "item_fts"
PG_TABLE = "item_search"
PG_INDEX = "ix_item_search_doc"


def is_search_table(name: str) -> bool:
    """Tables the search index owns, which the ORM models do not declare (FTS5 adds shadow tables)."""
    return name in (PG_TABLE, FTS_TABLE) or name.startswith(FTS_TABLE + "_")


# ---- SQLite FTS5 -----------------------------------------------------------------------------------------


def fts5_row(doc: Document) -> tuple[str, str, str]:
    """(s, l, k) column values."""
    keys = " ".join(k for ks in doc.keys for k in ks)
    return " ".join(doc.surface), " ".join(doc.lemmas), keys


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


def tsvector_literal(doc: Document) -> str:
    positions: dict[str, list[str]] = {}
    for i, (word, lemma, keys) in enumerate(zip(doc.surface, doc.lemmas, doc.keys, strict=True)):
        pos = f"{i + 1}A" if i < doc.title_words else str(i + 1)
        positions.setdefault(word, []).append(pos)
        positions.setdefault(LEMMA_MARK + lemma, []).append(pos)
        for k in keys:
            positions.setdefault(KEY_MARK + k, []).append(pos)
    # PostgreSQL keeps at most 256 positions per lexeme; more are dropped silently, so send no more
    return " ".join(f"{_pq(lex)}:{','.join(ps[:256])}" for lex, ps in positions.items())


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
