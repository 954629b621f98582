"""Signals the service answers: SIGTERM and SIGINT stop it after the work in progress (a second SIGINT exits
at once: the user does not want to wait), SIGHUP reloads the configuration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator

log = logging.getLogger("monitor.service")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def handled(
    loop: asyncio.AbstractEventLoop, *, stop: Callable[[str], None], reload: Callable[[str], None]
) -> Iterator[None]:
    """While inside: a stop signal calls stop(name), SIGHUP calls reload("SIGHUP")."""
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig.name)
    loop.add_signal_handler(signal.SIGHUP, reload, "SIGHUP")
    try:
        yield
    finally:
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def exit_now_on_second_interrupt(reason: str) -> None:
    """Called for a stop request while already stopping: a second Ctrl-C leaves without waiting (the database
    side is transactional; unfinished feeds are released by their lease)."""
    if reason == "SIGINT":
        log.error("second %s: exiting now", reason)
        logging.shutdown()
        os._exit(130)
