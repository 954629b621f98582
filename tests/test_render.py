"""Helpers every page and email goes through (monitor.deliver.render)."""

from __future__ import annotations

from monitor.deliver.render import category_page, incident_page, month_page, safe_url, truncate_text


def test_excerpt_collapses_spaces_and_cuts_at_a_word() -> None:
    assert truncate_text("a  b\n c", 300) == "a b c"
    assert truncate_text("слово " * 400, 20) == "слово слово слово…"
    assert truncate_text(None) == ""


def test_excerpt_of_a_long_text_whose_start_is_mostly_space() -> None:
    # the start alone is too short once spaces collapse: the whole text decides
    assert truncate_text(" " * 5000 + "конец текста", 300) == "конец текста"
    assert truncate_text("a" + " " * 1500 + "b" * 400, 300) == "a…"


def test_page_paths_are_those_site_build_writes() -> None:
    assert incident_page(12) == "incident/12.html"
    assert category_page("Media Restriction") == "category/media-restriction.html"
    assert month_page("2026-11") == "archive/2026-11.html"


def test_links_with_spaces_or_control_characters_are_refused() -> None:
    assert safe_url("https://example.org/a b") is None
    assert safe_url("https://example.org/a\x7fb") is None
    assert safe_url("javascript:alert(1)") is None
    assert safe_url(" https://example.org/ok ") == "https://example.org/ok"
