"""The `monitor` command as a user runs it: config checks, feeds, poll, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, create_engine, func, select
from typer.testing import CliRunner

import monitor.cli  # noqa: F401 - registers every command on `app`
from monitor.cli.app import app
from monitor.store.models import Item, ItemSource
from tests.support.builders import dated, rss
from tests.support.contracts import EXPORT_ITEM_FIELDS
from tests.support.feedserver import FeedServer

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def write_feeds(config_dir: Path, feeds: list[tuple[str, str]]) -> None:
    lines = ["feeds:"]
    for fid, url in feeds:
        lines += [f"  - id: {fid}", f"    url: {url}"]
    (config_dir / "feeds.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_check_reports_every_config_error_with_file_line_and_field(config_dir: Path) -> None:
    (config_dir / "feeds.yaml").write_text(
        "feeds:\n"
        "  - id: ok-feed\n"
        "    url: https://example.org/rss\n"
        "  - id: Bad Id\n"
        "    url: ftp://example.org/rss\n"
        "  - id: third\n"
        "    url: https://example.org/3\n"
        "    intervall: 10m\n",
        encoding="utf-8",
    )
    (config_dir / "settings.yaml").write_text("polling:\n  min_interval: soon\n", encoding="utf-8")
    code, out, _err = run("--config", str(config_dir), "check", "--json")
    assert code == 2
    errors = json.loads(out)["errors"]
    where = {(Path(e["file"]).name, e["line"], e["field"]) for e in errors}
    assert ("feeds.yaml", 4, "feeds[1].id") in where
    assert ("feeds.yaml", 5, "feeds[1].url") in where
    assert ("feeds.yaml", 8, "feeds[2].intervall") in where
    assert ("settings.yaml", 2, "polling.min_interval") in where


def test_check_names_the_line_of_broken_yaml(config_dir: Path) -> None:
    (config_dir / "feeds.yaml").write_text("feeds:\n  - id: a\n    url: [unclosed\n", encoding="utf-8")
    code, _out, err = run("--config", str(config_dir), "check")
    assert code == 2
    assert "feeds.yaml:" in err and "not valid YAML" in err


def test_packaged_config_passes_check() -> None:
    code, out, err = run("check", "--json")
    assert code == 0, err
    assert json.loads(out)["ok"] is True


def test_feeds_opml_round_trip(config_dir: Path, sqlite_url: str, tmp_path: Path) -> None:
    opml = tmp_path / "in.opml"
    opml.write_text(
        """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0"><head><title>mine</title></head><body>
  <outline text="Kazakhstan">
    <outline type="rss" text="Vlast" xmlUrl="https://vlast.example/rss/" htmlUrl="https://vlast.example/"/>
    <outline type="rss" title="Азаттык" xmlUrl="https://azattyq.example/feed.xml"/>
  </outline>
  <outline type="rss" text="No address"/>
</body></opml>""",
        encoding="utf-8",
    )
    base = ["--config", str(config_dir), "--db", sqlite_url]
    code, out, _ = run(*base, "feeds", "import", str(opml), "--json")
    assert code == 0
    assert len(json.loads(out)["added"]) == 2
    code, out, _ = run(*base, "feeds", "import", str(opml), "--json")
    assert json.loads(out)["skipped"] == ["https://vlast.example/rss/", "https://azattyq.example/feed.xml"]

    code, out, _ = run(*base, "feeds", "export")
    assert code == 0
    import xml.etree.ElementTree as ET

    outlines = ET.fromstring(out).find("body").findall("outline")  # type: ignore[union-attr]
    got = {o.get("xmlUrl"): (o.get("text"), o.get("category")) for o in outlines}
    assert got["https://azattyq.example/feed.xml"] == ("Азаттык", "kazakhstan")

    code, out, _ = run(*base, "feeds", "list", "--json")
    listed = {f["url"]: f for f in json.loads(out)}
    assert listed["https://vlast.example/rss/"]["health"] == "new"

    fid = listed["https://vlast.example/rss/"]["id"]
    assert run(*base, "feeds", "remove", fid)[0] == 0
    code, out, _ = run(*base, "feeds", "list", "--json")
    assert fid not in {f["id"] for f in json.loads(out)}
    assert run(*base, "feeds", "remove", "no-such-feed")[0] == 2


def test_import_of_a_broken_opml_names_the_file_and_line(
    config_dir: Path, sqlite_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.opml"
    bad.write_text("<opml version='2.0'>\n<body>\n<outline xmlUrl='x'\n</body></opml>", encoding="utf-8")
    code, _, err = run("--config", str(config_dir), "--db", sqlite_url, "feeds", "import", str(bad))
    assert code == 2
    assert "bad.opml:" in err and "OPML" in err


def test_poll_and_export_json_give_the_documented_fields(config_dir: Path, sqlite_url: str) -> None:
    with FeedServer() as srv:
        srv.add("/a.xml", body=rss(dated(3)))
        srv.add("/down.xml", status=503)
        write_feeds(config_dir, [("a", srv.url("/a.xml")), ("down", srv.url("/down.xml"))])
        base = ["--config", str(config_dir), "--db", sqlite_url]
        env = {"MONITOR_ALLOW_PRIVATE_NETWORKS": "1"}
        code, out, _ = run(*base, "poll", "--json", env=env)
    assert code == 1  # a feed failed
    report = json.loads(out)
    assert report["summary"]["new_items"] == 3 and report["summary"]["error"] == 1
    failed = next(f for f in report["feeds"] if f["feed"] == "down")
    assert failed["error_kind"] == "http_5xx" and "down.xml" in failed["error"]

    code, out, _ = run(*base, "export", "--format", "json")
    assert code == 0
    items = json.loads(out)
    assert len(items) == 3
    for key in EXPORT_ITEM_FIELDS:
        assert key in items[0]
    assert items[0]["feed"] == "a"

    code, out, _ = run(*base, "export", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("id,feed,url,title")
    assert len(out.strip().splitlines()) == 4


def test_poll_refuses_an_unreachable_database_with_a_clear_message(config_dir: Path) -> None:
    code, _, err = run("--config", str(config_dir), "--db", "postgresql://nobody@127.0.0.1:1/none", "poll")
    assert code == 2
    assert "database" in err and "127.0.0.1:1" in err


def test_killing_poll_mid_cycle_loses_nothing_and_duplicates_nothing(
    config_dir: Path, tmp_path: Path
) -> None:
    """Feed `fast` is stored while `slow` is still downloading; SIGKILL then, and poll again."""
    db = tmp_path / "kill.db"
    url = f"sqlite:///{db}"
    with FeedServer() as srv:
        srv.add("/fast.xml", body=rss(dated(4, prefix="Fast")))
        srv.add("/slow.xml", body=rss(dated(2, prefix="Slow")), delay=60)
        write_feeds(config_dir, [("fast", srv.url("/fast.xml")), ("slow", srv.url("/slow.xml"))])
        env = {**os.environ, "MONITOR_ALLOW_PRIVATE_NETWORKS": "1"}
        cmd = [sys.executable, "-m", "monitor", "--config", str(config_dir), "--db", url, "poll", "--json"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            stored = 0
            while time.monotonic() < deadline and stored < 4:
                time.sleep(0.2)
                if db.exists():
                    try:
                        with Session(create_engine(url)) as s:
                            stored = s.exec(select(func.count()).select_from(ItemSource)).one()
                    except Exception:
                        stored = 0
            assert stored == 4, "the fast feed was never committed"
            assert proc.poll() is None, "poll finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        srv.add("/slow.xml", body=rss(dated(2, prefix="Slow")))
        code, _out, _ = run(
            "--config",
            str(config_dir),
            "--db",
            url,
            "poll",
            "--all",
            "--json",
            env={"MONITOR_ALLOW_PRIVATE_NETWORKS": "1"},
        )
    assert code == 0
    with Session(create_engine(url)) as s:
        titles = sorted(s.exec(select(Item.title)).all())
    assert titles == sorted([f"Fast {i}" for i in range(4)] + ["Slow 0", "Slow 1"])


@pytest.mark.parametrize("args", [["poll", "--feed", "nope"], ["export", "--format", "xml"]])
def test_bad_usage_exits_2(config_dir: Path, sqlite_url: str, args: list[str]) -> None:
    code, _, _ = run("--config", str(config_dir), "--db", sqlite_url, *args)
    assert code == 2


def test_poll_classifies_groups_and_explains_end_to_end(config_dir: Path, sqlite_url: str) -> None:
    from tests.support.builders import It

    en = It(
        "Police detain Zhanbolat Mamai at peaceful rally in Almaty",
        "Police detained opposition activist Zhanbolat Mamai and twelve protesters at a peaceful rally in Almaty on Saturday.",
        link="https://en.example.org/mamai-detained",
    )
    ru = It(
        "В Алматы полиция задержала Жанболата Мамая на мирном митинге",
        "Полиция задержала активиста Жанболата Мамая и двенадцать участников мирного митинга в Алматы в субботу.",
        link="https://ru.example.org/mamai-zaderzhan",
    )
    other = It(
        "Astana football club wins the cup",
        "The striker scored twice in the final.",
        link="https://en.example.org/cup",
    )
    with FeedServer() as srv:
        srv.add("/en.xml", body=rss([en, other]))
        srv.add("/ru.xml", body=rss([ru], language="ru"))
        write_feeds(config_dir, [("en", srv.url("/en.xml")), ("ru", srv.url("/ru.xml"))])
        base = ["--config", str(config_dir), "--db", sqlite_url]
        code, _, err = run(*base, "poll", "--json", env={"MONITOR_ALLOW_PRIVATE_NETWORKS": "1"})
    assert code == 0, err
    code, out, _ = run(*base, "export", "--format", "json")
    items = {i["url"]: i for i in json.loads(out)}
    a, b, c = items[en.link], items[ru.link], items[other.link]
    assert "protest_crackdown" in a["categories"] and "protest_crackdown" in b["categories"]
    assert a["countries"] == ["KZ"] and b["countries"] == ["KZ"]
    assert a["matches"]["protest_crackdown"]["hits"], "the explanation names the terms that fired"
    assert c["categories"] == [] and c["incident"] is None
    assert a["incident"] is not None and a["incident"] == b["incident"]  # one event, two languages

    code, out, _ = run(*base, "explain", "--item", str(b["id"]), "--json")
    assert code == 0
    explained = json.loads(out)
    assert explained["incident"]["incident"]["id"] == a["incident"]
    assert explained["incident"]["text"]


def test_demo_reports_as_json(tmp_path: Path) -> None:
    code, out, _ = run("demo", "--out", str(tmp_path / "demo"), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True and report["items"] > report["matched"] > 0
    assert all(step["ok"] for step in report["steps"])
    assert Path(report["site"], "index.html").is_file()
    assert any(p.endswith("daily.eml") for p in report["digest"])
