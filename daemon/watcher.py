"""Watching the inbox.  The watcher only enqueues.

watchdog's native observer (inotify) by default, its polling observer when
configured or when the native one cannot start.  A file is queued once it is
stable: no events for ``stability_delay`` seconds, size and mtime unchanged
between two looks, and still a regular file (links are queued so that the
runner can refuse them with a report).  Files present at start-up are queued,
and a periodic rescan catches whatever the observer missed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.archive import sha256_file
from daemon.config import Config
from daemon.grouping import checkpoint_key
from daemon.intake import is_junk, owner_of_sidecar, sidecar_suffix
from daemon.journal import Journal

log = structlog.get_logger("polishd.watcher")


def make_observer(mode: str) -> BaseObserver:
    """A started-able observer; falls back to polling when the native one cannot start."""
    if mode == "polling":
        return PollingObserver(timeout=1.0)
    return Observer()


def start_observer(mode: str, schedule: Callable[[BaseObserver], None]) -> BaseObserver:
    observer = make_observer(mode)
    try:
        schedule(observer)
        observer.start()
        return observer
    except OSError as exc:
        if mode == "polling":
            raise
        log.warning("native file watching unavailable; falling back to polling "
                    "(set [daemon].watch = \"polling\" to silence this)", error=str(exc))
        observer = PollingObserver(timeout=1.0)
        schedule(observer)
        observer.start()
        return observer


@dataclass
class _Pending:
    last_event: float
    size: int
    mtime_ns: int


def still(path: str, seen: _Pending) -> tuple[bool, _Pending | None]:
    """(whether the file is as it was when last seen, how it is now; None when it is gone)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False, None
    if not stat.S_ISREG(st.st_mode):  # a link (refused by name at intake), a FIFO or a device: said at once
        return True, seen
    current = _Pending(time.monotonic(), st.st_size, st.st_mtime_ns)
    same = st.st_size == seen.size and st.st_mtime_ns == seen.mtime_ns
    return same, current


class Settling:
    """Files seen and waiting to be still (``stability_delay`` without events, size and mtime unchanged between
    two looks): the inbox's and each watched tree's.  ``_ready(paths)`` takes those that are."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def _seen(self, path: str) -> os.stat_result | None:
        """Notes ``path`` as just changed; its stat, or None (and forgotten) when it is gone."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            with self._lock:
                self._pending.pop(path, None)
            return None
        with self._lock:
            self._pending[path] = _Pending(time.monotonic(), st.st_size, st.st_mtime_ns)
        return st

    def _settle(self, delay: float) -> None:
        now = time.monotonic()
        with self._lock:
            due = [(p, s) for p, s in self._pending.items() if now - s.last_event >= delay]
        ready_now = []
        for path, seen in due:
            ready, current = still(path, seen)
            with self._lock:
                if current is None or ready:
                    self._pending.pop(path, None)
                else:
                    self._pending[path] = current
            if ready:
                ready_now.append(Path(path))
        if ready_now:
            self._ready(ready_now)

    def _ready(self, paths: list[Path]) -> None:
        raise NotImplementedError


class _Handler(FileSystemEventHandler):
    def __init__(self, touch: Callable[[str], None]):
        self.touch = touch

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        path = getattr(event, "dest_path", "") or event.src_path
        self.touch(os.fsdecode(path))


class InboxWatcher(Settling):
    def __init__(self, config: Callable[[], Config], journal: Journal, wake: threading.Event):
        super().__init__()
        self.config = config
        self.journal = journal
        self.wake = wake
        self.inbox = config().paths.inbox
        self._stop = threading.Event()
        self._warned_orphans: set[str] = set()
        self._warned_folders: set[str] = set()
        # path → (the file's state when it could not be read, the name status shows it by)
        self._unreadables: dict[str, tuple] = {}
        self._thread: threading.Thread | None = None
        self.enqueued = 0

    # -- lifecycle ---------------------------------------------------------------------
    def schedule(self, observer: BaseObserver) -> None:
        observer.schedule(_Handler(self.touch), str(self.inbox), recursive=False)

    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.rescan()
        self._thread = threading.Thread(target=self._loop, name="stability", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    # -- events ------------------------------------------------------------------------
    def touch(self, path: str) -> None:
        p = Path(path)
        if p.parent == self.inbox and self._candidate(p.name):
            self._seen(path)

    def _candidate(self, name: str) -> bool:
        return not is_junk(name, self.config().daemon.ignore) and sidecar_suffix(name) is None

    def rescan(self) -> None:
        """Looks at every file in the inbox: catches what the observer missed, warns (once) of orphan sidecars
        and of subfolders, which are never taken: only files directly in the inbox are jobs."""
        try:
            entries = list(os.scandir(self.inbox))
        except FileNotFoundError:
            return
        names = {e.name for e in entries}
        for gone in [p for p in self._unreadables if Path(p).name not in names]:
            self._readable(Path(gone))  # no longer waiting: it left the inbox
        active = self.journal.active_sources()
        for e in entries:
            if e.is_dir(follow_symlinks=False) and not is_junk(e.name, self.config().daemon.ignore):
                if e.path not in self._warned_folders:
                    self._warned_folders.add(e.path)
                    log.warning("a folder in the inbox is not looked into; move its images up into the inbox "
                                "to have them processed", path=e.path)
                continue
            if sidecar_suffix(e.name) is not None:
                if owner_of_sidecar(Path(e.path), names) is None and e.path not in self._warned_orphans:
                    self._warned_orphans.add(e.path)
                    log.warning("sidecar without an image; left alone", path=e.path)
                continue
            if e.path in active or not self._candidate(e.name):
                continue
            with self._lock:
                known = e.path in self._pending
            if not known:
                self.touch(e.path)

    # -- the stability loop ---------------------------------------------------------------
    def _loop(self) -> None:
        last_rescan = time.monotonic()
        while not self._stop.wait(0.2):
            cfg = self.config()
            try:
                self._settle(cfg.daemon.stability_delay)
                if time.monotonic() - last_rescan >= cfg.daemon.rescan_interval:
                    last_rescan = time.monotonic()
                    self.rescan()
            except Exception:  # the watcher must outlive any one odd file
                log.exception("watcher error; carrying on")

    def _ready(self, paths: list[Path]) -> None:
        for path in paths:
            self._enqueue(path)


    def _unreadable(self, path: Path, st: os.stat_result, exc: OSError, shown: Path | None = None) -> None:
        """Said once (per state of the file), shown by ``status`` (as ``shown``, for a name that is no text),
        looked at again when it changes or at the next rescan — never polled every second."""
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        if self._unreadables.get(str(path), (None,))[0] != key:
            self._unreadables[str(path)] = (key, shown or path)
            log.warning("cannot read inbox file; it waits until it changes", path=str(shown or path),
                        error=exc.strerror or str(exc))
            self.journal.note_waiting(shown or path, f"unreadable: {exc.strerror or exc}")

    def _readable(self, path: Path) -> None:
        if (known := self._unreadables.pop(str(path), None)) is not None:
            self.journal.clear_waiting(known[1])

    def _enqueue(self, path: Path) -> None:
        try:
            st = os.lstat(path)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):  # a FIFO would block the reading
                self._unreadable(path, st, OSError("not a regular file (a FIFO, a device or a socket); not taken"))
                return
            try:
                str(path).encode("utf-8")
            except UnicodeEncodeError:  # the journal keeps names as text: one that is no text waits, said
                shown = Path(os.fsencode(path).decode("utf-8", "backslashreplace"))
                self._unreadable(path, st, OSError("its name is not valid UTF-8; rename it to be taken"), shown)
                return
            if stat.S_ISLNK(st.st_mode):
                # Never follow it: the runner refuses it and moves the link itself to failed/.
                digest = hashlib.sha256(b"symlink\0" + os.fsencode(os.readlink(path))).hexdigest()
            else:
                digest = sha256_file(path)
                after = os.lstat(path)
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                    self.touch(str(path))  # still being written after all
                    return
        except FileNotFoundError:
            self._readable(path)
            return
        except OSError as exc:
            self._unreadable(path, st, exc)
            return
        self._readable(path)
        key = "" if stat.S_ISLNK(st.st_mode) else checkpoint_key(path)
        job = self.journal.enqueue(path, digest, st.st_size, st.st_mtime, key)
        if job is not None:
            self.enqueued += 1
            log.info("queued", path=str(path), job=job.id, sha256=digest[:12], checkpoint=key or None)
            self.wake.set()
