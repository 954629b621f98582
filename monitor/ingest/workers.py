"""The poll's worker processes: parsers, and the one process that holds the language detector.

This process's Python runs on one core, and the poll's store thread, its event loop and its lease renewals all
share it. Parsing (feedparser, sanitising) and language detection are CPU work on plain values, so they run in
worker processes: parsing in a pool of up to four, detection in one process of its own. lingua holds the GIL
while it works and its models take about 260 MB, so one process holds them (not every parse worker) and this
one never loads them during a poll. That process also makes each new item's search-index document (the
morphology's work), since it knows the language the item will be stored in.

On one core, or with MONITOR_PARSE_WORKERS=0, there are no workers: the same functions run on a thread here.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any

from monitor.ingest.language import LanguageDecision, decide_languages, warm_up
from monitor.ingest.parse import ParseOutcome, parse_job, worker_init
from monitor.search.text import Document, document

__all__ = [
    "decide_and_prepare",
    "decide_and_prepare_off_loop",
    "parse_off_loop",
    "reset_workers",
    "warm_workers",
    "worker_count",
]

_PARSE: ProcessPoolExecutor | None = None
_LANGUAGE: ProcessPoolExecutor | None = None
_WARM = False  # both pools started and answered once; every poll's enricher asks again


def worker_count() -> int:
    """How many parse workers to start; 0: no worker processes (one core, or MONITOR_PARSE_WORKERS=0)."""
    wanted = os.environ.get("MONITOR_PARSE_WORKERS")
    if wanted and wanted.isdigit():
        return int(wanted)
    cores = min(4, os.cpu_count() or 1)
    return cores if cores >= 2 else 0


def _start(workers: int, initializer: Any) -> ProcessPoolExecutor:
    # forkserver, because forking a process with threads (ours, the DB pool's) can copy a held lock into the child.
    ctx = multiprocessing.get_context("forkserver")
    # The fork server imports only what the workers run, not this process's __main__ (the whole CLI and
    # service), which every worker would otherwise carry.
    ctx.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=initializer, initargs=(os.getpid(),)
    )


def _language_worker_init(pid: int) -> None:
    worker_init(pid)
    warm_up()
    document("проверка", "перевірка", "uk")  # load the morphology dictionaries now too
    document("проверка", "", "ru")


def decide_and_prepare(
    items: Sequence[tuple[str, str, str | None, str | None]],
) -> list[tuple[LanguageDecision, Document]]:
    """For each (title, text, declared language, language otherwise): the language decision, and the search
    index's document of title and text in the language that will be stored (the decided one, else the last)."""
    decisions = decide_languages([(title, text, declared) for title, text, declared, _ in items])
    return [
        (decision, document(title, text, decision.language or otherwise))
        for decision, (title, text, _, otherwise) in zip(decisions, items, strict=True)
    ]


def _parse_pool() -> ProcessPoolExecutor | None:
    global _PARSE
    if worker_count() < 1:
        return None
    if _PARSE is None:
        _PARSE = _start(worker_count(), worker_init)
    return _PARSE


def _language_pool() -> ProcessPoolExecutor | None:
    global _LANGUAGE
    if worker_count() < 1:
        return None
    if _LANGUAGE is None:
        _LANGUAGE = _start(1, _language_worker_init)
    return _LANGUAGE


def warm_workers() -> None:
    """Start the workers now, the language models loaded: a service does this before it claims feeds, so that
    no feed's lease runs out while the first poll waits for processes to start and import their libraries.
    Without workers the models load here."""
    global _WARM
    if _WARM:
        return
    parse, language = _parse_pool(), _language_pool()
    if parse is None or language is None:
        warm_up()
        return
    now = datetime.now(UTC)
    # As many jobs at once as there are workers: the pool starts one process for each.
    jobs: list[Future[Any]] = [
        parse.submit(parse_job, b"", "http://warm-up.invalid/", {}, now, None, 1)
        for _ in range(worker_count())
    ]
    jobs.append(language.submit(decide_and_prepare, []))
    for job in jobs:
        job.result(timeout=120)
    _WARM = True


def reset_workers() -> None:
    global _PARSE, _LANGUAGE, _WARM
    pools, _PARSE, _LANGUAGE, _WARM = (_PARSE, _LANGUAGE), None, None, False
    for pool in pools:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def worker_pids(*, language_only: bool = False) -> list[int]:
    """The worker processes running now (for the bench's memory figure and the tests)."""
    pools = (_LANGUAGE,) if language_only else (_PARSE, _LANGUAGE)
    return [pid for pool in pools if pool is not None for pid in pool._processes or {}]


atexit.register(reset_workers)


async def _off_loop(pool: ProcessPoolExecutor | None, fallback: Executor | None, fn: Any, *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    if pool is not None:
        try:
            return await loop.run_in_executor(pool, fn, *args)
        except BrokenProcessPool:  # a worker died (OOM killer...): do it here and start afresh next time
            reset_workers()
    return await loop.run_in_executor(fallback, fn, *args)


async def parse_off_loop(fallback: Executor, *args: Any) -> ParseOutcome:
    """`parse_job(*args)` in a parse worker, or on `fallback` (the store thread) without workers."""
    # Even a small document goes to a worker: for ten entries, shipping it there and back costs this
    # process about 0.2 ms of CPU where parsing costs 7 ms.
    result: ParseOutcome = await _off_loop(_parse_pool(), fallback, parse_job, *args)
    return result


async def decide_and_prepare_off_loop(
    items: Sequence[tuple[str, str, str | None, str | None]],
) -> list[tuple[LanguageDecision, Document]]:
    """`decide_and_prepare(items)` in the language worker, or on a thread here without workers."""
    result: list[tuple[LanguageDecision, Document]] = await _off_loop(
        _language_pool(), None, decide_and_prepare, list(items)
    )
    return result
