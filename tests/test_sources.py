"""Watched trees ([[daemon.source]]): generator output folders taken in place, once, with a real daemon."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

from daemon import config as config_mod
from daemon.journal import Journal
from daemon.sources import SourceWatcher, walk
from tests.conftest import png_bytes, write_config
from tests.test_daemon import Polishd, archives, wait_until

SOURCES = """
[[daemon.source]]
path = "ComfyUI/output"
[[daemon.source]]
name = "a1111"
path = "sd/outputs"
"""


def _config(root: Path, extra: str, daemon: str = "source_poll = 1.0\n") -> Path:
    path = write_config(root, extra)
    path.write_text(path.read_text().replace("[daemon]\n", "[daemon]\n" + daemon, 1))
    return path


def _trees(root: Path) -> dict[str, bytes]:
    """A ComfyUI output folder (previews beside the real files) and an A1111 date-folder tree (a grid, a
    partial download): the files that must be taken, by path."""
    comfy, a1111 = root / "ComfyUI" / "output", root / "sd" / "outputs" / "txt2img-images" / "2026-12-04"
    for folder in (comfy / "portraits", a1111):
        folder.mkdir(parents=True)
    real = {comfy / "ComfyUI_00001_.png": png_bytes(seed=1), comfy / "ComfyUI_00002_.png": png_bytes(seed=2),
            comfy / "portraits" / "ComfyUI_00003_.png": png_bytes(seed=3), a1111 / "00001-1234.png": png_bytes(seed=4),
            a1111 / "00002-1235.jpg": png_bytes(seed=5)}
    junk = {comfy / "ComfyUI_temp_xyzab_00001_.png": png_bytes(seed=6), a1111 / "grid-0001.png": png_bytes(seed=7),
            a1111 / "00003-1236.png.part": png_bytes(seed=8), comfy / ".hidden.png": png_bytes(seed=9),
            comfy / "notes.txt": b"not an image"}
    for path, data in {**real, **junk}.items():
        path.write_bytes(data)
    (comfy / "ComfyUI_00001_.toml").write_text("[upscale]\nscale = 2\n")  # a sidecar works in a source too
    return {str(p): d for p, d in real.items()}


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for top in (root / "ComfyUI", root / "sd"):
        for dirpath, _, names in os.walk(top):
            for n in names:
                p = Path(dirpath) / n
                out[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def _sources_of(root: Path) -> list[str]:
    j = Journal(root / "state" / "journal.sqlite3")
    try:
        return sorted(job.source for job in j.jobs() if job.watched)
    finally:
        j.close()


def test_output_trees_are_taken_in_place_once_and_again_only_when_their_bytes_change(tmp_path):
    config = _config(tmp_path, SOURCES)
    expected = _trees(tmp_path)
    before = _snapshot(tmp_path)
    d = Polishd(tmp_path).start()
    try:
        wait_until(lambda: d.done() == len(expected), 30, "every real image taken")
        assert _sources_of(tmp_path) == sorted(expected)
        assert _snapshot(tmp_path) == before  # untouched: bytes and mtimes, sidecar included
        assert len(archives(tmp_path)) == len(expected)
        comfy1 = next(a for a in archives(tmp_path) if a.name.startswith("ComfyUI_00001"))
        assert (comfy1 / "00-sidecar.toml").read_text() == "[upscale]\nscale = 2\n"
        assert d.stop() == 0

        d = Polishd(tmp_path).start()  # a restart takes nothing twice
        wait_until(lambda: "source watched" in d.events(), 10, "the sources looked over")
        time.sleep(2.5)  # two polls' worth of looking
        assert _sources_of(tmp_path) == sorted(expected)
        # renamed inside the tree: the same bytes, not taken again
        first = Path(sorted(expected)[0])
        os.rename(first, first.with_name("renamed.png"))
        # rewritten: new bytes, taken again, archived beside the first
        changed = tmp_path / "sd" / "outputs" / "txt2img-images" / "2026-12-04" / "00001-1234.png"
        changed.write_bytes(png_bytes(seed=44))
        wait_until(lambda: d.done() == len(expected) + 1, 30, "the new version taken")
        time.sleep(2.5)
        assert _sources_of(tmp_path).count(str(changed)) == 2
        assert len(archives(tmp_path)) == len(expected) + 1
        assert not (tmp_path / "inbox").exists() or list((tmp_path / "inbox").iterdir()) == []
    finally:
        d.stop()
    import subprocess
    import sys

    from tests.conftest import REPO

    status = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config), "status"], cwd=REPO,
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert status.returncode == 0, status.stderr
    assert f"source output (leave, {tmp_path / 'ComfyUI' / 'output'}): watching; 4 files known" in status.stdout
    assert "source a1111 (leave, " in status.stdout and "2 files known, 0 queued, 3 done" in status.stdout


def test_a_move_source_takes_its_files_away_like_the_inbox(tmp_path):
    _config(tmp_path, '[[daemon.source]]\npath = "drop"\nmode = "move"\n')
    (tmp_path / "drop" / "day").mkdir(parents=True)
    (tmp_path / "drop" / "day" / "a.png").write_bytes(png_bytes(seed=21))
    d = Polishd(tmp_path).start()
    try:
        wait_until(lambda: d.done() == 1, 30, "the file taken")
        wait_until(lambda: not (tmp_path / "drop" / "day" / "a.png").exists(), 10, "the file gone from the tree")
        assert len(archives(tmp_path)) == 1
    finally:
        d.stop()


class _FullObserver:
    """An inotify observer past its watch limit, as watchdog reports it."""

    def schedule(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    def start(self):
        raise AssertionError("never started")


def test_past_the_inotify_watch_limit_the_tree_is_polled_and_no_file_is_lost(tmp_path):
    cfg = config_mod.load(_config(tmp_path, '[[daemon.source]]\npath = "out"\n'))
    (tmp_path / "out").mkdir()
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    watcher = SourceWatcher(cfg.daemon.source[0], lambda: cfg, journal, threading.Event(), _FullObserver)
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        watcher.start()
        try:
            assert watcher.state == "polling"
            for i in range(5):
                (tmp_path / "out" / f"{i}.png").write_bytes(png_bytes(seed=30 + i))
            wait_until(lambda: watcher.taken == 5, 15, "every file taken by polling")
        finally:
            watcher.stop()
    said = [e for e in logs if "inotify watch limit" in e["event"]]
    assert len(said) == 1 and "fs.inotify.max_user_watches" in said[0]["event"]
    assert "polling" in journal.notes()["source:out"]
    journal.close()


def test_a_source_folder_that_goes_away_pauses_its_source_until_it_is_back(tmp_path):
    cfg = config_mod.load(_config(tmp_path, '[[daemon.source]]\npath = "share"\n'))
    share = tmp_path / "share"
    share.mkdir()
    (share / "a.png").write_bytes(png_bytes(seed=50))
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    watcher = SourceWatcher(cfg.daemon.source[0], lambda: cfg, journal, threading.Event())
    watcher.start()
    try:
        wait_until(lambda: watcher.taken == 1, 10, "the first file")
        share.rename(tmp_path / "unmounted")
        wait_until(lambda: watcher.state == "unreachable", 10, "the source paused")
        assert "not there" in journal.notes()["source:share"]
        (tmp_path / "unmounted").rename(share)  # mounted again, with a file that came meanwhile
        (share / "b.png").write_bytes(png_bytes(seed=51))
        wait_until(lambda: watcher.taken == 2, 15, "the source resumed")
        assert watcher.state == "watching" and [j.name for j in journal.jobs()] == ["a.png", "b.png"]
    finally:
        watcher.stop()
        journal.close()


def test_the_walk_goes_only_as_deep_as_told_and_skips_what_is_excluded(tmp_path):
    cfg = config_mod.load(write_config(tmp_path, '[[daemon.source]]\npath = "t"\ndepth = 1\n'))
    for rel in ("a.png", "x/b.png", "x/y/c.png", ".cache/d.png", "x/ComfyUI_temp_q_0001_.png"):
        p = tmp_path / "t" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    found = sorted(os.path.relpath(p, tmp_path / "t") for p, _ in walk(cfg.daemon.source[0]))
    assert found == ["a.png", "x/b.png"]


def test_check_config_says_where_each_source_is_and_refuses_one_that_holds_polishds_own_folders(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    def check(extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(write_config(tmp_path, extra))],
                              cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    (tmp_path / "comfy").mkdir()
    ok = check('[[daemon.source]]\npath = "comfy"\n[[daemon.source]]\npath = "share"\nmode = "move"\n')
    assert ok.returncode == 0, ok.stderr
    assert f"source 'comfy' = {tmp_path / 'comfy'} (files left in place, each taken once" in ok.stdout
    assert "source 'share'" in ok.stdout and "not there now: the source waits for it" in ok.stdout
    loop = check('[[daemon.source]]\npath = "."\n')
    assert loop.returncode == 3
    assert "holds [paths].inbox, archive, failed, state, outbox: polishd would take its own files" in loop.stderr
