"""The durable job table: SQLite in WAL mode with ``synchronous=FULL``.

A job moves queued → running → done | failed; a second copy of bytes already
finished becomes ``duplicate``.  ``running`` rows carry an owner (``pid@host``)
and a heartbeat, so that a restart after a crash puts them back in the queue.
Each thread opens its own connection; SQLite serialises the writers.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from daemon.grouping import Grouping

STATES = ("queued", "running", "done", "failed", "duplicate")
LEASE_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    source     TEXT NOT NULL,
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    mtime      REAL NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('queued','running','done','failed','duplicate')),
    origin     TEXT NOT NULL DEFAULT 'inbox' CHECK (origin IN ('inbox','process')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    owner      TEXT,
    heartbeat  REAL,
    created    REAL NOT NULL,
    started    REAL,
    finished   REAL,
    archive    TEXT,
    dup_of     INTEGER REFERENCES jobs(id),
    last_error TEXT,
    error_stage TEXT,
    task       TEXT,
    sent       REAL,
    worker     TEXT,
    review     TEXT,
    checkpoint TEXT,
    attention  TEXT,
    timings    TEXT,
    watched    TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs(sha256);
CREATE INDEX IF NOT EXISTS jobs_source ON jobs(source, state);
CREATE INDEX IF NOT EXISTS jobs_task ON jobs(task);
CREATE INDEX IF NOT EXISTS jobs_gallery ON jobs(state, review, finished);
CREATE INDEX IF NOT EXISTS jobs_archive ON jobs(archive);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished, id);
-- What each watched tree ([[daemon.source]], mode "leave") has given: a file is taken once, by its bytes;
-- a file whose size and mtime are as recorded is not read again.
CREATE TABLE IF NOT EXISTS ledger (
    path       TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    job        INTEGER,
    seen       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_bytes ON ledger(source, sha256);
-- Webhook calls to make ([[notify.webhook]]), written with what they tell of, sent by `polishd run`; each has an
-- id its receiver can deduplicate on, and stays until a 2xx answer takes it (or it is given up).
CREATE TABLE IF NOT EXISTS outbox (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    event      TEXT NOT NULL,
    body       TEXT NOT NULL,
    created    REAL NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_try   REAL NOT NULL,
    delivered  REAL,
    gave_up    REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(url, delivered, gave_up, next_try);
-- Reviewers' decisions (polishd serve): per image (variant NULL) or per variant, newest last.
CREATE TABLE IF NOT EXISTS reviews (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    archive    TEXT NOT NULL,
    variant    TEXT,
    decision   TEXT NOT NULL CHECK (decision IN ('approve','reject')),
    reason     TEXT NOT NULL DEFAULT '',
    who        TEXT NOT NULL,
    at         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_archive ON reviews(archive, id);
-- A/B picks between engines (polishd serve): the candidate chosen, and the ones it was shown beside.
CREATE TABLE IF NOT EXISTS picks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    archive    TEXT NOT NULL,
    stage      TEXT NOT NULL,
    choice     TEXT NOT NULL,
    shown      TEXT NOT NULL,
    who        TEXT NOT NULL,
    at         REAL NOT NULL
);
-- What the running daemon wants `polishd status` to show (e.g. "paused": "disk full at …").
CREATE TABLE IF NOT EXISTS notes (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    since      REAL NOT NULL
);
-- Inbox files the watcher cannot take yet (unreadable), for `polishd status`; cleared when taken or gone.
CREATE TABLE IF NOT EXISTS waiting (
    source     TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    since      REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Job:
    id: int
    source: str
    name: str
    sha256: str
    bytes: int
    mtime: float
    state: str
    origin: str
    attempts: int
    owner: str | None
    heartbeat: float | None
    created: float
    started: float | None
    finished: float | None
    archive: str | None
    dup_of: int | None
    last_error: str | None
    error_stage: str | None
    # With [cluster].broker: the task that carries this job to a worker, when it was handed to the broker,
    # and the worker last seen running it.
    task: str | None = None
    sent: float | None = None
    worker: str | None = None
    review: str | None = None  # the newest reviewer's decision on the image: "approve" | "reject"
    attention: str | None = None  # why it needs a person's look (the quality gate …), one reason a line
    checkpoint: str | None = None  # the checkpoint its image names (daemon/grouping.py), "" when none
    timings: str | None = None  # JSON {stage: seconds} of a finished job's stages
    watched: str | None = None  # the [[daemon.source]] it came from (its name), None for the inbox

    @property
    def path(self) -> Path:
        return Path(self.source)


def owner_id() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    pid_s, _, host = owner.partition("@")
    if host != socket.gethostname():
        return True  # another machine's lease: trust the heartbeat only
    try:
        os.kill(int(pid_s), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        db = self._conn()
        have = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
        for column, kind in (("task", "TEXT"), ("sent", "REAL"), ("worker", "TEXT"), ("review", "TEXT"),
                             ("attention", "TEXT"), ("checkpoint", "TEXT"), ("timings", "TEXT"),
                             ("watched", "TEXT")):
            if have and column not in have:  # a journal from before the cluster mode
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        db.executescript(_SCHEMA)
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)  # the file this journal is: a deleted or replaced one is noticed

    def intact(self) -> str | None:
        """None while the journal's file is the one opened; else what happened to it ("deleted", "replaced")."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        return None if (st.st_dev, st.st_ino) == self._identity else "replaced by another file"

    # -- connection handling ---------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # Made by the first connection only: a later thread's never makes a new, empty journal where the
            # file was deleted (the daemon notices that and stops; see intact()).
            made = getattr(self, "_identity", None) is not None
            db = sqlite3.connect(f"file:{quote(str(self.path))}?mode={'rw' if made else 'rwc'}", uri=True,
                                 timeout=30.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _tx(self) -> Journal._Tx:
        return Journal._Tx(self._conn())

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- writing -----------------------------------------------------------------------
    # -- watched trees ----------------------------------------------------------------------
    def ledger(self, source: str) -> dict[str, tuple[int, int]]:
        """What a watched tree has given so far: path → (size, mtime_ns) as it was taken."""
        rows = self._conn().execute("SELECT path, size, mtime_ns FROM ledger WHERE source=?", (source,))
        return {r["path"]: (r["size"], r["mtime_ns"]) for r in rows}

    def take_watched(self, files: list[tuple[Path, str, os.stat_result, str]], source: str, *,
                     move: bool) -> list[Job]:
        """Stable files of a watched tree, (path, sha256, stat, checkpoint) each, in one transaction: each
        queued once by its bytes.  Bytes taken before (the same file seen again, or renamed or copied inside
        the tree) make no job: the ledger only notes where they are now.  In "move" mode a file leaves the
        tree as the inbox's do; in "leave" mode it stays.  Returns the jobs made."""
        made = []
        with self._tx() as db:
            now = time.time()
            for path, sha256, st, checkpoint in files:
                earlier = db.execute("SELECT job FROM ledger WHERE sha256=? AND source=? LIMIT 1",
                                     (sha256, source)).fetchone()
                job = earlier["job"] if earlier is not None else None
                if earlier is None:
                    if db.execute("SELECT 1 FROM jobs WHERE source=? AND state IN ('queued','running')",
                                  (str(path),)).fetchone():
                        continue
                    job = db.execute(
                        "INSERT INTO jobs(source,name,sha256,bytes,mtime,state,origin,created,checkpoint,watched)"
                        " VALUES (?,?,?,?,?,'queued',?,?,?,?)",
                        (str(path), path.name, sha256, st.st_size, st.st_mtime, "inbox" if move else "process",
                         now, checkpoint, source)).lastrowid
                    made.append(job)
                db.execute("INSERT OR REPLACE INTO ledger(path,source,size,mtime_ns,sha256,job,seen)"
                           " VALUES (?,?,?,?,?,?,?)", (str(path), source, st.st_size, st.st_mtime_ns, sha256, job, now))
            return [self._get(db, j) for j in made]

    def enqueue_upload(self, path: Path, sha256: str, size: int, mtime: float) -> Job:
        """A file sent over HTTP (daemon/review/uploads.py), written under state/uploads: queued like an
        inbox file, taken away once archived."""
        with self._tx() as db:
            cur = db.execute("INSERT INTO jobs(source,name,sha256,bytes,mtime,state,created,watched)"
                             " VALUES (?,?,?,?,?,'queued',?,'upload')",
                             (str(path), path.name, sha256, size, mtime, time.time()))
            return self._get(db, cur.lastrowid)

    def uploads_waiting(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM jobs WHERE watched='upload' AND state IN "
                                    "('queued','running')").fetchone()[0]

    def watched_counts(self) -> dict[str, dict[str, int]]:
        """Per watched tree: its jobs by state, and the files its ledger knows."""
        out: dict[str, dict[str, int]] = {}
        db = self._conn()
        for r in db.execute("SELECT watched, state, COUNT(*) AS n FROM jobs WHERE watched IS NOT NULL "
                            "GROUP BY watched, state"):
            out.setdefault(r["watched"], {})[r["state"]] = r["n"]
        for r in db.execute("SELECT source, COUNT(*) AS n FROM ledger GROUP BY source"):
            out.setdefault(r["source"], {})["known"] = r["n"]
        return out

    def enqueue(self, path: Path, sha256: str, size: int, mtime: float, checkpoint: str = "") -> Job | None:
        """Queues a stable inbox file: one job per file.  None when

        * a job for this path is queued already (whatever its bytes: it takes the newest, which this
          records);
        * this very file (path and bytes) is running, or failed and could not be moved out of the inbox
          (its job's source is still this path): it is not taken again until its bytes change.
        """
        with self._tx() as db:
            queued = db.execute("SELECT id FROM jobs WHERE source=? AND state='queued'", (str(path),)).fetchone()
            if queued:
                db.execute("UPDATE jobs SET sha256=?, bytes=?, mtime=?, checkpoint=? WHERE id=?",
                           (sha256, size, mtime, checkpoint, queued["id"]))
                return None
            row = db.execute(
                "SELECT id FROM jobs WHERE source=? AND sha256=? AND state IN ('running','failed')",
                (str(path), sha256)).fetchone()
            if row:
                return None
            cur = db.execute(
                "INSERT INTO jobs(source,name,sha256,bytes,mtime,state,created,checkpoint)"
                " VALUES (?,?,?,?,?,'queued',?,?)",
                (str(path), path.name, sha256, size, mtime, time.time(), checkpoint))
            return self._get(db, cur.lastrowid)

    def enqueue_rerun(self, archive: Path, original: Path, name: str, sha256: str, keep_review: bool = False) -> Job:
        """Queues an archived image to run again in its own folder (review's approval, "retry with…"): its
        source is the archived original, which is never removed; the daemon takes it like any queued job.
        ``keep_review``: the image's decision so far stays its decision (a rerun that delivers what a
        reviewer approved or picked; not a retry with other settings, whose pictures nobody has seen)."""
        st = original.stat()
        with self._tx() as db:
            queued = db.execute("SELECT id FROM jobs WHERE archive=? AND source=? AND state='queued'",
                                (str(archive), str(original))).fetchone()
            if queued:
                return self._get(db, queued["id"])
            said = db.execute("SELECT review FROM jobs WHERE archive=? ORDER BY id DESC LIMIT 1",
                              (str(archive),)).fetchone() if keep_review else None
            cur = db.execute(
                "INSERT INTO jobs(source,name,sha256,bytes,mtime,state,origin,created,archive,review)"
                " VALUES (?,?,?,?,?,'queued','process',?,?,?)",
                (str(original), name, sha256, st.st_size, st.st_mtime, time.time(), str(archive),
                 said["review"] if said else None))
            return self._get(db, cur.lastrowid)

    def start_direct(self, path: Path, sha256: str, size: int, mtime: float) -> Job | None:
        """A job for ``polishd process``: running at once, owned by this process, never queued.  None while
        another live process (the daemon) is running the same bytes: the caller waits, then the duplicates
        rule sees that job finished, as it would for two files in the inbox."""
        with self._tx() as db:
            busy = db.execute("SELECT owner FROM jobs WHERE state='running' AND sha256=?", (sha256,)).fetchall()
            if any(_owner_alive(r["owner"]) for r in busy):
                return None
            now = time.time()
            cur = db.execute(
                "INSERT INTO jobs(source,name,sha256,bytes,mtime,state,origin,attempts,owner,heartbeat,created,started)"
                " VALUES (?,?,?,?,?,'running','process',1,?,?,?,?)",
                (str(path), path.name, sha256, size, mtime, owner_id(), now, now, now))
            return self._get(db, cur.lastrowid)

    def claim(self, task: str | None = None, grouping: Grouping | None = None) -> Job | None:
        """Takes a queued job whose bytes no other worker is processing right now: the oldest, or with
        ``grouping`` the oldest of the checkpoints it prefers (daemon/grouping.py); ``task`` names the cluster
        task that will carry it (then ``mark_sent`` once the broker has it)."""
        free = ("state='queued' AND NOT EXISTS ("
                " SELECT 1 FROM jobs AS r WHERE r.state='running' AND r.sha256=j.sha256)")
        with self._tx() as db:
            row = db.execute(f"SELECT id FROM jobs AS j WHERE {free} ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            prefer = grouping.prefer(row["id"]) if grouping is not None else []
            if prefer:
                order = " ".join(f"WHEN ? THEN {n}" for n in range(len(prefer)))
                marks = ",".join("?" * len(prefer))
                row = db.execute(
                    f"SELECT id FROM jobs AS j WHERE {free} AND COALESCE(checkpoint, '') IN ({marks})"
                    f" ORDER BY CASE COALESCE(checkpoint, '') {order} END, id LIMIT 1",
                    (*prefer, *prefer)).fetchone() or row
            now = time.time()
            db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, owner=?, heartbeat=?, started=?, task=?,"
                " sent=NULL, worker=NULL WHERE id=?", (owner_id(), now, now, task, row["id"]))
            job = self._get(db, row["id"])
        if grouping is not None:
            grouping.took(job.checkpoint)
        return job

    def mark_sent(self, job_id: int, task: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET sent=? WHERE id=? AND task=?", (time.time(), job_id, task))

    def seen_on(self, job_id: int, task: str, worker: str) -> None:
        """A worker's heartbeat names this job's task: it is running there."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET worker=?, heartbeat=? WHERE id=? AND task=? AND state='running'",
                       (worker, time.time(), job_id, task))

    def dispatched(self) -> list[Job]:
        """Running jobs carried by a cluster task, oldest first."""
        rows = self._conn().execute("SELECT * FROM jobs WHERE state='running' AND task IS NOT NULL ORDER BY id")
        return [Job(**dict(r)) for r in rows]

    def claim_id(self, job_id: int) -> Job | None:
        """Takes one queued job by id (``polishd process`` running its next attempt at once), or None."""
        with self._tx() as db:
            now = time.time()
            cur = db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, owner=?, heartbeat=?, started=? "
                "WHERE id=? AND state='queued'", (owner_id(), now, now, job_id))
            return self._get(db, job_id) if cur.rowcount else None

    def heartbeat(self, job_ids: list[int]) -> None:
        if not job_ids:
            return
        with self._tx() as db:
            db.executemany("UPDATE jobs SET heartbeat=? WHERE id=? AND state='running'",
                           [(time.time(), i) for i in job_ids])

    def set_archive(self, job_id: int, archive: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET archive=? WHERE id=?", (archive, job_id))

    def finish(self, job_id: int, state: str, *, error: str | None = None, stage: str | None = None,
               dup_of: int | None = None, source: str | None = None, attention: str | None = None,
               timings: dict[str, float] | None = None, outbox: list[tuple[str, str, str, str]] = ()) -> None:
        """``timings``: the seconds each stage that ran took (the dashboard's time per stage); ``outbox``: the
        webhook calls this ending makes (id, url, event, body), kept in the same transaction."""
        assert state in ("done", "failed", "duplicate")
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state=?, finished=?, last_error=?, error_stage=?, dup_of=?,"
                " source=COALESCE(?, source), owner=NULL, attention=?, timings=? WHERE id=?",
                (state, time.time(), error, stage, dup_of, source, attention,
                 json.dumps(timings) if timings else None, job_id))
            self._post(db, outbox)

    @staticmethod
    def _post(db: sqlite3.Connection, outbox) -> None:
        now = time.time()
        db.executemany("INSERT INTO outbox(id,url,event,body,created,next_try) VALUES (?,?,?,?,?,?)",
                       [(i, url, event, body, now, now) for i, url, event, body in outbox])

    # -- webhooks ----------------------------------------------------------------------
    def due(self, url: str, now: float, limit: int = 20) -> list[sqlite3.Row]:
        return self._conn().execute("SELECT * FROM outbox WHERE url=? AND delivered IS NULL AND gave_up IS NULL "
                                    "AND next_try<=? ORDER BY created, id LIMIT ?", (url, now, limit)).fetchall()

    def outbox_sent(self, call: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET delivered=?, attempts=attempts+1, last_error=NULL WHERE id=?",
                       (time.time(), call))

    def outbox_failed(self, call: str, error: str, next_try: float | None) -> None:
        """A try that did not take: tried again at ``next_try``, or given up (None)."""
        with self._tx() as db:
            db.execute("UPDATE outbox SET attempts=attempts+1, last_error=?, next_try=COALESCE(?, next_try),"
                       " gave_up=CASE WHEN ? IS NULL THEN ? END WHERE id=?",
                       (error[:500], next_try, next_try, time.time(), call))

    def outbox_counts(self, since: float) -> dict[str, dict]:
        """Per webhook URL: calls waiting, of those failing (tried and not taken), delivered since ``since``,
        given up, and the newest error."""
        out: dict[str, dict] = {}
        rows = self._conn().execute(
            "SELECT url, SUM(delivered IS NULL AND gave_up IS NULL) AS waiting,"
            " SUM(delivered IS NULL AND gave_up IS NULL AND attempts > 0) AS failing,"
            " SUM(delivered >= ?) AS delivered, SUM(gave_up IS NOT NULL) AS gave_up FROM outbox GROUP BY url",
            (since,))
        for r in rows:
            last = self._conn().execute("SELECT last_error FROM outbox WHERE url=? AND last_error IS NOT NULL "
                                        "ORDER BY next_try DESC LIMIT 1", (r["url"],)).fetchone()
            out[r["url"]] = {"waiting": r["waiting"] or 0, "failing": r["failing"] or 0,
                             "delivered": r["delivered"] or 0, "gave_up": r["gave_up"] or 0,
                             "last_error": last["last_error"] if last else None}
        return out

    def needing_review(self, limit: int = 10) -> tuple[list[Job], int]:
        """Finished images whose newest job flagged them for a person's look and that no reviewer has
        decided on yet: the newest ``limit``, and how many there are."""
        latest = "SELECT MAX(id) FROM jobs WHERE state='done' AND archive IS NOT NULL GROUP BY archive"
        where = f"id IN ({latest}) AND attention IS NOT NULL AND review IS NULL"
        db = self._conn()
        total = db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}").fetchone()[0]
        rows = db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY finished DESC LIMIT ?", (limit,))
        return [Job(**dict(r)) for r in rows], total

    def requeue(self, job_id: int, *, error: str | None = None, stage: str | None = None,
                count_attempt: bool = True) -> None:
        """Back to the queue: after a failed attempt, or (count_attempt=False) after a clean stop."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state='queued', owner=NULL, heartbeat=NULL, task=NULL, sent=NULL, worker=NULL,"
                " attempts=attempts - ?, last_error=COALESCE(?, last_error),"
                " error_stage=COALESCE(?, error_stage) WHERE id=?",
                (0 if count_attempt else 1, error, stage, job_id))

    def retry(self, job_id: int, source: Path, sha256: str, size: int, mtime: float) -> int:
        """Queued again, as the file now is at ``source`` (the user may have repaired it meanwhile): one job
        per file, so a job the watcher made for the returning file in the meantime is folded into this one.
        Returns the job that will process it (another one's id if that was already running)."""
        with self._tx() as db:
            other = db.execute("SELECT id, state FROM jobs WHERE source=? AND state IN ('queued','running')"
                               " AND id<>?", (str(source), job_id)).fetchone()
            if other is not None and other["state"] == "running":  # this failure is in hand again: not stale
                db.execute("UPDATE jobs SET state='duplicate', dup_of=? WHERE id=?", (other["id"], job_id))
                return other["id"]
            if other is not None:
                db.execute("DELETE FROM jobs WHERE id=?", (other["id"],))  # never claimed: nothing is lost
            db.execute("UPDATE jobs SET state='queued', attempts=0, source=?, name=?, sha256=?, bytes=?, mtime=?,"
                       " owner=NULL, finished=NULL, task=NULL, sent=NULL, worker=NULL WHERE id=?",
                       (str(source), source.name, sha256, size, mtime, job_id))
            return job_id

    def set_sha256(self, job_id: int, sha256: str) -> None:
        """The bytes a running job really read: the watcher then knows the file is taken."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET sha256=? WHERE id=?", (sha256, job_id))

    def recover(self, keep_dispatched: bool = False) -> tuple[list[Job], list[Job]]:
        """At daemon start (under the single-instance lock): orphaned running jobs.

        Every running inbox job belonged to a daemon that is gone: back to the
        queue (with ``keep_dispatched``, a cluster coordinator's start, jobs a task
        carries stay running: their results may still come).  A ``polishd process``
        job whose process is gone or silent is marked failed (its file lives outside
        the inbox, not the daemon's to take).  Returns (requeued, abandoned).
        """
        requeued, abandoned = [], []
        with self._tx() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state='running'").fetchall()
            stale_before = time.time() - LEASE_SECONDS
            for row in rows:
                job = Job(**dict(row))
                if job.origin == "process" and _owner_alive(job.owner) and (job.heartbeat or 0) > stale_before:
                    continue
                if keep_dispatched and job.task is not None:
                    continue  # a cluster task: its worker may still be at it; the coordinator follows it up
                rerun = job.archive is not None and Path(job.source).parent == Path(job.archive)
                if job.origin == "process" and not rerun and job.watched is None:
                    db.execute("UPDATE jobs SET state='failed', finished=?, owner=NULL,"
                               " last_error='interrupted: the polishd process run ended' WHERE id=?",
                               (time.time(), job.id))
                    abandoned.append(job)
                else:
                    db.execute("UPDATE jobs SET state='queued', owner=NULL, heartbeat=NULL, task=NULL, sent=NULL,"
                               " worker=NULL WHERE id=?", (job.id,))
                    requeued.append(job)
        return requeued, abandoned

    # -- reading -----------------------------------------------------------------------
    @staticmethod
    def _get(db: sqlite3.Connection, job_id: int | None) -> Job:
        return Job(**dict(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()))

    def get(self, job_id: int) -> Job | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job(**dict(row)) if row else None

    def first_done_with(self, sha256: str, before_id: int) -> Job | None:
        row = self._conn().execute(
            "SELECT * FROM jobs WHERE sha256=? AND state='done' AND id<? ORDER BY id LIMIT 1",
            (sha256, before_id)).fetchone()
        return Job(**dict(row)) if row else None

    def set_note(self, key: str, value: str | None) -> None:
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM notes WHERE key=?", (key,))
            else:
                db.execute("INSERT INTO notes(key, value, since) VALUES (?,?,?) ON CONFLICT(key) DO UPDATE"
                           " SET value=excluded.value", (key, value, time.time()))

    def notes(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._conn().execute("SELECT key, value FROM notes")}

    def note_waiting(self, path: Path, reason: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO waiting(source, reason, since) VALUES (?,?,?) ON CONFLICT(source) DO UPDATE"
                       " SET reason=excluded.reason", (str(path), reason, time.time()))

    def clear_waiting(self, path: Path) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM waiting WHERE source=?", (str(path),))

    def waiting(self) -> list[dict]:
        rows = self._conn().execute("SELECT source, reason, since FROM waiting ORDER BY since")
        return [dict(r) for r in rows]

    def active_sources(self) -> set[str]:
        rows = self._conn().execute("SELECT source FROM jobs WHERE state IN ('queued','running')")
        return {r["source"] for r in rows}

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for r in self._conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            out[r["state"]] = r["n"]
        return out

    def done_since(self, since: float) -> int:
        return self._conn().execute(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('done','duplicate') AND finished>=?", (since,)).fetchone()[0]

    def jobs(self, state: str | None = None, limit: int = 1000, newest_first: bool = False) -> list[Job]:
        order = "DESC" if newest_first else "ASC"
        if state:
            rows = self._conn().execute(
                f"SELECT * FROM jobs WHERE state=? ORDER BY COALESCE(finished, created) {order}, id {order} LIMIT ?",
                (state, limit))
        else:
            rows = self._conn().execute(f"SELECT * FROM jobs ORDER BY id {order} LIMIT ?", (limit,))
        return [Job(**dict(r)) for r in rows]

    # -- reviews (polishd serve) ---------------------------------------------------------
    def add_review(self, archive: str, variant: str | None, decision: str, reason: str, who: str,
                   outbox: list[tuple[str, str, str, str]] = ()) -> dict:
        with self._tx() as db:
            at = time.time()
            cur = db.execute("INSERT INTO reviews(archive, variant, decision, reason, who, at) VALUES (?,?,?,?,?,?)",
                             (archive, variant, decision, reason, who, at))
            if variant is None:
                db.execute("UPDATE jobs SET review=? WHERE archive=?", (decision, archive))
            self._post(db, outbox)
            return {"id": cur.lastrowid, "variant": variant, "decision": decision, "reason": reason, "who": who,
                    "at": at}

    def reviews(self, archive: str) -> list[dict]:
        rows = self._conn().execute("SELECT id, variant, decision, reason, who, at FROM reviews WHERE archive=?"
                                    " ORDER BY id", (archive,))
        return [dict(r) for r in rows]

    def add_pick(self, archive: str, stage: str, choice: str, shown: list[str], who: str) -> dict:
        with self._tx() as db:
            at = time.time()
            db.execute("INSERT INTO picks(archive, stage, choice, shown, who, at) VALUES (?,?,?,?,?,?)",
                       (archive, stage, choice, json.dumps(shown), who, at))
            return {"stage": stage, "choice": choice, "shown": shown, "who": who, "at": at}

    def win_rates(self) -> list[dict]:
        """Per stage and engine over every image's newest pick: how often it was shown, and chosen."""
        rows = self._conn().execute(
            "SELECT stage, choice, shown FROM picks WHERE id IN (SELECT MAX(id) FROM picks GROUP BY archive, stage)")
        tally: dict[tuple[str, str], list[int]] = {}
        for r in rows:
            for engine in json.loads(r["shown"]):
                t = tally.setdefault((r["stage"], engine), [0, 0])
                t[0] += 1
                t[1] += engine == r["choice"]
        return [{"stage": st, "engine": e, "shown": n, "picked": w, "rate": w / n}
                for (st, e), (n, w) in sorted(tally.items(), key=lambda kv: (kv[0][0], -kv[1][1] / kv[1][0]))]

    def hourly(self, now: float, hours: int = 24) -> list[dict]:
        """Jobs ended per hour over the last ``hours``, oldest hour first: done (and duplicates), failed."""
        start = now - hours * 3600
        out = [{"done": 0, "failed": 0} for _ in range(hours)]
        rows = self._conn().execute("SELECT state, finished FROM jobs WHERE finished >= ? AND finished <= ? "
                                    "AND state IN ('done','duplicate','failed')", (start, now))
        for r in rows:
            out[min(hours - 1, int((r["finished"] - start) // 3600))]["failed" if r["state"] == "failed"
                                                                      else "done"] += 1
        return out

    def stage_seconds(self, since: float, limit: int = 5000) -> dict[str, list[float]]:
        """Each stage's seconds over the newest ``limit`` jobs done since ``since``."""
        rows = self._conn().execute("SELECT timings FROM jobs WHERE state='done' AND finished >= ? AND timings "
                                    "IS NOT NULL ORDER BY finished DESC LIMIT ?", (since, limit))
        out: dict[str, list[float]] = {}
        for r in rows:
            try:
                timings = json.loads(r["timings"])
            except ValueError:
                continue
            for stage, seconds in timings.items() if isinstance(timings, dict) else ():
                if isinstance(seconds, (int, float)):
                    out.setdefault(stage, []).append(float(seconds))
        return out

    def oldest_queued(self) -> float | None:
        """When the job that has waited longest in the queue was taken in."""
        row = self._conn().execute("SELECT MIN(created) FROM jobs WHERE state='queued'").fetchone()
        return row[0]

    def decisions(self) -> dict[str, int]:
        """Images by their newest reviewer's decision: {"approve": n, "reject": m}."""
        rows = self._conn().execute(
            "SELECT decision, COUNT(*) AS n FROM reviews WHERE id IN (SELECT MAX(id) FROM reviews WHERE variant IS "
            "NULL GROUP BY archive) GROUP BY decision")
        return {"approve": 0, "reject": 0} | {r["decision"]: r["n"] for r in rows}

    def by_archive(self, archive: str) -> Job | None:
        """The newest job that made this archive folder."""
        row = self._conn().execute("SELECT * FROM jobs WHERE archive=? ORDER BY id DESC LIMIT 1",
                                   (archive,)).fetchone()
        return Job(**dict(row)) if row else None

    _GALLERY = {"all": "state='done'", "awaiting": "state='done' AND review IS NULL",
                "flagged": "state='done' AND review IS NULL AND attention IS NOT NULL",
                "approved": "state='done' AND review='approve'", "rejected": "state='done' AND review='reject'",
                "failed": "state='failed'"}

    def gallery(self, state: str, limit: int, offset: int) -> tuple[list[Job], int]:
        """One page of images by review state (newest finished first), and how many there are in all."""
        where = self._GALLERY[state] + (" AND archive IS NOT NULL" if state != "failed" else "")
        latest = f"SELECT MAX(id) FROM jobs WHERE {where} GROUP BY COALESCE(archive, 'job:' || id)"
        db = self._conn()
        total = db.execute(f"SELECT COUNT(*) FROM ({latest})").fetchone()[0]
        rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({latest}) ORDER BY finished DESC, id DESC"
                          " LIMIT ? OFFSET ?", (limit, offset))
        return [Job(**dict(r)) for r in rows], total

    def neighbours(self, archive: str) -> tuple[str | None, str | None]:
        """The archive folders just before and after this one in the gallery's order (finished images, newest
        first), found by index, not by reading them all."""
        db = self._conn()
        me = db.execute("SELECT finished, id FROM jobs WHERE state='done' AND archive=? ORDER BY id DESC LIMIT 1",
                        (archive,)).fetchone()
        if me is None:
            return None, None
        newer = db.execute("SELECT archive FROM jobs WHERE state='done' AND archive IS NOT NULL AND archive<>? AND"
                           " (finished > ? OR (finished = ? AND id > ?)) ORDER BY finished ASC, id ASC LIMIT 1",
                           (archive, me["finished"], me["finished"], me["id"])).fetchone()
        older = db.execute("SELECT archive FROM jobs WHERE state='done' AND archive IS NOT NULL AND archive<>? AND"
                           " (finished < ? OR (finished = ? AND id < ?)) ORDER BY finished DESC, id DESC LIMIT 1",
                           (archive, me["finished"], me["finished"], me["id"])).fetchone()
        return (newer["archive"] if newer else None), (older["archive"] if older else None)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs())
