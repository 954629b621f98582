"""Digests: one message of what is new for a subscription, delivered exactly once per incident version.

    selection.py   which incidents a digest takes (since its position, its filters, not yet delivered)
    views.py       what the message shows of each incident and feed (plain objects for the templates)
    compose.py     selection -> views -> templates/email/digest.{txt,html} -> RFC 5322 bytes (BuiltDigest)
    outbox.py      delivery state: enqueue, claim, attempt, record, retry with backoff, discard, status, archive
    run.py         deliver_digest: one run start to end, over the modules above

The digest *configuration* (digests.yaml) is monitor.config.digests, loaded with the rest into monitor.config.Config. The public entry points are re-exported here.
"""

from monitor.deliver.digest.compose import BuiltDigest, build_digest
from monitor.deliver.digest.outbox import (
    DigestRun,
    delivered_digests,
    digest_status,
    discard_pending,
    retry_pending,
)
from monitor.deliver.digest.run import deliver_digest

__all__ = [
    "BuiltDigest",
    "DigestRun",
    "build_digest",
    "deliver_digest",
    "delivered_digests",
    "digest_status",
    "discard_pending",
    "retry_pending",
]
