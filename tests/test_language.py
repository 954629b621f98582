"""Per-item language: lingua restricted to the region, and the rule for which language's rules run."""

from __future__ import annotations

from monitor.ingest.language import CONFIDENT, decide_language, detect


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
