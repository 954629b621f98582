"""The workspace in headless Chromium, driven by Playwright (pointed at the system's chromium, never a
downloaded one): log in, triage with the keyboard, reject a match, merge two incidents, search, and the hostile
fixtures doing nothing. Screenshots of the list, item and incident pages go to MONITOR_SCREENSHOT_DIR (default:
the test's temporary folder)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from monitor.store import ensure_schema, make_engine
from monitor.store.engine import session_scope
from monitor.store.models import Item
from monitor.store.workspace_models import Verdict
from tests.support.browser import chromium_path
from tests.support.workspace import PASSWORD, WorkspaceServer
from tests.test_web import stored

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(
        chromium_path() is None, reason="chromium is not installed (apt-get install chromium)"
    ),
    pytest.mark.skipif(
        sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"
    ),
]

BEACON = "http://127.0.0.1:9/beacon"


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    eng = make_engine(sqlite_url)
    ensure_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MONITOR_SCREENSHOT_DIR") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watch:
    """What a page did that it should not: script errors, dialogs, requests leaving the server, a changed title."""

    def __init__(self, page: Page, base: str) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: None if r.url.startswith(base) else self.outside.append(r.url))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))


@pytest.fixture
def browser() -> Iterator[Any]:
    assert sync_playwright is not None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def log_in(page: Page, base: str, name: str = "aigerim") -> None:
    page.goto(base + "/workspace/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(base + "/workspace/")


def test_keyboard_triage_rejects_the_focused_items_top_category(
    engine: Engine, config_dir: Path, browser: Any, shots: Path
) -> None:
    ids = stored(engine)
    with WorkspaceServer(engine, config_dir) as ws:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        watch = Watch(page, ws.base)
        log_in(page, ws.base)
        rows = page.locator("li.item")
        first_id = int(rows.nth(0).get_attribute("data-item"))
        second_id = int(rows.nth(1).get_attribute("data-item"))
        top = rows.nth(1).get_attribute("data-top")
        first_top = rows.nth(0).get_attribute("data-top")
        page.keyboard.press("j")
        page.keyboard.press("j")
        assert "focused" in (rows.nth(1).get_attribute("class") or "")
        page.keyboard.press("k")
        assert "focused" in (rows.nth(0).get_attribute("class") or "")
        page.keyboard.press("j")
        page.keyboard.press("r")
        page.locator(f"#item-{second_id} .chip.rejected").wait_for()
        # The focus moves on to the next item, ready for the next verdict.
        page.wait_for_function("document.querySelectorAll('li.item')[2].classList.contains('focused')")
        page.screenshot(path=str(shots / "list.png"))
        page.keyboard.press("k")
        page.keyboard.press("k")
        page.keyboard.press("c")
        page.locator(f"#item-{first_id} .chip.confirmed").wait_for()
        # Stored, not only drawn: a reload shows the same.
        page.reload()
        assert page.locator(f"#item-{second_id} .chip.rejected").count() == 1
        page.keyboard.press("/")
        assert page.evaluate("document.activeElement.id") == "q"
        assert watch.errors == [] and watch.outside == []
    with Session(engine) as s:
        rows_ = s.exec(select(Verdict).order_by(col(Verdict.id))).all()
        assert [(v.item_id, v.category, v.verdict, v.author) for v in rows_] == [
            (second_id, top, "reject", "aigerim"),
            (first_id, first_top, "confirm", "aigerim"),
        ]
    assert set(ids) >= {first_id, second_id}


def test_without_javascript_the_buttons_still_give_verdicts(
    engine: Engine, config_dir: Path, browser: Any
) -> None:
    stored(engine)
    with WorkspaceServer(engine, config_dir) as ws:
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        log_in(page, ws.base)
        row = page.locator("li.item").nth(0)
        item_id = row.get_attribute("data-item")
        row.locator('form[data-verdict="reject"] button').click()
        page.wait_for_load_state()
        assert page.url.startswith(ws.base + "/workspace/")
        assert page.locator(f"#item-{item_id} .chip.rejected").count() == 1
        assert "Rejected" in page.locator(".flash").inner_text()
        context.close()


def test_item_page_rejects_a_match_adds_a_category_and_keeps_a_note(
    engine: Engine, config_dir: Path, browser: Any, shots: Path
) -> None:
    ids = stored(engine)
    with WorkspaceServer(engine, config_dir) as ws:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        watch = Watch(page, ws.base)
        log_in(page, ws.base)
        page.goto(f"{ws.base}/workspace/items/{ids[1]}")
        assert page.locator(".why mark").first.inner_text() == "задержали"
        cat = page.locator("li.category").first
        cat.locator("input[name=note]").fill("редактор, не протест")
        cat.locator("button[value=reject]").click()
        page.wait_for_load_state()
        assert "rejected by aigerim" in page.locator("li.category").first.inner_text()
        page.select_option("form.add select[name=category]", "media_restriction")
        page.click("form.add button[type=submit]")
        page.wait_for_load_state()
        assert page.locator("li.category.added").count() == 1
        page.fill("form.note-form textarea", "Проверить по второму источнику")
        page.click("form.note-form button")
        page.wait_for_load_state()
        assert "Проверить по второму источнику" in page.locator(".note-entry").inner_text()
        page.screenshot(path=str(shots / "item.png"), full_page=True)
        assert watch.errors == [] and watch.outside == []


def test_merge_two_incidents_and_move_a_report_out(
    engine: Engine, config_dir: Path, browser: Any, shots: Path
) -> None:
    ids = stored(engine)
    with Session(engine) as s:
        mamai = s.get(Item, ids[0]).incident_id  # type: ignore[union-attr]
        other = s.get(Item, ids[3]).incident_id  # type: ignore[union-attr]
    with WorkspaceServer(engine, config_dir) as ws:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        watch = Watch(page, ws.base)
        log_in(page, ws.base)
        page.goto(f"{ws.base}/workspace/incidents/{mamai}")
        before = page.locator("li.item").count()
        page.select_option("form.merge select[name=other]", str(other))
        page.fill("form.merge input[name=why]", "one wave of detentions")
        page.click("form.merge button[type=submit]")
        page.wait_for_load_state()
        assert "Merged incident" in page.locator(".flash").inner_text()
        assert page.locator("li.item").count() > before
        page.screenshot(path=str(shots / "incident.png"), full_page=True)
        moved = page.locator(f"#item-{ids[3]}")
        moved.locator("summary").click()
        moved.locator("input[name=why]").fill("a different arrest after all")
        moved.locator("button[type=submit]").click()
        page.wait_for_load_state()
        assert page.locator(f"#item-{ids[3]}").count() == 0
        page.goto(f"{ws.base}/workspace/incidents/{other}")
        assert "merged into" in page.locator("main").inner_text()
        assert watch.errors == [] and watch.outside == []


def test_hostile_feed_content_runs_nothing_and_loads_nothing(
    engine: Engine, config_dir: Path, browser: Any
) -> None:
    from tests.support.stories import hostile_story

    ids = stored(engine, hostile_story(BEACON))
    hostile = ids[-1]
    with Session(engine) as s:
        incident_id = s.get(Item, hostile).incident_id  # type: ignore[union-attr]
    with WorkspaceServer(engine, config_dir) as ws:
        page = browser.new_page()
        watch = Watch(page, ws.base)
        log_in(page, ws.base)
        for path in ("/workspace/", f"/workspace/items/{hostile}", f"/workspace/incidents/{incident_id}"):
            page.goto(ws.base + path)
            page.wait_for_load_state("networkidle")
            # A script from the feed would set the title to exactly "PWNED-<where>".
            assert not page.title().startswith("PWNED"), (path, page.title())
            assert "PWNED" in page.content()  # shown as text
        assert watch.outside == [] and watch.dialogs == []


def test_search_in_russian_finds_other_forms_of_the_word(
    engine: Engine, config_dir: Path, browser: Any, shots: Path
) -> None:
    from monitor.search import rebuild_index

    stored(engine)
    with session_scope(engine) as s:
        rebuild_index(s)
    with WorkspaceServer(engine, config_dir) as ws:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        log_in(page, ws.base)
        page.keyboard.press("/")
        page.keyboard.type("задержать")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        titles = page.locator("li.item a.title").all_inner_texts()
        assert titles == ["В Алматы задержали главного редактора «Трибуны»"], titles
        assert page.locator("li.item mark").first.inner_text() == "задержали"
        page.screenshot(path=str(shots / "search.png"))


def test_a_match_rejected_in_the_browser_leaves_the_next_digest(
    engine: Engine, config_dir: Path, browser: Any, tmp_path: Path
) -> None:
    from monitor.config.load import load_config
    from monitor.deliver.digest import deliver_digest

    path = config_dir / "digests.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("first_lookback: 24h", "first_lookback: 3650d"))
    ids = stored(engine)
    with Session(engine) as s:
        target = s.get(Item, ids[3])
        assert target is not None and target.categories
        title = target.title

    def digest_page(name: str) -> str:
        run = deliver_digest(engine, load_config(config_dir), "daily", dry_run_out=tmp_path / name)
        assert run.html_path is not None
        return run.html_path.read_text(encoding="utf-8")

    assert title in digest_page("before")  # the control: the rules' match would be delivered
    with WorkspaceServer(engine, config_dir) as ws:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        log_in(page, ws.base)
        page.goto(f"{ws.base}/workspace/items/{ids[3]}")
        for _ in range(page.locator("li.category").count()):
            page.locator("li.category:not(.rejected) button[value=reject]").first.click()
            page.wait_for_load_state()
        assert page.locator("li.category.rejected").count() == len(target.categories)
    assert title not in digest_page("after")
