"""Chat notifications of digests through Apprise: composed short, sent once per message and target, a failing
target retried on its own, secrets kept out of the database, logs and status. A real HTTP receiver on loopback
takes Apprise's json:// webhook posts; Telegram and Slack formatting is checked offline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

import monitor
import monitor.cli
from monitor.cli.app import app
from monitor.deliver.notify import DEFAULT_LIMIT, Line, compose, limit_of, plain_text, send_due
from monitor.demo.run import _write_config
from monitor.demo.server import DemoServer
from monitor.store.notify_models import NotifyOutbox
from monitor.store.types import utcnow


class Receiver:
    """Records every POST by path; a path listed in `failing` answers 500."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.failing: set[str] = set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path in owner.failing:
                    self.send_response(500)
                    self.end_headers()
                    return
                owner.posts.append((self.path, json.loads(body or b"{}")))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def at(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.posts if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def _chat_digest(config: Path, urls: list[str]) -> None:
    listed = "\n".join(f"        - {json.dumps(u)}" for u in urls)
    (config / "digests.yaml").write_text(
        "site_url: https://monitor.example.org/\n"
        "digests:\n"
        "  - name: chat\n"
        "    schedule: '0 8 * * *'\n"
        "    first_lookback: 3650d\n"
        "    notify:\n"
        "      urls:\n"
        f"{listed}\n",
        encoding="utf-8",
    )


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Path]:
    with DemoServer() as srv:
        _write_config(tmp_path / "config", srv)
        yield tmp_path / "config"


def test_each_target_gets_each_message_once_and_a_failing_one_is_retried_alone(
    demo: Path, db_url: str, receiver: Receiver
) -> None:
    base = f"json://127.0.0.1:{receiver.port}"
    _chat_digest(demo, [f"{base}/ok", f"{base}/flaky"])
    receiver.failing.add("/flaky")
    with monitor.open(config=demo, db=db_url) as m:
        m.poll(all=True)
        run = m.digest("chat")
        assert run.status == "delivered"  # nothing else to deliver: the message itself is done
        assert len(receiver.at("/ok")) == 1 and receiver.at("/flaky") == []
        first = receiver.at("/ok")[0]
        lines = first["message"].splitlines()
        assert lines and all(line.startswith(("[HIGH]", "[med]", "[low]", "…and")) for line in lines)
        assert "https://monitor.example.org/incident/" in first["message"]
        assert lines[0].startswith("[HIGH]")  # most severe first
        with Session(m.engine) as s:
            rows = {r.target.rsplit("/", 1)[1]: r for r in s.exec(select(NotifyOutbox))}
        assert rows["ok"].status == "delivered" and rows["flaky"].status == "pending"
        assert rows["flaky"].last_error and rows["flaky"].next_attempt_at is not None

        # Not due yet: nothing is sent; once due and the target is back, it gets the message once.
        assert send_due(m.engine, now=utcnow()) == []
        receiver.failing.clear()
        later = utcnow() + timedelta(hours=1)
        runs = send_due(m.engine, now=later)
        assert [r.status for r in runs] == ["delivered"]
        assert send_due(m.engine, now=later + timedelta(hours=1)) == []
        assert len(receiver.at("/flaky")) == 1 and len(receiver.at("/ok")) == 1
        assert receiver.at("/flaky")[0]["message"] == first["message"]  # the same message, built once

        # The next run has nothing new: no message, no notification.
        assert m.digest("chat").status == "empty"
        assert len(receiver.posts) == 2


def test_secrets_come_from_the_environment_and_never_reach_the_database_or_status(
    demo: Path, db_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-hook-token-9f2c"
    _chat_digest(demo, [f"json://127.0.0.1:{receiver.port}/{{env:CHAT_TOKEN}}"])
    monkeypatch.delenv("CHAT_TOKEN", raising=False)
    env_secret = "xoxb-other-secret-1234"
    monkeypatch.setenv("MONITOR_NOTIFY_URLS_CHAT", f"json://127.0.0.1:{receiver.port}/env/{env_secret}")
    with monitor.open(config=demo, db=db_url) as m:
        m.poll(all=True)
        m.digest("chat")
        with Session(m.engine) as s:
            rows = list(s.exec(select(NotifyOutbox)))
        assert len(rows) == 2
        by_env = {r.target.startswith("env:"): r for r in rows}
        assert by_env[False].status == "pending"
        assert "CHAT_TOKEN is not set" in (by_env[False].last_error or "")
        assert by_env[True].status == "delivered" and len(receiver.at(f"/env/{env_secret}")) == 1

        monkeypatch.setenv("CHAT_TOKEN", secret)
        send_due(m.engine, now=utcnow() + timedelta(hours=1))
        assert len(receiver.at(f"/{secret}")) == 1
        with Session(m.engine) as s:
            for r in s.exec(select(NotifyOutbox)):
                stored = json.dumps(r.model_dump(mode="json"))
                assert secret not in stored and env_secret not in stored
    res = CliRunner().invoke(app, ["--config", str(demo), "--db", db_url, "digest", "--status"])
    assert "notify" in res.output and secret not in res.output and env_secret not in res.output
    res = CliRunner().invoke(app, ["--config", str(demo), "--db", db_url, "digest", "--status", "--json"])
    data = json.loads(res.stdout)
    chat = next(d for d in data["digests"] if d["name"] == "chat")
    assert {t["status"] for t in chat["notify"]} == {"delivered"}
    assert secret not in res.stdout and env_secret not in res.stdout


def test_check_names_the_file_line_and_digest_of_a_bad_target(demo: Path, db_url: str) -> None:
    _chat_digest(demo, ["json://127.0.0.1:9/ok", "nosuchscheme://host/x", "not a url at all"])
    res = CliRunner().invoke(app, ["--config", str(demo), "--db", db_url, "check"])
    assert res.exit_code == 2
    assert "digests.yaml:9" in res.output and "unknown notification scheme 'nosuchscheme'" in res.output
    assert "digests.yaml:10" in res.output and "not an Apprise URL" in res.output
    assert "digests[0].notify.urls[1]" in res.output


def test_notify_test_sends_to_every_target_and_fails_when_one_does(
    demo: Path, db_url: str, receiver: Receiver
) -> None:
    base = f"json://127.0.0.1:{receiver.port}"
    _chat_digest(demo, [f"{base}/a", f"{base}/b"])
    res = CliRunner().invoke(app, ["--config", str(demo), "--db", db_url, "notify", "test", "chat"])
    assert res.exit_code == 0, res.output
    assert len(receiver.at("/a")) == 1 and "test of digest chat" in receiver.at("/a")[0]["title"]
    receiver.failing.add("/b")
    res = CliRunner().invoke(app, ["--config", str(demo), "--db", db_url, "notify", "test", "chat", "--json"])
    assert res.exit_code == 1
    assert [r["status"] for r in json.loads(res.stdout)] == ["delivered", "failed"]


def _lines(n: int) -> list[Line]:
    return [
        Line(
            "high" if i % 3 == 0 else "medium",
            "Prosecution",
            "KZ",
            f"Journalist {i} charged",
            f"https://x.org/i/{i}",
            1,
        )
        for i in range(n)
    ]


def test_messages_fit_each_service_limit_and_count_the_rest_with_a_link() -> None:
    tg = limit_of("tgram://123456789:ABCdefGHIjklMNOpqrSTUvwxYZ012345678/12345")
    slack = limit_of("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general")
    assert tg == 4096 and slack > tg  # the plugins' own limits, offline
    for limit in (tg, slack, 300):
        body = compose("title", _lines(1000), limit=limit, more_url="https://x.org/")
        assert len(body) <= limit
        shown = body.splitlines()
        assert shown[-1].startswith("…and ") and shown[-1].endswith(": https://x.org/")
        rest = int(shown[-1].split()[1])
        assert rest + len(shown) - 1 == 1000  # every incident is either shown or counted
        assert shown[0] == _lines(1)[0].text()  # in the order given
    small = compose("t", _lines(3), limit=DEFAULT_LIMIT, more_url=None)
    assert len(small.splitlines()) == 3 and "more" not in small
    # Feed text cannot smuggle markup or line breaks into a chat message.
    cleaned = plain_text("<b>Editor</b>\n[HIGH] fake line\x00 " + "y" * 400)
    assert "\n" not in cleaned and "<" not in cleaned and "\x00" not in cleaned and len(cleaned) <= 200
