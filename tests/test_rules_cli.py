"""`monitor explain`, `eval`, `reclassify` and the rules part of `check`, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import Session, select
from typer.testing import CliRunner

import monitor.cli  # noqa: F401 - registers every command on `app`
from monitor.cli.app import app
from monitor.store import ensure_schema, make_engine
from monitor.store.models import Item
from monitor.store.types import utcnow

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_explain_text_json(config_dir: Path) -> None:
    code, out, _ = run(
        "--config", str(config_dir), "explain", "--json",
        "--text", "Police detained dozens of protesters at a rally in Almaty.",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["categories"] == ["protest_crackdown"]
    assert data["countries"] == ["KZ"]
    hit = data["matches"]["protest_crackdown"]["hits"][0]
    assert {"term", "field", "start", "end", "snippet"} <= set(hit)


def test_explain_terminal_and_file(config_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "item.txt"
    f.write_text("В Алматы задержали участников митинга у акимата.", encoding="utf-8")
    code, out, _ = run("--config", str(config_dir), "explain", "--file", str(f))
    assert code == 0
    assert "protest_crackdown" in out and "задержать" in out and "countries: KZ" in out


def test_explain_needs_exactly_one_source(config_dir: Path) -> None:
    code, _, err = run("--config", str(config_dir), "explain")
    assert code == 2 and "exactly one" in err


def test_eval_json_and_invalid_file(config_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "set.jsonl"
    good.write_text(
        json.dumps(
            {
                "id": "1",
                "title": "Police detain protesters at rally",
                "text": "",
                "categories": ["protest_crackdown"],
            }
        )
        + "\n"
        + json.dumps({"id": "2", "title": "Flights delayed by fog", "text": "", "categories": []})
        + "\n",
        encoding="utf-8",
    )
    code, out, _ = run("--config", str(config_dir), "eval", str(good), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["micro"]["tp"] == 1 and data["micro"]["fp"] == 0
    assert data["categories"]["protest_crackdown"]["f1"] == 1.0
    assert data["by_form"] == {}


def test_eval_text_output_splits_teasers_from_full_articles(config_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "forms.jsonl"
    rows = [
        {
            "id": "1",
            "form": "teaser",
            "title": "Police detain protesters at rally",
            "text": "",
            "categories": ["protest_crackdown"],
        },
        {
            "id": "2",
            "form": "full",
            "title": "Flights delayed by fog",
            "text": "Fog closed the airport.",
            "categories": ["protest_crackdown"],
        },
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, out, _ = run("--config", str(config_dir), "eval", str(f))
    assert code == 0
    assert "teaser: precision 1.000 recall 1.000" in out
    assert "full: precision 1.000 recall 0.000" in out
    code, out, _ = run("--config", str(config_dir), "eval", str(f), "--json")
    assert json.loads(out)["by_form"]["full"]["fn"] == 1


def test_eval_invalid_file(config_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"id": "1", "title": "", "text": "", "categories": ["torture"]}) + "\n", encoding="utf-8"
    )
    code, _, err = run("--config", str(config_dir), "eval", str(bad))
    assert code == 2 and "bad.jsonl:1" in err and "torture" in err


def test_check_reports_a_failing_example(config_dir: Path) -> None:
    path = config_dir / "categories.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        '        - "Thousands joined a peaceful rally for clean air that ended without incident."',
        '        - "Police detained protesters at the rally."',
    )
    path.write_text(text, encoding="utf-8")
    code, out, _ = run("--config", str(config_dir), "check", "--json")
    assert code == 1
    data = json.loads(out)
    assert any("should not match" in f for f in data["failures"])


def test_reclassify_reports_gains_and_losses(config_dir: Path, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    ensure_schema(engine)
    now = utcnow()
    with Session(engine) as s:
        s.add(Item(feed_id="f", url="https://x/1", title="Police detain protesters at rally", text="",
                   published=now, fetched=now, content_hash="a", categories=[]))  # fmt: skip
        s.add(Item(feed_id="f", url="https://x/2", title="Weather is fine", text="",
                   published=now, fetched=now, content_hash="b", categories=["prosecution"]))  # fmt: skip
        s.commit()
    code, out, _ = run("--config", str(config_dir), "--db", sqlite_url, "reclassify", "--dry-run", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["items"] == 2 and data["changed"] == 2
    assert data["categories"]["protest_crackdown"] == {"gained": 1, "lost": 0}
    assert data["categories"]["prosecution"] == {"gained": 0, "lost": 1}
    with Session(engine) as s:  # dry run stored nothing
        assert [i.categories for i in s.exec(select(Item).order_by(Item.id))] == [[], ["prosecution"]]
    code, out, _ = run("--config", str(config_dir), "--db", sqlite_url, "reclassify", "--json")
    assert code == 0
    with Session(engine) as s:
        items = list(s.exec(select(Item).order_by(Item.id)))
        assert [i.categories for i in items] == [["protest_crackdown"], []]
        assert items[0].rules_version and items[0].matches["protest_crackdown"]["hits"]
    code, out, _ = run("--config", str(config_dir), "--db", sqlite_url, "reclassify", "--json")
    assert json.loads(out)["changed"] == 0
