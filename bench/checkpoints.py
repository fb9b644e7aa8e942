"""Many checkpoints, few loads: an inbox that mixes three checkpoints, run in arrival order and grouped.

    python -m bench.checkpoints [--images 60]

Three tiny SD checkpoints (random weights, built from configs) in an A1111 models folder, and ``--images``
pictures whose A1111 metadata names them in turn (A, B, C, A, B, C, …), queued in the journal as the
watcher queues them.  Each is taken as the daemon's worker takes it (``Journal.claim``, with the
grouping of daemon/grouping.py or without) and run through automask and inpaint by the real runner, which
repaints each with its own checkpoint.  Counted: generative models loaded, and the wall time.  Writes
bench/out/checkpoints.md and .json.

A tiny model loads in a fraction of a second; an SDXL checkpoint takes 5–30 s on a GPU (from disk to
VRAM) and more on a CPU, so the loads saved matter far more than the seconds here say.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, PngImagePlugin

from bench.kit.pipeline import DATA, REPO, manifest_of, write_config
from bench.kit.tiny_sd import build_tiny_sd

OUT = REPO / "bench" / "out"
NAMES = ("tinyA", "tinyB", "tinyC")


def inbox_images(folder: Path, count: int) -> list[Path]:
    base = Image.open(DATA / "astronaut.png").convert("RGB")
    out = []
    for n in range(count):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"an astronaut portrait\nNegative prompt: ugly\nSteps: 2, Sampler: Euler, "
                                    f"CFG scale: 5, Seed: {n}, Model: {NAMES[n % len(NAMES)]}")
        path = folder / f"{n:03d}.png"
        base.save(path, pnginfo=info)
        out.append(path)
    return out


def run(root: Path, models: Path, count: int, grouped: bool, max_loaded: int) -> dict:
    from daemon import config as config_mod
    from daemon.grouping import Grouping, checkpoint_key
    from daemon.journal import Journal
    from daemon.runner import Runner
    from stages.automask import AutoMaskStage
    from stages.diffusion import engine as engine_mod
    from stages.held import OWNER
    from stages.inpaint import InpaintStage

    root.mkdir(parents=True)
    path = write_config(root, f'[inpaint]\nmodel = "{models / "diffusers" / NAMES[0]}"\nresolution = 64\n'
                              f"max_loaded = {max_loaded}\n[inpaint.gate]\nenabled = false\n"
                              "[upscale]\nenabled = false\n[outpaint]\nenabled = false\n", models=models)
    cfg = config_mod.load(path)
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    for src in inbox_images(cfg.paths.inbox, count):
        journal.enqueue(src, hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_size,
                        src.stat().st_mtime, checkpoint_key(src))
    engine_mod.unload()
    before = OWNER.loads.get("diffusion", 0)
    stages = [AutoMaskStage(), InpaintStage()]
    runner = Runner(journal, lambda: cfg, stages)
    grouping = Grouping(cfg.daemon.group_wait, max_loaded) if grouped else None
    order, painted_with, t0 = [], [], time.monotonic()
    while (job := journal.claim(grouping=grouping)) is not None:
        outcome = runner.run_job(job)
        assert outcome.status == "done", outcome.error
        order.append(job.checkpoint)
        painted_with.append(manifest_of(outcome.archive).stage("inpaint").details.checkpoint)
    seconds = time.monotonic() - t0
    for stage in stages:
        stage.close()
    journal.close()
    engine_mod.unload()
    own = sum(f"own checkpoint {key}" in used.lower() for key, used in zip(order, painted_with, strict=True))
    return {"order": "grouped" if grouped else "arrival", "max_loaded": max_loaded, "images": len(order),
            "loads": OWNER.loads.get("diffusion", 0) - before, "seconds": round(seconds, 1),
            "switches": sum(a != b for a, b in zip(order, order[1:], strict=False)),
            "painted_with_own": own}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        first = build_tiny_sd(models / "diffusers" / NAMES[0])
        for name in NAMES[1:]:
            shutil.copytree(first, models / "diffusers" / name)
        rows = [run(Path(tmp) / f"run{n}", models, args.images, grouped, max_loaded)
                for n, (grouped, max_loaded) in enumerate(((False, 1), (True, 1), (False, 3)))]
    from bench.kit.machine import cpu

    name, flags = cpu()
    lines = ["# Many checkpoints, few loads", "",
             f"`python -m bench.checkpoints --images {args.images}`: {args.images} images naming 3 checkpoints "
             "in turn (A, B, C, A, …), automask + inpaint with each image's own checkpoint (tiny SD models, "
             f"64 px repaints); CPU: {name}, {' '.join(flags)}.", "",
             "| order | max_loaded | images | model loads | checkpoint switches | painted with its own | seconds |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['order']} | {r['max_loaded']} | {r['images']} | {r['loads']} | {r['switches']} | "
              f"{r['painted_with_own']} | {r['seconds']} |" for r in rows]
    lines += ["", "Grouped: the queue takes the images of the checkpoint in memory first (`[daemon].group_wait` "
              "bounds how long the oldest image is passed over); arrival order with room for three "
              "(`[inpaint].max_loaded = 3`) loads each once too, at three times the memory."]
    (OUT / "checkpoints.md").write_text("\n".join(lines) + "\n")
    (OUT / "checkpoints.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
