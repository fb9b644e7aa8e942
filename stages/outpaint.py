"""30 — outpaint: aspect-ratio variants of the master, by extending its canvas.

For each variant in ``[outpaint].variants`` (see ``outpaint_plan`` for sizes and
steps), each step:

1. places the current canvas on the larger one and infills the new strips;
2. with a generative model: inpaints each new strip plus a band reaching
   ``seam_band`` px into the picture, at ``strength``;
3. seam pass: re-inpaints a narrow band across each join at ``seam_strength``.

Without a model each variant is made in one step by the infill alone (``auto``: a blurred, darkened copy of
the picture behind it), flagged for review and, unless ``[deliver].infill_variants`` says otherwise, not
delivered until a reviewer approves it; the manifest and the review page say which infill made it.
The master's pixels stay bit-identical outside the seam band (every mask is 0
there, and pasting copies masked-out pixels untouched).

Every variant's seams are measured (``stages.colour.seam_drift``: CIEDE2000 between bands either side of
each join, the lightness difference, the seam's visibility) and recorded; past ``[outpaint.gate]``'s limits a
variant whose new area tries to continue the picture (a generative model's, or a continuing infill's) is
flagged for review with the figures.

Writes ``30-outpaint-<label>-step<i>.png`` per step, ``30-outpaint-<label>.png``
and ``30-outpaint-<label>-compare.png`` (master beside variant, the master's frame
outlined), e.g. label ``16x9``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import structlog
from PIL import Image, ImageDraw

from stages.base import JobContext, ModelRef, Stage, StageResult, from_section
from stages.colour import seam_drift
from stages.device import dtype_name
from stages.diffusion.repaint import image_seed, repaint
from stages.generative import acquire_for, image_checkpoint
from stages.infill import CONTINUING, infill, seam_score
from stages.models import ModelKind, ModelSetting
from stages.outpaint_plan import VARIANT, Plan, Step, plan
from stages.picture import View, flatten
from stages.products import Picture, Products, Slot, Variant
from stages.prompts import fill
from stages.records import OutpaintDetails, VariantPlan
from stages.schema import Errors

log = structlog.get_logger("polishd.outpaint")


@dataclass(frozen=True)
class DriftGate:
    """[outpaint.gate]: how far a variant's new area may drift from the picture across its seams."""

    enabled: bool = True
    max_delta_e: float = 8.0      # mean CIEDE2000 between the bands either side of the joins
    max_seam: float = 2.0         # the jump across a join over the picture's own, on its most visible side

    def check(self, err: Errors) -> None:
        err.between("max_delta_e", self.max_delta_e, 0.5, 50.0)
        err.between("max_seam", self.max_seam, 1.0, 50.0)


MAX_SKEW = 16      # a variant's long side at most this many times its short side
MAX_SIDE = 32768   # px: a variant's exact size at most this a side


@dataclass(frozen=True)
class OutpaintConfig:
    enabled: bool = True
    variants: tuple[str, ...] = ("16:9", "9:16", "4:5")
    max_step: float = 0.3
    # "auto": with a generative model, "blur" (its starting canvas); without, "backdrop"
    infill: Literal["auto", "backdrop", "blur", "reflect", "color", "patchmatch"] = "auto"
    model: str = ""
    model_config: str = ""
    prompt: str = "{prompt}"
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.0
    strength: float = 0.9
    seam_band: int = 32
    seam_strength: float = 0.35
    seam_pass: bool = True
    gate: DriftGate = field(default_factory=DriftGate)

    def check(self, err: Errors) -> None:
        for v in self.variants:
            m = VARIANT.match(v)
            if not m or "0" in (m.group(1), m.group(2), m.group(3), m.group(4)):
                err.add("variants", f'entries are "W:H" or "WIDTHxHEIGHT", optionally "@left", "@right", "@top", '
                                    f'"@bottom" or "@center" (got {v!r})')
                continue
            a, b = (int(m.group(1)), int(m.group(2))) if m.group(1) else (int(m.group(3)), int(m.group(4)))
            if max(a, b) > MAX_SKEW * min(a, b) or (not m.group(1) and max(a, b) > MAX_SIDE):
                err.add("variants", f"{v!r} is past what a variant may be: at most {MAX_SKEW}:1 and "
                                    f"{MAX_SIDE} px a side")
        err.between("max_step", self.max_step, 0.05, 1.0)
        err.generation(self)
        err.between("seam_band", self.seam_band, 0, 512)
        err.between("seam_strength", self.seam_strength, 0.0, 1.0)


@dataclass(frozen=True)
class OutpaintParams(OutpaintConfig):
    inpaint_model: str = ""         # [inpaint].model and .model_config: used when [outpaint].model is empty
    inpaint_model_config: str = ""
    seed: int = -1                  # [inpaint].seed: one seed setting for every repaint of an image
    resolution: int = 0             # [inpaint].resolution
    device: str = "auto"            # [daemon].device
    model_from_image: bool = True   # [inpaint].model_from_image: the image's own checkpoint first
    state: str = ""                 # [paths].state (checkpoint hashes)
    max_pixels: int = 89_478_485    # [daemon].max_pixels: no canvas larger is ever allocated

    @property
    def generative(self) -> bool:
        return bool(self.model or self.inpaint_model)


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
    if outside:  # noqa: SIM108 (two cases read better than a nested conditional expression)
        m = np.where(d < 0, 1.0, fade)
    else:
        m = np.clip(1 - np.abs(d) / band, 0, 1) if band > 0 else np.zeros_like(d)
    return np.rint(m * 255).astype(np.uint8)


class OutpaintStage(Stage):
    name = "outpaint"
    prefix = "30"
    Config = OutpaintConfig
    consumes = frozenset({Slot.SOURCE, Slot.MASTER})
    produces = frozenset({Slot.VARIANTS})
    version = 2  # without a model: one step, the backdrop; every variant's seams measured

    def params(self, config) -> OutpaintParams:
        inpaint = config.inpaint
        return from_section(OutpaintParams, config.outpaint, inpaint_model=inpaint.model,
                            inpaint_model_config=inpaint.model_config, seed=inpaint.seed,
                            resolution=inpaint.resolution, device=config.daemon.device,
                            model_from_image=inpaint.model_from_image, state=str(config.paths.state),
                            max_pixels=config.daemon.max_pixels)

    def model_settings(self, params: OutpaintParams) -> list[ModelSetting]:
        """[outpaint].model (with its model_config), else [inpaint].model (with its)."""
        table, model, config = ("outpaint", params.model, params.model_config) if params.model else \
            ("inpaint", params.inpaint_model, params.inpaint_model_config)
        return [m for m in (ModelSetting(f"[{table}].model", model, ModelKind.DIFFUSION),
                            ModelSetting(f"[{table}].model_config", config, ModelKind.DIFFUSION_CONFIG))
                if m.value]

    def skip_reason(self, ctx: JobContext, params: OutpaintParams) -> str | None:
        if not params.variants:
            return "no variants asked for ([outpaint].variants is empty)"
        return ctx.models.problem(self.model_settings(params)) if params.generative else None

    def _engine(self, ctx: JobContext, params: OutpaintParams):
        """(the generative engine, which model and why), or (None, "") — infill only — when there is no model:
        the image's own checkpoint first (as inpaint), then [outpaint].model, then [inpaint].model."""
        own = image_checkpoint(ctx, params.state) if params.model_from_image else None
        if not params.generative and (own is None or own.path is None):
            return None, ""
        settings = self.model_settings(params)
        model = next((m for m in settings if m.kind == ModelKind.DIFFUSION), None)
        config = next((m for m in settings if m.kind == ModelKind.DIFFUSION_CONFIG), None)
        return acquire_for(ctx, model, config, params.device, params.model_from_image, params.state)

    def run(self, ctx: JobContext, params: OutpaintParams) -> StageResult:
        view = ctx.view(ctx.products.master)
        master = Image.fromarray(view.rgb)
        seed = image_seed(ctx.sha256, params.seed)
        found = ctx.products.source.prompt
        prompt, negative = fill(params.prompt, params.negative_prompt, found)
        engine, chosen = self._engine(ctx, params)
        method = params.infill if params.infill != "auto" else ("blur" if engine is not None else "backdrop")
        rgb = view.rgb
        shared: dict[tuple, str] = {}  # step prefix → its file (read back when a later variant shares it)
        outputs, variants, plans, attention = [], [], [], []
        for spec in params.variants:
            p = plan(master.size, spec, params.max_step)
            if p.size[0] * p.size[1] > params.max_pixels:  # never allocated: said, and the other variants go on
                attention.append(f"variant {p.target.label} not made: its {p.size[0]}×{p.size[1]} canvas is past "
                                 f"[daemon].max_pixels ({params.max_pixels})")
                continue
            if engine is None and p.steps:  # the infill alone: one step to the whole canvas, not infill on infill
                p = dataclasses.replace(p, steps=(Step(p.size, p.origin),))
            label = p.target.label
            canvas, steps_done = rgb, []
            for i, step in enumerate(p.steps):
                ctx.check_stop(i, len(p.steps), f"steps of {label}")
                key = p.steps[:i + 1]
                record = {"size": list(step.size), "offset": list(step.offset)}
                if key in shared:
                    canvas = np.asarray(Image.open(ctx.path(shared[key])).convert("RGB"))
                    steps_done.append({**record, "file": shared[key], "shared": True})
                    continue
                canvas = self._step(canvas, step, params, method, engine, prompt, negative, seed + i, ctx)
                if i == len(p.steps) - 1 and not (p.target.exact and tuple(step.size) != p.target.exact):
                    file = f"{self.prefix}-outpaint-{label}.png"  # the last step is the variant: one file, not two
                else:
                    file = ctx.save_picture(f"{self.prefix}-outpaint-{label}-step{i + 1}.png", Image.fromarray(canvas))
                    outputs.append(file)
                shared[key] = file
                steps_done.append({**record, "file": file})
            final, frame = finish(canvas, view, p)
            name = ctx.save_picture(f"{self.prefix}-outpaint-{label}.png", final)
            compare = ctx.save_picture(f"{self.prefix}-outpaint-{label}-compare.png",
                                       side_by_side(view.flat(), flatten(final), p))
            outputs += [name, compare]
            only = "" if engine is not None else method
            variants.append(Variant(label, Picture(name, f"variant {label}", generative=engine is not None), frame,
                                    infill=only))
            known = np.zeros(canvas.shape[:2], bool)
            known[p.origin[1]:p.origin[1] + master.height, p.origin[0]:p.origin[0] + master.width] = True
            drift = seam_drift(np.asarray(final.convert("RGB")), frame)
            judged = params.gate.enabled and drift is not None and (engine is not None or method in CONTINUING)
            why = _drift_reason(drift, params.gate) if judged else ""
            plans.append(VariantPlan(spec, label, list(p.size), list(p.origin), list(final.size), steps_done,
                                     round(seam_score(canvas, known), 3), drift=drift.to_json() if drift else None,
                                     gate=("failed: " + why if why else "passed") if judged else
                                     ("not judged: a deliberate backdrop, not a continuation" if drift else None),
                                     infill=only or None))
            if why:
                attention.append(f"{label}: {why}")
            if only:
                attention.append(f"{label}: the new area is the {method} infill alone (no generative model painted "
                                 "it); delivered once a reviewer approves it ([deliver].infill_variants)")
        details = OutpaintDetails(method, engine is not None, plans, params.max_step,
                                  "edge" if view.alpha is not None else None)
        why_not = "" if engine else f" (no generative model configured: the {method} infill alone)"
        result = StageResult(outputs=outputs, products=Products(variants=tuple(variants)), details=details,
                             attention=attention,
                             summary=", ".join(f"{v.label} {v.output_size[0]}×{v.output_size[1]}"
                                               for v in plans) + why_not)
        if engine is not None:
            details = dataclasses.replace(details, checkpoint=chosen, prompt=prompt, negative_prompt=negative,
                                          seed=seed, steps=params.steps, strength=params.strength,
                                          guidance=params.guidance, seam_band=params.seam_band,
                                          seam_strength=params.seam_strength)
            result.details = details
            result.models = [ModelRef(engine.name, engine.sha256, engine.spec)]
            result.device, result.dtype, result.seed = str(engine.device), dtype_name(engine.dtype), seed
        return result

    def _step(self, canvas: np.ndarray, step, params: OutpaintParams, method: str, engine, prompt: str,
              negative: str, seed: int, ctx: JobContext) -> np.ndarray:
        h, w = canvas.shape[:2]
        big = np.zeros((step.size[1], step.size[0], 3), np.uint8)
        ox, oy = step.offset
        big[oy:oy + h, ox:ox + w] = canvas
        known = np.zeros(big.shape[:2], bool)
        known[oy:oy + h, ox:ox + w] = True
        out = infill(method, big, known, seed)
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
                       params.guidance, strength, seed,
                       lambda done, total: ctx.check_stop(done, total, "denoising steps"))[0]


def _drift_reason(drift, gate: DriftGate) -> str:
    """Why a variant's seams fail ``[outpaint.gate]``, or ""."""
    said = []
    if drift.delta_e > gate.max_delta_e:
        tone = "brighter" if drift.lightness > 0 else "darker"
        said.append(f"its new area differs in colour from the picture across the seam (ΔE {drift.delta_e:.1f}, "
                    f"{abs(drift.lightness):.1f} L* {tone}; [outpaint.gate].max_delta_e = {gate.max_delta_e:g})")
    if drift.seam > gate.max_seam:
        said.append(f"a seam shows ({drift.seam:.1f}× the picture's own contrast; "
                    f"[outpaint.gate].max_seam = {gate.max_seam:g})")
    return "; ".join(said)


def finish(canvas: np.ndarray, view: View, p: Plan) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The variant at its exact size, and where the master sits in it.

    A picture with transparency keeps it: the new canvas takes the alpha of the nearest edge pixel of
    the master (an opaque photo stays opaque; a cut-out on a transparent background gets transparent
    margins).  The colours under fully transparent pixels were already filled from visible neighbours.
    """
    h, w = view.rgb.shape[:2]
    ox, oy = p.origin
    final = Image.fromarray(canvas)
    if view.alpha is not None:
        H, W = canvas.shape[:2]
        alpha = np.pad(view.alpha, ((oy, H - oy - h), (ox, W - ox - w)), mode="edge")
        final.putalpha(Image.fromarray(alpha))
    frame = (ox, oy, ox + w, oy + h)
    exact = p.target.exact
    if exact and final.size != exact:
        fx, fy = exact[0] / final.width, exact[1] / final.height
        final = final.resize(exact, Image.Resampling.LANCZOS)
        frame = (round(ox * fx), round(oy * fy), round((ox + w) * fx), round((oy + h) * fy))
    return final, frame


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
