"""40 — upscale: Real-ESRGAN at its native scale, tiled, then Lanczos to the exact target size.

After the model (and after refinement) the colour fix (``[upscale].colour_fix``, stages/colour.py) gives
the picture the source's low frequencies and keeps the model's detail; the colour left apart from the
source (low-pass CIEDE2000) is recorded for every picture, and past ``[upscale].max_drift`` the image is
flagged for review.

Writes ``40-upscale.png`` for the master and ``40-upscale-<variant>.png`` for each
outpainted variant (when ``apply_to`` includes them).  Alpha is upscaled
separately (Lanczos) and reattached; grey images stay grey, 16-bit grey stays
16-bit; the ICC profile is kept.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import structlog
from PIL import Image

from stages import colour, raster, refine
from stages.base import JobContext, ModelRef, Stage, StageResult, from_section
from stages.device import dtype_name, pick_device, pick_dtype
from stages.diffusion.repaint import image_seed, repaint, settings_for
from stages.files import sha256_file
from stages.generative import acquire_for
from stages.held import OWNER
from stages.models import ModelKind, ModelSetting, ModelUnavailable, Resolved
from stages.picture import fill_hidden
from stages.products import Picture, Products, Slot, Upscaled
from stages.prompts import fill
from stages.records import UpscaleDetails, UpscaleSize
from stages.schema import Errors

if TYPE_CHECKING:
    import torch

    from stages.esrgan import load as esrgan_load

log = structlog.get_logger("polishd.upscale")


@dataclass
class _Pass:
    """What one model's pass over the targets made: files, products, sizes, the records of pictures that went
    through files, and the tile size it settled on."""

    engine: object  # the diffusion engine of the refinement and detail passes, or None
    tile: int
    outputs: list[str] = field(default_factory=list)
    made: list[Upscaled] = field(default_factory=list)
    sizes: dict[str, UpscaleSize] = field(default_factory=dict)
    large: dict[str, dict] = field(default_factory=dict)
    drift: dict[str, colour.Drift | None] = field(default_factory=dict)


class Made(NamedTuple):
    """A picture upscaled in memory, the tile size that made it and the colour drift left after the fix."""

    image: Image.Image
    tile: int
    drift: colour.Drift | None


@dataclass(frozen=True)
class _Loaded:
    """An upscaler as ``stages.held`` keeps it: the model, its runner, the precision it runs in and the backend."""

    model: esrgan_load.LoadedModel
    run: object
    dtype: object
    backend: str

# Input px per CPU tile: the fastest measured at 512².  A 2048² picture in memory (bench/upscale.py) peaks at
# 1.85 GB with OpenVINO bf16, 2.6 GB with MNN (its Winograd weights and the ×4 tail's activations).
CPU_TILE = 256
MIN_TILE = 64
MAX_EDGE = 16384
IN_MEMORY = 64_000_000  # output pixels above which even a plain upscale goes band by band through files


@dataclass(frozen=True)
class RefineConfig:
    """[upscale.refine]: tiled diffusion after Real-ESRGAN (stages/refine.py)."""

    enabled: bool = False
    model: str = ""               # "" = [inpaint].model (with its model_config)
    model_config: str = ""
    denoise: float = 0.3
    steps: int = 20
    guidance: float = 6.0
    prompt: str = "{prompt}, highly detailed, sharp focus"
    negative_prompt: str = "blurry, lowres, jpeg artifacts, seams"
    tile: int = 0                 # px (0 = the model's working size: 512 for SD 1.x/2.x, 1024 for SDXL)
    overlap: int = 64
    seam_fix: bool = True
    seam_width: int = 64
    seam_denoise: float = 0.3
    seam_padding: int = 32
    seed: int = -1

    def check(self, err: Errors) -> None:
        err.between("denoise", self.denoise, 0.05, 0.75)
        err.between("seam_denoise", self.seam_denoise, 0.05, 0.75)
        err.generation(self)
        if self.tile and (self.tile % 8 or not 128 <= self.tile <= 2048):
            err.add("tile", f"must be 0 (the model's own size) or a multiple of 8 from 128 to 2048 (got {self.tile})")
        err.at_least("overlap", self.overlap, 0)
        if self.tile and self.overlap * 4 > self.tile:
            err.add("overlap", f"must be at most a quarter of tile ({self.tile}) (got {self.overlap})")
        err.between("seam_width", self.seam_width, 8, 512)
        err.between("seam_padding", self.seam_padding, 0, 256)
        err.at_least("seed", self.seed, -1)


@dataclass(frozen=True)
class DetailConfig:
    """[upscale.detail]: the faces and hands repainted again at the upscaled size ("detailer after hires fix")."""

    enabled: bool = False
    kinds: tuple[Literal["face", "hand", "face-eyes", "face-mouth"], ...] = ("face", "hand")
    strength: float = 0.25
    resolution: int = 0           # working size of each region (0 = the model's own)
    padding: int = 32             # px of context around each region, at the upscaled size

    def check(self, err: Errors) -> None:
        err.between("strength", self.strength, 0.05, 0.75)
        if self.resolution and (self.resolution % 8 or not 64 <= self.resolution <= 2048):
            err.add("resolution", f"must be 0 (the model's own) or a multiple of 8 from 64 to 2048 "
                                  f"(got {self.resolution})")
        err.between("padding", self.padding, 0, 512)


@dataclass(frozen=True)
class UpscaleConfig:
    enabled: bool = True
    model: str = "x4plus"
    scale: int = 4
    long_edge: int = 0
    width: int = 0
    height: int = 0
    tile: int = 0
    tile_overlap: int = 16
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    apply_to: tuple[Literal["master", "variants"], ...] = ("master", "variants")
    threads: int = 0
    backend: Literal["auto", "torch", "openvino", "ncnn", "mnn", "onnxruntime"] = "auto"
    compare: tuple[str, ...] = ()  # other models to run too, as A/B candidates: 40-upscale@<model>.png
    colour_fix: Literal["wavelet", "adain", "none"] = "wavelet"
    max_drift: float = 2.0        # mean low-pass CIEDE2000 from the source past which an upscale needs review
    refine: RefineConfig = field(default_factory=RefineConfig)
    detail: DetailConfig = field(default_factory=DetailConfig)

    def check(self, err: Errors) -> None:
        if not 2 <= self.scale <= 16:
            err.add("scale", f"must be 2–16 (got {self.scale})")
        if self.model in self.compare:
            err.add("compare", f"names [upscale].model ({self.model!r}) itself; list the other models to compare")
        for name in self.compare:
            if not name or "/" in name and not name.endswith((".pth", ".safetensors")):
                err.add("compare", f"must list model names or files (got {name!r})")
        for key in ("long_edge", "width", "height"):
            err.between(key, getattr(self, key), 0, MAX_EDGE)
        if self.long_edge and (self.width or self.height):
            err.add("long_edge", "cannot be combined with width/height; set one or the other")
        if self.tile and not 32 <= self.tile <= 4096:
            err.add("tile", f"must be 0 (automatic) or between 32 and 4096 (got {self.tile})")
        err.between("tile_overlap", self.tile_overlap, 0, 256)
        if self.tile and self.tile_overlap * 2 >= self.tile:
            err.add("tile_overlap", f"must be less than half of tile ({self.tile}) (got {self.tile_overlap})")
        err.at_least("threads", self.threads, 0)
        err.between("max_drift", self.max_drift, 0.1, 100.0)
        if self.backend == "ncnn" and self.dtype == "fp16":
            err.add("dtype", 'must be "auto", "fp32" or "bf16" with backend = "ncnn" (got "fp16")')
        if self.backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
            err.add("backend", 'is "onnxruntime", which is not installed: pip install "polishd[onnxruntime]"')
        if self.backend in ("mnn", "onnxruntime") and self.dtype not in ("auto", "fp32"):
            err.add("dtype", f'must be "auto" or "fp32" with backend = "{self.backend}" (got "{self.dtype}")')


@dataclass(frozen=True)
class UpscaleParams(UpscaleConfig):
    device: str = "auto"  # [daemon].device
    inpaint_model: str = ""         # [inpaint].model and model_config: refine's and detail's default model
    inpaint_model_config: str = ""
    seed: int = -1                  # [inpaint].seed
    kind_settings: tuple = ()       # (kind, stages.diffusion.repaint.KindSettings) for the detail pass's prompts
    model_from_image: bool = True   # [inpaint].model_from_image: refine and detail with the image's own checkpoint
    state: str = ""                 # [paths].state (checkpoint hashes)

    @property
    def diffusion_model(self) -> tuple[str, str]:
        """The generative model refine and detail use (model, model_config), with the setting that names it."""
        if self.refine.model:
            return self.refine.model, self.refine.model_config
        return self.inpaint_model, self.inpaint_model_config

    @property
    def generative(self) -> bool:
        return self.refine.enabled or self.detail.enabled


class UpscaleStage(Stage):
    name = "upscale"
    prefix = "40"
    Config = UpscaleConfig
    consumes = frozenset({Slot.SOURCE, Slot.MASTER, Slot.VARIANTS, Slot.MASKS})
    produces = frozenset({Slot.UPSCALED})
    version = 2

    def __init__(self) -> None:
        # This job's model and runner, as stages.held holds them (set in setup)
        self._model: esrgan_load.LoadedModel | None = None
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.backend = ""
        self._runner = None

    def params(self, config) -> UpscaleParams:
        kinds = tuple((k, settings_for(config.inpaint, k)) for k in config.upscale.detail.kinds) \
            if config.upscale.detail.enabled else ()
        return from_section(UpscaleParams, config.upscale, device=config.daemon.device,
                            inpaint_model=config.inpaint.model, inpaint_model_config=config.inpaint.model_config,
                            seed=config.inpaint.seed, kind_settings=kinds,
                            model_from_image=config.inpaint.model_from_image, state=str(config.paths.state))

    def model_settings(self, params: UpscaleParams) -> list[ModelSetting]:
        out = [ModelSetting("[upscale].model", params.model, ModelKind.UPSCALER),
               *(ModelSetting("[upscale].compare", m, ModelKind.UPSCALER) for m in params.compare)]
        return out + self._diffusion_settings(params)

    @staticmethod
    def _diffusion_settings(params: UpscaleParams) -> list[ModelSetting]:
        if not params.generative:
            return []
        model, config = params.diffusion_model
        where = "[upscale.refine]" if params.refine.model else "[inpaint]"
        out = [ModelSetting(f"{where}.model", model, ModelKind.DIFFUSION)] if model else []
        if config:
            out.append(ModelSetting(f"{where}.model_config", config, ModelKind.DIFFUSION_CONFIG))
        return out

    def skip_reason(self, ctx: JobContext, params: UpscaleParams) -> str | None:
        if not self._targets(ctx, params):
            return "nothing to upscale ([upscale].apply_to names no existing image)"
        return None

    # ------------------------------------------------------------------ models
    def setup(self, ctx: JobContext, params: UpscaleParams) -> None:
        import torch

        from stages.esrgan import backends  # torch: imported by a job that runs the model

        device = pick_device(params.device)
        if params.backend != "auto" and backends.BACKENDS[params.backend].cpu_only and device.type != "cpu":
            raise RuntimeError(f'[upscale].backend = "{params.backend}" runs on the CPU; use "auto" or "torch" here')
        threads = params.threads or os.cpu_count() or 1
        if device.type == "cpu":
            torch.set_num_threads(threads)
        try:
            resolved: Resolved = ctx.models.resolve(self.model_settings(params)[0])
        except FileNotFoundError as exc:
            raise ModelUnavailable(str(exc)) from None
        key = (str(resolved.path or resolved.setting.value), str(device), params.dtype, params.backend, threads)
        loaded = OWNER.get("upscaler", key, lambda: self._build(ctx, params, resolved, device, threads))
        self._model, self._runner = loaded.model, loaded.run
        self.device, self.dtype, self.backend = device, loaded.dtype, loaded.backend

    @staticmethod
    def _build(ctx: JobContext, params: UpscaleParams, resolved: Resolved, device, threads: int) -> _Loaded:
        """The model loaded and a backend built for it: the one asked for, or the first of auto's that takes it."""
        import torch

        from stages.esrgan import backends  # torch: imported by a job that runs the model
        from stages.esrgan import load as esrgan_load  # torch: imported by a job that runs the model

        try:
            model = esrgan_load.load(resolved, ctx.models.cache)
        except (FileNotFoundError, esrgan_load.UnsupportedModelError, esrgan_load.UnsafeModelError) as exc:
            raise ModelUnavailable(str(exc)) from None
        dtype = pick_dtype(device, params.dtype)
        if dtype == torch.float16 and not getattr(model.net, "supports_half", True):
            log.info("this architecture is not safe in fp16; running it in fp32", model=model.name)
            dtype = torch.float32
        request = backends.Request(model, device, dtype, params.dtype, threads, ctx.models.cache)
        names = [params.backend] if params.backend != "auto" else backends.auto(device, model, params.dtype)
        for n, name in enumerate(names):
            try:
                built = backends.BACKENDS[name].build(request)
                break
            except Exception as exc:  # export, conversion or compile: a chosen backend fails loudly, "auto" goes on
                if n == len(names) - 1:
                    raise
                log.warning("a backend could not take this model", backend=name, model=model.name,
                            instead=names[n + 1], error=f"{type(exc).__name__}: {exc}")
        log.info("upscaler loaded", model=model.name, device=str(device), dtype=dtype_name(built.dtype),
                 scale=model.scale, backend=name)
        return _Loaded(model, built.run, built.dtype, name)

    def close(self) -> None:
        OWNER.drop("upscaler")
        self._model = self._runner = None

    # ------------------------------------------------------------------ work
    def _targets(self, ctx: JobContext, params: UpscaleParams) -> list[tuple[str, Picture, str]]:
        """(what it is, source picture, output name) for the master and, if asked, each variant."""
        out = []
        if "master" in params.apply_to and ctx.products.master is not None:
            out.append(("master", ctx.products.master, f"{self.prefix}-upscale.png"))
        if "variants" in params.apply_to:
            for v in ctx.products.variants or ():
                out.append((v.label, v.picture, f"{self.prefix}-upscale-{v.label}.png"))
        return out

    def run(self, ctx: JobContext, params: UpscaleParams) -> StageResult:
        assert self._model is not None
        main = self._pass(ctx, params, self._generative(ctx, params), params.tile or self._auto_tile(), None)
        m, backend, dtype = self._model, self.backend, self.dtype  # what [upscale].model ran with
        passes, models = [main], [ModelRef(m.name, m.sha256, str(m.path))]
        for alt in params.compare:  # the A/B candidates: each model over the same pictures
            self.setup(ctx, dataclasses.replace(params, model=alt, compare=()))
            passes.append(self._pass(ctx, params, None, passes[-1].tile, alt))
            models.append(ModelRef(self._model.name, self._model.sha256, str(self._model.path)))
        details = UpscaleDetails(backend, m.scale, passes[-1].tile, params.tile_overlap, main.sizes,
                                 main.large or None)
        summary = f"{m.name} ×{m.scale} → " + ", ".join(f"{v.to[0]}×{v.to[1]}" for v in main.sizes.values())
        if main.large:
            if main.engine is not None:
                models.append(ModelRef(main.engine.name, main.engine.sha256, main.engine.spec))
            rounds = max(r["passes"] for r in main.large.values())
            if rounds > 1:
                summary += f" in {rounds} passes"
            said = sorted({r["summary"] for r in main.large.values() if r.get("summary")})
            summary += "".join(f"; {s}" for s in said)
        attention = [f"{name}: its colour is {d.mean:.1f} ΔE (CIEDE2000, low-pass) from the source's, more than "
                     f"[upscale].max_drift = {params.max_drift:g}" for name, d in main.drift.items()
                     if d is not None and d.mean > params.max_drift]
        return StageResult(
            attention=attention,
            outputs=[n for p in passes for n in p.outputs],
            summary=summary + (f"; compared with {', '.join(params.compare)}" if params.compare else ""),
            models=models, device=str(self.device), dtype=dtype_name(dtype), details=details,
            products=Products(upscaled=tuple(u for p in passes for u in p.made)))

    def _pass(self, ctx: JobContext, params: UpscaleParams, engine, tile: int, candidate: str | None) -> _Pass:
        """Every target upscaled by the loaded model: as ``[upscale].model`` (``candidate`` None), or as that A/B
        candidate (plainly: no refinement or detail pass; written as ``…@<candidate>.png``)."""
        done = _Pass(engine, tile)
        run_params = params if candidate is None else \
            dataclasses.replace(params, refine=RefineConfig(), detail=DetailConfig())
        for what, source, output in self._targets(ctx, params):
            name = output if candidate is None else output.replace(".png", f"@{_label(candidate)}.png")
            with Image.open(ctx.path(source.name)) as im:
                im.load()
                if self._large(im.size, run_params):
                    done.large[name], done.tile, done.drift[name] = self.upscale_large(
                        ctx, run_params, engine, im, source, what, name, done.tile)
                    size = target_size(im.size, run_params)
                else:
                    made = self.upscale_image(im, run_params, done.tile, lambda d, t, n=name:
                                              ctx.check_stop(d, t, f"tiles of {n}"))
                    done.tile, done.drift[name] = made.tile, made.drift
                    ctx.save_picture(name, made.image)
                    size = made.image.size
            caption = (f"upscaled by {candidate}" if candidate else
                       "upscaled" if what == "master" else f"upscaled {what}")
            done.outputs.append(name)
            painted = engine is not None and name in done.large  # refined or detailed by the diffusion model
            done.made.append(Upscaled(what, Picture(name, caption, generative=painted), engine=candidate or ""))
            drift = done.drift.get(name)
            done.sizes[name] = UpscaleSize.of(im.size, size, params.colour_fix, drift.to_json() if drift else None)
        return done

    # ------------------------------------------------------------------ beyond memory, beyond ×native
    def _large(self, size: tuple[int, int], params: UpscaleParams) -> bool:
        """Whether a picture goes through files (``upscale_large``) rather than memory (``upscale_image``): more
        than one Real-ESRGAN pass, a diffusion pass after it, or a result past ``IN_MEMORY`` pixels."""
        target = target_size(size, params)
        return self._passes(size, target) > 1 or params.generative or target[0] * target[1] > IN_MEMORY

    def _passes(self, size: tuple[int, int], target: tuple[int, int]) -> int:
        """Real-ESRGAN passes to reach ``target``: as many as the model's scale needs (Lanczos gives the rest)."""
        factor = max(target[0] / size[0], target[1] / size[1])
        return max(1, math.ceil(math.log(factor) / math.log(self._model.scale) - 1e-9)) if factor > 1 else 1

    def _generative(self, ctx: JobContext, params: UpscaleParams):
        """The diffusion engine for refine and detail, or None when neither is asked for.  With no model
        configured, or one that cannot be loaded, the stage is skipped with the reason (ModelUnavailable):
        a billboard asked for with refinement is not quietly delivered without it."""
        if not params.generative:
            return None

        settings = self._diffusion_settings(params)
        model = next((m for m in settings if m.kind == ModelKind.DIFFUSION), None)
        config = next((m for m in settings if m.kind == ModelKind.DIFFUSION_CONFIG), None)
        try:  # the image's own checkpoint first, as inpaint
            return acquire_for(ctx, model, config, params.device, params.model_from_image, params.state)[0]
        except ModelUnavailable as exc:
            if model is None:
                raise ModelUnavailable("[upscale.refine] and [upscale.detail] need a generative model: set "
                                       f"[upscale.refine].model or [inpaint].model ({exc})") from None
            raise

    def upscale_large(self, ctx: JobContext, params: UpscaleParams, engine, im: Image.Image, source: Picture,
                      what: str, output: str, tile: int) -> tuple[dict, int, colour.Drift | None]:
        """One picture through files: Real-ESRGAN passes, Lanczos to the exact size, then (with an engine)
        tiled refinement, the colour fix and the detail pass, encoded to ``output`` band by band.  Work is kept in the
        archive's ``.work/`` folder until the picture is written, so a crash loses at most a tile."""

        target = target_size(im.size, params)
        key = refine.work_key(self.version, params, self._model.sha256, sha256_file(ctx.path(source.name)),
                              engine.sha256 if engine is not None else "")
        work = ctx.folder.path / ".work" / f"{output}-{key}"
        for old in (work.parent.glob(f"{output}-*") if work.parent.exists() else ()):
            if old != work:  # left by other settings: of no use now
                refine.clear(old)
        work.mkdir(parents=True, exist_ok=True)
        rgb, alpha, mode = _planes(im)
        current = raster.Raster.open(work / "p0.raw") or raster.from_array(work / "p0.raw", rgb)
        passes = self._passes(im.size, target)
        scale = self._model.scale
        for k in range(1, passes + 1):
            if k == passes:  # the last pass starts from the size that lands on the target
                pre = (max(1, round(target[0] / scale)), max(1, round(target[1] / scale)))
                if pre[0] < current.width and pre[1] < current.height:
                    current = raster.Raster.open(work / f"p{k}-pre.raw") or raster.resize(
                        current, work / f"p{k}-pre.raw", pre,
                        check_stop=lambda d, t: ctx.check_stop(d, t, f"resize bands of {output}"))
            done = raster.Raster.open(work / f"p{k}.raw")
            if done is None:
                dst = raster.Raster.create(work / f"p{k}.raw", current.height * scale, current.width * scale, 3,
                                           current.dtype)
                unit = f"tiles of pass {k} of {passes}, {output}"
                tile = self._tiled(raster.FloatView(current), params, tile,
                                   lambda d, t, unit=unit: ctx.check_stop(d, t, unit),
                                   depth=16 if current.dtype == np.uint16 else 8, out=dst)[1]
                done = dst.finish()
            current = done
        if (current.width, current.height) != target:
            current = raster.Raster.open(work / "exact.raw") or raster.resize(
                current, work / "exact.raw", target,
                check_stop=lambda d, t: ctx.check_stop(d, t, f"resize bands of {output}"))
        record: dict = {"passes": passes, "work_px": [current.width, current.height]}
        if engine is not None and (params.refine.enabled or params.detail.enabled) and current.dtype != np.uint8:
            current = raster.Raster.open(work / "eight.raw") or _to_eight(current, work / "eight.raw")
            record["depth"] = "16-bit reduced to 8 for the diffusion passes"
        seed = image_seed(ctx.sha256, params.refine.seed if params.refine.seed >= 0 else params.seed)
        store = refine.TileStore(work / "tiles")
        found = ctx.products.source.prompt if ctx.products.source is not None else None
        if engine is not None and params.refine.enabled:
            r = params.refine
            how = refine.Paint(*fill(r.prompt, r.negative_prompt, found), r.steps, r.guidance, r.denoise, seed)
            size = r.tile or engine.native
            overlap = min(r.overlap, size // 4)
            done = raster.Raster.open(work / "refined.raw")
            if done is not None:
                report = json.loads((work / "refined.json").read_text())
            else:
                done, made = refine.refine(
                    engine, current, work / "refined.raw", store, how, size, overlap, r.seam_fix, r.seam_width,
                    r.seam_denoise, r.seam_padding,
                    lambda d, t, unit: ctx.check_stop(d, t, f"refine {unit} of {output}"))
                report = {"tile": size, "overlap": overlap, "grid": list(made.grid), "tiles": made.tiles,
                          "seams": made.seams, "kept": made.kept, "seed": seed, "denoise": r.denoise,
                          "prompt": how.prompt}
                (work / "refined.json").write_text(json.dumps(report))
            current = done
            record["refine"] = report
            record["summary"] = f"refined in {report['tiles']} tiles + {report['seams']} seam segments"
        fixed = raster.Raster.open(work / "fixed.raw")
        if fixed is None:
            fixed = raster.Raster.create(work / "fixed.raw", current.height, current.width, 3, current.dtype)
            src = rgb if rgb.dtype == current.dtype else \
                ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # reduced to 8 for diffusion
            drift = colour.fix(params.colour_fix, src, current, fixed, float(np.iinfo(current.dtype).max),
                               measure=True, check_stop=lambda d, t: ctx.check_stop(d, t, f"colour bands of {output}"))
            (work / "drift.json").write_text(json.dumps(drift.to_json()))
            fixed = fixed.finish()
        drift = colour.Drift(**json.loads((work / "drift.json").read_text()))
        current = fixed
        if engine is not None and params.detail.enabled:
            record["detail"] = self._detail(ctx, params, engine, current, store, what, im.size, seed, found, output)
            n = len([d for d in record["detail"] if "skipped" not in d])
            record["summary"] = "; ".join(x for x in (record.get("summary"), f"{n} regions detailed") if x)
        self._write(ctx, output, current, alpha, mode, im.size, target)
        refine.clear(work)
        return record, tile, drift

    def _tiled(self, image, params: UpscaleParams, tile: int, check_stop, depth: int = 8, out=None):
        """Real-ESRGAN over ``image`` in tiles (into ``out`` when given): (the result, the tile size used).
        Out of device memory, the tiles are halved and the pass starts again."""
        import torch

        from stages.esrgan import tile as tiling  # torch: imported by a job that runs the model

        while True:
            try:
                return tiling.upscale(self._run, image, self._model.scale, tile, params.tile_overlap, check_stop,
                                      depth=depth, out=out), tile
            except torch.OutOfMemoryError:
                if tile // 2 < MIN_TILE:
                    raise
                tile //= 2
                log.warning("out of device memory; retrying with smaller tiles", tile=tile)
                torch.cuda.empty_cache()

    def _detail(self, ctx: JobContext, params: UpscaleParams, engine, current, store, what: str,
                size: tuple[int, int], seed: int, found, output: str) -> list[dict]:
        """Each face and hand found before, repainted only-masked at the upscaled size with a low strength:
        the box and its feathered mask scaled up from the picture they were found on.  Pixels outside the
        masks are left as they are (stages/diffusion/repaint.py's ``repaint`` pastes through the mask)."""

        records = []
        ox, oy, fx, fy = self._frame(ctx, what)
        sx, sy = current.width / size[0], current.height / size[1]  # the picture upscaled → its upscale
        to_up = (ox * sx, oy * sy, fx * sx, fy * sy)  # master px → upscaled px: offset, then factor
        regions = [(m, i, b) for m in ctx.products.masks or () if m.kind in params.detail.kinds
                   for i, b in enumerate(m.boxes or (m.bounds,))]
        settings = dict(params.kind_settings)
        for n, (m, i, b) in enumerate(regions):
            ctx.check_stop(n, len(regions), f"detail regions of {output}")
            ks = settings[m.kind]
            box = tuple(int(round(v)) for v in (to_up[0] + b[0] * to_up[2], to_up[1] + b[1] * to_up[3],
                                                to_up[0] + b[2] * to_up[2], to_up[1] + b[3] * to_up[3]))
            pad = params.detail.padding
            x0, y0 = max(0, box[0] - 2 * pad), max(0, box[1] - 2 * pad)
            x1, y1 = min(current.width, box[2] + 2 * pad), min(current.height, box[3] + 2 * pad)
            if x1 - x0 < 8 or y1 - y0 < 8:
                records.append({"kind": m.kind, "index": i, "skipped": "outside the picture"})
                continue
            rows = current.rows(y0, y1).copy()
            crop = np.ascontiguousarray(rows[:, x0:x1])
            mask = _scaled_mask(ctx.path(m.name), to_up, (x0, y0, x1, y1))
            prompt, negative = fill(ks.prompt, ks.negative_prompt, found)
            local = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)

            def paint(crop=crop, mask=mask, local=local, prompt=prompt, negative=negative, ks=ks, n=n, pad=pad):
                return repaint(engine, crop, mask, local, pad, params.detail.resolution, prompt, negative,
                               ks.steps, ks.guidance, params.detail.strength, seed + 7919 + n, match=True)[0]
            rows[:, x0:x1] = store.paint_or_keep(f"detail-{m.kind}-{n}", crop, paint)
            current.write(y0, rows)
            records.append({"kind": m.kind, "index": i, "box": list(box), "strength": params.detail.strength,
                            "seed": seed + 7919 + n, "prompt": prompt, "mask": m.name})
        return records

    def _frame(self, ctx: JobContext, what: str) -> tuple[float, float, float, float]:
        """How master pixels map into the picture being upscaled (offset x, y, factor x, y): the identity for
        the master, the variant's frame for a variant (the masks and boxes are the master's)."""
        if what == "master":
            return 0.0, 0.0, 1.0, 1.0
        v = next(v for v in ctx.products.variants or () if v.label == what)
        with Image.open(ctx.path(ctx.products.master.name)) as im:
            w, h = im.size
        x0, y0, x1, y1 = v.frame
        return x0, y0, (x1 - x0) / w, (y1 - y0) / h

    def _write(self, ctx: JobContext, output: str, current, alpha, mode: str, size: tuple[int, int],
               target: tuple[int, int]) -> None:

        def bands():
            for y in range(0, current.height, 256):
                rows = current.rows(y, y + 256)
                if mode in ("L", "LA", "I;16"):
                    grey = rows.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
                    rows = np.clip(np.rint(grey), 0, np.iinfo(rows.dtype).max).astype(rows.dtype)[:, :, None]
                if alpha is not None:
                    a = raster.resize_band(lambda a0, a1: alpha[a0:a1, :, None], size, target, y, y + rows.shape[0])
                    rows = np.concatenate([rows, a.astype(rows.dtype)], axis=2)
                yield rows
        png_mode = {"L": "L", "LA": "LA", "I;16": "I;16", "RGB": "RGB", "RGBA": "RGBA"}[mode]
        ctx.folder.write_with(output, lambda f: raster.write_png(f, current.width, current.height, png_mode,
                                                                 bands(), icc=ctx.icc))

    def upscale_image(self, im: Image.Image, params: UpscaleParams, tile: int,
                      check_stop=lambda done, total: None) -> Made:
        """Any mode in, the same kind of mode out, at the exact target size, its colour fixed
        (``params.colour_fix``); with the tile size used and the colour drift left.

        Colours under fully transparent pixels are filled from visible neighbours first, so that the
        model's receptive field never carries them into visible pixels."""
        target = target_size(im.size, params)
        rgb, alpha, mode = _planes(im)
        sixteen = mode == "I;16"
        up, tile = self._tiled(rgb.astype(np.float32) / (65535.0 if sixteen else 255.0), params, tile, check_stop,
                               depth=16 if sixteen else 8)
        rows = colour.InMemory(up)
        drift = colour.fix(params.colour_fix, rgb, rows, rows, 65535.0 if sixteen else 255.0, measure=True)
        if sixteen:
            grey16 = np.rint(up.astype(np.float32).mean(axis=2)).astype(np.uint16)
            out = Image.fromarray(grey16)  # uint16 → "I;16"
        else:
            out = Image.fromarray(up)
            if mode in ("L", "LA"):
                out = out.convert("L")
        if out.size != target:
            out = out.resize(target, Image.Resampling.LANCZOS)
        if alpha is not None:
            out = out.convert("LA" if mode == "LA" else "RGBA")
            out.putalpha(Image.fromarray(alpha).resize(target, Image.Resampling.LANCZOS))
        return Made(out, tile, drift)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._runner(x)

    def _auto_tile(self) -> int:
        import torch

        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            per_px = 64 * 16 * (2 if self.dtype == torch.float16 else 4) * 4  # ~4 live 64-ch maps at ×4
            return int(max(MIN_TILE, min(1024, (free * 0.6 / per_px) ** 0.5)) // 8 * 8)
        if self.device.type == "mps":
            return 512
        return CPU_TILE


def _planes(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(H×W×3 colour values, alpha or None, the mode to write): 8-bit, or 16-bit for 16-bit grey."""
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if has_alpha else "RGB")
    alpha = np.asarray(im.getchannel("A")) if has_alpha else None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.clip(np.asarray(im, dtype=np.int64), 0, 65535).astype(np.uint16)
        return np.repeat(grey[:, :, None], 3, axis=2), None, "I;16"
    rgb = np.asarray(im.convert("RGB"))
    if alpha is not None:
        rgb = fill_hidden(rgb, alpha)
    grey = im.mode in ("L", "LA")
    mode = ("LA" if grey else "RGBA") if alpha is not None else ("L" if grey else "RGB")
    return np.ascontiguousarray(rgb), alpha, mode


def _to_eight(src, path):

    out = raster.Raster.create(path, src.height, src.width, 3)
    for y in range(0, src.height, 256):
        out.write(y, (src.rows(y, y + 256).astype(np.uint32) * 255 + 32767) // 65535)
    return out.finish()


def _scaled_mask(path, to_up: tuple[float, float, float, float], box: tuple[int, int, int, int]) -> np.ndarray:
    """The part of an automask mask (at the master's size) under ``box`` of the upscaled picture, at the
    upscaled size (uint8; 0 where the box leaves the master): only that part is enlarged."""
    x0, y0, x1, y1 = box
    ox, oy, fx, fy = to_up
    with Image.open(path) as im:
        extent = ((x0 - ox) / fx, (y0 - oy) / fy, (x1 - ox) / fx, (y1 - oy) / fy)
        part = im.convert("L").transform((x1 - x0, y1 - y0), Image.Transform.EXTENT, extent,
                                         Image.Resampling.BILINEAR)
    return np.asarray(part)


def _label(model: str) -> str:
    """A model setting as a file-name label: ``animevideov3``, ``4x-UltraSharp`` for ``…/4x-UltraSharp.pth``."""
    stem = model.replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (".safetensors", ".pth"):
        stem = stem.removesuffix(ext)
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def target_size(size: tuple[int, int], params: UpscaleConfig) -> tuple[int, int]:
    """The exact output size: ``scale``, or ``long_edge``, or ``width``/``height`` (aspect kept if one is 0)."""
    w, h = size
    if params.long_edge:
        f = params.long_edge / max(w, h)
        return max(1, round(w * f)), max(1, round(h * f))
    if params.width and params.height:
        return params.width, params.height
    if params.width:
        return params.width, max(1, round(h * params.width / w))
    if params.height:
        return max(1, round(w * params.height / h)), params.height
    return w * params.scale, h * params.scale
