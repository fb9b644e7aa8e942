"""The upscaler's first image in a fresh process: what it pays before and after the on-disk caches.

Each measurement is a new Python process that loads the upscale stage and upscales one 128² photo crop
with x4plus on the CPU, timing set-up and the image.  OpenVINO (set-up: weights, ONNX export, compilation) in
three states of [paths].models: empty (the very first run on a machine), with the converted weights and
ONNX file but no compiled model, and warm (everything cached).  Then MNN, which "auto" picks on x86 CPUs
with AVX2 and no AVX-512 (set-up: weights, ONNX export, conversion to MNN's format), in the same three
states; and ncnn (set-up: reading the weights; nothing to export or compile), empty and warm.

    python -m bench.first_image            # → bench/out/first_image.md (--out NAME.md for another name)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).parent / "out"
REPO = Path(__file__).parent.parent

CHILD = r"""
import json, sys, time
t0 = time.monotonic()
from PIL import Image
from stages.models import Models
from stages.upscale import UpscaleParams, UpscaleStage
class Ctx:
    models = Models(None, __import__("pathlib").Path(sys.argv[1]))
stage = UpscaleStage()
params = UpscaleParams(model=sys.argv[2], scale=4, device="cpu", backend=sys.argv[3])
t1 = time.monotonic()
stage.setup(Ctx(), params)
t2 = time.monotonic()
image = Image.open("tests/data/astronaut.png").convert("RGB").crop((192, 64, 320, 192))
stage.upscale_image(image, params, 256)
t3 = time.monotonic()
stage.upscale_image(image, params, 256)
t4 = time.monotonic()
print(json.dumps({"import": t1 - t0, "setup": t2 - t1, "image": t3 - t2, "again": t4 - t3,
                  "backend": stage.backend}))
"""


def child(models: Path, model: str, backend: str = "openvino") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(models), model, backend], cwd=REPO,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend, result
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="x4plus")
    ap.add_argument("--out", default="first_image.md", help="the report's file name in bench/out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        rows = [("empty [paths].models (first run on a machine)", child(models, args.model))]
        shutil.rmtree(models / "openvino", ignore_errors=True)
        rows.append(("weights and ONNX cached, compiled model not", child(models, args.model)))
        rows.append(("warm: everything cached", child(models, args.model)))
        rows.append(("warm, again", child(models, args.model)))
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        rows.append(("MNN: empty [paths].models", child(models, args.model, "mnn")))
        shutil.rmtree(models / "mnn", ignore_errors=True)
        rows.append(("MNN: weights and ONNX cached, MNN file not", child(models, args.model, "mnn")))
        rows.append(("MNN: warm", child(models, args.model, "mnn")))
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        rows.append(("ncnn: empty [paths].models", child(models, args.model, "ncnn")))
        rows.append(("ncnn: warm", child(models, args.model, "ncnn")))
    from bench.upscale_cpu import cpu  # torch and the engines, only once the children have run

    command = "" if args.out == "first_image.md" else f" --out {args.out}"
    lines = [f"# The upscaler's first image in a fresh process ({args.model}, 128² → 512², CPU)", "",
             "OpenVINO rows unless the row says MNN or ncnn.", "",
             f"CPU: {cpu()[0]}; `python -m bench.first_image{command}`", "",
             "Set-up: weights, ONNX export, OpenVINO compilation (and the imports they need); for MNN, the "
             "conversion to its format instead of the compilation; for ncnn, reading its weights. "
             "Warm image: the same image again in the same process.", "",
             "| [paths].models | set-up s | first image s | set-up + first image s | warm image s |",
             "|---|---|---|---|---|"]
    for what, r in rows:
        lines.append(f"| {what} | {r['setup']:.2f} | {r['image']:.2f} | {r['setup'] + r['image']:.2f} | "
                     f"{r['again']:.2f} |")
    OUT.mkdir(exist_ok=True)
    (OUT / args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
