"""SIGTERM/SIGINT stop the daemon once; SIGHUP asks for a config reload."""

from __future__ import annotations

import signal
import threading

import structlog

log = structlog.get_logger("polishd.signals")


class Signals:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.wake = threading.Event()  # anything the main loop should look at

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            log.warning("already stopping; signal ignored", signal=name)
            return
        log.info("stopping: no new jobs; the current stage finishes or is put back", signal=name)
        self.stop.set()
        self.wake.set()

    def _on_hup(self, signum: int, _frame) -> None:
        self.reload.set()
        self.wake.set()
