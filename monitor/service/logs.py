"""Logging for the service: one line per event, human-readable or JSON lines.

Lines about a feed carry `feed` and `url` (and lines about a digest carry `digest`) as structured fields, so a
JSON consumer can filter on them; the human format appends them as `key=value` after the message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Fields a log call may pass in `extra=` that formatters show; anything else stays out of the line.
CONTEXT_FIELDS = ("feed", "url", "digest", "worker", "file", "line", "event", "outcome", "kind")

LOGGER_NAME = "monitor"
log = logging.getLogger(LOGGER_NAME)


def feed_ctx(feed: str, url: str, **more: Any) -> dict[str, Any]:
    """`extra=` for a line about one feed: every such line names the feed id and its address."""
    return {"feed": feed, "url": url, **more}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None}


class HumanFormatter(logging.Formatter):
    """`2026-11-20 07:00:01 WARNING  feed failed: timeout  feed=kaztag url=https://...`"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp} {record.levelname:<8} {record.getMessage()}"
        ctx = _context(record)
        if ctx:
            line += "  " + " ".join(f"{k}={v}" for k, v in ctx.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC ISO 8601), level, logger, msg, plus the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(_context(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(fmt: str = "human", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route the `monitor` logger (and APScheduler's errors) to stderr in the chosen format."""
    if fmt not in ("human", "json"):
        raise ValueError(f"unknown log format {fmt!r}: use human or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    # APScheduler warns on every tick skipped because the previous poll still runs: expected, not news.
    for name, lvl in ((LOGGER_NAME, level.upper()), ("apscheduler", "ERROR")):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(lvl)
        logger.propagate = False
