"""Measures of a picture that tests and benchmarks both judge by."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def seam_ratio(img: np.ndarray, xs: list[float], ys: list[float]) -> tuple[float, float]:
    """The strongest mean gradient at the joins over the mean gradient inside the tiles (columns and rows
    further than 8 px from a join), across columns and across rows, of the lightly blurred luminance: a
    seam is a step in the low frequencies, which no amount of fine noise on either side hides."""
    g = np.asarray(Image.fromarray(img).convert("L").filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32)

    def one(grad: np.ndarray, joins: list[float]) -> float:
        if not joins:  # one tile across: no join to measure
            return float("nan")
        at = [i for j in joins for i in (int(j) - 1, int(j))]
        inside = [v for i, v in enumerate(grad) if all(abs(i + 0.5 - j) > 8 for j in joins)]
        return float(max(grad[i] for i in at) / np.mean(inside))
    return (one(np.abs(np.diff(g, axis=1)).mean(axis=0), xs), one(np.abs(np.diff(g, axis=0)).mean(axis=1), ys))
