"""Control images beside their hands, and the quality gate's verdicts on real photos.

For each hand MediaPipe finds in the development photos (``../shared/data/faces-hands-dev``, read
from there, never copied; the repository's own photos hold no hand the landmarker finds): the hand's
crop, the OpenPose skeleton and the depth cue drawn from its 21 landmarks at the crop's size, side by
side, with the gate's five-finger check — a benchmark picture, as bench/out/automask.png is.

Then the gate at work: each photo's faces and hands repainted by the tiny pipeline (random weights:
noise where a face was), judged by the real detectors — every try should fail, and the original
pixels stay — and, as the control group, each region "repainted" with its own pixels, which must pass.

    python -m bench.control        # → bench/out/control.png, bench/out/control.md
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.kit.pipeline import DEV
from bench.upscale_cpu import cpu

REPO = Path(__file__).parent.parent
OUT = Path(__file__).parent / "out"


OWN = [REPO / "tests" / "data" / "camera.png", REPO / "tests" / "data" / "astronaut.png"]


def photos() -> list[Path]:
    found = sorted(p for p in DEV.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if DEV.is_dir() else []
    return found + OWN


def control_sheet(images: list[Path], path: Path) -> list[dict]:
    from automask.detect import Detector, DetectorSettings
    from stages import control, gate
    from stages.diffusion.repaint import crop_box

    detector = Detector(DetectorSettings())
    rows, cell = [], 192
    try:
        for p in images:
            with Image.open(p) as im:
                rgb = im.convert("RGB")
            for d in (d for d in detector.detect(rgb) if d.kind == "hand" and d.score >= 0.3):
                box = crop_box(tuple(int(v) for v in d.box), 16, rgb.size)
                crop = rgb.crop(box).resize((cell, cell), Image.Resampling.LANCZOS)
                pose = control.control_image("openpose", d.landmarks, box, (cell, cell))
                depth = control.control_image("depth", d.landmarks, box, (cell, cell))
                rows.append({"photo": p.name, "score": round(d.score, 2), "label": d.label,
                             "five_fingers": gate.fingers_apart(d.landmarks), "tiles": (crop, pose, depth)})
    finally:
        detector.close()
    cols = 3
    per_row = 2  # two hands side by side
    lines = (len(rows) + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * (cols * cell + 24), lines * (cell + 22) + 30), "white")
    d = ImageDraw.Draw(sheet)
    d.text((8, 8), "each hand found: its crop | the OpenPose skeleton | the depth cue, from its 21 landmarks",
           fill="black")
    for i, r in enumerate(rows):
        x0, y0 = (i % per_row) * (cols * cell + 24) + 8, 30 + (i // per_row) * (cell + 22)
        for j, t in enumerate(r["tiles"]):
            sheet.paste(t, (x0 + j * cell, y0))
        d.text((x0, y0 + cell + 4), f"{r['photo']}: {r['label']} hand {r['score']}, five fingers apart: "
                                    f"{'yes' if r['five_fingers'] else 'no'}", fill="black")
    sheet.save(path)
    return [{k: v for k, v in r.items() if k != "tiles"} for r in rows]


def gate_runs(images: list[Path], root: Path) -> list[dict]:
    """Every photo through auto-mask and inpaint with the tiny pipeline; the gate with the real detectors."""
    sys.path.insert(0, str(REPO))
    from bench.kit.pipeline import run_one, write_config
    from bench.kit.tiny_sd import build_tiny_sd
    from daemon import config as config_mod
    from stages.automask import AutoMaskStage
    from stages.inpaint import InpaintStage
    from stages.records import to_json

    model = build_tiny_sd(root / "tiny-sd")
    out = []
    for n, p in enumerate(images):
        folder = root / f"run{n}"
        folder.mkdir()
        extra = f'[inpaint]\nmodel = "{model}"\nsteps = 3\nresolution = 128\n[upscale]\nenabled = false\n'
        cfg = config_mod.load(write_config(folder, extra))
        src = cfg.paths.inbox / p.name
        src.write_bytes(p.read_bytes())
        _, manifest = run_one(cfg, src, [AutoMaskStage(), InpaintStage()])
        inpaint = manifest.details("inpaint")
        for r in inpaint.regions if inpaint else []:
            out.append({"photo": p.name, "kind": r.kind, "index": r.index, "gate": r.gate,
                        "tries": [to_json(t) for t in r.tries]})
    return out


def identity_runs(images: list[Path]) -> list[dict]:
    """The control group: each found face and hand judged against itself — an unchanged region must pass."""
    from automask.detect import Detector, DetectorSettings
    from stages import gate
    from stages.diffusion.repaint import crop_box

    detector, judge = Detector(DetectorSettings()), gate.Judge()
    out = []
    try:
        for p in images:
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
            for d in detector.detect(Image.fromarray(rgb)):
                if d.score < (0.5 if d.kind == "face" else 0.3):
                    continue
                box = tuple(int(v) for v in d.box)
                x0, y0, x1, y1 = crop_box(box, 32, (rgb.shape[1], rgb.shape[0]))
                crop = rgb[y0:y1, x0:x1]
                mask = np.zeros(crop.shape[:2], np.uint8)
                mask[box[1] - y0:box[3] - y0, box[0] - x0:box[2] - x0] = 200
                v = gate.judge(judge, gate.GateConfig(), d.kind, crop, crop, mask,
                               (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0))
                out.append({"photo": p.name, "kind": d.kind, "passed": v.passed, **v.scores})
    finally:
        detector.close()
        judge.close()
    return out


def main() -> int:
    images = photos()
    OUT.mkdir(exist_ok=True)
    hands = control_sheet(images, OUT / "control.png")
    identity = identity_runs(images)
    with tempfile.TemporaryDirectory() as tmp:
        runs = gate_runs(images, Path(tmp))
    name, flags = cpu()
    lines = ["# Control images and the quality gate on real photos", "",
             f"CPU: {name}; flags: {', '.join(flags)}. `python -m bench.control`; photos: "
             f"{'the development set and ' if DEV.is_dir() else ''}tests/data (astronaut, camera).", "",
             "![control images beside their hands](control.png)", "",
             f"Hands drawn: {len(hands)}; with five fingers apart by the gate's check: "
             f"{sum(h['five_fingers'] for h in hands)}. A hand whose fingers were not apart before a repaint "
             "(a fist, a thumbs-up) is not asked to have them apart after it.", "",
             "## The gate: unchanged regions (must pass)", "",
             "| photo | kind | passed | scores |", "|---|---|---|---|"]
    for r in identity:
        scores = {k: v for k, v in r.items() if k not in ("photo", "kind", "passed")}
        lines.append(f"| {r['photo']} | {r['kind']} | {'yes' if r['passed'] else 'no'} | {json.dumps(scores)} |")
    lines += ["", "## The gate: repainted by the tiny pipeline (random pixels: must fail, originals kept)", "",
              "| photo | region | verdict | tries: strength, seed, scores |", "|---|---|---|---|"]
    for r in runs:
        tries = "; ".join(f"{t['strength']}, {t['seed']}: " + ", ".join(
            f"{k} {v}" for k, v in t.items() if k not in ("strength", "seed", "passed", "why")) for t in r["tries"])
        lines.append(f"| {r['photo']} | {r['kind']} {r['index']} | {r['gate']} | {tries} |")
    report = "\n".join(lines) + "\n"
    (OUT / "control.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
