"""A hand's joints looked at again, on the crop the joints themselves give: MediaPipe's tracking step.

The hand landmarker finds a palm, then runs its hand landmark model on a crop around it.  When two hands
overlap (two thumbs up, one behind the other; clasped hands) that first crop holds both, and the 21 joints
it gives can mix them: the thumb of one, the fingers of the other.  In a video MediaPipe runs the model
again on the crop the last joints give (``HandLandmarksToRectCalculator`` and a ×2 square): that second
look settles on one hand.  ``HandJoints.settle`` is that step for one image, with the landmark model of the
same ``.task`` bundle (``hand_landmarks_detector.tflite``), run through OpenVINO's TFLite reader as the face
landmark model is.  A hand drawn from settled joints can then be hidden and the image searched again for a
hand behind it (``Detector``'s hands-behind-hands pass).
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from automask.face_mesh import one_thread, rotated_crop, to_image
from automask.skeleton import CONNECTIONS, PALM, draw_hand, finger_width  # noqa: F401 (re-exported)

SIDE = 224          # the model's input
ROI_SCALE = 2.0     # MediaPipe's crop from a hand's joints: twice their box, a square,
ROI_SHIFT = -0.1    # moved a tenth of its side towards the fingers
PALM_JOINTS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)  # the joints MediaPipe's crop is taken from


def crop_of(joints: np.ndarray) -> tuple[tuple[float, float], float, float]:
    """The crop (centre, side, angle for ``rotated_crop``) MediaPipe takes around a hand's 21 joints: turned
    so that the wrist is below the knuckles, twice the palm joints' extent, shifted towards the fingers."""
    wrist = joints[0]
    knuckles = ((joints[5] + joints[13]) / 2 + joints[9]) / 2
    v = knuckles - wrist
    angle = math.atan2(float(v[0]), -float(v[1]))  # the crop's up along wrist → knuckles
    cos, sin = math.cos(angle), math.sin(angle)
    pts = joints[list(PALM_JOINTS)]
    # In the crop's frame (u right, v down): image = centre + R(angle)·(u, v).
    u = pts[:, 0] * cos + pts[:, 1] * sin
    w = -pts[:, 0] * sin + pts[:, 1] * cos
    mid_u, mid_w = (u.min() + u.max()) / 2, (w.min() + w.max()) / 2
    side = ROI_SCALE * float(max(u.max() - u.min(), w.max() - w.min()))
    mid_w += ROI_SHIFT * side
    centre = (mid_u * cos - mid_w * sin, mid_u * sin + mid_w * cos)
    return (float(centre[0]), float(centre[1])), side, angle


class HandJoints:
    """The hand landmark model of a hand landmarker bundle, loaded once."""

    def __init__(self, bundle: Path):
        self._compiled = bundle_model(bundle, "hand_landmarks_detector.tflite")
        self._request = self._compiled.create_infer_request()
        # 21×3 joints in crop pixels, the hand flag and the chance that it is a right hand (probabilities)
        self._points_out, self._flag_out, self._right_out = self._compiled.outputs[:3]

    def look(self, rgb: Image.Image | np.ndarray, centre: tuple[float, float], side: float,
             angle: float) -> tuple[np.ndarray, float, float]:
        """The model on a crop (``rotated_crop``'s centre, side and angle): 21×2 joints in image pixels, the hand
        flag and the chance that the hand is a right hand (both 0–1)."""
        crop, affine = rotated_crop(rgb, centre, side, angle, SIDE)
        result = self._request.infer({0: (np.asarray(crop, dtype=np.float32) / 255.0)[None]})
        points = np.asarray(result[self._points_out]).reshape(21, 3)[:, :2]
        flag = float(np.asarray(result[self._flag_out]).ravel()[0])  # already a probability
        return to_image(affine, points), flag, float(np.asarray(result[self._right_out]).ravel()[0])

    def settle(self, rgb: Image.Image | np.ndarray, joints) -> tuple[np.ndarray, float]:
        """21×2 joints in image pixels from the crop ``joints`` give, and the model's hand flag there (0–1)."""
        centre, side, angle = crop_of(np.asarray(joints, dtype=np.float64))
        if side < 4:
            return np.asarray(joints, dtype=np.float64), 0.0
        points, flag, _ = self.look(rgb, centre, side, angle)
        return points, flag


def bundle_model(bundle: Path, member: str):
    """One model of a hand landmarker bundle (a zip), compiled by OpenVINO for one CPU thread (``one_thread``)."""
    try:
        with zipfile.ZipFile(bundle) as z:
            data = z.read(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{bundle}: not a hand landmarker bundle with {member} ({exc})") from None
    # OpenVINO reads TFLite from a file only; the file is gone once the model is compiled.
    fd, name = tempfile.mkstemp(suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return one_thread(name)
    finally:
        os.unlink(name)
