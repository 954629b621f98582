import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.errors import ParseError
from monitor.ingest.parse import (
    Entry,
    ParsedFeed,
    ParseLimits,
    detect_language,
    normalize_language,
    parse_feed,
)

FEEDS = Path(__file__).parent / "data" / "feeds"
NOW = datetime(2024, 5, 20, 12, 0, tzinfo=UTC)


def load(name: str) -> bytes:
    return (FEEDS / name).read_bytes()


def parse(name: str, **kwargs: object) -> ParsedFeed:
    kwargs.setdefault("url", f"https://feeds.example/{name}")
    kwargs.setdefault("now", NOW)
    return parse_feed(load(name), **kwargs)  # type: ignore[arg-type]


def by_guid(feed: ParsedFeed) -> dict[str | None, Entry]:
    return {e.guid: e for e in feed.entries}


def rss(items: str, channel: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Test</title>'
        f"<link>https://t.example/</link>{channel}{items}</channel></rss>"
    ).encode()


# --- dialects -------------------------------------------------------------------------------------------------


def test_rss091_entries_are_identified_by_url_and_undated_ones_get_now() -> None:
    feed = parse("rss091.xml")
    assert feed.title == "Steppe Rights Bulletin"
    assert feed.language == "en"
    assert len(feed.entries) == 3
    first = feed.entries[0]
    assert first.key == "url:https://bulletin.steppe-rights.example/notes/2024/05/solo-picket-almaty"
    assert first.guid is None
    assert first.title == "Almaty court jails activist for 15 days over solo picket"
    assert first.published == NOW
    assert first.published_estimated is True
    assert first.language == "en"


def test_rss10_rdf_entries_have_dates_authors_and_about_as_guid() -> None:
    feed = parse("rss10.rdf")
    assert feed.language == "ru"
    assert [e.key for e in feed.entries] == [
        "guid:https://pravo-monitor.example/chronicle/1841",
        "guid:https://pravo-monitor.example/chronicle/1839",
        "guid:https://pravo-monitor.example/chronicle/1836",
    ]
    first = feed.entries[0]
    assert first.published == datetime(2024, 5, 18, 4, 40, tzinfo=UTC)
    assert first.published_estimated is False
    assert first.author == "Редакция"
    assert first.title.startswith("В Уральске задержали участников пикета")


def test_rss20_prefers_full_content_over_summary() -> None:
    entry = by_guid(parse("rss20.xml"))["civic-kz-20240520-0815"]
    assert "Специализированный административный суд Актобе" in entry.text
    assert "Суд признал публикацию призывом" not in entry.text  # the <description> teaser
    assert "<strong>10 суток ареста</strong>" in entry.html


def test_rss20_links_in_content_are_absolute_and_images_are_gone() -> None:
    entry = by_guid(parse("rss20.xml"))["civic-kz-20240520-0815"]
    assert "<img" not in entry.html and "cdn.civic-kz.example" not in entry.html
    # the relative link in the content is resolved against the entry's page, not left pointing into our site
    assert re.search(r'href="https://[^"]+/news/2024/05/18/tariffs-protest"', entry.html)


def test_rss20_relative_entry_link_is_resolved_against_the_feed_url() -> None:
    entry = by_guid(parse("rss20.xml", url="https://civic-kz.example/feed/rss20.xml"))[
        "civic-kz-20240519-1730"
    ]
    assert entry.url == "https://civic-kz.example/feed/news/2024/05/19/nko-foreign-grants"


def test_rss20_ttl_and_per_item_language() -> None:
    feed = parse("rss20.xml")
    assert feed.ttl_minutes == 30
    assert feed.language == "ru"
    languages = {e.guid: e.language for e in feed.entries}
    assert languages == {
        "civic-kz-20240520-0815": "ru",
        "civic-kz-20240520-0820-kk": "kk",
        "civic-kz-20240519-1730": "ru",
        "civic-kz-20240519-1200-en": "en",
        "civic-kz-20240518-1045": "ru",
    }


def test_atom_entry_language_comes_from_xml_lang_primary_subtag() -> None:
    feed = parse("atom10.xml")
    assert feed.language == "en"
    assert [e.language for e in feed.entries] == ["en", "ru", "kk", "ru", "en", "kk"]


def test_atom_html_title_becomes_plain_text() -> None:
    entry = parse("atom10.xml").entries[1]
    assert entry.title == "В Бишкеке задержали редактора независимого издания"


def test_atom_xhtml_and_text_content() -> None:
    entries = parse("atom10.xml").entries
    assert entries[1].text.startswith("Сотрудники ГКНБ провели обыск")
    assert "\n" in entries[1].text  # two paragraphs stay two lines
    assert entries[4].text.startswith("Relatives say the blogger")
    assert entries[4].html.startswith("<p>Relatives say")


def test_atom_relative_links_use_xml_base() -> None:
    entry = parse("atom10.xml").entries[0]
    assert entry.url == "https://openasia-watch.example/en/2024/05/tajik-lawyer-sentenced"
    assert entry.author == "Farida Karimova"


def test_missing_published_falls_back_to_updated() -> None:
    entry = parse("atom10.xml").entries[2]
    assert entry.published == datetime(2024, 5, 18, 5, 0, tzinfo=UTC)
    assert entry.published_estimated is False


def test_published_is_aware_utc() -> None:
    for name in ["rss10.rdf", "rss20.xml", "atom10.xml", "cp1251.xml"]:
        for entry in parse(name).entries:
            assert entry.published.tzinfo is not None
            assert entry.published.utcoffset() == timedelta(0)


# --- encodings --------------------------------------------------------------------------------------------------


def test_cp1251_fixture_really_is_cp1251() -> None:
    body = load("cp1251.xml")
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    assert b'encoding="windows-1251"' in body


def test_cp1251_feed_decodes_cyrillic_titles() -> None:
    feed = parse("cp1251.xml")
    assert feed.title == "Регион-Информ: общество и право"
    assert feed.entries[0].title == "Петропавловского журналиста вызвали на допрос по делу о клевете"
    assert "ещё одно уведомление" in feed.entries[2].text


def test_cp1251_declared_in_xml_survives_text_xml_without_charset() -> None:
    # RFC 3023 says text/xml without charset is US-ASCII; the servers that send it mean "look at the document".
    feed = parse("cp1251.xml", headers={"Content-Type": "text/xml"})
    assert feed.entries[0].title == "Петропавловского журналиста вызвали на допрос по делу о клевете"


def test_koi8r_feed_decodes_with_charset_from_http_header_only() -> None:
    assert b"encoding=" not in load("koi8r.xml")
    feed = parse("koi8r.xml", headers={"Content-Type": "application/rss+xml; charset=KOI8-R"})
    assert feed.title == "Вестник Семея: гражданские новости"
    assert feed.entries[0].title == "Жителей Семея оштрафовали за сбор подписей против вырубки сквера"


def test_koi8r_feed_header_keys_are_case_insensitive() -> None:
    feed = parse("koi8r.xml", headers={"CONTENT-TYPE": "text/xml; charset=koi8-r"})
    assert feed.entries[1].title == "Правозащитник рассказал о давлении после мониторинга выборов"


def test_koi8r_feed_without_header_is_not_decoded_as_cyrillic() -> None:
    # Shows the header is what makes the test above pass.
    feed = parse("koi8r.xml")
    assert feed.entries[0].title != "Жителей Семея оштрафовали за сбор подписей против вырубки сквера"


# --- broken and non-feeds ---------------------------------------------------------------------------------------


def test_broken_feed_yields_recovered_entries_with_warning() -> None:
    feed = parse("broken.xml")
    assert feed.warning and "undefined entity" in feed.warning
    assert [e.guid for e in feed.entries] == ["kn-1204", "kn-1199", "kn-1195"]
    assert (
        feed.entries[1].text
        == "Суд решил, что публикация видео одиночного пикета — это «организация» незаконного собрания."
    )


def test_bare_ampersand_in_broken_feed_link_is_not_read_as_an_entity() -> None:
    feed = parse("broken.xml")
    assert feed.entries[0].url == "https://karaganda-notes.example/?p=1204&lang=ru"


def test_well_formed_feed_has_no_warning() -> None:
    assert parse("rss20.xml", headers={"content-type": "text/html"}).warning is None


def test_html_page_error_names_advertised_feeds() -> None:
    with pytest.raises(ParseError) as info:
        parse(
            "page.html",
            url="https://civic-kz.example/ru/",
            headers={"Content-Type": "text/html; charset=utf-8"},
        )
    err = info.value
    assert err.kind == "not_a_feed"
    assert err.url == "https://civic-kz.example/ru/"
    assert err.feed_links == [
        "https://civic-kz.example/feed/rss20.xml",
        "https://civic-kz.example/kk/feed.atom",
    ]
    assert "https://civic-kz.example/feed/rss20.xml" in str(err)
    assert "https://civic-kz.example/kk/feed.atom" in str(err)


def test_html_page_without_feed_links_is_not_a_feed() -> None:
    body = b"<!DOCTYPE html><html><head><title>404</title></head><body><p>Not found</p></body></html>"
    with pytest.raises(ParseError) as info:
        parse_feed(body, url="https://x.example/feed", now=NOW)
    assert info.value.kind == "not_a_feed"
    assert info.value.feed_links == []


def test_json_document_is_not_a_feed() -> None:
    with pytest.raises(ParseError) as info:
        parse_feed(b'{"error": "rate limited"}', url="https://x.example/feed", now=NOW)
    assert info.value.kind == "not_a_feed"


@pytest.mark.parametrize("body", [b"", b"   \r\n\t  "])
def test_empty_body_is_an_empty_error(body: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_feed(body, url="https://x.example/feed", now=NOW)
    assert info.value.kind == "empty"


def test_empty_fixture_is_an_empty_error() -> None:
    with pytest.raises(ParseError) as info:
        parse("empty.xml")
    assert info.value.kind == "empty"


def test_feed_with_no_items_is_a_feed() -> None:
    feed = parse_feed(rss(""), url="https://t.example/rss", now=NOW)
    assert feed.entries == [] and feed.title == "Test"


# --- identity ---------------------------------------------------------------------------------------------------


def test_repeated_guid_gives_distinct_keys() -> None:
    entries = parse("dup_guids.xml").entries
    same_guid = [e for e in entries if e.guid == "daily-kz-2024-05-17"]
    assert len(same_guid) == 2
    assert same_guid[0].key != same_guid[1].key
    assert all(e.key.startswith("guid:daily-kz-2024-05-17#") for e in same_guid)


def test_exact_repeat_of_an_entry_is_dropped() -> None:
    entries = parse("dup_guids.xml").entries
    assert len(entries) == 3
    assert [e.key for e in entries].count(
        "guid:daily-kz-2024-05-16"
    ) == 0  # the repeated one is disambiguated
    assert sum(1 for e in entries if e.guid == "daily-kz-2024-05-16") == 1


def test_disambiguated_keys_do_not_depend_on_order() -> None:
    body = load("dup_guids.xml").decode()
    items = re.findall(r"<item>.*?</item>", body, re.DOTALL)
    reordered = body.replace(items[0], "@@").replace(items[1], items[0]).replace("@@", items[1])
    assert reordered != body
    first = {e.url: e.key for e in parse("dup_guids.xml").entries}
    second = {
        e.url: e.key for e in parse_feed(reordered.encode(), url="https://feeds.example/x", now=NOW).entries
    }
    assert first == second


def test_repeated_link_without_guid_gives_distinct_keys() -> None:
    items = "".join(
        f"<item><title>{t}</title><link>https://t.example/</link></item>" for t in ["Первая", "Вторая"]
    )
    keys = [e.key for e in parse_feed(rss(items), url="https://t.example/rss", now=NOW).entries]
    assert len(set(keys)) == 2 and all(k.startswith("url:https://t.example/#") for k in keys)


def test_entry_without_guid_or_link_is_identified_by_content_hash() -> None:
    feed = parse("no_guid_no_link.xml")
    assert len(feed.entries) == 3
    for entry in feed.entries:
        assert entry.guid is None and entry.url is None
        expected = hashlib.sha256(f"{entry.title}\n{entry.text}".encode()).hexdigest()
        assert entry.content_hash == expected
        assert entry.key == f"hash:{expected}"
    assert [e.key for e in parse("no_guid_no_link.xml").entries] == [e.key for e in feed.entries]


def test_entry_without_title_gets_one_from_its_text() -> None:
    entry = parse("no_guid_no_link.xml").entries[2]
    assert entry.title.startswith("Заявление: мы обеспокоены обысками")


def test_content_hash_changes_when_text_changes_but_key_does_not() -> None:
    before = parse_feed(rss("<item><guid>g1</guid><title>T</title><description>a</description></item>"),
                        url="https://t.example/rss", now=NOW).entries[0]  # fmt: skip
    after = parse_feed(rss("<item><guid>g1</guid><title>T</title><description>b</description></item>"),
                       url="https://t.example/rss", now=NOW).entries[0]  # fmt: skip
    assert before.key == after.key == "guid:g1"
    assert before.content_hash != after.content_hash


def test_tracking_parameters_are_dropped() -> None:
    feed = parse("tracking_links.xml")
    assert [e.url for e in feed.entries] == [
        "https://media-digest.example/2024/05/press-freedom-count",
        "https://media-digest.example/article.php?id=7781&lang=en",
        "https://media-digest.example/news?section=elections&page=2",
        "https://media-digest.example/2024/05/travel-ban",
    ]
    assert all(e.key == f"url:{e.url}" for e in feed.entries)
    assert feed.link == "https://media-digest.example/"


def test_overlong_guid_falls_back_to_url_and_overlong_url_to_hash() -> None:
    limits = ParseLimits(max_guid=10, max_url=30)
    items = (
        "<item><guid>g-0123456789abcdef</guid><link>https://t.example/a</link><title>A</title></item>"
        "<item><guid>g-0123456789abcdef-2</guid><link>https://t.example/a-very-long-address-indeed</link>"
        "<title>B</title></item>"
    )
    a, b = parse_feed(rss(items), url="https://t.example/rss", now=NOW, limits=limits).entries
    assert a.guid is None and a.key == "url:https://t.example/a"
    assert b.guid is None and b.url is None and b.key.startswith("hash:")


# --- dates ------------------------------------------------------------------------------------------------------


def test_future_date_is_clamped() -> None:
    entries = by_guid(parse("future_dates.xml"))
    pinned = entries["oa-pinned-hotline"]  # year 2099
    assert pinned.published == NOW and pinned.published_estimated is True
    three_hours_ahead = entries["oa-5120"]
    assert three_hours_ahead.published == NOW and three_hours_ahead.published_estimated is True


def test_date_slightly_ahead_is_kept() -> None:
    entry = by_guid(parse("future_dates.xml"))["oa-5119"]
    assert entry.published == NOW + timedelta(minutes=30)
    assert entry.published_estimated is False


def test_missing_date_is_now_and_flagged() -> None:
    entry = by_guid(parse("future_dates.xml"))["oa-5117"]
    assert entry.published == NOW and entry.published_estimated is True


def test_russian_date_is_understood() -> None:
    entry = by_guid(parse("future_dates.xml"))["oa-5114"]
    assert entry.published == datetime(2024, 5, 19, 9, 30, tzinfo=UTC)
    assert entry.published_estimated is False


def test_naive_now_is_taken_as_utc() -> None:
    entry = parse("future_dates.xml", now=NOW.replace(tzinfo=None)).entries[0]
    assert entry.published == NOW


# --- safety and caps --------------------------------------------------------------------------------------------


def test_hostile_feed_titles_and_html_are_clean() -> None:
    feed = parse("hostile.xml")
    assert feed.title == "Civic Pulse"
    assert feed.entries[0].title == "Activists detained at Almaty rally"
    for entry in feed.entries:
        for value in (entry.title, entry.text, entry.html):
            assert "<script" not in value and "alert(" not in value and "evil.example" not in value
        assert "<img" not in entry.html and "<iframe" not in entry.html and "style=" not in entry.html


def test_control_characters_are_stripped() -> None:
    # (C1 characters are not tested here: feedparser maps them to their Windows-1252 meaning, on purpose.)
    items = "<item><guid>g\x0b</guid><title>Суд\x01 над\x1b журналистом</title><description>текст\x7f</description></item>"
    entry = parse_feed(rss(items), url="https://t.example/rss", now=NOW).entries[0]
    assert entry.title == "Суд над журналистом"
    assert entry.text == "текст"
    assert entry.guid == "g"


def test_title_and_text_are_truncated() -> None:
    limits = ParseLimits(max_title=20, max_text=50)
    items = f"<item><guid>g</guid><title>{'Заголовок ' * 10}</title><description>{'слово ' * 100}</description></item>"
    entry = parse_feed(rss(items), url="https://t.example/rss", now=NOW, limits=limits).entries[0]
    assert len(entry.title) <= 20 and entry.title.endswith("…")
    assert len(entry.text) <= 50 and entry.text.endswith("…")


def test_entries_over_max_entries_are_dropped_and_counted() -> None:
    items = "".join(f"<item><guid>g{i}</guid><title>Новость {i}</title></item>" for i in range(12))
    feed = parse_feed(rss(items), url="https://t.example/rss", now=NOW, limits=ParseLimits(max_entries=5))
    assert [e.guid for e in feed.entries] == ["g0", "g1", "g2", "g3", "g4"]
    assert feed.dropped == 7


def test_entry_with_nothing_in_it_is_skipped() -> None:
    items = "<item><description>   </description></item><item><guid>g</guid><title>Есть</title></item>"
    feed = parse_feed(rss(items), url="https://t.example/rss", now=NOW)
    assert [e.title for e in feed.entries] == ["Есть"]


# --- language ---------------------------------------------------------------------------------------------------


def test_language_is_guessed_from_script_when_nothing_declares_it() -> None:
    feed = parse("no_guid_no_link.xml")
    assert feed.language is None
    assert [e.language for e in feed.entries] == ["kk", "en", "ru"]


def test_default_language_beats_the_guess() -> None:
    feed = parse("cp1251.xml", default_language="kk-KZ")
    assert {e.language for e in feed.entries} == {"kk"}


def test_feed_language_beats_default_language() -> None:
    feed = parse("rss10.rdf", default_language="en")
    assert {e.language for e in feed.entries} == {"ru"}


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("ru-RU", "ru"),
        ("kk_KZ", "kk"),
        ("EN-us", "en"),
        ("kz", "kk"),
        ("", None),
        ("русский", None),
        (None, None),
    ],
)
def test_normalize_language(tag: str | None, expected: str | None) -> None:
    assert normalize_language(tag) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Белсенді ұсталды", "kk"),
        ("Активиста задержали", "ru"),
        ("Activist detained", "en"),
        ("Активиста задержали в Almaty", "ru"),
        ("2024 — 15", None),
    ],
)
def test_detect_language(text: str, expected: str | None) -> None:
    assert detect_language(text) == expected


def test_sy_update_period_gives_ttl_when_there_is_no_ttl() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0" xmlns:sy="http://purl.org/rss/1.0/modules/syndication/">'
        b"<channel><title>T</title><sy:updatePeriod>daily</sy:updatePeriod>"
        b"<sy:updateFrequency>4</sy:updateFrequency><item><guid>g</guid><title>x</title></item></channel></rss>"
    )
    assert parse_feed(body, url="https://t.example/rss", now=NOW).ttl_minutes == 360


def test_permalink_guid_that_is_not_an_address_does_not_become_the_url() -> None:
    items = "<item><guid>12345</guid><title>Без ссылки</title></item>"
    entry = parse_feed(rss(items), url="https://t.example/rss", now=NOW).entries[0]
    assert entry.guid == "12345" and entry.url is None and entry.key == "guid:12345"


def test_permalink_guid_that_is_an_address_becomes_the_url() -> None:
    items = "<item><guid>https://t.example/news/5?utm_source=rss</guid><title>Со ссылкой</title></item>"
    entry = parse_feed(rss(items), url="https://t.example/rss", now=NOW).entries[0]
    assert entry.url == "https://t.example/news/5"


def test_content_language_header_does_not_override_the_feed_language() -> None:
    feed = parse("rss10.rdf", headers={"Content-Language": "en"})
    assert {e.language for e in feed.entries} == {"ru"}


def test_content_language_header_is_used_when_the_feed_declares_nothing() -> None:
    feed = parse("cp1251.xml", headers={"Content-Language": "kk-KZ, ru"}, default_language="en")
    assert feed.language == "kk"
    assert {e.language for e in feed.entries} == {"kk"}


def test_json_feed_is_named_in_the_error() -> None:
    body = b'{"version": "https://jsonfeed.org/version/1.1", "title": "x", "items": []}'
    with pytest.raises(ParseError, match="JSON Feed"):
        parse_feed(body, url="https://t.example/feed.json", now=NOW)
