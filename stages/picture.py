"""The picture model, from intake to every output.

* **Orientation.**  EXIF orientation is applied once, at intake: when the dropped
  file carries a turn or a flip, the upright picture is written as
  ``00-upright.png`` and every stage starts from it.  ``00-original.*`` stays
  byte-identical to what was dropped; no output carries an orientation tag.
* **Colour.**  Pixel values are kept as they are, in the source's colour space,
  and every picture the pipeline writes carries the source's ICC profile (masks
  carry none: they are not colours).  Nothing is converted on the way, so a wide
  gamut survives to the end; converting for publication is the delivery's job.
* **Depth.**  Detection, repaints and infill work on an 8-bit view: 16-bit input
  is scaled (65535 → 255), never clipped.  The upscaler reads the full depth.
* **Alpha.**  Colours under fully transparent pixels are hidden data: the 8-bit
  view replaces them by the nearest visible colour, so they never leak into
  visible pixels through a blur, a repaint or an upscale.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

UPRIGHT = "00-upright.png"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ORIENTATION_TAG = 0x0112


@dataclass
class View:
    """An 8-bit picture: RGB values (colours under fully transparent pixels filled) and alpha, if any."""

    rgb: np.ndarray             # H×W×3 uint8
    alpha: np.ndarray | None    # H×W uint8
    grey: bool = False          # the source had one colour channel

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    def image(self) -> Image.Image:
        """RGB, or RGBA when there is alpha."""
        im = Image.fromarray(self.rgb)
        if self.alpha is not None:
            im.putalpha(Image.fromarray(self.alpha))
        return im

    def flat(self) -> Image.Image:
        """RGB for a person to look at: transparent areas shown over grey."""
        return flatten(self.image())


def flatten(image: Image.Image, background: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """An RGB(A) picture as RGB for a person to look at: transparent areas over ``background``."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    out = Image.new("RGB", image.size, background)
    out.paste(image, mask=image.getchannel("A"))
    return out


def orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # a broken EXIF block is not worth failing an image for
        return 1


def upright(image: Image.Image) -> Image.Image | None:
    """The picture turned upright when its EXIF orientation asks for it, else None (it already is)."""
    if orientation(image) not in range(2, 9):  # 1 is upright; anything else is not a valid tag
        return None
    turned = ImageOps.exif_transpose(image)
    if turned.mode not in ("1", "L", "LA", "RGB", "RGBA", "P", *SIXTEEN):
        turned = turned.convert("RGBA" if "A" in turned.getbands() else "RGB")
    return turned


def view(image: Image.Image) -> View:
    """The 8-bit view of any decoded picture."""
    mode = image.mode
    if mode in SIXTEEN:
        values = np.asarray(image, dtype=np.float64)
        grey8 = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return View(np.repeat(grey8[..., None], 3, axis=2), None, grey=True)
    if mode == "F":
        image = image.convert("L")
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    grey = image.mode in ("1", "L", "LA", "La")
    alpha = np.asarray(image.getchannel("A")).copy() if "A" in image.getbands() else None
    rgb = np.asarray(image.convert("RGB")).copy()
    if alpha is not None:
        rgb = fill_hidden(rgb, alpha)
    return View(rgb, alpha, grey)


def open_view(path) -> View:
    with Image.open(path) as im:
        im.load()
        return view(im)


def fill_hidden(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` with every fully transparent pixel set to the colour of the nearest visible one."""
    hidden = alpha == 0
    if not hidden.any() or hidden.all():
        return rgb
    import cv2

    _dist, labels = cv2.distanceTransformWithLabels(hidden.astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(~hidden)  # visible pixels in raster order: label n is the n-th of them
    nearest = labels[hidden] - 1
    out = rgb.copy()
    out[hidden] = rgb[ys[nearest], xs[nearest]]
    return out


def icc_of(image: Image.Image) -> bytes | None:
    icc = image.info.get("icc_profile")
    return icc if isinstance(icc, bytes) and icc else None


def without_text(data: bytes) -> bytes:
    """A PNG's bytes with its text chunks left out: the pixels and the colour chunks as they were."""
    out, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        end = pos + 12 + length
        if kind not in TEXT_CHUNKS:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out)


@contextmanager
def opened_for_metadata(path: Path):
    """The source opened for its metadata (text, EXIF).  A PNG whose text Pillow refuses (decompressing past
    PngImagePlugin.MAX_TEXT_CHUNK) is opened without its text: its picture's other metadata still counts."""
    try:
        im = Image.open(path)
    except ValueError as exc:
        if "MAX_TEXT_" not in str(exc):
            raise
        im = Image.open(io.BytesIO(without_text(Path(path).read_bytes())))
    with im:
        yield im
