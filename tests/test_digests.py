"""Digest configuration, selection and exactly-once delivery through a real SMTP server (aiosmtpd on loopback),
on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from monitor.backoff import delivery_backoff
from monitor.config.digests import next_fire_time
from monitor.config.load import load_config, packaged_dir
from monitor.deliver.digest import (
    deliver_digest,
    delivered_digests,
    digest_status,
    retry_pending,
)
from monitor.deliver.digest import outbox as outbox_mod
from monitor.deliver.digest.outbox import ATTEMPT_LEASE
from monitor.deliver.site import build_site
from monitor.errors import ConfigError, ConfigErrors
from monitor.store.digest_models import DigestEntry, DigestOutbox
from monitor.store.engine import session_scope
from monitor.store.models import Incident
from tests.support.digestdata import SIMPLE, T0, add_feed, add_incident, add_report, write_digests
from tests.support.html import start_tags
from tests.support.smtpserver import SmtpServer

# ---------------------------------------------------------------------------------------------------- config


def test_packaged_config_defines_daily_for_everything_every_morning() -> None:
    digests = {d.name: d for d in load_config(packaged_dir("config")).digests}
    daily = digests["daily"]
    assert daily.schedule == "0 8 * * *" and daily.timezone == "Asia/Almaty"
    assert daily.filters.categories == [] and daily.filters.countries == []
    assert daily.email is not None and daily.email.recipients


BAD = """\
digests:
  - name: daily
    schedule: "0 8 * * *"
    timezone: Asia/Almaty
    filters:
      categories: [prosecution, arrests_of_cats]
    email:
      recipients: [analyst@example.org]
  - name: weekly
    schedule: "0 25 * * 1"
    timezone: Europe/Atlantis
    email:
      recipients: ["not an address", "ok@example.org", "a@b"]
"""


def test_bad_digest_config_names_file_line_and_field(config_dir: Path) -> None:
    path = write_digests(config_dir, BAD)
    lines = BAD.splitlines()
    with pytest.raises(ConfigErrors) as info:
        load_config(config_dir)
    errors = info.value.errors
    by_field = {e.field: e for e in errors}
    # pydantic errors (cron, zone, addresses) are found first; the category check needs a valid file
    assert "digests[1].schedule" in by_field and "cron" in by_field["digests[1].schedule"].message
    assert lines[by_field["digests[1].schedule"].line - 1].strip().startswith("schedule:")  # type: ignore[operator]
    assert "time zone" in by_field["digests[1].timezone"].message
    assert lines[by_field["digests[1].timezone"].line - 1].strip() == "timezone: Europe/Atlantis"  # type: ignore[operator]
    addr = by_field["digests[1].email.recipients"]
    assert "not an address" in addr.message and addr.file == str(path)
    assert all(e.file == str(path) for e in errors)

    # once those are fixed, the unknown category is reported at its own line
    fixed = BAD.replace("0 25 * * 1", "0 9 * * 1").replace("Europe/Atlantis", "UTC")
    fixed = fixed.replace('["not an address", "ok@example.org", "a@b"]', "[ok@example.org]")
    write_digests(config_dir, fixed)
    with pytest.raises(ConfigErrors) as info2:
        load_config(config_dir)
    (cat_err,) = info2.value.errors
    assert "arrests_of_cats" in cat_err.message and cat_err.line == 6


@pytest.mark.parametrize(
    "address",
    ["plain", "a@b", "two@@example.org", "x@-bad-.org", "sp ace@example.org", "line\nbreak@example.org"],
)
def test_invalid_addresses_are_rejected(config_dir: Path, address: str) -> None:
    body = SIMPLE.replace("other@example.org", '"' + address.replace("\n", "\\n") + '"')
    write_digests(config_dir, body)
    with pytest.raises(ConfigErrors) as info:
        load_config(config_dir)
    assert any(e.field == "digests[0].email.recipients" for e in info.value.errors)


def test_duplicate_names_and_digests_going_nowhere_are_errors(config_dir: Path) -> None:
    write_digests(
        config_dir,
        "digests:\n  - name: a\n    schedule: immediate\n    page: {output: out}\n"
        "  - name: a\n    schedule: immediate\n    page: {output: out}\n  - name: b\n    schedule: immediate\n",
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(config_dir)
    messages = [(e.line, e.message) for e in info.value.errors]
    assert any("goes nowhere" in m for _, m in messages)
    # duplicates are checked after the schema passes
    write_digests(
        config_dir,
        "digests:\n  - name: a\n    schedule: immediate\n    page: {output: out}\n"
        "  - name: a\n    schedule: immediate\n    page: {output: out}\n",
    )
    with pytest.raises(ConfigErrors) as info2:
        load_config(config_dir)
    assert [(e.line, "used twice" in e.message) for e in info2.value.errors] == [(5, True)]


def test_next_fire_time_follows_the_digests_time_zone(config_dir: Path) -> None:
    write_digests(config_dir, SIMPLE + "  - name: alerts\n    schedule: immediate\n    page: {output: p}\n")
    daily, alerts = load_config(config_dir).digests
    # 08:00 in Almaty (UTC+5) is 03:00 UTC
    assert next_fire_time(daily, datetime(2026, 11, 20, 1, 0, tzinfo=UTC)) == datetime(
        2026, 11, 20, 3, 0, tzinfo=UTC
    )
    # strictly after: at the fire time itself, the next one is a day later
    assert next_fire_time(daily, datetime(2026, 11, 20, 3, 0, tzinfo=UTC)) == datetime(
        2026, 11, 21, 3, 0, tzinfo=UTC
    )
    assert next_fire_time(alerts, T0) is None
    assert alerts.immediate and not daily.immediate


def test_unknown_digest_is_a_config_error(engine: Engine, config_dir: Path) -> None:
    write_digests(config_dir, SIMPLE)
    with pytest.raises(ConfigError, match="no digest named 'weekly'"):
        deliver_digest(engine, load_config(config_dir), "weekly", now=T0)


# ---------------------------------------------------------------------------------------------------- delivery


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    with SmtpServer() as srv:
        monkeypatch.setenv("MONITOR_SMTP_URL", srv.url())
        yield srv


@pytest.fixture
def cfg(config_dir: Path) -> Path:
    write_digests(config_dir, SIMPLE)
    return config_dir


def _ids_in(msg_text: str, titles: list[str]) -> list[str]:
    return [t for t in titles if t in msg_text]


def _plain(srv: SmtpServer, i: int) -> str:
    body = srv.messages[i].message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_two_runs_deliver_each_incident_once(engine: Engine, cfg: Path, smtp: SmtpServer) -> None:
    add_feed(engine, "kz-news")
    # updated 10 minutes before the run: inside the slack the next selection re-reads, so only the record of
    # what was delivered keeps them out of the second digest
    late = T0 + timedelta(minutes=50)
    add_incident(engine, "Журналиста задержали в Астане", at=late)
    add_incident(
        engine, "Газету закрыли в Алматы", categories=["media_restriction"], severity="medium", at=late
    )

    first = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=1))
    assert first.status == "delivered" and first.incidents == 2 and first.ok
    second = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=2))
    assert second.status == "empty"
    assert len(smtp.messages) == 1

    add_incident(engine, "Активиста оштрафовали в Шымкенте", at=T0 + timedelta(hours=3))
    third = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=4))
    assert third.status == "delivered" and third.incidents == 1
    assert len(smtp.messages) == 2
    titles = ["Журналиста задержали", "Газету закрыли", "Активиста оштрафовали"]
    assert _ids_in(_plain(smtp, 0), titles) == titles[:2]
    assert _ids_in(_plain(smtp, 1), titles) == titles[2:]
    # envelope: bare addresses of both recipients
    assert sorted(smtp.messages[0].rcpt_tos) == ["analyst@example.org", "other@example.org"]
    with Session(engine) as s:
        entries = list(s.exec(select(DigestEntry)))
        assert len(entries) == 3 and {e.kind for e in entries} == {"new"}
        assert [r.message_id for r in delivered_digests(s, "daily")] == [third.message_id, first.message_id]


def test_filters_select_by_country_severity_category_and_feed_tag(
    engine: Engine, config_dir: Path, smtp: SmtpServer
) -> None:
    add_feed(engine, "kz-news", tags=["kz"])
    add_feed(engine, "world", tags=["intl"])
    write_digests(
        config_dir,
        SIMPLE
        + """\
  - name: kz-high
    schedule: immediate
    filters: {countries: [KZ], min_severity: high, feed_tags: [kz]}
    email: {recipients: [duty@example.org], subject: "ALERT {{ count }}"}
  - name: media
    schedule: immediate
    filters: {categories: [media_restriction]}
    email: {recipients: [media@example.org]}
""",
    )
    add_incident(engine, "KZ prosecution from kz feed", at=T0)
    add_incident(engine, "KZ prosecution from world feed", at=T0, feed="world")
    add_incident(engine, "KG prosecution", countries=["KG"], at=T0)
    add_incident(engine, "KZ media closure", categories=["media_restriction"], severity="medium", at=T0)
    now = T0 + timedelta(hours=1)

    alert = deliver_digest(engine, load_config(config_dir), "kz-high", now=now)
    media = deliver_digest(engine, load_config(config_dir), "media", now=now)
    daily = deliver_digest(engine, load_config(config_dir), "daily", now=now)
    assert (alert.incidents, media.incidents, daily.incidents) == (1, 1, 4)
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
    alert_text = by_rcpt["duty@example.org"].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "KZ prosecution from kz feed" in alert_text and "world feed" not in alert_text
    assert by_rcpt["duty@example.org"].message["Subject"] == "ALERT 1"
    media_text = by_rcpt["media@example.org"].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "KZ media closure" in media_text and "prosecution" not in media_text
    # subscriptions are independent: each got its own copy of the shared incidents
    assert len(smtp.messages) == 3


def test_failed_send_stays_pending_and_one_retry_delivers_it_once(
    engine: Engine, cfg: Path, smtp: SmtpServer
) -> None:
    add_feed(engine, "kz-news")
    add_incident(engine, "Правозащитника арестовали", at=T0)
    smtp.mode = "refuse"
    now = T0 + timedelta(hours=1)
    run = deliver_digest(engine, load_config(cfg), "daily", now=now)
    assert run.status == "pending" and not run.ok
    assert run.error is not None and "554" in run.error and run.attempts == 1
    assert run.next_attempt_at == now + delivery_backoff(1)
    assert smtp.messages == []

    (status,) = digest_status(engine)
    assert status["pending"]["last_error"] == run.error and status["pending"]["attempts"] == 1
    assert status["pending"]["next_attempt_at"] == (now + delivery_backoff(1)).isoformat()
    assert status["last_delivered_at"] is None

    smtp.mode = "accept"
    # before the backoff expires retry_pending leaves it alone
    assert retry_pending(engine, load_config(cfg).digests.settings, now=now + timedelta(seconds=1)) == []
    assert smtp.messages == []
    (retried,) = retry_pending(engine, load_config(cfg).digests.settings, now=now + delivery_backoff(1))
    assert retried.status == "delivered" and retried.message_id == run.message_id and retried.attempts == 2
    assert [m.message["Message-ID"] for m in smtp.messages] == [run.message_id]
    assert retry_pending(engine, load_config(cfg).digests.settings, now=now + timedelta(hours=1)) == []
    assert deliver_digest(engine, load_config(cfg), "daily", now=now + timedelta(hours=2)).status == "empty"
    assert len(smtp.messages) == 1
    (status,) = digest_status(engine)
    assert status["pending"] is None and status["delivered"] == 1
    assert status["last_message_id"] == run.message_id


def test_backoff_doubles_and_is_capped() -> None:
    assert [delivery_backoff(n).total_seconds() for n in (1, 2, 3)] == [60, 120, 240]
    assert delivery_backoff(50) == timedelta(hours=6)


@pytest.mark.parametrize("mode,kind", [("hang", "timeout"), ("drop", "disconnected")])
def test_hanging_or_dropping_server_leaves_digest_pending_with_the_error(
    engine: Engine, config_dir: Path, smtp: SmtpServer, mode: str, kind: str
) -> None:
    write_digests(config_dir, SIMPLE.replace("smtp_timeout: 2s", "smtp_timeout: 1s"))
    add_feed(engine, "kz-news")
    add_incident(engine, "Митинг разогнали", categories=["protest_crackdown"], at=T0)
    smtp.mode = mode
    run = deliver_digest(engine, load_config(config_dir), "daily", now=T0 + timedelta(hours=1))
    assert run.status == "pending" and run.error is not None and f"smtp {kind}" in run.error
    (status,) = digest_status(engine)
    assert status["pending"]["last_error"] == run.error


def test_new_incidents_wait_behind_a_pending_digest_and_each_is_delivered_once(
    engine: Engine, cfg: Path, smtp: SmtpServer
) -> None:
    add_feed(engine, "kz-news")
    add_incident(engine, "Первое дело", at=T0)
    smtp.mode = "refuse"
    failed = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=1))
    assert failed.status == "pending"
    add_incident(engine, "Второе дело", at=T0 + timedelta(hours=2))
    # still refusing: the pending one is retried, no second message is built meanwhile
    again = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=3))
    assert again.status == "pending" and again.outbox_id == failed.outbox_id and again.attempts == 2
    smtp.mode = "accept"
    run = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=4))
    assert run.previous is not None and run.previous.message_id == failed.message_id
    assert run.previous.status == "delivered" and run.status == "delivered" and run.ok
    assert [_ids_in(_plain(smtp, i), ["Первое дело", "Второе дело"]) for i in (0, 1)] == [
        ["Первое дело"],
        ["Второе дело"],
    ]


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so no handler records anything."""


def test_crash_between_send_and_record_resends_with_the_same_message_id_only(
    engine: Engine, cfg: Path, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_feed(engine, "kz-news")
    add_incident(engine, "Блогера задержали", at=T0)
    now = T0 + timedelta(hours=1)

    def crash(row: DigestOutbox) -> None:
        raise SimulatedCrash

    monkeypatch.setattr(outbox_mod, "_after_send", crash)
    with pytest.raises(SimulatedCrash):
        deliver_digest(engine, load_config(cfg), "daily", now=now)
    monkeypatch.setattr(outbox_mod, "_after_send", None)
    assert len(smtp.messages) == 1
    first_id = smtp.messages[0].message["Message-ID"]

    # another run while the dead attempt's lease still holds: nothing is sent, nothing new is built
    busy = deliver_digest(engine, load_config(cfg), "daily", now=now + timedelta(minutes=1))
    assert busy.status == "busy" and len(smtp.messages) == 1
    (status,) = digest_status(engine)
    assert status["pending"]["status"] == "sending" and status["pending"]["maybe_sent"]

    # after the lease: the stored message goes again, byte for byte, with the same Message-ID
    (resent,) = retry_pending(engine, load_config(cfg).digests.settings, now=now + ATTEMPT_LEASE)
    assert resent.status == "delivered" and resent.maybe_sent
    assert len(smtp.messages) == 2
    assert smtp.messages[1].message["Message-ID"] == first_id
    assert smtp.messages[1].data == smtp.messages[0].data

    # and the incident never comes back
    assert deliver_digest(engine, load_config(cfg), "daily", now=now + timedelta(hours=1)).status == "empty"
    assert len(smtp.messages) == 2


_KILLED_AFTER_SEND = """
import os, sys
from datetime import datetime
from pathlib import Path
from monitor.deliver import digest
from monitor.deliver.digest import outbox
from monitor.config.load import load_config
from monitor.store import make_engine

outbox._after_send = lambda row: os._exit(9)  # the process dies right after the server said 250
config = load_config(Path(sys.argv[2]))
digest.deliver_digest(make_engine(sys.argv[1]), config, "daily", now=datetime.fromisoformat(sys.argv[3]))
"""


def test_process_killed_after_send_never_mints_a_second_message_id(
    engine: Engine, db_url: str, cfg: Path, smtp: SmtpServer
) -> None:
    add_feed(engine, "kz-news")
    add_incident(engine, "Правозащитницу задержали", at=T0)
    now = T0 + timedelta(hours=1)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_SEND, db_url, str(cfg), now.isoformat()],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 9, proc.stderr.decode()
    (first,) = smtp.messages
    # a scheduled run the next morning first finishes the interrupted message, then has nothing new
    run = deliver_digest(engine, load_config(cfg), "daily", now=now + timedelta(days=1))
    assert run.status == "empty" and run.previous is not None and run.previous.status == "delivered"
    assert run.previous.maybe_sent  # flagged: recipients may see it twice, with the same Message-ID
    assert [m.message["Message-ID"] for m in smtp.messages] == [first.message["Message-ID"]] * 2
    assert deliver_digest(engine, load_config(cfg), "daily", now=now + timedelta(days=2)).status == "empty"
    assert len(smtp.messages) == 2


def test_update_to_a_delivered_incident_comes_as_an_update(
    engine: Engine, cfg: Path, smtp: SmtpServer
) -> None:
    add_feed(engine, "kz-news", title="Vlast.kz")
    add_feed(engine, "other", title="Азаттык")
    inc = add_incident(engine, "Суд над журналистом", at=T0)
    deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=1))
    add_report(engine, inc, "Журналиста приговорили к двум годам", at=T0 + timedelta(hours=5), feed="other")
    add_incident(engine, "Новое дело", at=T0 + timedelta(hours=5))

    run = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=6))
    assert (run.incidents, run.updates) == (1, 1)
    text = _plain(smtp, 1)
    new_part, update_part = text.split("## Updates to incidents already reported")
    assert "Новое дело" in new_part and "Суд над журналистом" not in new_part
    assert "[UPDATE] Суд над журналистом" in update_part
    assert "new: Журналиста приговорили к двум годам (Азаттык" in update_part
    assert "1 new report" in update_part
    html = smtp.messages[1].message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert ">Update</span>" in html
    with Session(engine) as s:
        kinds = sorted((e.incident_id, e.kind) for e in s.exec(select(DigestEntry)) if e.incident_id == inc)
    assert kinds == [(inc, "new"), (inc, "update")]
    # the same version is not delivered a third time
    assert deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=7)).status == "empty"


def test_first_run_looks_back_only_first_lookback(engine: Engine, cfg: Path, smtp: SmtpServer) -> None:
    add_feed(engine, "kz-news")
    add_incident(engine, "Старое дело", at=T0 - timedelta(days=3))
    add_incident(engine, "Свежее дело", at=T0)
    run = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=1))
    assert run.incidents == 1 and "Старое дело" not in _plain(smtp, 0)


def test_dry_run_writes_eml_and_page_and_records_nothing(
    engine: Engine, cfg: Path, smtp: SmtpServer, tmp_path: Path
) -> None:
    add_feed(engine, "kz-news")
    add_incident(engine, "Дело против НКО", categories=["ngo_liquidation"], at=T0)
    out = tmp_path / "dry"
    run = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=1), dry_run_out=out)
    assert run.status == "dry_run" and run.incidents == 1
    assert (out / "daily.eml").read_bytes().startswith(b"Subject: ") or b"\r\nSubject: " in (
        out / "daily.eml"
    ).read_bytes()
    assert "Дело против НКО" in (out / "daily.html").read_text(encoding="utf-8")
    assert smtp.messages == [] and digest_status(engine) == []
    # the real run still has everything to deliver
    assert deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=1)).incidents == 1


def test_send_empty_sends_a_nothing_new_message(engine: Engine, config_dir: Path, smtp: SmtpServer) -> None:
    write_digests(config_dir, SIMPLE + "    send_empty: true\n")
    run = deliver_digest(engine, load_config(config_dir), "daily", now=T0)
    assert run.status == "delivered" and run.incidents == 0
    assert "Nothing new since the last digest." in _plain(smtp, 0)


def test_without_smtp_url_the_digest_waits_as_pending(engine: Engine, cfg: Path) -> None:
    add_feed(engine, "kz-news")
    add_incident(engine, "Дело", at=T0)
    run = deliver_digest(engine, load_config(cfg), "daily", now=T0 + timedelta(hours=1))
    assert run.status == "pending" and "MONITOR_SMTP_URL is not set" in (run.error or "")


def test_page_only_digest_writes_latest_and_dated_page(engine: Engine, config_dir: Path) -> None:
    write_digests(
        config_dir,
        "site_url: https://m.example.org\ndigests:\n  - name: web\n    schedule: '0 * * * *'\n"
        "    page: {output: ../public}\n",
    )
    add_feed(engine, "kz-news")
    add_incident(engine, "Дело для страницы", at=T0)
    run = deliver_digest(engine, load_config(config_dir), "web", now=T0 + timedelta(hours=1))
    assert run.status == "delivered" and run.page_path is not None
    public = config_dir.parent / "public"
    assert sorted(p.name for p in public.iterdir()) == ["web-2026-11-20-0700.html", "web.html"]
    page = (public / "web.html").read_text(encoding="utf-8")
    assert "Дело для страницы" in page and 'href="https://m.example.org/incident/' in page


def test_one_open_message_per_digest_is_enforced_by_the_database(engine: Engine) -> None:
    def row(mid: str) -> DigestOutbox:
        return DigestOutbox(digest="daily", open_key="daily", message_id=mid, position=T0, created_at=T0)

    with session_scope(engine) as s:
        s.add(row("<a@x>"))
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(row("<b@x>"))


def test_alert_after_each_poll_honours_the_backoff_of_its_pending_message(
    engine: Engine, config_dir: Path, smtp: SmtpServer
) -> None:
    write_digests(
        config_dir,
        "digests:\n  - name: alert\n    schedule: immediate\n    email: {recipients: [duty@example.org]}\n",
    )
    add_feed(engine, "kz-news")
    add_incident(engine, "Пикет разогнали", categories=["protest_crackdown"], at=T0)
    smtp.mode = "refuse"
    now = T0 + timedelta(minutes=5)
    assert deliver_digest(engine, load_config(config_dir), "alert", now=now).attempts == 1
    smtp.mode = "accept"
    # the next poll, 10 s later: the message is not due yet, so no attempt is made and nothing new is built
    waiting = deliver_digest(engine, load_config(config_dir), "alert", now=now + timedelta(seconds=10))
    assert waiting.status == "pending" and waiting.attempts == 1 and smtp.messages == []
    (status,) = digest_status(engine)
    assert status["last_run_at"] == (now + timedelta(seconds=10)).isoformat()  # the slot counts as served
    done = deliver_digest(engine, load_config(config_dir), "alert", now=now + delivery_backoff(1))
    assert done.previous is not None and done.previous.status == "delivered" and done.status == "empty"
    assert len(smtp.messages) == 1


# ---------------------------------------------------------------------------------------------------- size


HOSTILE_SHOWN = 'Угрозы <script>alert("shown")</script><img src=x onerror=alert(1)>'
HOSTILE_COUNTED = "Газету закрыли <script>counted()</script>"


def _incident_divs(html: str) -> int:
    return len(re.findall(r'<div class="incident\b', html))


def test_digest_over_max_incidents_shows_the_most_severe_and_most_reported_and_counts_the_rest(
    engine: Engine, config_dir: Path, smtp: SmtpServer, tmp_path: Path
) -> None:
    write_digests(config_dir, SIMPLE + "    max_incidents: 3\n")
    cats = config_dir / "categories.yaml"
    # a category title is config, not feed text, but it is escaped all the same
    cats.write_text(
        cats.read_text(encoding="utf-8").replace(
            "title: Pressure on NGOs", 'title: "Pressure on <b>NGOs</b>"'
        ),
        encoding="utf-8",
    )
    add_feed(engine, "kz-news")
    # shown: high severity, most reports first
    add_incident(engine, "Разгон митинга", categories=["protest_crackdown"], items=5, at=T0)
    add_incident(engine, "Суд над журналистом", categories=["prosecution"], items=3, at=T0)
    add_incident(engine, HOSTILE_SHOWN, categories=["intimidation"], items=2, at=T0)
    # counted: high but one report; medium though reported nine times; medium, first reported in October
    add_incident(engine, "Единственное сообщение об аресте", categories=["prosecution"], at=T0)
    counted = add_incident(
        engine, HOSTILE_COUNTED, categories=["media_restriction"], severity="medium", items=9, at=T0
    )
    october = add_incident(engine, "Проверка НКО", categories=["ngo_restriction"], severity="medium", at=T0)
    with session_scope(engine) as s:
        row = s.get(Incident, october)
        assert row is not None
        row.first_seen = datetime(2026, 10, 5, tzinfo=UTC)
        s.add(row)

    run = deliver_digest(engine, load_config(config_dir), "daily", now=T0 + timedelta(hours=1))
    assert run.status == "delivered" and (run.incidents, run.updates) == (6, 0)
    (received,) = smtp.messages
    text = _plain(smtp, 0)
    html = received.message.get_body(("html",)).get_content()  # type: ignore[union-attr]

    # exactly max_incidents in full, the chosen ones
    assert text.count("Incident page: ") == 3 and _incident_divs(html) == 3
    for title in ("Разгон митинга", "Суд над журналистом", HOSTILE_SHOWN):
        assert title in text
    for title in ("Единственное сообщение", "Газету закрыли", "Проверка НКО"):
        assert title not in text and title not in html
    assert "counted()" not in text and "counted()" not in html

    # the rest, counted by category (most severe first) and by month, linked to the site's lists
    rest = text.split("## 3 more incidents in this digest")[1].split("## Feeds")[0]
    lines = [line.strip() for line in rest.splitlines() if line.strip()]
    site = "https://monitor.example.org/"
    assert lines[1:7] == [
        "- Prosecution of activists and journalists: 1",
        f"{site}category/prosecution.html",
        "- Media restriction: 1",
        f"{site}category/media_restriction.html",
        "- Pressure on <b>NGOs</b>: 1",
        f"{site}category/ngo_restriction.html",
    ]
    assert f"- November 2026: 2 {site}archive/2026-11.html" in lines
    assert f"- October 2026: 1 {site}archive/2026-10.html" in lines
    assert "Pressure on &lt;b&gt;NGOs&lt;/b&gt;" in html and "<b>NGOs" not in html
    assert f'<a href="{site}category/media_restriction.html"' in html
    assert f'<a href="{site}archive/2026-10.html"' in html

    # the HTML is still escaped: nothing from a feed became an element
    found = start_tags(html)
    # (the only pictures are the digest's own charts, attached to the message: cid:)
    ours = [a for t, a in found if t == "img" and (a.get("src") or "").startswith("cid:chart-")]
    assert not [t for t, a in found if t in ("script", "img", "b") and a not in ours]
    assert "&lt;script&gt;alert(" in html

    # every incident counts as delivered, shown or not
    with Session(engine) as s:
        entries = list(s.exec(select(DigestEntry)))
        outboxes = {o.id: o.status for o in s.exec(select(DigestOutbox))}
    assert len(entries) == 6 and {outboxes[e.outbox_id] for e in entries} == {"delivered"}
    assert (
        deliver_digest(engine, load_config(config_dir), "daily", now=T0 + timedelta(hours=2)).status
        == "empty"
    )
    # a counted incident that gets a new report comes back as an update, not as new
    add_report(engine, counted, "Редакцию оштрафовали", at=T0 + timedelta(hours=3))
    again = deliver_digest(engine, load_config(config_dir), "daily", now=T0 + timedelta(hours=4))
    assert (again.incidents, again.updates) == (0, 1)
    assert "[UPDATE] Газету закрыли" in _plain(smtp, 1) and "more incidents" not in _plain(smtp, 1)

    # the links lead to site pages that list the counted incidents
    out = tmp_path / "site"
    build_site(engine, out, now=T0 + timedelta(hours=5))
    assert "Единственное сообщение об аресте" in (out / "category" / "prosecution.html").read_text("utf-8")
    assert "Проверка НКО" in (out / "archive" / "2026-10.html").read_text("utf-8")


def test_max_incidents_must_be_positive(config_dir: Path) -> None:
    write_digests(config_dir, SIMPLE + "    max_incidents: 0\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(config_dir)
    (e,) = info.value.errors
    assert e.field == "digests[0].max_incidents" and e.line == 11
