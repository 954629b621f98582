"""The project's one backoff rule: exponential from a base, capped, with an optional spread factor.

Feeds (monitor.ingest.policy) pass their own base, cap and spread; deliveries (digest messages in
monitor.deliver.digest.outbox, chat notifications in monitor.deliver.notify) share `delivery_backoff`. The shape of
the curve lives here only.
"""

from __future__ import annotations

from datetime import timedelta

# One message per digest and target at a time, so no thundering herd to spread: deliveries back off
# deterministically (no jitter).
DELIVERY_BACKOFF_BASE = 60.0  # seconds after the first failure, doubling
DELIVERY_BACKOFF_CAP = 6 * 3600.0


def exponential_backoff(attempt: int, *, base: float, cap: float, spread: float = 1.0) -> float:
    """Seconds to wait after failure number `attempt` (1 = the first): base, 2x base, 4x base... times
    `spread`, never more than `cap`. Attempts below 1 count as the first."""
    n = max(1, attempt)
    # 2**30 times any sensible base is past every cap; clamping the exponent keeps the float finite
    return min(cap, base * (2 ** min(n - 1, 30)) * spread)


def delivery_backoff(attempts: int) -> timedelta:
    """Wait before a failed delivery's next automatic retry: 1 min, 2, 4... capped at 6 h."""
    return timedelta(
        seconds=exponential_backoff(attempts, base=DELIVERY_BACKOFF_BASE, cap=DELIVERY_BACKOFF_CAP)
    )
