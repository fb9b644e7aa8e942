"""Detection on photos someone else annotated: how many of their boxes the stage finds.

    python -m bench.annotated FILE.xml [FILE.xml ...] [--looks colour,grey,mirrored,…] [--label face] [--side 512]

The annotations are dlib's imglab XML (``<image file='…'><box top='' left='' width='' height=''>``, a box's
``<label>`` its kind, ``face`` where it has none; ``ignore='1'`` boxes neither count nor make a find false), the
format of dlib's own face sets and of the boxes ``imglab`` draws.  Each photo is searched as it is and as copies
of it (``LOOKS``: grey, mirrored, turned a quarter either way and upside down, darker, motion-blurred, enlarged 4×
with Lanczos, the boxes moved with the picture; ``upscaled``, 4× by polishd's own upscaler, only when asked: tens
of seconds a photo on a CPU), with the shipped models and the default settings, and what the stage keeps (faces
with the face landmark model's judgement, hands) is paired with the boxes: a find on a box (IoU 0.3, or its centre
in the box and at most three times its size) finds it.  Reported per look: the boxes found of each kind, the finds
on no box (false finds — or things nobody boxed: look at the sheet; of a kind no box in the set has, the finds are
only counted), and the milliseconds a photo.  And, needing no boxes, each look beside the photo in colour: how many
of the faces and hands the stage keeps on the photo it keeps on the look's copy too (where the look moves them), and
how many it keeps elsewhere — grey against colour is what a grey picture loses, on photos of any kind (an XML that
lists photos without boxes will do).  ``--side N`` first resizes every photo (and its boxes) to a long side of N
px, as a generation is made: ``--side 512 --looks colour,upscaled`` searches a 512 px picture and the 2048 px one
the upscale stage makes of it.  Where grey loses a hand colour keeps, the report says whether the hand landmark
model, the search's last judge, still sees it on the grey copy at the crop the colour find's joints give (MediaPipe's
tracking step): a hand it is sure of there is one the grey search found no place for; one it is not, the model
itself does not see in grey.

Writes bench/out/annotated.md and bench/out/annotated.png (each photo as it is: the boxes yellow, what the stage
keeps green for faces, magenta for hands).  The photos stay where the XML is; the report and the sheet, which
shows them, are not committed (.gitignore).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from automask.detect import REGION_SETTLED, SETTLED, SHIPPED, Detector, turned_box
from automask.face_mesh import FaceMesh, pixels_of
from automask.found import centre_in, iou, side
from automask.hand_joints import HandJoints
from bench.automask import CHANGES, ENLARGED, OUT, kept, resized, settings, sheet, spent, upscaler, warm
from bench.automask import LOOKS as BENCH_LOOKS
from bench.kit.machine import cpu

Box = tuple[float, float, float, float]


def _same(box: Box, size: tuple[int, int], new: tuple[int, int]) -> Box:
    return box


def _mirrored(box: Box, size: tuple[int, int], new: tuple[int, int]) -> Box:
    return (size[0] - box[2], box[1], size[0] - box[0], box[3])


def _turned(turns: int):
    """The look of a picture turned ``turns`` quarter turns anticlockwise, and where a box lies on it."""
    return (lambda im: im.rotate(90 * turns, expand=True)), (lambda box, size, new: turned_box(box, size, turns))


def _scaled(box: Box, size: tuple[int, int], new: tuple[int, int]) -> Box:
    kx, ky = new[0] / size[0], new[1] / size[1]
    return (box[0] * kx, box[1] * ky, box[2] * kx, box[3] * ky)


@functools.cache
def _polishd_upscaler():
    up, why = upscaler()
    if up is None:
        raise SystemExit(f"--looks upscaled: polishd's upscaler cannot run here ({why})")
    return up


def _upscaled(image: Image.Image) -> Image.Image:
    return _polishd_upscaler()(image)


# Each look: the picture's copy, and where a box of the photo lies on it (the box, the photo's size, the copy's).
LOOKS = {"colour": (BENCH_LOOKS["colour"], _same), "grey": (BENCH_LOOKS["grey"], _same),
         "mirrored": (CHANGES["mirrored"], _mirrored), "turned 90°": _turned(1), "turned 180°": _turned(2),
         "turned −90°": _turned(3),
         "darker": (CHANGES["darker"], _same), "motion blur": (CHANGES["motion blur"], _same),
         "4× Lanczos": (ENLARGED["4× Lanczos"], _scaled), "upscaled": (_upscaled, _scaled)}
ASKED_ONLY = ("upscaled",)  # looks left out unless --looks names them
KINDS = ("face", "hand")
SURE = REGION_SETTLED  # the landmark model's flag a hand is kept at from a ninth's or a body region's places


@dataclass
class Annotated:
    path: Path
    boxes: list[tuple[str, tuple[float, float, float, float]]]  # (kind, box) to be found
    ignored: list[tuple[str, tuple[float, float, float, float]]]  # boxed, but neither counted nor false


def read(xml: Path, default: str = "face") -> list[Annotated]:
    """The photos of an imglab XML file that exist beside it, with their boxes."""
    out = []
    for image in ET.parse(xml).getroot().iter("image"):
        path = xml.parent / image.get("file", "")
        if not path.is_file():
            print(f"{xml}: {path.name} is not there; left out", file=sys.stderr)
            continue
        boxes, ignored = [], []
        for b in image.iter("box"):
            x, y = float(b.get("left", 0)), float(b.get("top", 0))
            box = (x, y, x + float(b.get("width", 0)), y + float(b.get("height", 0)))
            label = (b.findtext("label") or default).strip().lower()
            (ignored if b.get("ignore") == "1" else boxes).append((label, box))
        out.append(Annotated(path, boxes, ignored))
    return out


def _resized(a: Annotated, k: float) -> Annotated:
    """``a`` with its boxes scaled by ``k`` (its photo resized)."""
    def scaled(boxes):
        return [(kind, tuple(v * k for v in box)) for kind, box in boxes]
    return Annotated(a.path, scaled(a.boxes), scaled(a.ignored))


def on_box(find: tuple, box: tuple) -> bool:
    """Whether a find lies on an annotated box: IoU 0.3, or its centre in the box and at most three times its size
    (a loose box around a small face still finds it; one of half the picture does not)."""
    return iou(find, box) >= 0.3 or (centre_in(find, box) and side(find) <= 3 * side(box)) or \
        (centre_in(box, find) and side(find) <= 3 * side(box))


def paired(finds: list[tuple], boxes: list[tuple]) -> tuple[int, int]:
    """How many ``boxes`` a find lies on (each box found once), and how many finds lie on none."""
    left, hit, false = list(boxes), 0, 0
    for f in finds:
        box = next((b for b in left if on_box(f, b)), None)
        if box is None:
            false += 1
        else:
            left.remove(box)
            hit += 1
    return hit, false


def moved(box: Box, look: str, size: tuple[int, int], new: tuple[int, int]) -> Box:
    """Where ``box`` of a photo of ``size`` lies on its copy ``look`` of size ``new``."""
    return LOOKS[look][1](box, size, new)


def _count_beside(counts: dict, in_colour: list, found: list, look: str, size: tuple[int, int],
                  new: tuple[int, int]) -> None:
    """Adds to ``counts`` (kind → colour's finds, kept there too, kept elsewhere) one photo's look beside its colour
    search: ``in_colour`` what the stage keeps on the photo, ``found`` on the look's copy of size ``new``."""
    for kind in KINDS:
        there = [moved(d.box, look, size, new) for d in in_colour if d.kind == kind]
        hit, elsewhere = paired([d.box for d in found if d.kind == kind], there)
        t = counts[kind]
        t[0], t[1], t[2] = t[0] + len(there), t[1] + hit, t[2] + elsewhere


def lost(in_colour: list, found: list) -> list:
    """The hands of ``in_colour`` (what the stage keeps on a photo) on which no hand of ``found`` (what it keeps on
    a copy that moves nothing: grey) lies."""
    return [d for d in in_colour if d.kind == "hand"
            and not any(on_box(f.box, d.box) for f in found if f.kind == "hand")]


def flags_at(joints: HandJoints, copy: Image.Image, hands: list) -> list[float]:
    """The hand landmark model's flag on ``copy`` at the crop each of ``hands``' joints give (a hand without the
    landmark model's 21 joints, a YOLO model's, is left out)."""
    pixels = pixels_of(copy)
    return [joints.settle(pixels, d.landmarks)[1] for d in hands if len(d.landmarks) == 21]


def lost_report(flags: list[float]) -> list[str]:
    """The report's lines on the hands grey loses, by the landmark model's flag there."""
    if not flags:
        return ["", "Grey loses no hand that colour keeps."]
    sure = sum(f >= SURE for f in flags)
    fair = sum(SETTLED <= f < SURE for f in flags)
    return ["", f"Hands colour keeps that grey loses: {len(flags)}. The hand landmark model on the grey copy, at the "
            f"crop the colour find's joints give, is sure of {sure} (≥ {SURE}), fairly sure of {fair} "
            f"({SETTLED}–{SURE}) and unsure of {len(flags) - sure - fair}: the first are hands the grey search found "
            "no place for, the last hands the model does not see in grey."]


def _summary(looks: list[str], boxed: set, totals: dict, beside: dict, times: dict) -> list[str]:
    """The report's tables of looks: boxes found and false finds, and each look beside the photos in colour."""
    out = ["", "| look | faces found | false faces | hands found | false hands | ms a photo (median) |",
           "|---|---|---|---|---|---|"]
    for look in looks:
        row = []
        for kind in KINDS:
            boxes, hit, false = totals[look][kind]
            row += [f"{hit}/{boxes} ({hit / boxes:.0%})", str(false)] if kind in boxed else \
                ["none boxed", f"{false} found"]
        out.append(f"| {look} | " + " | ".join(row) + f" | {statistics.median(times[look]):.0f} |")
    if "colour" in looks:
        out += ["", "Beside the photos in colour: of the faces and hands the stage keeps on a photo, those it keeps "
                "where they are on the look's copy too, and those it keeps elsewhere on it:", "",
                "| look | faces kept where colour keeps them | faces elsewhere | hands kept where colour keeps them "
                "| hands elsewhere |", "|---|---|---|---|---|"]
        for look in (look for look in looks if look != "colour"):
            row = []
            for kind in KINDS:
                there, hit, elsewhere = beside[look][kind]
                row += [f"{hit}/{there}" + (f" ({hit / there:.0%})" if there else ""), str(elsewhere)]
            out.append(f"| {look} | " + " | ".join(row) + " |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("xml", nargs="+", type=Path, help="imglab XML files (the photos beside them)")
    ap.add_argument("--looks", default=",".join(k for k in LOOKS if k not in ASKED_ONLY),
                    help=f"of {', '.join(LOOKS)} (all but {', '.join(ASKED_ONLY)} unless given)")
    ap.add_argument("--label", default="face", choices=KINDS, help="the kind of a box without a label")
    ap.add_argument("--side", type=int, default=0, help="resize each photo first to this long side (px)")
    args = ap.parse_args(argv)
    looks = [look.strip() for look in args.looks.split(",") if look.strip()]
    if any(look not in LOOKS for look in looks):
        ap.error(f"--looks: each of {', '.join(LOOKS)} (got {args.looks})")
    todo = []
    for xml in args.xml:
        try:
            todo += read(xml, args.label)
        except (OSError, ET.ParseError) as exc:
            print(f"{xml}: not an imglab XML file that can be read ({exc})", file=sys.stderr)
            return 2
    if not todo:
        print("no annotated photo found", file=sys.stderr)
        return 2
    mesh = FaceMesh()
    detector = warm(Detector(settings()), todo[0].path, mesh)
    joints = HandJoints(SHIPPED["hand"]) if "grey" in looks and "colour" in looks else None
    grey_lost: list[float] = []  # the landmark model's flags on the grey copies at the hands grey loses
    name, flags = cpu()
    lines = ["# Detection on annotated photos", "",
             f"`python -m bench.annotated {' '.join(str(x) for x in args.xml)}"
             + (f" --side {args.side}" if args.side else "") + f"`, CPU: {name}, {' '.join(flags)}. "
             f"{len(todo)} photos; boxes found of those annotated, and finds on no box (false, or not annotated).",
             "", "| photo | size | " + " | ".join(f"{look}: faces, hands" for look in looks) + " |",
             "|---|---|" + "---|" * len(looks)]
    boxed = {k for a in todo for k, _ in a.boxes}  # kinds with boxes: the others' finds are only counted
    totals = {look: {k: [0, 0, 0] for k in KINDS} for look in looks}  # boxes, found, false
    beside = {look: {k: [0, 0, 0] for k in KINDS} for look in looks}  # colour's finds, kept there too, elsewhere
    times: dict[str, list[float]] = {look: [] for look in looks}
    panels = []
    for a in todo:
        image = Image.open(a.path).convert("RGB")
        if args.side and max(image.size) != args.side:
            a = _resized(a, args.side / max(image.size))
            image = resized(image, args.side)
        cells = []
        in_colour = None  # what the stage keeps on the photo in colour, when that look is searched first
        for look in looks:
            copy = LOOKS[look][0](image)
            found, _ = kept(detector, copy, mesh)
            times[look].append(spent(detector))
            if look == "colour" and in_colour is None:
                in_colour = found
            if in_colour is not None:
                _count_beside(beside[look], in_colour, found, look, image.size, copy.size)
                if look == "grey" and joints is not None:
                    grey_lost += flags_at(joints, copy, lost(in_colour, found))
            ignored = [moved(b, look, image.size, copy.size) for _, b in a.ignored]
            cell = []
            for kind in KINDS:
                boxes = [moved(b, look, image.size, copy.size) for k, b in a.boxes if k == kind]
                finds = [d.box for d in found if d.kind == kind
                         and not any(on_box(d.box, b) for b in ignored)]
                hit, false = paired(finds, boxes)
                t = totals[look][kind]
                t[0], t[1], t[2] = t[0] + len(boxes), t[1] + hit, t[2] + false
                cell.append(f"{hit}/{len(boxes)}" + (f" +{false}" if false else "") if kind in boxed
                            else f"{false} {kind}{'s' if false != 1 else ''}")
            cells.append(", ".join(cell))
            if look == "colour":
                shown = image.copy()
                draw = ImageDraw.Draw(shown)
                for _, b in a.boxes:
                    draw.rectangle(b, outline=(255, 230, 0), width=2)
                for d in found:
                    draw.rectangle(d.box, outline=(0, 220, 0) if d.kind == "face" else (230, 0, 230), width=2)
                panels.append((a.path.name, shown))
        lines.append(f"| {a.path.name} | {image.width}×{image.height} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    detector.close()
    summary = _summary(looks, boxed, totals, beside, times) + (lost_report(grey_lost) if joints else [])
    OUT.mkdir(parents=True, exist_ok=True)
    sheet(panels, OUT / "annotated.png")
    lines += summary + ["", "bench/out/annotated.png: each photo as it is, the boxes yellow, the faces kept green, "
                        "the hands magenta."]
    (OUT / "annotated.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
