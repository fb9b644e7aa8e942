"""The face's own shape: MediaPipe's 468-point face landmark model on each found face.

The model (``face_landmark.tflite``, shipped beside the detectors) sees a 192² crop around the face,
turned so that the eyes are level — the crop MediaPipe's own face mesh graph makes: a square 1.5 times
the detection's box, rotated by the line through the detector's two eye keypoints.  It runs through
OpenVINO's TFLite reader (a few ms per face on a CPU); the Tasks API refuses the file for lack of the
metadata it wants.  The outlines are MediaPipe's own index lists (``FaceLandmarksConnections``):

* ``oval``: the face from the hairline to the chin, ear to ear;
* ``eyes``: both eyes with their brows; ``mouth``: the lips.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from automask.found import JUDGED_ALWAYS, JUDGED_BY_SIZE, MODELS, Detection, containment, holds, inside, side

MODEL = MODELS / "face_landmark.tflite"  # shipped beside the detectors
SIDE = 192
ROI_SCALE = 1.5  # MediaPipe's face mesh crop: 1.5 times the detection's box
PARTS = ("eyes", "mouth")
MIN_PRESENCE = 0.5  # the model's own face flag, below which its points are not a face's
BETWEEN = 1 / 3     # a judged face box over this much of each of two faces kept is a box between them, neither
JUDGED_FROM = 40   # px: a face found on a grey picture (but one a person's pose has there: ``detect``), or only in
                   # a large picture's tiles, this large or larger is kept only when the landmark model sees a face
                   # in it (false ones on grey pictures measured 44–540 px and a flag of 0.0; real ones mostly
                   # 0.72–1.0 from 25 px up, a three-quarter face 0.03–0.5; a real face of 24 px can score 0.08:
                   # too small to judge)
CONFIRM_FROM = 0.3  # a face the detectors are less sure of than [automask.face].min_confidence, down to this, is
                    # kept when the landmark model sees a face in it ([automask.face].confirm_from): of 32 such
                    # finds on the development photos and their copies, the one face had a flag of 0.7, the
                    # others (knuckles, a thumb, a coat, noise) 0.0–0.13


def _indices(*names: str) -> list[int]:
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections as C

    out: list[int] = []
    for name in names:
        for c in getattr(C, name):
            for i in (c.start, c.end):
                if i not in out:
                    out.append(i)
    return out


def _loop(name: str) -> list[int]:
    """A closed outline's indices in drawing order, from its list of edges."""
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections as C

    nxt = {c.start: c.end for c in getattr(C, name)}
    start = next(iter(nxt))
    order, i = [start], nxt[start]
    while i != start and len(order) <= len(nxt):
        order.append(i)
        i = nxt[i]
    return order


def one_thread(model, **config):
    """A ``.tflite`` model (a path, or a model OpenVINO has read) compiled by OpenVINO to run on one CPU thread, on
    whichever core is free: by default
    OpenVINO pins a model's thread to a core, and every model then to the same one — two run side by side (the
    detector's two threads) took as long as one after the other (100 hand landmark looks: 0.28 s alone, 0.57 s
    beside another pinned model, 0.29 s unpinned)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(model)) if isinstance(model, (str, Path)) else model
    return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "ENABLE_CPU_PINNING": False, **config})


def pixels_of(image: Image.Image | np.ndarray) -> np.ndarray:
    """A picture's RGB pixels (H×W×3), made once for the many crops taken from it; pixels as they are."""
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return image


def rotated_crop(image: Image.Image | np.ndarray, centre: tuple[float, float], side: float, angle: float,
                 out: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """The square of ``side`` px around ``centre``, turned by ``angle`` (radians), sampled to out×out (bilinear,
    black beyond the picture) — the crop MediaPipe's landmark models expect — and the affine (a, b, c, d, e, f)
    that takes a crop pixel (u, v) back to the image: (a·u + b·v + c, d·u + e·v + f).  ``image``: a picture or its
    pixels (H×W×3); one looked at many times is best given as pixels, made once (a 1024² picture's take 2 ms, a
    4096²'s 60).  Of a picture, only the part the square covers is read."""
    import cv2

    k, cos, sin = side / out, math.cos(angle), math.sin(angle)
    # Crop pixel (u, v) samples the image at centre + R(angle)·k·(u − out/2, v − out/2).
    a, b, d, e = k * cos, -k * sin, k * sin, k * cos
    c = centre[0] - (a + b) * out / 2
    f = centre[1] - (d + e) * out / 2
    # OpenCV samples pixel centres at whole coordinates, the affine's at half ones (PIL's convention): the matrix
    # OpenCV is given takes a crop pixel's centre to its place in the image, both counted from pixel centres.
    matrix = np.float64([[a, b, c + (a + b) / 2 - 0.5], [d, e, f + (d + e) / 2 - 0.5]])
    if isinstance(image, Image.Image):
        # The turned square's bounds, and a pixel more each way for the bilinear sampling; beyond the picture,
        # PIL's crop is black as OpenCV's border is.
        reach = side / 2 * (abs(cos) + abs(sin)) + 2
        x0, y0 = math.floor(centre[0] - reach), math.floor(centre[1] - reach)
        image = image.crop((x0, y0, math.ceil(centre[0] + reach), math.ceil(centre[1] + reach)))
        matrix[0, 2] -= x0
        matrix[1, 2] -= y0
    crop = cv2.warpAffine(pixels_of(image), matrix, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, (a, b, c, d, e, f)


def to_image(affine: tuple[float, ...], uv: np.ndarray) -> np.ndarray:
    """Crop pixels (N×2, u and v) back in the image through ``rotated_crop``'s affine."""
    a, b, c, d, e, f = affine
    return np.stack([a * uv[:, 0] + b * uv[:, 1] + c, d * uv[:, 0] + e * uv[:, 1] + f], axis=1)


class FaceMesh:
    """Loads the model once; ``shape`` gives a face's outlines in image pixels."""

    def __init__(self, model: Path = MODEL):
        self._compiled = one_thread(model)
        self._request = self._compiled.create_infer_request()
        self._points_out, self._flag_out = self._compiled.outputs  # 1×1×1×1404 (x, y, z), 1×1×1×1 (a logit)
        self.oval = _loop("FACE_LANDMARKS_FACE_OVAL")
        self.parts = {"eyes": [_indices("FACE_LANDMARKS_RIGHT_EYE", "FACE_LANDMARKS_RIGHT_EYEBROW"),
                               _indices("FACE_LANDMARKS_LEFT_EYE", "FACE_LANDMARKS_LEFT_EYEBROW")],
                      "mouth": [_indices("FACE_LANDMARKS_LIPS")]}

    def landmarks(self, rgb: Image.Image | np.ndarray, face: Detection) -> tuple[np.ndarray, float]:
        """468×2 points in image pixels, and the model's confidence that a face is there (0–1)."""
        x0, y0, x1, y1 = face.box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = ROI_SCALE * max(x1 - x0, y1 - y0)
        angle = 0.0
        if len(face.landmarks) >= 2:  # the detector's keypoints: the eye on the image's left, then the other
            (ex0, ey0), (ex1, ey1) = face.landmarks[0], face.landmarks[1]
            angle = math.atan2(ey1 - ey0, ex1 - ex0)
        crop, affine = rotated_crop(rgb, (cx, cy), side, angle, SIDE)
        x = (np.asarray(crop, dtype=np.float32) / 255.0)[None]
        result = self._request.infer({0: x})
        pts = np.asarray(result[self._points_out], dtype=np.float64).reshape(-1, 3)[:, :2]
        flag = float(np.asarray(result[self._flag_out]).ravel()[0])
        return to_image(affine, pts), 1.0 / (1.0 + math.exp(-flag))

    def confirmed(self, rgb: Image.Image | np.ndarray, faces: list[Detection], min_confidence: float,
                  confirm_from: float = CONFIRM_FROM) -> list[Detection]:
        """``faces`` at least ``min_confidence`` sure, and those less sure but at least ``confirm_from`` — or found
        only on a grey picture's skin-toned copy (labelled ``SKIN_TONED``: a fist's knuckles, skin-toned, look
        like a face to the detectors), or on a grey picture or only in a large one's tiles and ``JUDGED_FROM`` px
        or larger (``GREY_PICTURE``, ``IN_TILES``), or one boxed by the short-range model, which was unsure of it
        (``SHORT_RANGE``), as large,
        or whose box holds a far smaller face (``HOLDS_FACE``) — in which the landmark model sees a face (its
        flag at least ``MIN_PRESENCE``) that is not one already kept: a box set off a face the detectors found
        well, whose eyes and mouth (the detector's keypoints) or whose landmarks lie, on average, in a kept
        face's box, nor a box between two kept faces over a third or more of each (``BETWEEN``: in a group photo
        enlarged 4×, the short-range model boxed the gap between two heads 0.41 sure, the landmark model found a
        face in it, and its outline lay over half of each).  A face held by one so kept is a part of it (an eye, a
        mouth), and goes."""
        def unsure(d: Detection) -> bool:
            return d.label in JUDGED_ALWAYS or (d.label in JUDGED_BY_SIZE and side(d.box) >= JUDGED_FROM)

        kept = [d for d in faces if d.score >= min_confidence and not unsure(d)]
        judged = sorted((d for d in faces if confirm_from <= d.score and (d.score < min_confidence or unsure(d))),
                        key=lambda d: -d.score)
        pixels = pixels_of(rgb) if judged else None  # made once for every face judged
        for d in judged:
            if sum(containment(d.box, o.box) >= BETWEEN for o in kept) >= 2:
                continue  # half over one face and half over the next: the landmark model sees either in it
            points, presence = self.landmarks(pixels, d)
            if presence < MIN_PRESENCE:
                continue
            middles = [points.mean(axis=0)] + ([np.mean(d.landmarks, axis=0)] if d.landmarks else [])
            if not any(inside(middle, o.box) for o in kept for middle in middles):
                kept.append(d)
        return [d for d in faces if d in kept and not any(holds(o, d) for o in kept)]

    def outlines(self, rgb: Image.Image | np.ndarray, face: Detection) -> dict[str, list[list[tuple[float, float]]]]:
        """{"oval": [polygon], "eyes": [right, left], "mouth": [polygon]}: each a list of (x, y); empty when
        the model does not see a face in the crop (a false detection keeps its box)."""
        pts, presence = self.landmarks(rgb, face)
        if presence < MIN_PRESENCE:
            return {}
        out = {"oval": [_rounded(pts[self.oval])]}
        for part, groups in self.parts.items():
            out[part] = [_hull(pts[g]) for g in groups]
        return out

    def close(self) -> None:
        self._request = self._compiled = None


def _hull(points: np.ndarray) -> list[tuple[float, float]]:
    import cv2

    return _rounded(cv2.convexHull(points.astype(np.float32)).reshape(-1, 2))


def _rounded(points: np.ndarray) -> list[tuple[float, float]]:
    return [(round(float(x), 1), round(float(y), 1)) for x, y in points]
