"""Control images for ControlNet-guided hands, drawn from the hand's 21 landmarks.

A repaint that knows nothing of the hand's pose returns "a featureless blob".
With ``[inpaint.hand].controlnet`` the pose goes in as a control image, in the
convention the model was trained on:

* **openpose** — OpenPose's hand skeleton: black ground, the 20 bones in
  OpenPose's limb order (wrist to each finger's tip, thumb first; the same
  joint numbering as MediaPipe's landmarks), bone ``i`` coloured by the hue
  i/20 at full saturation and value, 2 px lines at 512 px, and every joint a
  4 px blue dot;
* **depth** — a depth cue, near is light: the palm and a tube along each bone
  a finger wide, shaded by the distance to the shape's edge so that fingers
  read as round, brightest along their middle.

Both are drawn at the repaint's working size, so that they lie exactly on the
crop the model sees.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
         (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
PALM = (0, 1, 5, 9, 13, 17)
JOINT = (0, 0, 255)  # RGB: OpenPose draws a hand's joints blue


def bone_colour(i: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(i / len(BONES), 1.0, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def place(landmarks, crop: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Landmarks in image pixels → pixels of the crop resized to ``size`` (w, h)."""
    x0, y0, x1, y1 = crop
    pts = np.asarray(landmarks, dtype=np.float64)
    return np.stack([(pts[:, 0] - x0) * size[0] / (x1 - x0), (pts[:, 1] - y0) * size[1] / (y1 - y0)], axis=1)


def openpose_hand(points: np.ndarray, size: tuple[int, int]) -> Image.Image:
    import cv2

    w, h = size
    canvas = np.zeros((h, w, 3), np.uint8)
    k = max(w, h) / 512
    line, dot = max(1, round(2 * k)), max(1, round(4 * k))
    for i, (a, b) in enumerate(BONES):
        pa, pb = points[a], points[b]
        cv2.line(canvas, (int(round(pa[0])), int(round(pa[1]))), (int(round(pb[0])), int(round(pb[1]))),
                 bone_colour(i), thickness=line, lineType=cv2.LINE_AA)
    for p in points:
        cv2.circle(canvas, (int(round(p[0])), int(round(p[1]))), dot, JOINT, thickness=-1, lineType=cv2.LINE_AA)
    return Image.fromarray(canvas)


def depth_hand(points: np.ndarray, size: tuple[int, int]) -> Image.Image:
    import cv2

    w, h = size
    palm = np.linalg.norm(points[9] - points[0])
    width = max(2, int(round(0.22 * palm)))  # a finger is about a fifth of the palm's length wide
    shape = np.zeros((h, w), np.uint8)
    cv2.fillPoly(shape, [np.round(points[list(PALM)]).astype(np.int32)], 255)
    for a, b in BONES:
        cv2.line(shape, tuple(int(round(v)) for v in points[a]), tuple(int(round(v)) for v in points[b]), 255,
                 thickness=width, lineType=cv2.LINE_AA)
    inside = cv2.distanceTransform((shape > 127).astype(np.uint8), cv2.DIST_L2, 5)
    if inside.max() <= 0:
        return Image.fromarray(np.zeros((h, w, 3), np.uint8))
    # a rounded profile: the edge is far (dark), a finger's middle near; the palm's middle nearest
    depth = np.sqrt(np.clip(inside / (width / 2), 0, 1)) * 200 + np.clip(inside / max(inside.max(), 1), 0, 1) * 55
    grey = np.clip(np.rint(depth), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))


def control_image(kind: str, landmarks, crop: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    points = place(landmarks, crop, size)
    return openpose_hand(points, size) if kind == "openpose" else depth_hand(points, size)


def guess_kind(path: str) -> str:
    """A ControlNet's kind from its name ("…depth…" is depth), for ``controlnet_type = "auto"``."""
    return "depth" if "depth" in path.lower() else "openpose"
