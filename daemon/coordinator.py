"""``polishd run`` with a broker: the coordinator's dispatcher, in place of the in-process workers.

The watcher still queues every stable inbox file in the journal, whether the broker is up or not.  This
thread takes queued jobs from the journal and sends one Celery task per job, keeping at most two tasks per
live worker in flight (one running, one waiting), so the journal, not the broker, holds the backlog and its
order.  Each task goes to one live worker's own queue: to the one that holds the job's checkpoint (or will,
once the tasks sent to it have run), else to the least busy, so that a checkpoint is not loaded again on
another node (daemon/grouping.py).  With no worker known yet, and for a task sent again, the shared queue,
which every worker takes too.  It follows every task it sent until its result comes back, then
makes the calls the worker wrote down (daemon/cluster.py): the journal is settled here, and the inbox file
is removed here, only once the archive holds the verified copy and its manifest says done.

A task is sent again, under the same id, when

* the worker last seen running it has stopped beating (killed, or it left at a stop), or was seen running
  it and then neither named it nor answered for three heartbeats;
* no worker has named it within ``task_timeout`` of its sending (lost with a broker that lost its data), or
  it was sent to one worker's own queue and that worker has stopped beating before taking it;
* the coordinator starts and finds a task that it had claimed but not yet handed to the broker;
* the broker comes back after being out of reach, for every task no worker had named (a restarted Redis
  without its append-only file has lost them).

A copy of a task is harmless: the worker that takes it drops it when another worker holds its lease or its
result is already stored, and a job that did run twice resumes from the stages in its archive folder.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon import cluster
from daemon.grouping import Grouping, most_recent
from daemon.journal import Job, Journal
from daemon.runner import FailureReport, JobStatus, JournalEndings, Outcome

log = structlog.get_logger("polishd.coordinator")

SCAN_EVERY = 0.5      # seconds between looks at the workers' heartbeats
POLL_BUSY = 0.005     # seconds between looks for results while tasks are out
POLL_IDLE = 0.25
BACKOFF_FIRST, BACKOFF_LONGEST = 0.5, 10.0  # seconds between tries while the broker is out of reach


@dataclass
class _Tracked:
    job_id: int
    name: str
    task: str
    claimed: float             # time.time() when the journal gave the job to this task
    sent: float | None         # when the broker last took it
    worker: str | None = None  # the worker last seen running it
    seen: float = 0.0          # when that was
    target: str | None = None  # the worker whose own queue it was sent to (None: the shared queue)


class Dispatcher:
    def __init__(self, daemon):
        self.daemon = daemon
        self.cluster = daemon.cfg.cluster
        self.journal: Journal = daemon.journal
        self.endings = JournalEndings(self.journal, daemon.current)
        self.app = cluster.make_app(self.cluster)
        self.client = cluster.redis_client(self.cluster)
        self.out: dict[str, _Tracked] = {}
        self.workers: dict[str, cluster.WorkerBeat] = {}
        self._scanned = 0.0
        self._down_since: float | None = None
        self._backoff = BACKOFF_FIRST
        self.timings: list[dict] = []  # per settled job, for bench/cluster.py (also logged at debug level)
        self.grouping = Grouping(daemon.cfg.daemon.group_wait, keep=64)
        # worker → the checkpoints it will hold once the tasks sent to it have run, newest first: its heartbeat
        # says what it held when first seen, and each task sent to it moves that task's checkpoint to the front.
        self.holds: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ the loop
    def follow_up_earlier_tasks(self) -> None:
        """At start: the tasks an earlier coordinator sent are followed up; one it never handed over is sent."""
        for job in self.journal.dispatched():
            self.out[job.task] = _Tracked(job.id, job.name, job.task, claimed=job.started or time.time(),
                                          sent=job.sent, worker=job.worker, seen=time.time())
        unsent = [t for t in self.out.values() if t.sent is None]
        if self.out:
            log.info("following up the tasks of an earlier run", tasks=len(self.out), unsent=len(unsent))

    def run(self) -> None:
        stop = self.daemon.signals.stop
        self.follow_up_earlier_tasks()
        while not stop.is_set():
            self.daemon.beat_dispatcher()
            try:
                busy = self._turn()
            except cluster.broker_errors() as exc:
                self._broker_down(exc)
                stop.wait(self._backoff)
                self._backoff = min(BACKOFF_LONGEST, self._backoff * 2)
                continue
            if self._down_since is not None:
                log.info("the broker is reachable again", down_s=round(time.time() - self._down_since, 1))
                self._down_since, self._backoff = None, BACKOFF_FIRST
                self.daemon.note("broker", None)
                # A restarted Redis may have lost what was queued: every task no worker has named yet goes again
                # now, not after task_timeout (a copy of one that survived is dropped by its lease).
                for t in [t for t in self.out.values() if t.sent is not None and t.worker is None]:
                    self._again(t, "the broker was out of reach: it may have lost the task")
            if busy:
                stop.wait(POLL_BUSY)
            else:
                self.daemon.work.wait(POLL_IDLE)
                self.daemon.work.clear()
        if self.out:
            log.info("stopping: tasks still out are followed up at the next start", tasks=len(self.out))

    def _broker_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.time()
            where = cluster.redact(self.cluster.broker)
            log.warning("the broker is out of reach; files are still taken into the journal, and jobs are sent "
                        "when it is back", broker=where, error=cluster.redact(str(exc)))
            self.daemon.note("broker", f"out of reach since {time.strftime('%H:%M:%S')}: {where}")

    def _turn(self) -> bool:
        now = time.time()
        if now - self._scanned >= SCAN_EVERY:
            self._scanned = now
            self.workers = {b.name: b for b in cluster.live_workers(self.client, self.cluster)}
            self.holds = {name: self.holds.get(name) or list(b.checkpoints) for name, b in self.workers.items()}
            self._follow_up(now)
            for t in [t for t in self.out.values() if t.sent is None]:
                self._send(t)
        if self.out:
            for task_id, meta in self.app.backend.get_many(list(self.out), interval=0, max_iterations=1):
                self._settle(self.out.pop(task_id), meta)
        if self.daemon.pause.remaining() <= 0:
            self._fill()
        return bool(self.out)

    def _fill(self) -> None:
        window = 2 * max(1, len(self.workers))
        while len(self.out) < window and not self.daemon.signals.stop.is_set():
            task_id = f"polishd-{uuid.uuid4().hex}"
            free = self._free()
            cfg = self.daemon.current()
            self.grouping.resize(cfg.daemon.group_wait, 64)
            self.grouping.hold([key for worker in free for key in self.holds.get(worker, ())])
            job = self.journal.claim(task=task_id, grouping=self.grouping if cfg.inpaint.model_from_image else None)
            if job is None:
                return
            key = job.checkpoint or ""
            target = next((w for w in free if key in self.holds.get(w, ())), free[0] if free else None)
            if target is not None:
                self._will_hold(target, key)
            log.debug("job sent", job=job.id, checkpoint=key or None, to=target or "any worker")
            tracked = _Tracked(job.id, job.name, task_id, claimed=time.time(), sent=None, target=target)
            self.out[task_id] = tracked
            try:
                self._send(tracked, job)
            except cluster.broker_errors():
                self.out.pop(task_id)
                self.journal.requeue(job.id, count_attempt=False)  # not sent: back in the queue, as it was
                raise

    def _free(self) -> list[str]:
        """The live workers with room for one more task (two out at most: one running, one waiting), the least
        busy first.  Each task goes to one of them by name, to its own queue: to the one that will hold the
        job's checkpoint when it comes to it (cluster affinity), else to the least busy."""
        load = {name: 0 for name, beat in self.workers.items() if beat.state != "stopping"}
        for t in self.out.values():
            who = t.target or t.worker
            if who in load:
                load[who] += 1
        return [name for name in sorted(load, key=lambda n: (load[n], n)) if load[name] < 2]

    def _will_hold(self, worker: str, key: str) -> None:
        beat = self.workers.get(worker)
        self.holds[worker] = most_recent(self.holds.get(worker, []), key, beat.keep if beat is not None else 1)

    def _send(self, t: _Tracked, job: Job | None = None) -> None:
        job = job or self.journal.get(t.job_id)
        if job is None or job.state != "running" or job.task != t.task:
            self.out.pop(t.task, None)
            return
        cfg = self.daemon.current()
        earlier = self.journal.first_done_with(job.sha256, job.id) if cfg.daemon.duplicates == "skip" else None
        queue = cluster.own_queue(self.cluster, t.target) if t.target else self.cluster.queue
        self.app.send_task(cluster.TASK, args=[cluster.payload(job, cfg, earlier)], task_id=t.task, queue=queue)
        t.sent = time.time()
        self.journal.mark_sent(job.id, t.task)

    def _follow_up(self, now: float) -> None:
        running = {b.task: b for b in self.workers.values() if b.task}
        quiet_after = 3 * self.cluster.heartbeat
        for t in list(self.out.values()):
            if t.sent is None:
                continue
            beat = running.get(t.task)
            if beat is not None:
                if t.worker != beat.name:
                    self.journal.seen_on(t.job_id, t.task, beat.name)
                t.worker, t.seen = beat.name, now
                continue
            if t.worker is not None and t.worker not in self.workers:
                self._again(t, f"worker {t.worker} stopped beating")
            elif t.worker is None and t.target is not None and t.target not in self.workers:
                self._again(t, f"worker {t.target}, which it was sent to for its checkpoint, stopped beating")
            elif t.worker is not None and now - t.seen > quiet_after:
                self._again(t, f"worker {t.worker} no longer runs it and sent no result")
            elif t.worker is None and now - t.sent > self.cluster.task_timeout:
                self._again(t, "no worker took it within [cluster].task_timeout")

    def _again(self, t: _Tracked, why: str) -> None:
        log.warning("task sent again", job=t.job_id, image=t.name, task=t.task, reason=why)
        t.worker, t.seen, t.target = None, time.time(), None  # to any worker: the one it was meant for may be gone
        self._send(t)

    # ------------------------------------------------------------------ results
    def _settle(self, t: _Tracked, meta: dict) -> None:
        job = self.journal.get(t.job_id)
        if job is None or job.state != "running" or job.task != t.task:
            log.debug("a result for a job settled already", job=t.job_id, task=t.task)
            return
        structlog.contextvars.bind_contextvars(image=job.name, job=job.id)
        try:
            outcome = self._apply(job, meta, t.claimed)
        finally:
            structlog.contextvars.unbind_contextvars("image", "job")
        self.daemon.after(outcome)

    def _apply(self, job: Job, meta: dict, claimed: float) -> Outcome:
        cfg = self.daemon.current()
        result = meta.get("result")
        if meta.get("status") != "SUCCESS" or not isinstance(result, dict):
            error = f"the worker's task failed: {meta.get('result')!r}"[:2000]
            if job.attempts < cfg.daemon.max_attempts:
                self.endings.requeue(job, error=error, stage="worker")
                status = JobStatus.RETRY
            else:
                self.endings.failed(job, error, "worker", report=FailureReport.of(job, "WorkerError", error, "worker"))
                status = JobStatus.FAILED
            return Outcome(job.id, job.name, status, error=error)
        try:
            cluster.apply(result["ops"], job, self.journal, self.endings)
        except Exception as exc:  # e.g. the archive copy does not verify: the file stays, the job goes back
            log.error("the worker's result could not be applied; job put back in the queue",
                      error=f"{type(exc).__name__}: {exc}", exc_info=True)
            self.journal.requeue(job.id, error=f"{type(exc).__name__}: {exc}", stage="coordinator")
            return Outcome(job.id, job.name, JobStatus.RETRY, error=str(exc))
        settled = time.time()
        status = JobStatus(result["status"])
        timing = {"job": job.id, "worker": result["worker"], "claimed": claimed,
                  "received": result["received"], "idle_since": result["idle_since"],
                  "finished": result["finished"], "settled": settled}
        self.timings.append(timing)
        log.info("job finished", status=status, worker=result["worker"], archive=result["archive"] or "",
                 seconds=round(result["finished"] - result["received"], 3), stages=result["stages"],
                 error=result["error"])
        log.debug("dispatch timing", **timing)
        return Outcome(job.id, job.name, status, Path(result["archive"]) if result["archive"] else None,
                       result["error"])
