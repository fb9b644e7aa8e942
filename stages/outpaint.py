"""30 — outpaint: aspect-ratio variants of the master, by extending its canvas.

For each variant in ``[outpaint].variants`` (see ``outpaint_plan`` for sizes and
steps), each step:

1. places the current canvas on the larger one and infills the new strips;
2. with a generative model: inpaints each new strip plus a band reaching
   ``seam_band`` px into the picture, at ``strength``;
3. seam pass: re-inpaints a narrow band across each join at ``seam_strength``.

Without a model the variants are the infill alone, and the manifest says so.
The master's pixels stay bit-identical outside the seam band (every mask is 0
there, and pasting copies masked-out pixels untouched).

Writes ``30-outpaint-<label>-step<i>.png`` per step, ``30-outpaint-<label>.png``
and ``30-outpaint-<label>-compare.png`` (master beside variant, the master's frame
outlined), e.g. label ``16x9``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import structlog
from PIL import Image, ImageDraw

from daemon.config import OutpaintConfig
from stages import prompts
from stages.base import JobContext, ModelRef, Stage, StageResult, from_section
from stages.device import dtype_name, pick_device, pick_dtype
from stages.infill import infill, seam_score
from stages.inpaint import image_seed, repaint
from stages.outpaint_plan import Plan, plan

log = structlog.get_logger("polishd.outpaint")


@dataclass(frozen=True)
class OutpaintParams(OutpaintConfig):
    model_resolved: str = ""  # [outpaint].model, else [inpaint].model
    model_config_resolved: str = ""  # and the model_config that goes with it
    resolution: int = 0
    device: str = "auto"


def strip_boxes(size: tuple[int, int], offset: tuple[int, int], inner: tuple[int, int]) -> list[tuple]:
    """The new strips around a placed picture: (side, x0, y0, x1, y1)."""
    w, h = size
    ox, oy = offset
    iw, ih = inner
    out = []
    if ox > 0:
        out.append(("left", 0, 0, ox, h))
    if ox + iw < w:
        out.append(("right", ox + iw, 0, w, h))
    if oy > 0:
        out.append(("top", 0, 0, w, oy))
    if oy + ih < h:
        out.append(("bottom", 0, oy + ih, w, h))
    return out


def band_mask(size: tuple[int, int], offset: tuple[int, int], inner: tuple[int, int], side: str, band: int,
              outside: bool = True) -> np.ndarray:
    """A mask at the join on ``side`` of the placed picture.

    ``outside``: 255 over the new strip, fading to 0 over ``band`` px into the picture (the generative pass).
    Otherwise: a band across the join, fading to 0 at ``band`` px on each side (the seam pass).
    Pixels ``band`` px or more inside the picture are always 0.
    """
    w, h = size
    ox, oy = offset
    iw, ih = inner
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    # Distance from the join, positive inside the picture.
    d = {"left": xs - ox, "right": (ox + iw) - xs, "top": ys - oy, "bottom": (oy + ih) - ys}[side]
    d = np.broadcast_to(d, (h, w))
    fade = np.clip(1 - d / band, 0, 1) if band > 0 else np.zeros_like(d)
    if outside:
        m = np.where(d < 0, 1.0, fade)
    else:
        m = np.clip(1 - np.abs(d) / band, 0, 1) if band > 0 else np.zeros_like(d)
    return np.rint(m * 255).astype(np.uint8)


class OutpaintStage(Stage):
    name = "outpaint"
    prefix = "30"

    def params(self, ctx: JobContext) -> OutpaintParams:
        cfg = ctx.config
        own = bool(cfg.outpaint.model)
        return from_section(OutpaintParams, cfg.outpaint, model_resolved=cfg.outpaint.model or cfg.inpaint.model,
                            model_config_resolved=cfg.outpaint.model_config if own else cfg.inpaint.model_config,
                            resolution=cfg.inpaint.resolution, device=cfg.daemon.device)

    def able_to_run(self, ctx: JobContext, params: OutpaintParams) -> str | None:
        return None if params.variants else "no variants asked for ([outpaint].variants is empty)"

    def _engine(self, ctx: JobContext, params: OutpaintParams):
        """The generative engine, or (None, why not)."""
        if not params.model_resolved:
            return None, "no generative model configured: infill only"
        from stages.diffusion import engine

        base = ctx.config.source.parent if ctx.config.source else None
        try:
            engine.resolve(params.model_resolved, base, params.model_config_resolved)
        except engine.ModelNotFound as exc:
            return None, f"model not found ({exc}): infill only"
        device = pick_device(params.device)
        return engine.get(params.model_resolved, base, device, pick_dtype(device, "auto"),
                          ctx.config.paths.models, params.model_config_resolved), None

    def run(self, ctx: JobContext, params: OutpaintParams) -> StageResult:
        master = ctx.open_master().convert("RGB")
        seed = image_seed(ctx.sha256, ctx.config.inpaint.seed)
        found = prompts.from_image(Image.open(ctx.path(ctx.original)))
        prompt = params.prompt.replace("{prompt}", found.positive if found else "").strip(" ,")
        negative = ", ".join(p for p in (params.negative_prompt, found.negative if found else "") if p)
        engine, why_not = self._engine(ctx, params)
        rgb = np.asarray(master)
        shared: dict[tuple, tuple[np.ndarray, str]] = {}  # step prefix → (canvas, file)
        outputs, produces, plans = [], {}, []
        for spec in params.variants:
            p = plan(master.size, spec, params.max_step)
            label = p.target.label
            canvas, steps_done = rgb, []
            for i, step in enumerate(p.steps):
                ctx.check_stop()
                key = p.steps[:i + 1]
                if key in shared:
                    canvas, file = shared[key]
                    steps_done.append({"size": list(step.size), "offset": list(step.offset), "file": file,
                                       "shared": True})
                    continue
                canvas = self._step(canvas, step, params, engine, prompt, negative, seed + i, ctx)
                file = f"{self.prefix}-outpaint-{label}-step{i + 1}.png"
                ctx.archive.save_image(file, Image.fromarray(canvas))
                outputs.append(file)
                shared[key] = (canvas, file)
                steps_done.append({"size": list(step.size), "offset": list(step.offset), "file": file})
            final = Image.fromarray(canvas)
            exact = p.target.exact
            if exact and final.size != exact:
                final = final.resize(exact, Image.Resampling.LANCZOS)
            name = f"{self.prefix}-outpaint-{label}.png"
            ctx.archive.save_image(name, final)
            compare = f"{self.prefix}-outpaint-{label}-compare.png"
            ctx.archive.save_image(compare, side_by_side(master, Image.fromarray(canvas), p))
            outputs += [name, compare]
            produces[f"variant-{label}"] = name
            known = np.zeros(canvas.shape[:2], bool)
            known[p.origin[1]:p.origin[1] + master.height, p.origin[0]:p.origin[0] + master.width] = True
            plans.append({"variant": spec, "label": label, "size": list(p.size), "origin": list(p.origin),
                          "output_size": list(final.size), "steps": steps_done,
                          "seam_score": round(seam_score(canvas, known), 3)})
        details = {"infill": params.infill, "generative": engine is not None, "variants": plans,
                   "max_step": params.max_step}
        result = StageResult(outputs=outputs, produces=produces, details=details,
                             summary=", ".join(f"{v['label']} {v['output_size'][0]}×{v['output_size'][1]}"
                                               for v in plans) + ("" if engine else f" ({why_not})"))
        if engine is not None:
            details.update({"prompt": prompt, "negative_prompt": negative, "seed": seed, "steps": params.steps,
                            "strength": params.strength, "guidance": params.guidance,
                            "seam_band": params.seam_band, "seam_strength": params.seam_strength})
            result.models = [ModelRef(engine.name, engine.sha256, engine.spec)]
            result.device, result.dtype, result.seed = str(engine.device), dtype_name(engine.dtype), seed
        return result

    def _step(self, canvas: np.ndarray, step, params: OutpaintParams, engine, prompt: str, negative: str,
              seed: int, ctx: JobContext) -> np.ndarray:
        h, w = canvas.shape[:2]
        big = np.zeros((step.size[1], step.size[0], 3), np.uint8)
        ox, oy = step.offset
        big[oy:oy + h, ox:ox + w] = canvas
        known = np.zeros(big.shape[:2], bool)
        known[oy:oy + h, ox:ox + w] = True
        out = infill(params.infill, big, known, seed)
        if engine is None:
            return out
        for n, (side, x0, y0, x1, y1) in enumerate(strip_boxes(step.size, step.offset, (w, h))):
            mask = band_mask(step.size, step.offset, (w, h), side, params.seam_band, outside=True)
            out = self._inpaint(out, mask, (x0, y0, x1, y1), engine, prompt, negative, params.strength,
                                params, seed + 100 * n, ctx)
        if params.seam_pass and params.seam_band > 0:
            for n, (side, *_box) in enumerate(strip_boxes(step.size, step.offset, (w, h))):
                mask = band_mask(step.size, step.offset, (w, h), side, params.seam_band // 2, outside=False)
                ys, xs = np.nonzero(mask)
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                out = self._inpaint(out, mask, box, engine, prompt, negative, params.seam_strength, params,
                                    seed + 1000 + n, ctx)
        return out

    def _inpaint(self, image: np.ndarray, mask: np.ndarray, box, engine, prompt, negative, strength,
                 params: OutpaintParams, seed: int, ctx: JobContext) -> np.ndarray:
        return repaint(engine, image, mask, box, 0, params.resolution, prompt, negative, params.steps,
                       params.guidance, strength, seed, ctx.check_stop)[0]


def side_by_side(master: Image.Image, variant: Image.Image, p: Plan, height: int = 512) -> Image.Image:
    """Master and variant at one height, the master's frame outlined on the variant: the drift check."""
    f = height / variant.height
    v = variant.resize((max(1, round(variant.width * f)), height), Image.Resampling.LANCZOS)
    m = master.resize((max(1, round(master.width * f)), max(1, round(master.height * f))),
                      Image.Resampling.LANCZOS)
    sheet = Image.new("RGB", (m.width + v.width + 24, height + 16), (28, 28, 28))
    sheet.paste(m, (8, 8 + (height - m.height) // 2))
    sheet.paste(v, (m.width + 16, 8))
    draw = ImageDraw.Draw(sheet)
    x0 = m.width + 16 + round(p.origin[0] * f)
    y0 = 8 + round(p.origin[1] * f)
    draw.rectangle((x0, y0, x0 + m.width - 1, y0 + m.height - 1), outline=(255, 200, 0), width=2)
    return sheet
