"""``polishd run``: the long-running daemon.

Main thread: signals, config reloads, systemd notifications, journal
heartbeats.  Worker threads: claim a job, run it, repeat.  The watcher only
enqueues; the journal is the only hand-over between them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from daemon import config as config_mod
from daemon import talk, webhooks
from daemon.config import Config, ConfigError
from daemon.coordinator import Dispatcher
from daemon.grouping import Grouping, kept_models
from daemon.journal import Journal
from daemon.notify import Notifier, watchdog_interval
from daemon.ops import journal_path
from daemon.runner import JobStatus, Outcome, Runner, settle_removals
from daemon.signals import Signals
from daemon.sources import SourceWatcher
from daemon.watcher import InboxWatcher, start_observer
from stages.base import Stage

log = structlog.get_logger("polishd.daemon")

HEARTBEAT_EVERY = 10.0
JOURNAL_CHECK_EVERY = 2.0  # seconds between looks at the journal's file (deleted or replaced: the daemon stops)
STATUS_EVERY = 5.0
PAUSE_FIRST, PAUSE_LONGEST = 2.0, 60.0  # seconds before the next try after a full disk, doubling


class AlreadyRunning(RuntimeError):
    pass


class Pause:
    """Intake paused because a disk is full: workers take no job until the backoff has passed, then try one.
    A job that gets through (space is back) ends the pause."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.where: str | None = None
        self._delay = 0.0
        self._until = 0.0

    def hit(self, where: str) -> tuple[bool, float]:
        """(whether this starts a pause, seconds until the next try)."""
        with self._lock:
            first = self.where is None
            self.where = where
            self._delay = PAUSE_FIRST if first else min(PAUSE_LONGEST, self._delay * 2)
            self._until = time.monotonic() + self._delay
            return first, self._delay

    def clear(self) -> bool:
        with self._lock:
            was, self.where, self._delay = self.where is not None, None, 0.0
            return was

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - time.monotonic()) if self.where else 0.0


def acquire_lock(state: Path):
    """One daemon per state folder; a second one exits with a clear message."""
    state.mkdir(parents=True, exist_ok=True)
    f = open(state / "polishd.lock", "a+")  # noqa: SIM115 (held open, and so locked, for the daemon's life)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        raise AlreadyRunning(f"another polishd is running on {state} (pid {f.read().strip() or '?'})") from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def lock_inbox(inbox: Path) -> int | None:
    """One daemon per inbox too: two with different state folders on one inbox would each take its files
    (the inbox folder itself is locked, so nothing is written into it).  The descriptor to close at the end,
    or None where the file system locks no folder (said at debug level: the state lock still holds)."""
    try:
        fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        log.debug("inbox not locked", inbox=str(inbox), error=str(exc))
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"another polishd is watching {inbox} (with another [paths].state); one inbox, one "
                             "daemon: stop the other, or give each its own inbox") from None
    except OSError as exc:
        os.close(fd)
        log.debug("inbox not locked", inbox=str(inbox), error=str(exc))
        return None
    return fd


class _ConfigHandler(FileSystemEventHandler):
    def __init__(self, path: Path, signals: Signals):
        self.path, self.signals = path.resolve(), signals

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Only writes count: reading the file on reload must not trigger another reload.
        if event.event_type not in ("created", "modified", "moved", "closed"):
            return
        for p in (event.src_path, getattr(event, "dest_path", "")):
            if p and Path(os.fsdecode(p)).resolve() == self.path:
                self.signals.reload.set()
                self.signals.wake.set()


def _unload_idle_models(cfg: Config) -> None:
    """A generative model left idle for [inpaint].idle_unload seconds gives its memory back."""
    engine = sys.modules.get("stages.diffusion.engine")  # never import diffusers just to check
    if engine is not None:
        engine.unload_if_idle(cfg.inpaint.idle_unload)


class Daemon:
    def __init__(self, config_path: Path, cfg: Config, stages: list[Stage], signals: Signals,
                 notifier: Notifier | None = None):
        self.config_path = config_path
        self.cfg = cfg
        self._config_broken = False  # the last reload failed: the next good one is said even if unchanged
        self.stages = stages
        self.signals = signals
        self.notifier = notifier or Notifier()
        self.work = threading.Event()  # wakes idle workers
        self.progress: dict[str, float] = {}
        self._signals_logged = 0
        self.pause = Pause()
        self.grouping = Grouping(cfg.daemon.group_wait, kept_models(cfg.inpaint.max_loaded))
        self.exit_code = 0

    # The runner and watcher read the config through this, so a reload applies to the next job.
    def current(self) -> Config:
        return self.cfg

    def run(self) -> int:
        cfg = self.cfg
        for p in (cfg.paths.inbox, cfg.paths.archive, cfg.paths.failed, cfg.paths.state, cfg.paths.models):
            p.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(cfg.paths.state)
        try:
            inbox_lock = lock_inbox(cfg.paths.inbox)
        except AlreadyRunning:
            lock.close()
            raise
        self.journal = Journal(journal_path(cfg))
        self.note("paused", None)  # an earlier run's pause is not this one's
        self.note("broker", None)
        requeued, abandoned = self.journal.recover(keep_dispatched=cfg.cluster.enabled)
        settle_removals(cfg.paths.inbox)  # a removal a killed process left half done
        if requeued or abandoned:
            log.warning("recovered jobs left running by an earlier process",
                        requeued=[j.id for j in requeued], abandoned=[j.id for j in abandoned])
        self.runner = Runner(self.journal, self.current, self.stages, self.signals.stop)
        self.runner.beat = self._beat
        self.talk = talk.start(cfg.log.progress_every)
        self.runner.progress = self.talk
        self.dispatcher = None
        if cfg.cluster.enabled:

            self.dispatcher = Dispatcher(self)
        watcher = InboxWatcher(self.current, self.journal, self.work)

        def schedule(observer):
            watcher.schedule(observer)
            observer.schedule(_ConfigHandler(self.config_path, self.signals), str(self.config_path.parent))

        observer = start_observer(cfg.daemon.watch, schedule)
        watcher.start()
        sources = [SourceWatcher(s, self.current, self.journal, self.work) for s in cfg.daemon.source]
        for source in sources:  # a big tree's first walk takes seconds: the inbox's jobs do not wait for it
            threading.Thread(target=source.start, name=f"source-start-{source.label}", daemon=True).start()
        webhooks.start(self.current, self.journal, self.signals.stop)
        if self.dispatcher is not None:  # the jobs run on `polishd worker` processes
            workers = [threading.Thread(target=self._dispatch, name="dispatcher", daemon=True)]
        else:
            workers = [threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
                       for i in range(cfg.daemon.workers)]
        for w in workers:
            w.start()
        cluster = {"broker": config_mod.redact(cfg.cluster.broker), "queue": cfg.cluster.queue} \
            if self.dispatcher is not None else {}
        log.info("watching", inbox=str(cfg.paths.inbox), archive=str(cfg.paths.archive),
                 workers=len(workers) if self.dispatcher is None else "cluster", watch=type(observer).__name__,
                 config=str(self.config_path), **cluster)
        self.notifier.ready(self._status())
        try:
            self._main_loop(workers)
        finally:
            self._log_signals()
            self.notifier.stopping()
            observer.stop()
            watcher.stop()
            for source in sources:
                source.stop()
            self.work.set()
            deadline = time.monotonic() + self.cfg.daemon.stop_timeout
            for w in workers:
                while w.is_alive() and time.monotonic() < deadline:
                    w.join(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                    self._log_signals()
            stuck = [w.name for w in workers if w.is_alive()]
            if stuck:
                log.warning("stop_timeout reached; the unfinished job is taken up again at the next start",
                            workers=stuck, jobs=sorted(self.runner.active))
            observer.join(timeout=5)
            for stage in self.stages:
                stage.close()
            self._log_signals()
            self.note("paused", None)
            talk.stop(self.talk)
            log.info("stopped")
            if inbox_lock is not None:
                os.close(inbox_lock)
            lock.close()
        return self.exit_code

    def _main_loop(self, workers: list[threading.Thread]) -> None:
        ping = watchdog_interval()
        tick = min(1.0, ping) if ping else 1.0
        last_heartbeat = last_status = last_check = 0.0
        while not self.signals.stop.is_set():
            self.signals.wake.wait(tick)
            self.signals.wake.clear()
            if self.signals.stop.is_set():
                break
            if self.signals.reload.is_set():
                self.signals.reload.clear()
                self._reload()
            self.talk.every = self.cfg.log.progress_every  # a reload may change it
            self.talk.tick()
            now = time.monotonic()
            if now - last_check >= JOURNAL_CHECK_EVERY:
                last_check = now
                if (what := self.journal.intact()) is not None:  # its history is gone: going on would redo work
                    log.error("the journal was deleted or replaced while polishd ran; stopping. Restore it from "
                              "a backup, or start again to begin a new one (every image then counts as new)",
                              journal=str(self.journal.path), what=what)
                    self.exit_code = 1
                    self.signals.stop.set()
                    break
            if now - last_heartbeat >= HEARTBEAT_EVERY:
                last_heartbeat = now
                self.journal.heartbeat(sorted(self.runner.active) if self.dispatcher is None
                                       else sorted(t.job_id for t in list(self.dispatcher.out.values())))
            if now - last_status >= STATUS_EVERY:
                last_status = now
                self.notifier.status(self._status())
                _unload_idle_models(self.cfg)
            if ping and self._workers_healthy(workers, ping * 2):
                self.notifier.watchdog()

    def _log_signals(self) -> None:
        """Logs the stop signals the handler noted (it may not log itself: see daemon/signals.py)."""
        while self._signals_logged < len(self.signals.received):
            name = self.signals.received[self._signals_logged]
            if self._signals_logged == 0:
                log.info("stopping: no new jobs; the current stage finishes or is put back", signal=name)
            else:
                log.warning("already stopping; signal ignored", signal=name)
            self._signals_logged += 1

    def _workers_healthy(self, workers: list[threading.Thread], limit: float) -> bool:
        """A worker is healthy if it is alive and made progress (a loop turn or a safe point) lately."""
        now = time.monotonic()
        return all(w.is_alive() and now - self.progress.get(w.name, now) < limit for w in workers)

    def _beat(self) -> None:
        self.progress[threading.current_thread().name] = time.monotonic()

    def beat_dispatcher(self) -> None:
        self._beat()

    def _dispatch(self) -> None:
        while not self.signals.stop.is_set():
            try:
                self.dispatcher.run()
            except Exception:  # a bug, not the broker: logged, and the dispatcher starts again from the journal
                log.exception("dispatcher error; following up the tasks from the journal again")
                self.dispatcher.out.clear()
                self.signals.stop.wait(5.0)
        self.journal.close()

    def _worker(self) -> None:
        while not self.signals.stop.is_set():
            self._beat()
            if (wait := self.pause.remaining()) > 0:
                self.signals.stop.wait(min(wait, 1.0))
                continue
            cfg = self.current()
            self.grouping.resize(cfg.daemon.group_wait, kept_models(cfg.inpaint.max_loaded))
            job = self.journal.claim(grouping=self.grouping if cfg.inpaint.model_from_image else None)
            if job is None:
                self.work.wait(0.5)
                self.work.clear()
                continue
            try:
                outcome = self.runner.run_job(job)
            except Exception as exc:  # a bug, not bad input: the job goes back, the worker lives on
                log.exception("worker error; job put back in the queue", job=job.id)
                self.journal.requeue(job.id, error=f"{type(exc).__name__}: {exc}", stage="runner")
                self.signals.stop.wait(5.0)  # whatever broke gets a moment before the next try
            else:
                self.after(outcome)
            self.notifier.status(self._status())
        self.journal.close()

    def after(self, outcome: Outcome) -> None:
        """A full or read-only disk pauses intake (said once); the next job that gets through ends the pause."""
        if outcome.status == JobStatus.DISK_FULL:
            first, delay = self.pause.hit(outcome.error or "disk full")
            if first:
                log.warning("nothing can be written: intake paused; trying again with a backoff",
                            where=outcome.error, next_try_s=delay)
                self.note("paused", outcome.error)
            return
        if outcome.status in (JobStatus.DONE, JobStatus.DUPLICATE, JobStatus.FAILED) and self.pause.clear():
            log.info("writing works again: intake resumed")
            self.note("paused", None)

    def note(self, key: str, value: str | None) -> None:
        try:
            self.journal.set_note(key, value)
        except sqlite3.Error as exc:  # the journal's disk may be the full one: the log has said it already
            log.debug("could not note the pause in the journal", error=str(exc))

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as exc:
            log.error("config reload failed; keeping the last good config", error=str(exc))
            self._config_broken = True
            self.notifier.ready(self._status())
            return
        if new.sha256 == self.cfg.sha256 and self._config_broken:  # fixed back to what is in force: say so
            log.info("config reloaded", sha256=new.sha256[:12], note="the file is valid again; nothing changed")
        self._config_broken = False
        if new.sha256 != self.cfg.sha256:
            if new.paths != self.cfg.paths or new.daemon.workers != self.cfg.daemon.workers \
                    or new.daemon.watch != self.cfg.daemon.watch or new.cluster != self.cfg.cluster \
                    or new.daemon.source != self.cfg.daemon.source:
                log.warning("[paths], [daemon].workers, [daemon].watch, [[daemon.source]] and [cluster] apply at "
                            "the next restart")
                new = dataclasses.replace(new, paths=self.cfg.paths, cluster=self.cfg.cluster)
            self.cfg = new
            log.info("config reloaded", sha256=new.sha256[:12])
        self.notifier.ready(self._status())

    def _status(self) -> str:
        c = self.journal.counts()
        paused = f"paused: {self.pause.where}; " if self.pause.where else ""
        if self.dispatcher is not None:
            paused += f"workers {len(self.dispatcher.workers)}; "
        return (f"{paused}queued {c['queued']}, running {c['running']}, done {c['done']}, failed {c['failed']}, "
                f"duplicates {c['duplicate']}")
