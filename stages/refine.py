"""Tiled diffusion over a picture of any size: repaint, blend, fix the seams, keep what is done.

After Real-ESRGAN has made the pixels, a diffusion model repaints the picture
tile by tile at a low strength ("denoise"), adding the detail a super-resolution
model cannot invent.  A tile is the model's own working size, so a billboard is
hundreds of them.  The mechanics:

* **Grid.**  Tiles of ``tile`` px overlap by at least ``overlap``; their starts are
  spread evenly, so no thin tile is left at an edge.  Between two neighbours the
  join is the middle of their overlap, and a cross-fade ``overlap`` px wide is
  centred on it (complementary linear ramps: the weights sum to one).
* **Seeds** are fixed per tile (the image's seed plus the tile's index), so a
  rerun, or a resumed run, paints the same pixels.
* **Colour.**  Each repainted tile is shifted back to its source's mean colour
  (YCbCr), so a model's drift from tile to tile does not show as a patchwork.
* **Seam fix.**  After blending, narrow bands across every join (``seam_width``
  px, feathered) are repainted once more, in segments one tile long, so the
  change of texture across a cross-fade is painted over as well.
* **Memory.**  The picture lives in ``stages/raster.py`` rasters on disk; the
  blend holds one band of tile rows, a tile and a seam segment at a time.
* **Resume.**  Every finished tile and seam segment is written to the work
  folder as it is made.  After a crash the tiles and segments found there are
  taken as they are, and only the rest is painted.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stages.files import atomic_save_image
from stages.raster import Raster


@dataclass(frozen=True)
class Paint:
    """What one repaint needs besides the pixels."""

    prompt: str
    negative: str
    steps: int
    guidance: float
    denoise: float
    seed: int


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def grid(length: int, tile: int, overlap: int) -> list[Span]:
    """Tile spans along one axis: ``tile`` long (the whole length if it is shorter), overlapping by at least
    ``overlap``, starts spread evenly from 0 to ``length - tile``."""
    if length <= tile:
        return [Span(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [Span(s, s + tile) for s in (round(i * (length - tile) / (count - 1)) for i in range(count))]


def joins(spans: list[Span]) -> list[float]:
    """Where each pair of neighbours meets: the middle of their overlap."""
    return [(a.end + b.start) / 2 for a, b in zip(spans, spans[1:], strict=False)]


def weights(spans: list[Span], i: int, fade: int) -> np.ndarray:
    """Span ``i``'s blending weights over its own pixels: 1 in its territory, linear ramps ``fade`` px wide
    centred on its joins.  Over the whole axis the weights of all spans sum to one."""
    s = spans[i]
    x = np.arange(s.start, s.end, dtype=np.float64) + 0.5
    w = np.ones_like(x)
    mids = joins(spans)
    if fade > 0:
        if i > 0:
            w *= np.clip((x - (mids[i - 1] - fade / 2)) / fade, 0, 1)
        if i < len(spans) - 1:
            w *= np.clip(((mids[i] + fade / 2) - x) / fade, 0, 1)
    else:
        if i > 0:
            w *= x >= mids[i - 1]
        if i < len(spans) - 1:
            w *= x < mids[i]
    return w.astype(np.float32)


def mean_match(patch: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``patch`` shifted to ``reference``'s mean colour in YCbCr (its own detail and contrast kept)."""
    p = np.asarray(Image.fromarray(patch).convert("YCbCr"), dtype=np.float32)
    r = np.asarray(Image.fromarray(reference).convert("YCbCr"), dtype=np.float32)
    p += r.mean(axis=(0, 1)) - p.mean(axis=(0, 1))
    return np.asarray(Image.fromarray(np.clip(np.rint(p), 0, 255).astype(np.uint8), "YCbCr").convert("RGB"))


def paint(engine, crop: np.ndarray, mask: np.ndarray, how: Paint, callback=None) -> np.ndarray:
    """One crop repainted through ``mask`` (H×W float 0–1) at ``how.denoise``: the engine runs at the crop's size
    rounded to a multiple of 8, and the result is colour-matched to the crop and blended through the mask."""
    h, w = crop.shape[:2]
    size = (max(8, round(w / 8) * 8), max(8, round(h / 8) * 8))
    image = Image.fromarray(crop)
    white = Image.new("L", size, 255)  # the whole crop is the model's to repaint; the blend decides what is kept
    out = engine.inpaint(image if image.size == size else image.resize(size, Image.Resampling.LANCZOS), white,
                         how.prompt, how.negative, how.steps, how.guidance, how.denoise, how.seed, callback=callback)
    out = out.convert("RGB")
    if out.size != (w, h):
        out = out.resize((w, h), Image.Resampling.LANCZOS)
    painted = mean_match(np.asarray(out), crop).astype(np.float32)
    m = mask[:, :, None]
    return np.clip(np.rint(crop * (1 - m) + painted * m), 0, 255).astype(np.uint8)


class TileStore:
    """Finished tiles and seam segments of one job, kept in its work folder until the picture is done."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.made = 0   # painted in this run
        self.kept = 0   # found from an earlier, interrupted run

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        path = self.folder / f"{name}.png"
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, ValueError):
            return None
        return arr if arr.shape == shape else None

    def put(self, name: str, pixels: np.ndarray) -> None:
        atomic_save_image(self.folder / f"{name}.png", Image.fromarray(pixels), compress_level=1)

    def paint_or_keep(self, name: str, crop: np.ndarray, produce: Callable[[], np.ndarray]) -> np.ndarray:
        kept = self.get(name, crop.shape)
        if kept is not None:
            self.kept += 1
            return kept
        made = produce()
        self.put(name, made)
        self.made += 1
        return made


@dataclass(frozen=True)
class RefineReport:
    tiles: int
    seams: int
    kept: int      # tiles and segments taken from an interrupted run
    grid: tuple[int, int]  # columns, rows


def refine(engine, src: Raster, path: Path, store: TileStore, how: Paint, tile: int, overlap: int,
           seam_fix: bool, seam_width: int, seam_denoise: float, seam_padding: int,
           check_stop: Callable[[int, int, str], None] = lambda done, total, unit: None) -> tuple[Raster, RefineReport]:
    """``src`` (H×W×3 uint8) repainted tile by tile into a new raster at ``path``."""
    h, w = src.height, src.width
    rows, cols = grid(h, tile, overlap), grid(w, tile, overlap)
    col_w = [weights(cols, i, overlap) for i in range(len(cols))]
    out = Raster.create(path, h, w, 3)
    total = len(rows) * len(cols)
    acc = np.zeros((0, w, 4), dtype=np.float32)  # weighted colour sums and weights of rows not yet final
    acc_start = 0
    for ri, r in enumerate(rows):
        grow = r.end - (acc_start + acc.shape[0])
        if grow > 0:
            acc = np.concatenate([acc, np.zeros((grow, w, 4), dtype=np.float32)])
        band = src.rows(r.start, r.end)
        row_w = weights(rows, ri, overlap)[:, None]
        for ci, c in enumerate(cols):
            n = ri * len(cols) + ci
            check_stop(n, total, "tiles")
            crop = np.ascontiguousarray(band[:, c.start:c.end])
            ones = np.ones(crop.shape[:2], dtype=np.float32)
            tile_how = Paint(how.prompt, how.negative, how.steps, how.guidance, how.denoise, how.seed + n)
            painted = store.paint_or_keep(f"tile-{ri}-{ci}", crop,
                                          lambda crop=crop, ones=ones, how=tile_how: paint(engine, crop, ones, how))
            wgt = row_w * col_w[ci][None, :]
            dst = acc[r.start - acc_start:r.end - acc_start, c.start:c.end]
            dst[:, :, :3] += painted.astype(np.float32) * wgt[:, :, None]
            dst[:, :, 3] += wgt
        final_end = rows[ri + 1].start if ri + 1 < len(rows) else h
        n_final = final_end - acc_start
        done = acc[:n_final]
        out.write(acc_start, np.clip(np.rint(done[:, :, :3] / np.maximum(done[:, :, 3:], 1e-6)), 0, 255))
        acc, acc_start = acc[n_final:], final_end
    seams = 0
    if seam_fix:
        seams = fix_seams(engine, out, store, how, rows, cols, overlap, seam_width, seam_denoise, seam_padding,
                          check_stop, first_seed=how.seed + total)
    return out.finish(), RefineReport(total, seams, store.kept, (len(cols), len(rows)))


def fix_seams(engine, raster: Raster, store: TileStore, how: Paint, rows: list[Span], cols: list[Span],
              overlap: int, width: int, denoise: float, padding: int, check_stop, first_seed: int) -> int:
    """Repaints a band ``width`` px wide across every join, one tile-long segment at a time, in place:
    first the joins between columns (segments down each row of tiles), then those between rows."""
    jobs = [("v", j, i, x, s) for j, x in enumerate(joins(cols)) for i, s in enumerate(rows)]
    jobs += [("h", j, i, y, s) for j, y in enumerate(joins(rows)) for i, s in enumerate(cols)]
    along_spans = {"v": rows, "h": cols}
    for n, (axis, j, i, at, seg) in enumerate(jobs):
        check_stop(n, len(jobs), "seams")
        across_len = raster.width if axis == "v" else raster.height
        size = min(across_len, math.ceil((width + 2 * padding) / 8) * 8)
        a0 = int(min(max(round(at - size / 2), 0), across_len - size))
        # the mask: a ramp up to 1 at the join and down again across the band; along the join, faded in and
        # out over the overlap with the neighbouring segments, as the tiles were
        across = np.clip(1 - np.abs(np.arange(a0, a0 + size) + 0.5 - at) / (width / 2), 0, 1).astype(np.float32)
        along = weights(along_spans[axis], i, overlap)
        if axis == "v":
            y0, x0, mask = seg.start, a0, along[:, None] * across[None, :]
        else:
            y0, x0, mask = a0, seg.start, across[:, None] * along[None, :]
        rows_now = raster.rows(y0, y0 + mask.shape[0]).copy()
        crop = np.ascontiguousarray(rows_now[:, x0:x0 + mask.shape[1]])
        seam_how = Paint(how.prompt, how.negative, how.steps, how.guidance, denoise, first_seed + n)
        rows_now[:, x0:x0 + mask.shape[1]] = store.paint_or_keep(
            f"seam-{axis}-{j}-{i}", crop, lambda crop=crop, mask=mask, how=seam_how: paint(engine, crop, mask, how))
        raster.write(y0, rows_now)
    return len(jobs)


def work_key(*parts: object) -> str:
    import hashlib

    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:16]


def clear(folder: Path) -> None:
    """Removes a work folder (the picture it was for is written)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(folder.parent)  # the job's work folder, once nothing else is in it
