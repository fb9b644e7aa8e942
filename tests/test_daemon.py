"""``polishd run`` as a real process: real watchdog, real files, real signals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.kit import jsonlog
from daemon.journal import Journal
from tests.conftest import DATA, REPO, jpeg_bytes, manifest_of, png_bytes, write_config
from tests.test_intake import bomb_png, truncated_jpeg_that_verifies

HELPER = REPO / "tests" / "helpers" / "run_polishd.py"


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Polishd:
    def __init__(self, root: Path, sleep: float = 0.0, env: dict | None = None):
        self.root = root
        self.config = root / "pipeline.toml"
        self.log = root / "polishd.log"
        self.sleep = sleep
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Polishd:
        with open(self.log, "ab") as logf:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.helpers.run_polishd", "--sleep", str(self.sleep), "--",
                 "--config", str(self.config), "run"],
                cwd=REPO, env=self.env, stdout=logf, stderr=subprocess.STDOUT)
        wait_until(lambda: "watching" in self.events() or self.proc.poll() is not None, 30, "daemon start")
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def events(self) -> list[str]:
        return [r.get("event", "") for r in self.records()]

    def records(self) -> list[dict]:
        return jsonlog.records(self.log)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else 0

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def journal(self) -> Journal:
        return Journal(self.root / "state" / "journal.sqlite3")

    def done(self) -> int:
        j = self.journal()
        try:
            c = j.counts()
            return c["done"] + c["duplicate"] + c["failed"]
        finally:
            j.close()


@pytest.fixture
def daemon(tmp_path):
    write_config(tmp_path)
    procs: list[Polishd] = []

    def make(sleep: float = 0.0, env: dict | None = None) -> Polishd:
        p = Polishd(tmp_path, sleep, env)
        procs.append(p)
        return p

    yield make
    for p in procs:
        if p.proc and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def archives(root: Path) -> list[Path]:
    return sorted(p for p in (root / "archive").iterdir() if p.is_dir())


def test_files_before_start_moved_in_and_renamed_are_each_processed_once(daemon, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "early.png").write_bytes(png_bytes(seed=1))
    d = daemon().start()
    # Moved in from elsewhere on the same filesystem.
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png_bytes(seed=2))
    os.replace(outside, inbox / "moved.png")
    # Written under a temporary name, then renamed (how browsers and rsync deliver).
    (inbox / "late.png.part").write_bytes(png_bytes(seed=3))
    os.replace(inbox / "late.png.part", inbox / "late.png")
    wait_until(lambda: d.done() == 3, what="three jobs")
    wait_until(lambda: list(inbox.iterdir()) == [], what="empty inbox")
    assert d.stop() == 0
    names = sorted(manifest_of(a).source.name for a in archives(tmp_path))
    assert names == ["early.png", "late.png", "moved.png"]
    j = d.journal()
    assert [job.state for job in j.jobs()] == ["done"] * 3


def test_a_file_written_slowly_is_taken_once_after_it_is_stable(daemon, tmp_path):
    d = daemon().start()
    data = (DATA / "astronaut.png").read_bytes()
    target = tmp_path / "inbox" / "slow.png"
    chunk = len(data) // 8 + 1
    with open(target, "wb") as f:
        for i in range(8):
            f.write(data[i * chunk:(i + 1) * chunk])
            f.flush()
            time.sleep(0.15)  # shorter than stability_delay (0.3 s): still "being written"
            assert d.done() == 0
    wait_until(lambda: d.done() == 1, what="the slow file")
    time.sleep(1.0)
    assert d.done() == 1
    (archive,) = archives(tmp_path)
    assert (archive / "00-original.png").read_bytes() == data
    assert list((tmp_path / "failed").iterdir()) == []


def test_kill_9_mid_job_then_restart_completes_the_job_once(daemon, tmp_path):
    data = png_bytes(seed=9)
    (tmp_path / "inbox" / "k.png").write_bytes(data)
    d = daemon(sleep=3.0).start()
    j = d.journal()
    wait_until(lambda: j.counts()["running"] == 1, what="job running")
    time.sleep(0.5)
    d.kill9()
    assert j.counts()["running"] == 1  # the crash left it running
    d2 = daemon(sleep=0.2).start()
    wait_until(lambda: d2.done() == 1, what="job finished after restart")
    assert d2.stop() == 0
    assert "recovered jobs left running by an earlier process" in d2.events()
    (archive,) = archives(tmp_path)
    assert [p.name for p in archive.glob("00-original.*")] == ["00-original.png"]
    assert (archive / "00-original.png").read_bytes() == data
    assert manifest_of(archive).status == "done"
    assert list((tmp_path / "inbox").iterdir()) == []
    assert list((tmp_path / "failed").iterdir()) == []
    assert not [p for p in archive.iterdir() if p.name.endswith(".tmp")]


def test_a_burst_of_200_files_is_processed_exactly_once(daemon, tmp_path):
    d = daemon().start()
    inbox = tmp_path / "inbox"
    for i in range(200):
        (inbox / f"burst-{i:03d}.png").write_bytes(png_bytes(size=(16, 16), seed=i))
    wait_until(lambda: d.done() == 200, timeout=120, what="200 jobs")
    assert d.stop() == 0
    j = d.journal()
    jobs = j.jobs()
    assert len(jobs) == 200 and {job.state for job in jobs} == {"done"}
    assert sorted(job.name for job in jobs) == sorted(f"burst-{i:03d}.png" for i in range(200))
    folders = archives(tmp_path)
    assert len(folders) == 200
    assert sorted(manifest_of(f).source.name for f in folders) == \
        sorted(job.name for job in jobs)
    assert list(inbox.iterdir()) == []


def test_bad_inputs_land_in_failed_with_reports_and_the_daemon_goes_on(daemon, tmp_path):
    inbox = tmp_path / "inbox"
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes(seed=5))
    outside_before = outside.read_bytes()
    d = daemon().start()
    bad = {
        "zero.png": b"",
        "truncated.png": png_bytes()[:70],
        "truncated.jpg": truncated_jpeg_that_verifies(),
        "random bytes.png": os.urandom(2048),
        "bomb.png": bomb_png(),
        "dots..name.png": b"GIF89a not accepted",
        "ünïcödé\nnewline.png": b"\x89PNG\r\n\x1a\n broken",
    }
    for name, data in bad.items():
        (inbox / name).write_bytes(data)
    (inbox / "symlink.png").symlink_to(outside)
    os.link(outside, inbox / "hardlink.png")
    (inbox / "good after bad.jpg").write_bytes(jpeg_bytes())
    wait_until(lambda: d.done() == len(bad) + 3, timeout=40, what="all files handled")
    assert d.stop() == 0
    failed = tmp_path / "failed"
    for name in [*bad, "symlink.png", "hardlink.png"]:
        report = json.loads((failed / f"{name}.error.json").read_text())
        assert report["image"] == name and report["stage"] == "intake" and report["message"]
        assert os.path.lexists(failed / name)
    for name, data in bad.items():
        assert (failed / name).read_bytes() == data  # nothing lost, nothing rewritten
    assert (failed / "symlink.png").is_symlink()
    assert outside.read_bytes() == outside_before
    (good,) = archives(tmp_path)
    assert manifest_of(good).status == "done"
    assert list(inbox.iterdir()) == []


def test_orphan_sidecars_and_junk_are_left_alone(daemon, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "lonely.mask.png").write_bytes(png_bytes())
    (inbox / "download.png.crdownload").write_bytes(b"partial")
    (inbox / ".hidden.png").write_bytes(png_bytes())
    d = daemon().start()
    (inbox / "real.png").write_bytes(png_bytes(seed=7))
    wait_until(lambda: d.done() == 1, what="real.png")
    assert d.stop() == 0
    assert sorted(p.name for p in inbox.iterdir()) == [".hidden.png", "download.png.crdownload", "lonely.mask.png"]
    assert "sidecar without an image; left alone" in d.events()


def test_a_removal_a_killed_daemon_left_half_done_is_settled_when_it_starts_again(daemon, tmp_path):
    """Two files moved aside by a removal that a kill interrupted: one holds the archived bytes its name says
    (removed at start), the other newer bytes (put back, visible, and processed as a new file)."""
    from daemon.runner import REMOVING

    inbox = tmp_path / "inbox"
    archived, newer = png_bytes(seed=4), png_bytes(seed=5)
    (inbox / f"{REMOVING}aaaaaaaaaaaa-{hashlib.sha256(archived).hexdigest()[:12]}-1-1.png").write_bytes(archived)
    (inbox / f"{REMOVING}bbbbbbbbbbbb-{hashlib.sha256(archived).hexdigest()[:12]}-1-2.png").write_bytes(newer)
    d = daemon().start()
    wait_until(lambda: d.done() == 1, what="the put-back file processed")
    wait_until(lambda: list(inbox.iterdir()) == [], what="empty inbox")
    assert d.stop() == 0
    (folder,) = archives(tmp_path)
    assert manifest_of(folder).source.name == "recovered-bbbbbbbbbbbb.png"
    assert next(folder.glob("00-original.*")).read_bytes() == newer


def test_a_subfolder_of_the_inbox_is_left_alone_and_named_once(daemon, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "later").mkdir()
    (inbox / "later" / "kept.png").write_bytes(png_bytes(seed=41))
    d = daemon().start()
    (inbox / "now.png").write_bytes(png_bytes(seed=42))
    wait_until(lambda: d.done() == 1, what="now.png")
    time.sleep(2.5)  # a couple of rescans (rescan_interval = 1 s)
    assert d.stop() == 0
    assert (inbox / "later" / "kept.png").read_bytes() == png_bytes(seed=41)
    assert sum(e.startswith("a folder in the inbox is not looked into") for e in d.events()) == 1


def test_invalid_config_is_logged_and_the_last_good_one_stays(daemon, tmp_path):
    d = daemon().start()
    inbox, config = tmp_path / "inbox", tmp_path / "pipeline.toml"
    good = config.read_text()
    config.write_text(good + "\n[daemon\nbroken = \n")
    wait_until(lambda: "config reload failed; keeping the last good config" in d.events(), what="reload error")
    (inbox / "one.skipme.png").write_bytes(png_bytes(seed=11))
    wait_until(lambda: d.done() == 1, what="processed under the old config")
    config.write_text(good)  # fixed back to exactly what is in force: the daemon says the file is valid again
    wait_until(lambda: "config reloaded" in d.events(), what="the fix acknowledged")
    # A fixed file, written the way editors do (temp file, then rename), takes effect.
    tmp = tmp_path / ".pipeline.toml.swp"
    tmp.write_text(good.replace("[daemon]\n", '[daemon]\nignore = ["*.skipme.png"]\n'))
    os.replace(tmp, config)
    wait_until(lambda: d.events().count("config reloaded") == 2, what="reload")
    (inbox / "two.skipme.png").write_bytes(png_bytes(seed=12))
    (inbox / "three.png").write_bytes(png_bytes(seed=13))
    wait_until(lambda: d.done() == 2, what="three.png")
    time.sleep(1.5)  # a rescan (every 1 s here) would have taken two.skipme.png by now
    assert d.done() == 2
    assert (inbox / "two.skipme.png").exists()
    assert d.stop() == 0


def test_sigterm_mid_stage_puts_the_job_back_and_a_second_signal_changes_nothing(daemon, tmp_path):
    (tmp_path / "inbox" / "s.png").write_bytes(png_bytes(seed=21))
    d = daemon(sleep=30.0).start()
    j = d.journal()
    wait_until(lambda: j.counts()["running"] == 1, what="job running")
    d.proc.send_signal(signal.SIGTERM)
    d.proc.send_signal(signal.SIGINT)  # a different signal: two SIGTERMs in a row may arrive as one
    assert d.proc.wait(15) == 0
    assert j.counts()["queued"] == 1 and j.counts()["running"] == 0
    assert j.jobs()[0].attempts == 0  # a clean stop is not a failed attempt
    assert "already stopping; signal ignored" in d.events()
    assert (tmp_path / "inbox" / "s.png").exists()
    (archive,) = archives(tmp_path)
    assert not [p for p in archive.iterdir() if p.name.endswith(".tmp")]
    d2 = daemon(sleep=0.0).start()
    wait_until(lambda: d2.done() == 1, what="finished after restart")
    assert d2.stop() == 0
    assert manifest_of(archive).status == "done"


def test_systemd_notifications_arrive_in_order(daemon, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    d = daemon(env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    d.start()
    messages: list[str] = []

    def drain():
        try:
            for _ in range(100):
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass

    wait_until(lambda: (drain(), any("WATCHDOG=1" in m for m in messages))[1], what="watchdog ping")
    (tmp_path / "inbox" / "n.png").write_bytes(png_bytes(seed=31))
    wait_until(lambda: d.done() == 1, what="job")
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: (drain(), any("RELOADING=1" in m for m in messages))[1], what="reload")
    assert d.stop() == 0
    drain()
    sock.close()

    def first(key):
        return next(i for i, m in enumerate(messages) if key in m.split("\n"))

    ready = first("READY=1")
    assert "STATUS=" in messages[ready]
    assert ready < first("WATCHDOG=1") < first("RELOADING=1") < first("STOPPING=1")
    assert any(m.startswith("STATUS=queued 0, running 0, done 1") for m in messages)
    reloading = messages[first("RELOADING=1")]
    assert "MONOTONIC_USEC=" in reloading


def test_polling_observer_when_configured(daemon, tmp_path):
    config = tmp_path / "pipeline.toml"
    config.write_text(config.read_text().replace("[daemon]\n", '[daemon]\nwatch = "polling"\n'))
    d = daemon().start()
    assert any(r.get("watch") == "PollingObserver" for r in d.records() if r.get("event") == "watching")
    (tmp_path / "inbox" / "p.png").write_bytes(png_bytes(seed=41))
    wait_until(lambda: d.done() == 1, what="polled file")
    assert d.stop() == 0


def test_native_watching_falls_back_to_polling_with_a_warning(tmp_path):
    from structlog.testing import capture_logs
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.polling import PollingObserver

    from daemon.watcher import start_observer

    def schedule(observer):
        if not isinstance(observer, PollingObserver):
            raise OSError(28, "inotify watch limit reached")
        observer.schedule(FileSystemEventHandler(), str(tmp_path))

    with capture_logs() as logs:
        observer = start_observer("native", schedule)
    try:
        assert isinstance(observer, PollingObserver)
        (warning,) = [e for e in logs if e["log_level"] == "warning"]
        assert "falling back to polling" in warning["event"] and "watch limit" in warning["error"]
    finally:
        observer.stop()
        observer.join(5)


def test_retry_while_the_daemon_runs_makes_one_job_and_no_phantom_failure(daemon, tmp_path):
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    d = daemon(sleep=1.0).start()  # each job takes a second: the watcher sees the retried file meanwhile
    (inbox / "fixme.png").write_bytes(b"not yet an image")
    wait_until(lambda: (failed / "fixme.png").exists(), what="failed")
    (failed / "fixme.png").write_bytes(png_bytes(seed=51))  # the user repairs it…
    out = subprocess.run([sys.executable, "-m", "tests.helpers.run_polishd", "--", "--config",
                          str(tmp_path / "pipeline.toml"), "retry", "--failed"], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert out.returncode == 0, out.stderr
    j = d.journal()
    wait_until(lambda: j.counts()["done"] == 1, what="retried job done")
    time.sleep(2.0)  # the watcher's own look at the returning file (stability_delay + a rescan)
    assert d.stop() == 0
    jobs = [(x.id, x.state, x.last_error) for x in j.jobs()]
    assert j.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0, "duplicate": 0}, jobs
    assert len(j.jobs()) == 1 and list(inbox.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs for [paths].archive (needs root), filled to within 200 KiB of full."""
    if os.geteuid() != 0:
        pytest.skip("a tmpfs needs root; tests/test_runner.py injects ENOSPC instead")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    filler = disk / "filler.bin"
    filler.write_bytes(b"\0" * (4 * 1024 * 1024 - 200 * 1024))
    yield disk, filler
    subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.slow
def test_a_full_disk_pauses_intake_then_work_resumes_when_space_returns(daemon, tmp_path, small_disk):
    disk, filler = small_disk
    config = tmp_path / "pipeline.toml"
    config.write_text(config.read_text().replace('archive = "archive"', f'archive = "{disk / "archive"}"'))
    (disk / "archive").mkdir()
    data = (DATA / "astronaut.png").read_bytes()  # 500 KB: more than the disk has left
    d = daemon().start()
    (tmp_path / "inbox" / "big.png").write_bytes(data)
    j = d.journal()
    wait_until(lambda: "paused" in j.notes(), what="paused")
    assert j.notes()["paused"].startswith("disk full at " + str(disk / "archive"))
    status = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config), "status"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert status.stdout.startswith("paused: disk full at ")
    time.sleep(3)  # a try or two more, each with a longer wait
    (job,) = j.jobs()
    assert job.state in ("queued", "running") and job.attempts <= 1  # full-disk tries are not attempts
    assert list((disk / "archive").iterdir()) == [] and list((tmp_path / "failed").iterdir()) == []
    assert (tmp_path / "inbox" / "big.png").read_bytes() == data
    filler.unlink()  # space returns
    wait_until(lambda: j.counts()["done"] == 1, what="done after space returned", timeout=30)
    # The job that got through ends the pause: noted just after its own record.
    wait_until(lambda: "paused" not in j.notes(), what="the pause lifted", timeout=10)
    assert d.stop() == 0
    events = d.events()
    assert events.count("nothing can be written: intake paused; trying again with a backoff") == 1
    assert "writing works again: intake resumed" in events


def test_the_journal_deleted_while_running_is_noticed_and_the_daemon_stops_with_the_reason(daemon, tmp_path):
    d = daemon().start()
    (tmp_path / "state" / "journal.sqlite3").unlink()
    assert d.proc.wait(20) == 1  # a failure: systemd shows it, and restarts it with a new journal if so set
    said = [r for r in d.records() if r.get("event", "").startswith("the journal was deleted or replaced")]
    assert len(said) == 1 and said[0]["what"] == "deleted" and said[0]["level"] == "error"


def test_a_second_daemon_on_the_same_inbox_with_another_state_folder_refuses_to_start(daemon, tmp_path):
    first = daemon().start()
    other = tmp_path / "other"
    other.mkdir()
    config = write_config(other)
    config.write_text(config.read_text().replace('inbox = "inbox"', f'inbox = "{tmp_path / "inbox"}"'))
    second = subprocess.run([sys.executable, "-m", "tests.helpers.run_polishd", "--", "--config", str(config), "run"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 1 and f"another polishd is watching {tmp_path / 'inbox'}" in second.stderr
    names = [f"{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        (tmp_path / "inbox" / name).write_bytes(png_bytes(seed=70 + i))
    wait_until(lambda: first.done() == 6, 30, "all six done")
    assert len(archives(tmp_path)) == 6 and not (other / "state" / "journal.sqlite3").exists()
    assert first.stop() == 0
    log = other / "polishd.log"
    with open(log, "wb") as out:
        again = subprocess.Popen([sys.executable, "-m", "tests.helpers.run_polishd", "--", "--config", str(config),
                                  "run"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                 stdout=out, stderr=subprocess.STDOUT)
    try:  # the first one gone, the inbox is free for the other
        wait_until(lambda: "watching" in log.read_text() or again.poll() is not None, 30, "the other's start")
        assert again.poll() is None, log.read_text()
    finally:
        again.terminate()
        assert again.wait(30) == 0
