"""``polishd worker``: a Celery worker that runs the coordinator's jobs, one at a time, on one device.

It runs Celery's solo pool: the job runs in this process, so the models a stage loads stay loaded for the
next job, and one process is one GPU (``--device cuda:1``, or one systemd instance per GPU).  It writes the
archive folder itself, through the same runner and stage contract as ``polishd run`` without a broker; what
the runner would do to the journal or the inbox goes back to the coordinator in the task's result
(daemon/cluster.py).

A heartbeat thread writes the worker's state to Redis every ``[cluster].heartbeat`` seconds (the job it
runs, how many it finished) and keeps the lease of its task.  SIGTERM or SIGINT: no new task is taken and
the running job stops at its next safe point and goes back to the coordinator, which sends it on; if no
safe point comes within ``[daemon].stop_timeout``, the worker leaves anyway and the coordinator, seeing its
heartbeat stop, sends the job again.  A job that runs past ``task_timeout`` fails at its next safe point;
one that reaches none within ``stop_timeout`` more ends the process (exit 70, and systemd starts it again),
so that no hung stage holds its task for ever.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
from pathlib import Path

import structlog

from daemon import cluster, talk
from daemon.archive import StageEntry
from daemon.config import Config
from daemon.grouping import kept_models, most_recent
from daemon.journal import Job
from daemon.runner import Attempt, FailureReport, JobStatus, Runner
from stages.base import Stage

log = structlog.get_logger("polishd.worker")

EXIT_HUNG = 70  # the process ended itself: a stage reached no safe point long past task_timeout


def parse_device(device: str | None) -> tuple[str | None, str | None]:
    """``--device`` → ([daemon].device, CUDA_VISIBLE_DEVICES): ``cuda:1`` shows this process GPU 1 alone."""
    if device is None:
        return None, None
    if device in ("auto", "cpu", "cuda", "mps"):
        return device, None
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", device[5:]
    raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps (got {device!r})")


def default_name(device: str | None) -> str:
    label = (device or "auto").replace(":", "")
    return f"{label}-{os.getpid()}@{socket.gethostname()}"


class Worker:
    def __init__(self, cfg: Config, stages: list[Stage], device: str | None, name: str):
        self.cfg = cfg
        self.cluster = cfg.cluster
        self.stages = stages
        self.device = device
        self.name = name
        self.stop = threading.Event()
        self.runner = Runner(None, lambda: cfg, stages, self.stop)  # each job brings its own Attempt
        self.talk = talk.start(cfg.log.progress_every)
        self.runner.progress = self.talk
        self.client = cluster.redis_client(self.cluster)
        self.started = time.time()
        self.jobs_done = 0
        self.idle_since = time.time()
        self._current: tuple[Job, str, float] | None = None  # job, task id, time.monotonic() at its start
        self._lease = None
        self._configs: dict[str, Config] = {}
        self._stopping_since: float | None = None
        self._beats_failing = False
        self.checkpoints: list[str] = []  # the checkpoints of its last jobs, newest first: what it likely holds
        self.keep = cfg.inpaint.max_loaded or 1  # how many it holds at once (known for sure after its first job)
        self._owned, self._owned_at = True, 0.0  # the running task's lease, as last asked of Redis (_owns)

    # ------------------------------------------------------------------ the task
    def execute(self, task_id: str, data: dict) -> dict:
        from celery.exceptions import Ignore, Reject

        job = cluster.job_of(data)
        structlog.contextvars.bind_contextvars(job=job.id, image=job.name, task=task_id)
        try:
            if self.stop.is_set():
                raise Reject("worker stopping", requeue=True)
            earlier = self.app.backend.get_task_meta(task_id)
            if earlier.get("status") == "SUCCESS":  # a late copy of a task another worker finished
                log.info("this task has finished already; copy dropped")
                raise Ignore()  # acknowledged, and no state stored over the result that stands
            lease = self.client.lock(cluster.key(self.cluster, "lease", task_id),
                                     timeout=self.cluster.heartbeat * 3, blocking=False,
                                     thread_local=False)  # the heartbeat thread keeps it
            if not lease.acquire(blocking=False):  # its other copy is running now: that one will answer
                log.info("another worker is running this task; copy dropped")
                raise Ignore()  # not Reject(requeue=False): Celery stores that as the task's FAILURE
            try:
                result = self._run(task_id, job, data, lease)
                if result["status"] == JobStatus.TAKEN_OVER:  # the other worker's result stands
                    raise Ignore()
                # Stored before the lease goes (Celery stores it again after we return): a copy that takes the
                # lease next finds the result and is dropped, never runs the job a second time.
                self.app.backend.store_result(task_id, result, "SUCCESS")
                return result
            finally:
                try:
                    lease.release()
                except Exception as exc:  # expired, or Redis is away: it lapses by itself
                    log.debug("task lease not released", error=str(exc))
        finally:
            structlog.contextvars.unbind_contextvars("job", "image", "task")

    def _run(self, task_id: str, job: Job, data: dict, lease) -> dict:
        received = time.time()
        idle_since = self.idle_since
        recorder = cluster.Recorder(data.get("duplicate_of"))
        try:
            cfg = self._config(data)
        except Exception as exc:  # the coordinator's config does not load here (a version skew)
            message = f"worker {self.name}: the job's config does not load here: {exc}"
            log.error("the job's config does not load on this worker", error=str(exc))
            if job.attempts < self.cfg.daemon.max_attempts:
                recorder.requeue(job, error=message, stage="worker")
                return self._result(recorder, JobStatus.RETRY, None, message, received, idle_since)
            recorder.failed(job, message, "worker", report=FailureReport.of(job, "WorkerError", message, "worker"))
            return self._result(recorder, JobStatus.FAILED, None, message, received, idle_since)
        attempt = Attempt(cfg, recorder, recorder, deadline=time.monotonic() + self.cluster.task_timeout,
                          owns=self._owns)
        self._current, self._lease = (job, task_id, time.monotonic()), lease
        self._owned, self._owned_at = True, 0.0
        self._beat()
        try:
            outcome = self.runner.run_job(job, attempt)
        finally:
            self._current, self._lease = None, None
        self._held(job.checkpoint or "", cfg)
        if outcome.status in (JobStatus.DONE, JobStatus.DUPLICATE, JobStatus.FAILED):
            self.jobs_done += 1
        result = self._result(recorder, outcome.status, outcome.archive, outcome.error, received, idle_since,
                              stages=outcome.stages)
        self.idle_since = time.time()
        self._beat()
        return result

    def _owns(self) -> bool:
        """Whether this worker still holds its task's lease (asked of Redis at most once a second).  A lease
        that lapsed while the worker could not beat (SIGSTOP, a frozen VM) and that nobody took is taken
        again; one another worker holds, or whose task has a result, is lost: the job is the other's."""
        lease, current = self._lease, self._current
        if lease is None or current is None:
            return True
        now = time.monotonic()
        if now - self._owned_at < 1.0:
            return self._owned
        try:
            self._owned = bool(lease.owned()) or self._retake(lease, current[1])
        except Exception as exc:  # Redis out of reach: not known; the coordinator drops a result it has
            log.debug("task lease not checked", error=cluster.redact(str(exc)))
            return self._owned
        self._owned_at = now
        return self._owned

    def _retake(self, lease, task_id: str) -> bool:
        if self.app.backend.get_task_meta(task_id).get("status") == "SUCCESS":
            return False
        return bool(lease.acquire(blocking=False))

    def _held(self, key: str, cfg: Config) -> None:
        """What the heartbeat says this worker holds: the checkpoints of its last jobs, as many as it keeps."""
        self.keep = kept_models(cfg.inpaint.max_loaded)
        self.checkpoints = most_recent(self.checkpoints, key, self.keep)

    def _result(self, recorder: cluster.Recorder, status: str, archive: Path | None, error: str | None,
                received: float, idle_since: float, stages: list[StageEntry] | None = None) -> dict:
        return {"ops": recorder.encoded(), "status": str(status), "archive": str(archive) if archive else None,
                "error": error, "worker": self.name, "received": received, "idle_since": idle_since,
                "finished": time.time(),
                "stages": {s.name: s.duration_s for s in stages or [] if s.done}}

    def _config(self, data: dict) -> Config:
        sha = data["config"]["sha256"]
        if sha not in self._configs:
            cfg = cluster.config_of(data)
            if self.device:
                cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, device=self.device))
            self._configs = {sha: cfg}  # the newest only: a reload replaces it
        return self._configs[sha]

    # ------------------------------------------------------------------ heartbeats
    def _beat(self) -> None:
        current = self._current
        state = "stopping" if self.stop.is_set() else ("running" if current else "idle")
        beat = cluster.WorkerBeat(
            name=self.name, host=socket.gethostname(), pid=os.getpid(), device=self.device or self.cfg.daemon.device,
            state=state, at=time.time(), started=self.started, jobs_done=self.jobs_done,
            job=current[0].id if current else None, image=current[0].name if current else None,
            task=current[1] if current else None, checkpoints=list(self.checkpoints), keep=self.keep)
        try:
            cluster.publish_beat(self.client, self.cluster, beat)
            if self._lease is not None and self._owns():
                self._lease.reacquire()
            if self._beats_failing:
                log.info("heartbeats reach the broker again")
            self._beats_failing = False
        except Exception as exc:
            if not self._beats_failing:
                log.warning("heartbeat not written; the broker is out of reach", error=cluster.redact(str(exc)))
            self._beats_failing = True

    def _heartbeats(self) -> None:
        while True:
            self._beat()
            self._guard()
            self.talk.tick()
            if self._done.wait(self.cluster.heartbeat):
                return

    def _guard(self) -> None:
        """Ends the process when its job can no longer be handed back in time (see the module's text)."""
        current, now = self._current, time.monotonic()
        if current is not None and now - current[2] > self.cluster.task_timeout + self.cfg.daemon.stop_timeout:
            log.error("a stage reached no safe point long past [cluster].task_timeout; the worker ends so that "
                      "its job is sent elsewhere", job=current[0].id, task_timeout=self.cluster.task_timeout)
            self._leave(EXIT_HUNG)
        if current is not None and self._stopping_since is not None \
                and now - self._stopping_since > self.cfg.daemon.stop_timeout:
            log.warning("stop_timeout reached; the worker leaves and its job is sent to another one",
                        job=current[0].id)
            self._leave(0)

    def _leave(self, code: int) -> None:
        try:
            cluster.forget_beat(self.client, self.cluster, self.name)  # the coordinator sends the job on at once
        except Exception as exc:
            log.debug("heartbeat not removed", error=str(exc))
        os._exit(code)

    # ------------------------------------------------------------------ the process
    def _on_signal(self, signum: int, _frame) -> None:
        """Stop taking tasks; the running job stops at its next safe point.  Flags only: no logging here
        (daemon/signals.py says why)."""
        from celery.worker import state

        self.received.append(signal.Signals(signum).name)
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        self.stop.set()
        state.should_stop = 0

    def run(self) -> int:
        from celery import bootsteps  # noqa: F401  (celery's worker machinery, loaded before the app starts)

        self.app = cluster.make_app(self.cluster)
        worker = self

        @self.app.task(name=cluster.TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
        def run_job(task, data: dict) -> dict:
            return worker.execute(task.request.id, data)

        controller = self.app.WorkController(
            hostname=self.name, pool_cls="solo", concurrency=1,
            queues=[cluster.own_queue(self.cluster, self.name), self.cluster.queue],
            without_gossip=True, without_mingle=True, without_heartbeat=True, prefetch_multiplier=1,
            state_db=None, optimization="fair")
        self.received: list[str] = []
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._done = threading.Event()
        beats = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beats.start()
        log.info("worker ready", worker=self.name, broker=cluster.redact(self.cluster.broker),
                 queue=self.cluster.queue, device=self.device or self.cfg.daemon.device,
                 task_timeout=self.cluster.task_timeout)
        try:
            controller.start()
        finally:
            if self.received:
                log.info("stopping: no new tasks; the running job finished or went back", signal=self.received[0])
            self._done.set()
            beats.join(timeout=5)
            for stage in self.stages:
                stage.close()
            talk.stop(self.talk)
            try:
                cluster.forget_beat(self.client, self.cluster, self.name)
            except Exception as exc:
                log.debug("heartbeat not removed", error=str(exc))
            log.info("worker stopped", worker=self.name, jobs_done=self.jobs_done)
        if self.received:
            return 0
        # Ended without being asked (Celery's "unrecoverable error"): a failure, which systemd restarts.
        log.error("the worker ended without being asked to stop", exitcode=getattr(controller, "exitcode", None))
        return getattr(controller, "exitcode", 0) or 1
