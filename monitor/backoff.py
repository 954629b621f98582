"""The project's one backoff rule: exponential from a base, capped, with an optional spread factor.

Feeds (monitor.ingest.policy) and digest messages (monitor.deliver.digest.outbox) each pass their own base, cap
and spread; the shape of the curve lives here only.
"""

from __future__ import annotations


def exponential_backoff(attempt: int, *, base: float, cap: float, spread: float = 1.0) -> float:
    """Seconds to wait after failure number `attempt` (1 = the first): base, 2x base, 4x base... times
    `spread`, never more than `cap`. Attempts below 1 count as the first."""
    n = max(1, attempt)
    # 2**30 times any sensible base is past every cap; clamping the exponent keeps the float finite
    return min(cap, base * (2 ** min(n - 1, 30)) * spread)
