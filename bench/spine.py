"""Spine benchmark: what the daemon itself costs per image, with every model stage disabled.

    python -m bench.spine [--files 200] [--size 512]

Starts a real ``polishd run`` on a temporary folder, moves N distinct PNG photos
into its inbox at once (one burst), and waits until the journal has finished
them all.  Reports the per-image overhead of the spine (the runner's time per
job: read, hash, full decode, archive copy with fsyncs, manifest, inbox
removal — the stability delay is not in it) as median and 95th percentile, and
the wall time of the burst with and without the stability delay.  Writes
bench/out/spine.md.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from daemon.journal import Journal

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
STABILITY = 0.5

CONFIG = """
[paths]
inbox = "inbox"
archive = "archive"
failed = "failed"
state = "state"
models = "models"
[daemon]
stability_delay = {stability}
rescan_interval = 5.0
[log]
format = "json"
level = "warning"
[automask]
enabled = false
[inpaint]
enabled = false
[outpaint]
enabled = false
[upscale]
enabled = false
[contact]
enabled = false
"""


def photos(n: int, size: int, folder: Path) -> list[Path]:
    base = Image.open(REPO / "tests" / "data" / "astronaut.png").convert("RGB").resize((size, size))
    out = []
    for i in range(n):
        im = base.copy()
        im.putpixel((i % size, i // size), (i % 256, 255 - i % 256, 0))  # distinct bytes, no duplicates
        buf = io.BytesIO()
        im.save(buf, "PNG", compress_level=1)
        p = folder / f"photo-{i:04d}.png"
        p.write_bytes(buf.getvalue())
        out.append(p)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=REPO / "var" if (REPO / "var").exists() else None) as tmp:
        root = Path(tmp)
        (root / "pipeline.toml").write_text(CONFIG.format(stability=STABILITY))
        staging = root / "staging"
        staging.mkdir()
        files = photos(args.files, args.size, staging)
        total_bytes = sum(p.stat().st_size for p in files)
        with open(root / "log", "wb") as log:  # the daemon keeps its own copy of the descriptor
            proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(root / "pipeline.toml"),
                                     "run"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
        try:
            while not (root / "state" / "journal.sqlite3").exists():
                time.sleep(0.05)
            time.sleep(1.0)
            (root / "inbox").mkdir(exist_ok=True)
            t0 = time.time()
            for p in files:
                os.replace(p, root / "inbox" / p.name)
            journal = Journal(root / "state" / "journal.sqlite3")
            while journal.counts()["done"] < args.files:
                if proc.poll() is not None:
                    raise RuntimeError((root / "log").read_text()[-2000:])
                time.sleep(0.05)
            wall = time.time() - t0
            jobs = journal.jobs("done", limit=args.files * 2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    per_job = sorted(j.finished - j.started for j in jobs)
    median = statistics.median(per_job)
    p95 = per_job[int(0.95 * (len(per_job) - 1))]
    report = "\n".join([
        f"# Spine benchmark ({args.files} files, {args.size}² PNG, {total_bytes / args.files / 1024:.0f} KiB each,"
        f" model stages disabled, 1 worker)", "",
        f"- per-image overhead (runner time per job): median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms",
        f"- burst of {args.files}: {wall:.2f} s wall from the drop to the last job done "
        f"({wall - STABILITY:.2f} s without the {STABILITY} s stability delay; "
        f"{args.files / (wall - STABILITY):.0f} images/s)", ""])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "spine.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
