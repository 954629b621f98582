"""Full-text search on both databases: Russian and Kazakh inflection, ё/е, the query syntax, filters, hostile
queries and hostile stored content. Items are written by write_entries, the poll's own storing step."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.config.load import load_config
from monitor.config.models import FeedConfig
from monitor.ingest.decide import plan_entries
from monitor.ingest.parse import Entry
from monitor.ingest.poll import poll_once
from monitor.search import SearchFilterError, SearchFilters, SearchQueryError, rebuild_index, search
from monitor.search.backends import FTS_TABLE, PG_TABLE
from monitor.service.retention import prune_unmatched
from monitor.store.engine import session_scope
from monitor.store.items import StoreStats, load_known, write_entries
from monitor.store.models import Feed, Item
from tests.support.feedserver import FeedServer

DATA = Path(__file__).resolve().parent / "data"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

# (key, feed, language, title, text, days after T0)
DOCS = [
    (
        "ru_detained",
        "ru",
        "ru",
        "Полиция задержала активистов",
        "У здания акимата в Алматы задержали пятерых.",
        0,
    ),
    (
        "ru_charged",
        "ru",
        "ru",
        "Журналист задержан в Астане",
        "Ему предъявлено обвинение в распространении.",
        1,
    ),
    ("ru_fined", "ru", "ru", "Суд оштрафовал блогера", "Блогера оштрафовали за пост о митинге.", 2),
    ("ru_yo", "ru", "ru", "Правозащитница Алёна Петрова вызвана на допрос", "Её вызвали повесткой.", 3),
    ("ru_e", "ru2", "ru", "Алена Сидорова освобождена", "Активистку отпустили под подписку.", 4),
    (
        "kk_detained",
        "kk",
        "kk",
        "Белсенділер Алматыда қамалды",
        "Полиция бейбіт жиынға келгендерді ұстады.",
        5,
    ),
    ("kk_arrest", "kk", "kk", "Журналист қамауға алынды", "Сот журналисті екі айға қамауға алды.", 6),
    ("kk_protest", "kk", "kk", "Наразылығы үшін айыппұл", "Наразылықтар жалғасуда, дейді тұрғындар.", 7),
    (
        "en_detained",
        "en",
        "en",
        "Police detained protesters in Almaty",
        "Protesters were detained at a rally.",
        8,
    ),
    ("en_court", "en", "en", "Court fines journalist", "The journalist was fined for covering the rally.", 9),
    ("ru_steel", "ru2", "ru", "Завод выпускает прокат", "Производство стали выросло.", 10),
]


def entry(key: str, language: str, title: str, body: str, published: datetime) -> Entry:
    return Entry(
        key=key,
        guid=key,
        url=f"https://news.example.org/{key}",
        title=title,
        text=body,
        html=f"<p>{body}</p>",
        published=published,
        published_estimated=False,
        language=language,
        author=None,
        content_hash=hashlib.sha256(f"{title}\n{body}".encode()).hexdigest(),
    )


def store_entries(session: Session, feed_id: str, entries: list[Entry], *, now: datetime) -> StoreStats:
    """What the poll does with one fetched document: load what is known, decide, write."""
    known = load_known(session, feed_id, entries, now=now)
    return write_entries(session, feed_id, plan_entries(entries, known, max_hash_updates=24), now=now)


def store_docs(engine: Engine, docs: list[tuple[str, str, str, str, str, int]] = DOCS) -> dict[str, int]:
    ids: dict[str, int] = {}
    with session_scope(engine) as s:
        for fid in sorted({d[1] for d in docs}):
            if s.get(Feed, fid) is None:
                s.add(
                    Feed(
                        id=fid,
                        url=f"https://{fid}.example.org/rss",
                        config_url=f"https://{fid}.example.org/rss",
                    )
                )
        s.flush()
        for key, fid, lang, title, body, days in docs:
            when = T0 + timedelta(days=days)
            stats = store_entries(s, fid, [entry(key, lang, title, body, when)], now=when)
            ids[key] = stats.new_item_ids[0]
    return ids


@pytest.fixture
def ids(engine: Engine) -> dict[str, int]:
    return store_docs(engine)


def found(engine: Engine, query: str, **filters: object) -> set[str]:
    with session_scope(engine) as s:
        rows = dict(s.execute(text("SELECT id, url FROM item")).all())
    res = search(engine, query, filters=SearchFilters(**filters), limit=100)  # type: ignore[arg-type]
    return {rows[h.item_id].rsplit("/", 1)[1] for h in res.hits}


def test_an_inflected_russian_word_finds_the_other_forms(engine: Engine, ids: dict[str, int]) -> None:
    assert found(engine, "задержать") == {"ru_detained", "ru_charged"}
    assert found(engine, "задержанных") == {"ru_detained", "ru_charged"}
    assert found(engine, "Оштрафован") == {"ru_fined"}


def test_a_kazakh_dictionary_form_finds_its_inflections_as_a_rule_term_does(
    engine: Engine, ids: dict[str, int]
) -> None:
    assert found(engine, "қамау") == {"kk_detained", "kk_arrest"}  # қамалды, қамауға
    assert found(engine, "наразылық") == {"kk_protest"}  # наразылығы, наразылықтар
    assert found(engine, "алматы") == {"ru_detained", "kk_detained"}  # Алматы, Алматыда
    assert found(engine, "журналист") >= {"kk_arrest", "ru_charged"}


# Kazakh items, one word form each that a query must reach from another form of the same word; the look-alikes
# (сотқар, ороп, халат, жаба) share letters but are other words.
KK_FORMS = [
    ("court_loc", "Іс сотта қаралды"),  # locative
    ("court_gen", "Соттың шешімі белгілі болды"),  # genitive
    ("court_poss", "Сотында айтылды"),  # possessive 3rd person + н-locative
    ("troublemaker", "Көшеде сотқар жүр"),  # сот + derivation: another word
    ("school_poss", "Мектебі жабылды"),  # п -> б before a vowel; жабылды: passive past of жабу
    ("school_loc", "Мектепте сабақ болмады"),
    ("right_poss", "Құқығы бұзылды"),  # қ -> ғ
    ("right_pl", "Құқықтары туралы айтты"),
    ("wish_poss", "Тілегі орындалды"),  # к -> г
    ("wish_pl", "Тілектер қабылданды"),
    ("place_poss", "Орны белгісіз"),  # a high vowel drops: орын -> орны
    ("place_dat", "Орынға келді"),
    ("wrap", "Қағазды ороп берді"),  # ора- + converb: not орын
    ("people_poss", "Халқы наразы"),  # vowel drop without voicing: халық -> халқы
    ("people_gen", "Халықтың талабы"),
    ("robe", "Ақ халат киді"),
    ("close_past", "Әкім газетті жапты"),  # the verb root devoices: жабу -> жапты
    ("close_pres", "Редакцияны жабады"),
    ("close_part", "Жабылған газет"),  # passive participle
    ("arrest_past", "Белсенділер қамалды"),  # passive past of қамау
    ("arrest_dat", "Журналист қамауға алынды"),  # the verbal noun in the dative
    ("arrest_part", "Қамалған белсенді босатылды"),  # participle
    ("arrest_conv", "Оны қамап қойды"),  # converb
    ("read_past", "Хатты оқыды"),  # оқу: a hidden stem vowel
    ("read_noun", "Оқу басталды"),
]


@pytest.fixture
def kk_ids(engine: Engine) -> dict[str, int]:
    return store_docs(engine, [(k, "kk", "kk", title, "", i) for i, (k, title) in enumerate(KK_FORMS)])


@pytest.mark.parametrize(
    ("queries", "expected"),
    [
        (("сотта", "соттың", "сотында", "сот"), {"court_loc", "court_gen", "court_poss"}),
        (("мектебі", "мектепте", "мектеп"), {"school_poss", "school_loc"}),
        (("құқығы", "құқықтары", "құқық"), {"right_poss", "right_pl"}),
        (("тілегі", "тілектер", "тілек"), {"wish_poss", "wish_pl"}),
        (("орны", "орынға", "орын"), {"place_poss", "place_dat"}),
        (("халқы", "халықтың", "халық"), {"people_poss", "people_gen"}),
        (("жапты", "жабады", "жабылған", "жабу"), {"close_past", "close_pres", "close_part", "school_poss"}),
        (
            ("қамалды", "қамауға", "қамалған", "қамап", "қамау"),
            {"arrest_past", "arrest_dat", "arrest_part", "arrest_conv"},
        ),
        (("оқыды", "оқу"), {"read_past", "read_noun"}),
    ],
)
def test_an_inflected_kazakh_word_finds_the_other_forms_of_its_word(
    engine: Engine, kk_ids: dict[str, int], queries: tuple[str, ...], expected: set[str]
) -> None:
    # each form, the dictionary form last, finds the same items: case endings, possessives, plurals, past tense,
    # participles, converbs and the к/г, қ/ғ, п/б alternations read back to the word the rules would write
    assert {q: found(engine, q) for q in queries} == {q: expected for q in queries}


def test_a_kazakh_inflected_query_word_marks_the_other_forms_in_snippets(
    engine: Engine, kk_ids: dict[str, int]
) -> None:
    hits = {h.item_id: h.title_html for h in search(engine, "қамалды", limit=50).hits}
    assert hits[kk_ids["arrest_dat"]] == "Журналист <mark>қамауға</mark> алынды"
    assert hits[kk_ids["arrest_conv"]] == "Оны <mark>қамап</mark> қойды"


def test_an_ambiguous_word_is_found_under_each_of_its_lemmas(engine: Engine, ids: dict[str, int]) -> None:
    # pymorphy reads "стали" first as a form of стать; it is also a form of сталь
    assert found(engine, "сталь") == {"ru_steel"}
    assert "<mark>стали</mark>" in search(engine, "сталь").hits[0].snippet_html


def test_yo_and_ye_are_the_same_letter(engine: Engine, ids: dict[str, int]) -> None:
    assert found(engine, "Алёна") == {"ru_yo", "ru_e"}
    assert found(engine, "алена") == {"ru_yo", "ru_e"}
    assert found(engine, "ее") == {"ru_yo"}


def test_english_regular_inflection(engine: Engine, ids: dict[str, int]) -> None:
    assert found(engine, "detain") == {"en_detained"}
    assert found(engine, "fined") == {"en_court"}
    assert found(engine, "protester") == {"en_detained"}


def test_words_phrases_exclusion_or_and_prefix(engine: Engine, ids: dict[str, int]) -> None:
    assert found(engine, "задержать Алматы") == {"ru_detained"}  # every word must occur
    assert found(engine, '"задержали активистов"') == {
        "ru_detained"
    }  # phrase of lemmas: задержала активистов
    assert found(engine, '"активистов задержали"') == set()  # order matters
    assert found(engine, '"journalist was fined"') == {"en_court"}
    assert found(engine, "задержать -журналист") == {"ru_detained"}
    assert found(engine, "оштрафовать OR освободить") == {"ru_fined", "ru_e"}
    assert found(engine, "оштраф*") == {"ru_fined"}
    assert found(engine, "journ*") == {"en_court"}
    assert found(engine, "журн*") == {"ru_charged", "kk_arrest"}
    assert found(engine, "(суд OR сот) -блогер") == {"kk_arrest"}


def test_filters(engine: Engine, ids: dict[str, int]) -> None:
    with session_scope(engine) as s:
        s.execute(
            update(Item)
            .where(Item.id == ids["ru_detained"])
            .values(categories=["protest_crackdown"], countries=["KZ"], incident_id=7)
        )  # type: ignore[arg-type]
        s.execute(
            update(Item)
            .where(Item.id == ids["ru_charged"])
            .values(categories=["prosecution"], countries=["KZ"])
        )  # type: ignore[arg-type]
    assert found(engine, "задержать", category="protest_crackdown") == {"ru_detained"}
    assert found(engine, "задержать", country="kz") == {"ru_detained", "ru_charged"}
    assert found(engine, "задержать", country="RU") == set()
    assert found(engine, "алматы", language="kk") == {"kk_detained"}
    assert found(engine, "алена", feed="ru2") == {"ru_e"}
    assert found(engine, "задержать", since=T0 + timedelta(days=1)) == {"ru_charged"}
    assert found(engine, "задержать", until=T0 + timedelta(days=1)) == {"ru_detained"}
    assert found(engine, "задержать", incident=7) == {"ru_detained"}


def test_category_filter_takes_only_whole_ids_and_any_spelling(engine: Engine, ids: dict[str, int]) -> None:
    # SQLite looks for the category's JSON string in the list before unpacking it: a longer id holding the
    # one asked for is not a match, and an id JSON can write in more than one way is found however the list
    # was written (here by raw SQL, without the escapes Python's json writes)
    value = ":c" if engine.dialect.name == "sqlite" else "CAST(:c AS JSON)"
    with session_scope(engine) as s:
        s.execute(update(Item).where(Item.id == ids["ru_detained"]).values(categories=["prosecution_x"]))  # type: ignore[arg-type]
        s.execute(
            text(f"UPDATE item SET categories = {value} WHERE id = :id"),
            {"c": '["преследование", "a\\"b", "prosecution"]', "id": ids["ru_charged"]},
        )
    assert found(engine, "задержать", category="prosecution") == {"ru_charged"}
    assert found(engine, "задержать", category="prosecution_x") == {"ru_detained"}
    assert found(engine, "задержать", category="преследование") == {"ru_charged"}
    assert found(engine, "задержать", category='a"b') == {"ru_charged"}


def test_verdicts_filter_and_win_over_the_rules(engine: Engine, ids: dict[str, int]) -> None:
    from monitor.store.verdicts import record_verdict

    with session_scope(engine) as s:
        s.execute(
            update(Item)
            .where(Item.id.in_([ids["ru_detained"], ids["ru_charged"]]))
            .values(categories=["prosecution"])
        )  # type: ignore[arg-type, union-attr]
        record_verdict(s, ids["ru_detained"], "prosecution", "confirm", author="ana")
        record_verdict(s, ids["ru_charged"], "prosecution", "confirm", author="ana")
        record_verdict(s, ids["ru_charged"], "prosecution", "reject", author="bo")  # the later one wins
        record_verdict(s, ids["ru_fined"], "prosecution", "add", author="ana")
    assert found(engine, "задержать OR оштрафовать", category="prosecution") == {"ru_detained", "ru_fined"}
    assert found(engine, "задержать", verdict="confirm") == {"ru_detained"}
    assert found(engine, "задержать", verdict="reject") == {"ru_charged"}
    assert found(engine, "задержать OR оштрафовать", verdict="add", category="prosecution") == {"ru_fined"}
    assert found(engine, "задержать OR оштрафовать OR блогер", verdict="any") == {
        "ru_detained",
        "ru_charged",
        "ru_fined",
    }
    assert found(engine, "задержать OR алена", verdict="none") == {"ru_yo", "ru_e"}
    shown = {h.item_id: h.categories for h in search(engine, "задержать OR оштрафовать").hits}
    assert shown == {
        ids["ru_detained"]: ["prosecution"],
        ids["ru_charged"]: [],
        ids["ru_fined"]: ["prosecution"],
    }
    with pytest.raises(SearchFilterError, match="verdict must be one of"):
        search(engine, "задержать", filters=SearchFilters(verdict="maybe"))


def test_results_are_ranked_and_snippets_marked(engine: Engine, ids: dict[str, int]) -> None:
    res = search(engine, "блогер")
    assert [h.item_id for h in res.hits] == [ids["ru_fined"]]
    hit = res.hits[0]
    assert hit.title_html == "Суд оштрафовал <mark>блогера</mark>"
    assert hit.snippet_html == "<mark>Блогера</mark> оштрафовали за пост о митинге."
    # two matching words rank above one
    more = search(engine, "journalist OR fined OR rally")
    assert more.hits[0].item_id == ids["en_court"] and more.hits[0].score > more.hits[-1].score


def test_a_match_past_the_lead_is_found_and_ranks_below_one_in_the_title(engine: Engine) -> None:
    filler = " ".join(
        f"слово{i}" for i in range(120)
    )  # longer than the lead that ranks (backends.HEAD_WORDS)
    ids = store_docs(
        engine,
        [
            ("deep", "ru", "ru", "Новости дня", f"{filler} Блогера задержали у здания суда.", 0),
            ("title", "ru", "ru", "Блогер задержан", "Подробности позже.", 1),
        ],
    )
    res = search(engine, "блогер")
    assert [h.item_id for h in res.hits] == [ids["title"], ids["deep"]]
    assert "<mark>Блогера</mark> задержали" in res.hits[1].snippet_html
    assert found(engine, '"здания суда"') == {"deep"}  # a phrase far in the text is matched too


def test_a_search_leaves_the_callers_parallel_setting_as_it_was(engine: Engine, ids: dict[str, int]) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("a PostgreSQL setting")
    with session_scope(engine) as s:
        s.execute(text("SET LOCAL max_parallel_workers_per_gather = 3"))
        assert found(engine, "задержать") == {"ru_detained", "ru_charged"}
        assert [h.item_id for h in search(s, "задержать").hits]
        assert s.execute(text("SHOW max_parallel_workers_per_gather")).scalar_one() == "3"


def test_filtered_search_reads_the_covering_index_not_the_item_rows(
    engine: Engine, ids: dict[str, int]
) -> None:
    from sqlalchemy import event

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, st, *_a: statements.append(st))
    search(engine, "задержать", filters=SearchFilters(language="ru", since=T0, country="KZ"))
    if engine.dialect.name != "sqlite":
        with engine.connect() as c:
            n = c.execute(text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_item_search_filter'"))
            assert n.scalar_one() == 1  # its use depends on the visibility map (vacuum): not asserted
        return
    ranked = next(st for st in statements if "MATCH" in st)
    with engine.connect() as c:
        plan = " ".join(r[3] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + ranked.replace("?", "NULL")))
    assert "COVERING INDEX ix_item_search_filter" in plan


@pytest.mark.parametrize(
    ("query", "problem", "position"),
    [
        ('"задержали активистов', "unbalanced quote", 1),
        ('polic "x', "unbalanced quote", 7),
        ("OR", "OR needs a term", 1),
        ("задержать OR", "OR needs a term after it", 11),
        ("a OR OR b", "OR needs a term after it", 3),
        ("*", "'*' must follow a word", 1),
        ("a *", "'*' must follow a word", 3),
        ("NEAR(a b", "'(' is never closed", 5),
        ("a b)", "')' without a matching '('", 4),
        ("-журналист", "cannot only exclude", 1),
        ("x*", "too short", 1),
        ("!!! ???", "no words to search for", None),
        ("", "no words to search for", None),
        ("слово " * 2000, "at most 1000", 1001),
        (" ".join(f"w{i}" for i in range(40)), "too many terms", 100),
    ],
)
def test_malformed_queries_name_the_problem_and_where(
    engine: Engine, query: str, problem: str, position: int | None
) -> None:
    with pytest.raises(SearchQueryError) as info:
        search(engine, query)
    assert problem in info.value.message
    if position is not None and problem != "too many terms":
        assert info.value.position == position
    assert "invalid search query" in str(info.value)


HOSTILE_QUERIES = [
    "title:x",
    "s : задержать",
    "{s l k} : x",
    "NEAR(a b, 2)",
    "a NEAR b",
    "'; DROP TABLE item; --",
    "1 OR 1=1",
    "x' OR '1'='1",
    '"" задержать',
    '"a" "b"',
    "a:b:c ^x $y",
    "\\ ' % _ ; --",
    "задержать:*",
    "a & b | !c <-> d",
    "a**",
    "**a",
    "-- -",
    "\x00 задержать \x1f",
    "😀 задержать",
    "(((a)))",
    "AND a",
    "a AND",
    "NOT",
    "a - b",
    "ǅ ﬁ Ⅻ",
    "w" * 150,
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_hostile_queries_give_results_or_a_clear_error_never_a_backend_error(
    engine: Engine, ids: dict[str, int], query: str
) -> None:
    try:
        res = search(engine, query)
    except SearchQueryError as exc:
        assert exc.message and "syntax" not in exc.message.lower()
    else:
        assert all(h.item_id in ids.values() for h in res.hits)
    assert "item" in inspect(engine).get_table_names()
    assert found(engine, "блогер") == {"ru_fined"}


def test_colon_and_sql_text_are_plain_words(engine: Engine, ids: dict[str, int]) -> None:
    assert found(engine, "суд:оштрафовал") == {"ru_fined"}  # the phrase "суд оштрафовал", not a column filter
    assert found(engine, "'; DROP TABLE item; --") == set()


def test_the_same_query_finds_the_same_items_after_a_rebuild(engine: Engine, ids: dict[str, int]) -> None:
    before = {q: found(engine, q) for q in ("задержать", "қамау", '"задержали активистов"', "journ*")}
    with session_scope(engine) as s:
        s.execute(text(f"DELETE FROM {FTS_TABLE if engine.dialect.name == 'sqlite' else PG_TABLE}"))
    assert found(engine, "задержать") == set()
    with session_scope(engine) as s:
        assert rebuild_index(s) == len(DOCS)
    assert {q: found(engine, q) for q in before} == before


def test_an_updated_entry_is_reindexed_in_the_same_transaction(engine: Engine, ids: dict[str, int]) -> None:
    when = T0 + timedelta(days=20)
    with session_scope(engine) as s:
        stats = store_entries(
            s, "ru", [entry("ru_fined", "ru", "Суд освободил блогера", "Дело закрыто.", when)], now=when
        )
        assert stats.updated == 1
    assert found(engine, "оштрафовать") == set()
    assert found(engine, "освободить") == {"ru_fined", "ru_e"}


def test_a_failed_poll_transaction_leaves_no_index_entry(engine: Engine, ids: dict[str, int]) -> None:
    when = T0 + timedelta(days=30)
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        store_entries(
            s, "ru", [entry("ru_new", "ru", "Митинг разогнали", "Участников разогнали.", when)], now=when
        )
        raise RuntimeError("the feed's state update failed")
    assert found(engine, "разогнать") == set()


def test_pruned_text_is_no_longer_found_but_the_title_is(engine: Engine, ids: dict[str, int]) -> None:
    report = prune_unmatched(engine, days=1, now=T0 + timedelta(days=100))
    assert report.pruned == len(DOCS)
    assert found(engine, "обвинение") == set()  # was only in the text
    assert found(engine, "журналист задержан") == {"ru_charged"}  # the title stays searchable


def test_upgrade_indexes_an_existing_archive(db_url: str) -> None:
    from alembic.script import ScriptDirectory

    from monitor.store import make_engine, upgrade
    from monitor.store.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config()).walk_revisions()
    before_search = next(r.down_revision for r in scripts if (r.doc or "").startswith("search index"))
    eng = make_engine(db_url)
    upgrade(eng, str(before_search))
    with session_scope(eng) as s:
        s.add(Feed(id="old", url="https://old.example.org/rss", config_url="https://old.example.org/rss"))
        s.flush()
        # The columns that revision has, not the model's (which may have more by now).
        old_item = Item(
            feed_id="old",
            url="https://old.example.org/1",
            title="Активистов задержали",
            text="",
            language="ru",
            published=T0,
            fetched=T0,
            content_hash="x",
        )
        columns = {c["name"] for c in inspect(s.connection()).get_columns("item")}
        values = {
            c.name: getattr(old_item, c.name)
            for c in Item.__table__.c
            if c.name in columns and c.name != "id"
        }  # type: ignore[attr-defined]
        s.execute(Item.__table__.insert().values(**values))  # type: ignore[attr-defined]
    upgrade(eng)
    assert found(eng, "задержать") == {"1"}
    eng.dispose()


def test_upgrade_rebuilds_an_index_built_by_an_older_version(db_url: str) -> None:
    from monitor.store import make_engine, upgrade

    eng = make_engine(db_url)
    upgrade(eng, "0009")
    ids = store_docs(eng, [("kk_old", "kk", "kk", "Орны белгісіз", "Журналист қамауға алынды", 0)])
    with session_scope(eng) as s:  # what 0009's keys lacked: орны has no key of орын, алынды none of алу
        table = FTS_TABLE if eng.dialect.name == "sqlite" else PG_TABLE
        col = "rowid" if eng.dialect.name == "sqlite" else "item_id"
        s.execute(text(f"DELETE FROM {table} WHERE {col} = :i"), {"i": ids["kk_old"]})
    assert found(eng, "орын") == set()
    upgrade(eng)
    assert found(eng, "орын") == found(eng, "алу") == {"kk_old"}
    eng.dispose()


def test_hostile_feed_content_is_escaped_in_titles_and_snippets(engine: Engine, config_dir: Path) -> None:
    with FeedServer() as server:
        server.add(
            "/hostile.xml",
            body=(DATA / "feeds" / "hostile.xml").read_bytes(),
            content_type="application/rss+xml",
        )
        base = load_config(config_dir)
        http = base.settings.http.model_copy(update={"allow_private_networks": True})
        cfg = dataclasses.replace(
            base,
            settings=base.settings.model_copy(update={"http": http}),
            feeds=(FeedConfig(id="hostile", url=server.url("/hostile.xml")),),
        )
        asyncio.run(poll_once(engine, cfg, None, ignore_schedule=True))  # type: ignore[arg-type]
    for q in ("detained", "script OR alert OR document OR cookie", "journalist", "evil", "ministry"):
        res = search(engine, q)
        for h in res.hits:
            for fragment in (h.title_html, h.snippet_html):
                tags = re.findall(r"<[^>]*>", fragment)
                assert set(tags) <= {"<mark>", "</mark>"}, (q, fragment)
    res = search(engine, "detained")
    assert res.hits and res.hits[0].title_html == "Activists <mark>detained</mark> at Almaty rally"
    # Markup that reaches the store as text (an article quoting it) comes back as text
    title = '<script>alert("x")</script> Задержан & "осуждён"'
    body = "<img src=x onerror=alert(1)> задержали <b>пятерых</b>"
    with session_scope(engine) as s:
        store_entries(s, "hostile", [entry("raw", "ru", title, body, T0)], now=T0)
    hit = next(h for h in search(engine, "задержать script").hits)
    assert hit.title == title
    assert hit.title_html == (
        "&lt;<mark>script</mark>&gt;alert(&quot;x&quot;)&lt;/<mark>script</mark>&gt; <mark>Задержан</mark>"
        " &amp; &quot;осуждён&quot;"
    )
    assert (
        hit.snippet_html
        == "&lt;img src=x onerror=alert(1)&gt; <mark>задержали</mark> &lt;b&gt;пятерых&lt;/b&gt;"
    )


runner = CliRunner()


def test_cli_search_prints_json_and_exits_2_on_a_malformed_query(db_url: str, config_dir: Path) -> None:
    from monitor.store import make_engine, upgrade

    eng = make_engine(db_url)
    upgrade(eng)
    ids = store_docs(eng)
    eng.dispose()
    base = ["--config", str(config_dir), "--db", db_url, "search"]
    r = runner.invoke(app, [*base, "задержать", "--lang", "ru", "--since", "2026-11-21", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [h["id"] for h in doc["hits"]] == [ids["ru_charged"]]
    assert "<mark>задержан</mark>" in doc["hits"][0]["title_html"]
    r = runner.invoke(app, [*base, "задержать", "--until", "2026-11-20"])
    assert r.exit_code == 0 and "Полиция" in r.stdout and "Журналист" not in r.stdout
    r = runner.invoke(app, [*base, '"задержать'])
    assert r.exit_code == 2 and "unbalanced quote" in r.stderr and "character 1" in r.stderr
    r = runner.invoke(app, [*base, "задержать", "--since", "yesterday"])
    assert r.exit_code == 2 and "--since" in r.stderr
    r = runner.invoke(app, [*base, "задержать", "--verdict", "maybe"])
    assert r.exit_code == 2 and "verdict must be one of" in r.stderr
    r = runner.invoke(app, [*base, "задержать", "--verdict", "none", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["hits"]) == 2


def test_cli_db_reindex_rebuilds_a_lost_index(db_url: str, config_dir: Path) -> None:
    from monitor.store import make_engine, upgrade

    eng = make_engine(db_url)
    upgrade(eng)
    store_docs(eng)
    with session_scope(eng) as s:
        s.execute(text(f"DELETE FROM {FTS_TABLE if eng.dialect.name == 'sqlite' else PG_TABLE}"))
    assert found(eng, "задержать") == set()
    r = runner.invoke(app, ["--config", str(config_dir), "--db", db_url, "db", "reindex", "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["indexed"] == len(DOCS)
    assert found(eng, "задержать") == {"ru_detained", "ru_charged"}
    eng.dispose()


def test_a_document_made_ahead_is_used_only_when_it_fits_what_is_stored(engine: Engine) -> None:
    from monitor.search.index import prepare

    with session_scope(engine) as s:
        s.add(
            Feed(id="ahead", url="https://ahead.example.org/rss", config_url="https://ahead.example.org/rss")
        )
        s.flush()
        fits = entry("fits", "ru", "Суд оштрафовал журналиста", "Журналиста оштрафовали за публикацию.", T0)
        stale = entry("stale", "ru", "Завод выпускает прокат", "Производство стали выросло.", T0)
        fits = dataclasses.replace(fits, prepared=prepare(fits.title, fits.text, fits.language))
        # made from another text (as if the text changed after the worker made it): must not be used
        stale = dataclasses.replace(
            stale, prepared=prepare(stale.title, "Полиция задержала активистов.", "ru")
        )
        store_entries(s, "ahead", [fits, stale], now=T0)
    assert found(engine, "оштрафовать") == {"fits"}
    assert found(engine, "сталь") == {"stale"}  # indexed from what was stored
    assert found(engine, "задержать") == set()


def test_a_polled_item_is_indexed_as_a_rebuild_indexes_it(engine: Engine, config_dir: Path) -> None:
    from tests.support.builders import It, rss

    def index_rows() -> list[tuple[object, ...]]:
        with session_scope(engine) as s:
            if engine.dialect.name == "sqlite":
                q = f"SELECT rowid, s, l, k FROM {FTS_TABLE} ORDER BY rowid"
                if not s.execute(text(f"SELECT s FROM {FTS_TABLE} LIMIT 1")).scalar():
                    pytest.skip("a contentless index does not return its columns")
            else:
                q = f"SELECT item_id, doc::text, head::text FROM {PG_TABLE} ORDER BY item_id"
            return [tuple(r) for r in s.execute(text(q)).all()]

    items = [
        It("Алматыда белсенді қамалды", "Полиция бейбіт жиынға келгендерді ұстады, белсендіні қамауға алды."),
        It("Суд оштрафовал журналиста", "Журналиста оштрафовали за публикацию о задержании активистов."),
    ]
    with FeedServer() as server:
        server.add("/ru.xml", body=rss(items, language="ru"))  # the Kazakh item is indexed as Kazakh
        base = load_config(config_dir)
        http = base.settings.http.model_copy(update={"allow_private_networks": True})
        cfg = dataclasses.replace(
            base,
            settings=base.settings.model_copy(update={"http": http}),
            feeds=(FeedConfig(id="ru", url=server.url("/ru.xml"), language="ru"),),
        )
        asyncio.run(poll_once(engine, cfg, None, ignore_schedule=True))  # type: ignore[arg-type]
    hits = search(engine, "қамау").hits
    assert [(h.title, h.language) for h in hits] == [("Алматыда белсенді қамалды", "kk")]
    polled = index_rows()
    assert len(polled) == 2
    with session_scope(engine) as s:
        rebuild_index(s)
    assert index_rows() == polled
