"""Detection benchmark: milliseconds per image for faces + hands, and what was found on each test photo.

    python -m bench.automask [--repeat 10]

Uses the shipped models with the default settings of pipeline.toml (both face
models, hands with num_hands = 12, the 2× pass below 768 px and tiles above
1536 px), on the test photos at 512² and at 1024² (Lanczos-enlarged).  Writes
bench/out/automask.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from automask.detect import Detector, DetectorSettings
from stages.automask import AutomaskConfig

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
PHOTOS = sorted((REPO / "tests" / "data").glob("*.png"))


def settings() -> DetectorSettings:
    c = AutomaskConfig()
    return DetectorSettings(face_models=c.face_models, num_hands=c.num_hands, upsample_below=c.upsample_below,
                            tile_above=c.tile_above, nms_iou=c.nms_iou,
                            min_confidence=min(c.face.min_confidence, c.hand.min_confidence))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    cfg = AutomaskConfig()
    detector = Detector(settings())
    lines = ["# Detection benchmark (shipped MediaPipe models, default settings, CPU)", "",
             "| photo | size | ms per image (median) | faces ≥ {:.2f} | hands ≥ {:.2f} | all raw detections |".format(
                 cfg.face.min_confidence, cfg.hand.min_confidence), "|---|---|---|---|---|---|"]
    for path in PHOTOS:
        base = Image.open(path).convert("RGB")
        for side in (512, 1024):
            im = base.resize((side, side), Image.Resampling.LANCZOS)
            detector.detect(im)  # warm-up
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                found = detector.detect(im)
                times.append(time.perf_counter() - t0)
            faces = [d for d in found if d.kind == "face" and d.score >= cfg.face.min_confidence]
            hands = [d for d in found if d.kind == "hand" and d.score >= cfg.hand.min_confidence]
            raw = ", ".join(f"{d.kind} {d.score:.2f} @ {[round(v) for v in d.box]}" for d in found) or "none"
            lines.append(f"| {path.name} | {side}² | {statistics.median(times) * 1000:.0f} | {len(faces)} | "
                         f"{len(hands)} | {raw} |")
            print(lines[-1], flush=True)
    detector.close()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "automask.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
