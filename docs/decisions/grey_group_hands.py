"""Why a grey group photo loses the hands its colour photo keeps: where each model stops seeing them.

    PYTHONPATH=. python docs/decisions/grey_group_hands.py PHOTO [PHOTO ...]

For each photo, the hands the stage keeps on it in colour are the reference.  On the same photo made grey, for
each of those hands: does the stage keep it; does the palm detector, run alone, rank a place on it among its 30
best (however low it scores them), on the grey picture and on its skin-toned copy; and is the hand landmark
model sure of a hand (≥ 0.5) on the crop that hand's own joints give, on the grey pixels.  And for each photo the
people the pose detector finds in colour, grey and skin-toned.  The first two are what proposes a hand to look
at; the last is what judges it.

Writes bench/out/grey_group_hands.md.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageOps

from automask.detect import Detector, _shrunk, grey_views
from automask.found import centre_in, iou
from bench.automask import OUT, kept, settings, warm
from bench.kit.machine import cpu
from bench.kit.photos import given

PLACES = 30     # the palm detector's best places looked through
SURE = 0.5      # the landmark model's hand flag that counts as sure of a hand


def main(argv=None) -> int:
    args, there = given(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]), argv)
    if not there:
        return 2
    detector = warm(Detector(settings()), args.photos[0])
    detector.detect(ImageOps.grayscale(Image.open(args.photos[0])).convert("RGB"))  # loads the palm models
    name, flags = cpu()
    lines = ["# Grey group photos: where each model stops seeing the hands colour keeps", "",
             f"`PYTHONPATH=. python docs/decisions/grey_group_hands.py …`, CPU: {name}, {' '.join(flags)}.", "",
             "| photo | hands kept, colour | … grey | palm places on them, grey | … skin-toned | landmark model sure, "
             "grey | people, colour / grey / skin-toned |", "|---|---|---|---|---|---|---|"]
    totals = np.zeros(5, dtype=int)
    for path in args.photos:
        colour = Image.open(path).convert("RGB")
        grey = ImageOps.grayscale(colour).convert("RGB")
        reference = [d for d in kept(detector, colour)[0] if d.kind == "hand" and len(d.landmarks) == 21]
        in_grey = [d for d in kept(detector, grey)[0] if d.kind == "hand"]
        view, f = _shrunk(grey)
        skin = grey_views(view)[1]
        places = {look: [tuple(v / f for v in p.box) for p in detector._palms.best(v, PLACES, 0.0)]
                  for look, v in (("grey", view), ("skin", skin))}
        pixels = np.asarray(grey)
        row = [len(reference), sum(any(iou(d.box, g.box) >= 0.3 for g in in_grey) for d in reference),
               sum(any(centre_in(p, d.box) for p in places["grey"]) for d in reference),
               sum(any(centre_in(p, d.box) for p in places["skin"]) for d in reference),
               sum(detector._joints.settle(pixels, d.landmarks)[1] >= SURE for d in reference)]
        counted = [len(detector._poses.bodies(v, np.asarray(v))) for v in (_shrunk(colour)[0], view, skin)]
        totals += np.array(row)
        lines.append(f"| {path.name} | " + " | ".join(map(str, row)) + f" | {' / '.join(map(str, counted))} |")
        print(lines[-1], flush=True)
    lines.append("| in all | " + " | ".join(map(str, totals)) + " | |")
    detector.close()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "grey_group_hands.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(lines[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
