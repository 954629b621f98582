import pytest

from monitor.ingest.urls import MAX_URL_LENGTH, canonical_url


def test_scheme_and_host_are_lower_cased_and_default_port_dropped() -> None:
    assert canonical_url("HTTPS://News.Example.KZ:443/Society/A") == "https://news.example.kz/Society/A"
    assert canonical_url("http://news.example.kz:80/a") == "http://news.example.kz/a"


def test_non_default_port_is_kept() -> None:
    assert canonical_url("http://news.example.kz:8080/a") == "http://news.example.kz:8080/a"


def test_fragment_is_dropped() -> None:
    assert canonical_url("https://news.example.kz/a#comments") == "https://news.example.kz/a"


def test_hashbang_fragment_is_kept_because_it_routes_articles() -> None:
    assert canonical_url("https://spa.example.kz/#!/news/42") == "https://spa.example.kz/#!/news/42"


def test_tracking_parameters_are_dropped_and_others_keep_their_order() -> None:
    url = (
        "https://news.example.kz/read?utm_source=rss&id=7&utm_medium=feed&fbclid=IwAR0&lang=ru"
        "&gclid=x&yclid=1&ysclid=2&mc_cid=3&mc_eid=4&_ga=5&igshid=6&UTM_Campaign=7&page=2"
    )
    assert canonical_url(url) == "https://news.example.kz/read?id=7&lang=ru&page=2"


def test_query_made_only_of_tracking_parameters_disappears() -> None:
    assert canonical_url("https://news.example.kz/a?utm_source=x&utm_medium=y") == "https://news.example.kz/a"


def test_parameter_that_merely_contains_utm_is_kept() -> None:
    assert canonical_url("https://news.example.kz/a?notutm_x=1") == "https://news.example.kz/a?notutm_x=1"


def test_relative_url_is_resolved_against_base() -> None:
    base = "https://news.example.kz/society/2024/"
    assert canonical_url("../politics/5", base) == "https://news.example.kz/society/politics/5"
    assert canonical_url("/about", base) == "https://news.example.kz/about"
    assert canonical_url("//cdn.example.kz/x", base) == "https://cdn.example.kz/x"


def test_relative_url_without_base_is_not_a_url() -> None:
    assert canonical_url("/news/1") is None


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "mailto:editor@example.kz",
        "ftp://files.example.kz/a",
        "data:text/html,<script>alert(1)</script>",
        "",
        "   ",
        "http://",
        "http://bad host.kz/",
        "http://news.example.kz:99999/",
        "http://[::1/",
    ],
)
def test_non_http_or_unparseable_gives_none(url: str) -> None:
    assert canonical_url(url) is None


def test_whitespace_and_wrapped_lines_are_removed() -> None:
    assert (
        canonical_url("  https://news.example.kz/long-\n  article\t \n")
        == "https://news.example.kz/long-article"
    )


def test_idn_host_becomes_punycode() -> None:
    assert canonical_url("https://МВД.ҚАЗ/news") == "https://xn--b1aew.xn--80ao21a/news"


def test_non_ascii_path_is_percent_encoded_like_its_escaped_spelling() -> None:
    raw = canonical_url("https://news.example.kz/новости?q=суд")
    escaped = canonical_url(
        "https://news.example.kz/%d0%bd%d0%be%d0%b2%d0%be%d1%81%d1%82%d0%b8?q=%D1%81%D1%83%D0%B4"
    )
    assert (
        raw
        == escaped
        == "https://news.example.kz/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8?q=%D1%81%D1%83%D0%B4"
    )


def test_empty_path_becomes_slash() -> None:
    assert canonical_url("https://news.example.kz") == "https://news.example.kz/"


def test_overlong_url_gives_none() -> None:
    base = "https://news.example.kz/"
    assert canonical_url(base + "a" * (MAX_URL_LENGTH - len(base))) is not None
    assert canonical_url(base + "a" * (MAX_URL_LENGTH - len(base) + 1)) is None


def test_ipv6_literal_keeps_brackets() -> None:
    assert canonical_url("http://[2001:DB8::1]:80/feed") == "http://[2001:db8::1]/feed"
