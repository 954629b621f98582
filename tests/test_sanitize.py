import re
from pathlib import Path

import feedparser

from monitor.sanitize import html_to_text, normalize_text, sanitize_html, sanitize_html_and_text

FEEDS = Path(__file__).parent / "data" / "feeds"

# Anything that can run code, load a remote resource, or restyle our pages.
DANGEROUS = re.compile(
    r"<\s*(script|style|iframe|img|svg|math|object|embed|form|input|button|link|meta|base|video|audio|source)\b"
    r"|\son\w+\s*=|\sstyle\s*=|\sclass\s*=|\sid\s*=|\ssrc\s*=|\ssrcset\s*=|\saction\s*=|\sposter\s*="
    r"|javascript:|vbscript:|data:|expression\(|evil\.example",
    re.IGNORECASE,
)


def hostile_bodies() -> list[str]:
    # Read the raw HTML with feedparser's own sanitiser off, to test ours on the original markup.
    parsed = feedparser.parse(str(FEEDS / "hostile.xml"), sanitize_html=False, resolve_relative_uris=False)
    bodies = []
    for entry in parsed.entries:
        bodies.append(entry.content[0].value if "content" in entry else entry.summary)
    assert len(bodies) == 3
    return bodies


def test_hostile_fixture_really_is_hostile() -> None:
    # Guards the test below: if the fixture lost its payloads, "nothing dangerous left" would prove nothing.
    raw = "\n".join(hostile_bodies())
    for payload in [
        "<script",
        "onerror=",
        "javascript:",
        "<style",
        "style=",
        "<iframe",
        "<img",
        "data:",
        "<svg",
    ]:
        assert payload in raw


def test_sanitize_removes_every_hostile_construct_from_fixture() -> None:
    for body in hostile_bodies():
        clean = sanitize_html(body, "https://civic-pulse.example/news/")
        assert DANGEROUS.search(clean) is None, clean


def test_sanitize_keeps_the_article_text_of_hostile_fixture() -> None:
    clean = "\n".join(sanitize_html(b, "https://civic-pulse.example/") for b in hostile_bodies())
    assert "Police detained at least twenty people" in clean
    assert "Witnesses said officers used force." in clean
    assert "fined 50 monthly indices" in clean
    assert (
        '<a href="https://rights.example/report?id=12" rel="nofollow noopener noreferrer">the report</a>'
        in clean
    )


def test_sanitize_strips_script_and_event_handlers() -> None:
    html = '<p onclick="steal()">Суд <b onmouseover="x()">оштрафовал</b></p><script>alert("x")</script>'
    assert sanitize_html(html) == "<p>Суд <b>оштрафовал</b>\n</p>"


def test_sanitize_drops_images_iframes_and_styles_with_their_remote_urls() -> None:
    html = (
        '<img src="https://tracker.example/p.gif"><iframe src="https://evil.example/">x</iframe>'
        '<style>@import url(https://evil.example/a.css)</style><p style="background:url(https://evil.example/b)">t</p>'
    )
    clean = sanitize_html(html)
    assert "example" not in clean
    assert clean == "<p>t\n</p>"


def test_links_get_rel_nofollow_and_only_safe_schemes() -> None:
    html = (
        '<a href="https://a.example/x" rel="opener" target="_blank">a</a>'
        '<a href="mailto:press@ngo.example">b</a>'
        '<a href="javascript:alert(1)">c</a><a href="data:text/html,x">d</a><a href="ftp://f.example/">e</a>'
    )
    assert sanitize_html(html) == (
        '<a href="https://a.example/x" rel="nofollow noopener noreferrer">a</a>'
        '<a href="mailto:press@ngo.example" rel="nofollow noopener noreferrer">b</a>'
        '<a rel="nofollow noopener noreferrer">c</a><a rel="nofollow noopener noreferrer">d</a>'
        '<a rel="nofollow noopener noreferrer">e</a>'
    )


def test_relative_links_are_made_absolute_against_base_url() -> None:
    clean = sanitize_html('<a href="../kk/news/5">Толығырақ</a>', "https://civic.example/ru/news/")
    assert (
        clean
        == '<a href="https://civic.example/ru/kk/news/5" rel="nofollow noopener noreferrer">Толығырақ</a>'
    )


def test_relative_links_without_base_lose_their_href() -> None:
    assert sanitize_html('<a href="/news/5">x</a>') == '<a rel="nofollow noopener noreferrer">x</a>'


def test_formatting_tags_are_kept() -> None:
    html = (
        "<h2>Итоги</h2><ul><li><em>a</em></li><li><strong>b</strong></li></ul>"
        "<blockquote><q>цитата</q></blockquote><table><tr><td>1</td></tr></table>"
    )
    clean = sanitize_html(html)
    for tag in ["<h2>", "<ul>", "<li>", "<em>", "<strong>", "<blockquote>", "<q>", "<table>", "<td>"]:
        assert tag in clean


def test_html_to_text_drops_tags_decodes_entities_and_breaks_blocks() -> None:
    html = (
        "<div>Журналист&nbsp;<b>задержан</b></div><div>в Алматы &amp; Астане</div>"
        "<p>1 &lt; 2</p><ul><li>первый</li><li>второй</li></ul>"
    )
    assert html_to_text(html) == "Журналист задержан\nв Алматы & Астане\n1 < 2\nпервый\nвторой"


def test_html_to_text_drops_script_and_style_content() -> None:
    assert html_to_text("<style>p{color:red}</style>Текст<script>var x = 1;</script>") == "Текст"


def test_html_to_text_does_not_split_words_at_inline_tags() -> None:
    assert html_to_text("Жур<i>на</i>лист") == "Журналист"


def test_html_to_text_collapses_whitespace() -> None:
    assert html_to_text("  a \t\n\n  b   c  ") == "a\nb c"


def test_text_removes_soft_hyphens_and_control_characters() -> None:
    assert normalize_text("жур\u00adна\u200bлист\x00\x07\x9f") == "журналист"


def test_text_is_nfc_so_decomposed_letters_match() -> None:
    assert normalize_text("и\u0306") == "й"


def test_sanitize_html_and_text_agrees_with_the_two_functions() -> None:
    html = '<div>Ақтөбеде <a href="/a">белсенді</a></div><p>ұсталды</p><script>x()</script>'
    base = "https://civic.example/"
    assert sanitize_html_and_text(html, base) == (sanitize_html(html, base), html_to_text(html))
