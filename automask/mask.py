"""Detections → feathered masks.  Pure numpy and Pillow: testable without any model.

A mask is an 8-bit "L" image the size of the picture, 255 where the inpainter
may repaint and 0 where it must not.  Each shape is padded, grown or shrunk by
``dilate`` px, filled, then blurred by ``feather`` px so the repaint fades into
its surroundings instead of ending on a hard edge.  The shape is the detection's
box; for a hand with its 21 landmarks (``shape = "landmarks"``) the hand
itself: the palm and each finger drawn as bones of a finger's width, so the
background between spread fingers and around the wrist is left alone; for a
face (``shape = "oval"``) its outline from hairline to chin, so hair, ears and
background are not repainted; with a YOLO segmentation model (``shape = "segm"``) the outline it drew.
A detection without the shape asked for is masked by its box.  ``part_mask`` narrows a face's mask to its eyes
or its mouth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from automask.detect import Detection, containment
from automask.found import segm_outline
from automask.skeleton import CONNECTIONS, draw_hand


@dataclass(frozen=True)
class MaskSettings:
    """One kind's filters and mask shape (``[automask.face]`` / ``[automask.hand]`` in pipeline.toml)."""

    enabled: bool = True
    min_confidence: float = 0.5
    top_k: int = 0
    rank_by: Literal["area", "confidence"] = "area"
    min_area_ratio: float = 0.0
    max_area_ratio: float = 1.0
    padding: int = 8
    dilate: int = 4
    feather: float = 4.0
    merge: bool = True
    shape: Literal["box", "landmarks", "oval", "segm"] = "box"


def select(detections: list[Detection], s: MaskSettings, size: tuple[int, int]) -> list[Detection]:
    """Confidence and area filters, then the top k; returned largest (or most confident) first."""
    image_area = float(size[0] * size[1])
    kept = [d for d in detections if d.score >= s.min_confidence
            and s.min_area_ratio <= d.area / image_area <= s.max_area_ratio]
    key = (lambda d: d.area) if s.rank_by == "area" else (lambda d: d.score)
    kept.sort(key=key, reverse=True)
    return kept[: s.top_k] if s.top_k else kept


def faces_on_hands(faces: list[Detection], hands: list[Detection], inside: float = 0.7) -> list[Detection]:
    """The face finds that are a hand's knuckles or thumb: ones the face landmark model does not see as a face
    (no outlines) that lie mostly (``inside``) within a larger hand found with its 21 joints.  Skin-coloured
    knuckles are the face detectors' usual mistake on close-ups of hands; the landmarker's joints there, and the
    landmark model's refusal, outweigh a face score near the threshold.  A real face behind a hand keeps its
    outlines (the landmark model sees it) and stays."""
    return [f for f in faces if not f.outlines and any(
        len(h.landmarks) == 21 and h.area > f.area and containment(f.box, h.box) >= inside for h in hands)]


def box_mask(size: tuple[int, int], boxes: list[tuple[float, float, float, float]], s: MaskSettings) -> Image.Image:
    """One mask holding every box, padded, dilated (or eroded) and feathered."""
    return shape_mask(size, [Detection("box", b, 1.0, "") for b in boxes], s)


def shape_mask(size: tuple[int, int], detections: list[Detection], s: MaskSettings) -> Image.Image:
    """One mask holding every detection's shape (see the module's text), grown by padding + dilate, feathered."""
    w, h = size
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    grow = s.padding + s.dilate
    polygons = []
    for d in detections:
        if s.shape == "landmarks" and len(d.landmarks) == 21:
            draw_hand(draw, d.landmarks, grow)
            continue
        if s.shape == "oval" and d.outlines.get("oval"):
            polygons += d.outlines["oval"]
            continue
        if s.shape == "segm" and d.outlines.get("segm"):  # a segmentation model's own outline of it
            polygons += d.outlines["segm"]
            continue
        x0, y0, x1, y1 = d.box
        bx0, by0, bx1, by1 = x0 - grow, y0 - grow, x1 + grow, y1 + grow
        if bx1 <= bx0 or by1 <= by0:
            continue  # eroded away
        draw.rectangle((max(0, round(bx0)), max(0, round(by0)), min(w, round(bx1)) - 1, min(h, round(by1)) - 1),
                       fill=255)
    if polygons:
        mask = Image.fromarray(np.maximum(np.asarray(mask), polygon_mask(size, polygons, grow)))
    if s.feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(s.feather))
    return mask


def polygon_mask(size: tuple[int, int], polygons: list[list[tuple[float, float]]], grow: float) -> np.ndarray:
    """Filled polygons, grown (or shrunk, for a negative ``grow``) by ``grow`` px with a round brush."""
    import cv2

    out = np.zeros((size[1], size[0]), dtype=np.uint8)
    cv2.fillPoly(out, [np.round(np.asarray(p, dtype=np.float64)).astype(np.int32) for p in polygons if len(p) >= 3],
                 255)
    r = int(round(abs(grow)))
    if r:
        brush = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        out = cv2.dilate(out, brush) if grow > 0 else cv2.erode(out, brush)
    return out


PART_PADDING = 0.06  # a face part's mask reaches this share of the face's width beyond the part


def part_mask(size: tuple[int, int], faces: list[Detection], part: str, s: MaskSettings) -> Image.Image:
    """The eyes (with their brows) or the mouth of each face, padded by a share of the face's width (the
    part's own scale) plus ``dilate``, and feathered: for edits that must keep the person."""
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    for d in faces:
        if d.outlines.get(part):
            grow = PART_PADDING * (d.box[2] - d.box[0]) + s.dilate
            mask = np.maximum(mask, polygon_mask(size, d.outlines[part], grow))
    out = Image.fromarray(mask)
    return out.filter(ImageFilter.GaussianBlur(s.feather)) if s.feather > 0 else out


COLOURS = {"face": (255, 64, 64), "hand": (64, 160, 255), "face-eyes": (255, 210, 0), "face-mouth": (255, 120, 220)}
PERSON = (120, 220, 120)  # a person model's people in the detections picture


def masks_for(detections: list[Detection], s: MaskSettings, size: tuple[int, int]) -> list[Image.Image]:
    """One merged mask, or one mask per detection (``merge = false``)."""
    if not detections:
        return []
    return [shape_mask(size, detections, s)] if s.merge else [shape_mask(size, [d], s) for d in detections]


def user_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A user-drawn mask (white = edit) as an L mask at image size."""
    if mask.mode in ("RGBA", "LA") and mask.getchannel("A").getextrema()[0] < 255:
        # Painted on a transparent layer: what is painted is the mask.
        alpha = mask.getchannel("A")
        grey = mask.convert("L")
        mask = Image.fromarray(np.minimum(np.asarray(alpha), np.asarray(grey)))
    else:
        mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    return mask


def draw_detections(image: Image.Image, kept: list[Detection], dropped: list[Detection],
                    masks: list[tuple[str, Image.Image]] = (), people: list[Detection] = ()) -> Image.Image:
    """The picture people check: what each mask will repaint (its outline, where the feathered mask
    reaches half strength) in its kind's colour, kept boxes with kind and score, dropped ones thin grey with
    theirs and the word "dropped", and the people a person model found (their outline, or box), thin, that
    bound where hands are kept."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 45)))
    for kind, mask in masks:
        inside = mask.point(lambda v: 255 if v >= 128 else 0)
        edge = inside.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(2 * (width // 2) + 1))
        out.paste(COLOURS.get(kind, (255, 255, 0)), mask=edge)
    small = ImageFont.load_default(size=max(10, round(font.size * 0.75)))
    for d in people:
        for poly in segm_outline(d) or [
                [(d.box[0], d.box[1]), (d.box[2], d.box[1]), (d.box[2], d.box[3]), (d.box[0], d.box[3])]]:
            draw.line([*map(tuple, poly), tuple(poly[0])], fill=PERSON, width=1)
        label = f"person {d.score:.2f}"
        tx, ty = d.box[0], max(0, d.box[1] - small.size - 3)
        draw.rectangle(draw.textbbox((tx, ty), label, font=small), fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=PERSON, font=small)
    for d in dropped:  # found, then not kept (too small, too unsure, or one thing seen twice): said so, in grey
        draw.rectangle(d.box, outline=(160, 160, 160), width=1)
        label = f"{d.kind} {d.score:.2f} dropped"
        tx, ty = d.box[0], max(0, d.box[1] - small.size - 3)
        draw.rectangle(draw.textbbox((tx, ty), label, font=small), fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=(160, 160, 160), font=small)
    for d in kept:
        colour = COLOURS.get(d.kind, (255, 255, 0))
        draw.rectangle(d.box, outline=colour, width=max(1, width // 2))
        label = f"{d.kind} {d.score:.2f}" + (f" {d.label}" if d.label else "")
        tx, ty = d.box[0], max(0, d.box[1] - font.size - 4)
        bbox = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle(bbox, fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour, font=font)
        for a, b in CONNECTIONS if len(d.landmarks) == 21 else []:
            draw.line((d.landmarks[a], d.landmarks[b]), fill=(255, 255, 255), width=max(1, width // 2))
        r = max(2, width)
        for x, y in d.landmarks:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return out
