"""What the command line and the review page both do: read the queue's state, and send a failed job round again."""

from __future__ import annotations

import os
import time
from pathlib import Path

from daemon.archive import sha256_file, unique_path
from daemon.cluster import cluster_status
from daemon.config import Config
from daemon.intake import image_stem, sidecars_for
from daemon.journal import Job, Journal


def journal_path(cfg: Config) -> Path:
    return cfg.paths.state / "journal.sqlite3"


def status_data(cfg: Config, failures: int = 10, journal: Journal | None = None) -> dict:
    """``journal``: one already open (the review page's), else the config's is opened."""
    journal = journal or Journal(journal_path(cfg))
    counts = journal.counts()
    hour = journal.done_since(time.time() - 3600)
    recent = [{"id": j.id, "name": j.name, "stage": j.error_stage, "error": j.last_error, "attempts": j.attempts,
               "finished": j.finished, "moved_to": j.source}
              for j in journal.jobs("failed", limit=failures, newest_first=True)]
    notes = journal.notes()
    flagged, n_flagged = journal.needing_review(failures)
    review = {"count": n_flagged, "images": [{"id": j.id, "name": j.name, "archive": j.archive,
                                               "reasons": j.attention.splitlines()} for j in flagged]}
    data = {"counts": counts, "finished_last_hour": hour, "recent_failures": recent, "needs_review": review,
            "waiting": journal.waiting(),
            "paused": notes.get("paused"), "inbox": str(cfg.paths.inbox), "archive": str(cfg.paths.archive)}
    counted = journal.watched_counts()
    data["sources"] = [{"name": s.label, "path": s.path, "mode": s.mode,
                        "state": notes.get(f"source:{s.label}") or "not watched (the daemon is not running)",
                        **{k: counted.get(s.label, {}).get(k, 0) for k in ("known", "queued", "running", "done",
                                                                           "failed")}}
                       for s in cfg.daemon.source]
    sent = journal.outbox_counts(time.time() - 86400)
    data["webhooks"] = [{"url": h.url.split("?", 1)[0],  # a query may carry a receiver's key: not shown
                         **sent.get(h.url, {"waiting": 0, "failing": 0, "delivered": 0, "gave_up": 0,
                                            "last_error": None})} for h in cfg.notify.webhook]
    if cfg.cluster.enabled:
        c = cluster_status(cfg)
        sent = journal.dispatched()
        taken = {w["job"] for w in c["workers"] if w["job"] is not None}
        data["cluster"] = {**c, "note": notes.get("broker"),
                           "on_workers": [{"id": j.id, "name": j.name, "worker": j.worker, "task": j.task}
                                          for j in sent],
                           # sent to the broker, and no live worker says it runs it (yet)
                           "waiting_for_worker": sum(j.id not in taken for j in sent)}
    return data



def retry_one(cfg: Config, journal: Journal, job: Job) -> tuple[bool, str]:
    """Moves a failed inbox job's file from [paths].failed back into the inbox and queues it again (for
    ``polishd retry`` and the review page's retry button).  (whether it was queued, what happened)."""
    if job.state == "failed" and job.watched and job.origin == "process":  # a "leave" source: the file is in place
        src = Path(job.source)
        if not src.is_file():
            return False, f"#{job.id} {job.name}: {src} is gone; nothing to retry"
        st = src.stat()
        journal.retry(job.id, src, sha256_file(src), st.st_size, st.st_mtime)
        return True, f"#{job.id} {job.name}: queued again from {src} (source {job.watched})"
    if job.state != "failed" or job.origin != "inbox":
        return False, f"#{job.id} {job.name}: not a failed inbox job ({job.state}, {job.origin})"
    src = Path(job.source)
    if not os.path.lexists(src):
        return False, f"#{job.id} {job.name}: {src} is gone; nothing to retry"
    dest = unique_path(cfg.paths.inbox / job.name)
    st = os.lstat(src)
    digest = sha256_file(src) if not src.is_symlink() else job.sha256
    src_stem, dest_stem = image_stem(src.name), image_stem(dest.name)
    for side in sidecars_for(src).values():  # first: the image must find its settings when it is taken
        os.replace(side, unique_path(dest.with_name(dest_stem + side.name[len(src_stem):])))
    os.replace(src, dest)
    taken = journal.retry(job.id, dest, digest, st.st_size, st.st_mtime)
    report = src.with_name(src.name + ".error.json")
    if report.exists():
        os.replace(report, unique_path(report.with_name(report.name + ".retried")))
    if taken != job.id:
        return True, f"#{job.id} {job.name}: already being processed again as #{taken}"
    return True, f"#{job.id} {job.name}: queued again as {dest}"
