"""What a running job says between "job started" and "job finished".

Each stage that ends says so with its time ("stage completed", or "stage skipped" with the reason,
once) — that is the runner's.  This module says how far the running stage has come:

- on a terminal, a live line under the log: each running image, its stage, how far (tiles, steps)
  and for how long, redrawn at most five times a second and once a second by the daemon's clock;
- in JSON lines (journald, a file), a ``progress`` event per running job at most every
  ``[log].progress_every`` seconds (0: none), also for a stage that reports nothing on its way.

The runner calls a ``Talk`` as its ``progress``: ``(stage, done, total, unit)`` as a stage starts
(0, 0, ""), at its safe points, and with stage ``""`` when the job is over.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from daemon import logs

log = structlog.get_logger("polishd")

LIVE_EVERY = 0.2  # seconds between two redraws of the live line, at least


@dataclass
class _Running:
    image: str
    job: object
    stage: str
    since: float          # the stage's start
    said: float           # the last progress event
    done: int = 0
    total: int = 0
    unit: str = ""

    def line(self, now: float) -> str:
        far = f" {self.done}/{self.total} {self.unit}" if self.total else ""
        return f"{self.image} · {self.stage}{far} · {now - self.since:.0f} s"


class Talk:
    """``live``: a tqdm bar drawn as one line of text (the terminal), or None (JSON events instead)."""

    def __init__(self, every: float, live=None, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self.live = live
        self.clock = clock
        self._running: dict[int, _Running] = {}  # by the thread that runs the job
        self._lock = threading.Lock()
        self._drawn = 0.0

    def __call__(self, stage: str, done: int, total: int, unit: str) -> None:
        key, now = threading.get_ident(), self.clock()
        with self._lock:
            if not stage:
                self._running.pop(key, None)
            else:
                r = self._running.get(key)
                ctx = structlog.contextvars.get_contextvars()
                image = str(ctx.get("image", ""))
                if r is None or r.stage != stage or r.image != image:
                    r = self._running[key] = _Running(image, ctx.get("job"), stage, since=now, said=now)
                r.done, r.total, r.unit = done, total, unit
        self._say(now, force=not stage or (done == 0 and total == 0))

    def tick(self) -> None:
        """From the daemon's clock: the live line's seconds, and the events of stages that report nothing."""
        self._say(self.clock(), force=True)

    def _say(self, now: float, force: bool) -> None:
        with self._lock:
            running = list(self._running.values())
            if self.live is not None:
                if force or now - self._drawn >= LIVE_EVERY:
                    self._drawn = now
                    self.live.set_description_str("  ".join(r.line(now) for r in running), refresh=True)
                return
            due = [r for r in running if self.every and now - r.said >= self.every]
            for r in due:
                r.said = now
        for r in due:
            log.info("progress", image=r.image, job=r.job, stage=r.stage, done=r.done, total=r.total,
                     unit=r.unit, stage_s=round(now - r.since, 1))


def start(every: float) -> Talk:
    """The Talk for this process: a live line on a terminal, progress events in JSON lines."""
    if not logs.live_line_fits():
        return Talk(every)
    from tqdm import tqdm

    bar = tqdm(total=None, bar_format="{desc}", file=sys.stderr, dynamic_ncols=True, leave=False)
    logs.print_to(logs.AboveTheBar(bar, sys.stderr))  # log lines above the live line
    return Talk(every, bar)


def stop(talk: Talk) -> None:
    if talk.live is not None:
        talk.live.close()
        logs.print_to(sys.stderr)
