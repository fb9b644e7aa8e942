"""What detection finds, as everything else sees it: a ``Detection`` (kind, box, score, model, landmarks), box
overlap measures, and where the shipped models live."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MODELS = Path(__file__).parent / "models"
SKIN_TONED = "skin-toned copy"  # the label of a face found only on a grey picture's skin-toned copy (``detect``)
GREY_PICTURE = "grey picture"   # … and of any other face found on a grey or toned picture
HOLDS_FACE = "holds a face"     # … and of a face whose box holds a far smaller face (``holds``)
IN_TILES = "tiles only"         # … and of a large picture's face that only its tiles found (``detect``)
SHORT_RANGE = "short range, unsure"  # … and of a face the short-range model was unsure of (or the full-range box of it)
JUDGED_ALWAYS = (SKIN_TONED, HOLDS_FACE)  # the labels whose face the face landmark model judges (``face_mesh``), …
JUDGED_BY_SIZE = (GREY_PICTURE, IN_TILES, SHORT_RANGE)  # … and those whose face it judges when large enough
MEDIAPIPE_FACES = {"face-short", "face-full"}  # the models MediaPipe's faces are found by (``detect``)
APART = 3  # a face's box over this many times another's size, around it, is not that face (``holds``)


@dataclass
class Detection:
    kind: str  # "face" | "hand"
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    score: float
    model: str
    landmarks: list[tuple[float, float]] = field(default_factory=list)
    label: str = ""  # e.g. handedness
    # A face's own outlines in image pixels, from the face landmark model (``face_mesh``): "oval", and
    # "eyes" / "mouth" (one polygon per eye); empty until asked for.
    outlines: dict[str, list[list[tuple[float, float]]]] = field(default_factory=dict)

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def moved(self, scale: float, dx: float, dy: float) -> Detection:
        x0, y0, x1, y1 = self.box
        return Detection(self.kind, (x0 * scale + dx, y0 * scale + dy, x1 * scale + dx, y1 * scale + dy),
                         self.score, self.model, [(x * scale + dx, y * scale + dy) for x, y in self.landmarks],
                         self.label)

    def clamped(self, width: int, height: int) -> Detection:
        x0, y0, x1, y1 = self.box
        box = (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width),
               min(max(y1, 0.0), height))
        return Detection(self.kind, box, self.score, self.model, self.landmarks, self.label, self.outlines)


def segm_outline(d: Detection) -> list[list[tuple[float, float]]]:
    """A segmentation model's outline of ``d``: its polygons of three points or more (none for a box model's
    find)."""
    return [p for p in d.outlines.get("segm", ()) if len(p) >= 3]


def iou(a: tuple, b: tuple) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def inside(point: tuple[float, float], box: tuple) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def centre_in(a: tuple, b: tuple) -> bool:
    """Whether box ``a``'s centre lies in box ``b``."""
    return inside(((a[0] + a[2]) / 2, (a[1] + a[3]) / 2), b)


def containment(a: tuple, b: tuple) -> float:
    """How much of the smaller box lies inside the other."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


def side(box: tuple) -> float:
    """A box's longer side."""
    return max(box[2] - box[0], box[3] - box[1])


def holds(big: Detection, small: Detection) -> bool:
    """Whether face ``big``'s box lies around face ``small`` (its centre inside) while over ``APART`` times its
    size.  Then they are not one face boxed twice: the short-range model boxes texture around a small face (a
    grey or noisy frame around a group photo, 0.6–0.9 sure), and merged, the real face went with the false box.
    Both are kept, and the larger judged by the face landmark model (``face_mesh``).  Only MediaPipe's finds:
    a YOLO model's face merges as before (that landmark model, made for photos, does not judge a drawing)."""
    return (big.kind == small.kind == "face" and {big.model, small.model} <= MEDIAPIPE_FACES
            and centre_in(small.box, big.box) and side(big.box) > APART * side(small.box))


def spans(big: Detection, faces: list[Detection]) -> bool:
    """Whether face ``big``'s box holds the centres of two or more of ``faces`` that lie apart (neither's centre in
    the other's box) and that it does not ``hold`` (eyes in a face are far smaller): a box around a group (the
    short-range model boxes two children's heads as one, 0.3–0.8 sure), not a face.  Only MediaPipe's finds, as
    for ``holds``."""
    inner = [f for f in faces if f is not big and f.kind == big.kind == "face"
             and {big.model, f.model} <= MEDIAPIPE_FACES and centre_in(f.box, big.box) and not holds(big, f)]
    return any(not centre_in(a.box, b.box) and not centre_in(b.box, a.box)
               for i, a in enumerate(inner) for b in inner[i + 1:])
