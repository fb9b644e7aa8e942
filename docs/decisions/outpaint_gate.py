"""Choosing [outpaint.gate]'s limits: seam figures of honest extensions against shifted ones.

    PYTHONPATH=. python docs/decisions/outpaint_gate.py

For the repository's photos and the development photos, each variant (16:9, 9:16, 4:5) is made by each
continuing infill (blur, reflect) — what an extension that matches the picture measures — and again with the
new area shifted (brighter by 12 and 24 levels, warmer by +16 red / -16 blue): what drift looks like.
Prints the ΔE and seam figures of each group, so the limits can sit between them.
"""

from __future__ import annotations

import numpy as np

from bench.kit.pipeline import DATA, photos
from stages.colour import seam_drift
from stages.infill import infill
from stages.outpaint_plan import plan

SHIFTS = {"honest": (0, 0, 0), "+12 levels": (12, 12, 12), "+24 levels": (24, 24, 24), "warmer": (16, 0, -16)}


def main() -> None:
    rows: dict[tuple[str, str], list] = {}
    for _name, rgb in photos([DATA / "astronaut.png", DATA / "camera.png"], 512):
        h, w = rgb.shape[:2]
        for spec in ("16:9", "9:16", "4:5"):
            p = plan((w, h), spec)
            if p.size == (w, h):
                continue
            big = np.zeros((p.size[1], p.size[0], 3), np.uint8)
            ox, oy = p.origin
            big[oy:oy + h, ox:ox + w] = rgb
            known = np.zeros(big.shape[:2], bool)
            known[oy:oy + h, ox:ox + w] = True
            for method in ("blur", "reflect"):
                filled = infill(method, big, known, 0)
                for shift, rgb_shift in SHIFTS.items():
                    out = filled.astype(int)
                    out[~known] += rgb_shift
                    out = np.clip(out, 0, 255).astype(np.uint8)
                    d = seam_drift(out, (ox, oy, ox + w, oy + h))
                    rows.setdefault((method, shift), []).append((d.delta_e, d.seam))
    print("| infill | new area | ΔE mean (median, max) | seam (median, max) |\n|---|---|---|---|")
    for (method, shift), values in rows.items():
        de, seam = np.array([v[0] for v in values]), np.array([v[1] for v in values])
        print(f"| {method} | {shift} | {np.median(de):.2f}, {de.max():.2f} (min {de.min():.2f}) | "
              f"{np.median(seam):.2f}, {seam.max():.2f} (min {seam.min():.2f}) |")


if __name__ == "__main__":
    main()
