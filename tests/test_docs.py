"""The Python examples in README.md ("Use it from Python") and docs/python.md run as written, against the
bundled demo feeds served on loopback, so the documentation stays true."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.demo.run import _write_config
from monitor.demo.server import DemoServer

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return _BLOCK.findall(text)


def readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Use it from Python")
    end = text.index("\n## ", start + 1)
    return text[start:end]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder as the docs assume: config/ of one's own (here: the demo feeds on loopback) and the cwd."""
    with DemoServer() as srv:
        _write_config(tmp_path / "config", srv)
        monkeypatch.chdir(tmp_path)
        yield tmp_path


def run_blocks(blocks: list[str]) -> str:
    assert blocks, "no python code block found"
    namespace: dict[str, object] = {"__name__": "__docs__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, code in enumerate(blocks):
            exec(compile(code, f"<block {i + 1}>", "exec"), namespace)
    return out.getvalue()


def test_readme_python_example_runs_and_prints_what_its_comments_say(workdir: Path) -> None:
    printed = run_blocks(python_blocks(readme_section()))
    assert "('protest_crackdown',) ('KZ',)" in printed
    assert re.search(r"^[1-9]\d* new items; 0 feeds failed$", printed, re.M)
    assert (workdir / "monitor.db").is_file()


def test_notebook_walkthrough_runs_top_to_bottom(workdir: Path) -> None:
    text = (ROOT / "docs" / "python.md").read_text(encoding="utf-8")
    printed = run_blocks(python_blocks(text))
    assert "protest_crackdown" in printed
    assert (workdir / "site" / "index.html").is_file()
    assert (workdir / "research.db").is_file()
