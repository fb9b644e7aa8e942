"""Candidate passes for finding more hands, each measured against what the shipped detector already finds.

    PYTHONPATH=. python docs/decisions/automask_candidates.py [--wheel mediapipe-0.10.21-….whl]

On the photos of ``bench/automask.py`` (the development set and the repository's own), each candidate
adds the hands it finds that the shipped detector (default settings) did not.  An added hand counts as
true while the photo still misses hands by count, else as false.  Candidates:

* the hand landmarker's own thresholds at 0.3 and 0.1 (shipped: 0.2), selection after as always;
* a crop pyramid: the four corner crops of 60 % of the photo, each searched at 2× when small;
* test-time turns: the hand landmarker on a mirrored copy and on copies turned by −30°, 30° and 180°;
* body regions: a crop below and beside each face (5 face widths by 7 heights), enlarged to 512 px — since
  shipped as the detector's bodies pass, so the baseline here is the shipped detector without it;
* pose-guided regions: MediaPipe's pose detector and full-body landmark model (from the 0.10.21 wheel,
  run through OpenVINO's TFLite reader; fetched with pip unless ``--wheel`` is given) put a square on
  each wrist, toward its index and little finger; the hand landmarker searches it enlarged to 256 px;
* hands from the pose as MediaPipe Holistic finds them, without the palm detector: each wrist the pose
  model sees (visibility ≥ 0.1) gives a crop around the estimated middle finger (twice its distance from
  the wrist, enlarged 2.7×, fingers up), the re-crop model (``hand_recrop.tflite``) refines it, and the
  hand landmark model (``hand_landmark_full.tflite``) there gives 21 joints and its hand flag (≥ 0.5).

Writes bench/out/automask_candidates.md and bench/out/automask_candidates.png (each added hand in magenta).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from automask.detect import Detection, Detector, _same_as_any, nms
from automask.face_mesh import rotated_crop, to_image
from bench.automask import OUT, kept, photos, settings, sheet

POSE_FILES = {"pose_detection.tflite": "mediapipe/modules/pose_detection/pose_detection.tflite",
              "pose_landmark_full.tflite": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
              "hand_recrop.tflite": "mediapipe/modules/holistic_landmark/hand_recrop.tflite",
              "hand_landmark_full.tflite": "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"}
HAND_SCORE = 0.3


def _enlarged(image: Image.Image, box: tuple[float, float, float, float], side: int):
    x0, y0, x1, y1 = (round(v) for v in box)
    crop = image.crop((x0, y0, x1, y1))
    f = side / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * f)), max(1, round(crop.height * f))), Image.Resampling.LANCZOS)
    return crop, f, x0, y0


def hands_in(detector: Detector, image: Image.Image, boxes, side: int) -> list[Detection]:
    out = []
    for box in boxes:
        crop, f, x0, y0 = _enlarged(image, box, side)
        out += [d.moved(1 / f, x0, y0) for d in detector._pass(crop) if d.kind == "hand"]
    return out


def pyramid_boxes(image: Image.Image, share: float = 0.6):
    w, h = image.size
    cw, ch = round(w * share), round(h * share)
    return [(x0, y0, x0 + cw, y0 + ch) for x0 in (0, w - cw) for y0 in (0, h - ch)]


TURNS = (-30, 30, 180)  # degrees, Pillow's (counter-clockwise)


def turned_hands(detector: Detector, image: Image.Image) -> list[Detection]:
    """Hands found in a mirrored copy and in copies turned by ``TURNS``, their joints mapped back."""
    w, h = image.size
    out = [Detection("hand", (w - d.box[2], d.box[1], w - d.box[0], d.box[3]), d.score, "mirrored",
                     [(w - x, y) for x, y in d.landmarks])
           for d in detector._pass(ImageOps.mirror(image), faces=False)]
    for degrees in TURNS:
        turned = image.rotate(degrees, expand=True, resample=Image.Resampling.BILINEAR)
        t = math.radians(degrees)
        for d in detector._pass(turned, faces=False):
            pts = [((x - turned.width / 2) * math.cos(t) - (y - turned.height / 2) * math.sin(t) + w / 2,
                    (x - turned.width / 2) * math.sin(t) + (y - turned.height / 2) * math.cos(t) + h / 2)
                   for x, y in d.landmarks]
            xs, ys = [x for x, _ in pts], [y for _, y in pts]
            out.append(Detection("hand", (min(xs), min(ys), max(xs), max(ys)), d.score, f"turned {degrees}", pts))
    return out


class Pose:
    """BlazePose through OpenVINO: people (SSD with fixed anchors), then 39 landmarks per person."""

    def __init__(self, folder: Path):
        import openvino as ov

        core = ov.Core()
        self.det = core.compile_model(core.read_model(str(folder / "pose_detection.tflite")), "CPU")
        self.lmk = core.compile_model(core.read_model(str(folder / "pose_landmark_full.tflite")), "CPU")
        self.recrop = core.compile_model(core.read_model(str(folder / "hand_recrop.tflite")), "CPU")
        self.hand = core.compile_model(core.read_model(str(folder / "hand_landmark_full.tflite")), "CPU")
        anchors = []
        strides = [8, 16, 32, 32, 32]  # MediaPipe's pose_detection anchors: 2 per layer, layers of one stride merged
        i = 0
        while i < len(strides):
            j = i
            while j < len(strides) and strides[j] == strides[i]:
                j += 1
            fm = math.ceil(224 / strides[i])
            anchors += [((x + 0.5) / fm, (y + 0.5) / fm) for y in range(fm) for x in range(fm)
                        for _ in range(2 * (j - i))]
            i = j
        self.anchors = np.array(anchors)

    def people(self, image: Image.Image, threshold: float = 0.5) -> list[list[tuple[float, float]]]:
        """Each person's four keypoints (hips' centre, a point that scales the body, …) in image pixels."""
        s = 224 / max(image.size)
        w, h = round(image.width * s), round(image.height * s)
        canvas = Image.new("RGB", (224, 224))
        ox, oy = (224 - w) // 2, (224 - h) // 2
        canvas.paste(image.resize((w, h), Image.Resampling.BILINEAR), (ox, oy))
        r = self.det.infer_new_request({0: (np.asarray(canvas, dtype=np.float32) / 127.5 - 1.0)[None]})
        raw = r[self.det.outputs[0]][0]
        score = 1 / (1 + np.exp(-np.clip(r[self.det.outputs[1]][0, :, 0], -100, 100)))
        found: list[tuple[tuple, list]] = []
        for i in np.argsort(-score):
            if score[i] < threshold:
                break
            ax, ay = self.anchors[i]
            cx, cy, bw, bh = raw[i, 0] + ax * 224, raw[i, 1] + ay * 224, raw[i, 2], raw[i, 3]
            box = ((cx - bw / 2 - ox) / s, (cy - bh / 2 - oy) / s, (cx + bw / 2 - ox) / s, (cy + bh / 2 - oy) / s)
            if all(_iou(box, b) < 0.3 for b, _ in found):
                kps = [((raw[i, 4 + 2 * k] + ax * 224 - ox) / s, (raw[i, 5 + 2 * k] + ay * 224 - oy) / s)
                       for k in range(4)]
                found.append((box, kps))
        return [k for _, k in found]

    def _landmarks(self, image: Image.Image, kps) -> tuple[np.ndarray, np.ndarray]:
        """The person's 39 landmarks in image pixels, and the model's rows (x, y, z, visibility, presence)."""
        (x0, y0), (x1, y1) = kps[0], kps[1]
        side = 2.5 * math.hypot(x1 - x0, y1 - y0)  # MediaPipe's body crop: twice the radius, then ×1.25
        angle = math.atan2(y1 - y0, x1 - x0) + math.pi / 2
        crop, affine = rotated_crop(image, (x0, y0), side, angle, 256)
        r = self.lmk.infer_new_request({0: (np.asarray(crop, dtype=np.float32) / 255.0)[None]})
        p = r[self.lmk.outputs[0]].reshape(39, 5)
        return to_image(affine, p[:, :2]), p

    def wrist_boxes(self, image: Image.Image, kps) -> list[tuple[float, float, float, float]]:
        pts, p = self._landmarks(image, kps)
        out = []
        for wrist, pinky, index in ((15, 17, 19), (16, 18, 20)):
            if 1 / (1 + math.exp(-p[wrist, 3])) < 0.5:  # the wrist's visibility
                continue
            mid = (pts[pinky] + pts[index]) / 2
            reach = float(np.linalg.norm(mid - pts[wrist]))
            centre, half = pts[wrist] + 0.6 * (mid - pts[wrist]), max(2.0 * reach, 12.0)
            out.append((centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half))
        return out

    def holistic_hands(self, image: Image.Image, kps) -> list[Detection]:
        """Hands the way MediaPipe Holistic finds them from a person's pose (see the module's text)."""
        pts, p = self._landmarks(image, kps)
        out = []
        for wrist, pinky, index in ((15, 17, 19), (16, 18, 20)):
            if 1 / (1 + math.exp(-p[wrist, 3])) < 0.1:
                continue
            middle = (2 * pts[index] + pts[pinky]) / 3
            side, angle = 2 * 2.7 * float(np.linalg.norm(middle - pts[wrist])), _up(middle - pts[wrist])
            if side < 4:
                continue
            crop, affine = rotated_crop(image, tuple(middle), side, angle, 256)
            r = self.recrop.infer_new_request({0: (np.asarray(crop, dtype=np.float32) / 255.0)[None]})
            q = to_image(affine, r[self.recrop.outputs[0]].reshape(2, 2))  # the hand's centre, a point that scales it
            side, angle = 2 * float(np.linalg.norm(q[1] - q[0])), _up(q[1] - q[0])
            centre = q[0] + 0.1 * side * np.array([math.sin(angle), -math.cos(angle)])
            if side < 4:
                continue
            crop, affine = rotated_crop(image, tuple(centre), side, angle, 224)
            r = self.hand.infer_new_request({0: (np.asarray(crop, dtype=np.float32) / 255.0)[None]})
            flag = float(r[self.hand.outputs[1]].ravel()[0])  # already a probability
            joints = to_image(affine, r[self.hand.outputs[0]].reshape(21, 3)[:, :2])
            (x0, y0), (x1, y1) = joints.min(axis=0), joints.max(axis=0)
            out.append(Detection("hand", (x0, y0, x1, y1), flag, "holistic", [tuple(j) for j in joints]))
        return out


def _up(v) -> float:
    """rotated_crop's angle that turns the crop's up along ``v``."""
    return math.atan2(float(v[0]), -float(v[1]))


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def pose_folder(wheel: Path | None, tmp: Path) -> Path:
    if wheel is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "automask" / "models"))
        from extract import fetch_wheel

        wheel = fetch_wheel(tmp)
    with zipfile.ZipFile(wheel) as whl:
        for name, member in POSE_FILES.items():
            (tmp / name).write_bytes(whl.read(member))
    return tmp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", type=Path, help="a mediapipe 0.10.21 wheel (else pip downloads it)")
    args = ap.parse_args(argv)
    todo, note = photos()
    # The baseline is the shipped detector without its bodies pass, which is measured here as a candidate.
    base_detector = Detector(dataclasses.replace(settings(), body_regions=False))
    shipped = Detector(settings())
    with tempfile.TemporaryDirectory() as tmp:
        pose = Pose(pose_folder(args.wheel, Path(tmp)))
        candidates = {
            # each detector is built once, when the table is made (B008 is the point here)
            "landmarker thresholds 0.3": lambda img, found, d=Detector(  # noqa: B008
                dataclasses.replace(settings(), hand_confidence=0.3, body_regions=False)): d.detect(img),  # noqa: B008
            "landmarker thresholds 0.1": lambda img, found, d=Detector(  # noqa: B008
                dataclasses.replace(settings(), hand_confidence=0.1, body_regions=False)): d.detect(img),  # noqa: B008
            "crop pyramid": lambda img, found: hands_in(base_detector, img, pyramid_boxes(img), 768),
            "mirrored and turned copies (±30°, 180°)": lambda img, found: turned_hands(base_detector, img),
            "body regions below faces (the shipped bodies pass; ms: every pass)":
                lambda img, found: shipped.detect(img),
            "pose-guided wrist regions": lambda img, found: hands_in(
                base_detector, img, [b for k in pose.people(img) for b in pose.wrist_boxes(img, k)], 256),
            "hands from the pose, as Holistic (re-crop, landmark model)": lambda img, found: [
                h for k in pose.people(img) for h in pose.holistic_hands(img, k) if h.score >= 0.5],
        }
        rows = {name: {"true": 0, "false": 0, "ms": [], "lost": 0} for name in candidates}
        panels = []
        for p in todo:
            image = Image.open(p.path).convert("RGB")
            found, _ = kept(base_detector, image)
            base_hands = [d for d in found if d.kind == "hand"]
            for name, run in candidates.items():
                t0 = time.perf_counter()
                theirs = [d for d in run(image, found) if d.kind == "hand" and d.score >= HAND_SCORE]
                rows[name]["ms"].append((time.perf_counter() - t0) * 1000)
                added = [d for d in nms(theirs, 0.4) if not _same_as_any(d, base_hands)]
                missing = max(0, p.hands - len(base_hands))
                if added:  # counts can call a wrong find true: the picture shows where each one is
                    panel = image.copy()
                    for d in added:
                        ImageDraw.Draw(panel).rectangle(d.box, outline=(255, 0, 255), width=max(2, image.width // 150))
                    panels.append((f"{name}: {p.path.name}", panel))
                rows[name]["true"] += min(len(added), missing)
                rows[name]["false"] += max(0, len(added) - missing)
                if name.startswith("landmarker"):  # a whole detector of its own: also what it loses
                    rows[name]["lost"] += sum(not _same_as_any(d, nms(theirs, 0.4)) for d in base_hands)
    expected = sum(p.hands for p in todo)
    base = sum(min(p.hands, sum(d.kind == "hand" for d in kept(base_detector, Image.open(p.path).convert("RGB"))[0]))
               for p in todo)
    lines = ["# Candidate passes for hands", "", "`PYTHONPATH=. python docs/decisions/automask_candidates.py`", "",
             f"{len(todo)} photos, {expected} hands; the shipped detector finds {base}. "
             "Added: hands a candidate finds that the shipped detector did not (true while the photo still "
             "misses hands, by count).", ""]
    if note:
        lines += [note, ""]
    lines += ["| candidate | added, true | added, false | shipped finds it loses | ms per photo (median) |",
              "|---|---|---|---|---|"]
    for name, r in rows.items():
        lost = str(r["lost"]) if name.startswith("landmarker") else "–"
        lines.append(f"| {name} | {r['true']} | {r['false']} | {lost} | {float(np.median(r['ms'])):.0f} |")
    OUT.mkdir(parents=True, exist_ok=True)
    lines += ["", "Each added hand is drawn in bench/out/automask_candidates.png: look before believing a count."]
    (OUT / "automask_candidates.md").write_text("\n".join(lines) + "\n")
    if panels:
        sheet(panels, OUT / "automask_candidates.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
