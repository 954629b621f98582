"""Grouping items into incidents, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from monitor.incidents import explain_incident, group_items, incident_severity
from monitor.incidents.cache import GroupingCache, read_heads
from monitor.incidents.features import extract, hit_sets, name_key, persons, shipped_country_level
from monitor.incidents.features import place_keys as _place_keys
from monitor.incidents.fingerprint import Fingerprint
from monitor.incidents.index import CandidateIndex, Slot, index_keys, token_rank
from monitor.incidents.scoring import TEXT_MIN, compare
from monitor.incidents.updates import key_json, recount
from monitor.ingest.classify import apply_classification
from monitor.rules import Classifier, load_classifier
from monitor.store import ensure_schema, make_engine
from monitor.store.engine import session_scope
from monitor.store.models import Incident, Item
from tests.support.stories import (
    MAMAI_EN,
    MAMAI_EN_REPRINT,
    MAMAI_KK,
    MAMAI_RU,
    NGO_LAW,
    OTHER_DETENTION,
    OTHER_DETENTION_RU,
    T0,
    Story,
    store,
)

NOW = T0 + timedelta(days=3)


def group(engine: Engine, ids: list[int], **kw: object) -> tuple[list[int], list[int], dict[int, int]]:
    with session_scope(engine) as s:
        st = group_items(s, ids, now=NOW, **kw)  # type: ignore[arg-type]
        return st.new_incidents, st.updated_incidents, st.assigned


def incident_of(engine: Engine, item_id: int) -> int | None:
    with session_scope(engine) as s:
        item = s.get(Item, item_id)
        assert item is not None
        return item.incident_id


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Zhanbolat", "Жанболат"),
        ("Janbolat", "Жанболата"),
        ("Mamai", "Мамая"),
        ("Mamay", "Мамаем"),
        ("Tokayev", "Токаева"),
        ("Yerlan", "Ерлан"),
        ("Kassym", "Қасым"),
        ("Aigul", "Айгуль"),
        ("Utepova", "Утепову"),
    ],
)
def test_name_keys_ignore_script_romanisation_and_case_endings(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)


def test_name_keys_tell_different_names_apart() -> None:
    assert name_key("Mamai") != name_key("Makhambetov")
    assert name_key("Zhanbolat") != name_key("Zhanaozen")


def test_sentence_initial_and_common_words_are_not_names() -> None:
    f = extract("", "Police detained him. Court hearings begin on Monday in Almaty, said Ivan Petrov.")
    assert f.names == {name_key("Almaty"), name_key("Ivan"), name_key("Petrov")}
    assert f.persons == {"+".join(sorted((name_key("Ivan"), name_key("Petrov"))))}


def _person(a: str, b: str) -> str:
    return "+".join(sorted((name_key(a), name_key(b))))


def test_a_capitalised_word_before_a_name_at_a_sentence_start_is_not_part_of_it() -> None:
    # Every blogger called Daniyar would otherwise share the person "Blogger Daniyar".
    assert extract("", "Blogger Daniyar Sadykov was charged.").persons == {_person("Daniyar", "Sadykov")}
    assert extract("", "Активиста Марата Оспанова задержали.").persons == {_person("Марата", "Оспанова")}
    f = extract("", "Blogger Daniyar was charged on Monday, the blogger's lawyer said.")
    assert f.persons == set() and f.names == {name_key("Daniyar")}
    # A name that opens a sentence is still a name.
    assert extract("", "Marat Ospanov was detained.").persons == {_person("Marat", "Ospanov")}


def test_a_full_name_with_a_patronymic_is_also_first_name_and_surname() -> None:
    for text in ("Марат Нурланович Оспанов задержан.", "Суд арестовал Марата Нурлановича Оспанова."):
        assert _person("Marat", "Ospanov") in extract("", text).persons, text
    assert _person("Marat", "Ospanov") in extract("", "Марат Нұрланұлы Оспанов ұсталды.").persons


def test_a_common_noun_before_a_patronymic_and_surname_leaves_no_full_name() -> None:
    # "Blogger" is dropped (the text writes "blogger"), leaving patronymic + surname: no first name to pair
    f = extract("x", "Blogger Nurlanovich Ospanov was detained. The blogger said.")
    assert f.persons == {_person("Nurlanovich", "Ospanov")}
    f = extract("x", "Blogger Marat Nurlanovich Ospanov was detained. The blogger said.")
    assert _person("Marat", "Ospanov") in f.persons


@pytest.mark.parametrize(
    ("title", "text"),
    [
        ("", "Blogger Daniyar Sadykov was charged. Police detained him in Almaty, said Ivan Petrov."),
        ("Суд арестовал Марата Нурлановича Оспанова", "Активиста задержали. Адвокат Асель Иванова заявила."),
        (
            "Court Jails Opposition Leader Marat Ospanov",
            "Marat Ospanov, 41, was jailed. The blogger Dana Utepova said.",
        ),
        ("", "Blogger Daniyar was charged on Monday, the blogger's lawyer said."),
        ("", ""),
        # the lead ends at the 80th word: a name split by that end is no person, one before it is
        ("Editor fined", "Dana Utepova wrote. " + "word " * 76 + "Marat Ospanov said."),
        ("", "Dana Utepova wrote. " + "word " * 75 + "Marat Ospanov said."),
    ],
)
def test_persons_are_the_persons_extract_finds_with_their_spelling(title: str, text: str) -> None:
    f = extract(title, text)
    assert persons(title, text) == {key: f.surface[key] for key in f.persons}


def test_two_people_sharing_a_first_name_are_two_incidents(engine: Engine) -> None:
    first = Story(
        title="Blogger fined over posts",
        text="Blogger Daniyar Sadykov was fined by a court in Almaty for spreading false information online.",
        categories=["prosecution"],
    )
    second = Story(
        title="Blogger fined for a video",
        text="Blogger Daniyar Bekov was fined by a court in Shymkent over a video about local officials.",
        categories=["prosecution"],
        hours=5,
        feed="feed-b",
    )
    new, _, _ = group(engine, store(engine, [first, second]))
    assert len(new) == 2


def test_same_story_in_english_russian_and_kazakh_is_one_incident(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, MAMAI_RU, MAMAI_KK])
    new, updated, assigned = group(engine, ids)
    assert len(new) == 1 and updated == []
    assert set(assigned.values()) == {new[0]}
    with session_scope(engine) as s:
        inc = s.get(Incident, new[0])
        assert inc is not None
        assert inc.item_count == 3
        assert inc.title == MAMAI_EN.title  # the first report's
        assert inc.categories == ["prosecution", "protest_crackdown"]
        assert inc.countries == ["KZ"]
        assert inc.severity == "high"
        assert inc.first_seen == T0 and inc.last_seen == T0 + timedelta(hours=30)
        why = explain_incident(s, ids[1])
    assert why is not None and why["reason"] == "names"
    assert why["similar_to"] == ids[0]
    assert why["shared_persons"] == ["Жанболата Мамая"]  # as the joining report wrote it
    assert "same names" in why["text"]


def test_unrelated_detention_the_same_day_is_another_incident(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, OTHER_DETENTION, MAMAI_RU, OTHER_DETENTION_RU])
    new, _, assigned = group(engine, ids)
    assert len(new) == 2
    assert assigned[ids[0]] == assigned[ids[2]]
    assert assigned[ids[1]] == assigned[ids[3]]
    assert assigned[ids[0]] != assigned[ids[1]]


def test_reprint_joins_on_near_duplicate_text(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, MAMAI_EN_REPRINT])
    new, _, _ = group(engine, ids)
    assert len(new) == 1
    with session_scope(engine) as s:
        why = explain_incident(s, ids[1])
    assert why is not None and why["reason"] == "text" and why["score"] >= 0.8
    assert "detained" in why["shared_terms"]


def test_a_later_report_joins_the_open_incident_and_marks_it_updated(engine: Engine) -> None:
    first = store(engine, [MAMAI_EN, NGO_LAW])
    group(engine, first)
    with session_scope(engine) as s:
        before = s.get(Incident, incident_of(engine, first[0]))
        assert before is not None
        updated_at = before.updated_at
    later = store(engine, [MAMAI_RU])
    with session_scope(engine) as s:
        st = group_items(s, later, now=NOW + timedelta(hours=1))
    assert st.new_incidents == []
    assert st.updated_incidents == [incident_of(engine, first[0])]
    with session_scope(engine) as s:
        inc = s.get(Incident, incident_of(engine, first[0]))
        assert inc is not None and inc.item_count == 2
        assert inc.updated_at > updated_at
        other = s.get(Incident, incident_of(engine, first[1]))
        assert other is not None and other.updated_at == NOW  # untouched


def test_outside_the_window_is_a_new_incident(engine: Engine) -> None:
    late = replace(MAMAI_RU, hours=24 * 5)
    ids = store(engine, [MAMAI_EN, late])
    new, _, assigned = group(engine, ids)
    assert len(new) == 2 and assigned[ids[0]] != assigned[ids[1]]


def test_a_wider_window_joins_what_the_default_keeps_apart(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, replace(MAMAI_RU, hours=24 * 5)])
    new, _, assigned = group(engine, ids, window_hours=24 * 7)
    assert len(new) == 1 and assigned[ids[0]] == assigned[ids[1]]


def test_no_shared_category_no_join(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, replace(MAMAI_RU, categories=["media_restriction"])])
    new, _, _ = group(engine, ids)
    assert len(new) == 2


def test_countries_must_agree_across_languages(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, replace(MAMAI_RU, countries=["RU"])])
    new, _, _ = group(engine, ids)
    assert len(new) == 2


def test_unclassified_items_are_skipped_and_reclassified_ones_leave(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, MAMAI_RU, replace(NGO_LAW, categories=[])])
    new, _, assigned = group(engine, ids)
    assert len(new) == 1 and ids[2] not in assigned
    with session_scope(engine) as s:
        item = s.get(Item, ids[1])
        assert item is not None
        item.categories = []
    with session_scope(engine) as s:
        st = group_items(s, [ids[1]], now=NOW + timedelta(hours=2))
        assert st.updated_incidents == new and st.skipped == [ids[1]]
        inc = s.get(Incident, new[0])
        assert inc is not None and inc.item_count == 1
        assert s.get(Item, ids[1]).grouping is None  # type: ignore[union-attr]
        assert explain_incident(s, ids[1]) is None


def test_regrouping_the_same_items_changes_nothing(engine: Engine) -> None:
    ids = store(engine, [MAMAI_EN, MAMAI_RU, OTHER_DETENTION])
    group(engine, ids)
    with session_scope(engine) as s:
        st = group_items(s, ids, now=NOW + timedelta(days=1))
        assert st.new_incidents == [] and st.updated_incidents == []
        assert {i.updated_at for i in s.exec(select(Incident))} == {NOW}


def _snapshot(engine: Engine) -> list[tuple[object, ...]]:
    with session_scope(engine) as s:
        incs = {
            i.id: (i.title, i.categories, i.countries, i.item_count, i.signature, i.explanation)
            for i in s.exec(select(Incident))
        }
        items = s.exec(select(Item.title, Item.incident_id).order_by(col(Item.id))).all()
        # incident ids may differ between runs only if grouping did; compare the partition and the records
        return [(title, incs[inc_id][:4] if inc_id else None) for title, inc_id in items]


def test_grouping_is_deterministic_whatever_the_order_of_ids(tmp_path: object, engine: Engine) -> None:
    stories = [MAMAI_EN, OTHER_DETENTION, MAMAI_RU, NGO_LAW, MAMAI_KK, OTHER_DETENTION_RU, MAMAI_EN_REPRINT]
    ids = store(engine, stories)
    group(engine, list(reversed(ids)))
    url = f"sqlite:///{tmp_path}/second.db"
    other = make_engine(url)
    ensure_schema(other)
    ids2 = store(other, stories)
    # same items, grouped one at a time in another order of calls still sorted by publication inside each call
    for i in sorted(ids2, key=lambda i: stories[ids2.index(i)].hours):
        with session_scope(other) as s:
            group_items(s, [i], now=NOW)
    assert _snapshot(engine) == _snapshot(other)
    other.dispose()


def test_incident_severity_takes_the_most_severe_category() -> None:
    assert incident_severity(["restrictive_law"]) == "medium"
    assert incident_severity(["restrictive_law", "prosecution"]) == "high"
    assert incident_severity(["restrictive_law"], {"restrictive_law": "high"}) == "high"
    assert incident_severity(["defamation"], {"defamation": "low"}) == "low"


def test_title_case_headlines_do_not_make_names(engine: Engine) -> None:
    a = Story(
        title="Police Detain Protesters In Capital Square",
        text="Dozens were taken away from the square on Saturday.",
        categories=["protest_crackdown"],
    )
    b = Story(
        title="Police Detain Protesters Outside Oil Company Office",
        text="Workers demanding higher wages were detained at the gates.",
        categories=["protest_crackdown"],
        hours=2,
    )
    assert extract(a.title, a.text).persons == frozenset()
    ids = store(engine, [a, b])
    new, _, _ = group(engine, ids)
    assert len(new) == 2


# ---- across languages on places, categories and term sets --------------------------------------------------

CONFIG = Path(__file__).resolve().parent.parent / "config"

# The demo's trilingual story (monitor/demo/feeds): no person is named, so only places and categories can join it.
BILL_RU = Story(
    title="Мажилис одобрил законопроект о реестре «иностранных представителей»",
    text=(
        "Депутаты Мажилиса одобрили в первом чтении законопроект, который обязывает общественные объединения, "
        "получающие иностранное финансирование, регистрироваться в реестре «иностранных представителей» и "
        "ежеквартально отчитываться о расходах. За нарушение предлагается приостанавливать деятельность "
        "организации на срок до трёх месяцев. Правозащитники считают, что поправки ограничат работу НКО и "
        "независимых СМИ."
    ),
    categories=[],
    language="ru",
    hours=0,
    feed="feed-ru",
)
BILL_KK = Story(
    title="Мәжіліс шетелдік өкілдер туралы заң жобасын бірінші оқылымда мақұлдады",
    text=(
        "Мәжіліс депутаттары шетелден қаржы алатын ҮЕҰ мен БАҚ-ты «шетелдік өкілдер» тізіліміне енгізуді "
        "міндеттейтін заң жобасын бірінші оқылымда мақұлдады. Құқық қорғаушылар бұл түзету азаматтық қоғамның "
        "жұмысын шектейді деп есептейді."
    ),
    categories=[],
    language="kk",
    hours=1,
    feed="feed-kk",
)
BILL_EN = Story(
    title='Kazakhstan: lower house backs bill creating registry of "foreign representatives"',
    text=(
        "Kazakhstan's Mazhilis approved in first reading a draft law that would require NGOs and media outlets "
        'receiving foreign funding to join a public registry of "foreign representatives" and report their '
        "spending every quarter. Organisations that miss a report could have their work suspended for up to three "
        "months. Rights groups say the bill copies foreign agent laws adopted elsewhere in the region and would "
        "stigmatise civil society."
    ),
    categories=[],
    hours=2,
    feed="feed-en",
)


@pytest.fixture(scope="module")
def shipped() -> Classifier:
    return load_classifier(CONFIG)


def store_classified(engine: Engine, stories: list[Story], classifier: Classifier) -> list[int]:
    """Store the stories and classify them as ingestion does (categories, countries, matches and places)."""
    ids = store(engine, stories)
    with session_scope(engine) as s:
        for i in ids:
            item = s.get(Item, i)
            assert item is not None
            apply_classification(item, classifier)
            s.add(item)
    return ids


def at(entry: str, where: str = "text", country: str = "KZ") -> dict[str, str]:
    return {"country": country, "entry": entry, "field": where}


def with_sets(story: Story, sets: dict[str, list[str]]) -> Story:
    """The story with classifier hits from these named term sets, per category."""
    matches = {
        cat: {"rule": "test", "score": 1.0, "hits": [{"term": s, "set": s, "field": "text"} for s in names]}
        for cat, names in sets.items()
    }
    return replace(story, matches=matches)


def store_placed(engine: Engine, stories: list[tuple[Story, list[dict[str, str]]]]) -> list[int]:
    """Store the stories with these gazetteer places, as apply_classification would have recorded them."""
    ids = store(engine, [st for st, _ in stories])
    with session_scope(engine) as s:
        for i, (_, places) in zip(ids, stories, strict=True):
            item = s.get(Item, i)
            assert item is not None
            item.places = places
            s.add(item)
    return ids


def place_keys(places: object) -> tuple[dict[str, str], frozenset[str]]:
    return _place_keys(places, shipped_country_level())


def test_place_keys_are_spelling_blind_and_leave_out_the_country() -> None:
    keys, in_title = place_keys(
        [at("Mazhilis", "title"), at("Kazakhstan", "title"), at("tenge"), at("akimat"), at("Almaty")]
    )
    assert keys == {"KZ:majil": "Mazhilis", "KZ:almat": "Almaty"}
    assert in_title == {"KZ:majil"}
    assert place_keys([at("Мажилис")])[0].keys() == place_keys([at("Мәжіліс")])[0].keys() == {"KZ:majil"}
    assert place_keys([at("Қарағанды")])[0].keys() == place_keys([at("Karaganda")])[0].keys()
    for country_level in ("Казахстан", "Қазақстан", "әкімдік", "Тоқаев", "Kyrgyzstan", "Путин"):
        assert place_keys([at(country_level)]) == ({}, frozenset())
    assert place_keys("not a list") == ({}, frozenset())


def test_hit_sets_are_read_per_category() -> None:
    matches = {
        "protest_crackdown": {"hits": [{"term": "rally", "set": "protest"}, {"term": "detain"}]},
        "prosecution": {"hits": [{"term": "lawyer", "set": "civic"}]},
        "broken": "not a mapping",
    }
    assert hit_sets(matches) == {"protest_crackdown/protest", "prosecution/civic"}


def test_apply_classification_stores_each_place_once(shipped: Classifier) -> None:
    item = Item(
        feed_id="f",
        title=BILL_RU.title,
        text=BILL_RU.text,
        language="ru",
        published=T0,
        fetched=T0,
        content_hash="x",
    )
    apply_classification(item, shipped)
    assert item.places == [{"country": "KZ", "entry": "Мажилис", "field": "title"}]
    assert {"restrictive_law", "funding_restriction"} <= set(item.categories)


def test_the_bill_in_russian_kazakh_and_english_is_one_incident(engine: Engine, shipped: Classifier) -> None:
    ids = store_classified(engine, [BILL_RU, BILL_KK, BILL_EN], shipped)
    new, _, assigned = group(engine, ids)
    assert len(new) == 1 and set(assigned.values()) == {new[0]}
    with session_scope(engine) as s:
        inc = s.get(Incident, new[0])
        assert inc is not None and inc.item_count == 3 and inc.countries == ["KZ"]
        assert inc.signature["places"] == ["KZ:majil"]
        why_kk, why_en = explain_incident(s, ids[1]), explain_incident(s, ids[2])
    assert why_kk is not None and why_kk["reason"] == "places"
    assert why_kk["similar_to"] == ids[0]
    assert why_kk["shared_places"] == ["Мәжіліс"]  # as the joining report's language spells it
    assert why_kk["languages"] == ["kk", "ru"]
    assert why_kk["points"] >= 3.0 and why_kk["evidence"]["places"] == 2.0
    assert "same specific places (Мәжіліс)" in why_kk["text"] and "evidence" in why_kk["text"]
    assert why_en is not None and why_en["reason"] == "places" and why_en["shared_places"] == ["Mazhilis"]


def test_the_bill_groups_the_same_one_report_at_a_time(engine: Engine, shipped: Classifier) -> None:
    ids = store_classified(engine, [BILL_EN, BILL_KK, BILL_RU], shipped)
    for i in reversed(ids):  # a later report arrives first: still one incident
        group(engine, [i])
    assert len({incident_of(engine, i) for i in ids}) == 1


ALMATY_RALLY_EN = with_sets(
    Story(
        title="Police detain dozens at Almaty rally against utility price rises",
        text=(
            "Police detained at least 34 people at a peaceful rally in Almaty on Saturday, where about two hundred "
            "residents gathered near the akimat to protest against a rise in tariffs."
        ),
        categories=["protest_crackdown"],
        hours=0,
    ),
    {"protest_crackdown": ["detain", "protest"]},
)
ATYRAU_RU = with_sets(
    Story(
        title="В Атырау задержали участников акции нефтяников",
        text=(
            "В субботу в Атырау полиция задержала около двадцати нефтяников, которые вышли к зданию акимата с "
            "требованием повысить зарплату."
        ),
        categories=["protest_crackdown"],
        language="ru",
        hours=3,
        feed="feed-ru",
    ),
    {"protest_crackdown": ["detain", "protest"]},
)


def test_detentions_in_almaty_and_atyrau_the_same_day_stay_apart(engine: Engine) -> None:
    ids = store_placed(
        engine,
        [
            (ALMATY_RALLY_EN, [at("Almaty", "title"), at("akimat")]),
            (ATYRAU_RU, [at("Атырау", "title"), at("акимат")]),
        ],
    )
    new, _, _ = group(engine, ids)
    assert len(new) == 2  # same country, category, term sets and day; the akimat is in every town


def test_a_restrictive_law_and_an_ngo_liquidation_sharing_only_kazakhstan_stay_apart(engine: Engine) -> None:
    # as in the demo, the classifier also tags the bill ngo_liquidation ("work suspended", "rights groups")
    law = with_sets(
        replace(BILL_EN, categories=["ngo_liquidation", "funding_restriction", "restrictive_law"]),
        {"ngo_liquidation": ["ngo"]},
    )
    liquidation = with_sets(
        Story(
            title="Суд в Казахстане ликвидировал карагандинское правозащитное объединение",
            text="Специализированный экономический суд Караганды ликвидировал общественное объединение.",
            categories=["ngo_liquidation", "funding_restriction"],
            language="ru",
            hours=6,
            feed="feed-ru",
        ),
        {"ngo_liquidation": ["ngo"]},
    )
    ids = store_placed(
        engine,
        [
            (law, [at("Kazakhstan", "title"), at("Mazhilis")]),
            (liquidation, [at("Казахстан", "title"), at("Караганда")]),
        ],
    )
    new, _, _ = group(engine, ids)
    assert len(new) == 2


def _two_bills(hours: float, categories: list[str]) -> tuple[Story, Story]:
    en = Story(
        title="Mazhilis passes amendments on public assemblies",
        text="The Mazhilis approved amendments requiring organisers to notify the akimat ten days in advance.",
        categories=categories,
        hours=0,
    )
    ru = Story(
        title="Мажилис принял поправки о выборах",
        text="Депутаты Мажилиса приняли поправки, ужесточающие регистрацию кандидатов.",
        categories=categories,
        language="ru",
        hours=hours,
        feed="feed-ru",
    )
    return en, ru


def test_one_shared_institution_alone_is_not_enough(engine: Engine) -> None:
    en, ru = _two_bills(15, ["restrictive_law"])  # the Mazhilis passes several bills in one sitting
    ids = store_placed(engine, [(en, [at("Mazhilis", "title")]), (ru, [at("Мажилис", "title")])])
    new, _, _ = group(engine, ids)
    assert len(new) == 2


def test_a_shared_institution_with_corroboration_is_enough(engine: Engine) -> None:
    en, ru = _two_bills(15, ["restrictive_law", "funding_restriction", "ngo_restriction"])
    ids = store_placed(engine, [(en, [at("Mazhilis", "title")]), (ru, [at("Мажилис", "title")])])
    new, _, _ = group(engine, ids)
    assert len(new) == 1
    with session_scope(engine) as s:
        why = explain_incident(s, ids[1])
    assert why is not None and why["reason"] == "places"
    assert why["evidence"] == {"places": 2.0, "categories": 1.0} and why["points"] == 3.0


def test_the_same_city_but_different_people_stay_apart(engine: Engine) -> None:
    en = with_sets(
        Story(
            title="Activist detained in Almaty after picket",
            text="Police in Almaty detained activist Aigul Utepova after a single-person picket.",
            categories=["protest_crackdown"],
        ),
        {"protest_crackdown": ["detain", "protest"]},
    )
    ru = with_sets(
        Story(
            title="В Алматы задержали журналиста",
            text="В Алматы полиция задержала журналиста Марата Оспанова у здания суда после пикета.",
            categories=["protest_crackdown"],
            language="ru",
            hours=2,
            feed="feed-ru",
        ),
        {"protest_crackdown": ["detain", "protest"]},
    )
    ids = store_placed(engine, [(en, [at("Almaty", "title")]), (ru, [at("Алматы", "title")])])
    new, _, _ = group(engine, ids)
    assert len(new) == 2


def test_headlines_naming_different_places_stay_apart(engine: Engine) -> None:
    atyrau_en = with_sets(
        Story(
            title="Oil workers detained at Atyrau protest",
            text="Police detained oil workers at a protest in Atyrau, a week after the rally in Almaty.",
            categories=["protest_crackdown"],
            hours=1,
        ),
        {"protest_crackdown": ["detain", "protest"]},
    )
    almaty_ru = with_sets(
        replace(
            ATYRAU_RU, title="В Алматы задержали участников митинга", text="В Алматы задержали участников."
        ),
        {"protest_crackdown": ["detain", "protest"]},
    )
    ids = store_placed(
        engine,
        [
            (atyrau_en, [at("Atyrau", "title"), at("Almaty")]),
            (almaty_ru, [at("Алматы", "title")]),
        ],
    )
    new, _, _ = group(engine, ids)
    assert len(new) == 2


def test_places_do_not_join_reports_in_one_language(engine: Engine) -> None:
    # Same-language reports of one event share their words; the text rule decides, as before.
    other = with_sets(
        Story(
            title="Almaty: riot police break up tariff protest",
            text="Dozens of residents were taken to district stations when officers dispersed the crowd.",
            categories=["protest_crackdown"],
            hours=2,
            feed="feed-wire",
        ),
        {"protest_crackdown": ["detain", "protest"]},
    )
    ids = store_placed(engine, [(ALMATY_RALLY_EN, [at("Almaty", "title")]), (other, [at("Almaty", "title")])])
    new, _, _ = group(engine, ids)
    assert len(new) == 2


@pytest.mark.parametrize(("hours", "incidents"), [(10, 1), (40, 2)])
def test_places_join_only_reports_within_36_hours(engine: Engine, hours: float, incidents: int) -> None:
    ru = replace(ATYRAU_RU, title="В Алматы задержали участников митинга", text="В Алматы задержали людей.")
    ids = store_placed(
        engine,
        [(ALMATY_RALLY_EN, [at("Almaty", "title")]), (replace(ru, hours=hours), [at("Алматы", "title")])],
    )
    new, _, _ = group(engine, ids)
    assert len(new) == incidents


# ---- scaling: candidates from an index, fingerprints from a per-process cache ---------------------------------

_WORDS_TEXT = """
court fined editor newspaper activist detained rally square police protest lawyer blogger charges registry foreign
agents election observers journalist picket hearing appeal sentence prison arrest district residents tariffs workers
strike union mosque pastor church radio website blocked banned licence ministry parliament
"""
_WORDS = _WORDS_TEXT.split()
_PEOPLE = [
    (first, last)
    for first in ("Aigul", "Marat", "Zhanbolat", "Duman", "Bolat", "Serik")
    for last in ("Utepova", "Ospanov", "Mamai", "Mukhammedkarim", "Zhakenov", "Baimukhanov")
]
_PLACES = [("Almaty", "Алматы"), ("Atyrau", "Атырау"), ("Mazhilis", "Мажилис"), ("Karaganda", "Караганда")]
_CATEGORIES = ["protest_crackdown", "prosecution", "media_restriction", "restrictive_law"]


def _corpus(events: int, seed: int = 11) -> list[tuple[Story, list[dict[str, str]]]]:
    """Reports of `events` events (two to five each, some in Russian, some naming a person or a place) spread over
    a week, in random order: near-copies, reworded reports, and unrelated ones with words in common."""
    import random

    rng = random.Random(seed)
    out: list[tuple[Story, list[dict[str, str]]]] = []
    for e in range(events):
        words = rng.sample(_WORDS, 14)
        person = rng.choice(_PEOPLE) if rng.random() < 0.5 else None
        place = rng.choice(_PLACES) if rng.random() < 0.6 else None
        cats = rng.sample(_CATEGORIES, rng.randint(1, 2))
        start = rng.uniform(0, 24 * 7)
        for _ in range(rng.randint(2, 5)):
            ru = rng.random() < 0.3
            mine = [w for w in words if rng.random() < 0.85] + rng.sample(_WORDS, 2)
            text = " ".join(mine)
            title = " ".join(mine[:6]).capitalize()
            if person:
                text += f". Police said {person[0]} {person[1]} was held."
            if place:
                text += f" It happened in {place[1] if ru else place[0]}."
            story = Story(
                title=title,
                text=text,
                categories=cats if rng.random() < 0.8 else [*cats, rng.choice(_CATEGORIES)],
                language="ru" if ru else "en",
                hours=start + rng.uniform(0, 40),
                feed="feed-ru" if ru else f"feed-{e % 3}",
            )
            out.append((story, [at(place[1] if ru else place[0])] if place else []))
    rng.shuffle(out)
    return out


def _state(engine: Engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with session_scope(engine) as s:
        incs = [
            (
                i.id,
                i.title,
                i.categories,
                i.countries,
                i.severity,
                i.first_seen,
                i.last_seen,
                i.item_count,
                i.signature,
                i.explanation,
            )
            for i in s.exec(select(Incident).order_by(col(Incident.id)))
        ]
        items = [
            tuple(r)
            for r in s.exec(select(Item.id, Item.incident_id, Item.grouping).order_by(col(Item.id))).all()
        ]
        return incs, items


def _by_publication(engine: Engine, ids: list[int]) -> list[int]:
    with session_scope(engine) as s:
        items = s.exec(select(Item).where(col(Item.id).in_(ids))).all()
        return [i.id for i in sorted(items, key=lambda i: (i.published, i.id)) if i.id is not None]


def _second(tmp_path: Path, name: str) -> Engine:
    other = make_engine(f"sqlite:///{tmp_path}/{name}.db")
    ensure_schema(other)
    return other


def test_grouping_in_one_call_or_in_forty_gives_the_same_incidents(tmp_path: Path, engine: Engine) -> None:
    corpus = _corpus(60)
    ids = store_placed(engine, corpus)
    group(engine, ids)
    other = _second(tmp_path, "chunked")
    ids2 = store_placed(other, corpus)
    ordered = _by_publication(other, ids2)
    step = -(-len(ordered) // 40)
    for k in range(0, len(ordered), step):
        group(other, ordered[k : k + step])
    one, many = _state(engine), _state(other)
    # the premise: no incident outgrows the fingerprints kept between calls, so both see the same reports
    sizes = [item_count for *_, item_count, _, _ in one[0]]
    assert max(sizes) <= 20
    assert len(sizes) < len(ids) - 20  # and many reports did join others
    assert one == many
    other.dispose()


def test_a_stale_or_foreign_cache_never_changes_grouping(tmp_path: Path) -> None:
    corpus = _corpus(40, seed=5)

    def run(target: Engine, caches: list[GroupingCache] | None) -> None:
        ids = store_placed(target, corpus)
        ordered = _by_publication(target, ids)
        for n, k in enumerate(range(0, len(ordered), 7)):
            # None: a cold cache every call (as if each call came from a new process)
            cache = caches[n % len(caches)] if caches else GroupingCache()
            if n == 5:  # a transaction that rolls back after grouping: its incidents never existed
                with pytest.raises(RuntimeError), session_scope(target) as s:
                    group_items(s, ordered[k : k + 7], now=NOW, cache=cache)
                    raise RuntimeError
            group(target, ordered[k : k + 7], cache=cache)
        # reports edited and grouped again (fingerprints change, dates and counts may not)
        with session_scope(target) as s:
            for i in ordered[::9]:
                item = s.get(Item, i)
                assert item is not None
                item.title = f"{item.title} Marat Ospanov"
        for n, k in enumerate(range(0, len(ordered), 27)):
            group(
                target, ordered[k : k + 27 : 9], cache=caches[n % len(caches)] if caches else GroupingCache()
            )

    cold = _second(
        tmp_path, "cold"
    )  # SQLite on both sides: ids are compared, PostgreSQL skips rolled-back ones
    run(cold, None)
    # two processes taking turns, each with its own cache; the first cache also saw another database first
    shared = GroupingCache()
    first = _second(tmp_path, "first")
    group(first, store_placed(first, list(reversed(corpus))), cache=shared)
    turns = _second(tmp_path, "turns")
    run(turns, [shared, GroupingCache()])
    assert _state(cold) == _state(turns)
    for e in (cold, first, turns):
        e.dispose()


def _recount(engine: Engine) -> dict[int, tuple[Any, ...]]:
    """Every incident's fields as stored, beside the same fields recomputed from all its members."""
    with session_scope(engine) as s:
        incs = {i.id: i for i in s.exec(select(Incident).where(col(Incident.item_count) > 0))}
        recounted, _ = recount(s, sorted(i for i in incs if i is not None))
        out = {}
        for inc_id, inc in incs.items():
            assert inc_id is not None
            sm = recounted[inc_id]
            sig = inc.signature
            stored = (
                inc.title,
                inc.categories,
                inc.countries,
                inc.item_count,
                inc.first_seen,
                inc.last_seen,
                sig["first"],
                sig["titled"],
            )
            assert sm.first is not None
            fresh = (
                sm.title,
                sorted(sm.categories),
                sorted(sm.countries),
                sm.count,
                sm.first[0],
                sm.last,
                key_json(sm.first),
                key_json(sm.titled),
            )
            out[inc_id] = (stored, fresh)
        return out


def test_incidents_kept_up_to_date_one_report_at_a_time_match_a_recount(engine: Engine) -> None:
    """Joining reports update an incident from what it stored (never rereading its members): the result must be
    what a count over all the members gives, whatever the order reports arrive in, blank titles included."""
    import random

    rng = random.Random(3)
    corpus = _corpus(30, seed=8)
    # a third of the reports have no title, so the incident's title comes from a later report
    corpus = [(replace(st, title="  ") if rng.random() < 0.3 else st, places) for st, places in corpus]
    ids = store_placed(engine, corpus)
    rng.shuffle(ids)  # not in order of publication: earlier reports keep arriving after later ones
    for k in range(0, len(ids), 3):
        group(engine, ids[k : k + 3])
    both = _recount(engine)
    assert max(stored[3] for stored, _ in both.values()) >= 4  # incidents did grow report by report
    assert any(stored[0].strip() and stored[7] != stored[6] for stored, _ in both.values())  # title not first
    for inc_id, (stored, fresh) in both.items():
        assert stored == fresh, inc_id


def test_a_report_joining_a_large_incident_does_not_reread_its_members(engine: Engine) -> None:
    from sqlalchemy import event

    reports = [
        replace(MAMAI_EN, title=f"{MAMAI_EN.title} ({n})", text=f"{MAMAI_EN.text} Update {n}.", hours=n * 0.5)
        for n in range(60)
    ]
    ids = store(engine, reports)
    group(engine, ids[:59])
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        _, updated, assigned = group(engine, ids[59:])
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    with session_scope(engine) as s:
        inc = s.get(Incident, assigned[ids[59]])
        assert inc is not None and inc.item_count == 60 and updated == [inc.id]
        assert len(inc.signature["members"]) == 20 and "items" not in inc.explanation
    # the members are not read back (one query by incident id would), and only the new report's row is written
    reads = [q for q in statements if "incident_id IN" in q]
    assert reads == []
    assert len([q for q in statements if q.lstrip().upper().startswith("UPDATE ITEM")]) == 1


def test_the_light_query_recognises_stored_signatures(engine: Engine) -> None:
    cache = GroupingCache()
    group(engine, store_placed(engine, _corpus(10, seed=2)), cache=cache)
    held = dict(cache.incidents)
    with session_scope(engine) as s:
        found = cache.absorb(s, read_heads(s, col(Incident.item_count) > 0))
    # every "_rev" read back as written: each entry is the one the cache held, none reloaded
    assert len(found) > 3 and all(found[i] is held[i] for i in found)


def test_a_warm_cache_reads_only_the_incidents_changed_since_its_last_call(
    tmp_path: Path, engine: Engine
) -> None:
    """The cost of a call must not grow with the number of open incidents: it reads what changed (by `seq`)."""
    mine, theirs = GroupingCache(), GroupingCache()  # two processes
    corpus = _corpus(30, seed=4)
    ordered = _by_publication(engine, store_placed(engine, corpus))

    def grouped_by(cache: GroupingCache, ids: list[int]) -> set[int]:
        new, updated, _ = group(engine, ids, cache=cache)
        return {*new, *updated}

    grouped_by(mine, ordered[:-3])
    wrote = grouped_by(mine, ordered[-3:-2])
    wrote |= grouped_by(theirs, ordered[-2:-1])
    grouped_by(mine, ordered[-1:])
    read = mine.read
    with session_scope(engine) as s:
        open_now = len(s.exec(select(Incident.id).where(col(Incident.item_count) > 0)).all())
    assert open_now > 15 and read and set(read) <= wrote
    # and it saw the other process's change: the same incidents as one process grouping the same calls
    alone = _second(tmp_path, "alone")
    again = _by_publication(alone, store_placed(alone, corpus))
    one = GroupingCache()
    for part in (again[:-3], again[-3:-2], again[-2:-1], again[-1:]):
        group(alone, part, cache=one)
    assert _state(engine)[0] == _state(alone)[0]
    alone.dispose()


def test_every_pair_compare_accepts_meets_in_the_index() -> None:

    levels = shipped_country_level()
    members = []
    for n, (story, places) in enumerate(_corpus(40, seed=3)):
        item = Item(
            id=n + 1,
            feed_id=story.feed,
            title=story.title,
            text=story.text,
            language=story.language,
            published=T0 + timedelta(hours=story.hours),
            fetched=T0,
            content_hash="x",
            categories=story.categories,
            countries=story.countries,
            places=places,
        )
        members.append(Fingerprint.of(item, levels))
    index = CandidateIndex()
    slots = {}
    for m in members:
        slots[m.item_id] = Slot(1, m, index_keys(m), True)
        index.add(slots[m.item_id])
    accepted, by_places, place_only_skipped = 0, 0, 0
    for a in members:
        found: set[Slot] = set()
        index.candidates(a, index_keys(a), found)
        for b in members:
            if a is b:
                continue
            match = compare(a, b, levels)
            if match is not None:
                accepted += 1
                by_places += match.kind == "places"
                assert slots[b.item_id] in found, (a.item_id, b.item_id, match.kind)
            elif (a.places & b.places) and not a.other_language(b):
                # one language, a city in common and nothing else: the places rule cannot apply, so no candidate
                place_only_skipped += slots[b.item_id] not in found
    assert accepted > 100 and by_places > 0 and place_only_skipped > 0
    # The stems' prefix filter at its worst: the shared stems are the last in the global order, overlap just enough.
    pool = sorted((f"w{i:03d}" for i in range(200)), key=token_rank)
    no_people = extract("", "")
    for size_a in range(1, 31):
        for size_b in range(1, 31):
            for shared in range(1, min(size_a, size_b) + 1):
                if shared / (size_a + size_b - shared) < TEXT_MIN:
                    continue
                common = pool[-shared:]
                a_stems = frozenset(pool[: size_a - shared] + common)
                b_stems = frozenset(pool[100 : 100 + size_b - shared] + common)
                a = Fingerprint(1, T0, frozenset(), frozenset(), replace(no_people, stems=a_stems))
                b = Fingerprint(2, T0, frozenset(), frozenset(), replace(no_people, stems=b_stems))
                assert compare(a, b, levels) is not None
                assert set(index_keys(a)) & set(index_keys(b)), (size_a, size_b, shared)
