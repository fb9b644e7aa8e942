"""The inbox watcher in-process: what it does with a file it cannot read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from structlog.testing import capture_logs

from daemon.watcher import InboxWatcher
from tests.conftest import REPO, png_bytes


@pytest.fixture
def watcher(workdir, journal):
    root, cfg = workdir
    return InboxWatcher(lambda: cfg, journal, threading.Event())


def _look(w: InboxWatcher, times: int = 5) -> None:
    for _ in range(times):  # the stability loop's turns: the file is settled at once (delay 0)
        w.rescan()
        w._settle(0.0)


def test_an_unreadable_file_is_named_once_shown_in_status_and_taken_when_it_changes(workdir, journal, watcher,
                                                                                    monkeypatch):
    root, cfg = workdir
    locked = cfg.paths.inbox / "locked.png"
    locked.write_bytes(png_bytes(seed=71))
    real = __import__("daemon.watcher", fromlist=["sha256_file"]).sha256_file

    def denied(path):  # as open() fails on a mode-000 file for anyone but root
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr("daemon.watcher.sha256_file", denied)
    with capture_logs() as logs:
        _look(watcher)
    warnings = [e for e in logs if e["event"].startswith("cannot read inbox file")]
    assert len(warnings) == 1 and warnings[0]["path"] == str(locked)
    assert journal.counts()["queued"] == 0
    assert [(w["source"], w["reason"]) for w in journal.waiting()] == [(str(locked), "unreadable: Permission denied")]
    status = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(root / "pipeline.toml"),
                             "status", "--json"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert json.loads(status.stdout)["waiting"][0]["reason"] == "unreadable: Permission denied"

    monkeypatch.setattr("daemon.watcher.sha256_file", real)  # chmod'ed readable: it changes, and is taken
    watcher.touch(str(locked))
    _look(watcher, 1)
    assert journal.counts()["queued"] == 1 and journal.waiting() == []


def test_a_name_that_is_not_utf8_and_a_fifo_wait_said_once_and_shown_never_a_traceback(workdir, journal, watcher):
    root, cfg = workdir
    odd = os.path.join(os.fsencode(cfg.paths.inbox), b"caf\xe9.png")  # Latin-1 bytes, as an old Samba share writes
    with open(odd, "wb") as f:
        f.write(png_bytes(seed=72))
    os.mkfifo(cfg.paths.inbox / "pipe.png")
    with capture_logs() as logs:
        _look(watcher)
        _look(watcher)  # every rescan: said once
    warnings = [e for e in logs if e["event"].startswith("cannot read inbox file")]
    assert len(warnings) == 2 and not [e for e in logs if e.get("log_level") == "error"]
    waiting = {w["source"]: w["reason"] for w in journal.waiting()}
    assert waiting == {
        str(cfg.paths.inbox / "caf\\xe9.png"): "unreadable: its name is not valid UTF-8; rename it to be taken",
        str(cfg.paths.inbox / "pipe.png"): "unreadable: not a regular file (a FIFO, a device or a socket); not taken"}
    assert journal.counts()["queued"] == 0
    assert os.path.exists(odd)  # nothing moved or lost
