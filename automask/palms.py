"""Palms ranked, not thresholded: the palm detector of the hand landmarker bundle, run on its own.

MediaPipe's hand landmarker keeps the palms its detector scores above a threshold and runs the hand landmark
model on each.  On a grey picture that detector scores every palm low — a hand that scores 0.96 in colour
scores 0.02 in grey — and yet the hands are still among its best few places: on a grey copy of a woman sitting
on cobblestones both hands are its 6th and 8th anchors, at scores no threshold could tell from the stones'.
The landmark model, given the crop, still knows a hand there (its hand flag 0.99).  So the detector's best places
are taken however low they score, and the landmark model decides (``Detector``) — in colour too, where a hand
round a glass, that the hand landmarker passes over, was the detector's best place (0.4, the model's flag 0.99).

The decoding is MediaPipe's own for ``palm_detection_full``, read from its graph's options (the SSD anchors
``SsdAnchorsCalculator`` makes, ``TensorsToDetectionsCalculator``'s box and keypoint layout) and the hand's
crop from a palm (``DetectionsToRectsCalculator`` and ``RectTransformationCalculator`` in the hand landmarker
graph): OpenVINO runs the same ``hand_detector.tflite`` the Tasks API runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from automask.hand_joints import bundle_model
from automask.ssd import Letterbox, anchors, sigmoid

SIDE = 192                       # the detector's input: the picture letterboxed into a square
LAYERS = ((8, 2), (16, 6))       # (stride, anchors per cell): 24² cells × 2 and 12² cells × 6 = 2016 anchors
KEYPOINTS = 7                    # wrist, the finger bases, the thumb's joints
WRIST, MIDDLE = 0, 2             # the keypoints that turn the hand's crop upright
CROP_SCALE = 2.6                 # the hand's crop: the palm's box 2.6 times, a square of its longer side, …
CROP_SHIFT = 0.5                 # … moved half the box's height towards the fingers
SAME_PALM = 0.3                  # IoU: a place overlapping a better one this much is that palm again
SCANNED = 256                    # the best anchors looked through for distinct places


@dataclass
class Palm:
    score: float
    box: tuple[float, float, float, float]  # image pixels
    centre: tuple[float, float]             # the hand's crop for the landmark model (``rotated_crop``'s)
    side: float
    angle: float


class Palms:
    """The palm detector of a hand landmarker bundle, loaded once."""

    def __init__(self, bundle: Path):
        self._compiled = bundle_model(bundle, "hand_detector.tflite")
        self._request = self._compiled.create_infer_request()
        self._boxes_out, self._scores_out = self._compiled.outputs  # 1×2016×18 (box, 7 keypoints), 1×2016×1
        self._anchors = anchors(LAYERS, SIDE)

    def best(self, rgb: Image.Image, count: int, floor: float) -> list[Palm]:
        """The detector's ``count`` best distinct places for a palm that score at least ``floor``, best first."""
        square = Letterbox(rgb, SIDE)
        result = self._request.infer({0: (square.pixels.astype(np.float32) / 255.0)[None]})
        scores = sigmoid(np.asarray(result[self._scores_out])[0, :, 0])
        raw = np.asarray(result[self._boxes_out])[0]
        return [_palm(score, box, keypoints) for score, box, keypoints in
                square.places(raw, scores, self._anchors, KEYPOINTS, floor, count, SAME_PALM, SCANNED)]

    def close(self) -> None:
        self._request = self._compiled = None


def _palm(score: float, box: tuple[float, float, float, float], keypoints: np.ndarray) -> Palm:
    """The palm with the hand's crop MediaPipe takes around it: turned so that the wrist is below the middle
    finger's base, 2.6 times the box, moved half its height towards the fingers."""
    v = keypoints[MIDDLE] - keypoints[WRIST]
    angle = math.atan2(float(v[0]), -float(v[1]))  # the crop's up along wrist → middle finger
    bw, bh = box[2] - box[0], box[3] - box[1]
    centre = ((box[0] + box[2]) / 2 + CROP_SHIFT * bh * math.sin(angle),
              (box[1] + box[3]) / 2 - CROP_SHIFT * bh * math.cos(angle))
    return Palm(score, box, centre, CROP_SCALE * max(bw, bh), angle)
