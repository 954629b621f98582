"""Per-item language: lingua restricted to the region, and the rule for which language's rules run."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.ingest.language import CONFIDENT, decide_language, decide_languages, detect
from monitor.rules import Classifier, load_classifier


def test_short_kazakh_and_russian_headlines_are_told_apart() -> None:
    assert detect("Алматыда белсенді айыппұл төледі").language == "kk"
    assert detect("Журналиста задержали у здания акимата").language == "ru"
    assert detect("Court fines activist over picket").language == "en"
    assert detect("Журналіста затримали біля будівлі суду").language == "uk"


def test_detected_language_wins_over_a_wrong_declared_one_when_confident() -> None:
    d = decide_language(
        "Суд арестовал блогера на десять суток", "Его обвиняют в распространении ложной информации.", "kk"
    )
    assert d.detected == "ru" and d.confidence >= CONFIDENT
    assert d.language == "ru" and d.source == "detected" and d.rules == ("ru",)


def test_declared_language_wins_when_the_detector_is_not_confident() -> None:
    # A name and a number say nothing about the language: the feed's declaration stands.
    d = decide_language("KazTAG 2026", "", "kk")
    assert d.language == "kk" and d.source == "declared"


def test_text_without_letters_has_no_detected_language() -> None:
    assert detect("2026 — 12:30").language is None
    assert decide_language("", "", None).language is None


def test_a_kazakh_item_quoting_russian_runs_both_languages_rules() -> None:
    title = "Белсенді сотта сөз сөйледі"
    text = (
        "Алматы аудандық соты белсендіні әкімшілік жауапкершілікке тартты. Сот отырысында ол былай деді: "
        "«Я не признаю свою вину, я просто стоял с плакатом у здания акимата и никому не мешал, это моё право». "
        "Белсендінің адвокаты шешімге шағым түсіретінін айтты. Сот оған жиырма мың теңге айыппұл салды."
    )
    d = decide_language(title, text, "kk")
    assert d.language == "kk"
    assert d.rules == ("kk", "ru")


def test_a_plain_russian_article_is_not_mixed() -> None:
    text = (
        "Суд Алматы оштрафовал активиста за одиночный пикет у здания акимата. Его адвокат заявил, что решение "
        "будет обжаловано в апелляционной инстанции, поскольку пикет не требовал согласования с властями."
    )
    assert decide_language("Активиста оштрафовали", text, "ru").rules == ("ru",)


# --- the decision drives the rules -----------------------------------------------------------------------

_SHIPPED = Path(__file__).resolve().parent.parent / "config"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return load_classifier(_SHIPPED, cache_dir=tmp_path_factory.mktemp("cache"))


def test_a_kazakh_report_of_a_russian_quote_is_classified_by_both_rule_sets(shipped: Classifier) -> None:
    # the event is told only in the Russian quote; the Kazakh text around it names no category
    title = "Ақтөбеде тұрғын әлеуметтік желіге видео жариялады"
    text = (
        "Ақтөбе облысының тұрғыны әлеуметтік желіде видео жариялады. Видеода ол орыс тілінде былай дейді: "
        "«Вчера полиция задержала участников мирного митинга у здания акимата, их увезли в отдел». "
        "Облыстық полиция департаменті әзірге пікір білдірмеді."
    )
    d = decide_language(title, text, "kk")
    assert d.language == "kk" and d.rules == ("kk", "ru")
    assert shipped.classify(title, text, "kk").categories == []  # Kazakh rules alone miss it
    r = shipped.classify(title, text, d.language, languages=d.rules)
    assert r.categories == ["protest_crackdown"]
    assert r.languages == ("kk", "ru")
    m = r.matches["protest_crackdown"]
    assert m.rule.startswith("ru: ")  # the explanation says which language's rule fired
    assert {h.language for h in m.hits} == {"ru"}
    assert {h.form for h in m.hits} >= {"задержала", "митинга"}
    assert r.to_json()["languages"] == ["kk", "ru"]


def test_a_russian_report_of_a_kazakh_quote_runs_the_kazakh_rules(shipped: Classifier) -> None:
    title = "Журналист рассказал о звонках"
    text = (
        "Журналист из Шымкента рассказал, что после публикации о застройке парка ему звонили неизвестные. "
        "Ол қазақ тілінде жазған постында: «Белсенділерді полиция ұстап алды, мені де қорқытты» деп жазды. "
        "В полиции города ситуацию не прокомментировали."
    )
    d = decide_language(title, text, "ru")
    assert set(d.rules) == {"kk", "ru"}
    assert shipped.classify(title, text, "ru").categories == []  # Russian rules alone miss the threat
    r = shipped.classify(title, text, d.language, languages=d.rules)
    assert r.categories == ["intimidation"]
    assert r.matches["intimidation"].rule.startswith("kk: ")
    assert "қорқытты" in {h.form for h in r.matches["intimidation"].hits}


def test_a_plain_item_runs_only_its_languages_rules(shipped: Classifier) -> None:
    title = "Участников митинга задержали в Алматы"
    text = (
        "Полиция задержала участников мирного митинга у здания акимата, их увезли в отдел, сообщил адвокат."
    )
    d = decide_language(title, text, "kk")  # a Kazakh feed posting a Russian item
    assert d.rules == ("ru",)
    assert shipped.classify(title, text, "kk").categories == []
    r = shipped.classify(title, text, d.language, languages=d.rules)
    assert r.categories and r.languages == ("ru",)
    assert all(m.rule.startswith("ru: ") for m in r.matches.values())


def test_the_classify_stage_runs_the_decided_languages_and_every_language_for_undecided_entries(
    shipped: Classifier,
) -> None:
    from dataclasses import dataclass

    from monitor.ingest.classify import classify_entries

    @dataclass(frozen=True)
    class E:
        key: str
        title: str
        text: str
        language: str | None
        rule_languages: tuple[str, ...] = ()

    title = "Участников митинга задержали"
    text = "Полиция задержала участников мирного митинга у здания акимата, их увезли в отдел."
    got = classify_entries(
        shipped,
        [
            E("decided-wrong", title, text, "kk", ("kk",)),  # as decided: Kazakh rules only
            E("decided", title, text, "ru", ("ru",)),
            E("undecided", title, text, "kk"),  # declared kk, not decided (an edited entry): every rule
        ],
    )
    assert got["decided-wrong"]["categories"] == []
    assert got["decided"]["categories"] == ["protest_crackdown"]
    assert got["undecided"]["categories"] == ["protest_crackdown"]


def test_detecting_many_texts_at_once_decides_as_one_at_a_time() -> None:
    items = [
        ("Суд арестовал блогера", "Его обвиняют в распространении ложной информации в социальных сетях.", "kk"),
        ("Белсенді сотта сөз сөйледі", "Сот отырысында ол былай деді: «Я не признаю свою вину, я просто стоял "
         "с плакатом у здания акимата и никому не мешал». Сот оған айыппұл салды.", "kk"),
        ("", "", None),
        ("Court fines activist over picket", "The activist said she would appeal the ruling.", "ru"),
        ("2026 — 12:30", "", "ru"),
    ]  # fmt: skip
    # lingua's values differ in the last digits from call to call (its sums run in no fixed order): to_json rounds
    assert [d.to_json() for d in decide_languages(items)] == [
        decide_language(*item).to_json() for item in items
    ]
    assert [d.rules for d in decide_languages(items)] == [("ru",), ("kk", "ru"), (), ("en",), ("ru",)]


def test_a_russian_report_quoting_english_at_length_runs_both_languages_rules() -> None:
    # the quote is in another script, so it is always asked about, even though most runs are not
    text = (
        "Посольство опубликовало заявление после приговора журналисту. В заявлении говорится: "
        '"We are deeply concerned by the sentence handed down to the journalist and call for his release". '
        "Защита намерена обжаловать приговор в вышестоящем суде."
    )
    assert decide_language("Приговор журналисту", text, "ru").rules == ("ru", "en")


def test_a_long_text_in_one_plain_alphabet_is_decided_as_lingua_decides_it() -> None:
    from monitor.ingest import language

    russian = (
        "Суд Алматы оштрафовал активиста за одиночный пикет у здания акимата. Его адвокат заявил, что решение "
        "будет обжаловано в апелляционной инстанции, поскольку пикет не требовал согласования с властями. "
        "Правозащитники считают, что штраф должен был напугать других жителей города."
    )
    english = (
        "A court in Almaty fined an activist for a one-person picket outside the city administration. His lawyer "
        "said the ruling would be appealed, since a single picket needs no permission from the authorities. "
        "Rights groups said the fine was meant to frighten other residents of the city."
    )
    ukrainian = (
        "Суд у Києві оштрафував активіста за одиночний пікет біля будівлі адміністрації. Його адвокат заявив, "
        "що рішення буде оскаржено, оскільки пікет не потребував погодження з владою. Правозахисники вважають, "
        "що штраф мав налякати інших мешканців міста."
    )
    lingua = language._detector()
    for text, code in ((russian, "ru"), (english, "en")):
        best = lingua.compute_language_confidence_values(text)[0]
        assert language._code(best.language) == code and best.value > 0.999  # what the shortcut assumes
        assert detect(text) == language.Detection(code, 1.0)
    assert detect(ukrainian).language == "uk"  # its own letters: lingua is asked


def test_a_decision_and_an_index_document_come_back_from_a_worker_unchanged() -> None:
    import pickle

    from monitor.search.text import document

    d = decide_language(
        "Белсенді сотта", "Сот оған айыппұл салды. «Я не признаю вину», — деді ол сотта.", "kk"
    )
    doc = document("Белсенді сотта", "Сот оған айыппұл салды.", d.language)
    assert pickle.loads(pickle.dumps((d, doc))) == (d, doc)
    # A document travels as its joined streams: both index formats come out of it the same.
    from monitor.search.backends import fts5_row, tsvector_literals

    back = pickle.loads(pickle.dumps(document("Стали задержаны", "активисты стали сталью", "ru")))
    made = document("Стали задержаны", "активисты стали сталью", "ru")
    assert any(made.keys) and fts5_row(back) == fts5_row(made)
    assert tsvector_literals(back) == tsvector_literals(made) and back == made
