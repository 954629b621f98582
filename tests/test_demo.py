"""`monitor demo` on a fresh folder, with no network beyond loopback (a private network namespace when the
system allows one): it polls the bundled feeds, classifies, groups, writes the daily digest and the site."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import yaml

from monitor.demo import FEEDS_DIR
from monitor.demo.server import render

ROOT = Path(__file__).resolve().parent.parent


def offline_prefix() -> list[str]:
    """Run in a new network namespace with only loopback up, if unprivileged namespaces work here."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or not ip:
        return []
    probe = subprocess.run([unshare, "-rn", ip, "link", "set", "lo", "up"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        return []
    return [unshare, "-rn", "sh", "-c", f'{ip} link set lo up && exec "$0" "$@"']


def test_demo_runs_offline_and_writes_the_digest_and_the_site(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env["MONITOR_SMTP_URL"] = (
        "smtp://127.0.0.1:9"  # were anything sent, it would fail: the digest is a dry run
    )
    prefix = offline_prefix()
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "monitor", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # no ./config here: the demo must not depend on the working directory
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "✓ poll: 4 feeds, 19 new items" in text
    assert "✓ classify: 11 of 19 items matched" in text  # every civic-space story, none of the ordinary news
    assert "✓ incidents:" in text and "reported by several feeds" in text
    assert "✓ digest:" in text and "✓ site:" in text
    for name in ("protest_crackdown", "ngo_liquidation", "defamation", "restrictive_law"):
        assert name in text

    eml = out / "digest" / "daily.eml"
    assert str(eml) in text and str(out / "site" / "index.html") in text
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    plain = body.get_content()
    for story in ("Almaty rally", "Adal Kukyk", "newspaper fined", "В Алматы задержали", "митингке"):
        assert story in plain, story
    assert (out / "digest" / "daily.html").is_file()
    index = (out / "site" / "index.html").read_text(encoding="utf-8")
    assert "Алматы" in index or "Almaty" in index
    assert (out / "site" / "feed.atom").is_file()
    feeds = yaml.safe_load((out / "config" / "feeds.yaml").read_text(encoding="utf-8"))["feeds"]
    assert {f["language"] for f in feeds} == {"en", "ru", "kk"}
    assert all(f["url"].startswith("http://127.0.0.1:") for f in feeds)


def test_bundled_feeds_are_package_data_and_render_with_dates() -> None:
    names = sorted(p.name for p in FEEDS_DIR.iterdir())
    assert len(names) == 4 and all(n.endswith((".xml", ".atom")) for n in names)
    assert FEEDS_DIR.is_relative_to(ROOT / "monitor")  # inside the package, so the wheel carries them
    from datetime import UTC, datetime

    for p in FEEDS_DIR.iterdir():
        rendered = render(p.read_text(encoding="utf-8"), datetime(2026, 11, 20, 12, tzinfo=UTC))
        assert "{{AGO:" not in rendered.split("-->", 1)[1] and "{{ISO:" not in rendered.split("-->", 1)[1]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare not available")
def test_offline_namespace_really_has_no_network() -> None:
    prefix = offline_prefix()
    if not prefix:
        pytest.skip("unprivileged network namespaces are not allowed here")
    code = "import socket\ntry:\n socket.create_connection(('192.0.2.1', 80), timeout=3)\nexcept OSError:\n raise SystemExit(7)"
    proc = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, timeout=30)
    assert proc.returncode == 7
