"""YOLO detection time beside MediaPipe's: milliseconds per picture for a YOLOv8n bbox and -seg model.

    .venv-spandrel/bin/python -m bench.yolo     (the environment with the yolo extra: make test-spandrel builds it)

No YOLO weights can be had here, so the models are built from Ultralytics' YAML with random weights: the time
of a forward pass does not depend on the weights' values (the post-processing does, a little, through the
number of boxes; the class biases are left as Ultralytics initialises them, so few pass a 0.3 threshold, as
with a trained model).  Each development photo (and the repository's two) resized to a long side of 1024,
searched at the model's 640 px input.  Writes bench/out/yolo.md; MediaPipe's figures are bench.automask's.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import torch
from PIL import Image

from automask import yolo

REPO = Path(__file__).resolve().parent.parent
DEV = REPO.parent / "shared" / "data" / "faces-hands-dev"
OUT = REPO / "bench" / "out"


def photos() -> list[Image.Image]:
    paths = [REPO / "tests" / "data" / n for n in ("astronaut.png", "camera.png")]
    paths += sorted(p for p in DEV.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if DEV.is_dir() else []
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        f = 1024 / max(im.size)
        out.append(im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.LANCZOS))
    return out


def main() -> None:
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO

    from bench.kit.machine import cpu

    name, flags = cpu()
    pictures = photos()
    lines = ["# YOLO detection time", "", f"`.venv-spandrel/bin/python -m bench.yolo`: {len(pictures)} photos at a "
             f"long side of 1024, the model's 640 px input, CPU: {name}, {' '.join(flags)}, torch threads "
             f"{torch.get_num_threads()}.", "", "| model | ms per photo (median) | slowest | finds ≥ 0.3 per photo |",
             "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for yaml in ("yolov8n.yaml", "yolov8n-seg.yaml"):
            torch.manual_seed(0)
            path = Path(tmp) / yaml.replace(".yaml", ".pt")
            model = YOLO(yaml)
            model.ckpt = {"train_args": {"task": model.task, "imgsz": 640}}
            model.save(str(path))
            loaded = yolo.load(path)
            loaded.find(pictures[0], "face", 0.3)  # warm-up
            loaded.seconds.clear()
            finds = [len(loaded.find(p, "face", 0.3)) for p in pictures]
            ms = [s * 1000 for s in loaded.seconds]
            lines.append(f"| {yaml.removesuffix('.yaml')} ({loaded.task}) | {statistics.median(ms):.0f} | "
                         f"{max(ms):.0f} | {statistics.mean(finds):.1f} |")
    lines += ["", "MediaPipe alone on the same photos at 1024 px: bench/out/automask.md (its median and slowest)."]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "yolo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
