"""The digest email as it arrives at a real SMTP server (aiosmtpd on loopback), parsed with the stdlib `email`
package; SMTP URL handling, TLS variants and credentials; the `digest` command."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

import monitor.cli  # noqa: F401 - registers every command on `app`
from monitor.cli.app import app
from monitor.config.load import load_config
from monitor.deliver.digest import deliver_digest
from monitor.deliver.smtp import SmtpError, parse_smtp_url, send_message
from tests.support.digestdata import SIMPLE, T0, add_feed, add_incident, write_digests
from tests.support.html import start_tags
from tests.support.smtpserver import Certs, SmtpServer, make_certs

# aiosmtpd warns that AUTH without TLS is unsafe: these tests do it on purpose, on loopback.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

# The CLI runs at the current time; a long first look-back lets it see the seeded incidents.
ALL_TIME = SIMPLE.replace('schedule: "0 8 * * *"', 'schedule: "0 8 * * *"\n    first_lookback: 100000d')
HOSTILE = 'Арест <script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    made = make_certs(tmp_path_factory.mktemp("certs"))
    if made is None:
        pytest.skip("no openssl command: TLS variants cannot be tested here")
    return made


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    with SmtpServer() as srv:
        monkeypatch.setenv("MONITOR_SMTP_URL", srv.url())
        yield srv


def _seed(engine: Engine) -> None:
    add_feed(engine, "kz-news", title="Vlast.kz")
    add_feed(
        engine,
        "broken",
        title="Broken <b>feed</b>",
        error_count=4,
        last_error="HTTP 500 <script>x</script>",
        last_error_at=T0,
    )
    add_feed(engine, "quiet", title="Quiet feed", last_new_item_at=T0 - timedelta(days=30))
    add_incident(
        engine,
        "Газета жабылды: Қазақстанда тәуелсіз басылым",
        categories=["media_restriction"],
        severity="medium",
        terms=["жабылды"],
        at=T0,
    )
    add_incident(
        engine,
        HOSTILE,
        categories=["prosecution", "intimidation"],
        terms=["арестовали", "пытки"],
        url="javascript:alert(document.cookie)",
        items=2,
        at=T0,
    )


def _deliver(engine: Engine, config_dir: Path) -> None:
    write_digests(config_dir, SIMPLE)
    _seed(engine)
    run = deliver_digest(engine, load_config(config_dir), "daily", now=T0 + timedelta(hours=2))
    assert run.status == "delivered", run.error


def _html(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_message_is_multipart_alternative_with_utf8_headers_and_parts(
    engine: Engine, config_dir: Path, smtp: SmtpServer
) -> None:
    _deliver(engine, config_dir)
    (received,) = smtp.messages
    msg = received.message
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    # the HTML part may come wrapped with the pictures of the digest's charts (multipart/related, shown by cid:)
    parts = [next(p.iter_parts()) if p.get_content_type() == "multipart/related" else p for p in parts]
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "text/html",
    ]  # plain first: least preferred
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert msg["Subject"] == "Гражданское пространство: 2 новых, 2026-11-20"
    assert msg["From"] == "Монитор <monitor@example.org>"
    assert msg["To"].addresses[0].display_name == "Аналитик"
    assert parsedate_to_datetime(msg["Date"]) == T0 + timedelta(hours=2)
    assert re.fullmatch(r"<digest\.daily\.[0-9a-f]{32}@example\.org>", msg["Message-ID"])
    assert received.mail_from == "monitor@example.org"
    # the wire form is 7-bit: encoded-words and base64/quoted-printable, so any server accepts it
    assert received.data.isascii()
    assert "Қазақстанда тәуелсіз басылым" in _text(msg) and "Қазақстанда тәуелсіз басылым" in _html(msg)


def test_incidents_are_grouped_by_category_most_severe_first_with_why_and_sources(
    engine: Engine, config_dir: Path, smtp: SmtpServer
) -> None:
    _deliver(engine, config_dir)
    text = _text(smtp.messages[0].message)
    headings = re.findall(r"^## (.+)$", text, re.M)
    # prosecution (high) before media restriction (medium); the incident sits under its most severe category
    assert len(headings) == 3 and headings[2].startswith("Feeds needing attention")
    assert "(1)" in headings[0] and "(1)" in headings[1]
    prosecution, media = text.split("## ")[1:3]
    assert HOSTILE in prosecution and "Газета жабылды" in media
    assert "Why: арестовали, пытки" in prosecution
    assert "Kazakhstan · 2026-11-20 11:00" in prosecution  # local time of the digest (Asia/Almaty)
    assert "Incident page: https://monitor.example.org/incident/" in prosecution
    assert "(Vlast.kz, 2026-11-20)" in prosecution


def test_feed_problems_section_lists_failing_and_silent_feeds(
    engine: Engine, config_dir: Path, smtp: SmtpServer
) -> None:
    _deliver(engine, config_dir)
    msg = smtp.messages[0].message
    text = _text(msg)
    section = text.split("## Feeds needing attention")[1]
    assert "- failing: Broken <b>feed</b> since 2026-11-20: HTTP 500 <script>x</script>" in section
    assert "- silent: Quiet feed since 2026-10-21" in section
    assert "Vlast.kz" not in section
    html = _html(msg)
    assert "Broken &lt;b&gt;feed&lt;/b&gt;" in html and "HTTP 500 &lt;script&gt;x&lt;/script&gt;" in html


def test_html_is_escaped_inlined_and_loads_nothing_remote(
    engine: Engine, config_dir: Path, smtp: SmtpServer
) -> None:
    _deliver(engine, config_dir)
    html = _html(smtp.messages[0].message)
    found = start_tags(html)
    # the digest's own chart pictures, attached to the message (cid:), are the only images; nothing else loads
    tags = [(t, a) for t, a in found if not (t == "img" and (a.get("src") or "").startswith("cid:chart-"))]
    # feed text is escaped, never markup: no element or attribute came from it
    assert "&lt;script&gt;alert(" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not [t for t, _ in tags if t in ("script", "img", "link", "iframe", "object", "embed", "base")]
    assert not [
        a for _, attrs in tags for a in attrs if a.startswith("on") or a in ("src", "srcset", "background")
    ]
    # a javascript: link from a feed is shown as text, not linked
    hrefs = [attrs["href"] for t, attrs in tags if t == "a"]
    assert hrefs and all((h or "").startswith("https://") for h in hrefs)
    assert "javascript:" not in html
    # nothing is fetched when the message is opened
    assert not re.search(r"url\(|@import", html, re.I)
    # CSS is in style attributes (mail clients drop <style>); only @media rules stay in a <style> block
    incidents = [attrs for t, attrs in tags if t == "div" and "incident" in (attrs.get("class") or "")]
    assert len(incidents) == 2 and all("border-left" in (a.get("style") or "") for a in incidents)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert all(s.strip().startswith("@media") for s in styles)
    assert "https://monitor.example.org/" in hrefs  # link to the web pages


# ---------------------------------------------------------------------------------------------------- SMTP


def test_smtp_urls_parse_with_default_ports_and_decoded_credentials() -> None:
    t = parse_smtp_url("smtp+starttls://me%40org:p%3Ass@mail.example.org?cafile=/ca.pem&timeout=5")
    assert (t.mode, t.host, t.port, t.username, t.password) == (
        "starttls",
        "mail.example.org",
        587,
        "me@org",
        "p:ss",
    )
    assert t.cafile == "/ca.pem" and t.timeout == 5
    assert parse_smtp_url("smtps://h").port == 465 and parse_smtp_url("smtp://h").port == 25
    assert parse_smtp_url("smtp://h:2525").port == 2525
    assert "p:ss" not in repr(t) and "p:ss" not in t.describe() and "me@org" not in t.describe()


@pytest.mark.parametrize(
    "url,needle",
    [
        ("http://user:hunter22@h", "must start with smtp://"),
        ("smtp://user:hunter22@", "no host"),
        ("smtp://user:hunter22@h?verify=no", "unknown parameter"),
        ("smtp://user:hunter22@h:notaport", "not a valid URL"),
    ],
)
def test_bad_smtp_urls_are_reported_without_the_password(url: str, needle: str) -> None:
    with pytest.raises(SmtpError) as info:
        parse_smtp_url(url)
    assert needle in str(info.value) and "hunter22" not in str(info.value)


def _probe(srv: SmtpServer, url: str) -> None:
    raw = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: probe\r\n\r\nhello\r\n"
    send_message(parse_smtp_url(url), raw, "a@example.org", ["b@example.org"], timeout=5)


def test_starttls_upgrades_the_connection(certs: Certs) -> None:
    with SmtpServer(tls="starttls", certs=certs, auth=("user", "s3cret!")) as srv:
        _probe(srv, srv.url(user="user", password="s3cret!"))
        assert len(srv.messages) == 1 and srv.auth_attempts == [("user", "s3cret!")]


def test_implicit_tls(certs: Certs) -> None:
    with SmtpServer(tls="implicit", certs=certs) as srv:
        _probe(srv, srv.url())
        assert srv.messages[0].message["Subject"] == "probe"


def test_tls_verifies_the_certificate(certs: Certs) -> None:
    with SmtpServer(tls="implicit", certs=certs) as srv:
        url = srv.url().split("?")[0]  # no cafile: the self-signed certificate is not trusted
        with pytest.raises(SmtpError) as info:
            _probe(srv, url)
        assert info.value.kind == "tls" and srv.messages == []


def test_starttls_is_never_silently_skipped() -> None:
    with SmtpServer() as srv:  # offers no STARTTLS
        url = srv.url().replace("smtp://", "smtp+starttls://")
        with pytest.raises(SmtpError, match="does not offer STARTTLS") as info:
            _probe(srv, url)
        assert info.value.kind == "tls" and srv.messages == []


def test_wrong_password_fails_as_auth_error_without_leaking_it() -> None:
    with SmtpServer(auth=("user", "right-pass")) as srv:
        with pytest.raises(SmtpError) as info:
            _probe(srv, srv.url(user="user", password="wrong-pass-123"))
        assert info.value.kind == "auth" and "wrong-pass-123" not in str(info.value)
        assert srv.messages == []


def test_unreachable_server_is_a_connect_error() -> None:
    with SmtpServer() as srv:
        url = srv.url()
    with pytest.raises(SmtpError) as info:  # the server is stopped now
        _probe(srv, url)
    assert info.value.kind == "connect"


def test_refused_recipient_among_accepted_ones_is_reported(
    engine: Engine, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def handle_RCPT(server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.startswith("other@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    with SmtpServer() as srv:
        monkeypatch.setattr(srv.handler, "handle_RCPT", handle_RCPT, raising=False)
        monkeypatch.setenv("MONITOR_SMTP_URL", srv.url())
        write_digests(config_dir, SIMPLE)
        add_feed(engine, "kz-news")
        add_incident(engine, "Дело", at=T0)
        run = deliver_digest(engine, load_config(config_dir), "daily", now=T0 + timedelta(hours=1))
    assert run.status == "delivered" and list(run.refused) == ["other@example.org"]
    assert srv.messages[0].rcpt_tos == ["analyst@example.org"]


# ---------------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def test_cli_dry_run_writes_files_and_json(
    engine: Engine, config_dir: Path, db_url: str, cli: CliRunner, tmp_path: Path
) -> None:
    write_digests(config_dir, ALL_TIME)
    _seed(engine)
    out = tmp_path / "out"
    res = cli.invoke(
        app,
        [
            "--config",
            str(config_dir),
            "--db",
            db_url,
            "digest",
            "daily",
            "--dry-run",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["status"] == "dry_run" and data["eml"] == str(out / "daily.eml") and data["incidents"] == 2
    assert (out / "daily.eml").is_file() and (out / "daily.html").is_file()


def test_cli_failed_delivery_exits_1_and_status_shows_the_error(
    engine: Engine, config_dir: Path, db_url: str, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_digests(config_dir, ALL_TIME)
    _seed(engine)
    with SmtpServer(auth=("u", "pw-good")) as srv:
        monkeypatch.setenv("MONITOR_SMTP_URL", srv.url(user="u", password="pw-secret-zz"))
        base = ["--config", str(config_dir), "--db", db_url]
        res = cli.invoke(app, [*base, "digest", "daily"])
        assert res.exit_code == 1
        assert "authentication failed" in res.output and "pw-secret-zz" not in res.output
        res = cli.invoke(app, [*base, "digest", "--status", "--json"])
        assert res.exit_code == 1
        (row,) = json.loads(res.stdout)["digests"]
        assert row["name"] == "daily" and row["schedule"] == "0 8 * * *"
        assert "authentication failed" in row["pending"]["last_error"] and row["pending"]["attempts"] == 1
        assert "pw-secret-zz" not in res.stdout
        # fixed credentials: the next run delivers the pending message
        monkeypatch.setenv("MONITOR_SMTP_URL", srv.url(user="u", password="pw-good"))
        res = cli.invoke(app, [*base, "digest", "daily"])
        assert res.exit_code == 0, res.output
        assert len(srv.messages) == 1
        res = cli.invoke(app, [*base, "digest", "--status"])
        assert res.exit_code == 0 and "1 delivered" in res.output


def test_cli_unknown_digest_and_bad_usage_exit_2(config_dir: Path, sqlite_url: str, cli: CliRunner) -> None:
    base = ["--config", str(config_dir), "--db", sqlite_url]
    assert cli.invoke(app, [*base, "digest", "weekly"]).exit_code == 2
    assert cli.invoke(app, [*base, "digest"]).exit_code == 2
    assert cli.invoke(app, [*base, "digest", "daily", "--dry-run"]).exit_code == 2


def test_check_reports_bad_digests_with_file_and_line(config_dir: Path, cli: CliRunner) -> None:
    write_digests(
        config_dir,
        "digests:\n  - name: daily\n    schedule: 'every morning'\n    email: {recipients: [me@example.org]}\n",
    )
    res = cli.invoke(app, ["--config", str(config_dir), "check", "--json"])
    assert res.exit_code == 2
    errors = json.loads(res.stdout)["errors"]
    (e,) = [e for e in errors if e["file"].endswith("digests.yaml")]
    assert e["line"] == 3 and e["field"] == "digests[0].schedule" and "cron" in e["message"]


def test_cli_discard_drops_an_undeliverable_message_and_the_next_one_carries_its_incidents(
    engine: Engine, config_dir: Path, db_url: str, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def handle_RCPT(server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if not address.startswith("desk@"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    write_digests(config_dir, ALL_TIME)
    _seed(engine)
    base = ["--config", str(config_dir), "--db", db_url]
    with SmtpServer() as srv:
        monkeypatch.setattr(srv.handler, "handle_RCPT", handle_RCPT, raising=False)
        monkeypatch.setenv("MONITOR_SMTP_URL", srv.url())
        assert cli.invoke(app, [*base, "digest", "daily"]).exit_code == 1  # every recipient refused
        # The address is fixed in digests.yaml, but the pending message keeps the recipients it was built with.
        write_digests(
            config_dir,
            ALL_TIME.replace('["Аналитик <analyst@example.org>", other@example.org]', "[desk@example.org]"),
        )
        assert cli.invoke(app, [*base, "digest", "daily"]).exit_code == 1
        assert srv.messages == []
        res = cli.invoke(app, [*base, "digest", "daily", "--discard"])
        assert res.exit_code == 0, res.output
        assert "discarded the undelivered message" in res.output and "550" in res.output
        res = cli.invoke(app, [*base, "digest", "daily", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["incidents"] == 2  # both incidents of the discarded message
        assert [m.rcpt_tos for m in srv.messages] == [["desk@example.org"]]
        res = cli.invoke(app, [*base, "digest", "daily", "--discard"])
        assert res.exit_code == 0 and "no undelivered message" in res.output
        res = cli.invoke(app, [*base, "digest", "--status", "--json"])
        (row,) = json.loads(res.stdout)["digests"]
        assert res.exit_code == 0 and row["pending"] is None and row["delivered"] == 1
