"""The quality gate: every repainted region is checked before it is kept.

A detailer's repaint sometimes makes things worse — a face that is no longer a
face, a hand turned into a blob, a patch whose colour does not match — and an
unattended pipeline must notice.  After each region is repainted, its crop
before and after is judged:

* **face** — the face detector must still find a face in the region, scoring no
  lower than it did before minus ``face_margin``;
* **hand** — the hand landmarker must still find a hand (score at least
  ``hand_score``, or the score before minus ``face_margin`` where that was
  lower), and if its five fingers stood apart before — each finger's reach
  from its first joint, and the gaps between fingertips, a share of the palm —
  they must still (a "featureless blob" comes back with the fingertips bunched,
  or not at all; a fist or a thumbs-up was never apart and need not become so);
* **colour** — across the mask's edge (the band where the feathered mask is
  between 0 and 255, or the mask's inner 8 px if it has no feather) the mean
  colour after the repaint is within ``max_delta_e`` (CIEDE2000) of the mean
  colour before: a patch in another colour shows as a ring.

A check that cannot judge — no face found even before the repaint, at that
crop — passes, and says so.  The detectors are MediaPipe's, shipped with
``automask``, loaded the first time a region is judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from automask.detect import Detector, DetectorSettings
from stages.held import OWNER
from stages.schema import Errors

FINGERS = ((1, 4), (5, 8), (9, 12), (13, 16), (17, 20))  # (first joint, tip) of thumb … little finger
REACH = 0.35       # a finger's tip must be this share of the palm (wrist to middle knuckle) from its joint
TIP_GAP = 0.08     # fingertips must be at least this share of the palm apart


@dataclass(frozen=True)
class GateConfig:
    """[inpaint.gate]"""

    enabled: bool = True
    retries: int = 2              # more tries, each with a new seed and a lower strength
    strength_step: float = 0.75   # each retry's strength: the last one's times this
    face_margin: float = 0.1      # a repainted face may score this much lower than before
    hand_score: float = 0.5       # the landmarker's score a repainted hand needs
    max_delta_e: float = 6.0      # CIEDE2000 between the mean colours across the mask's edge, before and after

    def check(self, err: Errors) -> None:
        err.between("retries", self.retries, 0, 5)
        err.between("strength_step", self.strength_step, 0.3, 1.0)
        err.between("face_margin", self.face_margin, 0.0, 1.0)
        err.between("hand_score", self.hand_score, 0.0, 1.0)
        err.between("max_delta_e", self.max_delta_e, 0.5, 50.0)


@dataclass
class Verdict:
    passed: bool
    scores: dict = field(default_factory=dict)
    why: str = ""  # what failed, for people


# --------------------------------------------------------------------------- colour


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """N×3 uint8 sRGB → N×3 CIELAB (D65)."""
    import cv2

    return cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3)


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray) -> float:
    """CIEDE2000 colour difference of two CIELAB colours (Sharma, Wu and Dalal, 2005, equations 1–23)."""
    L1, a1, b1 = (float(v) for v in lab1)
    L2, a2, b2 = (float(v) for v in lab2)
    c_bar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(c_bar ** 7 / (c_bar ** 7 + 25 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if c2p else 0.0
    dLp, dCp = L2 - L1, c2p - c1p
    dhp = 0.0
    if c1p * c2p:
        dhp = h2p - h1p
        dhp = dhp - 360 if dhp > 180 else dhp + 360 if dhp < -180 else dhp
    dHp = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dhp / 2))
    Lp_bar, Cp_bar = (L1 + L2) / 2, (c1p + c2p) / 2
    if c1p * c2p == 0:
        hp_bar = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hp_bar = (h1p + h2p) / 2
    else:
        hp_bar = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    t = (1 - 0.17 * math.cos(math.radians(hp_bar - 30)) + 0.24 * math.cos(math.radians(2 * hp_bar))
         + 0.32 * math.cos(math.radians(3 * hp_bar + 6)) - 0.20 * math.cos(math.radians(4 * hp_bar - 63)))
    d_theta = 30 * math.exp(-(((hp_bar - 275) / 25) ** 2))
    r_c = 2 * math.sqrt(Cp_bar ** 7 / (Cp_bar ** 7 + 25 ** 7))
    s_l = 1 + 0.015 * (Lp_bar - 50) ** 2 / math.sqrt(20 + (Lp_bar - 50) ** 2)
    s_c, s_h = 1 + 0.045 * Cp_bar, 1 + 0.015 * Cp_bar * t
    r_t = -math.sin(math.radians(2 * d_theta)) * r_c
    return math.sqrt((dLp / s_l) ** 2 + (dCp / s_c) ** 2 + (dHp / s_h) ** 2 + r_t * (dCp / s_c) * (dHp / s_h))


def edge_band(mask: np.ndarray) -> np.ndarray:
    """Where the mask's edge is: its feather (0 < mask < 255), or its inner 8 px when it has none."""
    band = (mask > 0) & (mask < 255)
    if band.sum() >= 16:
        return band
    from PIL import Image, ImageFilter

    inner = np.asarray(Image.fromarray(((mask == 0) * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(17))) > 0
    return inner & (mask > 0)


def ring_delta_e(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> float | None:
    band = edge_band(mask)
    if band.sum() < 16:
        return None
    return delta_e_2000(srgb_to_lab(before[band]).mean(axis=0), srgb_to_lab(after[band]).mean(axis=0))


# --------------------------------------------------------------------------- faces and hands


def fingers_apart(landmarks: list[tuple[float, float]]) -> bool:
    """Five fingers that stand out: each tip well away from its first joint, no two tips in one place."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (21, 2):
        return False
    palm = np.linalg.norm(pts[9] - pts[0])
    if palm <= 0:
        return False
    reach = all(np.linalg.norm(pts[tip] - pts[joint]) >= REACH * palm for joint, tip in FINGERS)
    tips = pts[[tip for _, tip in FINGERS]]
    gaps = [np.linalg.norm(tips[i] - tips[j]) for i in range(5) for j in range(i + 1, 5)]
    return bool(reach and min(gaps) >= TIP_GAP * palm)


FINDER_FLOOR = 0.05  # the lowest score a YOLO finder reports when judging (a weak find still counts)
JUDGE_SETTINGS = DetectorSettings(  # one look at the region itself
    upsample_below=0, tile_above=1 << 30, num_hands=4, body_regions=False, hands_behind=False, poses=False,
    palm_places=False)


class Judge:
    """The detectors the gate asks; loaded on first use and held by ``stages.held`` (kind "judge")."""

    def _detect(self, rgb: np.ndarray):
        from PIL import Image

        detector = OWNER.get("judge", repr(JUDGE_SETTINGS), lambda: Detector(JUDGE_SETTINGS), Detector.close)
        return detector.detect(Image.fromarray(rgb))

    def _in(self, crop: np.ndarray, box: tuple, kind: str, finder=None) -> list:
        """The detections of ``kind`` whose centre lies in ``box`` (the region, in the crop's pixels): by
        ``finder`` (the YOLO model that found the region: an anime face is judged by the anime face model that
        found it, not by a photo model) or by MediaPipe."""
        if finder is not None:
            from PIL import Image

            found = finder.find(Image.fromarray(crop), kind, FINDER_FLOOR)
        else:
            found = self._detect(crop)
        return sorted((d for d in found if d.kind == kind
                       and box[0] <= (d.box[0] + d.box[2]) / 2 <= box[2] and box[1] <= (d.box[1] + d.box[3]) / 2
                       <= box[3]), key=lambda d: -d.score)

    def face_score(self, crop: np.ndarray, box: tuple, finder=None) -> float:
        """The best score of a face in the region (0 when there is none)."""
        faces = self._in(crop, box, "face", finder)
        return faces[0].score if faces else 0.0

    def hand(self, crop: np.ndarray, box: tuple, finder=None) -> tuple[float, bool]:
        """The best hand's score in the region, and whether its five fingers stand apart (0, False: none, or
        a finder that gives no joints: then only the score is judged)."""
        hands = self._in(crop, box, "hand", finder)
        return (hands[0].score, fingers_apart(hands[0].landmarks)) if hands else (0.0, False)

    def close(self) -> None:
        OWNER.drop("judge")


def judge(judge: Judge, gate: GateConfig, kind: str, before: np.ndarray, after: np.ndarray,
          mask: np.ndarray, box: tuple, finder=None) -> Verdict:
    """One repainted region's verdict; ``before``/``after`` are the region's crop, ``mask`` its mask there and
    ``box`` the region in the crop's pixels; ``finder`` the YOLO model that found the region (None: MediaPipe)."""
    scores: dict = {}
    problems: list[str] = []
    if finder is not None:
        scores["judged_by"] = finder.path.name
    if kind == "face":
        was, now = judge.face_score(before, box, finder), judge.face_score(after, box, finder)
        scores.update(face_before=round(was, 3), face_after=round(now, 3))
        if was == 0:
            scores["face"] = "not judged: no face found in the crop before the repaint"
        elif now < was - gate.face_margin:
            problems.append(f"face score {now:.2f} after, {was:.2f} before (margin {gate.face_margin})")
    if kind == "hand":
        (was, apart_before), (now, apart) = judge.hand(before, box, finder), judge.hand(after, box, finder)
        scores.update(hand_before=round(was, 3), hand_after=round(now, 3), five_fingers=apart)
        if was == 0:
            scores["hand"] = "not judged: no hand found in the crop before the repaint"
        else:
            need = min(gate.hand_score, was - gate.face_margin)
            if now < need:
                problems.append(f"hand score {now:.2f} after (needs {need:.2f})" if now else
                                "no hand found after the repaint")
            elif apart_before and not apart:  # a fist or a thumbs-up was never "apart": it need not become so
                problems.append("the hand's five fingers are not apart after the repaint")
    de = ring_delta_e(before, after, mask)
    if de is not None:
        scores["delta_e"] = round(de, 2)
        if de > gate.max_delta_e:
            problems.append(f"colour across the mask's edge moved ΔE {de:.1f} (limit {gate.max_delta_e})")
    return Verdict(not problems, scores, "; ".join(problems))
