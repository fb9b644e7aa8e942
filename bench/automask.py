"""Detection benchmark: what is found on each photo against what is there, and the time of each pass.

    python -m bench.automask [--repeat 3]

Uses the shipped models with the default settings of pipeline.toml on two sets of photos: the
development set beside the project (../shared/data/faces-hands-dev, counted in its expected.json; left
out with a note where the folder is absent) and the repository's own test photos.  For each photo:
expected, found, missed and false faces and hands (by count: false = found beyond what is there), at the
photo's size and on a 4× Lanczos-enlarged copy (a large image must not invent faces), and the milliseconds
of each pass.  Then recall and precision (by count per photo) and milliseconds per image with every photo
resized to a long side of 512, 1024 and 4096 px, and hand recall on the development set alone.  Last,
people far away: each development photo scaled small on a 1024² frame, searched with and without the bodies
pass; copies of every photo (mirrored, turned 90°, grey, darker) searched with and without the hands-behind
pass, which must add no hand that is not there; more copies (turned 30° and −45°, JPEG, grain); enlarged copies
(2–4×, Lanczos, bicubic, sharpened as an upscaler's output, and 4× by polishd's own upscaler), which must keep what
the photo keeps and add nothing;
faces far away (each photo small on a frame of noise, at 1024 and 640 px, in colour and grey); and every photo
and copy in colour, grey, sepia and as a faded print.
Writes bench/out/automask.md, bench/out/automask.png (every photo's detections and mask outlines, as
10-detections.png draws them), bench/out/automask_far.png (people far away in a large frame, where the
bodies pass finds their hands), bench/out/automask_far_faces.png (faces far away, grey) and
bench/out/automask_grey.png (every photo with hands, grey).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from automask.detect import Detector, DetectorSettings, centre_in, iou
from automask.face_mesh import FaceMesh
from automask.mask import draw_detections, faces_on_hands, masks_for, select
from bench.kit.machine import cpu
from bench.kit.pipeline import DEV
from stages.automask import HAND_MODEL_CONFIDENCE, AutomaskConfig, select_faces

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
# The repository's photos, counted by eye: the astronaut's hands are out of the frame; the camera
# man's two gloved hands hold the camera.
OWN = {"astronaut.png": {"faces": 1, "hands": 0}, "camera.png": {"faces": 1, "hands": 2}}


def settings() -> DetectorSettings:
    c = AutomaskConfig()
    return DetectorSettings(face_models=c.face_models, num_hands=c.num_hands, upsample_below=c.upsample_below,
                            tile_above=c.tile_above, nms_iou=c.nms_iou, body_regions=c.body_search,
                            hands_behind=c.hands_behind, poses=c.pose_search,
                            min_confidence=min(c.face.min_confidence, c.hand.min_confidence),
                            hand_confidence=min(c.hand.min_confidence, HAND_MODEL_CONFIDENCE))


@dataclass
class Photo:
    path: Path
    faces: int
    hands: int


def photos() -> tuple[list[Photo], str]:
    own = [Photo(REPO / "tests" / "data" / name, n["faces"], n["hands"]) for name, n in OWN.items()]
    if not (DEV / "expected.json").is_file():
        return own, f"The development set ({DEV}) is absent: only the repository's photos were measured."
    expected = json.loads((DEV / "expected.json").read_text())
    dev = [Photo(DEV / name, n["faces"], n["hands"]) for name, n in sorted(expected.items())
           if not name.startswith("_")]
    return dev + own, ""


def kept(detector: Detector, image: Image.Image, mesh: FaceMesh | None = None) -> tuple[list, list]:
    """What the stage keeps with the default [automask.face] / [automask.hand] filters, and all it found;
    with ``mesh``, the kept faces' outlines too (timed as the pass "face mesh"), and faces that are a hand's
    knuckles dropped, as the stage does."""
    cfg = AutomaskConfig()
    found = detector.detect(image)
    out = []
    out += select_faces([d for d in found if d.kind == "face"], cfg.face, image.size, image, mesh)
    out += select([d for d in found if d.kind == "hand"], cfg.hand, image.size)
    if mesh is not None:
        with detector._timed("face mesh"):
            for d in out:
                if d.kind == "face":
                    d.outlines = mesh.outlines(image, d)
        on_hands = faces_on_hands([d for d in out if d.kind == "face"], [d for d in out if d.kind == "hand"])
        out = [d for d in out if d not in on_hands]
    return out, found


def warm(detector: Detector, photo: Path, mesh: FaceMesh | None = None) -> Detector:
    """The detector after a search of ``photo`` in colour and in grey: a model's first run, and the palm
    detector's loading with the first grey picture, are not a search's time."""
    image = Image.open(photo).convert("RGB")
    for look in (image, ImageOps.grayscale(image).convert("RGB")):
        kept(detector, look, mesh)
    return detector


def spent(detector: Detector) -> float:
    """The milliseconds the last image took: the search as the clock saw it (faces and hands run side by side),
    and the face mesh after it."""
    return detector.elapsed + detector.timings.get("face mesh", 0.0)


def count(dets: list, kind: str) -> int:
    return sum(d.kind == kind for d in dets)


def resized(image: Image.Image, long_side: int) -> Image.Image:
    f = long_side / max(image.size)
    return image.resize((max(1, round(image.width * f)), max(1, round(image.height * f))), Image.Resampling.LANCZOS)


def sheet(panels: list[tuple[str, Image.Image]], path: Path, side: int = 300, cols: int = 3) -> None:
    rows = (len(panels) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (side + 8), rows * (side + 24)), "white")
    for i, (label, im) in enumerate(panels):
        im = im.copy()
        im.thumbnail((side, side))
        x, y = (i % cols) * (side + 8), (i // cols) * (side + 24)
        canvas.paste(im, (x, y + 20))
        ImageDraw.Draw(canvas).text((x + 2, y + 4), label, fill="black")
    canvas.save(path)


FAR_WIDTHS = (200, 320, 500, 640)


def _hands_on(found: list, box: tuple[int, int, int, int]) -> int:
    """The hands among ``found`` whose centre lies in ``box``."""
    return sum(d.kind == "hand" and centre_in(d.box, box) for d in found)


def far_people(todo: list[Photo]) -> list[str]:
    """People far away in a large frame: each photo with people, scaled to a few widths and pasted on a 1024²
    frame (the repository's camera.png enlarged), searched with and without the bodies pass, in colour and grey;
    the hands counted are those found on the photo."""
    frame = Image.open(REPO / "tests" / "data" / "camera.png").convert("RGB").resize((1024, 1024))
    with_bodies, without = Detector(settings()), Detector(dataclasses.replace(settings(), body_regions=False))
    out = ["", "People far away: each photo with faces and hands, scaled to a width of "
           + ", ".join(map(str, FAR_WIDTHS)) + " px and pasted on a 1024² frame; hands found on the photo (of "
           "those in it) without / with the bodies pass, and the pass's ms:", "",
           "| photo | " + " | ".join(f"{w} px" for w in FAR_WIDTHS) + " |",
           "|---|" + "---|" * len(FAR_WIDTHS)]
    totals = [0, 0, 0, 0]  # hands there, found without, found with, false with
    grey = [0, 0, 0]  # the same pictures grey: found without, found with, false with
    panels: list[tuple[str, Image.Image]] = []
    for p in todo:
        if not (p.faces and p.hands) or p.path.parent != DEV:
            continue
        photo = Image.open(p.path).convert("RGB")
        cells = []
        for w in FAR_WIDTHS:
            small = photo.resize((w, round(photo.height * w / photo.width)), Image.Resampling.LANCZOS)
            image = frame.copy()
            image.paste(small, (100, 100))
            on = (100, 100, 100 + small.width, 100 + small.height)  # the frame, a cameraman, has hands of its own
            n_without = _hands_on(kept(without, image)[0], on)
            found_with = kept(with_bodies, image)[0]
            n_with = _hands_on(found_with, on)
            if w == FAR_WIDTHS[2]:
                region = (0, 0, min(1024, small.width + 200), min(1024, small.height + 200))
                drawn = draw_detections(image, found_with, [], [])
                panels.append((f"{p.path.name} at {w} px: {n_with} hand{'s' if n_with != 1 else ''}",
                               drawn.crop(region)))
            a, b = min(p.hands, n_without), min(p.hands, n_with)
            ms = with_bodies.timings.get("bodies")
            totals = [totals[0] + p.hands, totals[1] + a, totals[2] + b, totals[3] + max(0, n_with - p.hands)]
            cells.append(f"{a} / {b}" + (f" +{n_with - p.hands} false" if n_with > p.hands else "")
                         + (f" ({ms:.0f} ms)" if ms is not None else ""))
            grey_image = ImageOps.grayscale(image).convert("RGB")
            g_without, g_with = (_hands_on(kept(d, grey_image)[0], on) for d in (without, with_bodies))
            grey = [grey[0] + min(p.hands, g_without), grey[1] + min(p.hands, g_with),
                    grey[2] + max(0, g_with - p.hands)]
        plural = "s" if p.hands != 1 else ""
        out.append(f"| {p.path.name} ({p.hands} hand{plural}) | " + " | ".join(cells) + " |")
    with_bodies.close()
    without.close()
    if panels:
        OUT.mkdir(parents=True, exist_ok=True)
        sheet(panels, OUT / "automask_far.png")
        out += ["", f"bench/out/automask_far.png: each photo at {FAR_WIDTHS[2]} px, what the stage keeps."]
    if totals[0]:
        out += ["", f"In all: {totals[1]}/{totals[0]} hands without the bodies pass, {totals[2]}/{totals[0]} with it "
                f"({totals[3]} false with it); the same pictures grey: {grey[0]}/{totals[0]} without it, "
                f"{grey[1]}/{totals[0]} with it ({grey[2]} false with it)."]
    return out


COPIES = {"mirrored": ImageOps.mirror, "turned 90°": lambda im: im.rotate(90, expand=True),
          "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
          "darker": lambda im: Image.eval(im, lambda v: v * 3 // 5)}


def copies(todo: list[Photo], mesh: FaceMesh | None) -> list[str]:
    """Every photo with hands, changed as a picture can be (see ``COPIES``), searched with and without the
    hands-behind pass: what the pass adds there is measured apart from the photos it was built on."""
    with_behind, without = Detector(settings()), Detector(dataclasses.replace(settings(), hands_behind=False))
    out = ["", "Copies of each photo with hands: hands found (of those in the photo) without / with the hands-behind "
           "pass:", "", "| photo | " + " | ".join(COPIES) + " |", "|---|" + "---|" * len(COPIES)]
    totals = [0, 0, 0, 0]  # hands there, found without, found with, false with
    for p in todo:
        if not p.hands:
            continue
        photo = Image.open(p.path).convert("RGB")
        cells = []
        for change in COPIES.values():
            image = change(photo)
            n_without = count(kept(without, image, mesh)[0], "hand")
            n_with = count(kept(with_behind, image, mesh)[0], "hand")
            a, b = min(p.hands, n_without), min(p.hands, n_with)
            totals = [totals[0] + p.hands, totals[1] + a, totals[2] + b, totals[3] + max(0, n_with - p.hands)]
            cells.append(f"{a} / {b}" + (f" +{n_with - p.hands} false" if n_with > p.hands else ""))
        out.append(f"| {p.path.name} ({p.hands} hand{'s' if p.hands != 1 else ''}) | " + " | ".join(cells) + " |")
    with_behind.close()
    without.close()
    out += ["", f"In all: {totals[1]}/{totals[0]} hands without the hands-behind pass, {totals[2]}/{totals[0]} with "
            f"it ({totals[3]} false with it)."]
    return out


def jpeg(im: Image.Image, quality: int = 40) -> Image.Image:
    """The picture saved as a JPEG of ``quality`` and read back (its blocks and ringing)."""
    import io

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def grainy(im: Image.Image, sigma: float = 12.0) -> Image.Image:
    """The picture with sensor-like noise (Gaussian, ``sigma`` levels, each pixel and channel; a fixed seed)."""
    import numpy as np

    noise = np.random.default_rng(1).normal(0, sigma, (im.height, im.width, 3))
    return Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) + noise, 0, 255).astype("uint8"))


MORE = {"turned 30°": lambda im: im.rotate(30, expand=True, fillcolor=(128, 128, 128)),
        "turned −45°": lambda im: im.rotate(-45, expand=True, fillcolor=(128, 128, 128)),
        "JPEG at 40": jpeg, "grain": grainy,
        "grey, turned 30°": lambda im: ImageOps.grayscale(im).convert("RGB").rotate(30, expand=True,
                                                                                   fillcolor=(128, 128, 128))}


def more_copies(todo: list[Photo], mesh: FaceMesh | None) -> list[str]:
    """Every photo changed as no pass was built for (see ``MORE``): faces and hands found, of those there, and
    false finds (by count: more than there), with and without people's poses."""
    detectors = {"with": Detector(settings()), "without": Detector(dataclasses.replace(settings(), poses=False))}
    out = ["", "More copies of every photo (turned 30° and −45°, the corners filled grey; as a JPEG at quality 40; "
           "with grain of σ 12 levels; grey and turned 30°): faces and hands found (of those there) and false finds, "
           "without / with people's poses (their hands, and faces on their heads turned upright):", "",
           "| copy | faces | hands |", "|---|---|---|"]
    for name, change in MORE.items():
        cells = {k: {"face": [0, 0, 0], "hand": [0, 0, 0]} for k in detectors}  # there, found, false
        for p in todo:
            image = change(Image.open(p.path).convert("RGB"))
            for k, detector in detectors.items():
                found = kept(detector, image, mesh)[0]
                for kind, there in (("face", p.faces), ("hand", p.hands)):
                    n, c = count(found, kind), cells[k][kind]
                    c[0], c[1], c[2] = c[0] + there, c[1] + min(n, there), c[2] + max(0, n - there)
        row = [" / ".join(f"{c[1]}/{c[0]}" + (f" +{c[2]}" if c[2] else "")
                          for c in (cells["without"][kind], cells["with"][kind])) for kind in ("face", "hand")]
        out.append(f"| {name} | " + " | ".join(row) + " |")
        print(out[-1], flush=True)
    for detector in detectors.values():
        detector.close()
    return out


LANCZOS, BICUBIC = Image.Resampling.LANCZOS, Image.Resampling.BICUBIC


def _enlarged_by(k: int, how: Image.Resampling):
    return lambda im: im.resize((im.width * k, im.height * k), how)


def sharpened(im: Image.Image, k: int) -> Image.Image:
    """The picture enlarged ``k``× (Lanczos) and sharpened with an unsharp mask of radius ``k``: crisp edges and
    halos, as an upscaler's output has."""
    from PIL import ImageFilter

    return _enlarged_by(k, LANCZOS)(im).filter(ImageFilter.UnsharpMask(k, 150, 2))


ENLARGED = {"2× Lanczos": _enlarged_by(2, LANCZOS), "4× Lanczos": _enlarged_by(4, LANCZOS),
            "3× bicubic": _enlarged_by(3, BICUBIC), "4× bicubic": _enlarged_by(4, BICUBIC),
            "2× sharpened": lambda im: sharpened(im, 2), "3× sharpened": lambda im: sharpened(im, 3),
            "4× sharpened": lambda im: sharpened(im, 4),
            "4× sharpened, JPEG at 70": lambda im: jpeg(sharpened(im, 4), 70)}


UPSCALED = "4× polishd's upscaler (x4plus)"


def upscaler():
    """polishd's own upscaler as the upscale stage runs it by default (Real-ESRGAN x4plus, 4×), as a function of a
    picture; or None and why not (its weights come with a package: ``stages.esrgan.load``)."""
    try:
        from bench.upscale import Polishd

        up = Polishd("x4plus", threads=os.cpu_count() or 2)
    except Exception as exc:  # any reason it cannot run leaves its row out, said why
        return None, f"{type(exc).__name__}: {exc}"
    return (lambda im: Image.fromarray(up(im))), ""


def enlarged(todo: list[Photo], detector: Detector, mesh: FaceMesh | None) -> list[str]:
    """Every photo (at a long side of at most 1024 px) enlarged as upscalers and editors enlarge (see
    ``ENLARGED``), and by polishd's own upscaler (``upscaler``): the faces and hands kept that lie on what the photo
    itself keeps, of those, and the finds that do not (each counted on the photo, ``_matched``), with the median
    time, and the size it was searched at as a share of the copy's (``Detector._searched``: one with next to nothing in
    its finest octave is searched at the size it was enlarged from, not in tiles at full resolution, where texture made
    sharp and large looks like a hand more often)."""
    out = ["", "Enlarged copies of every photo (each at a long side of at most 1024 px, enlarged 2–4× with Lanczos or "
           "bicubic, or with Lanczos and an unsharp mask of radius k as an upscaler's sharp output, and that as a JPEG "
           "at 70, and 4× by polishd's own upscaler as the upscale stage runs it): faces and hands kept on what the "
           "photo itself keeps (of those), + finds not on one of them; the side it was searched at, of its own "
           "(median):",
           "", "| copy | faces | hands | searched at | ms (median) |", "|---|---|---|---|---|"]
    changes = dict(ENLARGED)
    up, why = upscaler()
    if up is not None:
        changes[UPSCALED] = up
    bases = []
    for p in todo:
        photo = Image.open(p.path).convert("RGB")
        photo = resized(photo, 1024) if max(photo.size) > 1024 else photo
        bases.append((p, photo, kept(detector, photo, mesh)[0]))
    totals = {"face": [0, 0, 0], "hand": [0, 0, 0]}
    for name, change in changes.items():
        cells, times, searched = {"face": [0, 0, 0], "hand": [0, 0, 0]}, [], []
        for p, photo, own in bases:
            image = change(photo)
            k = image.width / photo.width
            found = [d.moved(1 / k, 0, 0) for d in kept(detector, image, mesh)[0]]
            times.append(spent(detector))
            searched.append(detector.searched_size[0] / image.width)
            for kind in ("face", "hand"):
                mine, theirs = [d for d in found if d.kind == kind], [d for d in own if d.kind == kind]
                on = min(_matched(mine, theirs), len(theirs))
                for c in (cells[kind], totals[kind]):
                    c[0], c[1], c[2] = c[0] + len(theirs), c[1] + on, c[2] + len(mine) - on
                if len(mine) - on:
                    print(f"  {p.path.name}, {name}: {len(mine) - on} {kind}(s) not on the photo's; all its finds:",
                          [[round(v) for v in d.box] for d in mine], flush=True)
        out.append(f"| {name} | " + " | ".join(f"{c[1]}/{c[0]}" + (f" +{c[2]}" if c[2] else "")
                                               for c in cells.values())
                   + f" | {statistics.median(searched):.2f} | {statistics.median(times):.0f} |")
        print(out[-1], flush=True)
    out += ["", "In all: faces " + ", hands ".join(f"{c[1]}/{c[0]} on the photo's, {c[2]} not"
                                                  for c in totals.values()) + "."]
    if up is None:
        out += ["", f"(polishd's upscaler could not run here, so its row is left out: {why})"]
    return out


def group(todo: list[Photo], mesh: FaceMesh | None) -> list[str]:
    """A group: the development photos with people, cycled into a 3 × 3 collage of 1024², each shrunk to a third,
    searched in colour and grey; faces and hands found (of those there), and false finds (more than there), and the
    ms of a search (median of 3) with the passes that took longest."""
    people = [p for p in todo if p.faces and p.hands and p.path.parent == DEV]
    if not people:
        return []
    collage = Image.new("RGB", (1024, 1024), (120, 120, 120))
    there = {"face": 0, "hand": 0}
    for i in range(9):
        p = people[i % len(people)]
        photo = Image.open(p.path).convert("RGB")
        photo.thumbnail((330, 330), Image.Resampling.LANCZOS)
        collage.paste(photo, ((i % 3) * 341 + (341 - photo.width) // 2, (i // 3) * 341 + (341 - photo.height) // 2))
        there["face"] += p.faces
        there["hand"] += p.hands
    detector = Detector(settings())
    warm(detector, todo[0].path, mesh)
    out = ["", f"A group: the {len(people)} development photos with people cycled into a 3 × 3 collage of 1024² "
           f"({there['face']} faces, {there['hand']} hands), each a third of it; found (of those there), false finds, "
           "and ms a search (median of 3; the face mesh not counted), the longest passes:", "",
           "| look | faces | hands | ms | longest passes, ms |", "|---|---|---|---|---|"]
    panels: list[tuple[str, Image.Image]] = []
    for look, image in (("colour", collage), ("grey", ImageOps.grayscale(collage).convert("RGB"))):
        ms = []
        for _ in range(3):
            detector.detect(image)
            ms.append(detector.elapsed)
        found = kept(detector, image, mesh)[0]
        longest = sorted(detector.timings.items(), key=lambda kv: -kv[1])[:4]
        cells = [f"{min(count(found, k), n)}/{n}" + (f" +{count(found, k) - n}" if count(found, k) > n else "")
                 for k, n in there.items()]
        out.append(f"| {look} | {cells[0]} | {cells[1]} | {statistics.median(ms):.0f} | "
                   + ", ".join(f"{k} {v:.0f}" for k, v in longest) + " |")
        print(out[-1], flush=True)
        panels.append((f"{look}: {count(found, 'face')} faces, {count(found, 'hand')} hands",
                       draw_detections(image, found, [], [])))
    detector.close()
    OUT.mkdir(parents=True, exist_ok=True)
    sheet(panels, OUT / "automask_group.png", side=600, cols=2)
    return out + ["", "bench/out/automask_group.png: the group in colour and grey, and what the stage keeps."]


FACE_WIDTHS = (160, 240, 320, 500)
PLACES = ((300, 300), (292, 307), (311, 296))  # where on the frame: a few pixels apart, a borderline find goes
                                               # either way; counted over all three, it counts as what it is


def far_faces(todo: list[Photo], side: int = 1024) -> list[str]:
    """Faces of people far away, as in a group photo: each photo with faces scaled to a few widths and pasted on a
    1024² frame of plain noise at each of ``PLACES`` (the whole then scaled to ``side``), in colour and grey; faces
    found where the photo's own faces are (as found on the photo itself, in colour, moved and scaled with it),
    false finds (anywhere else), and ms."""
    import numpy as np

    rng = np.random.default_rng(0)
    frame = Image.fromarray(np.clip(rng.normal(0, 12, (1024, 1024, 3)) + (150, 140, 120), 0, 255).astype("uint8"))
    mesh = FaceMesh()
    detector = warm(Detector(settings()), todo[0].path, mesh)
    out = ["", "Faces far away: each photo with faces, scaled to a width of " + ", ".join(map(str, FACE_WIDTHS))
           + f" px and pasted on a 1024² frame of noise at {len(PLACES)} places a few px apart"
           + (f", the whole scaled to {side}²" if side != 1024 else "")
           + "; faces found where the photo's are (of those in it, at all places) in colour / in grey, and false "
           "finds elsewhere:",
           "",
           "| photo | " + " | ".join(f"{w} px" for w in FACE_WIDTHS) + " |", "|---|" + "---|" * len(FACE_WIDTHS)]
    totals = {"colour": [0, 0, 0], "grey": [0, 0, 0]}  # faces there, found, false
    times = []
    panels: list[tuple[str, Image.Image]] = []
    for p in todo:
        if not p.faces:
            continue
        photo = Image.open(p.path).convert("RGB")
        own = [d for d in kept(detector, photo, mesh)[0] if d.kind == "face"]
        cells = []
        for w in FACE_WIDTHS:
            cell = {"colour": [0, 0], "grey": [0, 0]}  # found, false
            for x, y in PLACES:
                image = frame.copy()
                image.paste(photo.resize((w, round(photo.height * w / photo.width)), Image.Resampling.LANCZOS), (x, y))
                image = image.resize((side, side), Image.Resampling.LANCZOS) if side != 1024 else image
                there = [d.moved(w / photo.width, x, y).moved(side / 1024, 0, 0) for d in own]
                for look, im in (("colour", image), ("grey", ImageOps.grayscale(image).convert("RGB"))):
                    faces = [d for d in kept(detector, im, mesh)[0] if d.kind == "face"]
                    times.append(spent(detector))
                    hit = min(_matched(faces, there), p.faces)
                    t = totals[look]
                    t[0], t[1], t[2] = t[0] + p.faces, t[1] + hit, t[2] + len(faces) - hit
                    cell[look] = [cell[look][0] + hit, cell[look][1] + len(faces) - hit]
                    if look == "grey" and w == FACE_WIDTHS[1] and side == 1024 and (x, y) == PLACES[0]:
                        shown = draw_detections(im, faces, [], []).crop((x - 50, y - 50, x + w + 50, y + w + 50))
                        panels.append((f"{p.path.name} at {w} px, grey: {len(faces)} face"
                                       + ("s" if len(faces) != 1 else ""), shown))
            cells.append(" / ".join(f"{n}" + (f" +{false}" if false else "") for n, false in cell.values()))
        out.append(f"| {p.path.name} ({p.faces} face{'s' if p.faces != 1 else ''} × {len(PLACES)}) | "
                   + " | ".join(cells) + " |")
    detector.close()
    if times:
        out += ["", "In all: " + "; ".join(f"{look} {t[1]}/{t[0]} ({t[2]} false)" for look, t in totals.items())
                + f"; {statistics.median(times):.0f} ms median per image, {max(times):.0f} ms slowest."]
    if panels:
        OUT.mkdir(parents=True, exist_ok=True)
        sheet(panels, OUT / "automask_far_faces.png")
        out += ["", f"bench/out/automask_far_faces.png: each photo at {FACE_WIDTHS[1]} px on the frame, grey, and "
                "the faces kept."]
    return out


def motion_blurred(im: Image.Image) -> Image.Image:
    """The picture smeared sideways over a 60th of its width, as a camera panning with a runner leaves it."""
    import cv2
    import numpy as np

    n = max(3, im.width // 60)
    kernel = np.zeros((n, n), np.float32)
    kernel[n // 2, :] = 1 / n
    return Image.fromarray(cv2.filter2D(np.asarray(im), -1, kernel, borderType=cv2.BORDER_REPLICATE))


CHANGES = {"as it is": lambda im: im, "mirrored": ImageOps.mirror, "turned 90°": lambda im: im.rotate(90, expand=True),
           "darker": lambda im: Image.eval(im, lambda v: v * 3 // 5), "1024 px": lambda im: resized(im, 1024),
           "motion blur": motion_blurred}
LOOKS = {"colour": lambda im: im, "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
         "sepia": lambda im: ImageOps.colorize(ImageOps.grayscale(im), (0, 0, 0), (255, 230, 191)),
         "faded print": lambda im: ImageOps.colorize(ImageOps.grayscale(im), (20, 10, 0), (255, 230, 190))}


def _matched(found: list, reference: list) -> int:
    """How many of ``found`` lie on a distinct one of ``reference``: their boxes' IoU at least 0.3, or one's centre
    inside the other, the find at most three times the size (a box of half the picture around a small face is
    not that face)."""
    def side(box) -> float:
        return max(box[2] - box[0], box[3] - box[1])

    left, n = list(reference), 0
    for d in found:
        hit = next((r for r in left if iou(d.box, r.box) >= 0.3 or centre_in(d.box, r.box)
                    or (centre_in(r.box, d.box) and side(d.box) <= 3 * side(r.box))), None)
        if hit is not None:
            left.remove(hit)
            n += 1
    return n


def tones(todo: list[Photo]) -> list[str]:
    """Every photo (and copies of it, see ``CHANGES``) in colour, grey, sepia and as a faded print (toned, its
    blacks lifted): hands found and false, so that a grey picture's recall is read beside the same pictures' in
    colour (the camera man is grey in all four).  Colour is counted (found, up to those there); the others by
    place: a hand is found where the colour copy's is, and a find elsewhere is false (a grey find of a hand the
    colour copy missed too)."""
    detector = warm(Detector(settings()), todo[0].path)
    out = ["", "Hands in colour, grey, sepia and as a faded print: every photo and its copies, hands found (of "
           "those there) and false finds (grey and toned: found where the same copy in colour has them, false "
           "elsewhere), and the ms per image (median, slowest):", "",
           "| look | " + " | ".join(CHANGES) + " | in all | recall | false | ms median | ms slowest |",
           "|---|" + "---|" * (len(CHANGES) + 5)]
    reference: dict[tuple[str, str], list] = {}
    panels = []
    for look, tone in LOOKS.items():
        cells, there, true, false, times = [], 0, 0, 0, []
        for name, change in CHANGES.items():
            e = t = f = 0
            for p in todo:
                image = tone(change(Image.open(p.path).convert("RGB")))
                found, _ = kept(detector, image)
                times.append(spent(detector))
                hands = [d for d in found if d.kind == "hand"]
                if look == "grey" and name == "as it is" and p.hands:
                    panels.append((f"{p.path.name}, grey: {len(hands)} of {p.hands} hands",
                                   draw_detections(image, hands, [], [])))
                if look == "colour":
                    reference[name, p.path.name] = hands
                    hit = min(len(hands), p.hands)
                else:
                    hit = min(_matched(hands, reference[name, p.path.name]), p.hands)
                e, t, f = e + p.hands, t + hit, f + len(hands) - hit
            cells.append(f"{t}/{e}" + (f" +{f}" if f else ""))
            there, true, false = there + e, true + t, false + f
        out.append(f"| {look} | " + " | ".join(cells) + f" | {true}/{there} | {true / there:.0%} | {false} | "
                   f"{statistics.median(times):.0f} | {max(times):.0f} |")
        print(out[-1], flush=True)
    detector.close()
    sheet(panels, OUT / "automask_grey.png")
    out += ["", "bench/out/automask_grey.png: each photo with hands, grey, and the hands kept."]
    return out


def drawn() -> Image.Image:
    """An illustration drawn here (nothing licensed of the kind is at hand): a flat-shaded character, big eyes, a
    small mouth, hair in one colour, and a raised four-fingered hand, on a plain backdrop."""
    from PIL import ImageDraw

    im = Image.new("RGB", (1024, 1024), (196, 222, 240))
    d = ImageDraw.Draw(im)
    skin, line, hair = (250, 214, 188), (60, 40, 40), (120, 70, 160)
    d.rectangle((330, 600, 700, 1024), fill=(230, 90, 90), outline=line, width=6)               # shirt
    d.ellipse((340, 200, 680, 600), fill=skin, outline=line, width=6)                           # face
    d.pieslice((320, 160, 700, 470), 180, 360, fill=hair, outline=line, width=6)                # hair
    for x in (420, 540):                                                                        # eyes
        d.ellipse((x, 360, x + 70, 450), fill="white", outline=line, width=5)
        d.ellipse((x + 15, 380, x + 55, 440), fill=(40, 90, 160))
        d.ellipse((x + 28, 388, x + 42, 402), fill="white")
    d.arc((470, 480, 550, 530), 20, 160, fill=line, width=6)                                    # mouth
    d.ellipse((720, 560, 860, 700), fill=skin, outline=line, width=6)                           # palm
    for i, x in enumerate((725, 760, 795, 830)):                                                # fingers
        top = 430 + (0 if i in (1, 2) else 30)
        d.rounded_rectangle((x, top, x + 30, 600), 15, fill=skin, outline=line, width=5)
    d.rounded_rectangle((680, 600, 740, 640), 18, fill=skin, outline=line, width=5)             # thumb
    return im


def illustration(detector: Detector, mesh: FaceMesh | None) -> list[str]:
    """What MediaPipe finds on ``drawn`` (the YOLO path's own run on it: ``bench.yolo``)."""
    image = drawn()
    found, _ = kept(detector, image, mesh)
    OUT.mkdir(parents=True, exist_ok=True)
    draw_detections(image, found, [], []).save(OUT / "automask_illustration.png")
    what = ", ".join(f"{d.kind} {d.score:.2f}" for d in found) or "nothing"
    return ["", f"An illustration drawn with PIL (a flat face with big eyes, a raised four-fingered hand): MediaPipe "
            f"keeps {what}; bench/out/automask_illustration.png."]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per image (the median is reported)")
    args = ap.parse_args(argv)
    cfg = AutomaskConfig()
    detector = Detector(settings())
    mesh = FaceMesh() if cfg.face.shape == "oval" or cfg.face.parts else None
    todo, note = photos()
    passes = ["people", "whole", "grey", "best palms", "poses", "2x", "tiles", "second look", "ninth palms", "bodies",
              "behind"]
    beside = ["faces", "people by faces", "heads", "best palms beside", "skin palms", "ninth palms beside"]
    name, flags = cpu()
    lines = ["# Detection benchmark (shipped MediaPipe models, default settings, CPU)", "",
             f"`python -m bench.automask`, CPU: {name}, {' '.join(flags)}. Counts are of what the stage keeps: "
             f"faces ≥ {cfg.face.min_confidence:.2f}, hands ≥ {cfg.hand.min_confidence:.2f}.", ""]
    if note:
        lines += [note, ""]
    lines += ["| photo | size | faces expected / found / missed / false | hands expected / found / missed / false "
              "| 4× copy: faces / hands found | ms, hands: " + " + ".join(passes) + " | ms, beside them on a thread "
              "of their own: " + " + ".join(beside) + " | ms in all (with the face mesh) |",
              "|---|---|---|---|---|---|---|---|"]
    panels = []
    warm(detector, todo[0].path, mesh)
    for p in todo:
        image = Image.open(p.path).convert("RGB")
        found, everything = kept(detector, image, mesh)
        timings, total = detector.timings, spent(detector)
        big, _ = kept(detector, image.resize((image.width * 4, image.height * 4), Image.Resampling.LANCZOS), mesh)
        cells = []
        for kind, expected in (("face", p.faces), ("hand", p.hands)):
            n = count(found, kind)
            cells.append(f"{expected} / {n} / {max(0, expected - n)} / {max(0, n - expected)}")
        ms, ms_beside = (" + ".join(f"{timings[k]:.0f}" if k in timings else "–" for k in names)
                         for names in (passes, beside))
        lines.append(f"| {p.path.name} | {image.width}×{image.height} | {cells[0]} | {cells[1]} | "
                     f"{count(big, 'face')} / {count(big, 'hand')} | {ms} | {ms_beside} | "
                     f"{total:.0f} |")
        print(lines[-1], flush=True)
        masks = []
        for kind in ("face", "hand"):
            masks += [(kind, m) for m in masks_for([d for d in found if d.kind == kind], getattr(cfg, kind),
                                                   image.size)]
        panels.append((f"{p.path.name}: {count(found, 'face')} faces, {count(found, 'hand')} hands",
                       draw_detections(image, found, [d for d in everything if d not in found], masks)))

    lines += ["", "Every photo resized to the long side given (Lanczos):", "",
              "| long side | face recall | face precision | hand recall | hand precision | ms per image (median) "
              "| ms, slowest image |", "|---|---|---|---|---|---|---|"]
    dev_lines: list[str] = []
    for side in (512, 1024, 4096):
        tally = {k: [0, 0, 0] for k in ("face", "hand")}  # expected, found, true
        times, hands_found, per_image = [], [], []
        for p in todo:
            image = resized(Image.open(p.path).convert("RGB"), side)
            mine = []
            for _ in range(1 if side > 1024 else args.repeat):
                found, _ = kept(detector, image, mesh)
                mine.append(spent(detector))
            times += mine
            per_image.append(mine)
            hands_found.append(count(found, "hand"))
            for kind, expected in (("face", p.faces), ("hand", p.hands)):
                n = count(found, kind)
                tally[kind][0] += expected
                tally[kind][1] += n
                tally[kind][2] += min(n, expected)
        cells = []
        for kind in ("face", "hand"):
            e, f, t = tally[kind]
            cells += [f"{t / e:.0%} ({t}/{e})" if e else "–", f"{t / f:.0%} ({t}/{f})" if f else "–"]
        slowest = max(statistics.median(t) for t in per_image)
        lines.append(f"| {side} | " + " | ".join(cells) + f" | {statistics.median(times):.0f} | {slowest:.0f} |")
        dev_hands = [(p.hands, min(p.hands, n)) for p, n in zip(todo, hands_found, strict=True) if p.path.parent == DEV]
        if dev_hands:
            e, t = sum(x for x, _ in dev_hands), sum(y for _, y in dev_hands)
            dev_lines.append(f"{side} px: {t}/{e} ({t / e:.0%})")
        print(lines[-1], flush=True)
    if dev_lines:
        lines += ["", "Hand recall on the development set alone (the photos not in the repository): "
                  + "; ".join(dev_lines) + "."]
    lines += far_people(todo)
    lines += group(todo, mesh)
    lines += copies(todo, mesh)
    lines += more_copies(todo, mesh)
    lines += enlarged(todo, detector, mesh)
    lines += far_faces(todo) + far_faces(todo, 640)
    lines += tones(todo)
    lines += illustration(detector, mesh)
    detector.close()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "automask.md").write_text("\n".join(lines) + "\n")
    sheet(panels, OUT / "automask.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
