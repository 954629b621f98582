"""Canonical form of the URLs found in feeds, so one article has one address.

The canonical URL is an identity (dedup across feeds and fetches), not a display string: two spellings of the same
address must converge (`HTTP://Example.KZ:80/a?utm_source=x#top` and `http://example.kz/a`), and nothing that
changes which document is served may be thrown away (other query parameters and their order stay as they are).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_plus, urljoin, urlsplit, urlunsplit

MAX_URL_LENGTH = 2048

# Parameters that only say how a reader arrived (campaigns, ad clicks, mail tools), never which page is served.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "ysclid",  # Yandex, very common on .ru/.kz sites
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
        "igshid",
        "igsh",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "wickedid",
        "rb_clickid",
        "s_cid",
        "pk_campaign",
        "pk_kwd",
        "pk_source",
        "pk_medium",
        "pk_content",
        "twclid",
        "ttclid",
        "li_fat_id",
    }
)
TRACKING_PREFIXES = ("utm_", "mtm_", "hsa_")

_DEFAULT_PORTS = {"http": 80, "https": 443}
# WHATWG URL parsing drops tabs and newlines anywhere in a URL; feeds also wrap long links across indented lines,
# so the indentation after a line break goes too.
_TAB_NEWLINE = re.compile(r"[\r\n]+[ \t]*|\t")
_HOST_CHARS = re.compile(r"[a-z0-9_.\-]+")
_PERCENT_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")
# Characters left alone when percent-encoding a path or query: the RFC 3986 reserved and unreserved sets plus "%",
# so existing escapes survive and only spaces and non-ASCII characters are encoded.
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


def _upper_escapes(s: str) -> str:
    # "%d0%bd" and "%D0%BD" are the same bytes; RFC 3986 says uppercase is canonical.
    return _PERCENT_ESCAPE.sub(lambda m: m.group(0).upper(), s) if "%" in s else s


def _is_tracking(piece: str) -> bool:
    name = unquote_plus(piece.split("=", 1)[0]).strip().lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def _canonical_host(host: str) -> str | None:
    host = host.lower().rstrip(".")
    if not host:
        return None
    if host.isascii():
        return host
    try:
        # Internationalised names (e.g. the .қаз zone) are compared in their ASCII (punycode) form.
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def canonical_url(url: str, base: str | None = None) -> str | None:
    """Return the canonical absolute http(s) form of `url`, or None if it is not a usable web address.

    Relative URLs are resolved against `base`. Scheme and host are lower-cased (IDN hosts become punycode), default
    ports, the fragment and tracking parameters are dropped; other query parameters keep their order. A `#!`
    ("hashbang") fragment is kept because single-page sites route articles by it.
    """
    if not isinstance(url, str):
        return None
    url = _TAB_NEWLINE.sub("", url).strip()
    if not url or len(url) > MAX_URL_LENGTH:
        return None
    try:
        if base and not url.lower().startswith(("http://", "https://")):
            url = urljoin(_TAB_NEWLINE.sub("", base).strip(), url)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            return None
        hostname = parts.hostname  # already lower-cased, brackets of IPv6 literals removed
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return None
    if not hostname:
        return None
    host = _canonical_host(hostname)
    if host is None:
        return None
    if ":" in host:
        host = f"[{host}]"
    elif not _HOST_CHARS.fullmatch(host):
        return None  # spaces, quotes, angle brackets...: not a host name a browser would accept
    netloc = host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{netloc}"

    path = _upper_escapes(quote(parts.path, safe=_SAFE_PATH)) or "/"
    query = ""
    if parts.query:
        kept = [p for p in parts.query.split("&") if p and not _is_tracking(p)]
        query = _upper_escapes(quote("&".join(kept), safe=_SAFE_QUERY))
    fragment = parts.fragment if parts.fragment.startswith("!") else ""
    if fragment:
        fragment = quote(fragment, safe=_SAFE_QUERY + "#")

    result = urlunsplit((scheme, netloc, path, query, fragment))
    if len(result) > MAX_URL_LENGTH:
        return None
    return result
