"""The watcher that notices when a config file changes.

The service then loads a whole new `monitor.config.Config` (settings, feeds, rules, digests) and swaps it for the
running one in one assignment; a load that fails raises ConfigError(s) naming file and line, and the running
config stays, so a typo in a YAML file never stops a service that was working.
"""

from __future__ import annotations

from pathlib import Path

# Editors write swap and backup files next to the real one; they are not config.
_IGNORED_SUFFIXES = (".swp", ".swx", ".tmp", "~", ".bak", ".orig")


class ConfigWatcher:
    """Notices a change to any file under the config folder by comparing (mtime, size) snapshots.

    Polling every few seconds costs a few stat() calls and needs no inotify dependency; it also works on the
    network and bind-mounted folders where inotify does not.
    """

    def __init__(self, root: Path, max_files: int = 2000) -> None:
        self.root = root
        self.max_files = max_files
        self._last = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        snap: dict[str, tuple[int, int]] = {}
        try:
            paths = sorted(self.root.rglob("*"))
        except OSError:
            return snap
        for p in paths[: self.max_files]:
            rel = p.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts) or p.name.endswith(_IGNORED_SUFFIXES):
                continue
            try:
                st = p.stat()
            except OSError:
                continue  # deleted between listing and stat: the next snapshot will tell
            if p.is_file():
                snap[str(rel)] = (st.st_mtime_ns, st.st_size)
        return snap

    def changed(self) -> list[str]:
        """Files added, removed or modified since the last call (and since construction)."""
        now = self.snapshot()
        diff = sorted(k for k in now.keys() | self._last.keys() if now.get(k) != self._last.get(k))
        self._last = now
        return diff
