"""Watched trees: start-up over a big output tree the ledger knows, and how soon a new file becomes a job.

    python -m bench.sources [--sizes 10000 100000]

For each size, a tree laid out as A1111 leaves it (``outputs/txt2img-images/<date>/<n>-<seed>.png``, 500 files a
folder, each file its own bytes; a ComfyUI temp preview and a grid in every folder, which are skipped).  Then:

1. **first look**: a source that has never seen the tree takes every file (hash, ledger, one queued job
   each) — the cost of pointing polishd at a month of old output;
2. **start-up with the ledger**: the ledger holds every file (as the first look left it); a new
   ``SourceWatcher`` starts — the walk, a ``stat`` a file, compared with the ledger — timed, with the Python
   memory it takes (tracemalloc's peak) and the files it read (none: nothing is hashed);
3. **a new file**: with the watcher running (inotify), a file written into a new date folder; the time from
   the end of its write to its job in the journal, with ``stability_delay`` 2 s (the default) and 0.5 s;
   then the same by polling (``source_poll`` = 10 s, as past the inotify watch limit).

Writes bench/out/sources.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from bench.kit.pipeline import REPO, write_config
from bench.upscale_cpu import cpu
from daemon import config as config_mod
from daemon import logs
from daemon.journal import Journal
from daemon.sources import SourceWatcher

OUT = REPO / "bench" / "out"
PER_FOLDER = 500


def make_tree(root: Path, count: int) -> list[Path]:
    """``count`` real files (unique bytes, PNG-named) in date folders, plus a temp preview and a grid each."""
    files = []
    for n in range(count):
        folder = root / "outputs" / "txt2img-images" / f"2026-{1 + n // (PER_FOLDER * 28) % 12:02d}-" \
                                                      f"{1 + n // PER_FOLDER % 28:02d}"
        if n % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "grid-0000.png").write_bytes(b"grid")
            (folder / "ComfyUI_temp_abcde_00001_.png").write_bytes(b"preview")
        path = folder / f"{n:06d}-{n * 7919 % 100000}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + n.to_bytes(8, "big") * 16)
        files.append(path)
    return files


def config_for(root: Path, stability: float, poll: float = 10.0):
    path = write_config(root, '[[daemon.source]]\nname = "a1111"\npath = "outputs"\n', stability_delay=stability)
    path.write_text(path.read_text().replace("[daemon]\n", f"[daemon]\nsource_poll = {poll}\n", 1))
    return config_mod.load(path)


class Counting(SourceWatcher):
    """The watcher, counting the files it reads (hashes)."""

    reads = 0

    def _read(self, path: Path):
        Counting.reads += 1
        return super()._read(path)


def first_look(root: Path, files: list[Path]) -> dict:
    cfg = config_for(root, 0.0)
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    w = SourceWatcher(cfg.daemon.source[0], lambda: cfg, journal, threading.Event())
    t0 = time.perf_counter()
    w.start()
    while w.taken < len(files):
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    w.stop()
    journal.close()
    return {"files": len(files), "seconds": round(seconds, 2), "per_file_ms": round(1000 * seconds / len(files), 3)}


def restart(root: Path, files: list[Path]) -> dict:
    cfg = config_for(root, 2.0)
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    Counting.reads = 0
    tracemalloc.start()
    t0 = time.perf_counter()
    w = Counting(cfg.daemon.source[0], lambda: cfg, journal, threading.Event())
    w.start()  # the walk and the ledger's comparison happen here
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    time.sleep(2.5)  # past the stability delay: anything it would read, it reads now
    pending, reads = len(w._pending), Counting.reads
    w.stop()
    journal.close()
    return {"files": len(files), "seconds": round(seconds, 2), "peak_mb": round(peak / 2**20, 1),
            "read": reads, "pending": pending}


def new_file_latency(root: Path, stability: float, poll: float, tries: int = 5, inotify: bool = True) -> dict:
    cfg = config_for(root, stability, poll)
    journal = Journal(cfg.paths.state / "journal.sqlite3")

    class NoInotify:
        def schedule(self, *a, **k):
            raise OSError(28, "inotify watch limit reached (for the benchmark)")

    w = SourceWatcher(cfg.daemon.source[0], lambda: cfg, journal, threading.Event(),
                      **({} if inotify else {"observer_factory": NoInotify}))
    w.start()
    times = []
    folder = root / "outputs" / "txt2img-images" / f"new-{stability}-{poll}-{inotify}"
    folder.mkdir(parents=True)
    for k in range(tries):
        before = w.taken
        path = folder / f"{k:05d}-new.png"
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + os.urandom(4096))
        written = time.perf_counter()
        while w.taken == before:
            time.sleep(0.01)
        times.append(time.perf_counter() - written)
        time.sleep(0.3)
    w.stop()
    journal.close()
    return {"stability_delay": stability, "watch": "inotify" if inotify else f"polling every {poll:g} s",
            "median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = ap.parse_args(argv)
    logs.configure("warning", "console")  # a "queued" line a file would drown the figures
    results: dict = {"machine": cpu()[0], "first_look": [], "restart": [], "latency": []}
    for size in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="polishd-sources-"))
        try:
            t0 = time.perf_counter()
            files = make_tree(root, size)
            print(f"{size} files laid out in {time.perf_counter() - t0:.1f} s")
            results["first_look"].append(first_look(root, files))
            print("first look:", results["first_look"][-1])
            results["restart"].append(restart(root, files))
            print("start-up with the ledger:", results["restart"][-1])
            if size == min(args.sizes):
                for stability, poll, inotify in ((2.0, 10.0, True), (0.5, 10.0, True), (2.0, 10.0, False)):
                    results["latency"].append(new_file_latency(root, stability, poll, inotify=inotify))
                    print("new file:", results["latency"][-1])
        finally:
            shutil.rmtree(root, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sources.json").write_text(json.dumps(results, indent=2))
    lines = ["# Watched trees: start-up and the time to a new file's job", "",
             f"`python -m bench.sources --sizes {' '.join(map(str, args.sizes))}`", "",
             f"Machine: {results['machine']}, 2 cores. Trees as A1111 leaves them: date folders of {PER_FOLDER} "
             "files, each with a grid and a ComfyUI temp preview (skipped).", ""]
    lines += ["## First look (a tree never seen: every file read, hashed and queued, 500 a synced transaction)", "",
              "| files | seconds | ms a file |", "|---|---|---|"]
    lines += [f"| {f['files']} | {f['seconds']} | {f['per_file_ms']} |" for f in results["first_look"]]
    lines.append("")
    lines += ["## Start-up with the ledger (nothing new)", "",
              "| files | seconds | Python memory peak MB | files read |", "|---|---|---|---|"]
    lines += [f"| {r['files']} | {r['seconds']} | {r['peak_mb']} | {r['read']} |" for r in results["restart"]]
    lines += ["", "## From a new file's last write to its job", "", "| watch | stability_delay s | median s | max s |",
              "|---|---|---|---|"]
    lines += [f"| {r['watch']} | {r['stability_delay']} | {r['median_s']} | {r['max_s']} |" for r in results["latency"]]
    lines.append("")
    (OUT / "sources.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
