"""What MediaPipe's single-shot detectors (the palm detector, the pose detector) share, run on their own: the
picture letterboxed into the model's square, the anchors (``SsdAnchorsCalculator``'s fixed-size ones), and each
anchor's box and keypoints decoded (``TensorsToDetectionsCalculator``: offsets in input pixels from the anchor's
centre, the score a sigmoid of the logit), best first, a box overlapping a better one being that one again."""

from __future__ import annotations

import numpy as np
from PIL import Image

from automask.found import iou


def sigmoid(x) -> np.ndarray:
    """Logits as probabilities (clipped at ±100, as MediaPipe's ``score_clipping_thresh``)."""
    return 1 / (1 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -100, 100)))


def anchors(layers: tuple[tuple[int, int], ...], side: int) -> np.ndarray:
    """SSD anchor centres in input pixels, as MediaPipe's ``SsdAnchorsCalculator`` lays out fixed-size ones: each
    layer's (stride, anchors a cell), cell by cell, row by row."""
    cells = []
    for stride, per_cell in layers:
        n = side // stride
        cells += [((x + 0.5) / n, (y + 0.5) / n) for y in range(n) for x in range(n) for _ in range(per_cell)]
    return np.asarray(cells, dtype=np.float32) * side


class Letterbox:
    """A picture scaled to fit a square of ``side`` px (bilinear), centred on black: ``pixels`` (side×side×3,
    uint8), and what maps the square's pixels back to the picture's (``scale``, ``offset``)."""

    def __init__(self, rgb: Image.Image, side: int):
        self.scale = side / max(rgb.size)
        w, h = max(1, round(rgb.width * self.scale)), max(1, round(rgb.height * self.scale))
        self.offset = ((side - w) // 2, (side - h) // 2)
        canvas = Image.new("RGB", (side, side))
        canvas.paste(rgb.resize((w, h), Image.Resampling.BILINEAR), self.offset)
        self.pixels = np.asarray(canvas)

    def places(self, raw: np.ndarray, scores: np.ndarray, anchors: np.ndarray, keypoints: int, floor: float,
               count: int, same: float, scanned: int | None = None) -> list[tuple[float, tuple, np.ndarray]]:
        """The ``count`` best anchors' boxes that score at least ``floor`` (of the ``scanned`` best, or all), best
        first, in the picture's pixels, one overlapping a better one (IoU ≥ ``same``) passed over: each one's score,
        box (x0, y0, x1, y1) and ``keypoints``×2 points.  ``raw``: the model's box outputs, an anchor a row."""
        f, (ox, oy) = self.scale, self.offset
        out: list[tuple[float, tuple, np.ndarray]] = []
        for i in np.argsort(-scores)[:scanned]:
            if scores[i] < floor or len(out) == count:
                break
            ax, ay = anchors[i]
            cx, cy, bw, bh = raw[i, 0] + ax, raw[i, 1] + ay, raw[i, 2], raw[i, 3]
            box = ((cx - bw / 2 - ox) / f, (cy - bh / 2 - oy) / f, (cx + bw / 2 - ox) / f, (cy + bh / 2 - oy) / f)
            if any(iou(box, b) >= same for _, b, _ in out):
                continue
            points = (raw[i, 4:4 + 2 * keypoints].reshape(keypoints, 2) + (ax, ay) - (ox, oy)) / f
            out.append((float(scores[i]), box, points))
        return out
