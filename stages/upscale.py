"""40 — upscale: Real-ESRGAN at its native scale, tiled, then Lanczos to the exact target size.

Writes ``40-upscale.png`` for the master and ``40-upscale-<variant>.png`` for each
outpainted variant (when ``apply_to`` includes them).  Alpha is upscaled
separately (Lanczos) and reattached; grey images stay grey, 16-bit grey stays
16-bit; the ICC profile is kept.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import structlog
from PIL import Image

from stages.base import JobContext, ModelRef, Stage, StageResult, from_section
from stages.models import ModelKind, ModelSetting, ModelUnavailable, Resolved
from stages.picture import fill_hidden
from stages.products import Picture, Products, Slot, Upscaled
from stages.schema import Errors

if TYPE_CHECKING:
    import torch

    from stages.esrgan import load as esrgan_load

log = structlog.get_logger("polishd.upscale")

CPU_TILE = 256  # input px per CPU tile: the fastest measured at 512², peak memory < 2 GB (bench/upscale.py)
MIN_TILE = 64


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
    backend: Literal["auto", "torch", "openvino", "ncnn", "onnxruntime"] = "auto"
    compare: tuple[str, ...] = ()  # other models to run too, as A/B candidates: 40-upscale@<model>.png

    def check(self, err: Errors) -> None:
        err.one_of("scale", self.scale, (2, 3, 4))
        if self.model in self.compare:
            err.add("compare", f"names [upscale].model ({self.model!r}) itself; list the other models to compare")
        for name in self.compare:
            if not name or "/" in name and not name.endswith((".pth", ".safetensors")):
                err.add("compare", f"must list model names or files (got {name!r})")
        for key in ("long_edge", "width", "height"):
            err.between(key, getattr(self, key), 0, 32768)
        if self.long_edge and (self.width or self.height):
            err.add("long_edge", "cannot be combined with width/height; set one or the other")
        if self.tile and not 32 <= self.tile <= 4096:
            err.add("tile", f"must be 0 (automatic) or between 32 and 4096 (got {self.tile})")
        err.between("tile_overlap", self.tile_overlap, 0, 256)
        if self.tile and self.tile_overlap * 2 >= self.tile:
            err.add("tile_overlap", f"must be less than half of tile ({self.tile}) (got {self.tile_overlap})")
        err.at_least("threads", self.threads, 0)
        if self.backend == "ncnn" and self.dtype == "fp16":
            err.add("dtype", 'must be "auto", "fp32" or "bf16" with backend = "ncnn" (got "fp16")')


@dataclass(frozen=True)
class UpscaleParams(UpscaleConfig):
    device: str = "auto"  # [daemon].device


class UpscaleStage(Stage):
    name = "upscale"
    prefix = "40"
    Config = UpscaleConfig
    consumes = frozenset({Slot.MASTER, Slot.VARIANTS})
    produces = frozenset({Slot.UPSCALED})

    def __init__(self) -> None:
        self._model: esrgan_load.LoadedModel | None = None
        self._key: tuple | None = None
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.backend = ""
        self._runner = None

    def params(self, config) -> UpscaleParams:
        return from_section(UpscaleParams, config.upscale, device=config.daemon.device)

    def model_settings(self, params: UpscaleParams) -> list[ModelSetting]:
        return [ModelSetting("[upscale].model", params.model, ModelKind.UPSCALER),
                *(ModelSetting("[upscale].compare", m, ModelKind.UPSCALER) for m in params.compare)]

    def skip_reason(self, ctx: JobContext, params: UpscaleParams) -> str | None:
        if not self._targets(ctx, params):
            return "nothing to upscale ([upscale].apply_to names no existing image)"
        return None

    # ------------------------------------------------------------------ models
    def _load(self, ctx: JobContext, params: UpscaleParams) -> esrgan_load.LoadedModel:
        from stages.esrgan import load as esrgan_load

        try:
            resolved: Resolved = ctx.models.resolve(self.model_settings(params)[0])
            return esrgan_load.load(resolved, ctx.models.cache)
        except (FileNotFoundError, esrgan_load.UnsupportedModelError, esrgan_load.UnsafeModelError) as exc:
            raise ModelUnavailable(str(exc)) from None

    def setup(self, ctx: JobContext, params: UpscaleParams) -> None:
        import torch

        from stages.device import dtype_name, pick_device, pick_dtype
        from stages.esrgan import load as esrgan_load
        from stages.esrgan import ncnn_backend, onnx_backend, openvino_backend

        device = pick_device(params.device)
        dtype = pick_dtype(device, params.dtype)
        if params.backend in ("onnxruntime", "openvino", "ncnn") and device.type != "cpu":
            raise RuntimeError(f'[upscale].backend = "{params.backend}" runs on the CPU; use "auto" or "torch" here')
        if params.backend == "onnxruntime" and dtype != torch.float32:
            raise RuntimeError('[upscale].backend = "onnxruntime" runs in fp32 only; set [upscale].dtype = "fp32"')
        key = (params.model, str(device), params.dtype, params.backend)
        if key == self._key:
            return
        self.close()
        threads = params.threads or os.cpu_count() or 1
        if device.type == "cpu":
            torch.set_num_threads(threads)
        model = self._load(ctx, params)
        cache = ctx.models.cache
        backend = params.backend if params.backend != "auto" else self._auto_backend(device, model, params)
        if dtype == torch.float16 and not getattr(model.net, "supports_half", True):
            log.info("this architecture is not safe in fp16; running it in fp32", model=model.name)
            dtype = torch.float32
        if backend == "ncnn":
            if model.ncnn is None:
                raise RuntimeError(f'[upscale].backend = "ncnn" runs the built-in models only '
                                   f'({", ".join(esrgan_load.BUILTINS)}); use "auto" for {model.name}')
            bf16 = params.dtype in ("auto", "bf16")
            self._runner = ncnn_backend.NcnnRunner(*model.ncnn, threads, bf16)
            dtype = torch.bfloat16 if bf16 else torch.float32
        if backend == "openvino":
            bf16 = params.dtype == "bf16" or (params.dtype == "auto" and openvino_backend.bf16_capable())
            try:
                self._runner = openvino_backend.OpenVinoRunner(
                    onnx_backend.export(model.net, model.sha256, cache), threads, bf16, cache / "openvino")
                dtype = torch.bfloat16 if bf16 else torch.float32
            except Exception as exc:  # export or compile: a chosen backend fails loudly, "auto" falls back
                if params.backend == "openvino":
                    raise
                log.warning("OpenVINO could not take this model; using torch", model=model.name,
                            error=f"{type(exc).__name__}: {exc}")
                backend = "torch"
        if backend == "onnxruntime":
            self._runner = onnx_backend.OrtRunner(onnx_backend.export(model.net, model.sha256, cache), threads)
        elif backend == "torch":
            net = model.net.to(device=device, dtype=dtype)
            if device.type == "cpu":
                net = net.to(memory_format=torch.channels_last)
            model.net = net
            self._runner = self._run_torch
        self._model, self._key, self.device, self.dtype, self.backend = model, key, device, dtype, backend
        log.info("upscaler loaded", model=model.name, device=str(device), dtype=dtype_name(dtype),
                 scale=model.scale, backend=backend)

    @staticmethod
    def _auto_backend(device, model: esrgan_load.LoadedModel, params: UpscaleParams) -> str:
        """The fastest faithful path (at least 45 dB PSNR against fp32 torch) for this device and model.

        On a GPU, torch.  On a CPU with bf16 instructions (AVX-512 BF16, AMX), OpenVINO in bf16; on any
        other CPU, a built-in model runs fastest in ncnn with bf16 storage, and anything else in OpenVINO
        fp32 (measured in ``bench/upscale_cpu.py``).  Architectures that only spandrel knows run in torch.
        """
        from stages.esrgan import load as esrgan_load
        from stages.esrgan import ncnn_backend, openvino_backend

        if device.type != "cpu":
            return "torch"
        bf16_cpu = openvino_backend.available() and openvino_backend.bf16_capable()
        if (model.ncnn is not None and not bf16_cpu and params.dtype in ("auto", "bf16")
                and ncnn_backend.available()):
            return "ncnn"
        ours = not isinstance(model.net, esrgan_load.SpandrelNet)
        return "openvino" if ours and openvino_backend.available() else "torch"

    def close(self) -> None:
        self._model = self._key = self._runner = None
        import sys

        torch = sys.modules.get("torch")  # nothing to free if torch was never imported
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

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
        from stages.device import dtype_name

        assert self._model is not None
        outputs, sizes, made = [], {}, []
        tile = params.tile or self._auto_tile()
        for what, source, output in self._targets(ctx, params):
            with Image.open(ctx.path(source.name)) as im:
                im.load()
                result, tile = self.upscale_image(
                    im, params, tile, lambda done, total, name=output: ctx.check_stop(done, total, f"tiles of {name}"))
            outputs.append(ctx.save_picture(output, result))
            made.append(Upscaled(what, Picture(output, "upscaled" if what == "master" else f"upscaled {what}")))
            sizes[output] = {"from": list(im.size), "to": list(result.size)}
        m = self._model
        models = [ModelRef(m.name, m.sha256, str(m.path))]
        for alt in params.compare:  # the A/B candidates: each model over the same pictures
            self.setup(ctx, dataclasses.replace(params, model=alt, compare=()))
            for what, source, output in self._targets(ctx, params):
                name = output.replace(".png", f"@{_label(alt)}.png")
                with Image.open(ctx.path(source.name)) as im:
                    im.load()
                    result, tile = self.upscale_image(
                        im, params, tile, lambda done, total, n=name: ctx.check_stop(done, total, f"tiles of {n}"))
                outputs.append(ctx.save_picture(name, result))
                made.append(Upscaled(what, Picture(name, f"upscaled by {alt}"), engine=alt))
            models.append(ModelRef(self._model.name, self._model.sha256, str(self._model.path)))
        return StageResult(
            outputs=outputs,
            summary=f"{m.name} ×{m.scale} → " + ", ".join(f"{v['to'][0]}×{v['to'][1]}" for v in sizes.values())
            + (f"; compared with {', '.join(params.compare)}" if params.compare else ""),
            models=models,
            device=str(self.device), dtype=dtype_name(self.dtype),
            details={"backend": self.backend, "native_scale": m.scale, "tile": tile,
                     "tile_overlap": params.tile_overlap, "sizes": sizes},
            products=Products(upscaled=tuple(made)))

    def upscale_image(self, im: Image.Image, params: UpscaleParams, tile: int,
                      check_stop=lambda done, total: None) -> tuple[Image.Image, int]:
        """Any mode in, the same kind of mode out, at the exact target size.  Returns the tile size used.

        Colours under fully transparent pixels are filled from visible neighbours first, so that the
        model's receptive field never carries them into visible pixels."""
        import torch

        from stages.esrgan import tile as tiling

        target = target_size(im.size, params)
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA" if has_alpha else "RGB")
        alpha = im.getchannel("A") if has_alpha else None
        sixteen = im.mode in ("I;16", "I;16B", "I;16L", "I")
        grey = im.mode in ("L", "LA") or sixteen
        if sixteen:
            arr = np.asarray(im, dtype=np.float32) / 65535.0
            rgb = np.repeat(arr[:, :, None], 3, axis=2)
        else:
            rgb8 = np.asarray(im.convert("RGB"))
            if alpha is not None:
                rgb8 = fill_hidden(rgb8, np.asarray(alpha))
            rgb = rgb8.astype(np.float32) / 255.0
        while True:
            try:
                up = tiling.upscale(self._run, rgb, self._model.scale, tile, params.tile_overlap, check_stop,
                                    depth=16 if sixteen else 8)
                break
            except torch.OutOfMemoryError:
                if tile // 2 < MIN_TILE:
                    raise
                tile //= 2
                log.warning("out of device memory; retrying with smaller tiles", tile=tile)
                torch.cuda.empty_cache()
        if sixteen:
            grey16 = np.rint(up.astype(np.float32).mean(axis=2)).astype(np.uint16)
            out = Image.fromarray(grey16)  # uint16 → "I;16"
        else:
            out = Image.fromarray(up)
            if grey:
                out = out.convert("L")
        if out.size != target:
            out = out.resize(target, Image.Resampling.LANCZOS)
        if alpha is not None:
            out = out.convert("LA" if grey and not sixteen else "RGBA")
            out.putalpha(alpha.resize(target, Image.Resampling.LANCZOS))
        return out, tile

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self._runner(x)

    def _run_torch(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            x = x.to(device=self.device, dtype=self.dtype)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            return self._model.net(x).float().cpu()

    def _auto_tile(self) -> int:
        import torch

        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            per_px = 64 * 16 * (2 if self.dtype == torch.float16 else 4) * 4  # ~4 live 64-ch maps at ×4
            return int(max(MIN_TILE, min(1024, (free * 0.6 / per_px) ** 0.5)) // 8 * 8)
        if self.device.type == "mps":
            return 512
        return CPU_TILE


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
