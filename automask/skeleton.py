"""A hand's 21 joints as MediaPipe numbers them, and the hand they span drawn as a mask: pure geometry, shared by
detection (a found hand hidden before the second search), the joints' second look and the masks."""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw

PALM = (0, 1, 5, 9, 13, 17)  # wrist, thumb base and the four knuckles
CONNECTIONS = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
               (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (17, 18), (18, 19), (19, 20), (0, 17)]


def finger_width(landmarks) -> float:
    """A finger's width in px: the knuckles of the index and little fingers are three fingers apart; seen
    edge-on that span shrinks, so the palm's length (wrist to middle knuckle, about four widths) bounds it."""
    def dist(a: int, b: int) -> float:
        return float(np.hypot(landmarks[a][0] - landmarks[b][0], landmarks[a][1] - landmarks[b][1]))
    return max(dist(5, 17) / 3, dist(0, 9) / 4, 2.0)


def draw_hand(draw: ImageDraw.ImageDraw, landmarks, grow: float, fill=255) -> None:
    """The hand its 21 joints span: the palm, and each finger a stroke a finger wide, grown by ``grow`` px."""
    radius = finger_width(landmarks) / 2 + grow
    if radius <= 0:
        return  # eroded away
    pts = [tuple(map(float, p)) for p in landmarks]
    draw.polygon([pts[i] for i in PALM], fill=fill)
    for a, b in CONNECTIONS + list(zip(PALM, PALM[1:] + PALM[:1], strict=True)):
        draw.line((pts[a], pts[b]), fill=fill, width=max(1, round(2 * radius)))
    for x, y in pts:  # round joints and fingertips (a tip's flesh lies past its landmark)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
