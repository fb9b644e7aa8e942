"""Only-masked inpainting: a 4096² image with one small face costs about what its crop costs.

    python -m bench.inpaint [--side 4096] [--resolution 256]

With the tiny SD inpainting pipeline (bench/kit/tiny_sd.py; random weights — this measures the
pipeline's plumbing, not a real model's speed), times (a) the inpaint stage on a side×side picture
holding the astronaut's face at its photo size, and (b) the engine alone on that face's crop at the
same working size.  Writes bench/out/inpaint.md.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--resolution", type=int, default=256)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from bench.kit.pipeline import DATA, write_config
    from bench.kit.tiny_sd import build_tiny_sd
    from daemon import config as config_mod
    from daemon.journal import Journal
    from daemon.runner import Runner
    from stages.automask import AutoMaskStage
    from stages.diffusion import engine as engine_mod
    from stages.inpaint import InpaintStage

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_sd(root / "tiny")
        cfg = config_mod.load(write_config(root, f'[inpaint]\nmodel = "{model}"\nsteps = 4\nstrength = 1.0\n'
                                                 f'resolution = {args.resolution}\n[automask.hand]\nenabled = false\n'
                                                 '[automask.face]\ntop_k = 1\nrank_by = "confidence"\n'
                                                 '[outpaint]\nenabled = false\n[upscale]\nenabled = false\n'
                                                 '[contact]\nenabled = false\n'))
        canvas = Image.new("RGB", (args.side, args.side), (128, 128, 128))
        canvas.paste(Image.open(DATA / "astronaut.png"), (args.side // 3, args.side // 3))
        src = cfg.paths.inbox / "big.png"
        canvas.save(src, compress_level=1)
        journal = Journal(cfg.paths.state / "j.sqlite3")
        journal.enqueue(src, hashlib.sha256(src.read_bytes()).hexdigest(), 1, 0.0)
        stages = [AutoMaskStage(), InpaintStage()]
        out = Runner(journal, lambda: cfg, stages).run_job(journal.claim())
        entry = next(s for s in out.stages if s["name"] == "inpaint")
        region = entry["details"]["regions"][0]
        before = Image.open(out.archive / "20-face-0-before.png")
        engine = engine_mod.get(str(model), None, engine_mod.torch.device("cpu"), engine_mod.torch.float32,
                                cfg.paths.models)
        size = (args.resolution, args.resolution)
        mask = Image.open(out.archive / "10-mask-face.png").crop(
            (region["box"][0] - 32, region["box"][1] - 32, region["box"][2] + 32, region["box"][3] + 32))
        t0 = time.perf_counter()
        engine.inpaint(before.resize(size), mask.resize(size), region["prompt"], "", 4, 7.0, 1.0, 0)
        crop_seconds = time.perf_counter() - t0
        for s in stages:
            s.close()
    report = "\n".join([
        f"# Only-masked inpainting ({args.side}² image, one face, tiny SD pipeline, working size {size[0]}², "
        "4 steps, CPU)", "",
        f"- inpaint stage on the whole {args.side}² image: {entry['duration_s']:.2f} s "
        f"(crop {before.size[0]}×{before.size[1]} px at box {region['box']})",
        f"- the engine alone on that crop: {crop_seconds:.2f} s",
        f"- overhead of the big image (reading, crop, paste, PNG writes): {entry['duration_s'] - crop_seconds:.2f} s",
        ""])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "inpaint.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
