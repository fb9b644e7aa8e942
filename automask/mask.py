"""Detections → feathered masks.  Pure numpy and Pillow: testable without any model.

A mask is an 8-bit "L" image the size of the picture, 255 where the inpainter
may repaint and 0 where it must not.  Each box is padded, grown or shrunk by
``dilate`` px, filled, then blurred by ``feather`` px so the repaint fades into
its surroundings instead of ending on a hard edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from automask.detect import Detection


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


def select(detections: list[Detection], s: MaskSettings, size: tuple[int, int]) -> list[Detection]:
    """Confidence and area filters, then the top k; returned largest (or most confident) first."""
    image_area = float(size[0] * size[1])
    kept = [d for d in detections if d.score >= s.min_confidence
            and s.min_area_ratio <= d.area / image_area <= s.max_area_ratio]
    key = (lambda d: d.area) if s.rank_by == "area" else (lambda d: d.score)
    kept.sort(key=key, reverse=True)
    return kept[: s.top_k] if s.top_k else kept


def box_mask(size: tuple[int, int], boxes: list[tuple[float, float, float, float]], s: MaskSettings) -> Image.Image:
    """One mask holding every box, padded, dilated (or eroded) and feathered."""
    w, h = size
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    grow = s.padding + s.dilate
    for x0, y0, x1, y1 in boxes:
        bx0, by0, bx1, by1 = x0 - grow, y0 - grow, x1 + grow, y1 + grow
        if bx1 <= bx0 or by1 <= by0:
            continue  # eroded away
        draw.rectangle((max(0, round(bx0)), max(0, round(by0)), min(w, round(bx1)) - 1, min(h, round(by1)) - 1),
                       fill=255)
    if s.feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(s.feather))
    return mask


def masks_for(detections: list[Detection], s: MaskSettings, size: tuple[int, int]) -> list[Image.Image]:
    """One merged mask, or one mask per detection (``merge = false``)."""
    boxes = [d.box for d in detections]
    if not boxes:
        return []
    return [box_mask(size, boxes, s)] if s.merge else [box_mask(size, [b], s) for b in boxes]


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


COLOURS = {"face": (255, 64, 64), "hand": (64, 160, 255)}
HAND_CONNECTIONS = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
                    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (17, 18), (18, 19), (19, 20), (0, 17)]


def draw_detections(image: Image.Image, kept: list[Detection], dropped: list[Detection]) -> Image.Image:
    """The picture people check: kept boxes in colour with kind and score, dropped ones dashed grey."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 45)))
    for d in dropped:
        draw.rectangle(d.box, outline=(160, 160, 160), width=1)
    for d in kept:
        colour = COLOURS.get(d.kind, (255, 255, 0))
        draw.rectangle(d.box, outline=colour, width=width)
        label = f"{d.kind} {d.score:.2f}" + (f" {d.label}" if d.label else "")
        tx, ty = d.box[0], max(0, d.box[1] - font.size - 4)
        bbox = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle(bbox, fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour, font=font)
        for a, b in HAND_CONNECTIONS if len(d.landmarks) == 21 else []:
            draw.line((d.landmarks[a], d.landmarks[b]), fill=(255, 255, 255), width=max(1, width // 2))
        r = max(2, width)
        for x, y in d.landmarks:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return out
