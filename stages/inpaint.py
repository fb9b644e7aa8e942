"""20 — inpaint: regenerate the masked faces and hands, only inside their masks.

For each region (one per detection, or one per mask): crop the region's box plus
``padding`` px, widened to the model's aspect, resize to the model's working size
(a multiple of 8), inpaint, resize back, match the patch's colour to the ring of
pixels around the mask, and paste it through the feathered mask.  Pixels where
the mask is 0 are copied from the input untouched — bit-identical, so the VAE's
colour shift never reaches the rest of the picture.

A user's removal mask (``<name>.remove.png``, kind ``remove``) is handled first and
needs no model: what is under it is filled from the picture around it (PatchMatch,
or OpenCV's Telea / Navier-Stokes), then — with a model and ``refine`` — repainted
at a moderate strength so the fill reads as part of the picture.

Writes ``20-<kind>-<i>-before.png`` / ``-after.png`` per region and
``20-inpaint.png``, the new master.  Without a model faces, hands and user masks
are left as they are, with the reason: a face is never replaced by a
non-generative fill.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import structlog
from PIL import Image, ImageFilter

from daemon.config import InpaintConfig
from stages import prompts
from stages.base import JobContext, ModelRef, Stage, StageResult, from_section
from stages.device import dtype_name, pick_device, pick_dtype

log = structlog.get_logger("polishd.inpaint")

KINDS = ("remove", "face", "hand", "user")  # the order regions are done in
RING = 16  # px around the mask whose colours the patch is matched to


@dataclass(frozen=True)
class InpaintParams(InpaintConfig):
    device: str = "auto"


@dataclass(frozen=True)
class Region:
    kind: str
    index: int
    box: tuple[int, int, int, int]  # the area that must be repainted (mask bounds or a detection box)
    mask: str  # archive name of the mask


@dataclass(frozen=True)
class KindSettings:
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    strength: float
    padding: int


def settings_for(params: InpaintConfig, kind: str) -> KindSettings:
    over = getattr(params, kind)
    pick = lambda key: getattr(over, key) if getattr(over, key) is not None else getattr(params, key)  # noqa: E731
    return KindSettings(*(pick(k) for k in ("prompt", "negative_prompt", "steps", "guidance", "strength",
                                             "padding")))


# ---------------------------------------------------------------------- geometry (pure)


def mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


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


# ---------------------------------------------------------------------- the stage


class InpaintStage(Stage):
    name = "inpaint"
    prefix = "20"

    def params(self, ctx: JobContext) -> InpaintParams:
        return from_section(InpaintParams, ctx.config.inpaint, device=ctx.config.daemon.device)

    def regions(self, ctx: JobContext, params: InpaintParams) -> list[Region]:
        """What to repaint: one region per detection of a merged mask, per separate mask, per user mask."""
        out: list[Region] = []
        detections = _detections(ctx)
        for key, name in sorted(ctx.artifacts.items()):
            m = re.fullmatch(r"mask-(face|hand|user|remove)(?:-(\d+))?", key)
            if not m or not getattr(params, m.group(1)).enabled:
                continue
            kind = m.group(1)
            with Image.open(ctx.path(name)) as im:
                mask = np.asarray(im.convert("L"))
            bounds = mask_bounds(mask)
            if bounds is None:
                continue
            boxes = [d["box"] for d in detections if d["kind"] == kind] if m.group(2) is None else []
            if kind in ("face", "hand") and len(boxes) > 1:
                for i, b in enumerate(boxes):
                    box = tuple(int(round(v)) for v in b)
                    out.append(Region(kind, i, box, name))
            else:
                out.append(Region(kind, int(m.group(2) or 0), bounds, name))
        return sorted(out, key=lambda r: KINDS.index(r.kind))  # removals first: later repaints see them gone

    def model_problem(self, ctx: JobContext, params: InpaintParams) -> str | None:
        """Why the generative model cannot be used, or None."""
        if not params.model:
            return "no inpainting model configured ([inpaint].model is empty); faces and hands left as they are"
        from stages.diffusion import engine

        try:
            how, _ = engine.resolve(params.model, ctx.config.source.parent if ctx.config.source else None,
                                    params.model_config)
        except engine.ModelNotFound as exc:
            return f"model not found: {exc}"
        if how == "hub" and not _in_hf_cache(params.model):
            return (f"model not found: [inpaint].model = {params.model!r} is not in the Hugging Face cache; "
                    "polishd never downloads models")
        return None

    def able_to_run(self, ctx: JobContext, params: InpaintParams) -> str | None:
        regions = self.regions(ctx, params)
        if not regions:
            return "no masks to inpaint"
        problem = self.model_problem(ctx, params)
        return None if any(r.kind == "remove" for r in regions) else problem

    def setup(self, ctx: JobContext, params: InpaintParams) -> None:
        from stages.diffusion import engine

        self.engine, self.without_model = None, self.model_problem(ctx, params)
        # Which masks there are, from their names (able_to_run has read them already): load the model only
        # when something will use it.
        kinds = {m.group(1) for key in ctx.artifacts if (m := re.fullmatch(r"mask-(\w+?)(?:-\d+)?", key))}
        kinds = {k for k in kinds if k in KINDS and getattr(params, k).enabled}
        wanted = kinds & {"face", "hand", "user"} or (params.remove.refine and "remove" in kinds)
        if self.without_model is None and wanted:
            device = pick_device(params.device)
            self.engine = engine.get(params.model, ctx.config.source.parent if ctx.config.source else None,
                                     device, pick_dtype(device, "auto"), ctx.config.paths.models,
                                     params.model_config)

    def close(self) -> None:
        from sys import modules

        if "stages.diffusion.engine" in modules:
            modules["stages.diffusion.engine"].unload()

    def run(self, ctx: JobContext, params: InpaintParams) -> StageResult:
        image = ctx.open_master()
        mode = image.mode
        rgb = np.asarray(image.convert("RGB")).copy()
        seed = image_seed(ctx.sha256, params.seed)
        found = prompts.from_image(Image.open(ctx.path(ctx.original)))
        outputs, records = [], []
        e = self.engine
        for n, region in enumerate(self.regions(ctx, params)):
            ctx.check_stop()
            ks = settings_for(params, region.kind)
            record = {"kind": region.kind, "index": region.index, "box": list(region.box)}
            if region.kind != "remove" and e is None:
                records.append({**record, "skipped": self.without_model})
                continue
            with Image.open(ctx.path(region.mask)) as im:
                full_mask = np.asarray(im.convert("L"))
            x0, y0, x1, y1 = crop_box(region.box, ks.padding, (rgb.shape[1], rgb.shape[0]))
            before = rgb
            if region.kind == "remove":
                rgb, fill_crop = remove(rgb, full_mask, region.box, params.remove.fill)
                record.update(fill=params.remove.fill, refined=False)
                (x0, y0, x1, y1) = _union((x0, y0, x1, y1), fill_crop)
            if e is not None and (region.kind != "remove" or params.remove.refine):
                prompt, negative, source = _prompt(ctx, region.kind, ks, found)
                rgb, crop = repaint(e, rgb, full_mask, region.box, ks.padding, params.resolution, prompt, negative,
                                    ks.steps, ks.guidance, ks.strength, seed + n, ctx.check_stop,
                                    params.colour_match)
                (x0, y0, x1, y1) = _union((x0, y0, x1, y1), crop)
                record.update(seed=seed + n, prompt=prompt, negative_prompt=negative, prompt_source=source,
                              steps=ks.steps, strength=ks.strength, guidance=ks.guidance, padding=ks.padding,
                              **({"refined": True} if region.kind == "remove" else {}))
            stem = f"{self.prefix}-{region.kind}-{region.index}"
            ctx.archive.save_image(f"{stem}-before.png", Image.fromarray(before[y0:y1, x0:x1]))
            ctx.archive.save_image(f"{stem}-after.png", Image.fromarray(rgb[y0:y1, x0:x1]))
            outputs += [f"{stem}-before.png", f"{stem}-after.png"]
            records.append(record)
        done = [r for r in records if "skipped" not in r]  # never empty: able_to_run saw to that
        result = Image.fromarray(rgb)
        if mode in ("RGBA", "LA"):
            result.putalpha(image.getchannel("A"))
        name = f"{self.prefix}-inpaint.png"
        ctx.archive.save_image(name, result)
        outputs.append(name)
        removed = sum(r["kind"] == "remove" for r in done)
        parts = [f"{removed} removed ({params.remove.fill})"] if removed else []
        if len(done) > removed:
            parts.append(f"{len(done) - removed} regions repainted with {e.name}")
        if len(records) > len(done):
            parts.append(f"{len(records) - len(done)} left as they are: {self.without_model}")
        return StageResult(
            outputs=outputs, summary="; ".join(parts),
            models=[ModelRef(e.name, e.sha256, e.spec)] if e else [], device=str(e.device) if e else None,
            dtype=dtype_name(e.dtype) if e else None, seed=seed,
            details={"pipeline": e.kind if e else None, "scheduler": type(e.pipe.scheduler).__name__ if e else None,
                     "regions": records},
            produces={"master": name, "inpainted": name})


def _union(a: tuple, b: tuple) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def remove(image: np.ndarray, mask: np.ndarray, box: tuple, method: str) -> tuple[np.ndarray, tuple]:
    """Fills what is under ``mask`` from the picture around it, with no model.

    Works on a crop of three times the box (the texture that fills the hole comes from close by, and
    PatchMatch's cost grows with the area it searches); pastes through ``mask``, so pixels where the
    mask is 0 stay bit-identical.  Returns the new image and the crop.
    """
    side = max(box[2] - box[0], box[3] - box[1])
    x0, y0, x1, y1 = crop = crop_box(box, side, (image.shape[1], image.shape[0]))
    part, m = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    hole = (m > 0).astype(np.uint8) * 255
    if method == "patchmatch":
        try:
            from patchmatch import patch_match  # pypatchmatch
        except Exception as exc:  # its native library builds at first import and may fail
            raise RuntimeError(f'[inpaint.remove].fill = "patchmatch" needs a working pypatchmatch ({exc})') \
                from None
        filled = np.asarray(patch_match.inpaint(part.copy(), mask=hole, patch_size=3), dtype=np.uint8)
    else:
        import cv2

        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        filled = cv2.inpaint(np.ascontiguousarray(part), hole, 5, flag)
    out = image.copy()
    out[y0:y1, x0:x1] = paste(part, filled, m)
    return out, crop


def repaint(engine, image: np.ndarray, mask: np.ndarray, box: tuple, padding: int, resolution: int, prompt: str,
            negative: str, steps: int, guidance: float, strength: float, seed: int, callback=None,
            match: bool = False) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Only-masked inpainting of one region (used by inpaint and outpaint).

    Crops ``box`` plus ``padding`` (square, inside the image), runs the engine at its working size, brings the
    patch back, optionally colour-matches it, and pastes it through ``mask``.  Returns the new image and the crop.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = crop = crop_box(box, padding, (w, h), aspect=1.0)
    part, m = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    size = working_size((x1 - x0, y1 - y0), resolution or engine.native)
    generated = engine.inpaint(Image.fromarray(part).resize(size, Image.Resampling.LANCZOS),
                               Image.fromarray(m).resize(size, Image.Resampling.BILINEAR), prompt, negative, steps,
                               guidance, strength, seed, callback=callback)
    patch = np.asarray(generated.convert("RGB").resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS))
    if match:
        patch = colour_match(patch, part, ring_of(m))
    out = image.copy()
    out[y0:y1, x0:x1] = paste(part, patch, m)
    return out, crop


def _detections(ctx: JobContext) -> list[dict]:
    try:
        manifest = json.loads(ctx.path("manifest.json").read_text())
    except FileNotFoundError:
        return []
    entry = next((s for s in manifest.get("stages", []) if s["name"] == "automask"), None)
    return (entry or {}).get("details", {}).get("detections", [])


def _prompt(ctx: JobContext, kind: str, ks: KindSettings, found) -> tuple[str, str, str]:
    """(prompt, negative, source): a sidecar's prompt, else the image's own in the template, else the template."""
    side = ctx.overrides.get("inpaint", {}) if isinstance(ctx.overrides.get("inpaint"), dict) else {}
    side_kind = side.get(kind, {}) if isinstance(side.get(kind), dict) else {}
    if "prompt" in side_kind or "prompt" in side:
        own = found.positive if found is not None else ""
        return ks.prompt.replace("{prompt}", own).strip(" ,"), ks.negative_prompt, "sidecar"
    if found is not None:
        prompt = ks.prompt.replace("{prompt}", found.positive)
        negative = ", ".join(p for p in (ks.negative_prompt, found.negative) if p)
        return prompt, negative, found.source
    return ks.prompt.replace("{prompt}", "").strip(" ,"), ks.negative_prompt, "config"


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - diffusers depends on it
        return False
    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
