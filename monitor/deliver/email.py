"""Building the digest message: RFC 5322, multipart/alternative (plain text first, then HTML with inlined CSS).

The serialised message is pure ASCII (RFC 2047 encoded-words for UTF-8 headers, quoted-printable or base64 bodies),
so any server takes it without 8BITMIME/SMTPUTF8 and the outbox can store it as text and resend it byte for byte.
"""

from __future__ import annotations

import email.policy
import uuid
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import css_inline

from monitor.deliver.charts import InlineImage

# 7bit: the content manager picks quoted-printable or base64 for UTF-8 bodies instead of raw 8-bit bytes;
# SMTP: CRLF line endings, as the wire wants them.
POLICY = email.policy.SMTP.clone(cte_type="7bit")

_INLINER = css_inline.CSSInliner(
    load_remote_stylesheets=False,  # never fetch anything while building a message
    keep_style_tags=False,
    keep_at_rules=True,  # @media rules cannot be inlined; clients that understand them keep them
)


def inline_css(html: str) -> str:
    """Move <style> rules into style="" attributes: many mail clients drop <style> blocks."""
    return _INLINER.inline(html)


def domain_of(address: str) -> str:
    addr = parseaddr(address)[1]
    domain = addr.rpartition("@")[2] or "localhost"
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return "localhost"


def envelope_address(address: str) -> str:
    """The bare address for MAIL FROM / RCPT TO, with an internationalised domain in its ASCII form."""
    addr = parseaddr(address)[1]
    local, _, domain = addr.rpartition("@")
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return addr


def new_message_id(digest: str, sender: str) -> str:
    """A globally unique Message-ID, made once per digest message and stored, so every resend reuses it."""
    return f"<digest.{digest}.{uuid.uuid4().hex}@{domain_of(sender)}>"


def build_message(
    *,
    subject: str,
    sender: str,
    recipients: Sequence[str],
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    list_id: str | None = None,
    images: Sequence[InlineImage] = (),
) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    # A header must be one line; feed text can reach the subject through the template.
    msg["Subject"] = " ".join(subject.split())
    msg["From"] = sender
    if recipients:
        msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if list_id:
        msg["List-Id"] = list_id  # lets people filter digests into a folder
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders must not reply
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    if images:  # the HTML part becomes multipart/related: pictures it shows by cid:, nothing fetched
        html_part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html")
        assert isinstance(html_part, EmailMessage)
        for img in images:
            html_part.add_related(img.data, "image", img.subtype, cid=f"<{img.cid}>", disposition="inline")
    return msg


def serialise(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=POLICY)
