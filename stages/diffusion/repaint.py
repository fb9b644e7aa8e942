"""Repainting one region with a diffusion engine: the crop around it, the engine at its working size, the patch
colour-matched and pasted back through the mask.  Used by inpaint, outpaint and the upscale's detail pass; knows
no stage.  Also the per-kind settings those passes share (``[inpaint.face]`` over ``[inpaint]``) and the image's
seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

PARENT = {"face-eyes": "face", "face-mouth": "face"}  # [inpaint.face-eyes] inherits from [inpaint.face]
RING = 16  # px around the mask whose colours the patch is matched to


@dataclass(frozen=True)
class KindSettings:
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    strength: float
    padding: int
    inherit: tuple[str, ...] = ()  # what of the image's own generation the repaint takes: sampler, steps, …


def kind_table(params, kind: str):
    """The [inpaint.<kind>] table of a region kind ("face-eyes" is the field face_eyes)."""
    return getattr(params, kind.replace("-", "_"))


def settings_for(params, kind: str) -> KindSettings:
    """A kind's settings: its own table's keys, else its parent table's (a face part's is [inpaint.face]),
    else [inpaint]'s."""
    chain = [kind_table(params, k) for k in (kind, PARENT.get(kind)) if k]

    def pick(key: str):
        return next((getattr(t, key) for t in chain if getattr(t, key) is not None), getattr(params, key))
    return KindSettings(*(pick(k) for k in ("prompt", "negative_prompt", "steps", "guidance", "strength",
                                             "padding", "inherit")))


# ---------------------------------------------------------------------- geometry (pure)


def crop_box(box: tuple[int, int, int, int], padding: int, image_size: tuple[int, int],
             aspect: float = 1.0) -> tuple[int, int, int, int]:
    """``box`` plus padding, widened to ``aspect`` (w/h) around its centre, shifted (not cut) to fit the image."""
    w_img, h_img = image_size
    x0, y0, x1, y1 = box[0] - padding, box[1] - padding, box[2] + padding, box[3] + padding
    w, h = x1 - x0, y1 - y0
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    w, h = min(w, w_img), min(h, h_img)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - w / 2, 0), w_img - w)))
    top = int(round(min(max(cy - h / 2, 0), h_img - h)))
    return left, top, min(w_img, left + int(round(w))), min(h_img, top + int(round(h)))


def working_size(crop: tuple[int, int], native: int) -> tuple[int, int]:
    """The crop's size scaled so that its long side is ``native``, both sides multiples of 8."""
    w, h = crop
    f = native / max(w, h)
    return max(8, int(round(w * f / 8)) * 8), max(8, int(round(h * f / 8)) * 8)


def colour_match(patch: np.ndarray, reference: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Shifts ``patch`` so that over ``ring`` its per-channel mean and spread (in YCbCr) match ``reference``."""
    if ring.sum() < 16:
        return patch
    p = np.asarray(Image.fromarray(patch).convert("YCbCr"), dtype=np.float32)
    r = np.asarray(Image.fromarray(reference).convert("YCbCr"), dtype=np.float32)
    out = np.empty_like(p)
    for c in range(3):
        pv, rv = p[..., c][ring], r[..., c][ring]
        scale = np.clip(rv.std() / max(pv.std(), 1e-3), 0.5, 2.0)
        out[..., c] = (p[..., c] - pv.mean()) * scale + rv.mean()
    ycc = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "YCbCr")
    return np.asarray(ycc.convert("RGB"))


def paste(original: np.ndarray, patch: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blends ``patch`` into ``original`` through ``mask`` (0–255); where mask is 0 the original stays as it is."""
    out = original.copy()
    sel = mask > 0
    alpha = (mask[sel].astype(np.float32) / 255.0)[:, None]
    out[sel] = np.clip(np.rint(original[sel] * (1 - alpha) + patch[sel] * alpha), 0, 255).astype(np.uint8)
    return out


def ring_of(mask: np.ndarray, width: int = RING) -> np.ndarray:
    grown = np.asarray(Image.fromarray(((mask > 0) * 255).astype(np.uint8)).filter(
        ImageFilter.MaxFilter(2 * (width // 2) + 1))) > 0
    return grown & (mask == 0)


def image_seed(sha256: str, configured: int) -> int:
    return configured if configured >= 0 else int(sha256[:8], 16)


def repaint(engine, image: np.ndarray, mask: np.ndarray, box: tuple, padding: int, resolution: int, prompt: str,
            negative: str, steps: int, guidance: float, strength: float, seed: int, callback=None,
            match: bool = False, control=None, sampling=None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Only-masked inpainting of one region (used by inpaint and outpaint).

    Crops ``box`` plus ``padding`` (square, inside the image), runs the engine at its working size, brings the
    patch back, optionally colour-matches it, and pastes it through ``mask``.  Returns the new image and the crop.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = crop = crop_box(box, padding, (w, h), aspect=1.0)
    part, m = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    size = working_size((x1 - x0, y1 - y0), resolution or engine.native)
    guide = control(crop, size) if control is not None else None
    generated = engine.inpaint(Image.fromarray(part).resize(size, Image.Resampling.LANCZOS),
                               Image.fromarray(m).resize(size, Image.Resampling.BILINEAR), prompt, negative, steps,
                               guidance, strength, seed, callback=callback, control=guide, sampling=sampling)
    patch = np.asarray(generated.convert("RGB").resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS))
    if match:
        patch = colour_match(patch, part, ring_of(m))
    out = image.copy()
    out[y0:y1, x0:x1] = paste(part, patch, m)
    return out, crop
