"""Human durations in config files: 90, "90s", "10m", "1h30m", "7d"."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a string such as "10m", "1h30m", "7d"."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '10m', '24h', '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            pos, seconds = 0, 0.0
            for m in _PART.finditer(text):
                if text[pos : m.start()].strip():
                    break
                seconds += float(m.group(1)) * _UNIT[m.group(2)]
                pos = m.end()
            if pos == 0 or text[pos:].strip():
                raise ValueError(f"not a duration: {value!r} (use e.g. '90s', '10m', '24h', '7d')")
    else:
        raise ValueError("a duration must be a number of seconds or a string like '10m', '24h', '7d'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
