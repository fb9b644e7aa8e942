"""[paths] folders polishd cannot make or write: one line naming the setting, the path and what to do,
exit status 2, no traceback, for run, process and status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO, write_config


def _polishd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=timeout)


def _config(tmp_path: Path, **paths: str) -> Path:
    config = write_config(tmp_path)
    text = config.read_text()
    for key, value in paths.items():
        text = text.replace(f'{key} = "{key}"', f'{key} = "{value}"')
    config.write_text(text)
    return config


COMMANDS = [("run",), ("process", str(DATA / "camera.png")), ("status",)]


def _one_line(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for w in words:
        assert w in out.stderr, (w, out.stderr)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_state_folder_that_cannot_exist_is_one_line(tmp_path, command):
    (tmp_path / "a-file").write_text("not a folder")
    config = _config(tmp_path, state="a-file/state")
    _one_line(_polishd("--config", str(config), *command), "[paths].state", str(tmp_path / "a-file" / "state"))


def test_status_before_anything_ran_says_so(tmp_path):
    config = _config(tmp_path, state="never-made")
    shutil.rmtree(tmp_path / "state")
    _one_line(_polishd("--config", str(config), "status"), "nothing has run with this config yet")


@pytest.fixture
def read_only(tmp_path):
    """A read-only file system: a tmpfs mounted ro (root), else a folder without write permission."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]).returncode != 0:
            pytest.skip("running as root and cannot mount a read-only tmpfs here")
        yield folder
        subprocess.run(["umount", str(folder)])
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.mark.parametrize("key", ["archive", "state", "failed", "inbox"])
def test_a_read_only_folder_stops_run_with_one_line(tmp_path, read_only, key):
    config = _config(tmp_path, **{key: str(read_only)})
    _one_line(_polishd("--config", str(config), "run", timeout=30), f"[paths].{key} = {read_only} is not writable",
              "write access")


def test_a_read_only_archive_stops_process_with_one_line(tmp_path, read_only):
    config = _config(tmp_path, archive=str(read_only))
    _one_line(_polishd("--config", str(config), "process", str(DATA / "camera.png")), "[paths].archive")
