"""Scale-out against a real Redis server: a coordinator (`polishd run` with a broker) and `polishd worker`
processes, each a real process with the test stages, and the faults a cluster meets.

Exactly once means, at the end of every case: one archive folder per distinct sha256, the journal and the
archives agree, and the inbox is empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.kit import jsonlog
from bench.kit.redis_server import REDIS, RedisServer
from daemon import config as config_mod
from daemon.journal import Journal
from tests.conftest import REPO, manifest_of, png_bytes, write_config
from tests.test_daemon import wait_until

if REDIS is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the cluster tests: .ci/run installs redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (apt-get install redis-server)")


class Proc:
    """One polishd process with the test stages, its JSON log in a file."""

    def __init__(self, root: Path, name: str, args: list[str], ready: str, sleep: float, stages: str):
        self.root, self.name, self.ready = root, name, ready
        self.log = root / f"{name}.log"
        self.cmd = [sys.executable, "-m", "tests.helpers.run_polishd", "--sleep", str(sleep), "--stages", stages,
                    "--", "--config", str(root / "pipeline.toml"), *args]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.ready in self.events() or self.proc.poll() is not None, 40, f"{self.name} start")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self

    def records(self) -> list[dict]:
        return jsonlog.records(self.log)

    def events(self) -> list[str]:
        return [r.get("event", "") for r in self.records()]

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else 0


class Cluster:
    def __init__(self, root: Path, redis: RedisServer, stages: str = "sleep,copy", sleep: float = 0.0,
                 task_timeout: float = 20.0, extra: str = ""):
        self.root, self.redis, self.stages, self.sleep = root, redis, stages, sleep
        write_config(root, extra=f'[cluster]\nbroker = "{redis.url}"\ntask_timeout = {task_timeout}\n'
                                 f'visibility_timeout = {task_timeout + 10}\nheartbeat = 0.5\n{extra}')
        self.procs: list[Proc] = []

    def coordinator(self, name: str = "coordinator") -> Proc:
        p = Proc(self.root, name, ["run"], "watching", self.sleep, self.stages)
        self.procs.append(p)
        return p.start()

    def worker(self, name: str, sleep: float | None = None) -> Proc:
        p = Proc(self.root, name, ["worker", "--name", name, "--device", "cpu"], "worker ready",
                 self.sleep if sleep is None else sleep, self.stages)
        self.procs.append(p)
        return p.start()

    def journal(self) -> Journal:
        return Journal(self.root / "state" / "journal.sqlite3")

    def settled(self) -> int:
        j = self.journal()
        try:
            c = j.counts()
            return c["done"] + c["duplicate"] + c["failed"]
        finally:
            j.close()

    def beats(self) -> list:
        from daemon import cluster

        cfg = config_mod.load(self.root / "pipeline.toml")
        client = cluster.redis_client(cfg.cluster)
        try:
            return cluster.live_workers(client, cfg.cluster)
        finally:
            client.close()

    def drop(self, name: str, seed: int) -> bytes:
        data = png_bytes(seed=seed)
        (self.root / "inbox" / name).write_bytes(data)
        return data

    def completions(self, stage: str) -> dict[str, int]:
        """How often each image's ``stage`` really ran, over every worker's log."""
        counts: dict[str, int] = {}
        for p in self.procs:
            for r in p.records():
                if r.get("event") == "stage completed" and r.get("stage") == stage:
                    counts[r["image"]] = counts.get(r["image"], 0) + 1
        return counts

    def assert_exactly_once(self, dropped: dict[str, bytes], failed: tuple[str, ...] = ()) -> None:
        archives = sorted(p for p in (self.root / "archive").iterdir() if p.is_dir())
        by_sha: dict[str, list[Path]] = {}
        for a in archives:
            by_sha.setdefault(manifest_of(a).source.sha256, []).append(a)
        expected = {hashlib.sha256(d).hexdigest() for d in dropped.values()}
        assert set(by_sha) == expected and all(len(v) == 1 for v in by_sha.values()), by_sha
        j = self.journal()
        try:
            jobs = j.jobs()
            assert sorted(job.name for job in jobs) == sorted(dropped), [(x.id, x.name, x.state) for x in jobs]
            for job in jobs:
                want = "failed" if job.name in failed else "done"
                assert job.state == want, (job.name, job.state, job.last_error)
                manifest = manifest_of(by_sha[job.sha256][0])
                assert manifest.status == want and manifest.job == job.id
                if want == "done":
                    assert job.archive == str(by_sha[job.sha256][0])
        finally:
            j.close()
        assert list((self.root / "inbox").iterdir()) == []

    def close(self) -> None:
        for p in self.procs:
            if p.proc and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def make_cluster(tmp_path, redis_server):
    made: list[Cluster] = []

    def make(**kw) -> Cluster:
        c = Cluster(tmp_path, redis_server, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.mark.slow
def test_a_worker_killed_mid_job_has_its_job_finished_once_by_another_resuming_from_the_archive(make_cluster):
    c = make_cluster(stages="copy,sleep", sleep=3.0)
    coordinator = c.coordinator()
    workers = {name: c.worker(name) for name in ("w1", "w2")}
    dropped = {"k.png": c.drop("k.png", 1)}
    beat = wait_until(lambda: next((b for b in c.beats() if b.job is not None), None), what="the job on a worker")
    time.sleep(1.0)  # copy is done, sleep is under way
    workers[beat.name].kill9()
    wait_until(lambda: c.settled() == 1, timeout=60, what="the job finished")
    survivor = workers["w2" if beat.name == "w1" else "w1"]
    kept = [r for r in survivor.records() if r.get("event") == "stage kept from an earlier attempt"]
    assert [r["stage"] for r in kept] == ["copy"]  # resumed: the copy the killed worker made is kept
    assert c.completions("sleep") == {"k-" + hashlib.sha256(dropped["k.png"]).hexdigest()[:8]: 1}
    assert any(r.get("event") == "task sent again" and "stopped beating" in r.get("reason", "")
               for r in coordinator.records())
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)


def test_a_copy_of_a_running_task_is_dropped_without_failing_the_task(make_cluster):
    from daemon import cluster

    c = make_cluster(stages="copy,sleep", sleep=3.0)
    coordinator = c.coordinator()
    workers = [c.worker(name) for name in ("w1", "w2")]
    dropped = {"c.png": c.drop("c.png", 5)}
    beat = wait_until(lambda: next((b for b in c.beats() if b.job is not None), None), what="the job on a worker")
    cfg = config_mod.load(c.root / "pipeline.toml")
    app = cluster.make_app(cfg.cluster)
    job = c.journal().get(beat.job)
    other = next(w for w in workers if w.name != beat.name)
    app.send_task(cluster.TASK, args=[cluster.payload(job, cfg, None)], task_id=beat.task,
                  queue=cluster.own_queue(cfg.cluster, other.name))  # what a resend or a redelivery makes
    wait_until(lambda: "another worker is running this task; copy dropped" in other.events(), 20, "the copy")
    assert app.backend.get_task_meta(beat.task)["status"] != "FAILURE"  # the running one is not failed
    wait_until(lambda: c.settled() == 1, timeout=30, what="the job finished")
    finished = c.journal().get(beat.job)
    assert (finished.state, finished.attempts, finished.last_error) == ("done", 1, None)
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)


@pytest.mark.slow
def test_a_worker_frozen_mid_job_and_thawed_after_another_finished_it_writes_nothing_more(make_cluster):
    c = make_cluster(stages="copy,sleep", sleep=4.0)
    coordinator = c.coordinator()
    workers = {name: c.worker(name) for name in ("w1", "w2")}
    dropped = {"f.png": c.drop("f.png", 3)}
    beat = wait_until(lambda: next((b for b in c.beats() if b.job is not None), None), what="the job on a worker")
    time.sleep(1.0)  # copy is done, sleep is under way
    frozen = workers[beat.name]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: c.settled() == 1, timeout=60, what="the other worker finished the job")
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    (folder,) = [p for p in (c.root / "archive").iterdir() if p.is_dir()]
    settled = {p.name: p.read_bytes() for p in folder.iterdir()}
    wait_until(lambda: "the job was sent to another worker" in " ".join(frozen.events()), timeout=30,
               what="the thawed worker noticing")
    time.sleep(1.0)  # were it still going, its next stage or manifest would land now
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == settled
    assert manifest_of(folder).status == "done"
    assert frozen.proc.poll() is None  # it lives on and takes the next job
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)


@pytest.mark.slow
def test_a_coordinator_killed_mid_run_and_restarted_loses_nothing_and_does_nothing_twice(make_cluster):
    c = make_cluster(sleep=1.0)
    coordinator = c.coordinator()
    c.worker("w1")
    c.worker("w2")
    dropped = {f"c{i}.png": c.drop(f"c{i}.png", 10 + i) for i in range(6)}
    wait_until(lambda: c.settled() >= 1 and any(b.job is not None for b in c.beats()), timeout=40,
               what="some jobs done, some running")
    coordinator.kill9()
    dropped |= {f"late{i}.png": c.drop(f"late{i}.png", 30 + i) for i in range(2)}  # while it is down
    time.sleep(1.5)  # the workers finish what they hold meanwhile
    restarted = c.coordinator("coordinator-2")
    wait_until(lambda: c.settled() == len(dropped), timeout=90, what="every job settled")
    assert restarted.stop() == 0
    c.assert_exactly_once(dropped)
    ran = c.completions("sleep")
    assert len(ran) == len(dropped) and set(ran.values()) == {1}, ran


@pytest.mark.slow
def test_redis_stopped_for_10_s_then_started_again_and_queued_jobs_complete(make_cluster, redis_server):
    c = make_cluster(sleep=0.5)
    coordinator = c.coordinator()
    c.worker("w1")
    c.worker("w2")
    dropped = {f"r{i}.png": c.drop(f"r{i}.png", 50 + i) for i in range(3)}
    wait_until(lambda: c.settled() == 3, timeout=40, what="the first three jobs")
    down = time.monotonic()
    redis_server.stop()
    dropped |= {f"during{i}.png": c.drop(f"during{i}.png", 60 + i) for i in range(3)}
    j = c.journal()
    wait_until(lambda: len(j.jobs()) == 6, timeout=9, what="files taken into the journal while Redis is down")
    j.close()
    time.sleep(max(0.0, 10.0 - (time.monotonic() - down)))
    redis_server.start()
    wait_until(lambda: c.settled() == 6, timeout=90, what="the queued jobs completed")
    events = coordinator.events()
    assert "the broker is out of reach; files are still taken into the journal, and jobs are sent when it is " \
           "back" in events
    assert "the broker is reachable again" in events
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)


def test_tasks_a_restarted_redis_lost_are_sent_again_when_it_is_back_not_after_task_timeout(make_cluster,
                                                                                           redis_server):
    c = make_cluster(sleep=2.0, task_timeout=60.0)
    coordinator = c.coordinator()
    c.worker("w1")
    dropped = {f"lost{i}.png": c.drop(f"lost{i}.png", 80 + i) for i in range(3)}
    # One job running on the worker, one waiting in its queue in Redis: that one a restart without an
    # append-only file loses.
    wait_until(lambda: any(b.job is not None for b in c.beats()), timeout=30, what="a job on the worker")
    redis_server.stop()
    import shutil

    shutil.rmtree(redis_server.folder / "appendonlydir", ignore_errors=True)  # a Redis without its append-only
    (redis_server.folder / "dump.rdb").unlink(missing_ok=True)                # file comes back empty
    redis_server.start()
    back = time.monotonic()
    wait_until(lambda: c.settled() == 3, timeout=40, what="every job, the lost one sent again")
    assert time.monotonic() - back < 40  # task_timeout is 60 s: the lost task did not wait for it
    assert any(r.get("event") == "task sent again" and "may have lost the task" in r.get("reason", "")
               for r in coordinator.records())
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)


def test_a_poison_job_is_retried_up_to_max_attempts_then_failed_and_never_blocks_the_others(make_cluster):
    c = make_cluster(stages="poison,sleep", sleep=0.3)
    coordinator = c.coordinator()
    c.worker("w1")
    c.worker("w2")
    dropped = {"poison.png": c.drop("poison.png", 70)}
    dropped |= {f"good{i}.png": c.drop(f"good{i}.png", 71 + i) for i in range(4)}
    wait_until(lambda: c.settled() == 5, timeout=60, what="every job settled")
    assert coordinator.stop() == 0
    report = json.loads((c.root / "failed" / "poison.png.error.json").read_text())
    assert report["stage"] == "poison" and report["attempts"] == 3 and "poisons the model" in report["message"]
    assert (c.root / "failed" / "poison.png").read_bytes() == dropped["poison.png"]
    c.assert_exactly_once(dropped, failed=("poison.png",))
    j = c.journal()
    (poison,) = [job for job in j.jobs() if job.name == "poison.png"]
    assert poison.state == "failed" and poison.attempts == 3 and poison.error_stage == "poison"
    j.close()


def test_a_worker_stopped_with_sigterm_hands_its_job_back_within_stop_timeout(make_cluster):
    c = make_cluster(sleep=30.0)  # stop_timeout is 10 s (tests/conftest.py)
    coordinator = c.coordinator()
    first = c.worker("w1")
    dropped = {"t.png": c.drop("t.png", 80)}
    wait_until(lambda: any(b.job is not None for b in c.beats()), what="the job on w1")
    time.sleep(0.5)
    asked = time.monotonic()
    assert first.stop(timeout=15) == 0
    assert time.monotonic() - asked < 10.0
    j = c.journal()
    wait_until(lambda: j.jobs()[0].state == "queued" or j.jobs()[0].task is not None, what="the job handed back")
    c.worker("w2", sleep=0.2)  # takes it from here
    wait_until(lambda: c.settled() == 1, timeout=40, what="the job finished on w2")
    (job,) = j.jobs()
    assert job.attempts == 1  # handing back is not a failed attempt
    j.close()
    assert "stopping: no new tasks; the running job finished or went back" in first.events()
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)


def test_status_shows_the_queue_and_each_worker_and_never_the_password(tmp_path):
    server = RedisServer(tmp_path / "redis", password="s3cret-pw").start()
    c = Cluster(tmp_path, server, sleep=0.0)
    (tmp_path / "var" / "outbox").mkdir(parents=True)  # the shared folders, as a coordinator would have made them
    try:
        c.worker("gpu0")
        (tmp_path / "state").mkdir(exist_ok=True)
        Journal(tmp_path / "state" / "journal.sqlite3").close()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        text = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(tmp_path / "pipeline.toml"),
                               "status"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        data = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--config",
                               str(tmp_path / "pipeline.toml"), "--json"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)
        assert text.returncode == 0 and data.returncode == 0, text.stderr + data.stderr
        cluster = json.loads(data.stdout)["cluster"]
        assert cluster["reachable"] and cluster["queue_length"] == 0
        (w,) = cluster["workers"]
        assert w["name"] == "gpu0" and w["device"] == "cpu" and w["state"] == "idle" and w["jobs_done"] == 0
        assert w["last_heartbeat_s"] < 2.0
        assert "gpu0 [cpu] idle; 0 done" in text.stdout
        assert f"redis://:***@127.0.0.1:{server.port}/0" in text.stdout
        for output in (text.stdout, text.stderr, data.stdout, c.procs[0].log.read_text()):
            assert "s3cret-pw" not in output
    finally:
        c.close()
        server.stop()
    # With the broker gone, status says so in one line and still shows the journal.
    down = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(tmp_path / "pipeline.toml"),
                           "status"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=60)
    assert down.returncode == 0 and "is out of reach" in down.stdout and "s3cret-pw" not in down.stdout


def test_status_does_not_call_jobs_running_that_no_worker_has_taken(make_cluster):
    c = make_cluster()
    c.coordinator()
    dropped = {f"{i}.png": c.drop(f"{i}.png", seed=i) for i in range(2)}

    def status() -> str:
        out = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(c.root / "pipeline.toml"),
                              "status"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    wait_until(lambda: len(c.journal().dispatched()) == 2, 30, "both sent to the broker")
    text = status()
    assert "running 0 (and 2 sent to the broker, waiting for a worker)" in text and "workers: 0" in text, text
    c.worker("w1")
    wait_until(lambda: c.settled() == 2, 60, "both done")
    assert "waiting for a worker" not in status()
    c.assert_exactly_once(dropped)


@pytest.mark.slow
def test_a_job_past_task_timeout_fails_at_a_safe_point_and_is_retried_then_failed(make_cluster):
    c = make_cluster(sleep=30.0, task_timeout=1.5)
    coordinator = c.coordinator()
    c.worker("w1")
    dropped = {"slow.png": c.drop("slow.png", 90)}
    wait_until(lambda: c.settled() == 1, timeout=60, what="the job settled")
    assert coordinator.stop() == 0
    report = json.loads((c.root / "failed" / "slow.png.error.json").read_text())
    assert report["error"] == "JobTimeout" and report["attempts"] == 3 and report["stage"] == "sleep"
    assert "[cluster].task_timeout" in report["message"]
    c.assert_exactly_once(dropped, failed=("slow.png",))


@pytest.mark.slow
def test_a_worker_whose_stage_never_reaches_a_safe_point_ends_itself_and_the_job_goes_on(make_cluster):
    c = make_cluster(stages="hang,copy", sleep=600.0, task_timeout=1.5)
    config = c.root / "pipeline.toml"
    config.write_text(config.read_text().replace("stop_timeout = 10.0", "stop_timeout = 1.0"))
    coordinator = c.coordinator()
    stuck = c.worker("w1")
    dropped = {"h.png": c.drop("h.png", 91)}
    wait_until(lambda: any(b.job is not None for b in c.beats()), what="the job on w1")
    assert stuck.proc.wait(20) == 70  # task_timeout + stop_timeout, then the process ends itself
    assert "a stage reached no safe point long past [cluster].task_timeout; the worker ends so that its job " \
           "is sent elsewhere" in stuck.events()
    c.worker("w2", sleep=0.0)
    wait_until(lambda: c.settled() == 1, timeout=40, what="the job finished on w2")
    assert any(r.get("event") == "task sent again" for r in coordinator.records())
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)


def test_a_worker_needs_a_broker_a_known_device_and_the_shared_folders(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def worker(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(tmp_path / "pipeline.toml"),
                               "worker", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    write_config(tmp_path)
    out = worker()
    assert out.returncode == 2 and "[cluster].broker is not set" in out.stderr and "Traceback" not in out.stderr
    write_config(tmp_path, extra='[cluster]\nbroker = "redis://127.0.0.1:9/0"\n')
    out = worker("--device", "tpu")
    assert out.returncode == 2 and "--device must be auto, cpu, cuda, cuda:N or mps (got 'tpu')" in out.stderr
    (tmp_path / "inbox").rmdir()
    out = worker()
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"[paths].inbox = {tmp_path / 'inbox'} does not exist on this machine: mount the storage" in out.stderr
    assert not (tmp_path / "inbox").exists()  # never papered over with an empty local folder


def test_workers_keep_the_checkpoints_they_hold_jobs_of_one_checkpoint_going_to_the_worker_that_has_it(make_cluster):
    from PIL import Image, PngImagePlugin

    c = make_cluster(stages="sleep", sleep=1.0)
    coordinator = c.coordinator()
    for name in ("w1", "w2"):
        c.worker(name)
    dropped, checkpoint = {}, {}
    models = "AABABBABAABBBAABABAB"  # two checkpoints mixed, as an inbox of generations arrives
    for n, m in enumerate(models):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"a cat\nSteps: 20, Seed: {n}, Model: {'ponyXL' if m == 'B' else 'sd15'}")
        path = c.root / "inbox" / f"{n:02d}.png"
        Image.new("RGB", (32, 32), (n * 10, 0, 0)).save(path, pnginfo=info)
        dropped[path.name] = path.read_bytes()
        checkpoint[f"{n:02d}.png"] = m
    wait_until(lambda: c.settled() == len(models), timeout=120, what="the jobs done")
    j = c.journal()
    try:
        assert {x.checkpoint for x in j.jobs()} == {"ponyxl", "sd15"}  # as the watcher read them
    finally:
        j.close()
    by_worker: dict[str, list[str]] = {}
    for r in coordinator.records():
        if r.get("event") == "job finished":
            by_worker.setdefault(r["worker"], []).append(checkpoint[r["image"]])
    assert sum(len(v) for v in by_worker.values()) == len(models) and set(by_worker) == {"w1", "w2"}
    # Each worker changes checkpoint rarely (sent as they arrive, to whichever worker is free, they change on
    # most jobs): the first jobs go out before any worker holds anything; after that a job goes to the worker
    # that holds its checkpoint.
    changes = {w: sum(a != b for a, b in zip(ks, ks[1:], strict=False)) for w, ks in by_worker.items()}
    assert sum(changes.values()) <= 4, by_worker
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)


def test_garbage_on_the_queue_is_dropped_and_said_and_the_workers_go_on(make_cluster, redis_server):
    import redis

    c = make_cluster(stages="copy")
    coordinator = c.coordinator()
    worker = c.worker("w1")
    client = redis.Redis.from_url(redis_server.url)
    try:  # as `redis-cli lpush polishd garbage-not-json` does, on the shared queue and on the worker's own
        client.lpush("polishd", "garbage-not-json")
        client.lpush("polishd@w1", '{"valid json": "but no envelope"}')
    finally:
        client.close()
    dropped = {"after.png": c.drop("after.png", 5)}
    wait_until(lambda: c.settled() == 1, timeout=60, what="the job after the garbage")
    assert worker.proc.poll() is None  # still running
    said = [r for r in worker.records() if r.get("event") == "a message on the queue that is not a task was dropped"]
    assert len(said) == 2 and not [r for r in worker.records() if "Unrecoverable" in str(r.get("event", ""))]
    assert coordinator.stop() == 0
    c.assert_exactly_once(dropped)
