"""Colour that stays put: the upscaler's colour fix, and how far two pictures' colours are apart.

**Colour fix.**  Super-resolution models move flat colours by a few levels (Real-ESRGAN's "colour shift"):
x4plus turns (40, 160, 220) into (43, 162, 223).  The fix keeps the model's detail and takes the low
frequencies from the source, as StableSR's colour fix does:

- ``wavelet``: ``fixed = out + low(src↑ - out)``, where ``src↑`` is the source resized (Lanczos) to the
  output's size and ``low`` is an à trous wavelet low-pass: five passes of the [1, 2, 1]/4 kernel along
  each axis, dilated 1, 2, 4, 8, 16 px.  Only what varies over more than about 30 px is taken from the
  source; edges, texture and the model's sharpening are the model's.
- ``adain``: each channel's mean and spread over the whole picture matched to the source's; a global
  correction that leaves local shifts (one patch up, another down) where they are.

With either, where the source is exactly one colour over a 7×7 neighbourhood (a logo's red, a flat
background, clipped white) the output is that colour: the grain some models invent on flat areas (x4plus
puts ±6 levels of texture on a flat patch) is not detail the source had.  Lanczos reaches 3 source pixels,
so the source resized is exactly that colour there; the boundary is feathered by the resize.

Both work band by band: a band of output rows needs ``HALO`` rows either side (what the low-pass reaches),
so a 16384-px-wide picture costs a few bands of floats, whatever its height, and the rows are the same
as if the whole picture were fixed at once.

**ΔE.**  CIEDE2000 (Sharma, Wu and Dalal 2005) between CIE L*a*b* values; sRGB to Lab through OpenCV
(D65).  No well-kept package that polishd already carries computes CIEDE2000 on arrays (OpenCV's sits
inside its colour-correction model only; scikit-image's would bring a 40 MB dependency for thirty lines),
so the formula is here, checked against the published test pairs (tests/test_colour.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from stages import raster

METHODS = ("wavelet", "adain", "none")
Method = Literal["wavelet", "adain", "none"]
LEVELS = 5
HALO = 2 ** LEVELS - 1  # rows the low-pass reaches: 1 + 2 + 4 + 8 + 16
BAND = 128


class Rows(Protocol):
    """Rows of a picture, read and written by range: a ``stages.raster.Raster`` or ``InMemory``."""

    height: int
    width: int

    def rows(self, y0: int, y1: int) -> np.ndarray: ...

    def write(self, y0: int, rows: np.ndarray) -> None: ...


class InMemory:
    """An H×W×C array as ``Rows``."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.height, self.width = array.shape[:2]

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return self.array[max(0, y0):y1]

    def write(self, y0: int, rows: np.ndarray) -> None:
        self.array[y0:y0 + rows.shape[0]] = rows


# --------------------------------------------------------------------------- the low-pass


def _kernel(d: int) -> np.ndarray:
    """[1, 2, 1]/4 with its taps ``d`` px apart."""
    k = np.zeros(2 * d + 1, np.float32)
    k[0] = k[-1] = 0.25
    k[d] = 0.5
    return k


KERNELS = [_kernel(2 ** i) for i in range(LEVELS)]


def low_pass(x: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """The à trous wavelet's coarsest level of an H×W×C float32 array (C ≤ 4); borders mirrored without
    repeating the edge pixel.  OpenCV's separable filter: the same numbers as three numpy slices a pass,
    three times faster."""
    import cv2

    for k in KERNELS[:levels]:
        x = cv2.sepFilter2D(x, -1, k, k, borderType=cv2.BORDER_REFLECT_101)
    return x if x.ndim == 3 else x[:, :, None]


# --------------------------------------------------------------------------- the fix, band by band


@dataclass
class Drift:
    """How far the fixed picture's low frequencies are from the source's: CIEDE2000 over a sample of pixels
    (every 4th row and column), mean and 99th percentile."""

    mean: float
    p99: float

    def to_json(self) -> dict:
        return {"mean": round(self.mean, 3), "p99": round(self.p99, 3)}


def _source_rows(source: np.ndarray, out_size: tuple[int, int]) -> Callable[[int, int], np.ndarray]:
    """Rows of the source Lanczos-resized to the output's size (the source's type), made band by band."""
    h, w = source.shape[:2]
    if (w, h) == out_size:
        return lambda y0, y1: source[y0:y1]
    return lambda y0, y1: raster.resize_band(lambda a, b: source[a:b], (w, h), out_size, y0, y1)


FLAT_RADIUS = 3


def flat_mask(source: np.ndarray) -> np.ndarray:
    """255 where every channel of the source is constant over the (2·FLAT_RADIUS + 1)² neighbourhood, else 0
    (h×w×1 uint8)."""
    import cv2

    kernel = np.ones((2 * FLAT_RADIUS + 1, 2 * FLAT_RADIUS + 1), np.uint8)
    flat = np.ones(source.shape[:2], bool)
    for c in range(source.shape[2]):
        plane = np.ascontiguousarray(source[:, :, c])
        flat &= cv2.dilate(plane, kernel, borderType=cv2.BORDER_REPLICATE) == \
            cv2.erode(plane, kernel, borderType=cv2.BORDER_REPLICATE)
    return (flat * np.uint8(255))[:, :, None]


def _padded(load: Callable, y0: int, y1: int, height: int, halo: int) -> tuple[np.ndarray, int]:
    """Rows ``y0 - halo : y1 + halo`` (clipped to the picture), and where row ``y0`` is in them."""
    a, b = max(0, y0 - halo), min(height, y1 + halo)
    return load(a, b), y0 - a


TILE = 128  # output columns fixed at a time: the floats of a tile, not of a row band, whatever the width


def fix(method: Method, source: np.ndarray, out: Rows, dst: Rows, peak: float, band: int = BAND,
        measure: bool = False, check_stop: Callable[[int, int], None] = lambda d, t: None) -> Drift | None:
    """``out`` (the model's picture, H×W×3) with its colour fixed toward ``source`` (h×w×3, any size), into
    ``dst`` (which may be ``out`` itself).  ``peak``: 255 or 65535.  With ``measure``, returns the drift
    left after the fix.

    Bands of ``band`` rows, each in tiles of ``TILE`` columns, each read with ``HALO`` px around it (twice
    that to measure: the low-pass of the fixed pixels reaches as far again), so every pixel is what the
    whole picture fixed at once would give."""
    size = (out.width, out.height)
    src = _source_rows(source, size)
    flat = _source_rows(flat_mask(source), size) if method != "none" else None
    scale, shift = _adain(source, out, peak) if method == "adain" else (None, None)
    samples: list[np.ndarray] = []
    halo = 2 * HALO if measure else HALO
    bands = list(range(0, out.height, band))
    held = None  # each band is written one band late: the next band reads its last rows (dst may be out)
    for i, y0 in enumerate(bands):
        check_stop(i, len(bands))
        y1 = min(out.height, y0 + band)
        rows, at = _padded(out.rows, y0, y1, out.height, halo)
        ref = _padded(src, y0, y1, out.height, halo)[0]
        weight = _padded(flat, y0, y1, out.height, halo)[0] if flat is not None else None
        done = np.empty((y1 - y0, out.width, rows.shape[2]), rows.dtype)
        for x0 in range(0, out.width, TILE):
            x1 = min(out.width, x0 + TILE)
            xa, xb = max(0, x0 - halo), min(out.width, x1 + halo)
            r = rows[:, xa:xb].astype(np.float32)
            s = ref[:, xa:xb].astype(np.float32)
            if method == "wavelet":
                r += low_pass(s - r)
            elif method == "adain":
                r *= scale
                r += shift
            if weight is not None:
                w = weight[:, xa:xb].astype(np.float32) / 255.0
                r += (s - r) * w
            np.clip(np.rint(r, out=r), 0, peak, out=r)
            if measure:
                samples.append(_delta_e_sample(r, s, at, y1 - y0, x0 - xa, x1 - x0, peak))
            done[:, x0:x1] = r[at:at + (y1 - y0), x0 - xa:x1 - xa]
        if held is not None:  # the band before: this band has read the rows of it that it needed
            dst.write(*held)
        held = (y0, done)
    if held is not None:
        dst.write(*held)
    if not measure:
        return None
    values = np.concatenate(samples) if samples else np.zeros(1, np.float32)
    return Drift(float(values.mean()), float(np.percentile(values, 99)))


def _adain(source: np.ndarray, out: Rows, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: (scale, shift) that give ``out`` the source's mean and standard deviation."""

    def stats(load, height: int) -> tuple[np.ndarray, np.ndarray]:
        total, total2, n = 0.0, 0.0, 0
        for y in range(0, height, BAND):
            r = load(y, y + BAND)
            r = r.reshape(-1, r.shape[-1]).astype(np.float64)
            total, total2, n = total + r.sum(axis=0), total2 + (r * r).sum(axis=0), n + r.shape[0]
        mean = total / n
        return mean, np.sqrt(np.maximum(total2 / n - mean ** 2, 0))

    s_mean, s_std = stats(lambda a, b: source[a:b], source.shape[0])
    o_mean, o_std = stats(out.rows, out.height)
    scale = np.where(o_std > 1e-6 * peak, s_std / np.maximum(o_std, 1e-12), 1.0)
    return scale.astype(np.float32), (s_mean - o_mean * scale).astype(np.float32)


def _delta_e_sample(fixed: np.ndarray, ref: np.ndarray, at: int, n: int, left: int, m: int,
                    peak: float) -> np.ndarray:
    """CIEDE2000 between the low-passes of ``fixed`` and ``ref`` on this tile's own pixels (every 4th row and
    column of it)."""
    a = low_pass(fixed)[at:at + n:4, left:left + m:4]
    b = low_pass(ref)[at:at + n:4, left:left + m:4]
    return delta_e(to_lab(a / peak), to_lab(b / peak)).ravel().astype(np.float32)


def drift(out: np.ndarray, source: np.ndarray) -> Drift:
    """The low-pass CIEDE2000 between a picture and its source resized (Lanczos) to its size; 8-bit."""
    peak = float(np.iinfo(out.dtype).max)
    src = _source_rows(source, (out.shape[1], out.shape[0]))(0, out.shape[0]).astype(np.float32)
    d = delta_e(to_lab(low_pass(out.astype(np.float32))[::4, ::4] / peak), to_lab(low_pass(src)[::4, ::4] / peak))
    return Drift(float(d.mean()), float(np.percentile(d, 99)))


def bands(rows: Rows, band: int = BAND) -> Iterator[np.ndarray]:
    for y in range(0, rows.height, band):
        yield rows.rows(y, y + band)


# --------------------------------------------------------------------------- ΔE


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (…×3) → CIE L*a*b* (D65)."""
    import cv2

    flat = np.ascontiguousarray(np.clip(rgb, 0, 1).reshape(-1, 1, 3), dtype=np.float32)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def delta_e(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 between two arrays of L*a*b* values (…×3), kL = kC = kH = 1."""
    L1, a1, b1 = (lab1[..., i].astype(np.float64) for i in range(3))
    L2, a2, b2 = (lab2[..., i].astype(np.float64) for i in range(3))
    C1, C2 = np.hypot(a1, b1), np.hypot(a2, b2)
    Cm = (C1 + C2) / 2
    G = 0.5 * (1 - np.sqrt(Cm ** 7 / (Cm ** 7 + 25.0 ** 7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    zero = (C1p * C2p) == 0
    dL = L2 - L1
    dC = C2p - C1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(zero, 0, dh)
    dH = 2 * np.sqrt(C1p * C2p) * np.sin(np.radians(dh / 2))
    Lm = (L1 + L2) / 2
    Cmp = (C1p + C2p) / 2
    hsum = h1p + h2p
    hm = np.where(np.abs(h1p - h2p) <= 180, hsum / 2, np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2))
    hm = np.where(zero, hsum, hm)
    T = (1 - 0.17 * np.cos(np.radians(hm - 30)) + 0.24 * np.cos(np.radians(2 * hm))
         + 0.32 * np.cos(np.radians(3 * hm + 6)) - 0.20 * np.cos(np.radians(4 * hm - 63)))
    d_theta = 30 * np.exp(-(((hm - 275) / 25) ** 2))
    Rc = 2 * np.sqrt(Cmp ** 7 / (Cmp ** 7 + 25.0 ** 7))
    Sl = 1 + 0.015 * (Lm - 50) ** 2 / np.sqrt(20 + (Lm - 50) ** 2)
    Sc = 1 + 0.045 * Cmp
    Sh = 1 + 0.015 * Cmp * T
    Rt = -np.sin(np.radians(2 * d_theta)) * Rc
    return np.sqrt((dL / Sl) ** 2 + (dC / Sc) ** 2 + (dH / Sh) ** 2 + Rt * (dC / Sc) * (dH / Sh))


# --------------------------------------------------------------------------- drift across a variant's seams


@dataclass
class SeamDrift:
    """How the new area of a variant meets the picture: for bands either side of each join, in segments along
    it, CIEDE2000 between their mean colours and the difference of their lightness (L*, new minus picture);
    and the seam's visibility: the mean jump across the join over the mean jump between neighbours just
    inside the picture (1 = no more visible than the picture's own texture)."""

    delta_e: float          # mean over every segment of every side
    worst_delta_e: float    # the worst segment
    lightness: float        # mean ΔL* (+: the new area is brighter)
    seam: float             # the most visible side's
    sides: dict[str, dict]

    def to_json(self) -> dict:
        return {"delta_e": round(self.delta_e, 2), "worst_delta_e": round(self.worst_delta_e, 2),
                "lightness": round(self.lightness, 2), "seam": round(self.seam, 2), "sides": self.sides}


def seam_drift(image: np.ndarray, frame: tuple[int, int, int, int]) -> SeamDrift | None:
    """``image`` (H×W×3 uint8) with the picture at ``frame`` (x0, y0, x1, y1); None when nothing was added."""
    x0, y0, x1, y1 = frame
    h, w = image.shape[:2]
    band = max(4, round(0.04 * min(x1 - x0, y1 - y0)))
    # (side, picture band, new band, the two rows or columns of the join, the picture's own neighbours)
    sides = []
    if x0 >= 2:
        b = min(band, x0)
        sides.append(("left", image[y0:y1, x0:x0 + band], image[y0:y1, x0 - b:x0], image[y0:y1, x0 - 1:x0 + 1], 1))
    if w - x1 >= 2:
        b = min(band, w - x1)
        sides.append(("right", image[y0:y1, x1 - band:x1], image[y0:y1, x1:x1 + b], image[y0:y1, x1 - 1:x1 + 1], 1))
    if y0 >= 2:
        b = min(band, y0)
        sides.append(("top", image[y0:y0 + band, x0:x1], image[y0 - b:y0, x0:x1], image[y0 - 1:y0 + 1, x0:x1], 0))
    if h - y1 >= 2:
        b = min(band, h - y1)
        sides.append(("bottom", image[y1 - band:y1, x0:x1], image[y1:y1 + b, x0:x1], image[y1 - 1:y1 + 1, x0:x1], 0))
    if not sides:
        return None
    every, lightness, seams, out = [], [], [], {}
    segment = max(16, 4 * band)
    for name, inside, outside, join, along_y in sides:
        if not along_y:  # a top or bottom side: segments along x
            inside, outside, join = inside.transpose(1, 0, 2), outside.transpose(1, 0, 2), join.transpose(1, 0, 2)
        n = inside.shape[0]
        cuts = range(0, n, segment)
        a = np.array([to_lab(inside[c:c + segment].reshape(-1, 3) / 255.0).mean(0) for c in cuts])
        b = np.array([to_lab(outside[c:c + segment].reshape(-1, 3) / 255.0).mean(0) for c in cuts])
        d = delta_e(a, b)
        jump = np.abs(join[:, 1].astype(np.float32) - join[:, 0].astype(np.float32)).mean()
        own = np.abs(np.diff(inside[:, :4].astype(np.float32), axis=1)).mean() if name in ("left", "top") else \
            np.abs(np.diff(inside[:, -4:].astype(np.float32), axis=1)).mean()
        seam = float(jump / max(own, 1.0))
        every.extend(d.tolist())
        lightness.extend((b[:, 0] - a[:, 0]).tolist())
        seams.append(seam)
        out[name] = {"delta_e": round(float(d.mean()), 2), "lightness": round(float((b[:, 0] - a[:, 0]).mean()), 2),
                     "seam": round(seam, 2)}
    return SeamDrift(float(np.mean(every)), float(np.max(every)), float(np.mean(lightness)), max(seams), out)
