"""Variants without a generative model, before and after: the edge-stretch infill variants used to be, and
the backdrop they are now, for the demo's photos and the development photos.

    python -m bench.variants [--size 384]

Each photo (resized to ``--size`` on its long side) as 16:9, 9:16 and 4:5, made as the outpaint stage makes
it without a model (one step to the whole canvas).  Writes bench/out/variants.png (a row per photo: each
variant by ``blur`` above the same by ``backdrop``) and bench/out/variants.md (the seam figures of each).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from bench.kit.pipeline import REPO, photos
from stages.colour import seam_drift
from stages.infill import infill
from stages.outpaint_plan import plan

OUT = REPO / "bench" / "out"
SPECS = ("16:9", "9:16", "4:5")


def variant(rgb: np.ndarray, spec: str, method: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    h, w = rgb.shape[:2]
    p = plan((w, h), spec)
    big = np.zeros((p.size[1], p.size[0], 3), np.uint8)
    ox, oy = p.origin
    big[oy:oy + h, ox:ox + w] = rgb
    known = np.zeros(big.shape[:2], bool)
    known[oy:oy + h, ox:ox + w] = True
    return infill(method, big, known, 0), (ox, oy, ox + w, oy + h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cell = 200
    rows = photos(sorted((REPO / "examples" / "inbox").glob("*.png")), args.size)
    sheet = Image.new("RGB", (8 + len(SPECS) * (cell + 8), 24 + len(rows) * (2 * cell + 30)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 6), "each photo: edge-stretch blur (before, above) and backdrop (now, below); frame outlined",
              fill=(230, 230, 230))
    lines = ["# Variants without a generative model: before (blur) and now (backdrop)", "",
             f"`python -m bench.variants --size {args.size}`; seam figures from `stages.colour.seam_drift` "
             "(ΔE mean, lightness of the new area, seam visibility).", "",
             "| photo | variant | blur: ΔE / L* / seam | backdrop: ΔE / L* / seam |", "|---|---|---|---|"]
    for r, (name, rgb) in enumerate(rows):
        y = 24 + r * (2 * cell + 30)
        draw.text((8, y), name, fill=(200, 200, 200))
        for c, spec in enumerate(SPECS):
            cells = []
            for k, method in enumerate(("blur", "backdrop")):
                out, frame = variant(rgb, spec, method)
                d = seam_drift(out, frame)
                cells.append(f"{d.delta_e:.1f} / {d.lightness:+.1f} / {d.seam:.2f}" if d else "—")
                im = Image.fromarray(out)
                f = cell / max(im.size)
                small = im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.LANCZOS)
                x0, y0 = 8 + c * (cell + 8), y + 14 + k * (cell + 8)
                sheet.paste(small, (x0, y0))
                fx0, fy0, fx1, fy1 = (round(v * f) for v in frame)
                draw.rectangle((x0 + fx0, y0 + fy0, x0 + fx1 - 1, y0 + fy1 - 1), outline=(255, 200, 0))
            lines.append(f"| {name} | {spec} | {cells[0]} | {cells[1]} |")
    sheet.save(OUT / "variants.png")
    lines += ["", "![before and after](variants.png)", "",
              "The backdrop is deliberately darker than the picture (L* about −15 to −30) and meets it at a visible "
              "edge: it reads as a frame, not as more of the photo, so the drift gate records it and does not judge "
              "it.", ""]
    (OUT / "variants.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
