"""The full-range face detector run on its own, for the many small tiles a picture's faces are searched in.

MediaPipe's Tasks API spends about as long on each call around the full-range model as the model itself takes
(4 ms a 320 px tile on a 2-core CPU, 1.7–2.4 of them the model's): a 1024² picture's 12–16 face tiles cost
50–65 ms that way.  ``FullRangeFaces`` runs the same ``.tflite`` through OpenVINO (as the face and hand landmark
models run) and decodes it as MediaPipe's face detection graph does for this model:

* the input: the picture letterboxed into 192² (``ImageToTensorCalculator`` with ``keep_aspect_ratio``: the
  picture's corners mapped onto the square's, sampled bilinearly, the border black), values −1 to 1;
* the anchors (``SsdAnchorsCalculator``): one per cell of a 48² grid (stride 4), at the cell's centre, of fixed
  size 1;
* the boxes (``TensorsToDetectionsCalculator``): 16 values an anchor — centre x, y, width, height, then six
  keypoints (eyes, nose, mouth, ears), each in input pixels from its anchor's centre; the score a sigmoid of the
  logit clipped to ±100;
* overlapping boxes (``NonMaxSuppressionCalculator``, weighted, IoU above 0.3): the surest box's score, and its
  place the score-weighted mean of every box it overlaps (itself among them).

``tests/test_automask.py`` checks its faces against the Tasks API's on photographs' tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from automask.face_mesh import one_thread
from automask.found import Detection, iou

SIDE = 192          # the model's input
GRID = 48           # anchors: one a cell of this grid (stride 4)
VALUES = 16         # box (4) and six keypoints (12) an anchor
KEYPOINTS = 6
SAME_FACE = 0.3     # IoU above which two boxes are one face (weighted suppression)


class FullRangeFaces:
    """The full-range face model, loaded once (one CPU thread), called like a ``FaceDetector`` on one picture."""

    @classmethod
    def of(cls, path: Path, min_confidence: float) -> FullRangeFaces | None:
        """The model at ``path``, read once, when it has the full-range detector's shape (input 192², 48² anchors
        of 16 values, one score each); ``None`` for another file set as ``face_model_full`` (MediaPipe's to run,
        or to refuse)."""
        import openvino as ov

        try:
            model = ov.Core().read_model(str(path))
        except Exception:  # noqa: BLE001 — any file OpenVINO cannot read is MediaPipe's to run (or refuse)
            return None
        shapes = [tuple(p.get_partial_shape().to_shape()) if p.get_partial_shape().is_static else None
                  for p in (*model.inputs, *model.outputs)]
        if shapes != [(1, SIDE, SIDE, 3), (1, GRID * GRID, VALUES), (1, GRID * GRID, 1)]:
            return None
        return cls(model, min_confidence)

    def __init__(self, model, min_confidence: float):
        # In full precision: a CPU with bfloat16 units would otherwise run it in those, and its scores would
        # stray from MediaPipe's by up to 0.08 (0.03 in full precision, on the development photos' tiles).
        self._compiled = one_thread(model, INFERENCE_PRECISION_HINT="f32")
        self._request = self._compiled.create_infer_request()
        self._boxes_out, self._scores_out = self._compiled.outputs
        self.min_confidence = min_confidence
        cells = (np.arange(GRID, dtype=np.float32) + 0.5) / GRID
        self._anchors = np.stack(np.meshgrid(cells, cells), axis=-1).reshape(-1, 2)  # x, y; row by row

    def detect(self, rgb: Image.Image, model: str = "face-full") -> list[Detection]:
        """The faces in ``rgb`` at least ``min_confidence`` sure, in its pixels, surest first."""
        import cv2

        w, h = rgb.size
        # The picture's box grown to a square about its centre (letterbox), its corners mapped onto the input's.
        k = SIDE / max(w, h)
        ox, oy = (max(w, h) - w) / 2, (max(w, h) - h) / 2
        matrix = np.float32([[k, 0, k * ox], [0, k, k * oy]])
        square = cv2.warpAffine(np.asarray(rgb), matrix, (SIDE, SIDE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        result = self._request.infer({0: (square.astype(np.float32) / 127.5 - 1.0)[None]})
        raw = np.asarray(result[self._boxes_out])[0]
        logits = np.clip(np.asarray(result[self._scores_out], dtype=np.float64)[0, :, 0], -100, 100)
        scores = 1 / (1 + np.exp(-logits))
        keep = np.flatnonzero(scores >= self.min_confidence)
        if keep.size == 0:
            return []
        raw, scores, anchors = raw[keep].astype(np.float64), scores[keep], self._anchors[keep]
        centres = raw[:, 0:2] / SIDE + anchors
        half = raw[:, 2:4] / SIDE / 2
        boxes = np.concatenate([centres - half, centres + half], axis=1)               # 0–1 of the square
        points = raw[:, 4:4 + 2 * KEYPOINTS].reshape(-1, KEYPOINTS, 2) / SIDE + anchors[:, None, :]
        side = max(w, h)
        out: list[Detection] = []
        for box, score, kps in _weighted(boxes, scores, points):
            x0, y0, x1, y1 = box * side - (ox, oy, ox, oy)
            # In whole pixels, as the Tasks API gives a box: its corner cut down to the picture's pixel (and not
            # above or left of the picture), its width and height cut down.  The second look and the merging
            # rules were measured on such boxes, and a find a pixel off flips a borderline second look.
            left, top = max(0, int(x0)), max(0, int(y0))
            out.append(Detection("face", (left, top, left + int(x1 - x0), top + int(y1 - y0)), float(score), model,
                                 [(float(x * side - ox), float(y * side - oy)) for x, y in kps]))
        return out

    def close(self) -> None:
        self._request = self._compiled = None


def _weighted(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray):
    """MediaPipe's weighted suppression: surest first, each box with the score-weighted mean place (box and
    keypoints) of the boxes still left that overlap it by IoU above ``SAME_FACE``, those boxes then gone."""
    left = list(np.argsort(-scores, kind="stable"))
    while left:
        top = left[0]
        # (the surest box among them even when it has no area, and so overlaps nothing, itself neither)
        same = [top] + [i for i in left[1:] if iou(tuple(boxes[i]), tuple(boxes[top])) > SAME_FACE]
        left = [i for i in left if i not in same]
        weights = scores[same][:, None]
        box = (boxes[same] * weights).sum(axis=0) / weights.sum()
        kps = (points[same] * weights[:, :, None]).sum(axis=0) / weights.sum()
        yield box, scores[top], kps
