"""Classical fills for a new canvas strip: the starting point of the generative pass, or, with no model,
the variant's whole extension.

Each takes the canvas (H×W×3 uint8) and a boolean ``known`` map (True where the
picture is), fills everything else, and leaves the known pixels as they are.

Two kinds.  ``blur``, ``reflect`` and ``patchmatch`` continue the picture: alone they look poor on portraits
(stretched stripes, mirrored limbs, smears along every edge); they give the diffusion model colours and
layout to start from, not a result.  ``backdrop`` and ``color`` do not pretend to continue it: a blurred,
darkened copy of the whole picture behind it (as story and banner tools make), or the colour of its edge —
an extension that reads as design.  Without a generative model, ``auto`` makes the backdrop.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def _known_box(known: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.flatnonzero(known.any(axis=1)), np.flatnonzero(known.any(axis=0))
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


class _AsFloat:
    """``image[index]`` as float32, converting only what is indexed."""

    def __init__(self, image: np.ndarray):
        self.image = image

    def __getitem__(self, index) -> np.ndarray:
        return self.image[index].astype(np.float32)


def distance_outside(known: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """Chebyshev distance (px) of each pixel (of ``rows``) from the known rectangle; 0 inside."""
    y0, y1, x0, x1 = _known_box(known)
    h, w = known.shape
    yy = np.arange(h)[rows][:, None]
    xx = np.arange(w)[None, :]
    dy = np.maximum(np.maximum(y0 - yy, yy - (y1 - 1)), 0)
    dx = np.maximum(np.maximum(x0 - xx, xx - (x1 - 1)), 0)
    return np.maximum(dx, dy).astype(np.float32)


def fill_color(canvas: np.ndarray, known: np.ndarray, band: int = 16) -> np.ndarray:
    """The mean colour of the picture's outer ``band`` px."""
    y0, y1, x0, x1 = _known_box(known)
    inner = canvas[y0:y1, x0:x1].astype(np.float32)
    ring = np.ones(inner.shape[:2], bool)
    ring[band:-band, band:-band] = False
    out = canvas.copy()
    np.copyto(out, np.rint(inner[ring].mean(axis=0)).astype(np.uint8), where=~known[..., None])
    return out


def fill_reflect(canvas: np.ndarray, known: np.ndarray) -> np.ndarray:
    y0, y1, x0, x1 = _known_box(known)
    inner = canvas[y0:y1, x0:x1]
    h, w = canvas.shape[:2]
    pads = ((y0, h - y1), (x0, w - x1), (0, 0))
    if max(y0, h - y1) >= inner.shape[0] or max(x0, w - x1) >= inner.shape[1]:
        out = np.pad(inner, pads, mode="symmetric")  # wider than the picture: numpy repeats the mirror
    else:
        out = np.pad(inner, pads, mode="reflect")
    np.copyto(out, canvas, where=known[..., None])
    return out


BAND_ROWS = 512  # rows blended at a time: memory stays a few bands, whatever the canvas size
RADII = (4, 12, 32)  # the blur levels, nearest the picture first


def _stretched_rows(canvas: np.ndarray, box: tuple[int, int, int, int], start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the edge-stretched canvas — every unknown pixel takes the value of the nearest
    known pixel along its row, then its column — made without the rest of it."""
    y0, y1, x0, x1 = box
    rows = np.clip(np.arange(start, stop), y0, y1 - 1)
    return np.pad(canvas[rows, x0:x1], ((0, 0), (x0, canvas.shape[1] - x1), (0, 0)), mode="edge")


def _blurred_rows(canvas: np.ndarray, box: tuple, start: int, stop: int, radius: int) -> np.ndarray:
    """Rows ``start:stop`` of the stretched canvas blurred by ``radius``: blurred with a margin of rows wider
    than the blur reaches, so they are the same as rows of the whole canvas blurred at once."""
    margin = 4 * radius + 8
    lo, hi = max(0, start - margin), min(canvas.shape[0], stop + margin)
    blurred = Image.fromarray(_stretched_rows(canvas, box, lo, hi)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(blurred)[start - lo:stop - lo]


def fill_blur(canvas: np.ndarray, known: np.ndarray, seed: int = 0) -> np.ndarray:
    """Edge stretch, blurred more the farther from the picture, plus a little noise (Fooocus's starting canvas).

    Made in bands of rows, blur included, so a 64-megapixel canvas needs a few hundred MB beyond itself;
    the result is the same as for the whole canvas at once (blur margins, and noise drawn in the same order).
    """
    box = _known_box(known)
    y0, y1, x0, x1 = box
    h, w = known.shape
    far = float(max(1, y0, h - y1, x0, w - x1))  # the largest distance from the picture: its widest margin
    rng = np.random.default_rng(seed)
    out = np.empty_like(canvas)
    for start in range(0, canvas.shape[0], BAND_ROWS):
        stop = min(start + BAND_ROWS, canvas.shape[0])
        rows = slice(start, stop)
        dist = distance_outside(known, rows)
        t = np.clip(dist / far, 0, 1) * len(RADII)  # 0 at the edge → the most blurred level far out
        lo = np.floor(t).astype(np.intp)
        hi = np.minimum(lo + 1, len(RADII))
        frac = (t - lo)[..., None]
        levels = [_stretched_rows(canvas, box, start, stop),
                  *(_blurred_rows(canvas, box, start, stop, r) for r in RADII)]  # 8-bit: a quarter of float32
        low = np.choose(lo[..., None], levels).astype(np.float32)
        high = np.choose(hi[..., None], levels).astype(np.float32)
        del levels
        blended = low * (1 - frac) + high * frac
        noise = rng.normal(0, 6.0, blended.shape).astype(np.float32)
        blended += noise * np.clip(dist / 32.0, 0, 1)[..., None]
        out[rows] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    np.copyto(out, canvas, where=known[..., None])  # not out[known] = …: no index arrays of every known pixel
    return out


BACKDROP_BLUR = 0.05    # the blur's radius as a share of the canvas's long side
BACKDROP_SHADE = 0.62   # the backdrop's brightness: dark enough that the picture stands in front of it
BACKDROP_WORK = 8       # blurred at an eighth of the size, then enlarged: smooth, and cheap on a big canvas


def fill_backdrop(canvas: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The picture scaled to cover the whole canvas, blurred and darkened, behind the picture itself."""
    y0, y1, x0, x1 = _known_box(known)
    h, w = known.shape
    picture = Image.fromarray(canvas[y0:y1, x0:x1])
    f = max(w / picture.width, h / picture.height) / BACKDROP_WORK
    small = picture.resize((max(1, round(picture.width * f)), max(1, round(picture.height * f))),
                           Image.Resampling.BOX if f < 1 else Image.Resampling.BILINEAR)
    sw, sh = max(1, round(w / BACKDROP_WORK)), max(1, round(h / BACKDROP_WORK))
    left, top = (small.width - sw) // 2, (small.height - sh) // 2
    small = small.crop((left, top, left + sw, top + sh))
    radius = max(1.0, BACKDROP_BLUR * max(w, h) / BACKDROP_WORK)
    # Edges mirrored before blurring, so the backdrop's own border does not darken toward black.
    pad = int(3 * radius) + 1
    padded = np.pad(np.asarray(small), ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    blurred = Image.fromarray(padded).filter(ImageFilter.GaussianBlur(radius)).crop((pad, pad, pad + sw, pad + sh))
    shaded = np.asarray(blurred).astype(np.float32) * BACKDROP_SHADE
    out = np.asarray(Image.fromarray(np.clip(np.rint(shaded), 0, 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC)).copy()
    np.copyto(out, canvas, where=known[..., None])
    return out


def fill_patchmatch(canvas: np.ndarray, known: np.ndarray) -> np.ndarray:
    try:
        from patchmatch import patch_match  # pypatchmatch
    except Exception as exc:  # its native library builds at first import and may fail
        raise RuntimeError(f'[outpaint].infill = "patchmatch" needs a working pypatchmatch package ({exc})') from None
    mask = (~known).astype(np.uint8) * 255
    out = patch_match.inpaint(canvas, mask=mask, patch_size=3)
    out = np.asarray(out, dtype=np.uint8).copy()
    np.copyto(out, canvas, where=known[..., None])
    return out


CONTINUING = ("blur", "reflect", "patchmatch")  # fills that try to continue the picture (the drift gate judges)


def infill(method: str, canvas: np.ndarray, known: np.ndarray, seed: int = 0) -> np.ndarray:
    if method == "backdrop":
        return fill_backdrop(canvas, known)
    if method == "blur":
        return fill_blur(canvas, known, seed)
    if method == "reflect":
        return fill_reflect(canvas, known)
    if method == "color":
        return fill_color(canvas, known)
    if method == "patchmatch":
        return fill_patchmatch(canvas, known)
    raise ValueError(f"unknown infill {method!r}")


def seam_score(image: np.ndarray, known: np.ndarray, width: int = 4) -> float:
    """How visible the joins are: the mean colour jump across the picture's edges, relative to the mean
    jump between neighbouring pixels just inside the picture.  ~1 = no visible seam; higher = a seam shows."""
    y0, y1, x0, x1 = _known_box(known)
    img = _AsFloat(image)  # converts only the rows and columns looked at, not the whole picture
    jumps, inside = [], []
    h, w = known.shape
    if x0 > 0:
        jumps.append(np.abs(img[y0:y1, x0] - img[y0:y1, x0 - 1]).mean())
        inside.append(np.abs(np.diff(img[y0:y1, x0:x0 + width], axis=1)).mean())
    if x1 < w:
        jumps.append(np.abs(img[y0:y1, x1] - img[y0:y1, x1 - 1]).mean())
        inside.append(np.abs(np.diff(img[y0:y1, x1 - width:x1], axis=1)).mean())
    if y0 > 0:
        jumps.append(np.abs(img[y0, x0:x1] - img[y0 - 1, x0:x1]).mean())
        inside.append(np.abs(np.diff(img[y0:y0 + width, x0:x1], axis=0)).mean())
    if y1 < h:
        jumps.append(np.abs(img[y1, x0:x1] - img[y1 - 1, x0:x1]).mean())
        inside.append(np.abs(np.diff(img[y1 - width:y1, x0:x1], axis=0)).mean())
    if not jumps:
        return 1.0
    return float(np.mean(jumps) / max(np.mean(inside), 1e-3))
