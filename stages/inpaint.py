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

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import structlog
from PIL import Image

from automask.found import iou
from stages import checkpoints, embeddings, loras
from stages import control as ctl
from stages import vae as vae_files
from stages.base import JobContext, ModelRef, Skipped, Stage, StageResult, from_section
from stages.detectors import YoloConfig, held_yolo, yolo_settings
from stages.device import dtype_name
from stages.diffusion import samplers
from stages.diffusion.repaint import KindSettings, crop_box, image_seed, kind_table, paste, repaint, settings_for
from stages.diffusion.samplers import Sampling
from stages.gate import GateConfig, Judge, judge
from stages.generative import acquire_for, image_checkpoint
from stages.models import ModelKind, ModelSetting, ModelUnavailable
from stages.products import Mask, Picture, Products, Slot
from stages.prompts import FoundPrompt
from stages.records import Alternative, Gate, GateTry, InpaintDetails, RegionRecord
from stages.schema import Errors

log = structlog.get_logger("polishd.inpaint")

KINDS = ("remove", "face", "face-eyes", "face-mouth", "hand", "user")  # the order regions are done in


# --------------------------------------------------------------------------- [inpaint]


@dataclass(frozen=True)
class InpaintKindConfig:
    """Per-kind overrides of [inpaint]; a key left out (None) inherits the [inpaint] value."""

    enabled: bool = True
    prompt: str | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    padding: int | None = None
    inherit: tuple[Literal["sampler", "steps", "cfg", "clip_skip", "vae"], ...] | None = None
    loras: tuple[str, ...] = ()   # LoRAs for this kind only, on top of [inpaint].loras: "name:weight"

    def check(self, err: Errors) -> None:
        err.generation(self)
        for entry in self.loras:
            if (why := loras.check(entry)) is not None:
                err.add("loras", why)


@dataclass(frozen=True)
class InpaintFaceConfig(InpaintKindConfig):
    prompt: str | None = "a detailed natural face, {prompt}"
    strength: float | None = 0.45
    ip_adapter: str = ""          # an IP-Adapter (ComfyUI's ipadapter/ file): the face's own crop guides its repaint
    ip_adapter_encoder: str = ""  # its CLIP image encoder (ComfyUI's clip_vision/ file, or a folder)
    ip_adapter_scale: float = 0.6

    def check(self, err: Errors) -> None:
        super().check(err)
        err.between("ip_adapter_scale", self.ip_adapter_scale, 0.0, 2.0)
        if self.ip_adapter and not self.ip_adapter_encoder:
            err.add("ip_adapter_encoder", "must name the IP-Adapter's CLIP image encoder (ViT-H for most SD 1.5 "
                                          "and SDXL face adapters, ViT-bigG for the rest)")


@dataclass(frozen=True)
class InpaintHandConfig(InpaintKindConfig):
    prompt: str | None = "a detailed natural hand with five fingers, {prompt}"
    strength: float | None = 0.6
    controlnet: str = ""          # an OpenPose or depth ControlNet: the hand's landmarks guide the repaint
    controlnet_config: str = ""   # for a single-file ControlNet: a diffusers ControlNet folder of its family
    controlnet_type: Literal["auto", "openpose", "depth"] = "auto"
    controlnet_scale: float = 1.0

    def check(self, err: Errors) -> None:
        super().check(err)
        err.between("controlnet_scale", self.controlnet_scale, 0.0, 2.0)


@dataclass(frozen=True)
class InpaintRemoveConfig(InpaintKindConfig):
    """A user's ``<name>.remove.png``: what is under it is taken away, with no model needed."""

    fill: Literal["patchmatch", "telea", "navier-stokes"] = "patchmatch"
    refine: bool = True
    prompt: str | None = "seamless natural background"
    strength: float | None = 0.5


@dataclass(frozen=True)
class InpaintCompareConfig:
    """One A/B alternative of [[inpaint.compare]]: the same regions painted again with these settings, written
    as 20-inpaint@<label>.png.  A key left out keeps what the region would get anyway."""

    label: str = "alternative"
    model: str = ""               # "" = [inpaint].model
    prompt: str | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    seed: int | None = None

    def check(self, err: Errors) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", self.label):
            err.add("label", f"must be 1–40 letters, digits, '_', '.' or '-' (got {self.label!r})")
        err.generation(self)


@dataclass(frozen=True)
class InpaintConfig:
    enabled: bool = True
    model: str = ""
    model_config: str = ""
    # The checkpoint the image names (by hash, then by name) from [paths].models when it is there; else model
    model_from_image: bool = True
    steps: int = 30
    guidance: float = 7.0
    strength: float = 0.6
    prompt: str = "{prompt}"
    negative_prompt: str = "blurry, deformed, extra fingers, bad anatomy, lowres"
    padding: int = 32
    resolution: int = 0
    seed: int = -1
    # What of the image's own generation a repaint takes when its metadata says it (ADetailer's default):
    # its sampler and schedule, steps, CFG and clip skip; the rest of this table fills in what it does not say.
    inherit: tuple[Literal["sampler", "steps", "cfg", "clip_skip", "vae"], ...] = ("sampler", "steps", "cfg",
                                                                                "clip_skip", "vae")
    loras: tuple[str, ...] = ()   # your own LoRAs for every repaint, "name" or "name:weight[:text_encoder_weight]"
    colour_match: bool = True
    idle_unload: float = 600.0
    max_loaded: int = 0  # generative models kept in memory at once; 0 = by the device's memory
    face: InpaintFaceConfig = field(default_factory=InpaintFaceConfig)
    hand: InpaintHandConfig = field(default_factory=InpaintHandConfig)
    user: InpaintKindConfig = field(default_factory=InpaintKindConfig)
    remove: InpaintRemoveConfig = field(default_factory=InpaintRemoveConfig)
    # [automask.face].parts: the eyes or the mouth alone, for edits that keep the person; in pipeline.toml
    # [inpaint.face-eyes] and [inpaint.face-mouth], each key inherited from [inpaint.face] when left out.
    face_eyes: InpaintKindConfig = field(default_factory=InpaintKindConfig)
    face_mouth: InpaintKindConfig = field(default_factory=InpaintKindConfig)
    # A/B alternatives for the review page: [[inpaint.compare]] tables.
    compare: tuple[InpaintCompareConfig, ...] = ()
    gate: GateConfig = field(default_factory=GateConfig)

    def check(self, err: Errors) -> None:
        err.generation(self)
        for entry in self.loras:
            if (why := loras.check(entry)) is not None:
                err.add("loras", why)
        labels = [c.label for c in self.compare]
        for label in sorted({x for x in labels if labels.count(x) > 1}):
            err.add("compare", f"names the label {label!r} twice; each alternative needs a label of its own")
        if self.resolution and (self.resolution % 8 or not 64 <= self.resolution <= 2048):
            err.add("resolution", f"must be 0 (the model's own) or a multiple of 8 from 64 to 2048 "
                                  f"(got {self.resolution})")
        err.at_least("seed", self.seed, -1)
        err.at_least("idle_unload", self.idle_unload, 0.0)
        if not 0 <= self.max_loaded <= 8:
            err.add("max_loaded", f"must be 0 (by the device's memory) or 1–8 (got {self.max_loaded})")


@dataclass(frozen=True)
class InpaintParams(InpaintConfig):
    device: str = "auto"                 # [daemon].device
    state: str = ""                      # [paths].state: where checkpoint hashes are kept
    detectors: tuple[YoloConfig, ...] = ()  # [[automask.yolo]]: a region found by one is judged by it
    sidecar_prompts: tuple[str, ...] = ()  # the kinds whose prompt an image's own settings file set


@dataclass(frozen=True)
class Region:
    kind: str
    index: int
    box: tuple[int, int, int, int]  # the area that must be repainted (mask bounds or a detection box)
    mask: str  # archive name of the mask


# ---------------------------------------------------------------------- the stage


class InpaintStage(Stage):
    name = "inpaint"
    prefix = "20"
    Config = InpaintConfig
    consumes = frozenset({Slot.SOURCE, Slot.MASKS, Slot.MASTER, Slot.PICKS, Slot.DETECTIONS})
    produces = frozenset({Slot.MASTER})
    version = 2  # the quality gate may keep a region's original pixels

    def __init__(self) -> None:
        self.judge = Judge()
        self.chosen = ""  # which model this job's repaint used, and why

    def params(self, config) -> InpaintParams:
        return from_section(InpaintParams, config.inpaint, device=config.daemon.device,
                            state=str(config.paths.state), sidecar_prompts=sidecar_prompt_kinds(config.overrides),
                            detectors=config.automask.yolo)

    def model_settings(self, params: InpaintParams) -> list[ModelSetting]:
        model = ModelSetting("[inpaint].model", params.model, ModelKind.DIFFUSION)
        config = ModelSetting("[inpaint].model_config", params.model_config, ModelKind.DIFFUSION_CONFIG)
        alternatives = [ModelSetting("[inpaint.compare].model", c.model, ModelKind.DIFFUSION)
                        for c in params.compare if c.model]
        control = [ModelSetting("[inpaint.hand].controlnet", params.hand.controlnet, ModelKind.CONTROLNET),
                   ModelSetting("[inpaint.hand].controlnet_config", params.hand.controlnet_config,
                                ModelKind.CONTROLNET), *_identity_settings(params.face)]
        return [m for m in (model, config) if m.value] + alternatives + [c for c in control if c.value]

    def skip_reason(self, ctx: JobContext, params: InpaintParams) -> str | None:
        regions = plan_regions(ctx.products.masks or (), params)
        if not regions:
            return "no masks to inpaint"
        if any(r.kind == "remove" for r in regions):
            return None  # takes no model
        return self.model_problem(ctx, params)

    def image_checkpoint(self, ctx: JobContext, params: InpaintParams) -> checkpoints.Found | None:
        """The image's own checkpoint among the user's models, or None when not asked for or not named."""
        return image_checkpoint(ctx, params.state) if params.model_from_image else None

    def model_problem(self, ctx: JobContext, params: InpaintParams) -> str | None:
        """Why the generative model cannot be used, found without loading it; or None."""
        found = self.image_checkpoint(ctx, params)
        if found is not None and found.path is not None:
            return None  # the image's own checkpoint is there
        if not params.model:
            return "no inpainting model configured ([inpaint].model is empty)" + \
                (f" and {found.why}" if found is not None else "") + "; faces and hands left as they are"
        # a ControlNet that cannot be had leaves the hands to be painted without it (said per region)
        return ctx.models.problem([m for m in self.model_settings(params) if m.kind != ModelKind.CONTROLNET])

    def close(self) -> None:
        from sys import modules

        self.judge.close()
        if "stages.diffusion.engine" in modules:
            modules["stages.diffusion.engine"].unload()

    def _engine(self, ctx: JobContext, params: InpaintParams, regions: list[Region]):
        """(engine, None), or (None, why the faces are left as they are) when only removals can be done."""
        kinds = {r.kind for r in regions}
        wanted = (kinds - {"remove"}) or (params.remove.refine and "remove" in kinds)
        problem = self.model_problem(ctx, params)
        if not wanted or problem:
            return None, problem
        config = ModelSetting("[inpaint].model_config", params.model_config, ModelKind.DIFFUSION_CONFIG) \
            if params.model_config else None
        model = ModelSetting("[inpaint].model", params.model, ModelKind.DIFFUSION) if params.model else None
        try:
            engine, self.chosen = acquire_for(ctx, model, config, params.device, params.model_from_image,
                                              params.state)
            return engine, None
        except ModelUnavailable as exc:
            if "remove" not in kinds:
                raise
            return None, f"model not available: {exc}"

    def run(self, ctx: JobContext, params: InpaintParams) -> StageResult | Skipped:
        view = ctx.view(ctx.products.master)
        seed = image_seed(ctx.sha256, params.seed)
        regions = plan_regions(ctx.products.masks, params)
        e, without_model = self._engine(ctx, params, regions)
        rgb, outputs, records = self._paint(ctx, params, e, without_model, regions, view.rgb, seed)
        attention = [f"{r.kind} {r.index}: every try failed the quality gate ({r.tries[-1].why}); "
                     "its original pixels are kept" for r in records if r.failed_gate]
        attention += [f"{r.kind} {r.index}: painted without what its prompt asked for: {'; '.join(r.missing)}"
                      for r in records if r.missing]
        done = [r for r in records if r.skipped is None]
        if not done:
            return Skipped(without_model or "no masks to inpaint")
        name = ctx.save_picture(f"{self.prefix}-inpaint.png", _with_alpha(rgb, view.alpha))
        outputs.append(name)
        models = [ModelRef(e.name, e.sha256, e.spec)] if e else []
        summary = _summary(records, done, params, e, without_model)
        details = InpaintDetails(pipeline=e.kind if e else None,
                                 scheduler=type(e.pipe.scheduler).__name__ if e else None, regions=records,
                                 from_image=_used(ctx.products.source, done, self.chosen) if e else [],
                                 checkpoint=self.chosen if e else None)
        master = Picture(name, "inpainted", generative=e is not None)  # without a model: removals filled only
        device, dtype = (str(e.device) if e else None), _dtype(e)
        if e is not None and params.compare:  # the A/B alternatives, each from the same master
            alternatives = []
            for alt in params.compare:
                alt_params, alt_seed = _alternative(params, alt), seed if alt.seed is None else alt.seed
                ae, problem = self._engine(ctx, alt_params, regions)
                if ae is None:
                    alternatives.append(Alternative(alt.label, skipped=problem))
                    continue
                alt_rgb, _, alt_records = self._paint(ctx, alt_params, ae, without_model, regions, view.rgb,
                                                      alt_seed, crops=False, override=alt)
                attention += [f"{alt.label}: {r.kind} {r.index} failed the quality gate"
                              for r in alt_records if r.failed_gate]
                alt_name = ctx.save_picture(f"{self.prefix}-inpaint@{alt.label}.png", _with_alpha(alt_rgb, view.alpha))
                outputs.append(alt_name)
                alternatives.append(Alternative(alt.label, alt_name, ae.name, regions=alt_records))
                models.append(ModelRef(ae.name, ae.sha256, ae.spec))
                if ctx.products.picks is not None and ctx.products.picks.pick(self.name) == alt.label:
                    master = Picture(alt_name, f"inpainted ({alt.label}, picked)", generative=True)
            details.alternatives = alternatives
            summary += f"; alternatives: {', '.join(a.label for a in params.compare)}"
        gated = [r for r in records if r.tries]
        if gated:
            passed = sum(r.gate == Gate.PASSED for r in gated)
            retries = sum(len(r.tries) for r in gated) - len(gated)
            summary += f"; gate: {passed} of {len(gated)} passed" + (f" ({retries} retries)" if retries else "")
            if passed < len(gated):
                summary += f", {len(gated) - passed} left as they were (needs review)"
        return StageResult(
            outputs=outputs, summary=summary, products=Products(master=master), models=models,
            device=device, dtype=dtype, seed=seed, details=details, attention=attention)

    def _control(self, ctx: JobContext, params: InpaintParams, e, region: Region, record: RegionRecord):
        """For a hand, with [inpaint.hand].controlnet: (a function making the engine's ``Control`` for a crop
        and working size, the list the control images drawn go to).  (None, []) otherwise; a ControlNet that
        cannot be used is said in the region's record, and the hand is painted without it."""
        hand = params.hand
        if region.kind != "hand" or not hand.controlnet:
            return None, []
        from stages.diffusion import engine as engine_mod  # torch: imported by a job that runs the model

        found = _landmarks_for(region, ctx.products.detections)
        if found is None:
            record.controlnet = "not used: the hand's landmarks were not found"
            return None, []
        try:
            net = engine_mod.controlnet(
                ctx.models.resolve(ModelSetting("[inpaint.hand].controlnet", hand.controlnet, ModelKind.CONTROLNET)),
                ctx.models.resolve(ModelSetting("[inpaint.hand].controlnet_config", hand.controlnet_config,
                                                ModelKind.CONTROLNET)) if hand.controlnet_config else None,
                e.device, e.dtype)
        except Exception as exc:  # not found, not loadable: the hand is still painted, as without one
            record.controlnet = f"not used: {type(exc).__name__}: {exc}"
            log.warning("controlnet not used", reason=record.controlnet)
            return None, []
        kind = ctl.guess_kind(hand.controlnet) if hand.controlnet_type == "auto" else hand.controlnet_type
        drawn: list = []

        def make(crop: tuple, size: tuple):
            image = ctl.control_image(kind, found, crop, size)
            drawn.append(image)
            return engine_mod.Control(net, image, hand.controlnet_scale)
        record.controlnet, record.controlnet_type, record.controlnet_scale = net.name, kind, hand.controlnet_scale
        return make, drawn

    def _paint(self, ctx: JobContext, params: InpaintParams, e, without_model: str | None, regions: list[Region],
               rgb: np.ndarray, seed: int, crops: bool = True, override: InpaintCompareConfig | None = None):
        """Every region painted in turn on ``rgb``: (the picture, the before/after crops written, the records)."""
        found = ctx.products.source.prompt
        outputs, records = [], []
        masks: dict[str, np.ndarray] = {}
        for n, region in enumerate(regions):
            ctx.check_stop(n, len(regions), "regions")
            record = RegionRecord(region.kind, region.index, list(region.box))
            ks, sampling = _inherited(settings_for(params, region.kind), region.kind, ctx.products.source, record, e,
                                      ctx.models.cache)
            ks = _overridden(ks, override)
            if region.kind != "remove" and e is None:
                record.skipped = without_model or ""
                records.append(record)
                continue
            if region.mask not in masks:
                with Image.open(ctx.path(region.mask)) as im:
                    masks[region.mask] = np.asarray(im.convert("L"))
            full_mask = masks[region.mask]
            x0, y0, x1, y1 = crop_box(region.box, ks.padding, (rgb.shape[1], rgb.shape[0]))
            before = rgb
            if region.kind == "remove":
                rgb, fill_crop = remove(rgb, full_mask, region.box, params.remove.fill)
                record.fill, record.refined = params.remove.fill, False
                (x0, y0, x1, y1) = _union((x0, y0, x1, y1), fill_crop)
            if e is not None and (region.kind != "remove" or params.remove.refine):
                prompt, negative, source = _prompt(region.kind, ks, found, params.sidecar_prompts)
                prompt, negative, sampling = _with_embeddings(e, ctx, prompt, negative, sampling, record)
                sampling = _with_identity(e, ctx, params.face, region, rgb, sampling, record)
                gated = params.gate.enabled and region.kind != "remove"
                finder = _finder(ctx, params, region) if gated else None
                control, drawn = self._control(ctx, params, e, region, record)
                tries, strength, try_seed = [], ks.strength, seed + n
                used_loras = _apply_loras(e, ctx, params, region.kind, record) if region.kind != "remove" else None
                for attempt in range(1 + (params.gate.retries if gated else 0)):
                    painted, crop = repaint(
                        e, rgb, full_mask, region.box, ks.padding, params.resolution, prompt, negative, ks.steps,
                        ks.guidance, strength, try_seed,
                        lambda done, total, r=region: ctx.check_stop(done, total, f"steps of {r.kind} {r.index}"),
                        params.colour_match, control=control, sampling=sampling)
                    if not gated:
                        break
                    cx0, cy0, cx1, cy1 = crop
                    bx0, by0, bx1, by1 = region.box
                    verdict = judge(self.judge, params.gate, region.kind, rgb[cy0:cy1, cx0:cx1],
                                    painted[cy0:cy1, cx0:cx1], full_mask[cy0:cy1, cx0:cx1],
                                    (bx0 - cx0, by0 - cy0, bx1 - cx0, by1 - cy0), finder=finder)
                    tries.append(GateTry(try_seed, strength, verdict.passed, verdict.why or "", dict(verdict.scores)))
                    if verdict.passed:
                        break
                    log.info("repaint failed the quality gate", kind=region.kind, index=region.index,
                             attempt=attempt + 1, why=verdict.why)
                    try_seed = seed + n + 1000 * (attempt + 1)
                    strength = round(strength * params.gate.strength_step, 3)
                if used_loras:
                    e.clear_loras()
                if not gated or tries[-1].passed:
                    rgb = painted
                if drawn and crops:  # the pose the model was given, for a person to see
                    name = f"{self.prefix}-{region.kind}-{region.index}-control.png"
                    outputs.append(ctx.save_mask(name, drawn[-1]))
                    record.control_image = name
                (x0, y0, x1, y1) = _union((x0, y0, x1, y1), crop)
                record.seed, record.prompt, record.negative_prompt = try_seed, prompt, negative
                record.prompt_tokens, record.prompt_cut = _tokens(e, prompt)
                record.prompt_source, record.steps, record.strength = source, ks.steps, strength
                record.guidance, record.padding = ks.guidance, ks.padding
                if region.kind == "remove":
                    record.refined = True
                if gated:
                    record.gate, record.tries = (Gate.PASSED if tries[-1].passed else Gate.FAILED), tries
            if crops:
                stem = f"{self.prefix}-{region.kind}-{region.index}"
                record.before = ctx.save_picture(f"{stem}-before.png", Image.fromarray(before[y0:y1, x0:x1]))
                record.after = ctx.save_picture(f"{stem}-after.png", Image.fromarray(rgb[y0:y1, x0:x1]))
                outputs += [record.before, record.after]
            records.append(record)
        return rgb, outputs, records


def _with_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    result = Image.fromarray(rgb)
    if alpha is not None:
        result.putalpha(Image.fromarray(alpha))
    return result


def _alternative(params: InpaintParams, alt: InpaintCompareConfig) -> InpaintParams:
    return dataclasses.replace(params, model=alt.model or params.model,
                               model_config=params.model_config if not alt.model else "", compare=())


def _inherited(ks: KindSettings, kind: str, source, record: RegionRecord, engine,
               models_dir: Path) -> tuple[KindSettings, Sampling | None]:
    """The kind's settings with what ``inherit`` takes from the image's generation record (a removal takes
    nothing: it paints background, not the picture's subject), the sampling to paint with, and both noted
    on the region's record."""
    gen = source.generation if source is not None else None
    if gen is None or kind == "remove" or not ks.inherit:
        return ks, None
    took, changes = [], {}
    if "steps" in ks.inherit and gen.steps:
        changes["steps"] = gen.steps
        took.append("steps")
    if "cfg" in ks.inherit and gen.cfg is not None:
        changes["guidance"] = gen.cfg
        took.append("cfg")
    choice = samplers.choose(gen.sampler, gen.schedule) if "sampler" in ks.inherit and gen.sampler else None
    if choice is not None and choice.cls is not None and engine is not None:
        try:
            engine.scheduler(choice)  # built now, once: one this machine cannot build is said, not raised later
        except ValueError as exc:
            choice = samplers.Choice(None, reason=str(exc))
    if choice is not None:
        if choice.cls is not None:
            took.append("sampler")
        record.sampler = choice.label + (f"; {choice.reason}" if choice.reason else "")
    clip_skip = gen.clip_skip if "clip_skip" in ks.inherit and gen.clip_skip else None
    if clip_skip:
        took.append("clip_skip")
    own_vae = None
    if "vae" in ks.inherit and gen.vae and engine is not None:
        own_vae = _image_vae(engine, gen.vae, models_dir, record)
        if own_vae is not None:
            took.append("vae")
    record.inherited = took
    return dataclasses.replace(ks, **changes), Sampling(choice, clip_skip, vae=own_vae)


def _identity_settings(face: InpaintFaceConfig) -> list[ModelSetting]:
    return [ModelSetting("[inpaint.face].ip_adapter", face.ip_adapter, ModelKind.IP_ADAPTER),
            ModelSetting("[inpaint.face].ip_adapter_encoder", face.ip_adapter_encoder, ModelKind.IMAGE_ENCODER)]


def _with_identity(engine, ctx: JobContext, face: InpaintFaceConfig, region: Region, rgb: np.ndarray,
                   sampling: Sampling | None, record: RegionRecord) -> Sampling | None:
    """For a face, with [inpaint.face].ip_adapter: the sampling with the IP-Adapter conditioned on the face's own
    crop (as it is before its repaint).  One that cannot be had is said on the record; the face is painted
    without it."""
    if region.kind != "face" or not face.ip_adapter:
        return sampling
    from stages.diffusion.identity import Identity

    try:
        adapter, encoder = (ctx.models.resolve(m).path for m in _identity_settings(face))
        weights, model = engine.identity_parts(adapter, encoder)
    except (FileNotFoundError, ValueError) as exc:
        record.missing = [*record.missing, f"IP-Adapter: {exc}"]
        return sampling
    x0, y0, x1, y1 = region.box
    crop = Image.fromarray(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    record.ip_adapter = f"{adapter.name} at {face.ip_adapter_scale} ({encoder.name})"
    return dataclasses.replace(sampling or Sampling(),
                               identity=Identity(adapter.name, weights, model, face.ip_adapter_scale, crop))


def _image_vae(engine, named: str, models_dir: Path, record: RegionRecord):
    """The VAE the image names, loaded for this engine; when it cannot be had, None and the reason on the
    record (painted with the checkpoint's own VAE)."""
    path = vae_files.find(named, models_dir)
    if path is None:
        record.missing = [*record.missing, f"VAE {named}: not in {models_dir / 'VAE'} or {models_dir / 'vae'}"]
        return None
    try:
        model = engine.vae(path)
    except ValueError as exc:
        record.missing = [*record.missing, f"VAE {named}: {exc}"]
        return None
    record.vae = path.name
    return model


def _overridden(ks: KindSettings, alt: InpaintCompareConfig | None) -> KindSettings:
    if alt is None:
        return ks
    return dataclasses.replace(ks, **{k: getattr(alt, k) for k in ("prompt", "negative_prompt", "steps", "guidance",
                                                                   "strength") if getattr(alt, k) is not None})


def plan_regions(masks: tuple[Mask, ...], params: InpaintParams) -> list[Region]:
    """What to repaint: one region per detection of a merged mask, per separate mask, per user mask;
    removals first, so later repaints see the cleaned picture."""
    out: list[Region] = []
    for m in masks:
        if m.kind not in KINDS or not kind_table(params, m.kind).enabled:
            continue
        if len(m.boxes) > 1:  # a merged mask of several faces or hands: one region each
            out += [Region(m.kind, i, tuple(int(round(v)) for v in b), m.name) for i, b in enumerate(m.boxes)]
        else:
            out.append(Region(m.kind, m.index or 0, m.bounds, m.name))
    return sorted(out, key=lambda r: KINDS.index(r.kind))


def _finder(ctx: JobContext, params: InpaintParams, region: Region):
    """The YOLO model that found the region (the detection its box best matches), to judge its repaint with;
    None when MediaPipe found it, or the model cannot be had (then MediaPipe judges)."""
    found = ctx.products.detections
    if found is None or not params.detectors:
        return None
    best = max((d for d in found.detections if d.kind == region.kind), key=lambda d: iou(region.box, d.box),
               default=None)
    if best is None or iou(region.box, best.box) <= 0.1:
        return None
    for ms in yolo_settings(params.detectors):
        try:
            path = ctx.models.resolve(ms).path
            if path.name == best.model:
                return held_yolo(path, params.device)
        except (FileNotFoundError, ValueError, RuntimeError):
            continue
    return None


def _landmarks_for(region: Region, found) -> list | None:
    """The 21 landmarks of the hand detection that best matches a region's box (None when there is none)."""
    if found is None:
        return None
    hands = [d for d in found.detections if d.kind == "hand" and len(d.landmarks) == 21]
    best = max(hands, key=lambda d: iou(region.box, d.box), default=None)
    return list(best.landmarks) if best is not None and iou(region.box, best.box) > 0.1 else None


def sidecar_prompt_kinds(overrides: dict) -> tuple[str, ...]:
    """The region kinds whose prompt an image's own settings file sets (its [inpaint] or [inpaint.<kind>])."""
    side = overrides.get("inpaint") if isinstance(overrides.get("inpaint"), dict) else {}
    return tuple(k for k in KINDS if "prompt" in side or (isinstance(side.get(k), dict) and "prompt" in side[k]))


def _summary(records: list[RegionRecord], done: list[RegionRecord], params: InpaintParams, e,
             without_model: str | None) -> str:
    removed = sum(r.kind == "remove" for r in done)
    parts = [f"{removed} removed ({params.remove.fill})"] if removed else []
    if len(done) > removed:
        parts.append(f"{len(done) - removed} regions repainted with {e.name}")
    if len(records) > len(done):
        parts.append(f"{len(records) - len(done)} left as they are: {without_model}")
    return "; ".join(parts)


def _dtype(e) -> str | None:

    return dtype_name(e.dtype) if e is not None else None


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


def _with_embeddings(engine, ctx: JobContext, prompt: str, negative: str, sampling: Sampling | None,
                     record: RegionRecord) -> tuple[str, str, Sampling | None]:
    """The prompts with the textual inversions they use found (ComfyUI's ``embedding:`` taken out), those
    this model can take added to the sampling, and on the record what was used and what was missing."""
    gen = ctx.products.source.generation if ctx.products.source is not None else None
    want = embeddings.wanted(prompt, negative, ctx.models.cache, gen.embeddings if gen is not None else None)
    usable, missing = [], [f"{n}: not in {ctx.models.cache / 'embeddings'}" for n in want.missing]
    for name, path in want.files:
        if not engine.text_pairs():
            missing.append(f"{name}: embeddings are loaded for SD 1.x/2.x and SDXL pipelines only")
            continue
        if name in engine.pipe.tokenizer.get_vocab():
            missing.append(f"{name}: a word the tokenizer already has; rename the file")
            continue
        try:
            usable.append((name, engine.embedding(path)))  # read once: every try of the region loads these
        except ValueError as exc:
            missing.append(f"{name}: {exc}")
    record.embeddings, record.missing = [n for n, _ in usable], [*record.missing, *missing]
    if not usable:
        return want.prompt, want.negative, sampling
    return want.prompt, want.negative, dataclasses.replace(sampling or Sampling(), embeddings=tuple(usable))


def _apply_loras(engine, ctx: JobContext, params: InpaintParams, kind: str, record: RegionRecord) -> list[str]:
    """The image's LoRAs and the user's ([inpaint].loras, the kind's own) loaded for this region; on the
    record, which with their weights, and what could not be had."""
    engine.clear_loras()  # whatever a region that failed half-way left behind
    gen = ctx.products.source.generation if ctx.products.source is not None else None
    own = [*params.loras, *kind_table(params, kind).loras]
    uses, missing = loras.wanted(list(gen.loras) if gen is not None else [], own, ctx.models.cache)
    loaded, problems = engine.apply_loras(uses) if uses else ([], [])
    record.loras = [f"{u.name} {u.weight:g}" + (f" (text encoder {u.te_weight:g})" if u.te_weight != u.weight else "")
                    for u in uses if u.name in loaded]
    record.missing = [*record.missing, *missing, *problems]
    return loaded


def _tokens(engine, prompt: str) -> tuple[int | None, bool | None]:
    """How many CLIP tokens the prompt has, and whether the pipeline cut it (those that do not chunk)."""
    from stages.diffusion import engine as engine_mod
    from stages.diffusion import weighting

    tokenizer = getattr(engine.pipe, "tokenizer", None)
    if tokenizer is None:
        return None, None
    count = weighting.chunk(tokenizer, prompt).count
    chunked = engine.kind in engine_mod.WEIGHTED or engine.kind in weighting.XL
    return count, (count > weighting.CHUNK) if not chunked else None


def _used(source, done: list, chosen: str = "") -> list[str]:
    """The fields of the image's generation record the repaints used: its texts, where a region's prompt came
    from the image (not from a sidecar or the config alone)."""
    record = source.generation if source is not None else None
    if record is None:
        return []
    texts = [f for f in ("positive", "negative") if getattr(record, f)] \
        if any(r.prompt_source == record.tool for r in done) else []
    own = ["checkpoint"] if chosen.startswith("the image's own") else []
    return texts + own + sorted({f for r in done for f in r.inherited})


def _prompt(kind: str, ks: KindSettings, found: FoundPrompt | None,
            sidecar: tuple[str, ...]) -> tuple[str, str, str]:
    """(prompt, negative, source): a sidecar's prompt, else the image's own in the template, else the template."""
    if kind in sidecar:
        own = found.positive if found is not None else ""
        return ks.prompt.replace("{prompt}", own).strip(" ,"), ks.negative_prompt, "sidecar"
    if found is not None:
        prompt = ks.prompt.replace("{prompt}", found.positive)
        negative = ", ".join(p for p in (ks.negative_prompt, found.negative) if p)
        return prompt, negative, found.source
    return ks.prompt.replace("{prompt}", "").strip(" ,"), ks.negative_prompt, "config"
