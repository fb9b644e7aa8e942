"""Tiled super-resolution with blended overlaps and bounded memory.

The input is cut into a grid of core tiles that partition it.  Each tile is run
with ``overlap`` px of extra context on every side, and its output is kept over
its core widened by ``overlap`` px where it has a neighbour.  Across each core
boundary the two neighbours are cross-faded with complementary linear ramps
(the weights sum to one), so there is no hard cut anywhere — Real-ESRGAN's own
tiler pastes tiles edge to edge, which shows as a grid on smooth areas.

Output rows are produced band by band (one row of tiles at a time) and written
straight into the uint8 result, so the float buffers never hold more than one
band: memory stays bounded whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Span:
    """One tile's extent along one axis, in input pixels."""

    core_start: int
    core_end: int
    keep_start: int  # core widened by the overlap where there is a neighbour
    keep_end: int
    input_start: int  # keep widened by the overlap again: context the tile sees but does not keep
    input_end: int


def spans(length: int, tile: int, overlap: int, context: int | None = None) -> list[Span]:
    context = 0 if context is None else context
    count = max(1, math.ceil(length / tile))
    edges = [round(i * length / count) for i in range(count + 1)]  # equal cores, no sliver at the end
    out = []
    for i in range(count):
        c0, c1 = edges[i], edges[i + 1]
        k0 = c0 - overlap if i > 0 else c0
        k1 = c1 + overlap if i < count - 1 else c1
        out.append(Span(c0, c1, max(0, k0), min(length, k1), max(0, k0 - context), min(length, k1 + context)))
    return out


def ramp(span: Span, first: bool, last: bool, overlap: int, scale: int) -> np.ndarray:
    """Weights over the kept output range: rising across the boundary before, falling across the one after."""
    n = (span.keep_end - span.keep_start) * scale
    w = np.ones(n, dtype=np.float32)
    width = 2 * overlap * scale
    if width == 0:
        return w
    pos = (np.arange(n, dtype=np.float32) + 0.5)
    if not first:
        w *= np.clip(pos / width, 0.0, 1.0)
    if not last:
        w *= np.clip((n - pos) / width, 0.0, 1.0)
    return w


def upscale(run: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray, scale: int, tile: int, overlap: int,
            check_stop: Callable[[int, int], None] = lambda done, total: None, context: int | None = None,
            depth: int = 8, out=None) -> np.ndarray:
    """``image``: H×W×C float32 in [0, 1] (C = 3).  Returns H·s × W·s × C uint8 (uint16 for depth 16).

    ``image`` may be anything that slices like an array by rows (``stages.raster.FloatView``), and ``out``
    anything that takes row slices (``stages.raster.Raster``): a picture larger than memory then goes from
    file to file, one band at a time.

    ``run`` maps a 1×C×h×w float tensor to 1×C×h·s×w·s (device and dtype are its business).
    ``check_stop(done, total)`` is called before each tile.
    """
    h, w, c = image.shape
    tile = max(1, tile)
    overlap = min(overlap, tile // 2)
    rows, cols = spans(h, tile, overlap, context), spans(w, tile, overlap, context)
    dtype = np.uint16 if depth == 16 else np.uint8
    result = np.empty((h * scale, w * scale, c), dtype=dtype) if out is None else out
    col_weights = [ramp(s, i == 0, i == len(cols) - 1, overlap, scale) for i, s in enumerate(cols)]
    carry: np.ndarray | None = None  # accumulated output rows shared with the next band
    carry_start = 0
    for ri, row in enumerate(rows):
        band_start = row.keep_start
        band = np.zeros(((row.keep_end - band_start) * scale, w * scale, c), dtype=np.float32)
        if carry is not None:
            offset = (carry_start - band_start) * scale
            band[offset:offset + carry.shape[0]] += carry
        row_w = ramp(row, ri == 0, ri == len(rows) - 1, overlap, scale)[:, None, None]
        band_in = image[row.input_start:row.input_end]
        for ci, col in enumerate(cols):
            check_stop(ri * len(cols) + ci, len(rows) * len(cols))  # a safe point, and how far it is
            patch = band_in[:, col.input_start:col.input_end]
            x = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[None]
            y = run(x)[0].float().clamp(0, 1).permute(1, 2, 0).numpy()
            y0 = (row.keep_start - row.input_start) * scale
            x0 = (col.keep_start - col.input_start) * scale
            kept = y[y0:y0 + band.shape[0], x0:x0 + (col.keep_end - col.keep_start) * scale]
            weights = row_w * col_weights[ci][None, :, None]
            band[:, col.keep_start * scale:col.keep_end * scale] += kept * weights
        # Rows before the next band's kept range are final.
        final_end = rows[ri + 1].keep_start if ri + 1 < len(rows) else row.keep_end
        n_final = (final_end - band_start) * scale
        result[band_start * scale:final_end * scale] = _quantize(band[:n_final], dtype)
        carry, carry_start = band[n_final:], final_end
    return result


def _quantize(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    top = float(np.iinfo(dtype).max)
    return np.clip(np.rint(x * top), 0, top).astype(dtype)
