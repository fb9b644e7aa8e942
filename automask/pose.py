"""Where people's hands are, from their pose: MediaPipe's BlazePose detector and body landmark model, run on
their own through OpenVINO's TFLite reader (the files carry no Tasks metadata).

The palm detector finds a hand by its look, and a hand smeared by motion, small in a grey picture or clasped in
another loses that look well before the hand landmark model stops knowing it on a crop around it.  A person's
pose puts the hand's crop where the arm ends: the body landmark model gives each wrist and the bases of the index
and little fingers, and MediaPipe's holistic graph (``HandDetectionsFromPoseToRectsCalculator``) crops the hand
from them — centred on the middle finger's estimated base, twice its distance from the wrist, turned along
wrist → finger, 2.7 times that box.  ``Detector`` has the hand landmark model judge each such crop.  A person's
head likewise (``head``): the crop around it turned so that the eyes lie level, where the face detectors look
again — a tilted face, or one in a turned picture, is upright there.

The decoding follows MediaPipe's pose graphs (``pose_detection_cpu`` and ``pose_landmark_by_roi``): the picture
letterboxed into 224² in [-1, 1], 2254 SSD anchors (strides 8, 16 and 32 ×3, two anchors a layer, fixed size), a
person's box and four keypoints (hips' middle, a point whose distance from it gives the body's size and turn, …),
the body crop around the hips turned upright, 2.5 times that distance, 256², and 39 points a person (33 of the
body) with a visibility logit each.  One simplification: overlapping people are kept apart by a plain IoU rule
(the better kept), not MediaPipe's weighted averaging of their boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from automask.face_mesh import one_thread, rotated_crop, to_image
from automask.found import MODELS
from automask.ssd import Letterbox, anchors, sigmoid

DETECTOR = MODELS / "pose_detection.tflite"
LANDMARKS = MODELS / "pose_landmark_full.tflite"
DETECT_SIDE = 224
LAYERS = ((8, 2), (16, 2), (32, 6))  # (stride, anchors a cell): 28²×2 + 14²×2 + 7²×6 = 2254 anchors
KEYPOINTS = 4             # the detector's keypoints a person, of which …
HIPS, SIZE_POINT = 0, 1   # … these place, size and turn the body's crop
BODY_SCALE = 2.5          # the body's crop: 2 × (hips → size point), 1.25 times
LANDMARK_SIDE = 256
PEOPLE = 4                # people looked at, most confident first
MIN_PERSON = 0.5          # the detector's score a person must have (MediaPipe's own threshold)
MIN_BODY = 0.5            # … and the landmark model's flag that a body is in its crop
SAME_PERSON = 0.3         # IoU: a box overlapping a surer person's this much is that person
SEED_SIDE = 9.0           # a person looked for around their face (``around``): a square this many face sizes, …
SEED_DROP = 3.0           # … its middle this many of them below the face's centre, where the body is, …
SEED_SMALLEST = 16        # … and at least this many px
HANDS = {"left": (15, 17, 19), "right": (16, 18, 20)}  # wrist, little finger's base, index finger's base
HAND_SCALE = 2.7          # the hand's crop: this many times twice the wrist → middle finger distance
NOSE, EARS, EYES = 0, (7, 8), (5, 2)  # the body model's nose, ears (left, right), eyes (right, left)
HEAD_SCALE = 3.0          # a head's crop: this many times the distance between the ears, …
HEAD_SMALLEST = 24        # … at least this many px
SEEN = 0.5                # the visibility a head's points must have for its crop to be taken


@dataclass
class Person:
    """A person the pose models found: the detector's score, and the body model's 39 points (33 of the body) in
    image pixels with each one's visibility (0–1)."""

    score: float
    points: np.ndarray
    visibility: np.ndarray


@dataclass
class HandPlace:
    """Where a person's hand is, as the crop the hand landmark model is given (``rotated_crop``'s)."""

    centre: tuple[float, float]
    side: float
    angle: float
    person: float  # the detector's score for the person it belongs to


def _outputs(result) -> dict[tuple[int, ...], np.ndarray]:
    """A request's outputs by shape (each model's outputs differ in shape)."""
    return {tuple(np.asarray(v).shape): np.asarray(v) for v in result.values()}


class Poses:
    """The pose detector and body landmark model, loaded once; ``hands`` gives the places of people's hands."""

    def __init__(self, detector: Path = DETECTOR, landmarks: Path = LANDMARKS):
        self.compiled = (one_thread(detector), one_thread(landmarks))
        self._detector, self._landmarks = (m.create_infer_request() for m in self.compiled)
        self._anchors = anchors(LAYERS, DETECT_SIDE)

    def people(self, rgb: Image.Image) -> list[tuple[float, np.ndarray]]:
        """Each person the detector is sure of (``MIN_PERSON``), best first, at most ``PEOPLE``: the score and the
        hips' middle and size point in image pixels."""
        return [(score, keypoints) for score, _, keypoints in self._detected(rgb)]

    def _detected(self, rgb: Image.Image) -> list[tuple[float, tuple, np.ndarray]]:
        """``people``, with each one's box (the detector boxes a person by their face)."""
        square = Letterbox(rgb, DETECT_SIDE)
        out = _outputs(self._detector.infer({0: (square.pixels.astype(np.float32) / 127.5 - 1)[None]}))
        scores = sigmoid(out[(1, len(self._anchors), 1)][0, :, 0])
        raw = out[(1, len(self._anchors), 12)][0]
        return square.places(raw, scores, self._anchors, KEYPOINTS, MIN_PERSON, PEOPLE, SAME_PERSON)

    def around(self, rgb: Image.Image, pixels: np.ndarray, face: tuple[float, float, float, float],
               down: tuple[float, float] = (0.0, 1.0)) -> Person | None:
        """The person whose face is ``face`` (its box), looked for in a square around it and their body: ``SEED_SIDE``
        face sizes (the box's longer side), its middle ``SEED_DROP`` of them from the face's centre along ``down``
        (the face's own down, a unit vector: eyes → mouth).  A person a few dozen px tall in a large picture, or
        grey — whom the detector scores far lower than the same in colour — is as large there as the detector
        expects.  The person kept is the surest one the detector boxes around the face's centre."""
        size = max(face[2] - face[0], face[3] - face[1])
        side = round(SEED_SIDE * size)
        if side < SEED_SMALLEST:
            return None  # a speck: no body to see around it
        cx = (face[0] + face[2]) / 2 + SEED_DROP * size * down[0]
        cy = (face[1] + face[3]) / 2 + SEED_DROP * size * down[1]
        left, top = round(cx - side / 2), round(cy - side / 2)
        crop = rgb.crop((left, top, left + side, top + side))  # (black beyond the picture)
        middle = ((face[0] + face[2]) / 2 - left, (face[1] + face[3]) / 2 - top)
        for score, box, keypoints in self._detected(crop):
            if not (box[0] <= middle[0] <= box[2] and box[1] <= middle[1] <= box[3]):
                continue
            return self._person(score, keypoints + (left, top), pixels)
        return None

    def body(self, pixels: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """A person's 39 points (33 of the body) in image pixels, each one's visibility (0–1), and the model's flag
        that a body is in its crop (0–1)."""
        v = keypoints[SIZE_POINT] - keypoints[HIPS]
        side = BODY_SCALE * float(np.linalg.norm(v))
        angle = math.atan2(float(v[0]), -float(v[1]))  # the crop's up along hips → size point
        crop, affine = rotated_crop(pixels, (float(keypoints[HIPS][0]), float(keypoints[HIPS][1])), side, angle,
                                    LANDMARK_SIDE)
        out = _outputs(self._landmarks.infer({0: (crop.astype(np.float32) / 255.0)[None]}))
        points = out[(1, 195)].reshape(39, 5)
        return to_image(affine, points[:, :2]), sigmoid(points[:, 3]), float(out[(1, 1)].ravel()[0])

    def bodies(self, rgb: Image.Image, pixels: np.ndarray | None = None) -> list[Person]:
        """Each person found whose body the landmark model sees (``MIN_BODY``), with their points."""
        pixels = np.asarray(rgb) if pixels is None else pixels
        return [person for score, keypoints in self.people(rgb)
                if (person := self._person(score, keypoints, pixels)) is not None]

    def _person(self, score: float, keypoints: np.ndarray, pixels: np.ndarray) -> Person | None:
        """The person the detector found at ``keypoints`` (in ``pixels``' frame), when the body landmark model sees a
        body in their crop (``MIN_BODY``); None for a speck, whose crop has nothing to look at."""
        if float(np.linalg.norm(keypoints[SIZE_POINT] - keypoints[HIPS])) < 4:
            return None
        points, visibility, flag = self.body(pixels, keypoints)
        return Person(score, points, visibility) if flag >= MIN_BODY else None

    def hands(self, rgb: Image.Image, pixels: np.ndarray | None = None) -> list[HandPlace]:
        """Both hands' places of each person found (``bodies``)."""
        return [place for person in self.bodies(rgb, pixels) for place in hand_places(person)]

    def close(self) -> None:
        self._detector = self._landmarks = None
        self.compiled = ()


def hand_places(person: Person) -> list[HandPlace]:
    """Where a person's hands are: from each wrist and the bases of its index and little fingers."""
    out: list[HandPlace] = []
    for wrist_i, little_i, index_i in HANDS.values():
        wrist, little, index = (person.points[i] for i in (wrist_i, little_i, index_i))
        middle = (2 * index + little) / 3  # the middle finger's base, estimated
        v = middle - wrist
        reach = float(np.linalg.norm(v))
        if reach >= 1:
            out.append(HandPlace((float(middle[0]), float(middle[1])), HAND_SCALE * 2 * reach,
                                 math.atan2(float(v[0]), -float(v[1])), person.score))
    return out


def head(person: Person) -> tuple[tuple[float, float], float, float] | None:
    """The crop around a person's head, upright (``rotated_crop``'s centre, side and angle): centred between the
    nose and the ears' middle, ``HEAD_SCALE`` times the ears' distance, turned so that the eyes lie level — a face
    tilted, or in a turned picture, is upright there, as the face detectors were trained to see faces.  None when
    the nose or an eye is not visible (a head seen from behind has no face to find)."""
    if not _face_seen(person):
        return None
    p = person.points
    ears = p[EARS[0]] - p[EARS[1]]
    eyes = p[EYES[1]] - p[EYES[0]]  # the person's right eye → left eye: left to right in an upright face
    centre = (p[NOSE] + (p[EARS[0]] + p[EARS[1]]) / 2) / 2
    up = np.array([eyes[1], -eyes[0]])  # the eye line turned a quarter: up from the face
    return ((float(centre[0]), float(centre[1])), max(HEAD_SCALE * float(np.linalg.norm(ears)), HEAD_SMALLEST),
            math.atan2(float(up[0]), -float(up[1])))


def has_face(person: Person, box: tuple[float, float, float, float]) -> bool:
    """Whether a face's ``box`` is ``person``'s face: their nose and eyes seen (``SEEN``), the nose in the box's
    middle half, and the face as wide as the box within a factor of two (ear to ear, or 2.5 × eye to eye)."""
    if not _face_seen(person):
        return False
    p = person.points
    w, h = box[2] - box[0], box[3] - box[1]
    nx, ny = p[NOSE]
    if not (box[0] + w / 4 <= nx <= box[2] - w / 4 and box[1] + h / 4 <= ny <= box[3] - h / 4):
        return False
    return 0.5 * w <= _face_width(person) <= 2 * w


TORSO = (11, 12, 24, 23)  # the body model's shoulders (left, right) and hips (right, left): the torso's corners in turn
ON_TORSO = 1 / 3          # a face under this part of a person's own face's width, on their torso, is a thing they wear
UP_AXIS = 2.0             # a person's or a face's up is a way when it points within atan(1/2) ≈ 27° of it (``way_up``)


def on_torso(person: Person, box: tuple[float, float, float, float]) -> bool:
    """Whether a face's ``box`` is a thing on ``person``'s torso — a coat's button, a badge, a suit's neck ring —
    that the face detectors and the face landmark model took for a face (a 4× enlarged portrait's button: the
    landmark model's face flag 0.96): its centre inside the quadrilateral of their shoulders (seen) and hips, and
    its box under ``ON_TORSO`` of the width of their own face (seen).  A face there would be behind them; a child
    held to the chest has a face over half an adult's."""
    if not _face_seen(person) or min(person.visibility[TORSO[0]], person.visibility[TORSO[1]]) < SEEN:
        return False
    if max(box[2] - box[0], box[3] - box[1]) >= ON_TORSO * _face_width(person):
        return False
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    corners = [tuple(map(float, person.points[i])) for i in TORSO]
    # Inside a convex quadrilateral: on the same side of each of its edges (the sign of each edge's cross product
    # with the way to the centre).
    turns = [(x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)
             for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True)]
    return all(t > 0 for t in turns) or all(t < 0 for t in turns)


def _face_width(person: Person) -> float:
    """A person's face's width in px, from their pose: ear to ear, or 2.5 times eye to eye (a face turned aside
    shows its ears close together)."""
    p = person.points
    return max(float(np.linalg.norm(p[EARS[0]] - p[EARS[1]])), 2.5 * float(np.linalg.norm(p[EYES[0]] - p[EYES[1]])))


def _face_seen(person: Person) -> bool:
    """Whether the body model sees the person's face: their nose and both eyes visible (``SEEN``)."""
    seen = person.visibility
    return min(seen[NOSE], seen[EYES[0]], seen[EYES[1]]) >= SEEN


def way_up(v) -> int | None:
    """The quarter turns anticlockwise (0–3) that make ``v``, a thing's up in the picture, point up: none when it
    points aslant, not within ``UP_AXIS`` of one way."""
    # up along −y: upright; along +x: turned clockwise (one turn anticlockwise makes it upright); along +y:
    # upside down; along −x: turned anticlockwise (three more)
    dx, dy = float(v[0]), float(v[1])
    if max(abs(dx), abs(dy)) < UP_AXIS * min(abs(dx), abs(dy)):
        return None
    return 0 if -dy >= abs(dx) else 1 if dx >= abs(dy) else 2 if dy >= abs(dx) else 3


def most_said(votes: list[int]) -> int:
    """The way (0–3) that most votes say, when it is not the picture's own up and more say it than any other; else
    0."""
    best = max(range(4), key=lambda k: votes[k])
    return best if best and votes[best] > max(votes[k] for k in range(4) if k != best) else 0


def quarter_turns(people: list[Person]) -> int:
    """How many quarter turns anticlockwise make the picture upright (0–3), by its people's poses: each
    person whose hips → shoulders, shoulders → ears and shoulders → nose all point near one way (``way_up``: a
    head in profile, a person leaning or lying aslant has no say) says that way is up; the way most people say
    (``most_said``)."""
    votes = [0, 0, 0, 0]
    for p in people:
        shoulders = (p.points[TORSO[0]] + p.points[TORSO[1]]) / 2
        ways = {way_up(shoulders - (p.points[TORSO[2]] + p.points[TORSO[3]]) / 2),
                way_up((p.points[EARS[0]] + p.points[EARS[1]]) / 2 - shoulders), way_up(p.points[NOSE] - shoulders)}
        if len(ways) == 1 and None not in ways:
            votes[ways.pop()] += 1
    return most_said(votes)
