"""The one place where untrusted HTML from feeds becomes safe HTML or plain text.

Ingestion stores what `sanitize_html` returns; the web pages and the email digests show only that, so no script,
style or remote resource (image, frame, font...) from a feed can ever run or load on our pages. `html_to_text` gives
the rule engine the words a reader sees, without markup. Both use nh3 (ammonia, an HTML5 parser in Rust), which is
much faster than a Python parser; `sanitize_html_and_text` gives both results from a single parse for ingestion.
"""

from __future__ import annotations

import html as _html
import re
import threading
import unicodedata
from urllib.parse import urljoin, urlsplit

import nh3

__all__ = [
    "ALLOWED_TAGS",
    "LINK_REL",
    "SanitizedHtml",
    "html_to_text",
    "normalize_text",
    "safe_url",
    "sanitize_html",
    "sanitize_html_and_text",
    "strip_control",
]

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "a", "em", "strong", "b", "i", "ul", "ol", "li", "blockquote", "q", "code", "pre",
        "h2", "h3", "h4", "h5", "h6",
        "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
    }
)  # fmt: skip
# Only links carry attributes: no style/class/id (CSS tricks, spoofing our own UI), no on* handlers, no src anywhere.
_ATTRIBUTES = {"a": {"href", "title"}}
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_SCHEME = re.compile(r"\s*([a-zA-Z][a-zA-Z0-9+.-]*):")
_ABSOLUTE_LINK = ("https://", "http://", "mailto:")
LINK_REL = "nofollow noopener noreferrer"
# Elements whose *content* is not text a reader sees: dropped whole rather than unwrapped into the text.
_DROP_WITH_CONTENT = frozenset(
    {
        "script", "style", "template", "noscript", "iframe", "frame", "frameset", "object", "applet",
        "svg", "math", "textarea", "select", "button", "title", "head", "noembed", "noframes", "xmp",
    }
)  # fmt: skip

# A line break goes before every block-level tag in the *raw* HTML, so that "<div>a</div><div>b</div>" reads
# "a\nb" and not "ab" once the tags are gone, whichever tags the sanitiser keeps. Inserting a newline text node
# there changes nothing a browser renders (outside <pre>), and it saves a second HTML parse for the text.
_BLOCK_TAG = re.compile(
    r"<(?=/?(?:p|div|br|hr|li|ul|ol|dl|dt|dd|h[1-6]|blockquote|pre|table|caption|thead|tbody|tfoot|tr|td|th"
    r"|section|article|header|footer|aside|nav|main|figure|figcaption|address|details|summary)[\s/>])",
    re.IGNORECASE,
)
# On nh3 output only: it escapes "<" and ">" everywhere but in tags, so this matches exactly the tags.
_TAG = re.compile(r"<[^>]*>")
# C0/C1 controls (not tab/newline/carriage return), lone surrogates (unencodable in UTF-8, refused by databases)
# and invisible characters that split words for the rule engine (soft hyphen, zero-width space, word joiner, BOM).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_AND_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u00ad\u200b\u2060\ufeff]"
)
_BLANK_LINES = re.compile(r"\n\s*\n")


def strip_control(s: str) -> str:
    """Remove control characters and lone surrogates; keep tabs and line breaks."""
    return _CONTROL.sub("", s)


def normalize_text(s: str) -> str:
    """Plain text as the rule engine wants it: no controls or invisible characters, runs of spaces collapsed to one
    space, blank lines removed, lines trimmed, Unicode NFC (so a decomposed "й" matches a composed one)."""
    if not s:
        return ""
    s = _CONTROL_AND_INVISIBLE.sub("", s)
    # str.split()/splitlines() know every Unicode space and line break and are several times faster than a regex.
    s = "\n".join(filter(None, (" ".join(line.split()) for line in s.splitlines())))
    return unicodedata.normalize("NFC", s)


# The base URL of the fragment being cleaned, for the link filter of the one shared cleaner. Per thread: nh3 calls
# the filter on the thread that called clean, and the service sanitises on several threads at once.
_BASE = threading.local()


def _keep_link(element: str, attribute: str, value: str) -> str | None:
    if attribute != "href" or value.startswith(_ABSOLUTE_LINK):
        return value  # the common case, kept cheap: this runs for every link of every entry
    scheme = _SCHEME.match(value)
    if scheme:
        return value if scheme.group(1).lower() in _LINK_SCHEMES else None
    base = getattr(_BASE, "url", None)
    if base is None or not value.strip():
        # A relative link would point into *our* site; better no link than a wrong one.
        return None
    try:
        resolved = urljoin(base, value.strip())
    except ValueError:
        return None
    # Checked again after joining: "java\tscript:" has no scheme to the regex but has one to urljoin.
    return resolved if resolved.startswith(("http://", "https://")) else None


# Built once: nh3.clean() with these options builds the same cleaner again on every call, which cost as much as
# cleaning a 1.5 KB entry.
_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(_DROP_WITH_CONTENT),
    attributes=_ATTRIBUTES,
    attribute_filter=_keep_link,
    strip_comments=True,
    link_rel=LINK_REL,
    url_schemes=set(_LINK_SCHEMES),
)
_TEXT_CLEANER = nh3.Cleaner(
    tags=set(), clean_content_tags=set(_DROP_WITH_CONTENT), attributes={}, strip_comments=True, link_rel=None
)


def _clean(html: str, base_url: str | None) -> str:
    _BASE.url = base_url if base_url and base_url.startswith(("http://", "https://")) else None
    try:
        return _CLEANER.clean(_BLOCK_TAG.sub("\n<", strip_control(html)))
    finally:
        _BASE.url = None


def _tidy(clean: str) -> str:
    # Removed elements and the inserted line breaks leave runs of empty lines; they mean nothing outside <pre>.
    if "<pre" not in clean:
        clean = _BLANK_LINES.sub("\n", clean)
    return clean.strip()


def sanitize_html(html: str, base_url: str | None = None) -> str:
    """Safe HTML for display: a few formatting tags, links only to http(s)/mailto with rel="nofollow noopener
    noreferrer", relative links made absolute against `base_url` (dropped when there is none)."""
    if not html:
        return ""
    return _tidy(_clean(html, base_url))


def sanitize_html_and_text(html: str, base_url: str | None = None) -> tuple[str, str]:
    """`(sanitize_html(html, base_url), html_to_text(html))` from one HTML parse."""
    if not html:
        return "", ""
    clean = _clean(html, base_url)
    return _tidy(clean), normalize_text(_html.unescape(_TAG.sub("", clean)))


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: tags dropped (with the content of script, style and the like), entities
    decoded, block elements become line breaks, whitespace collapsed."""
    if not html:
        return ""
    if "<" not in html and "&" not in html:
        return normalize_text(html)
    text = _TEXT_CLEANER.clean(_BLOCK_TAG.sub("\n<", strip_control(html)))
    return normalize_text(_html.unescape(text))


_WEB_SCHEMES = frozenset({"http", "https"})
_URL_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


def safe_url(url: object) -> str | None:
    """An absolute http(s) URL, or None: feed-supplied links never become javascript:, data: or relative links."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in _WEB_SCHEMES or not parts.netloc:
        return None
    # Control characters and whitespace inside a URL are how some filter bypasses start; refuse rather than fix.
    if _URL_BAD_CHARS.search(url):
        return None
    return url


class SanitizedHtml(str):
    """HTML known to be exactly what `sanitize_html` returns for it (monitor.incidents.display checks that), which
    the templates' safe_html filter shows without cleaning it again. Nothing else makes one. A plain string
    otherwise: printed without the filter it is escaped like any text, and what str methods return is plain str."""

    __slots__ = ()
