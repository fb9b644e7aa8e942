"""Faces and hands, found offline with MediaPipe's Tasks API.

Recall comes first — a missed hand is never repaired — so one image is searched several ways and the results merged.
A dark colour picture is searched brightened (``exposed``).  A large picture with next to nothing in its finest octave
(``detail``: enlarged from a smaller one, or that soft) is first halved, and again while so
(``Detector._searched``): it is searched at the size it was enlarged from, and its finds scaled back.  The ways:

* the whole view — of a picture larger than 1024 px, a Lanczos copy of that size, as MediaPipe shrinks its
  input to the models' size without filtering — with both face models (short range for close-ups, full range
  for small far faces);
* the hand landmarker with ``num_hands`` well above MediaPipe's default of one;
* on a grey or toned picture (black-and-white, sepia) the hands searched with a lower palm-detection
  threshold — the palm detector scores grey hands far lower than the same in colour — on the picture and
  on its tones stretched, what that finds kept when the hand landmark model, on the crop its joints give,
  sees a hand there at all; and hands at the palm detector's best places however low it scores them
  on a skin-toned copy of its tones (the colour cue the detector was trained with, given back), kept when
  the landmark model is sure of a hand there — and at the best places of each ninth of its tones stretched, which
  the palm detector sees at 2.3 times the scale (``_NinthPlaces``: a small hand it passes over in the whole), kept
  when that model is surer still; faces are searched on the skin-toned copy too; a hand mostly
  inside a sure face's box is that face (``on_a_face``);
* the palm detector's best places in the whole view, of any picture, however low it scores them (``palms``),
  each kept when the landmark model is sure of a hand there (a hand round a glass, passed over by the hand
  landmarker, was the detector's best place);
* a 2× enlarged copy when the image is small (faces and hands of a few dozen px);
* the faces of any but a large picture in 320 px tiles with the full-range model alone (a group
  photo's faces of a few dozen px are a handful in its 192² view of the whole), run through OpenVINO
  (``face_tiles``: the Tasks API's overhead a call was as long as the model), a new face kept when a second
  look finds it too;
* overlapping tiles when the image is large (the models see 128–256 px inputs); a find that
  only a tile made is kept when a second look, at a crop around it and another scale, finds
  it again (large images must not invent faces), and a hand only tiles found is not kept beside
  a face many times its size (hair and ears enlarged in a tile look like small hands), nor mostly inside a
  sure face's box (a nose, in a tile of a group photo enlarged 4×: ``on_a_face``);
* each person's body region (below and beside a face) searched again for hands, enlarged, when fewer
  hands than two a face were found (hands in full-body and group shots are small);
* people's poses (``pose``): each person the pose detector finds, the hand landmark model looks where their
  wrists and finger bases say the hands are, kept when it is sure of a hand on the crop its joints give (the palm
  detector loses a hand smeared by motion, small in a grey picture or clasped in another long before that model
  does), and the face models look at their head, turned upright by their eyes (a tilted face, a turned picture);
  a person it misses in the whole view — a few dozen px tall, or grey — is looked for again around their face
  (``_around_faces``), where they are as large as the pose detector expects; a face far smaller than a
  person's own, on their torso, is a thing they wear, not a face (``pose.on_torso``: a coat's button, a badge);
  and when the people the pose detector finds in the whole view stand on their side or upside down
  (``pose.quarter_turns``) — or, where no pose says, the sure faces' mouths lie to one side of their eyes or above
  them (``faces_turns``: a collage of heads, where the pose detector finds nobody) — the picture is searched again
  turned upright and that search's finds, turned back, are the picture's when it finds more sure faces than the
  first search (the face models see few faces on their side: in never-tuned group photos turned a quarter, two in
  three);
* hands behind hands: each hand's joints looked at again on the crop they give (MediaPipe's tracking step,
  ``hand_joints``: joints that mixed two overlapping hands settle on one; a find the landmark model sees no
  hand in there is none, ``NOT_A_HAND``), the hands painted out, and the image searched once more; a find
  there that is a hand to the landmark model on its own crop, with its joints neither mostly on nor where a
  hidden hand's are, is the hand behind.

Faces and hands are searched side by side, faces on a thread of the detector's own: they share no model,
MediaPipe runs each model on a thread of its own, and so on two cores a search takes about what the longer of the
two takes.  People's poses are found on the hands' thread (a grey picture's on the faces': its hands thread has
the more to do), their heads looked at on the faces' thread; the palm detector's best places (the whole view's, a
grey picture's skin-toned copy's and the ninths' of its tones stretched), the hands where a colour picture's
people's poses put them, people's body regions and the hands-behind pass's second looks by whichever thread is free
(``_Shared``, ``_Places``, ``_bodies``), each thread with hand models of its own.

Detections of one kind that overlap (IoU above ``nms_iou``) are the same thing:
the most confident one is kept.  One mostly inside a larger one is a part of it:
the larger box is kept, with the better score (but a face's loose box around a surer, tight one of the same
face: ``loose_around``).  A face whose centre lies in a surer face's box is that face —
unless that box is over three times its size (``found.holds``): then both stay, and the stage has the face
landmark model judge the larger.  A face the short-range model boxed unsure takes the full-range model's own box
of it, found on a crop around it, and either is judged by the face landmark model (``SHORT_UNSURE``).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from automask.face_mesh import rotated_crop, to_image
from automask.face_tiles import FullRangeFaces
from automask.found import (  # noqa: F401 (the names detection is known by)
    GREY_PICTURE,
    HOLDS_FACE,
    IN_TILES,
    MODELS,
    SHORT_RANGE,
    SKIN_TONED,
    Detection,
    centre_in,
    containment,
    holds,
    inside,
    iou,
    side,
    spans,
)
from automask.hand_joints import HandJoints
from automask.palms import SAME_PALM, Palms
from automask.pose import DETECTOR as POSE_DETECTOR
from automask.pose import LANDMARKS as POSE_LANDMARKS
from automask.pose import (
    NOSE,
    SEED_SIDE,
    Person,
    Poses,
    hand_places,
    has_face,
    head,
    most_said,
    on_torso,
    quarter_turns,
    way_up,
)
from automask.skeleton import draw_hand

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ start-up chatter
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHIPPED = {
    "short": MODELS / "face_detection_short_range.tflite",
    "full": MODELS / "face_detection_full_range_sparse.tflite",
    "hand": MODELS / "hand_landmarker.task",
}
HAND_PAD = 0.15  # landmark boxes hug the joints; fingertips' flesh and the wrist lie outside
WHOLE_SIDE = 1024  # px: the long side the whole view of a larger picture is searched at (see ``detect``)
FACE_TILE = 320    # px: the tiles a picture's faces are searched in again, up to ``tile_above`` (the far-faces
                   # benchmark, 1024² frames: 512 px tiles 26/32 faces, 384: 29 and a false one, 320: 31, 256: 30)
SECOND_LOOK = 192  # px: the long side of the context crop a tile's find is checked on (a third of it the find)
CONFIRM = 0.7      # the score the second look must give it
WHOLE_SURE = 0.5   # a find of the whole view that confirms a tile's find without a second look
HAND_OF_FACE = 0.25  # a hand only tiles found, at or beside a face, is at least this part of the face's size
BODY_SIDE = 512      # px: the long side a person's body region is searched at
BODY_REGIONS = 6     # body regions searched at most (≈ 30 ms each on a CPU core)
SETTLED = 0.5        # the hand flag the landmark model must give on a hand's own crop for its joints to be taken
NOT_A_HAND = 0.1     # … and under which a find is no hand (``_behind``): a colour photo's neckline that the hand
                     # landmarker was sure of (0.96) flags 0.03, a forearm on a table 0.04, a grey thigh 0.07, where
                     # the real hands of the benchmark's copies (colour, grey, sepia) and of 30 photos never tuned
                     # on (colour, grey, mirrored), about 320 kept, flag 0.19 (dark gloves in a grey photo) to 1
HIDDEN_GREY = (128, 128, 128)  # what a found hand is painted over with before the search for a hand behind it
GREY_SPREAD = 24     # a pixel whose largest and smallest channel differ by more has colour …
GREY_COLOURED = 0.005  # … and a picture with fewer such pixels than this share is grey (black-and-white, toned)
GREY_HAND_DETECTION = 0.05  # the hand landmarker's thresholds on grey pictures: its palm detector scores grey
                            # hands far lower (0.05–0.2 where the same hands in colour score 0.5–1), while its
                            # landmark model still knows them; the handedness score filters as on colour pictures
GREY_SETTLED = 0.25  # … and the landmark model's hand flag on the crop a find's joints give: the lowered threshold
                     # lets through a shuttle model, a torso, a coat (flags 0.01–0.2 on the grey, sepia and faded
                     # copies of the development photos) beside real grey hands (0.27–1; dark gloves lowest)
TONED_SPREAD = 2.0   # levels: a picture whose coloured pixels' colour varies along one hue only (the RMS across
                     # it is less) is toned — sepia, cyanotype, a tinted black-and-white — and searched as grey;
                     # colour photos measure 3.4–30, toned copies 0.2–1.5 (as JPEG at quality 70)
HEAD_SIDE = 256      # px: a person's head is searched for a face at this size, upright (``_heads``)
PEOPLE_AROUND = 8    # faces a person is looked for around at most (``_around_faces``; 13 ms or so each, and their
                     # hands' looks: in the benchmark's group of 13 faces, 4 found 9 of 16 hands, 8 and 12 found 13)
SKIN = (255, 199, 158)  # a light skin tone at full brightness: white becomes it in the skin-toned grey copy
BEST_PALMS = 10     # a picture's hands are also looked for at the palm detector's best places, …
PALM_FLOOR = 0.005  # … down to this score (grey hands score 0.01–0.05 where the same in colour scores 0.5–0.96; a
                    # colour hand round a glass, that the hand landmarker passes over, 0.4) …
PALM_SMALLEST = 32  # px: … a place whose hand's crop is smaller is a speck, that the landmark model would see enlarged
                    # over seven times (a 64 px astronaut's suit: a 19 px crop, a "hand" it flagged 0.82); the
                    # places' real hands on the benchmark's copies and photos never tuned on had crops of 49 px and more
PALM_SETTLED = 0.7  # … kept when the landmark model's flag on the crop a place's joints give is this high (0.5:
                    # 13 false hands on the grey, sepia and faded copies with motion blur and the rest; 0.7: 7,
                    # and no real hand fewer).  In colour: on 30 photos never tuned on, as they are, mirrored,
                    # darker and at 1024 px, 9 hands more and 1 fewer, nothing false
SKIN_PALMS = 8      # … and a grey picture's at the best places of its skin-toned copy, where whatever is light turns
                    # skin-coloured and outranks hands more often (without people's poses, 10: 48 of 65 grey hands
                    # in the benchmark, 16 and 24: 49; with them, 8 and 16 both 59 of 78 grey hands and 57 sepia, 8
                    # with 3 false finds fewer and 15 ms less a grey picture)
NINTH_PALMS = 3     # … and at the best places of each ninth of its tones stretched (``_NinthPlaces``: the palm
                    # detector sees a 1024 px picture's hand of 40 px as 8 px in its 192² input, a ninth's as 17),
                    # kept at ``REGION_SETTLED`` (at 0.7, a flag's stripes and a camera man's backdrop were hands):
                    # on 29 photos never tuned on, grey, 30 → 37 of the 54 hands colour keeps, nothing more
                    # elsewhere, where the skin-toned copy's quarters, 2 places each, gave 32 (and 2 a ninth: 36);
                    # grey copies of the development photos and their copies, the same 58 of 78; people far away,
                    # grey, 16 → 17 of 28
NINTH = 3 / 7       # … each a square's share of the picture's width and height, three across and three down, where
                    # two overlap a third of one
REGION_PALMS = 4    # a body region's hands are also looked for at the palm detector's best places in it, …
REGION_SETTLED = 0.9  # … kept when the landmark model's flag on the crop a place's joints give is this high: on
                      # 15 group photos never tuned on, grey, 10 → 17 of the 33 hands colour keeps at 0.7, 16 at
                      # 0.9, where a motion-blurred chin (0.83) is no longer a hand
HIDDEN_INSIDE = 2 / 3  # a find with more of its joints than this on the hidden hands is one of them again …
SAME_JOINTS = 0.25   # … as is one whose joints lie this near a hidden hand's (mean, a share of that hand's size)
SHORT_UNSURE = 0.75  # a face the short-range model boxed less sure than this is labelled (``SHORT_RANGE``) and
                     # judged by the face landmark model: a dog's head, a torso, a colour wheel, a box between two
                     # faces (0.51–0.61, the model's flag 0.0–0.02); real faces it was as unsure of had flags of 1.0,
                     # but those it boxed 2–4 times their size (0.0 there), which first take their own box
                     # (``_tighter``)
TIGHTER_SIDE = 192   # px: the crop around such a face that the full-range model looks at for its own box (its input)
FACE_UNDER = 0.75    # a grey picture's hand mostly inside a face this sure is that face (``on_a_face``); a fist the
                     # face models take for a face scores near their threshold (0.5–0.6)
DETAIL = 0.16        # a picture over ``tile_above`` whose finest octave holds less than this (``detail``) is searched
                     # at half its size: 37 photos, and the larger at 1024 px, measure 0.18–0.97 (median 0.40; as
                     # JPEGs at 70, 0.17 and up), the same enlarged 4× with Lanczos or 3× with bicubic at most 0.16,
                     # 2× mostly less (medians 0.09–0.15); a collage of 1920 px photos at 3840 px, 0.26
DETAIL_CROP = 512    # px: ``detail`` is measured on crops this large, …
DETAIL_CROPS = 5     # … this many, the picture's most textured
ROUNDING = 2 / 12    # the mean square that rounding to 8 bits puts in a difference of two pictures (1/12 each)
SMALLEST_SEARCHED = 256  # px: a picture halved so (``_searched``) is halved again while its half is at least this long
DARK = 0.75          # a colour picture whose brightest tones stop below this share of white is searched brightened
                     # (``exposed``): on 33 photos never tuned on, copies at 3/5 of their brightness kept 48 of the 61
                     # hands the photos keep, and 57 brightened (faces 106 → 107 of 107); of the photos as they are
                     # one is this dark (PASCAL's 2008_001009, 0.69; the next, 0.77), and it keeps what it kept
                     # (a grey one is not: its hands are searched on its tones stretched, ``grey_views``, and brightened
                     # too, the development photos' grey copies kept 54 of their 78 hands, not 58)
BRIGHTEST = 0.001    # … its brightest tones: the level this share of its pixels (each by its largest channel) reaches
                     # (at 0.005, a small bright face on a plain backdrop was whitened, and lost)
TEXTURE = 4.0        # the mean square a crop's octaves below the finest must have, on average, for ``detail`` to tell


@dataclass(frozen=True)
class DetectorSettings:
    face_models: tuple[str, ...] = ("short", "full")
    face_model_paths: dict | None = None  # "short"/"full" → path (None: shipped)
    hand_model: Path | None = None
    num_hands: int = 12
    min_confidence: float = 0.2  # what the face models return at all; per-kind filters come later
    hand_confidence: float = 0.2  # the hand landmarker's detection and presence thresholds (likewise)
    upsample_below: int = 768
    tile_above: int = 1536
    nms_iou: float = 0.4
    faces: bool = True
    hands: bool = True
    body_regions: bool = True
    palm_places: bool = True  # a colour picture's hands looked for at the palm detector's best places (``BEST_PALMS``;
                              # a grey one's always)
    hands_behind: bool = True
    poses: bool = True


def is_grey(rgb: Image.Image) -> bool:
    """Whether a picture is grey or toned (read on a copy of at most 512 px): fewer than ``GREY_COLOURED`` of
    its pixels have channels more than ``GREY_SPREAD`` levels apart (so a colour photo on a grey backdrop is
    not), or those that do have one hue — their colour, less its grey, varies along one line through grey by less
    than ``TONED_SPREAD`` levels (RMS) across it."""
    small = np.asarray(rgb.reduce(max(1, max(rgb.size) // 512)) if max(rgb.size) > 512 else rgb, dtype=np.int16)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]  # channel by channel: far faster than along axis 2
    coloured = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)) > GREY_SPREAD
    if float(coloured.mean()) < GREY_COLOURED:
        return True
    pixels = small[coloured].astype(np.float32)
    chroma = pixels - pixels.mean(axis=1, keepdims=True)
    spread = np.linalg.svd(chroma, compute_uv=False) / np.sqrt(len(chroma))
    return len(spread) < 2 or float(spread[1]) < TONED_SPREAD  # (one coloured pixel has one hue)


def exposed(rgb: Image.Image) -> Image.Image:
    """``rgb`` as it is, or, when it is dark — its brightest tones (``BRIGHTEST``, read on a sample of at most
    256² of its pixels) stop below ``DARK`` of white: an underexposed photo, a night scene — brightened so that they
    reach white (each channel scaled alike, so hues stay).  The hand landmarker passes over hands in a dark picture
    that it finds in the same picture well exposed."""
    sample = rgb if max(rgb.size) <= 256 else rgb.resize(
        (max(1, rgb.width * 256 // max(rgb.size)), max(1, rgb.height * 256 // max(rgb.size))),
        Image.Resampling.NEAREST)
    top = float(np.quantile(np.asarray(sample).max(axis=2), 1 - BRIGHTEST))
    if top < 1 or top >= DARK * 255:
        return rgb  # (a black picture has nothing to brighten)
    gain = 255 / top
    return rgb.point([min(255, round(v * gain)) for v in range(256)] * 3)


def detail(rgb: Image.Image) -> float:
    """How much of a picture's detail lies in its finest octave: what a copy at half its size loses (Lanczos, there and
    back), over what lies between that copy and one at an eighth (mean squares of the luma, each less the 8-bit
    rounding's share), on its ``DETAIL_CROPS`` most textured crops of ``DETAIL_CROP`` px taken together.  A picture
    enlarged from a smaller one has nothing in that octave but what the enlarging made (an upscaler's sharpening among
    it); a photo has about as much there as in the octaves below it, or a share of it when soft.  None of it (0) when
    even its most textured crops have next to nothing in the octaves below (a picture enlarged many times, or
    plain)."""
    w, h = rgb.size
    cw, ch = min(w, DETAIL_CROP), min(h, DETAIL_CROP)
    if min(cw, ch) < 64:
        return 1.0  # a strip too narrow for its eighth (under 8 px) to show an octave: searched as it is
    # The most textured crops, by the spread of a thumbnail's pixels in each place of a grid of crops (in a plain
    # place, what each octave holds is little more than the rounding).
    r = max(1, max(w, h) // DETAIL_CROP)
    thumb = np.asarray((rgb.reduce(r) if r > 1 else rgb).convert("L"), dtype=np.float32)
    places = [(x, y) for y in range(0, h - ch + 1, max(1, ch // 2)) for x in range(0, w - cw + 1, max(1, cw // 2))]
    spread = [float(thumb[y // r:(y + ch) // r, x // r:(x + cw) // r].std()) for x, y in places]
    finest = below = 0.0
    chosen = np.argsort(spread)[::-1][:DETAIL_CROPS]
    for i in chosen:
        x0, y0 = places[i]
        crop = rgb.crop((x0, y0, x0 + cw, y0 + ch)).convert("L")
        luma = np.asarray(crop, dtype=np.float32)
        half, eighth = (np.asarray(_scaled(crop, 1 / k).resize((cw, ch), Image.Resampling.LANCZOS), dtype=np.float32)
                        for k in (2, 8))
        inner = (slice(8, -8), slice(8, -8))  # (the crop's edges resample from beyond it)
        finest += max(0.0, float(np.mean((luma - half)[inner] ** 2)) - ROUNDING)
        below += max(0.0, float(np.mean((half - eighth)[inner] ** 2)) - ROUNDING)
    return 0.0 if below < len(chosen) * TEXTURE else (finest / below) ** 0.5


def _scaled(picture: Image.Image, f: float) -> Image.Image:
    """``picture`` scaled by ``f`` (Lanczos), each side at least a pixel."""
    return picture.resize((max(1, round(picture.width * f)), max(1, round(picture.height * f))),
                          Image.Resampling.LANCZOS)


def _shrunk(rgb: Image.Image) -> tuple[Image.Image, float]:
    """The picture at a long side of at most ``WHOLE_SIDE`` (Lanczos), and the factor it was scaled by."""
    f = min(1.0, WHOLE_SIDE / max(rgb.size))
    if f == 1.0:
        return rgb, f
    return _scaled(rgb, f), f


def grey_views(rgb: Image.Image) -> list[Image.Image]:
    """A grey picture's tones stretched (1 % clipped at each end), and the same skin-toned (``SKIN``)."""
    stretched = ImageOps.autocontrast(ImageOps.grayscale(rgb), cutoff=1)
    return [stretched.convert("RGB"), ImageOps.colorize(stretched, (0, 0, 0), SKIN)]


def _same_as_any(d: Detection, others: list[Detection], nested: bool = True) -> bool:
    """Whether one of ``others`` is the same thing: a box like it, or (``nested``) one mostly inside the other."""
    return any(o.kind == d.kind and (iou(d.box, o.box) >= 0.3 or (nested and containment(d.box, o.box) >= 0.7))
               for o in others)


def dwarfed(d: Detection, faces: list[Detection]) -> bool:
    """Whether a hand lies at or beside a face (within half the face's size of its box) while being less than
    ``HAND_OF_FACE`` of that face's size.  A person's hand is about as long as their face; one that much smaller
    right beside a face would belong to someone four times as far away behind that face, while hair, a clip or
    an ear enlarged in a tile of a large image is what the hand model then mostly sees."""
    if d.kind != "hand":
        return False
    hand = side(d.box)
    for f in faces:
        fs = side(f.box)
        x0, y0, x1, y1 = f.box[0] - fs / 2, f.box[1] - fs / 2, f.box[2] + fs / 2, f.box[3] + fs / 2
        beside = d.box[0] < x1 and d.box[2] > x0 and d.box[1] < y1 and d.box[3] > y0
        if beside and hand < HAND_OF_FACE * fs:
            return True
    return False


def on_a_face(d: Detection, found: list[Detection]) -> bool:
    """Whether a hand lies mostly (0.7) inside the box of a sure face (``FACE_UNDER``) larger than it.  On a grey
    picture the palm detector's best places can lie on a face, and the landmark model can then be sure of a hand
    there (a grey face crop of 112 px: a palm 0.58, a hand flag 0.94, on the cheek and nose); repainted as a hand, the
    face would be ruined, while a real hand that far inside a face's box is repainted with the face.  So can a tile
    of a large picture, of any colour (a nose in a group photo enlarged 4×: 0.94)."""
    return d.kind == "hand" and any(
        f.kind == "face" and f.score >= FACE_UNDER and f.area > d.area and containment(d.box, f.box) >= 0.7
        for f in found)


def body_regions(width: int, height: int, faces: list[Detection]) -> list[tuple[int, int, int, int]]:
    """Where each face's hands are likely to be: from the top of the face to six face heights below it, two
    and a half face widths to each side (arms held out), cut to the image.  Regions of people side by side
    that overlap (IoU ≥ 0.3) are searched as one; the largest faces' first, at most ``BODY_REGIONS``.  Only
    regions at most half the image's long side: the hand model sees its input at a fixed size, so only a
    region that small is seen at least twice as close as in the whole view."""
    out: list[tuple[float, float, float, float]] = []
    longest = max(width, height)
    for f in sorted(faces, key=lambda f: f.area, reverse=True):
        fw, fh = f.box[2] - f.box[0], f.box[3] - f.box[1]
        cx = (f.box[0] + f.box[2]) / 2
        box = (max(0, cx - 2.5 * fw), max(0, f.box[1]), min(width, cx + 2.5 * fw), min(height, f.box[3] + 6 * fh))
        if min(box[2] - box[0], box[3] - box[1]) < 8 or max(box[2] - box[0], box[3] - box[1]) > longest / 2:
            continue  # a region more than half the image is seen no closer than the whole view saw it
        near = next((i for i, o in enumerate(out) if iou(box, o) >= 0.3), None)
        if near is None:
            out.append(box)
        else:
            o = out[near]
            out[near] = (min(o[0], box[0]), min(o[1], box[1]), max(o[2], box[2]), max(o[3], box[3]))
    return [tuple(round(v) for v in b) for b in out[:BODY_REGIONS]]


def _grown(box: tuple[float, float, float, float], by: float) -> tuple[float, float, float, float]:
    """A box grown by ``by`` of its size on each side."""
    w, h = box[2] - box[0], box[3] - box[1]
    return (box[0] - by * w, box[1] - by * h, box[2] + by * w, box[3] + by * h)


def _down(face: Detection) -> tuple[float, float]:
    """A face's down, a unit vector from between its eyes to its mouth (the face models' keypoints 0, 1 and 3);
    straight down when it has none."""
    if len(face.landmarks) < 4:
        return (0.0, 1.0)
    (rx, ry), (lx, ly), _, (mx, my) = face.landmarks[:4]
    v = np.array([mx - (rx + lx) / 2, my - (ry + ly) / 2])
    n = float(np.linalg.norm(v))
    return (float(v[0] / n), float(v[1] / n)) if n > 0 else (0.0, 1.0)


def faces_turns(found: list[Detection]) -> int:
    """How many quarter turns anticlockwise make the picture upright (0–3), by its sure faces (``WHOLE_SURE``):
    each whose mouth lies near one way from its eyes (``_down``, ``pose.way_up``) says the other way is up; the way
    most faces say (``pose.most_said``)."""
    votes = [0, 0, 0, 0]
    for d in found:
        if d.kind == "face" and d.score >= WHOLE_SURE and len(d.landmarks) >= 4:
            dx, dy = _down(d)
            w = way_up((-dx, -dy))
            if w is not None:
                votes[w] += 1
    return most_said(votes)


def _sure_faces(found: list[Detection]) -> tuple[int, float]:
    """How many sure faces (``WHOLE_SURE``) ``found`` holds, and their scores' sum."""
    sure = [d.score for d in found if d.kind == "face" and d.score >= WHOLE_SURE]
    return len(sure), sum(sure)


def turned_points(points, size: tuple[int, int], turns: int) -> list[tuple[float, float]]:
    """``points`` (x, y) of a picture of ``size``, on that picture turned ``turns`` quarter turns anticlockwise
    (``Image.rotate(90 * turns, expand=True)``: a point (x, y) goes to (y, width − x) each turn)."""
    w, h = size
    out = [(float(x), float(y)) for x, y in points]
    for _ in range(turns % 4):
        out = [(y, w - x) for x, y in out]
        w, h = h, w
    return out


def turned_box(box: tuple[float, float, float, float], size: tuple[int, int],
               turns: int) -> tuple[float, float, float, float]:
    """``box`` of a picture of ``size`` on that picture turned ``turns`` quarter turns anticlockwise."""
    (x0, y0), (x1, y1) = turned_points([box[:2], box[2:]], size, turns)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def turned(d: Detection, size: tuple[int, int], turns: int) -> Detection:
    """``d`` of a picture of ``size``, its box and landmarks on that picture turned ``turns`` quarter turns
    anticlockwise."""
    return dataclasses.replace(d, box=turned_box(d.box, size, turns), landmarks=turned_points(d.landmarks, size, turns))


def _hand_box(joints) -> tuple[float, float, float, float]:
    """A hand's box: its joints' box, padded (the joints lie inside the flesh)."""
    xs, ys = [float(p[0]) for p in joints], [float(p[1]) for p in joints]
    pad = HAND_PAD * max(max(xs) - min(xs), max(ys) - min(ys))
    return (min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad)


def _same_hand(a: Detection, b: Detection) -> bool:
    """Whether hand ``a``'s 21 joints lie where ``b``'s do: their mean distance, joint by joint, is under
    ``SAME_JOINTS`` of ``b``'s size."""
    ja, jb = np.asarray(a.landmarks, dtype=np.float64), np.asarray(b.landmarks, dtype=np.float64)
    size = float(max(jb.max(axis=0) - jb.min(axis=0)))
    return float(np.linalg.norm(ja - jb, axis=1).mean()) < SAME_JOINTS * max(size, 1.0)


def nms(detections: list[Detection], threshold: float) -> list[Detection]:
    """One detection per thing, most confident first.  Boxes alike (IoU above ``threshold``) are one thing:
    the most confident stays.  A box mostly inside a larger one is a part of it (a finger a tile saw inside
    a whole hand, an eye inside a face): the larger box stays, with the better score — a face's only when it is
    itself sure (``WHOLE_SURE``): a loose box the short-range model is unsure of (0.3–0.45) around a small face
    it cannot see, sure of itself (0.6–0.85), is not that face's better outline, nor a short-range box loose
    around a surer full-range one (``loose_around``).  A face whose centre lies in a
    surer face's box is that face too (two models, or two views, can box one face well apart: the short-range
    model's box of a large face sits off the full-range one's; real faces never overlap that far).  A face box
    around two faces apart (``spans``) is neither, and neither is a part of it: all stay, for the stage to judge
    the box around them.  Spans are read among the faces kept, not among every find (a tile's finds of a large
    face's parts would make that face a box around them): a box surer than both faces it spans, not seen so far,
    takes them in as before."""
    kept: list[Detection] = []
    took: dict[int, tuple[Detection, Detection]] = {}  # a larger box kept in a part's place: that part, and it
    for d in sorted(detections, key=lambda d: d.score, reverse=True):
        if spans(d, kept):
            kept.append(d)
            continue
        same = next((i for i, k in enumerate(kept) if _taken_for(d, k, threshold)), None)
        if same is not None:
            part, larger = took.get(id(kept[same]), (None, kept[same]))
            if spans(larger, kept + [d] + ([part] if part else [])):
                # One of two faces apart that a box spans, not a part of it; the face it took the place of, too.
                if part is not None:
                    kept[same] = part
                    kept.append(larger)
                same = None
        if same is None:
            kept.append(d)
        elif iou(d.box, kept[same].box) <= threshold and containment(d.box, kept[same].box) >= 0.7 \
                and d.area > kept[same].area and (d.kind != "face" or d.score >= WHOLE_SURE) \
                and not loose_around(d, kept[same]):
            larger = dataclasses.replace(d, score=kept[same].score)
            took[id(larger)] = (kept[same], d)
            kept[same] = larger
    return kept


def loose_around(big: Detection, face: Detection) -> bool:
    """Whether face ``big``, a short-range find, is a loose box around ``face``, a surer find mostly inside it: the
    short-range model, made for faces that fill much of a picture, boxes a face of a few dozen px in a group photo
    1.6–2.2 times its size (the full-range model's box of it is tight, and surer: 0.75–0.92 against 0.54–0.65), and
    a mask from that box would take in the hair, the neck and the faces beside.  Around a surer box of its own
    model (a tile's) only when it is unsure of itself (``SHORT_UNSURE``): a tilted face in a picture enlarged 4×
    was boxed 0.52 sure in the whole view, off the face and over its hair, and 0.97 in a tile; the loose box took
    the tile's place and score, and the face landmark model, crop and all, outlined hair and half the face."""
    return (big.kind == face.kind == "face" and big.model == "face-short" and face.score >= big.score
            and (face.model == "face-full" or big.score < SHORT_UNSURE))


def _taken_for(d: Detection, k: Detection, threshold: float) -> bool:
    """Whether ``nms`` takes ``d`` for ``k``, a surer find: alike boxes, ``d`` mostly inside ``k``, or (faces)
    ``d``'s centre in ``k``'s box; never a face and one it ``holds``."""
    return k.kind == d.kind and not holds(d, k) and not holds(k, d) and (
        iou(d.box, k.box) > threshold or containment(d.box, k.box) >= 0.7
        or (d.kind == "face" and centre_in(d.box, k.box)))


def _same_face(d: Detection, others: list[Detection], threshold: float) -> bool:
    """Whether face ``d`` is one of ``others`` to ``nms``, either of the two the surer."""
    return d.kind == "face" and any(_taken_for(d, o, threshold) or _taken_for(o, d, threshold) for o in others)


def tiles(width: int, height: int, size: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """Overlapping square-ish windows covering the image."""
    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        step = int(size * (1 - overlap))
        out = list(range(0, length - size, step))
        return out + [length - size]
    return [(x, y, min(width, x + size), min(height, y + size)) for y in starts(height) for x in starts(width)]


def _hand_at(pixels: np.ndarray, palm, joints: HandJoints, first: float = SETTLED,
             settled: float = PALM_SETTLED) -> Detection | None:
    """The hand at one of the palm detector's places, when the landmark model flags a hand on the palm's crop
    (``first``) and is sure of it on the crop its joints give (``settled``)."""
    j, flag, right = joints.look(pixels, palm.centre, palm.side, palm.angle)
    if flag < first:
        return None
    j, flag = joints.settle(pixels, j)
    if flag < settled:
        return None
    pts = [(float(x), float(y)) for x, y in j]
    return Detection("hand", _hand_box(pts), flag, "hand", pts, "Right" if right >= 0.5 else "Left")


def _palm_places(palms: Palms, picture: Image.Image, count: int) -> list:
    """The palm detector's ``count`` best places on ``picture`` down to ``PALM_FLOOR``, but specks
    (``PALM_SMALLEST``)."""
    return [p for p in palms.best(picture, count, PALM_FLOOR) if p.side >= PALM_SMALLEST]


def _ninths(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The ninths of a picture (``NINTH`` of its width and height, at either end of each and in the middle, a pixel
    at least), row by row within each column."""
    cw, ch = max(1, round(NINTH * width)), max(1, round(NINTH * height))
    return [(x0, y0, x0 + cw, y0 + ch) for x0 in (0, round((width - cw) / 2), width - cw)
            for y0 in (0, round((height - ch) / 2), height - ch)]


def _places_in(palms: Palms, picture: Image.Image, box: tuple[int, int, int, int], count: int) -> list:
    """The palm detector's ``count`` best places (``_palm_places``) in ``box`` of ``picture``, in the picture's
    pixels."""
    x0, y0 = box[:2]
    return [dataclasses.replace(p, box=(p.box[0] + x0, p.box[1] + y0, p.box[2] + x0, p.box[3] + y0),
                                centre=(p.centre[0] + x0, p.centre[1] + y0))
            for p in _palm_places(palms, picture.crop(box), count)]


def _surest(places: list) -> list:
    """``places`` surest first; one that overlaps a surer one (IoU ``SAME_PALM``: where two crops overlap) is that one
    again."""
    out: list = []
    for p in sorted(places, key=lambda p: p.score, reverse=True):
        if not any(iou(p.box, o.box) >= SAME_PALM for o in out):
            out.append(p)
    return out


def _hand_of_person(pixels: np.ndarray, place, joints: HandJoints) -> Detection | None:
    """The hand where a person's pose puts it (``pose``), when the landmark model is sure of a hand (``SETTLED``) on
    the crop the joints it gives there give.  Its flag on the pose's own crop is not asked: a crop from a wrist is
    looser than one from a palm, and the model's first joints there are near enough for the second look."""
    return _hand_at(pixels, place, joints, first=0.0, settled=SETTLED)


class _Shared:
    """Looks that both threads take, whichever is free taking the next (each with models of its own: ``work``'s
    ``look``), read in the items' order, so that what is kept does not depend on who looked: an item ``drops``
    (given the results kept before it) is none, as though it had not been looked at — and is not looked at when
    every item before it is done.  A thread joins by ``work``; ``kept`` and ``results`` wait for the looks the
    other thread took (a look that fails is done too: its error is its thread's own, and nobody waits for it)."""

    def __init__(self, items=(), drops=None):
        self.items = list(items)
        self._drops = drops or (lambda item, kept: False)
        self._next = 0
        self._found: dict[int, object] = {}
        self._done = threading.Condition()

    def work(self, look) -> None:
        """``look`` at items nobody has taken yet, until none is left."""
        while True:
            with self._done:
                if self._next >= len(self.items):
                    return
                i, self._next = self._next, self._next + 1
                known = all(j in self._found for j in range(i))
                dropped = known and self._drops(self.items[i], self._kept(i))
            result = None
            try:
                result = None if dropped else look(self.items[i])
            finally:
                with self._done:
                    self._found[i] = result
                    self._done.notify_all()

    def _kept(self, n: int) -> list:
        kept: list = []
        for i, item in enumerate(self.items[:n]):
            if self._found.get(i) is not None and not self._drops(item, kept):
                kept.append(self._found[i])
        return kept

    def looked(self) -> None:
        """Waits until every item has been looked at (by whichever thread took it)."""
        with self._done:
            self._done.wait_for(lambda: len(self._found) == len(self.items))

    def results(self) -> list:
        """Each item's result (``None`` for one whose look failed), in the items' order, once all are looked at."""
        self.looked()
        return [self._found.get(i) for i in range(len(self.items))]

    def kept(self) -> list:
        """The results kept, in the items' order, once all are looked at: each but those none and those
        ``drops``."""
        self.looked()
        with self._done:
            return self._kept(len(self.items))


class _Places(_Shared):
    """The palm detector's best places on a picture, ranked by one thread and looked at by both, each with landmark
    models of its own, whichever is free taking the next (``_hand_at``: some ten milliseconds a look where a CPU has
    no bf16, two looks a place that shows a hand).  Three sets: the whole view's (``BEST_PALMS``), ranked by the
    hands thread after its whole view and looked at by the faces thread too once its faces are done; a grey
    picture's skin-toned copy's (``SKIN_PALMS``), which the faces thread ranks before its faces and looks at after
    them, and the hands thread once done with its own searches; and the ninths' of its tones stretched
    (``NINTH_PALMS``, ``_NinthPlaces``), which both rank and look at after those, kept only at ``REGION_SETTLED``.
    What is kept does not depend on who looked: ``hands`` reads the places in rank order, as one thread looking at
    them in turn would.  The landmark model looks on the picture ranked, or, for a grey picture's other tones, on
    the grey picture: on 15 group photos never tuned on it kept 10 of the 33 hands colour keeps there where on the
    skin-toned copy it kept 9, and on the development photos' sepia copies it took one thing fewer for a hand (2,
    not 3)."""

    def __init__(self, settled: float = PALM_SETTLED):
        super().__init__(drops=lambda palm, kept: any(centre_in(palm.box, d.box) for d in kept))
        self.ranked = threading.Event()
        self.settled = settled  # the landmark model's flag a place's hand is kept at (``_hand_at``)
        self._pixels: np.ndarray | None = None

    def rank(self, ranked: Image.Image, looked: Image.Image, palms: Palms, count: int,
             found: list[Detection] = ()) -> None:
        """The ``count`` best places on ``ranked`` (``_palm_places``), to be looked at on ``looked`` (the same size),
        but those on a hand ``found`` already."""
        self.take(_palm_places(palms, ranked, count), looked, found)

    def take(self, places: list, looked: Image.Image, found: list[Detection] = ()) -> None:
        """``places``, in their order, to be looked at on ``looked``, but those on a hand ``found`` already."""
        self._pixels = np.asarray(looked)
        hands = [d for d in found if d.kind == "hand"]
        self.items = [p for p in places if not any(centre_in(p.box, d.box) for d in hands)]
        self.ranked.set()

    def look(self, joints: HandJoints) -> None:
        """Look at places nobody has taken yet, until none is left."""
        self.work(lambda place: _hand_at(self._pixels, place, joints, settled=self.settled))

    def hands(self) -> list[Detection]:
        """The hands found, best place first; a place on a hand a better place gave is not one (as though it had
        not been looked at).  Once every place has been looked at (``looked``)."""
        return self.kept()


class _NinthPlaces(_Places):
    """The palm detector's ``count`` best places in each ninth of ``picture`` (``_ninths``, ``_places_in``), surest
    first (``_surest``), kept at ``REGION_SETTLED``: a ninth at a time, ranked by both threads, whichever is free
    taking the next, each with a palm detector of its own (nine looks of some 7 ms), then looked at as ``_Places``'
    are.  The ninths' places do not depend on who ranked them."""

    def __init__(self, picture: Image.Image, count: int):
        super().__init__(REGION_SETTLED)
        self._picture, self._count = picture, count
        self._ninths = _Shared(_ninths(*picture.size))

    def rank_some(self, palms: Palms) -> None:
        """Ranks the ninths nobody has taken yet."""
        self._ninths.work(lambda box: _places_in(palms, self._picture, box, self._count))

    def rank_all(self, looked: Image.Image, palms: Palms, found: list[Detection] = ()) -> None:
        """Ranks the ninths left, waits for those the other thread is ranking, and takes their places, to be looked
        at on ``looked``, but those on a hand ``found`` already (``take``)."""
        self.rank_some(palms)
        self.take(_surest([p for places in self._ninths.results() for p in places or ()]), looked, found)


@dataclass(frozen=True)
class _HandModels:
    """One thread's hand models: MediaPipe's hand landmarker, the one for grey pictures (``GREY_HAND_DETECTION``),
    and the landmark model alone (``hand_joints``)."""

    hands: object
    grey: object
    joints: HandJoints


class _People:
    """People's poses in the whole view (``pose``), found by the thread that looks at their hands, before its own
    searches — the hands thread, a grey picture's faces thread (its hands thread has the more to do) — and read by
    the faces thread, which looks at their heads after its own searches."""

    def __init__(self):
        self.found = threading.Event()
        self.bodies: list[Person] = []
        self.around: list[Person] = []  # people found again around faces (``_around_faces``), by the faces thread
        self.pixels: np.ndarray | None = None  # the whole view's, made once for every crop taken of it


class Detector:
    """Loads the models once; ``detect`` is then cheap enough to call per image."""

    def __init__(self, settings: DetectorSettings):
        import mediapipe as mp
        from mediapipe.tasks import python as mp_tasks
        from mediapipe.tasks.python import vision

        self._mp = mp
        self.settings = settings
        self.timings: dict[str, float] = {}
        paths = settings.face_model_paths or {}
        self.model_files: dict[str, Path] = {}
        self._faces = []
        if settings.faces:
            for name in settings.face_models:
                path = Path(paths.get(name) or SHIPPED[name])
                self.model_files[f"face-{name}"] = path
                options = vision.FaceDetectorOptions(
                    base_options=mp_tasks.BaseOptions(model_asset_path=str(path)),
                    min_detection_confidence=settings.min_confidence)
                self._faces.append((f"face-{name}", vision.FaceDetector.create_from_options(options)))
        # The face tiles' many small looks with the full-range model run through OpenVINO (``face_tiles``).
        self._full_tiles = (FullRangeFaces.of(self.model_files["face-full"], settings.min_confidence)
                            if "face-full" in self.model_files else None)
        self._own_hands: _HandModels | None = None  # the calling thread's hand models (``_HandModels``)
        self._grey = False  # the picture being searched is grey: the grey hand landmarker looks
        self.elapsed = 0.0  # ms, the last ``detect``
        self.searched_size: tuple[int, int] | None = None  # the size the last ``detect`` searched the picture at
        self._people_seen: list[Person] = []  # the people the last search found in the whole view
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")  # faces, beside the hands
        self._busy = threading.Lock()
        self._helpers: list = []  # the detector's own thread's share of the hands thread's looks (``_help``)
        if settings.hands:
            path = Path(settings.hand_model or SHIPPED["hand"])
            self.model_files["hand"] = path

            def landmarker(threshold: float):
                options = vision.HandLandmarkerOptions(
                    base_options=mp_tasks.BaseOptions(model_asset_path=str(path)), num_hands=settings.num_hands,
                    min_hand_detection_confidence=threshold, min_hand_presence_confidence=threshold,
                    min_tracking_confidence=threshold)
                return vision.HandLandmarker.create_from_options(options)
            self._landmarkers = lambda: (landmarker(settings.hand_confidence),
                                         landmarker(min(settings.hand_confidence, GREY_HAND_DETECTION)))
            landmarkers = self._landmarkers()  # (made first: a file that is no hand landmarker is named by MediaPipe)
        self._joints = self._palms = self._beside_joints = self._skin_palms = self._poses = None
        self._beside_hands: _HandModels | None = None  # the detector thread's: made with the first body search
        if settings.hands:  # the hands-behind pass and grey pictures' finds look again with the landmark model, …
            self._joints = HandJoints(Path(settings.hand_model or SHIPPED["hand"]))
            self._own_hands = _HandModels(*landmarkers, self._joints)
            # … and the faces' thread, with a model of its own, at a grey picture's people and skin palms
            self._beside_joints = HandJoints(Path(settings.hand_model or SHIPPED["hand"]))
            if settings.poses:
                self._poses = Poses()
                self.model_files.update({"pose-detector": POSE_DETECTOR, "pose-landmarks": POSE_LANDMARKS})

    def close(self) -> None:
        for _, det in self._faces:
            det.close()
        for models in (self._own_hands, self._beside_hands):
            if models is not None:
                models.hands.close()
                models.grey.close()
        for model in (self._palms, self._skin_palms, self._full_tiles, self._poses):
            if model is not None:
                model.close()
        self._thread.shutdown()
        self._faces, self._own_hands, self._beside_hands = [], None, None
        self._joints = self._palms = self._beside_joints = self._skin_palms = self._full_tiles = self._poses = None

    # ------------------------------------------------------------------ passes
    def detect(self, image: Image.Image) -> list[Detection]:
        """Every face and hand found; ``timings`` then holds the milliseconds each pass took, ``elapsed`` the whole
        search's (faces and hands side by side: see the module's text), and ``searched_size`` the size the picture
        was searched at (``_searched``).  One search at a time: jobs on several workers share the gate's detector,
        and a search keeps its state (grey or not) on it."""
        with self._busy:
            t0 = time.perf_counter()
            picture, f = self._searched(image)
            measured = (time.perf_counter() - t0) * 1000
            found = self._upright(picture)
            if max(image.size) > self.settings.tile_above:  # (its detail measured)
                self.timings = {**self.timings, "detail": measured}
                self.elapsed += measured
            self.searched_size = picture.size
            if f == 1.0:
                return found
            w, h = image.size
            return [d.moved(1 / f, 0, 0).clamped(w, h) for d in found]

    def _searched(self, image: Image.Image) -> tuple[Image.Image, float]:
        """The picture as it is searched, and the factor it was scaled by: one larger than ``tile_above`` whose finest
        octave holds next to nothing (``detail`` under ``DETAIL``) — enlarged from a smaller one, or that soft — at
        half its size (Lanczos), and so again while it is.  Its tiles, second looks and hands-behind pass would
        otherwise search texture that the enlarging made sharp and large, where hands were found that its photo does
        not have (an ear, an open mouth), and none that the smaller copy does not show."""
        if max(image.size) <= self.settings.tile_above:
            return image, 1.0  # (not measured: searched as it is, converted by ``_detect``)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        picture, f = rgb, 1.0
        while (max(picture.size) > self.settings.tile_above
               or (f < 1.0 and max(picture.size) >= 2 * SMALLEST_SEARCHED)):
            if detail(picture) >= DETAIL:
                break
            f /= 2
            picture = _scaled(rgb, f)
        return picture, f

    def _upright(self, image: Image.Image) -> list[Detection]:
        """``image`` searched (``_detect``), and searched again turned upright when its people lie on their side or
        upside down, or, where no person's pose says, its sure faces do (``faces_turns``)."""
        found = self._detect(image)
        turns = quarter_turns(self._people_seen) or faces_turns(found)
        if not turns:
            return found
        # People on their side or upside down: the picture is searched again turned upright, the way the face
        # models look (in group photos turned a quarter they found two faces in three), and what that search
        # finds is what the picture holds — when it finds more sure faces than the first (a pose can point
        # sideways in a close-up of hands, or in a small group far away).
        first_ms, first_timings = self.elapsed, self.timings
        upright = image.rotate(90 * turns, expand=True)
        again = self._detect(upright)
        self.elapsed += first_ms
        if _sure_faces(again) <= _sure_faces(found):
            self.timings = {**first_timings, "upright": self.elapsed - first_ms}
            return found
        self.timings = {**self.timings, "sideways": first_ms}
        w, h = image.size
        return [turned(d, upright.size, 4 - turns).clamped(w, h) for d in again]

    def _detect(self, image: Image.Image) -> list[Detection]:
        t0 = time.perf_counter()
        rgb = image.convert("RGB")
        w, h = rgb.size
        s = self.settings
        self.timings = {}
        self._helpers = []
        grey = is_grey(rgb)
        if grey:  # a toned picture is searched as the grey one it is (its tint made hands of a sepia coat)
            rgb = ImageOps.grayscale(rgb).convert("RGB")
        else:  # (a grey one's tones are stretched for its own searches: ``grey_views``)
            with self._timed("exposure"):
                rgb = exposed(rgb)
        # The whole view of a large picture is searched on a copy of WHOLE_SIDE px made with Lanczos: MediaPipe
        # shrinks its input to the models' 128–256 px without filtering, and a 4× larger copy of a picture then
        # shows them other, aliased pixels (hands found at 1× were lost at 4×).  Tiles see the full resolution.
        whole_view, f = _shrunk(rgb)
        views = grey_views(whole_view) if grey else []
        if s.hands and (grey or s.palm_places):
            self._load_palms()
        skin = _Places() if views and self._skin_palms is not None else None
        ninths = _NinthPlaces(views[0], NINTH_PALMS) if skin is not None else None
        best = self._whole_places(bool(views))
        people = _People() if self._poses is not None else None
        beside = self._thread.submit(self._beside, rgb, whole_view, f, views, skin, people, best, ninths)
        try:
            found, in_tiles = self._hands_in(rgb, whole_view, f, views, people, best) \
                if self._own_hands is not None else ([], [])
            if skin is not None:
                self._skin_places(whole_view, f, found, skin, ninths)
        finally:
            # (whatever went wrong here, the other thread waits no longer)
            for ready in (people and people.found, best and best.ranked, ninths and ninths.ranked):
                if ready:
                    ready.set()
            try:
                also = beside.result()
            finally:
                self._helped()
        hands = [d for places in (skin, ninths) if places is not None for d in places.hands()]
        also += [d.moved(1 / f, 0, 0) for d in hands] if f != 1.0 else hands
        if in_tiles:  # a hand only tiles found is not a speck beside a face
            sure = [d for d in found if d.score >= WHOLE_SURE]
            faces = [d for d in also if d.kind == "face" and d.score >= WHOLE_SURE]
            found += [d for d in in_tiles if _same_as_any(d, sure, nested=False)
                      or not (dwarfed(d, faces) or on_a_face(d, faces))]
        found += also
        self._grey = grey
        if s.body_regions and s.hands:
            merged = nms(found, s.nms_iou)
            faces = [d for d in merged if d.kind == "face" and d.score >= WHOLE_SURE]
            short = sum(d.kind == "hand" and d.score >= WHOLE_SURE for d in merged) < 2 * len(faces)
            regions = body_regions(w, h, faces) if short else []
            if regions:
                with self._timed("bodies"):
                    found += self._bodies(rgb, regions, faces, merged)
        found = [d.clamped(w, h) for d in nms(found, s.nms_iou) if d.area > 0]
        if grey:  # the lowered thresholds' and the best palms' finds on a face are the face
            found = [d for d in found if not on_a_face(d, found)]
        # A face whose box holds a far smaller one, or two faces apart, is labelled: the stage has the face
        # landmark model judge it.
        found = [dataclasses.replace(d, label=HOLDS_FACE)
                 if not d.label and (any(holds(d, o) for o in found) or spans(d, found)) else d for d in found]
        # … as is a face boxed by the short-range model, which was unsure of it (``SHORT_UNSURE``), but one a
        # person's pose has there (a face turned three-quarters: the landmark model is unsure of it too).
        # Its face's own box, where the full-range model finds one in it, takes its place (``_tighter``), judged
        # as it would have been.  (Less sure than the stage's threshold, the landmark model judges it anyway.)
        bodies = people.bodies + people.around if people is not None else []
        self._people_seen = people.bodies if people is not None else []  # (``quarter_turns``)
        reboxed = False
        for i, d in enumerate(found):
            if d.kind == "face" and not d.label and d.model == "face-short" and WHOLE_SURE <= d.score < SHORT_UNSURE \
                    and not any(has_face(p, tuple(v * f for v in d.box)) for p in bodies):
                tight = self._tighter(rgb, d) if self._faces else None
                reboxed = reboxed or tight is not None
                found[i] = dataclasses.replace(tight or d, label=SHORT_RANGE)
        if reboxed:  # a face's own box may be one found already
            found = nms(found, s.nms_iou)
        # A face far smaller than a person's own, on their torso, is a thing they wear (``pose.on_torso``).
        found = [d for d in found if d.kind != "face" or not any(on_torso(p, tuple(v * f for v in d.box))
                                                                  for p in bodies)]
        if s.hands_behind and self._joints is not None and any(d.kind == "hand" for d in found):
            with self._timed("behind"):
                found = self._behind(rgb, found)
        self.elapsed = (time.perf_counter() - t0) * 1000
        return found

    def _skin_places(self, whole_view: Image.Image, f: float, found: list[Detection],
                     skin: _Places, ninths: _NinthPlaces) -> None:
        """A grey picture's hands thread, done with its own searches (``found``, in the picture's pixels; ``f`` the
        whole view's scale): it looks at the skin-toned copy's best places too (``skin``, ranked by the other thread),
        then ranks the best places of the ninths of its tones stretched (``ninths``, with the other thread once it is
        free) but those on a hand found, and looks at them with the other thread."""
        skin.ranked.wait()
        with self._timed("skin palms here"):
            skin.look(self._joints)
        with self._timed("ninth palms"):
            hands = ([d.moved(f, 0, 0) for d in found] if f != 1.0 else found) + skin.hands()
            ninths.rank_all(whole_view, self._palms, hands)
            ninths.look(self._joints)

    def _beside(self, rgb: Image.Image, whole_view: Image.Image, f: float, views: list[Image.Image],
                skin: _Places | None, people: _People | None = None, best: _Places | None = None,
                ninths: _NinthPlaces | None = None) -> list[Detection]:
        """What the detector's own thread searches while the caller's searches hands: every face search, the faces
        on people's heads (``people``: a grey picture's found here first, and their hands looked at here too), the
        palm detector's best places in the whole view (``best``: ranked by the hands thread, looked at by both as
        each comes free), and a grey picture's hands at the best places of its skin-toned copy (``skin``: ranked
        here first, with models of this thread's own, and looked at by both threads as each comes free) and of the
        ninths of its tones stretched (``ninths``: ranked and looked at by both)."""
        try:
            if skin is not None:  # ranked first: the hands thread, should it come free first, looks at them
                with self._timed("skin palms ranked"):
                    skin.rank(views[1], whole_view, self._skin_palms, SKIN_PALMS)
            if people is not None and views:  # a grey picture's hands thread has the more to do
                self._find_people(whole_view, people)
            found = self._faces_in(rgb, whole_view, f, views) if self._faces else []
            if people is not None:
                people.found.wait()
                new: list[Detection] = []
                with self._timed("people by faces"):
                    around = people.around = self._around_faces(people, whole_view, found, f)
                if views:  # a grey picture's face that a person's pose has there too needs no other judge
                    found = [dataclasses.replace(d, label="") if d.label == GREY_PICTURE and d.score >= WHOLE_SURE
                             and any(has_face(p, tuple(v * f for v in d.box)) for p in people.bodies + around)
                             else d for d in found]
                if self._faces:
                    with self._timed("heads"):
                        new += self._heads(people, found, f, bool(views))
                if views or around:  # (a colour picture's other people: on the other thread)
                    with self._timed("poses"):
                        new += self._people(people, [], self._beside_joints,
                                            people.bodies + around if views else around)
                found += [d.moved(1 / f, 0, 0) for d in new] if f != 1.0 else new
            if skin is not None:  # (its own places first: the whole view's may not be ranked yet)
                with self._timed("skin palms"):
                    skin.look(self._beside_joints)
            if best is not None:
                with self._timed("best palms beside"):
                    best.ranked.wait()
                    best.look(self._beside_joints)
            if ninths is not None:
                with self._timed("ninth palms beside"):
                    ninths.rank_some(self._skin_palms)
                    ninths.ranked.wait()
                    ninths.look(self._beside_joints)
        finally:
            if skin is not None:
                skin.ranked.set()  # (whatever went wrong here, the other thread waits no longer)
        return found

    def _faces_in(self, rgb: Image.Image, whole_view: Image.Image, f: float,
                  views: list[Image.Image]) -> list[Detection]:
        """The face searches: the whole view, a grey picture's skin-toned copy, a small picture at 2×, the
        face tiles of any but a large one, a large one's tiles with their second looks."""
        s = self.settings
        w, h = rgb.size
        with self._timed("faces"):
            found = self._pass(whole_view, hands=False)
            if views:
                # A face only the skin-toned copy shows is labelled so: the stage keeps it only when the face
                # landmark model sees a face there (a fist's knuckles, skin-toned, look like one).
                found += [dataclasses.replace(d, label=SKIN_TONED) for d in self._pass(views[1], hands=False)
                          if not _same_face(d, found, s.nms_iou)]
            found = [d.moved(1 / f, 0, 0) for d in found] if f != 1.0 else found
            if max(w, h) < s.upsample_below:
                big = rgb.resize((w * 2, h * 2), Image.Resampling.LANCZOS)
                found += [d.moved(0.5, 0, 0) for d in self._pass(big, hands=False)]
            if FACE_TILE < max(w, h) <= s.tile_above and "full" in s.face_models:
                found += self._face_tiles(rgb, found)
            if max(w, h) > s.tile_above:
                found += self._tiles(rgb, found, "face")
        # On a grey picture the short-range model sees faces of hundreds of px in plain texture (a grey frame
        # around a small group photo): labelled, the stage has the face landmark model judge them (but a sure one
        # a person's pose has too: ``pose.has_face``).
        return [dataclasses.replace(d, label=GREY_PICTURE) if views and not d.label else d for d in found]

    def _hands_in(self, rgb: Image.Image, whole_view: Image.Image, f: float, views: list[Image.Image],
                  people: _People | None = None,
                  best: _Places | None = None) -> tuple[list[Detection], list[Detection]]:
        """The hand searches, but the body regions' and the hands behind: ``people`` found first (but a grey
        picture's); the whole view; a grey picture (``views``: its tones stretched and skin-toned) with its own
        thresholds; the palm detector's best places (``best``: ranked here, looked at by both threads); people's
        hands (a grey picture's: on the other thread); a small picture at 2×; a large one's tiles.  What only
        tiles found comes apart, to be kept when it is no speck beside a face."""
        s = self.settings
        w, h = rgb.size
        self._grey = bool(views)
        if people is not None and not views:  # first: the faces thread looks at their heads after its own searches
            self._find_people(whole_view, people)
        with self._timed("whole"):
            found = self._pass(whole_view, faces=False)
        if views:
            with self._timed("grey"):
                found += self._pass(views[0], faces=False)  # (the skin-toned copy: on the other thread)
        if best is not None:
            with self._timed("best palms"):
                best.rank(whole_view, whole_view, self._palms, BEST_PALMS, found)
                best.look(self._joints)
                best.looked()  # (a place the faces thread took is being looked at there)
                found += best.hands()
        if people is not None and not views:  # (a grey picture's: on the other thread)
            with self._timed("poses"):
                found += self._people(people, found, self._joints, shared=True)
        found = [d.moved(1 / f, 0, 0) for d in found] if f != 1.0 else found
        if max(w, h) < s.upsample_below:
            with self._timed("2x"):
                big = rgb.resize((w * 2, h * 2), Image.Resampling.LANCZOS)
                found += [d.moved(0.5, 0, 0) for d in self._pass(big, faces=False)]
        # Tiles and their second looks keep the usual thresholds: enlarged grey texture invents hands there.
        self._grey = False
        in_tiles = self._tiles(rgb, found, "hand") if max(w, h) > s.tile_above else []
        return found, in_tiles

    def _tiles(self, rgb: Image.Image, found: list[Detection], kind: str) -> list[Detection]:
        """Faces or hands (``kind``) of a large picture searched in overlapping tiles of half ``tile_above``
        (at least 512 px), at full resolution: a find the whole view was sure of as it is, another kept when a
        second look finds it too."""
        s = self.settings
        size = max(512, s.tile_above // 2)
        faces, hands = kind == "face", kind == "hand"
        with self._timed("tiles") if hands else nullcontext():  # the face thread is timed as one
            in_tiles = [d.moved(1.0, x0, y0) for x0, y0, x1, y1 in tiles(rgb.width, rgb.height, size)
                        for d in self._pass(rgb.crop((x0, y0, x1, y1)), faces=faces, hands=hands)]
        with self._timed("second look") if hands else nullcontext():
            sure = [d for d in found if d.score >= WHOLE_SURE]
            kept = []
            for d in nms(in_tiles, s.nms_iou):
                if _same_as_any(d, sure, nested=False):
                    kept.append(d)
                elif self._seen_again(rgb, d):
                    # A face only tiles found is labelled so: the stage has the face landmark model judge it (a
                    # hair clip, enlarged 4×, was a face to the detector and its second look, not to that model).
                    kept.append(dataclasses.replace(d, label=IN_TILES) if faces and not d.label else d)
            return kept

    def _tighter(self, rgb: Image.Image, d: Detection) -> Detection | None:
        """The face inside a box the short-range model was unsure of, as the full-range model boxes it on a crop of
        ``TIGHTER_SIDE`` px around it (sure of it, its centre in that box): that model's box of a face of a few
        dozen px is its own, where the short-range model's can be 2–4 times its size — and the face landmark model,
        given so loose a box, does not see the face in it."""
        full = [(name, m) for name, m in self._faces if name == "face-full"]
        x0, y0, x1, y1 = _grown(d.box, 0.25)
        box = (max(0, round(x0)), max(0, round(y0)), min(rgb.width, round(x1)), min(rgb.height, round(y1)))
        crop = rgb.crop(box)
        k = TIGHTER_SIDE / max(crop.size)
        crop = _scaled(crop, k)
        inside_it = [a.moved(1 / k, box[0], box[1]) for a in self._pass(crop, hands=False, face_models=full)]
        inside_it = [a for a in inside_it if a.score >= WHOLE_SURE and centre_in(a.box, d.box)]
        return max(inside_it, key=lambda a: a.score) if inside_it else None

    def _face_tiles(self, rgb: Image.Image, found: list[Detection]) -> list[Detection]:
        """Faces of a picture up to ``tile_above`` searched again in tiles of ``FACE_TILE`` px with the full-range
        model alone (a few ms a tile): a group photo's faces are a few dozen pixels, a handful in the model's
        192² view of the whole.  A face the whole view was not sure of is kept when a second look finds it too."""
        full = [(name, m) for name, m in self._faces if name == "face-full"]
        sure = [d for d in found if d.kind == "face" and d.score >= WHOLE_SURE]
        in_tiles: list[Detection] = []
        for x0, y0, x1, y1 in tiles(rgb.width, rgb.height, FACE_TILE):
            crop = rgb.crop((x0, y0, x1, y1))
            faces = (self._full_tiles.detect(crop) if self._full_tiles is not None
                     else self._pass(crop, hands=False, face_models=full))
            in_tiles += [d.moved(1.0, x0, y0) for d in faces]
        # A face the whole view was sure of keeps its box (a person's body regions are measured from it).
        return [d for d in nms(in_tiles, self.settings.nms_iou) if d.score >= WHOLE_SURE
                and not _same_as_any(d, [o for o in sure if not holds(o, d)]) and self._seen_again(rgb, d)]

    def _behind(self, rgb: Image.Image, found: list[Detection]) -> list[Detection]:
        """Each hand's joints settled (``hand_joints``), every hand hidden, and the image searched again for
        hands: one behind another, that the first search read with it as one hand."""
        w, h = rgb.size
        pixels = np.asarray(rgb)  # made once for every hand's look (``rotated_crop``)
        looks = _Shared(d for d in found if d.kind == "hand" and len(d.landmarks) == 21)
        again = dict(zip(map(id, looks.items), self._on_both(looks, lambda d: self._settled(pixels, d),
                                                              lambda d: self._settled(pixels, d, self._beside_joints)),
                         strict=True))
        settled = [again.get(id(d), (d, 1.0)) for d in found]
        # A hand the landmark model sees no hand in on the crop its own joints give is none (``NOT_A_HAND``).
        found = [d.clamped(w, h) if d.kind == "hand" else d for d, flag in settled if flag >= NOT_A_HAND]
        hands = [d for d in found if d.kind == "hand" and len(d.landmarks) == 21]
        if not hands:
            return found
        hide = Image.new("L", rgb.size, 0)
        draw = ImageDraw.Draw(hide)
        for d in hands:
            draw_hand(draw, d.landmarks, 0)  # the hand itself: a hand behind it shows right up to its edge
        hidden = Image.composite(Image.new("RGB", rgb.size, HIDDEN_GREY), rgb, hide)
        covered = np.asarray(hide) > 0
        hidden_pixels = np.asarray(hidden)
        new: list[Detection] = []
        view, f = _shrunk(hidden)  # searched as the whole view is
        for d in sorted((d.moved(1 / f, 0, 0) for d in self._pass(view, faces=False)), key=lambda d: d.score,
                        reverse=True):
            if d.score < WHOLE_SURE or len(d.landmarks) != 21:
                continue
            # A hand behind another has its wrist and knuckles behind it: only most of it on the hidden hands,
            # or its joints where a hidden hand's are, make it that hand again.  And it must be a hand to the
            # landmark model on its own crop (a hidden hand's cuff or wrist, found as a small hand, is not).
            on = [covered[min(h - 1, max(0, round(y))), min(w - 1, max(0, round(x)))] for x, y in d.landmarks]
            if sum(on) > HIDDEN_INSIDE * len(on) or any(_same_hand(d, o) for o in hands):
                continue
            d, flag = self._settled(hidden_pixels, d)
            d = d.clamped(w, h)
            # Off every hand found, it is not one of them however near — but where its settled joints are a hidden
            # hand's: found beside the paint, at a large picture's scale, the landmark model settles on that hand
            # again (a hand of 640 px in a 4096 px picture, IoU 0.75).  Only new finds can repeat each other.
            if (flag >= SETTLED and d.area > 0 and not _same_as_any(d, new)
                    and not any(_same_hand(d, o) for o in hands)):
                new.append(d)
        return found + new

    def _people(self, people: _People, found: list[Detection], joints: HandJoints,
                bodies: list[Person] | None = None, shared: bool = False) -> list[Detection]:
        """Hands where people's poses put them (``pose``, ``_hand_of_person``, with ``joints``: the calling thread's
        landmark model), in the whole view: of ``bodies``, or else of every person found; a place on a hand already
        found is not looked at, nor one on a hand an earlier place gave (``_Shared``).  ``shared``: the detector's own
        thread, once free, looks at places too (``_help``)."""
        places = [p for body in (people.bodies if bodies is None else bodies) for p in hand_places(body)
                  if not any(inside(p.centre, d.box) for d in found if d.kind == "hand")]
        looks = _Shared(places, drops=lambda place, kept: any(inside(place.centre, d.box) for d in kept))
        if shared:
            self._help(looks, lambda place: _hand_of_person(people.pixels, place, self._beside_joints))
        looks.work(lambda place: _hand_of_person(people.pixels, place, joints))
        return looks.kept()

    def _help(self, looks: _Shared, look) -> None:
        """The detector's own thread joins the hands thread's ``looks`` once it is free (with ``look``: its own
        models), awaited once that thread's own searches are (``_helped``): should it come free only after the hands
        thread has taken every item, it finds none left."""
        self._helpers.append(self._thread.submit(looks.work, look))

    def _on_both(self, looks: _Shared, own, beside) -> list:
        """``looks`` taken by both threads at once (the detector's own thread free: after ``_beside``), this one
        with ``own``, the other with ``beside`` (each with its own models); each item's result, in order."""
        helper = self._thread.submit(looks.work, beside)
        try:
            looks.work(own)
            return looks.results()
        finally:
            helper.result()

    def _helped(self) -> None:
        """Waits for the detector's own thread's share of the hands thread's looks (``_help``), each begun only once
        that thread's own searches are done (``_beside``)."""
        for helper in self._helpers:
            helper.result()

    def _find_people(self, whole_view: Image.Image, people: _People) -> None:
        with self._timed("people"):
            try:
                people.pixels = np.asarray(whole_view)
                people.bodies = self._poses.bodies(whole_view, people.pixels)
            finally:
                people.found.set()

    def _around_faces(self, people: _People, whole_view: Image.Image, found: list[Detection],
                      f: float) -> list[Person]:
        """People looked for again around their faces (``found``, in the picture's pixels; ``f`` the whole view's
        scale) that no person found in the whole view has their nose on (``pose.around``): a person small in a
        large picture, or grey, whom the pose detector missed there.  The largest sure faces first, at most
        ``PEOPLE_AROUND``; a face is passed over when a person found has their nose on it, and when the square
        around it would be no smaller than the whole view (the person no larger there)."""
        out: list[Person] = []
        looked: list[tuple[float, float, float, float]] = []
        longest = max(whole_view.size)
        for d in sorted((d for d in found if d.kind == "face" and d.score >= WHOLE_SURE), key=lambda d: d.area,
                        reverse=True):
            if len(looked) == PEOPLE_AROUND:
                break
            box = tuple(v * f for v in d.box)
            grown = _grown(box, 0.5)
            if (SEED_SIDE * max(box[2] - box[0], box[3] - box[1]) >= longest
                    or any(inside(tuple(p.points[NOSE]), grown) for p in people.bodies + out)
                    or any(centre_in(box, o) for o in looked)):
                continue
            looked.append(box)
            person = self._poses.around(whole_view, people.pixels, box, _down(d))
            if person is not None:
                out.append(person)
        return out

    def _heads(self, people: _People, found: list[Detection], f: float, grey: bool) -> list[Detection]:
        """Faces searched again on each person's head, upright (``pose.head``), in the whole view (``f`` its scale,
        ``found`` the faces found, in the picture's pixels): a face tilted, or in a turned picture, is upright there
        and enlarged.  A head whose face is found already is not looked at again."""
        out: list[Detection] = []
        for body in people.bodies:
            crop_of_head = head(body)
            if crop_of_head is None:
                continue
            centre, side_px, angle = crop_of_head
            if any(d.kind == "face" and inside((centre[0] / f, centre[1] / f), d.box) and d.score >= WHOLE_SURE
                   for d in found):
                continue
            crop, affine = rotated_crop(people.pixels, centre, side_px, angle, HEAD_SIDE)
            for d in self._pass(Image.fromarray(crop), hands=False):
                x0, y0, x1, y1 = d.box
                corners = to_image(affine, np.array([(x0, y0), (x1, y0), (x0, y1), (x1, y1)], dtype=np.float64))
                marks = to_image(affine, np.array(d.landmarks, dtype=np.float64)) if d.landmarks else []
                out.append(Detection("face", (*corners.min(axis=0), *corners.max(axis=0)), d.score, d.model,
                                     [(float(x), float(y)) for x, y in marks], GREY_PICTURE if grey else ""))
        return out

    def _load_palms(self) -> None:
        """The palm detector, on each thread with a model of its own: loaded with the first search that looks at its
        places (about 0.6 s; a detector without ``palm_places``, the gate's, with its first grey picture or body
        region), not by every detector made."""
        if self._palms is None:
            bundle = Path(self.settings.hand_model or SHIPPED["hand"])
            self._palms, self._skin_palms = Palms(bundle), Palms(bundle)

    def _whole_places(self, grey: bool) -> _Places | None:
        """The whole view's best palm places, to be looked at (``_Places``): a grey picture's, and a colour one's
        with ``palm_places`` (the gate's one look has none)."""
        return _Places() if self._palms is not None and (grey or self.settings.palm_places) else None

    def _best_palms(self, rgb: Image.Image, found: list[Detection], palms: Palms, joints: HandJoints,
                    count: int, ranked: Image.Image | None = None, settled: float = PALM_SETTLED) -> list[Detection]:
        """Hands at the palm detector's ``count`` best places however low it scores them (``palms``; on
        ``ranked``, a copy of ``rgb`` in other tones, when given), each kept when the landmark model flags a hand on
        the palm's crop (``SETTLED``) and is sure of it (``settled``) on the crop its joints give.  A place on a
        hand already found is not looked at again."""
        hands = [d for d in found if d.kind == "hand"]
        out: list[Detection] = []
        pixels = np.asarray(rgb)  # made once for every place's look (``rotated_crop``)
        for palm in _palm_places(palms, rgb if ranked is None else ranked, count):
            if any(centre_in(palm.box, d.box) for d in hands + out):
                continue
            hand = _hand_at(pixels, palm, joints, settled=settled)
            if hand is not None:
                out.append(hand)
        return out

    def _settled(self, rgb: Image.Image | np.ndarray, d: Detection,
                 model: HandJoints | None = None) -> tuple[Detection, float]:
        """The hand with the joints the landmark model (``model``, or the hands thread's) gives on the crop its
        joints give, where it is sure (its hand flag there at least ``SETTLED``; else the hand as it was), and that
        flag."""
        if len(d.landmarks) != 21:
            return d, 0.0
        joints, flag = (model or self._joints).settle(rgb, d.landmarks)
        if flag < SETTLED:
            return d, flag
        joints = [(float(x), float(y)) for x, y in joints]
        return dataclasses.replace(d, box=_hand_box(joints), landmarks=joints), flag

    def _bodies(self, rgb: Image.Image, regions: list[tuple[int, int, int, int]], faces: list[Detection],
                found: list[Detection]) -> list[Detection]:
        """Hands searched again in each person's body region (below and beside the face), enlarged: where a
        full-body or group shot makes hands too small for the whole view.  Kept as a tile's finds are: seen
        again, and not a speck beside a face.  The hands at the palm detector's best places in the region
        (``REGION_PALMS``; a grey picture's ranked on its skin-toned copy) are kept when the landmark model is sure
        of them (``REGION_SETTLED``) and they are no speck beside a face: the hand landmarker, even at a grey
        picture's lowered thresholds, passes over most hands of a grey group photo, which its palm detector ranks
        low but among its best few there.  The regions are searched on both threads, whichever is free taking
        the next, the detector's own with landmarkers of its own; what is kept does not depend on who looked (a
        region's find that an earlier region found too is that one, as though searched one after the other)."""
        if self._beside_hands is None:
            self._beside_hands = _HandModels(*self._landmarkers(), self._beside_joints)
        self._load_palms()

        def search(models: _HandModels | None):
            def region(box: tuple[int, int, int, int]) -> list[Detection]:
                x0, y0, x1, y1 = box
                crop = rgb.crop(box)
                f = BODY_SIDE / max(crop.size)
                crop = _scaled(crop, f)
                in_crop = self._pass(crop, faces=False, hand_models=models)
                palms, joints = (self._palms, self._joints) if models is None else (self._skin_palms,
                                                                                   self._beside_joints)
                # (A place on a hand found before the regions is not looked at; one on what the region's own
                # search found is: that find may not be kept.)
                known = [d.moved(f, -x0 * f, -y0 * f) for d in found]
                at_palms = self._best_palms(crop, known, palms, joints, REGION_PALMS,
                                            grey_views(crop)[1] if self._grey else None, REGION_SETTLED)
                finds = [d for d in (d.moved(1 / f, x0, y0) for d in in_crop)
                         if not _same_as_any(d, found) and not dwarfed(d, faces) and self._seen_again(rgb, d, models)]
                return finds + [d for d in (d.moved(1 / f, x0, y0) for d in at_palms)
                                if not _same_as_any(d, found + finds) and not dwarfed(d, faces)]
            return region

        out: list[Detection] = []
        for finds in self._on_both(_Shared(regions), search(None), search(self._beside_hands)):
            out += [d for d in finds if not _same_as_any(d, out)]
        return out

    @contextmanager
    def _timed(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = (time.perf_counter() - t0) * 1000

    def _seen_again(self, rgb: Image.Image, d: Detection, hand_models: _HandModels | None = None) -> bool:
        """A find that only a tile or a body region made is kept if a second look finds it too: a crop three times
        its size around it, at another scale.  A real small face or hand is found again; texture that resembled
        one at the tile's scale (an enlarged image's blur, a flag's folds) mostly is not.  A hand must also be one
        to the landmark model on the crop its own joints give (``SETTLED``): on enlarged copies of the development
        photos a flag's star and a shoe were found again (0.65–0.98) where that model flags them 0.09–0.4, and real
        hands there 0.5–1 (one at 0.27 that the whole view found as well)."""
        x0, y0, x1, y1 = d.box
        reach = 3 * side(d.box) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        box = (max(0, round(cx - reach)), max(0, round(cy - reach)),
               min(rgb.width, round(cx + reach)), min(rgb.height, round(cy + reach)))
        crop = rgb.crop(box)
        f = SECOND_LOOK / max(crop.size)
        crop = _scaled(crop, f)
        again = [a.moved(1 / f, box[0], box[1]) for a in self._pass(crop, d.kind == "face", d.kind == "hand",
                                                                    hand_models=hand_models)
                 if a.score >= CONFIRM]
        if not _same_as_any(d, again):
            return False
        if d.kind != "hand" or len(d.landmarks) != 21:
            return True
        return (hand_models or self._own_hands).joints.settle(rgb, d.landmarks)[1] >= SETTLED

    def _pass(self, rgb: Image.Image, faces: bool = True, hands: bool = True, face_models: list | None = None,
              hand_models: _HandModels | None = None) -> list[Detection]:
        """One look with the models (``face_models``: only these of the face models; ``hand_models``: the hand
        models of the thread that looks, when not the caller's own)."""
        pixels = np.ascontiguousarray(np.asarray(rgb))
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=pixels)
        w, h = rgb.size
        out: list[Detection] = []
        for model, detector in (self._faces if face_models is None else face_models) if faces else ():
            for d in detector.detect(mp_image).detections:
                b = d.bounding_box
                keypoints = [(k.x * w, k.y * h) for k in d.keypoints or ()]  # eyes, nose, mouth, ears
                out.append(Detection("face", (b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height),
                                     float(d.categories[0].score), model, keypoints))
        models = hand_models or self._own_hands
        if models is not None and hands:
            result = (models.grey if self._grey else models.hands).detect(mp_image)
            for landmarks, handedness in zip(result.hand_landmarks, result.handedness, strict=False):
                if self._grey and handedness[0].score < CONFIRM:
                    continue  # the lowered thresholds let coat folds through: what they find must be sure
                pts = [(p.x * w, p.y * h) for p in landmarks]
                if self._grey and models.joints.settle(pixels, pts)[1] < GREY_SETTLED:
                    continue  # … and a hand to the landmark model on its own crop
                out.append(Detection("hand", _hand_box(pts), float(handedness[0].score), "hand", pts,
                                     handedness[0].category_name))
        return out
