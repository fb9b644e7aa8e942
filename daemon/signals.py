"""SIGTERM/SIGINT stop the daemon once; SIGHUP asks for a config reload.

The handlers only set flags and note which signal came: they never log.  structlog
writes under a non-reentrant lock, and a signal that lands while the main thread
holds it would deadlock a handler that logged.  The main loop logs what arrived.
"""

from __future__ import annotations

import signal
import threading


class Signals:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.wake = threading.Event()  # anything the main loop should look at
        self.received: list[str] = []  # names of stop signals, in order, for the main loop to log

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, _frame) -> None:
        self.received.append(signal.Signals(signum).name)
        self.stop.set()
        self.wake.set()

    def _on_hup(self, signum: int, _frame) -> None:
        self.reload.set()
        self.wake.set()
