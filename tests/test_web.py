"""The workspace over HTTP, on a real uvicorn server on loopback: reading, verdicts, notes, access, CSRF,
logins, escaping of hostile feed content, bad input. Browser behaviour is in test_web_browser.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.incidents import group_items
from monitor.store import ensure_schema, make_engine
from monitor.store.engine import session_scope
from monitor.store.verdicts import effective_categories
from monitor.store.workspace_models import AuditEntry, ItemNote, User, Verdict
from monitor.web.auth import verify_login
from tests.support.stories import (
    MAMAI_EN,
    MAMAI_KK,
    MAMAI_RU,
    NGO_LAW,
    OTHER_DETENTION,
    T0,
    Story,
    hit_matches,
    hostile_story,
    store,
)
from tests.support.workspace import PASSWORD, WorkspaceServer, csrf_of


def with_matches(st: Story, term: str) -> Story:
    return Story(**{**st.__dict__, "matches": hit_matches(st, term)})


def stored(engine: Engine, *extra: Story) -> list[int]:
    stories = [
        with_matches(MAMAI_EN, "detained"),
        with_matches(MAMAI_RU, "задержали"),
        with_matches(MAMAI_KK, "ұсталды"),
        with_matches(OTHER_DETENTION, "detained"),
        with_matches(NGO_LAW, NGO_LAW.title.split()[0]),
        Story("Wheat harvest beats forecast", "Farmers are pleased with the grain.", []),
        *extra,
    ]
    ids = store(engine, stories)
    with session_scope(engine) as s:
        group_items(s, ids, now=T0 + timedelta(days=3))
    return ids


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = make_engine(sqlite_url)
    ensure_schema(eng)
    yield eng
    eng.dispose()


def verdicts(engine: Engine) -> list[Verdict]:
    with Session(engine) as s:
        return list(s.exec(select(Verdict).order_by(col(Verdict.id))).all())


# --- reading ------------------------------------------------------------------------------------------------


def test_list_item_and_incident_pages_show_categories_explanations_and_links(
    sqlite_engine: Engine, config_dir: Path
) -> None:
    ids = stored(sqlite_engine)
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        page = c.get("/workspace/")
        assert page.status_code == 200
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert page.headers["cache-control"] == "no-store"
        assert "Journalist detained in Almaty after rally" in page.text
        assert "Wheat harvest" not in page.text  # matched items by default
        assert "Wheat harvest" in c.get("/workspace/?scope=unmatched").text
        item = c.get(f"/workspace/items/{ids[1]}")
        assert item.status_code == 200
        # The explanation: the term that fired and its snippet, with the term marked.
        assert "<mark>задержали</mark>" in item.text
        assert "Protest crackdown" in item.text
        with Session(sqlite_engine) as s:
            from monitor.store.models import Item

            incident_id = s.get(Item, ids[0]).incident_id  # type: ignore[union-attr]
        inc = c.get(f"/workspace/incidents/{incident_id}")
        assert inc.status_code == 200
        assert f'href="/workspace/items/{ids[1]}"' in inc.text and "Grouped:" in inc.text
        assert c.get("/workspace/items/999999").status_code == 404
        assert c.get("/workspace/incidents/999999").status_code == 404
        assert c.get("/workspace").headers["location"] == "/workspace/"


def test_filters_narrow_the_list_and_bad_ones_say_which_parameter_is_wrong(
    engine: Engine, config_dir: Path
) -> None:
    ids = stored(engine)
    with session_scope(engine) as s:
        from monitor.store.verdicts import record_verdict

        record_verdict(s, ids[3], "protest_crackdown", "reject", author="dmitri")
        record_verdict(s, ids[5], "restrictive_law", "add", author="dmitri")
    with WorkspaceServer(engine, config_dir) as ws, ws.client() as c:
        ru = c.get("/workspace/?language=ru").text
        assert "В Алматы задержали" in ru and "Journalist detained" not in ru
        later = c.get("/workspace/?since=2026-11-21").text
        assert "Алматыда журналист" in later and "Journalist detained in Almaty" not in later
        restrictive = c.get("/workspace/?category=restrictive_law").text
        assert "Journalist detained" not in restrictive
        assert "Wheat harvest" in restrictive  # added by an analyst: verdicts win over the rules
        crackdown = c.get("/workspace/?category=protest_crackdown").text
        assert "Journalist detained in Almaty" in crackdown
        assert "Activist detained in Shymkent" not in crackdown  # rejected
        rejected = c.get("/workspace/?verdict=reject").text
        assert "Activist detained in Shymkent" in rejected and "Journalist detained" not in rejected
        unreviewed = c.get("/workspace/?verdict=none").text
        assert "Journalist detained" in unreviewed and "Activist detained in Shymkent" not in unreviewed
        assert "Journalist detained" in c.get("/workspace/?country=KZ").text
        assert "Journalist detained" not in c.get("/workspace/?country=KG").text
        assert "В Алматы" in c.get("/workspace/?feed=feed-ru").text
        for query, message in (
            ("since=yesterday", "since: &#39;yesterday&#39; is not a date"),
            ("category=nonsense", "category: unknown category"),
            ("country=Kazakhstan", "country:"),
            ("until=2026-01-01&since=2026-02-01", "the end date is before the start date"),
            ("page=-1", "page:"),
            ("verdict=maybe", "verdict: must be one of"),
        ):
            resp = c.get(f"/workspace/?{query}")
            assert resp.status_code == 400, query
            assert message in resp.text, (query, resp.text[-600:])


def test_hostile_feed_content_is_escaped_on_every_page(sqlite_engine: Engine, config_dir: Path) -> None:
    ids = stored(sqlite_engine, hostile_story("http://127.0.0.1:9/beacon"))
    hostile = ids[-1]
    with Session(sqlite_engine) as s:
        from monitor.store.models import Item

        incident_id = s.get(Item, hostile).incident_id  # type: ignore[union-attr]
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        ws.login(c, "aigerim")
        pages = [
            c.get("/workspace/").text,
            c.get(f"/workspace/items/{hostile}").text,
            c.get(f"/workspace/incidents/{incident_id}").text,
        ]
    for html in pages:
        assert "PWNED" in html  # the hostile text is shown...
        assert "<script>document" not in html  # ...as text
        assert "<img" not in html and 'onerror="' not in html
        assert "javascript:" not in html
        assert "&lt;script&gt;" in html


# --- writes -------------------------------------------------------------------------------------------------


def test_reading_is_open_on_loopback_but_a_verdict_needs_a_login(
    sqlite_engine: Engine, config_dir: Path
) -> None:
    ids = stored(sqlite_engine)
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        page = c.get("/workspace/")
        assert page.status_code == 200 and "Log in" in page.text
        assert 'data-verdict="reject"' not in page.text  # no verdict buttons for a visitor
        token = csrf_of(c.get("/workspace/login").text)  # a valid token of this (anonymous) session
        resp = c.post(
            f"/workspace/items/{ids[0]}/verdict",
            data={"csrf": token, "category": "protest_crackdown", "verdict": "reject"},
        )
        assert resp.status_code == 303 and resp.headers["location"].startswith("/workspace/login?next=")
        script = c.post(
            f"/workspace/items/{ids[0]}/verdict",
            data={"csrf": token, "category": "protest_crackdown", "verdict": "reject"},
            headers={"Accept": "application/json"},
        )
        assert script.status_code == 401
    assert verdicts(sqlite_engine) == []


def test_verdicts_notes_and_additions_are_stored_with_author_and_audited(
    engine: Engine, config_dir: Path
) -> None:
    ids = stored(engine)
    first, harvest = ids[0], ids[5]
    with WorkspaceServer(engine, config_dir) as ws, ws.client() as c:
        login = ws.login(c, "aigerim")
        assert login.status_code == 303 and login.headers["location"] == "/workspace/"
        token = ws.token(c, f"/workspace/items/{first}")
        r = c.post(
            f"/workspace/items/{first}/verdict",
            data={
                "csrf": token,
                "category": "protest_crackdown",
                "verdict": "reject",
                "note": "not a protest",
            },
        )
        assert r.status_code == 303 and r.headers["location"] == f"/workspace/items/{first}"
        page = c.get(f"/workspace/items/{first}").text
        assert "Rejected Protest crackdown." in page  # the flash
        assert "rejected by aigerim" in page and "not a protest" in page
        # The page's script asks for JSON and gets the row's categories back, escaped.
        js = c.post(
            f"/workspace/items/{harvest}/verdict",
            data={"csrf": token, "category": "ngo_restriction", "verdict": "add"},
            headers={"Accept": "application/json"},
        )
        assert js.status_code == 200 and js.json()["ok"] is True
        assert 'class="chip added' in js.json()["chips_html"]
        note = c.post(f"/workspace/items/{harvest}/note", data={"csrf": token, "text": "check the NGO angle"})
        assert note.status_code == 303
        assert "check the NGO angle" in c.get(f"/workspace/items/{harvest}").text
        bad = c.post(
            f"/workspace/items/{first}/verdict",
            data={"csrf": token, "category": "nonsense", "verdict": "add"},
        )
        assert bad.status_code == 400 and "unknown category" in bad.text
        gone = c.post(
            "/workspace/items/999999/verdict",
            data={"csrf": token, "category": "protest_crackdown", "verdict": "reject"},
        )
        assert gone.status_code == 404
        audit = c.get("/workspace/audit").text
        assert "aigerim" in audit and "verdict" in audit and "note" in audit
        assert ws.metrics.workspace_writes.get(action="verdict") == 2
    with Session(engine) as s:
        assert effective_categories(s, [first, harvest]) == {
            first: {"prosecution"},
            harvest: {"ngo_restriction"},
        }
        assert [(v.author, v.verdict, v.note) for v in verdicts(engine)] == [
            ("aigerim", "reject", "not a protest"),
            ("aigerim", "add", None),
        ]
        assert s.exec(select(ItemNote)).one().author == "aigerim"
        actions = [e.action for e in s.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()]
        assert actions == ["user_add", "verdict", "verdict", "note"]


def test_a_post_without_the_csrf_token_of_its_session_is_refused(
    sqlite_engine: Engine, config_dir: Path
) -> None:
    ids = stored(sqlite_engine)
    with (
        WorkspaceServer(sqlite_engine, config_dir, users=("aigerim", "dmitri")) as ws,
        ws.client() as c,
        ws.client() as other,
    ):
        ws.login(c, "aigerim")
        ws.login(other, "dmitri")
        foreign = ws.token(other)
        data = {"category": "protest_crackdown", "verdict": "reject"}
        url = f"/workspace/items/{ids[0]}/verdict"
        for form in (data, {**data, "csrf": ""}, {**data, "csrf": "x" * 43}, {**data, "csrf": foreign}):
            resp = c.post(url, data=form)
            assert resp.status_code == 403, form
            assert "did not come from this workspace" in resp.text
        # Not a form at all, and a form too large to read: refused before anything is parsed.
        assert c.post(url, content=b"{}", headers={"content-type": "application/json"}).status_code == 415
        big = {**data, "csrf": ws.token(c), "note": "n" * 70_000}
        assert c.post(url, data=big).status_code == 413
        # The login form is protected too (no logging a victim into the attacker's account).
        anon = ws.client()
        anon.get("/workspace/login")
        assert (
            anon.post("/workspace/login", data={"name": "aigerim", "password": PASSWORD}).status_code == 403
        )
        anon.close()
    assert verdicts(sqlite_engine) == []


def test_wrong_password_and_unknown_name_get_the_same_answer(sqlite_engine: Engine, config_dir: Path) -> None:
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        answers = []
        for name, password in (("aigerim", "wrong password!"), ("nobody-here", "wrong password!"), ("", "")):
            token = csrf_of(c.get("/workspace/login").text)
            resp = c.post("/workspace/login", data={"name": name, "password": password, "csrf": token})
            answers.append((resp.status_code, resp.text.replace(token, "TOKEN")))
        assert answers[0][0] == 401 and "Wrong name or password." in answers[0][1]
        assert answers[0] == answers[1] == answers[2]
        assert "nobody-here" not in answers[1][1]  # the name is not echoed back either
        assert ws.metrics.logins.get(outcome="failed") == 3
        assert "monitor_session" not in c.cookies or c.get("/workspace/").text.count("Log in") >= 1
        ok = ws.login(c, "aigerim")
        assert ok.status_code == 303
        assert "aigerim" in c.get("/workspace/").text and "Log out" in c.get("/workspace/").text


def test_login_redirects_only_inside_the_workspace_and_logout_ends_the_session(
    sqlite_engine: Engine, config_dir: Path
) -> None:
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        for target, expected in (
            ("/workspace/audit", "/workspace/audit"),
            ("//evil.example/", "/workspace/"),
            ("https://evil.example/", "/workspace/"),
            ("/workspace/\\evil", "/workspace/"),
        ):
            token = csrf_of(c.get("/workspace/login").text)
            resp = c.post(
                "/workspace/login",
                data={"name": "aigerim", "password": PASSWORD, "csrf": token, "next": target},
            )
            assert resp.headers["location"] == expected, target
        token = ws.token(c)
        assert c.post("/workspace/logout", data={"csrf": token}).status_code == 303
        assert "Log out" not in c.get("/workspace/").text


def test_removing_an_account_ends_its_sessions(sqlite_engine: Engine, config_dir: Path) -> None:
    ids = stored(sqlite_engine)
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        ws.login(c, "aigerim")
        token = ws.token(c)
        from monitor.web.auth import remove_user

        remove_user(sqlite_engine, "aigerim", by="test")
        resp = c.post(
            f"/workspace/items/{ids[0]}/verdict",
            data={"csrf": token, "category": "protest_crackdown", "verdict": "reject"},
        )
        assert resp.status_code == 303 and "/workspace/login" in resp.headers["location"]
    assert verdicts(sqlite_engine) == []


def test_bound_beyond_loopback_reading_needs_a_login_but_health_and_metrics_stay_open(
    sqlite_engine: Engine, config_dir: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>incidents</h1>", encoding="utf-8")
    stored(sqlite_engine)
    with WorkspaceServer(sqlite_engine, config_dir, host="0.0.0.0", site_dir=site) as ws, ws.client() as c:
        for path in ("/workspace/", "/workspace/items/1", "/", "/index.html", "/workspace/audit"):
            resp = c.get(path)
            assert resp.status_code == 303, path
            assert resp.headers["location"].startswith("/workspace/login?next="), path
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/workspace/static/workspace.css").status_code == 200
        assert c.get("/workspace/login").status_code == 200
        ws.login(c, "aigerim")
        assert c.get("/").text == "<h1>incidents</h1>"
        assert "Journalist detained" in c.get("/workspace/").text


def test_open_reading_answers_only_requests_addressed_to_loopback(
    sqlite_engine: Engine, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) must not read the workspace.
    monkeypatch.setenv("MONITOR_WORKSPACE_HOSTS", "monitor.internal")
    stored(sqlite_engine)
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        evil = c.get("/workspace/", headers={"Host": "rebind.evil.example:8080"})
        assert evil.status_code == 421 and "MONITOR_WORKSPACE_HOSTS" in evil.text
        assert "Journalist" not in evil.text
        for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "monitor.internal"):
            assert c.get("/workspace/", headers={"Host": host}).status_code == 200, host
        assert c.get("/healthz", headers={"Host": "rebind.evil.example"}).status_code == 200


def test_two_analysts_posting_opposite_verdicts_at_once_are_both_recorded(
    engine: Engine, config_dir: Path
) -> None:
    import threading

    ids = stored(engine)
    with WorkspaceServer(engine, config_dir, users=("aigerim", "dmitri")) as ws:
        clients = {name: ws.client() for name in ("aigerim", "dmitri")}
        tokens = {}
        for name, c in clients.items():
            ws.login(c, name)
            tokens[name] = ws.token(c)
        barrier = threading.Barrier(2)
        codes: dict[str, int] = {}

        def post(name: str, verdict: str) -> None:
            barrier.wait(10)
            codes[name] = (
                clients[name]
                .post(
                    f"/workspace/items/{ids[0]}/verdict",
                    data={"csrf": tokens[name], "category": "protest_crackdown", "verdict": verdict},
                )
                .status_code
            )

        threads = [
            threading.Thread(target=post, args=("aigerim", "reject")),
            threading.Thread(target=post, args=("dmitri", "confirm")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in clients.values():
            c.close()
    assert codes == {"aigerim": 303, "dmitri": 303}
    rows = verdicts(engine)
    assert sorted(v.author for v in rows) == ["aigerim", "dmitri"]
    with Session(engine) as s:
        holds = "protest_crackdown" in effective_categories(s, [ids[0]])[ids[0]]
        assert holds == (rows[-1].verdict == "confirm")  # the later row wins


# --- merge and move -----------------------------------------------------------------------------------------


def test_merge_and_move_from_the_incident_page_are_recorded(sqlite_engine: Engine, config_dir: Path) -> None:
    from monitor.store.models import Incident, Item

    ids = stored(sqlite_engine)
    with Session(sqlite_engine) as s:
        mamai = s.get(Item, ids[0]).incident_id  # type: ignore[union-attr]
        other = s.get(Item, ids[3]).incident_id  # type: ignore[union-attr]
    assert mamai != other
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        ws.login(c, "aigerim")
        page = c.get(f"/workspace/incidents/{mamai}").text
        token = csrf_of(page)
        assert f'<option value="{other}">' in page  # offered as a merge candidate
        no_why = c.post(f"/workspace/incidents/{mamai}/merge", data={"csrf": token, "other": str(other)})
        assert no_why.status_code == 400 and "why" in no_why.text
        self_merge = c.post(
            f"/workspace/incidents/{mamai}/merge", data={"csrf": token, "other": str(mamai), "why": "x"}
        )
        assert self_merge.status_code == 400
        r = c.post(
            f"/workspace/incidents/{mamai}/merge",
            data={"csrf": token, "other": str(other), "why": "the same day's detentions"},
        )
        assert r.status_code == 303
        assert "Merged incident" in c.get(f"/workspace/incidents/{mamai}").text
        assert "merged into" in c.get(f"/workspace/incidents/{other}").text
        moved = c.post(
            f"/workspace/incidents/{mamai}/move",
            data={"csrf": token, "item": str(ids[3]), "why": "a different arrest"},
        )
        assert moved.status_code == 303
    with Session(sqlite_engine) as s:
        item = s.get(Item, ids[3])
        assert item is not None and item.incident_id not in (mamai, other)
        assert item.grouping and item.grouping.get("by") == "aigerim"
        assert s.get(Incident, mamai) is not None
        actions = [(e.action, e.actor) for e in s.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()]
        assert ("merge", "aigerim") in actions and ("move", "aigerim") in actions


# --- search -------------------------------------------------------------------------------------------------


def test_search_finds_an_inflected_russian_word_and_a_malformed_query_is_a_message(
    sqlite_engine: Engine, config_dir: Path
) -> None:
    from monitor.search import rebuild_index

    stored(sqlite_engine)
    with session_scope(sqlite_engine) as s:
        rebuild_index(s)
    with WorkspaceServer(sqlite_engine, config_dir) as ws, ws.client() as c:
        # The infinitive finds the past tense in the title, marked.
        found = c.get("/workspace/", params={"q": "задержать"})
        assert found.status_code == 200
        assert "В Алматы <mark>задержали</mark>" in found.text
        assert "Journalist detained" not in found.text
        bad = c.get("/workspace/", params={"q": '"unclosed'})
        assert bad.status_code == 400 and 'class="error"' in bad.text
        # Query syntax of either database, or markup, is a message or a plain search, never a 500.
        for hostile in (
            "*",
            "OR",
            "-",
            "NEAR(a b)",
            "title:x",
            "a AND (",
            "<script>alert(1)</script>",
            "'; --",
        ):
            resp = c.get("/workspace/", params={"q": hostile})
            assert resp.status_code in (200, 400), (hostile, resp.status_code)
            assert "<script>alert" not in resp.text


# --- accounts -------------------------------------------------------------------------------------------------


def test_users_command_adds_lists_and_removes_accounts_with_argon2_hashes(
    sqlite_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["--db", sqlite_url]
    added = runner.invoke(app, [*base, "users", "add", "aigerim"], input="a long enough secret\n")
    assert added.exit_code == 0, added.output
    again = runner.invoke(app, [*base, "users", "add", "aigerim"], input="a long enough secret\n")
    assert again.exit_code == 1 and "exists already" in again.output
    short = runner.invoke(app, [*base, "users", "add", "dmitri"], input="short\n")
    assert short.exit_code == 2 and "too short" in short.output
    bad = runner.invoke(app, [*base, "users", "add", "x y"], input="a long enough secret\n")
    assert bad.exit_code == 2 and "not usable" in bad.output
    listed = runner.invoke(app, [*base, "users", "list", "--json"])
    assert [u["name"] for u in __import__("json").loads(listed.stdout)] == ["aigerim"]
    engine = make_engine(sqlite_url)
    with Session(engine) as s:
        user = s.exec(select(User)).one()
        assert (
            user.password_hash.startswith("$argon2id$") and "a long enough secret" not in user.password_hash
        )
    assert verify_login(engine, "aigerim", "a long enough secret")
    assert not verify_login(engine, "aigerim", "a long enough secreT")
    removed = runner.invoke(app, [*base, "users", "remove", "aigerim"])
    assert removed.exit_code == 0
    assert runner.invoke(app, [*base, "users", "remove", "aigerim"]).exit_code == 1
    with Session(engine) as s:
        assert [e.action for e in s.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()] == [
            "user_add",
            "user_remove",
        ]
    engine.dispose()


# --- the service process ------------------------------------------------------------------------------------


def test_monitor_run_serves_the_workspace_and_stops_cleanly(sqlite_url: str, config_dir: Path) -> None:
    engine = make_engine(sqlite_url)
    ensure_schema(engine)
    ids = stored(engine)
    env = {**os.environ, "MONITOR_SECRET_KEY": "k" * 40}
    CliRunner().invoke(app, ["--db", sqlite_url, "users", "add", "aigerim"], input=PASSWORD + "\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor",
            "--config",
            str(config_dir),
            "--db",
            sqlite_url,
            "run",
            "--port",
            "0",
            "--no-site",
            "--tick",
            "5s",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 60
        lines = []
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            m = re.search(r"127\.0\.0\.1:(\d+)/healthz", line)
            port = int(m.group(1)) if m else None
        assert port, "".join(lines)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            token = csrf_of(c.get("/workspace/login").text)
            r = c.post("/workspace/login", data={"name": "aigerim", "password": PASSWORD, "csrf": token})
            assert r.status_code == 303
            token = csrf_of(c.get("/workspace/").text)
            r = c.post(
                f"/workspace/items/{ids[0]}/verdict",
                data={"csrf": token, "category": "protest_crackdown", "verdict": "confirm"},
            )
            assert r.status_code == 303
            metrics = c.get("/metrics").text
            assert 'monitor_workspace_writes_total{action="verdict"} 1.0' in metrics
            assert c.get("/healthz").status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [(v.author, v.verdict) for v in verdicts(engine)] == [("aigerim", "confirm")]
    engine.dispose()
