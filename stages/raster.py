"""Pictures too big to hold: rows on disk, resized and encoded band by band.

An 8192² RGB picture is 200 MB as bytes and 800 MB as floats, a 16384² one four
times that; an upscale to billboard size must not need either.  Here a picture
is a ``Raster``: raw rows in a file, read and written by row ranges with
``pread``/``pwrite`` (not a memory map, whose touched pages would count against
the process).  ``resize`` makes a Lanczos copy of a raster one band of output
rows at a time, and ``write_png`` encodes rows as they come.

Pillow encodes whole images only, so the PNG writer is ours: the format is
a signature and checksummed chunks (IHDR, iCCP, IDAT, IEND) around a zlib
stream of filtered rows, and every row uses the "Up" filter (the difference to
the row above, which a photo compresses well and numpy computes at once).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

LANCZOS_SUPPORT = 3.0  # Lanczos-3: each output pixel reads 3 input pixels (times the reduction) each side


class Raster:
    """An H×W×C picture of uint8 or uint16 values in a raw file, with its shape in ``<file>.json``.

    ``complete`` is written last (``finish``): a raster left by a crash is never taken as finished."""

    def __init__(self, path: Path, height: int, width: int, channels: int, dtype=np.uint8):
        self.path, self.height, self.width, self.channels = Path(path), height, width, channels
        self.dtype = np.dtype(dtype)
        self.row_bytes = width * channels * self.dtype.itemsize

    @classmethod
    def create(cls, path: Path, height: int, width: int, channels: int, dtype=np.uint8) -> Raster:
        raster = cls(path, height, width, channels, dtype)
        with open(path, "wb") as f:
            f.truncate(height * raster.row_bytes)  # sparse: no disk is used until rows are written
        raster._meta(complete=False)
        return raster

    @classmethod
    def open(cls, path: Path) -> Raster | None:
        """The finished raster at ``path``, or None when there is none (or it was never finished)."""
        try:
            meta = json.loads(Path(f"{path}.json").read_text())
        except (OSError, ValueError):
            return None
        raster = cls(path, meta["height"], meta["width"], meta["channels"], meta["dtype"])
        ok = meta.get("complete") and path.exists() and path.stat().st_size == raster.height * raster.row_bytes
        return raster if ok else None

    def _meta(self, complete: bool) -> None:
        Path(f"{self.path}.json").write_text(json.dumps(
            {"height": self.height, "width": self.width, "channels": self.channels, "dtype": self.dtype.name,
             "complete": complete}))

    def finish(self) -> Raster:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._meta(complete=True)
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    def rows(self, y0: int, y1: int) -> np.ndarray:
        y0, y1 = max(0, y0), min(self.height, y1)
        n = max(0, y1 - y0) * self.row_bytes
        with open(self.path, "rb", buffering=0) as f:
            data = os.pread(f.fileno(), n, y0 * self.row_bytes)
        if len(data) != n:
            raise OSError(f"{self.path}: short read ({len(data)} of {n} bytes)")
        return np.frombuffer(data, dtype=self.dtype).reshape(y1 - y0, self.width, self.channels)

    def write(self, y0: int, rows: np.ndarray) -> None:
        if rows.shape[1:] != (self.width, self.channels) or y0 < 0 or y0 + rows.shape[0] > self.height:
            raise ValueError(f"rows of shape {rows.shape} do not fit {self.shape} at row {y0}")
        data = np.ascontiguousarray(rows, dtype=self.dtype).tobytes()
        with open(self.path, "r+b", buffering=0) as f:
            done = os.pwrite(f.fileno(), data, y0 * self.row_bytes)
        if done != len(data):
            raise OSError(f"{self.path}: short write")

    # numpy-like access, for code written against arrays (stages/esrgan/tile.py)
    def __getitem__(self, index):
        rows, cols = index if isinstance(index, tuple) else (index, slice(None))
        return self.rows(rows.start or 0, self.height if rows.stop is None else rows.stop)[:, cols]

    def __setitem__(self, index, value: np.ndarray) -> None:
        self.write(index.start or 0, value)


class FloatView:
    """A raster read as float32 in [0, 1] (what the super-resolution tiler takes)."""

    def __init__(self, raster: Raster):
        self.raster, self.shape = raster, raster.shape
        self.top = float(np.iinfo(raster.dtype).max)

    def __getitem__(self, index) -> np.ndarray:
        return self.raster[index].astype(np.float32) / self.top


def from_array(path: Path, array: np.ndarray) -> Raster:
    """A finished raster holding ``array`` (H×W×C), written in bands."""
    h, w, c = array.shape
    raster = Raster.create(path, h, w, c, array.dtype)
    for y in range(0, h, 512):
        raster.write(y, array[y:y + 512])
    return raster.finish()


def source_band(out0: int, out1: int, in_len: int, out_len: int) -> tuple[int, int, float, float]:
    """The input rows an output band [out0, out1) reads under Lanczos: (first, end) to load, and the
    band's box (top, bottom) in input coordinates, as Pillow's ``resize(box=…)`` takes it."""
    f = in_len / out_len
    top, bottom = out0 * f, out1 * f
    margin = int(np.ceil(LANCZOS_SUPPORT * max(1.0, f))) + 2
    return max(0, int(np.floor(top)) - margin), min(in_len, int(np.ceil(bottom)) + margin), top, bottom


def resize_band(load: Callable[[int, int], np.ndarray], in_size: tuple[int, int], out_size: tuple[int, int],
                out0: int, out1: int) -> np.ndarray:
    """Output rows [out0, out1) of a Lanczos resize from ``in_size`` to ``out_size`` (w, h), reading only
    the input rows they need through ``load(y0, y1)`` (H×W×C, any integer type).  Pillow resamples each
    channel in float ("F" mode), so 16-bit values keep their precision; the result has the input's type."""
    (w_in, h_in), (w_out, h_out) = in_size, out_size
    first, end, top, bottom = source_band(out0, out1, h_in, h_out)
    band = load(first, end)
    box = (0.0, top - first, float(w_in), bottom - first)
    peak = float(np.iinfo(band.dtype).max)
    out = np.empty((out1 - out0, w_out, band.shape[2]), dtype=band.dtype)
    for c in range(band.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(band[:, :, c], dtype=np.float32), "F")
        scaled = np.asarray(plane.resize((w_out, out1 - out0), Image.Resampling.LANCZOS, box=box))
        out[:, :, c] = np.clip(np.rint(scaled), 0, peak)
    return out


def resize(src: Raster, path: Path, size: tuple[int, int], band: int = 256,
           check_stop: Callable[[int, int], None] = lambda done, total: None) -> Raster:
    """A Lanczos copy of ``src`` at ``size`` (w, h), made one band of output rows at a time."""
    w, h = size
    out = Raster.create(path, h, w, src.channels, src.dtype)
    bands = range(0, h, band)
    for i, y in enumerate(bands):
        check_stop(i, len(bands))
        out.write(y, resize_band(src.rows, (src.width, src.height), size, y, min(h, y + band)))
    return out.finish()


# --------------------------------------------------------------------------- PNG, row by row

PNG_MODES = {("L", 8): (0, 1), ("RGB", 8): (2, 3), ("LA", 8): (4, 2), ("RGBA", 8): (6, 4),
             ("I;16", 16): (0, 1), ("RGB", 16): (2, 3), ("RGBA", 16): (6, 4)}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(f, width: int, height: int, mode: str, bands: Iterator[np.ndarray], icc: bytes | None = None,
              level: int = 4) -> None:
    """Writes a PNG of ``height`` rows from ``bands`` (arrays of rows, H×W×C, uint8 or uint16, in order) to the
    open binary file ``f``; ``mode`` is "L", "LA", "RGB", "RGBA" (8-bit) or "I;16" / 16-bit "RGB"/"RGBA" when
    the bands are uint16.  ``icc``: the colour profile (an iCCP chunk)."""
    depth = None
    written = 0
    compressor = zlib.compressobj(level)
    previous: np.ndarray | None = None
    for rows in bands:
        if depth is None:
            depth = 16 if rows.dtype == np.uint16 else 8
            colour, channels = PNG_MODES[(mode, depth)]
            f.write(b"\x89PNG\r\n\x1a\n")
            f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)))
            if icc:
                f.write(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
        data = np.ascontiguousarray(rows.astype(">u2") if depth == 16 else rows)
        raw = data.view(np.uint8).reshape(rows.shape[0], -1)
        if raw.shape[1] != width * channels * depth // 8:
            raise ValueError(f"rows of {raw.shape[1]} bytes do not make a {width}-px {mode} row")
        above = np.concatenate([previous if previous is not None else np.zeros_like(raw[:1]), raw[:-1]])
        filtered = np.empty((raw.shape[0], raw.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = 2  # Up
        np.subtract(raw, above, out=filtered[:, 1:])
        previous = raw[-1:].copy()
        written += rows.shape[0]
        if out := compressor.compress(filtered.tobytes()):
            f.write(_chunk(b"IDAT", out))
    if depth is None or written != height:
        raise ValueError(f"a PNG of {height} rows was given {written}")
    f.write(_chunk(b"IDAT", compressor.flush()))
    f.write(_chunk(b"IEND", b""))


def bands_of(raster: Raster, band: int = 256) -> Iterator[np.ndarray]:
    for y in range(0, raster.height, band):
        yield raster.rows(y, y + band)
