"""Notification fan-out: digests announcing 500 incidents to 5 chat targets, each failing 20% of its requests.

    .venv/bin/python bench/notify.py [--incidents 500] [--targets 5] [--per-message 10] [--fail 0.2]

Five JSON webhooks run on loopback (Apprise's json:// scheme, the transport every chat plugin shares); each
answers 500 to a random fifth of the posts (seeded). The database is filled with generated incidents
(bench/digest_site.py's generator), and an `immediate`-style digest is delivered repeatedly, `--per-message`
incidents a message (one alert per poll), until every incident has been announced; then retries run, with the
clock moved past each backoff, until no row is pending. Printed, from the same run:

- ours: wall time, messages x targets, attempts, retries, and what the receivers got (lost / duplicated: both
  must be 0, counted by the incident links in the bodies the receivers recorded);
- baseline: the same bodies posted with a bare httpx loop, retrying at once until accepted (no outbox, no
  backoff, no bookkeeping): the cost of the transport alone.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import Session, col, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digest_site import fill

from monitor.config.load import load_config, packaged_dir
from monitor.deliver.digest import deliver_digest
from monitor.deliver.notify import send_due
from monitor.store import ensure_schema, make_engine
from monitor.store.models import Incident
from monitor.store.notify_models import NotifyOutbox
from monitor.store.types import utcnow

_LINK = re.compile(r"/incident/(\d+)\.html")


class Receiver:
    def __init__(self, fail: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fail = fail
        self.got: list[str] = []
        self.refused = 0
        owner = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    failing = owner.rng.random() < owner.fail
                    if failing:
                        owner.refused += 1
                    else:
                        owner.got.append(json.loads(body).get("message", ""))
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def links(self) -> Counter[int]:
        return Counter(int(m) for body in self.got for m in _LINK.findall(body))


def _config(tmp: Path, ports: list[int], per_message: int) -> Path:
    cfg = tmp / "config"
    cfg.mkdir()
    for name in ("settings.yaml", "categories.yaml", "places.yaml"):
        (cfg / name).write_text((packaged_dir("config") / name).read_text(encoding="utf-8"), encoding="utf-8")
    (cfg / "feeds.yaml").write_text("feeds: []\n", encoding="utf-8")
    urls = "\n".join(f"        - json://127.0.0.1:{p}/hook" for p in ports)
    (cfg / "digests.yaml").write_text(
        "site_url: https://monitor.example.org/\n"
        "digests:\n"
        "  - name: alerts\n"
        "    schedule: '0 8 * * *'\n"
        "    first_lookback: 3650d\n"
        f"    max_incidents: {per_message}\n"
        "    notify:\n"
        "      timeout: 5\n"
        "      urls:\n"
        f"{urls}\n",
        encoding="utf-8",
    )
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--incidents", type=int, default=500)
    ap.add_argument("--targets", type=int, default=5)
    ap.add_argument("--per-message", type=int, default=10)
    ap.add_argument("--fail", type=float, default=0.2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmpdir:
        tmp = Path(tmpdir)
        receivers = [Receiver(args.fail, seed=i) for i in range(args.targets)]
        config = load_config(_config(tmp, [r.port for r in receivers], args.per_message))
        engine = make_engine(f"sqlite:///{tmp / 'bench.db'}")
        ensure_schema(engine)
        fill(engine, n_items=args.incidents * 2, n_incidents=args.incidents)
        with Session(engine) as s:
            ids = [int(i) for i in s.exec(select(Incident.id)) if i is not None]
        # One alert per poll: release the incidents `per_message` at a time, as polls would bring them.
        with Session(engine) as s:
            s.execute(update(Incident).values(updated_at=utcnow() + timedelta(days=3650)))
            s.commit()

        # Time spent notifying (claim, send, record) apart from building the digest messages around it.
        import monitor.deliver.digest.run as run_module

        spent = [0.0]

        def timed_send_due(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return send_due(*a, **kw)
            finally:
                spent[0] += time.perf_counter() - t

        run_module.send_due = timed_send_due  # type: ignore[assignment]
        t0 = time.perf_counter()
        now = utcnow()
        messages = 0
        for start in range(0, len(ids), args.per_message):
            now += timedelta(minutes=1)
            with Session(engine) as s:
                s.execute(
                    update(Incident)
                    .where(col(Incident.id).in_(ids[start : start + args.per_message]))
                    .values(updated_at=now - timedelta(seconds=1))
                )
                s.commit()
            run = deliver_digest(engine, config, "alerts", now=now)
            messages += run.status == "delivered"
        first_pass = time.perf_counter() - t0
        t_retry = time.perf_counter()
        rounds = 0
        while True:
            with Session(engine) as s:
                pending = s.exec(select(NotifyOutbox).where(col(NotifyOutbox.status) != "delivered")).all()
            if not pending:
                break
            rounds += 1
            now += timedelta(hours=7)  # past the longest backoff
            timed_send_due(engine, config=config, now=now)
        ours = time.perf_counter() - t0
        retry_time = time.perf_counter() - t_retry
        with Session(engine) as s:
            rows = s.exec(select(NotifyOutbox)).all()
        attempts = sum(r.attempts for r in rows)
        bodies = [r.body for r in rows if r.outbox_id]
        expected = Counter(ids)
        lost = dup = 0
        for r in receivers:
            got = r.links()
            lost += sum(1 for i in expected if got[i] == 0)
            dup += sum(n - 1 for n in got.values() if n > 1)
        refused = sum(r.refused for r in receivers)

        # Baseline: the same bodies, a bare httpx loop retrying at once until each is accepted.
        base_receivers = [Receiver(args.fail, seed=100 + i) for i in range(args.targets)]
        per_target = len(bodies) // args.targets
        t1 = time.perf_counter()
        posts = 0
        with httpx.Client(timeout=5) as client:
            for k, r in enumerate(base_receivers):
                for body in bodies[k * per_target : (k + 1) * per_target]:
                    while True:
                        posts += 1
                        resp = client.post(f"http://127.0.0.1:{r.port}/hook", json={"message": body})
                        if resp.status_code == 200:
                            break
        base = time.perf_counter() - t1

    print(
        f"{args.incidents} incidents, {messages} messages x {args.targets} targets = {len(rows)} notification rows"
    )
    print(
        f"ours:     {spent[0]:6.2f} s  notifying (claim, send through Apprise, record), {attempts} attempts, "
        f"{attempts - len(rows)} retries in {rounds} retry rounds, {refused} refused by receivers"
    )
    print(
        f"          {ours:6.2f} s  the whole run, with building the {messages} digest messages "
        f"(first pass {first_pass:.2f} s, retries {retry_time:.2f} s)"
    )
    print(f"          lost {lost}, duplicated {dup} (incident links counted at the receivers)")
    print(
        f"baseline: {base:6.2f} s  bare httpx posts of the same {len(rows)} bodies, {posts} posts "
        f"(retrying at once, no outbox)"
    )


if __name__ == "__main__":
    main()
