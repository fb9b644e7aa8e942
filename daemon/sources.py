"""Watched trees: the folders where generations land ([[daemon.source]]), beside the inbox.

A1111, Forge, Fooocus and SwarmUI write into date folders (``outputs/txt2img-images/2026-12-04/``), ComfyUI into
``output/`` with its ``ComfyUI_temp_*`` previews beside the real files.  Each source is walked at start and at
every rescan — a ``stat`` per file, compared with the journal's ledger, so a tree of 100,000 files the ledger
knows is looked over in seconds and nothing it knows is read again — and its new files are seen by inotify as
they land.  A file is queued once it is stable (as in the inbox) and then once by its bytes: the same bytes
renamed or copied inside the tree are not taken again; a file whose bytes change is taken again, a new
version archived beside the first.

``mode = "leave"`` (the default): the file stays as it is — never moved, renamed, rewritten or deleted, its
mtime kept.  ``mode = "move"``: taken away like the inbox's files.  Sidecars (``<name>.toml``, ``.mask.png``…)
work in both.

When inotify cannot watch a tree (its watch limit, ``fs.inotify.max_user_watches``, is reached), that is said
once with the sysctl to raise, and the tree is polled every ``[daemon].source_poll`` seconds instead: nothing
is lost, only seen later.  A source folder that disappears (an unmounted share) pauses that source — said in
the log and by ``status`` — and it resumes when the folder is back; its files are not taken for deleted.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.observers import Observer

from daemon.archive import sha256_file
from daemon.config import Config, SourceConfig
from daemon.grouping import checkpoint_key
from daemon.intake import sidecar_suffix
from daemon.journal import Journal
from daemon.watcher import Settling, _Handler, _Pending

log = structlog.get_logger("polishd.sources")

WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
BATCH = 500  # stable files taken in one transaction


def matches(name: str, source: SourceConfig) -> bool:
    """An image file of this source by its name: one of ``include``, none of ``exclude``, not a sidecar."""
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, p.lower()) for p in source.include) \
        and not any(fnmatch.fnmatchcase(name, p) for p in source.exclude) and sidecar_suffix(name) is None


def walk(source: SourceConfig):
    """(path, stat) of every image file of the tree, down to ``depth`` levels (``recursive = false``: the
    folder itself only); links are not followed, excluded folders (hidden ones, by default) not entered."""
    depth = source.depth if source.recursive else 0
    stack = [(source.path, 0)]
    while stack:
        folder, level = stack.pop()
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        if level < depth and not any(fnmatch.fnmatchcase(e.name, p) for p in source.exclude):
                            stack.append((e.path, level + 1))
                    elif e.is_file(follow_symlinks=False) and matches(e.name, source):
                        yield e.path, e.stat(follow_symlinks=False)
                except OSError:  # gone between the listing and the look, or unreadable: the next walk sees
                    continue


class SourceWatcher(Settling):
    def __init__(self, source: SourceConfig, config: Callable[[], Config], journal: Journal,
                 wake: threading.Event, observer_factory: Callable[[], object] = Observer):
        super().__init__()
        self.source = source
        self.label = source.label
        self.root = Path(source.path)
        self.config = config
        self.journal = journal
        self.wake = wake
        self.observer_factory = observer_factory
        self.observer = None
        self.state = "starting"   # watching | polling | unreachable
        self.known: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._limit_said = False
        self.taken = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.known = self.journal.ledger(self.label) if self.source.mode == "leave" else {}
        t0 = time.monotonic()
        self._look()
        log.info("source watched", source=self.label, path=str(self.root), mode=self.source.mode, state=self.state,
                 known=len(self.known), new=len(self._pending), seconds=round(time.monotonic() - t0, 2))
        if self._stop.is_set():  # stopped while its first walk ran (the daemon starts it in a thread)
            self._unwatch()
            return
        self._thread = threading.Thread(target=self._loop, name=f"source-{self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._unwatch()
        if self._thread:
            self._thread.join(timeout=5)

    # -- inotify -----------------------------------------------------------------------
    def _watch(self) -> None:
        observer = self.observer_factory()
        try:
            observer.schedule(_Handler(self.touch), str(self.root), recursive=self.source.recursive)
            observer.start()
        except OSError as exc:
            self._polling(exc)
            return
        self.observer = observer
        self._say("watching")

    def _say(self, state: str, why: str = "") -> None:
        """The source's state, for the log's readers now and for ``status`` (a journal note) later: the note
        first, so that whoever sees the new state finds its note written."""
        self.journal.set_note(f"source:{self.label}", state + (f": {why}" if why else ""))
        self.state = state

    def _polling(self, exc: OSError) -> None:
        self._say("polling", "inotify cannot watch it" + (" (its watch limit is reached)"
                                                           if exc.errno in (errno.ENOSPC, errno.EMFILE) else ""))
        if self._limit_said:
            return
        self._limit_said = True
        if exc.errno in (errno.ENOSPC, errno.EMFILE):
            limit = WATCHES.read_text().strip() if WATCHES.exists() else "?"
            log.warning("the inotify watch limit is reached: this source is polled instead (new files are seen "
                        "within [daemon].source_poll seconds); raise it with `sysctl fs.inotify.max_user_watches="
                        "524288` (and in /etc/sysctl.d/ to keep it)", source=self.label,
                        max_user_watches=limit, error=str(exc))
        else:
            log.warning("this source cannot be watched by inotify; it is polled instead", source=self.label,
                        error=str(exc))

    def _unwatch(self) -> None:
        observer, self.observer = self.observer, None
        if observer is not None:
            try:
                observer.stop()
                observer.join(timeout=5)
            except Exception as exc:  # a watch on a folder that is gone may not stop cleanly
                log.debug("source observer not stopped cleanly", source=self.label, error=str(exc))

    # -- looking -----------------------------------------------------------------------
    def _look(self) -> None:
        """The tree walked: whatever is new or changed goes to the stability check; the root's own state
        (gone, back) decides whether the source is paused."""
        if not self.root.is_dir():
            if self.state != "unreachable":
                self._unwatch()
                self._say("unreachable", f"{self.root} is not there; paused until it is back")
                log.warning("a source folder is not there (an unmounted share?): this source is paused until it "
                            "is back", source=self.label, path=str(self.root))
            return
        if self.state in ("starting", "unreachable"):
            if self.state == "unreachable":
                log.info("a source folder is back: watching it again", source=self.label, path=str(self.root))
            self._watch()
        active = self.journal.active_sources() if self.source.mode == "move" else set()
        for path, st in walk(self.source):
            if self.known.get(path) == (st.st_size, st.st_mtime_ns) or path in active:
                continue  # taken as it is: not read again
            with self._lock:
                if path not in self._pending:
                    self._pending[path] = _Pending(time.monotonic(), st.st_size, st.st_mtime_ns)

    def touch(self, path: str) -> None:
        if not matches(Path(path).name, self.source):
            return
        st = self._seen(path)
        if st is not None and (not stat.S_ISREG(st.st_mode) or self.known.get(path) == (st.st_size, st.st_mtime_ns)):
            with self._lock:  # a link or a FIFO is no source file; one taken as it is, is not read again
                self._pending.pop(path, None)

    def _loop(self) -> None:
        last_look = time.monotonic()
        while not self._stop.wait(0.2):
            cfg = self.config()
            try:
                self._settle(cfg.daemon.stability_delay)
                every = cfg.daemon.rescan_interval if self.state == "watching" else cfg.daemon.source_poll
                if time.monotonic() - last_look >= every:
                    last_look = time.monotonic()
                    self._look()
            except Exception:  # a source must outlive any one odd file
                log.exception("source watcher error; carrying on", source=self.label)

    def _ready(self, paths: list[Path]) -> None:
        """Hashes the stable files and takes them, a few hundred a transaction (a first look at a big tree is
        one synced write a batch, not one a file)."""
        for start in range(0, len(paths), BATCH):
            files = [f for f in map(self._read, paths[start:start + BATCH]) if f is not None]
            if self._stop.is_set() or not files:
                continue
            jobs = self.journal.take_watched(files, self.label, move=self.source.mode == "move")
            if self.source.mode == "leave":
                self.known.update((str(p), (st.st_size, st.st_mtime_ns)) for p, _, st, _ in files)
            self.taken += len(jobs)
            if len(jobs) > 20:  # a big first look: one line a batch
                log.info("queued", source=self.label, files=len(jobs), first_job=jobs[0].id, last_job=jobs[-1].id)
            else:
                for job in jobs:
                    log.info("queued", path=job.source, job=job.id, sha256=job.sha256[:12], source=self.label)
            if jobs:
                self.wake.set()

    def _read(self, path: Path) -> tuple[Path, str, os.stat_result, str] | None:
        """(path, sha256, stat, checkpoint) of a file still as it was seen; None when it cannot be read now or
        changed meanwhile (then it is looked at again)."""
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                return None
            str(path).encode("utf-8")
            digest = sha256_file(path)
            after = os.lstat(path)
        except (OSError, UnicodeEncodeError) as exc:
            log.warning("a source file cannot be read; it is looked at again when it changes", source=self.label,
                        path=os.fsencode(path).decode("utf-8", "backslashreplace"), error=str(exc))
            return None
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.touch(str(path))  # still being written after all
            return None
        return path, digest, st, checkpoint_key(path)
