"""What the coordinator and its workers share: the Celery app, polishd's keys in Redis, the job as it travels.

With ``[cluster].broker`` set, ``polishd run`` is the coordinator (daemon/coordinator.py) and ``polishd worker``
processes run the jobs (daemon/worker.py).  The journal stays on the coordinator: a worker runs the same
runner against the shared ``[paths]``, and what the runner would have written to the journal or done to the
inbox file (settle the job, remove the file, move it to ``failed/``) it writes down instead (``Recorder``).
The task's result carries that list back, and the coordinator makes those calls (``apply``).

Celery carries the tasks: late acknowledgement, ``reject_on_worker_lost``, one task reserved per worker and a
visibility timeout longer than ``task_timeout``.  Redis also holds what Celery does not give a busy worker of
the solo pool (which cannot answer a broadcast while a job runs): each worker's heartbeat, naming the task it
is running, and a lease per task, so that two copies of one task never run at once.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon import config as config_mod
from daemon.config import ClusterConfig, Config, redact
from daemon.journal import Job, Journal
from daemon.runner import Endings, FailureReport
from stages import records

if TYPE_CHECKING:
    import redis
    from celery import Celery

TASK = "polishd.run_job"
RESULT_EXPIRES = 7 * 24 * 3600  # seconds a task's result stays in Redis: a late copy of the task finds it there


def make_app(cluster: ClusterConfig) -> Celery:
    from celery import Celery
    from kombu.transport import TRANSPORT_ALIASES

    # redis:// and rediss:// through kombu's Redis transport that drops what is not a task (daemon/broker.py);
    # the scheme itself is kept, and with it kombu's handling of TLS for rediss://.
    TRANSPORT_ALIASES.update(redis="daemon.broker:Transport", rediss="daemon.broker:Transport")
    app = Celery("polishd", broker=cluster.broker, backend=cluster.broker)  # the process's current app: one a process
    transport = {"visibility_timeout": cluster.visibility, "socket_timeout": 10, "socket_connect_timeout": 5,
                 "retry_on_timeout": True, "health_check_interval": 10}
    app.conf.update(
        result_backend=cluster.broker,
        task_default_queue=cluster.queue,
        task_acks_late=True,                 # a task leaves the queue only when its job has ended
        task_reject_on_worker_lost=True,     # … and goes back to it if the process running it dies
        worker_prefetch_multiplier=1,        # a worker holds one task at a time: the next is free for others
        broker_transport_options=transport,
        result_backend_transport_options={"socket_timeout": 10, "socket_connect_timeout": 5,
                                          "retry_on_timeout": True},
        result_expires=RESULT_EXPIRES,
        result_backend_always_retry=True,    # a result is stored once Redis is back, not lost
        result_backend_max_retries=120,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits out a broker that is down, however long
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                                   "interval_max": 1.0},
        worker_hijack_root_logger=False,     # logs stay structlog's (daemon/logs.py)
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        task_track_started=False,
        broker_connection_timeout=5,
    )
    return app


def redis_client(cluster: ClusterConfig) -> redis.Redis:
    import redis

    return redis.Redis.from_url(cluster.broker, socket_timeout=5, socket_connect_timeout=5, retry_on_timeout=True,
                                health_check_interval=10, decode_responses=True)


def own_queue(cluster: ClusterConfig, worker: str) -> str:
    """The queue a worker takes besides the shared one: jobs sent to it because it holds their checkpoint."""
    return f"{cluster.queue}@{worker}"


def key(cluster: ClusterConfig, *parts: str) -> str:
    return ":".join(["polishd", cluster.queue, *parts])


def broker_errors() -> tuple[type[BaseException], ...]:
    """What a broker that is down or out of reach raises, from each library that talks to it."""
    import kombu.exceptions
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
            ConnectionError, TimeoutError, OSError)


# --------------------------------------------------------------------------- workers, as Redis knows them


@dataclass
class WorkerBeat:
    name: str
    host: str
    pid: int
    device: str
    state: str                 # "idle", "running" or "stopping"
    at: float                  # when this heartbeat was written (time.time())
    started: float             # when the worker started
    jobs_done: int = 0
    job: int | None = None     # the journal id of the job it is running
    image: str | None = None
    task: str | None = None
    checkpoints: list[str] = dataclasses.field(default_factory=list)  # those its last jobs used, newest first
    keep: int = 1              # how many checkpoints it holds at once ([inpaint].max_loaded, or by its memory)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def publish_beat(client: redis.Redis, cluster: ClusterConfig, beat: WorkerBeat) -> None:
    client.set(key(cluster, "worker", beat.name), beat.to_json(), px=int(cluster.heartbeat * 3 * 1000))


def forget_beat(client: redis.Redis, cluster: ClusterConfig, name: str) -> None:
    client.delete(key(cluster, "worker", name))


def live_workers(client: redis.Redis, cluster: ClusterConfig) -> list[WorkerBeat]:
    """Every worker whose last heartbeat has not expired (three heartbeats), by name."""
    keys = sorted(client.scan_iter(match=key(cluster, "worker", "*"), count=500))
    if not keys:
        return []
    fields = {f.name for f in dataclasses.fields(WorkerBeat)}
    beats = []
    for raw in client.mget(keys):
        if raw:
            data = json.loads(raw)
            beats.append(WorkerBeat(**{k: v for k, v in data.items() if k in fields}))
    return beats


def queue_length(client: redis.Redis, cluster: ClusterConfig) -> int:
    """Tasks waiting in the broker (not those a worker holds): the length of the queue's Redis list."""
    return int(client.llen(cluster.queue))


def cluster_status(cfg: Config) -> dict:
    """For ``polishd status``: the broker (redacted), its queue and each worker, or why it is out of reach."""
    cluster = cfg.cluster
    out: dict[str, Any] = {"broker": redact(cluster.broker), "queue": cluster.queue}
    try:
        client = redis_client(cluster)
        out["queue_length"] = queue_length(client, cluster)
        now = time.time()
        out["workers"] = [{"name": b.name, "host": b.host, "pid": b.pid, "device": b.device, "state": b.state,
                           "job": b.job, "image": b.image, "jobs_done": b.jobs_done,
                           "last_heartbeat_s": round(max(0.0, now - b.at), 1)}
                          for b in live_workers(client, cluster)]
        out["reachable"] = True
        client.close()
    except broker_errors() as exc:
        out.update(reachable=False, error=redact(str(exc)), workers=[])
    return out


# --------------------------------------------------------------------------- the job as it travels


def payload(job: Job, cfg: Config, duplicate_of: Job | None) -> dict:
    """Everything a worker needs for one job: the job, the coordinator's config (so that every node runs the
    settings in force, reloads included) and, for the duplicates rule, the earlier job with the same bytes."""
    return {"job": dataclasses.asdict(job),
            "config": {"data": cfg.raw, "source": str(cfg.source) if cfg.source else None, "sha256": cfg.sha256},
            "duplicate_of": {"id": duplicate_of.id, "archive": duplicate_of.archive, "sha256": duplicate_of.sha256}
            if duplicate_of is not None and duplicate_of.archive else None,
            "sent": time.time()}


def job_of(data: dict) -> Job:
    fields = {f.name for f in dataclasses.fields(Job)}
    return Job(**{k: v for k, v in data["job"].items() if k in fields})


def config_of(data: dict) -> Config:
    c = data["config"]
    source = Path(c["source"]) if c["source"] else None
    return config_mod.from_data(c["data"], source.name if source else "pipeline.toml", source, c["sha256"])


@dataclass(frozen=True)
class _Earlier:
    id: int
    archive: str
    sha256: str


# ---------------------------------------------------------------------- what a worker's attempt did, as values


@dataclass(frozen=True)
class SetArchive:
    archive: str | None


@dataclass(frozen=True)
class SetSha256:
    sha256: str


@dataclass(frozen=True)
class Requeue:
    error: str | None = None
    stage: str | None = None
    count_attempt: bool = True


@dataclass(frozen=True)
class Done:
    sha256: str
    archive: str


@dataclass(frozen=True)
class Duplicate:
    first_id: int
    sha256: str


@dataclass(frozen=True)
class Failed:
    message: str
    stage: str
    report: FailureReport | None = None
    problems: list[str] = dataclasses.field(default_factory=list)


Op = SetArchive | SetSha256 | Requeue | Done | Duplicate | Failed
OPS: dict[str, type] = {"set_archive": SetArchive, "set_sha256": SetSha256, "requeue": Requeue, "done": Done,
                        "duplicate": Duplicate, "failed": Failed}
_NAMES = {kind: name for name, kind in OPS.items()}


def encode_op(op: Op) -> dict:
    """An op as it travels in the task's result: ``{"op": name, ...its fields}``."""
    return {"op": _NAMES[type(op)], **records.to_json(op)}


def decode_op(data: Any) -> Op:
    """An op from a task's result (also ``[name, fields]``, as workers of the release before wrote them);
    ValueError for anything else."""
    if isinstance(data, list) and len(data) == 2 and isinstance(data[1], dict):
        data = {"op": data[0], **data[1]}
    if not isinstance(data, dict) or data.get("op") not in OPS:
        raise ValueError(f"a worker sent an unknown step {data!r:.200}")
    try:
        return records.from_json(OPS[data["op"]], {k: v for k, v in data.items() if k != "op"}, data["op"])
    except records.RecordError as exc:
        raise ValueError(f"a worker sent a malformed step: {exc}") from None


class Recorder:
    """A worker's journal and endings for one job (``runner.JobLog`` and ``runner.Endings``): the calls the runner
    makes, written down as ops for the coordinator.

    The runner asks one question of the journal, whether the same bytes finished earlier: the coordinator
    answered it when it sent the job."""

    def __init__(self, duplicate_of: dict | None):
        self.ops: list[Op] = []
        self._earlier = _Earlier(**duplicate_of) if duplicate_of else None

    # what a job records while it runs
    def set_archive(self, job_id: int, archive: str | None) -> None:
        self.ops.append(SetArchive(archive))

    def set_sha256(self, job_id: int, sha256: str) -> None:
        self.ops.append(SetSha256(sha256))

    def first_done_with(self, sha256: str, before_id: int) -> _Earlier | None:
        earlier = self._earlier
        return earlier if earlier is not None and earlier.sha256 == sha256 and earlier.id < before_id else None

    # how it ends
    def requeue(self, job: Job, *, error: str | None = None, stage: str | None = None,
                count_attempt: bool = True) -> None:
        self.ops.append(Requeue(error, stage, count_attempt))

    def done(self, job: Job, sha256: str, archive: Path) -> None:
        self.ops.append(Done(sha256, str(archive)))

    def duplicate(self, job: Job, first_id: int, sha256: str) -> None:
        self.ops.append(Duplicate(first_id, sha256))

    def failed(self, job: Job, message: str, stage: str, report: FailureReport | None,
               problems: list[str] | None = None) -> str:
        self.ops.append(Failed(message, stage, report, list(problems or [])))
        return "; ".join([message, *(problems or [])])

    def encoded(self) -> list[dict]:
        return [encode_op(op) for op in self.ops]


def apply(ops: list, job: Job, journal: Journal, endings: Endings) -> None:
    """The coordinator makes the calls a worker wrote down, in order, against its journal and inbox."""
    decoded = [decode_op(op) for op in ops]  # all of them read before any is made
    for op in decoded:
        match op:
            case SetArchive(archive):
                journal.set_archive(job.id, archive)
            case SetSha256(sha256):
                journal.set_sha256(job.id, sha256)
            case Requeue(error, stage, count_attempt):
                endings.requeue(job, error=error, stage=stage, count_attempt=count_attempt)
            case Done(sha256, archive):
                endings.done(job, sha256, Path(archive))
            case Duplicate(first_id, sha256):
                endings.duplicate(job, first_id, sha256)
            case Failed(message, stage, report, problems):
                endings.failed(job, message, stage, report, problems)
