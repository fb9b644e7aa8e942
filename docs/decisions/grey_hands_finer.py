"""Can a finer search of a grey picture find the hands its colour photo keeps, and can anything tell those hands
from the other things it takes for hands?

    PYTHONPATH=. python docs/decisions/grey_hands_finer.py PHOTO [PHOTO ...]

For each photo, the hands the stage keeps on it in colour are the reference; on its grey copy, those the stage
keeps there too and those it loses.  For each lost hand: the hand landmark model's flag on the grey copy at the
crop the colour find's joints give (what the model knows, given the right place).  Then a finer search than the
stage's: the picture's tones stretched (as the stage's grey search has them) cut into squares a quarter of its
long side, overlapping by half, and the palm detector's 3 best places in each looked at by the landmark model
(a place's hand is its joints settled, as the stage settles them).  Each find flagged 0.8 or more is a lost hand
found, a hand the stage keeps anyway, or something else; and for each, what might tell them apart: the landmark
model's flag on the same crop of the stretched and skin-toned views, of the grey copy mirrored, on crops 1.4 and
0.75 times as large and turned 30°, and the shape of its joints (the palm's width and the fingers' lengths against
the wrist-to-middle-knuckle distance, how straight each finger is).

Writes bench/out/grey_hands_finer.md.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from PIL import Image, ImageOps

from automask.detect import SHIPPED, Detector, _hand_at, _places_in, grey_views, tiles
from automask.found import iou
from automask.hand_joints import HandJoints, crop_of
from automask.palms import Palms
from bench import annotated
from bench.automask import OUT, kept, settings, warm
from bench.kit.machine import cpu
from bench.kit.photos import given

SQUARE = 0.25   # the finer search's squares: this share of the picture's long side, …
OVERLAP = 0.5   # … overlapping by this share
PLACES = 3      # the palm detector's best places looked at in each square
FOUND = 0.8     # the landmark model's flag (settled) a finer find is counted at
SAME = 0.3      # IoU: a finer find the same as one found before it
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


def shape(joints: np.ndarray) -> tuple[float, float, float]:
    """The palm's width (index to little finger's knuckle), the longest finger and the least straight finger's
    straightness (its tip's distance from its knuckle over the finger's length), the first two against the wrist's
    distance from the middle finger's knuckle."""
    unit = float(np.linalg.norm(joints[9] - joints[0])) or 1.0
    lengths = [sum(float(np.linalg.norm(joints[b] - joints[a])) for a, b in zip(f, f[1:], strict=False))
               for f in FINGERS]
    straight = [float(np.linalg.norm(joints[f[-1]] - joints[f[0]])) / max(length, 1e-6)
                for f, length in zip(FINGERS, lengths, strict=True)]
    return float(np.linalg.norm(joints[5] - joints[17])) / unit, max(lengths) / unit, min(straight)


def looks(joints: HandJoints, views: dict, mirrored: np.ndarray, hand: np.ndarray) -> dict[str, float]:
    """The landmark model's flag on the crop ``hand``'s joints give, on each view and changed."""
    out = {name: joints.settle(pixels, hand)[1] for name, pixels in views.items()}
    width = mirrored.shape[1]
    flipped = hand.copy()
    flipped[:, 0] = width - 1 - flipped[:, 0]
    out["mirrored"] = joints.settle(mirrored, flipped)[1]
    centre, side, angle = crop_of(hand)
    grey = views["grey"]
    out["×1.4"] = joints.look(grey, centre, side * 1.4, angle)[1]
    out["×0.75"] = joints.look(grey, centre, side * 0.75, angle)[1]
    out["turned 30°"] = joints.look(grey, centre, side, angle + math.radians(30))[1]
    return out


def main(argv=None) -> int:
    args, there = given(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), argv)
    if not there:
        return 2
    detector = warm(Detector(settings()), args.photos[0])
    palms, joints = Palms(SHIPPED["hand"]), HandJoints(SHIPPED["hand"])
    name, flags = cpu()
    known: list[float] = []
    finds: list[tuple[str, str, float, dict, tuple]] = []  # photo, what it is, flag, other looks, shape
    for path in args.photos:
        colour = Image.open(path).convert("RGB")
        grey = ImageOps.grayscale(colour).convert("RGB")
        reference = [d for d in kept(detector, colour)[0] if d.kind == "hand" and len(d.landmarks) == 21]
        in_grey = [d for d in kept(detector, grey)[0] if d.kind == "hand"]
        lost = annotated.lost(reference, in_grey)
        stretched, skin = grey_views(grey)
        views = {"grey": np.asarray(grey), "stretched": np.asarray(stretched), "skin-toned": np.asarray(skin)}
        known += annotated.flags_at(joints, grey, lost)
        mirrored = np.ascontiguousarray(views["grey"][:, ::-1])
        side = max(64, round(SQUARE * max(grey.size)))
        found: list = []
        for square in tiles(*grey.size, side, OVERLAP):
            for place in _places_in(palms, stretched, square, PLACES):
                hand = _hand_at(views["grey"], place, joints, first=0.0, settled=0.0)
                if hand is None or hand.score < FOUND or any(iou(hand.box, f.box) >= SAME for f in found):
                    continue
                found.append(hand)
                on = [d for d in reference if annotated.on_box(hand.box, d.box)]
                what = "elsewhere" if not on else ("lost in grey" if on[0] in lost else "kept in grey")
                points = np.asarray(hand.landmarks, dtype=np.float64)
                finds.append((path.name, what, hand.score, looks(joints, views, mirrored, points), shape(points)))
        print(f"{path.name}: {len(reference)} hands in colour, {len(lost)} lost in grey, {len(found)} finer finds",
              flush=True)
    detector.close()
    lines = ["# Grey hands: a finer search, and what tells its hands from the rest", "",
             f"`PYTHONPATH=. python docs/decisions/grey_hands_finer.py …` ({len(args.photos)} photos), CPU: {name}, "
             f"{' '.join(flags)}.", *annotated.lost_report(known), "",
             f"The finer search's finds flagged {FOUND} or more, by what they lie on:", "",
             "| flag at least | lost in grey | kept in grey | elsewhere |", "|---|---|---|---|"]
    for least in (0.8, 0.9, 0.95):
        count = {k: sum(1 for f in finds if f[1] == k and f[2] >= least)
                 for k in ("lost in grey", "kept in grey", "elsewhere")}
        lines.append(f"| {least} | " + " | ".join(str(v) for v in count.values()) + " |")
    names = list(finds[0][3]) if finds else []
    lines += ["", "Each find: the flag, the other looks' flags, and its joints' shape (palm width, longest finger, "
              "least straight finger):", "",
              "| photo | on | flag | " + " | ".join(names) + " | palm | finger | straight |",
              "|---|---|---|" + "---|" * (len(names) + 3)]
    for photo, what, flag, other, (palm, finger, straight) in sorted(finds, key=lambda f: (f[1], f[2])):
        lines.append(f"| {photo} | {what} | {flag:.2f} | " + " | ".join(f"{other[k]:.2f}" for k in names)
                     + f" | {palm:.2f} | {finger:.2f} | {straight:.2f} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "grey_hands_finer.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[:14]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
