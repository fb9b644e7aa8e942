"""The diffusers inpainting engine: found offline, loaded once, one generative model in memory at a time.

``[inpaint].model`` may be

* a diffusers folder (``model_index.json`` inside): SD 1.x/2.x inpainting, SDXL inpainting,
  or Flux Fill, whichever pipeline class the folder names;
* a single ``.safetensors`` SD 1.x inpainting checkpoint: loaded with the component configs
  that ship in ``configs/sd15-inpaint`` and a CLIP tokenizer built offline (a single file holds
  no tokenizer, and without ``config=`` diffusers would try to download one);
* a hub id (``owner/name``) already in the user's Hugging Face cache, loaded with
  ``HF_HUB_OFFLINE=1``.

Nothing is ever downloaded.
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch
from PIL import Image

from daemon.archive import sha256_file
from stages.device import dtype_name
from stages.diffusion.tokenizer import write_tokenizer

log = structlog.get_logger("polishd.diffusion")

CONFIGS = Path(__file__).parent / "configs"
NATIVE_SIZE = {"StableDiffusionInpaintPipeline": 512, "StableDiffusionXLInpaintPipeline": 1024,
               "FluxFillPipeline": 1024}


class ModelNotFound(FileNotFoundError):
    pass


@dataclass
class Engine:
    spec: str
    pipe: object
    device: torch.device
    dtype: torch.dtype
    name: str
    sha256: str
    native: int
    last_used: float = 0.0

    @property
    def kind(self) -> str:
        return type(self.pipe).__name__

    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str, negative: str, steps: int,
                guidance: float, strength: float, seed: int, callback=None) -> Image.Image:
        """One crop in, the same size out.  ``image``/``mask`` must already be at the working size."""
        self.last_used = time.monotonic()
        # img2img runs int(steps × strength) steps: never let that round down to none.
        steps = max(steps, math.ceil(1 / strength)) if strength > 0 else steps
        generator = torch.Generator(device="cpu").manual_seed(seed)
        args = dict(prompt=prompt, image=image, mask_image=mask, num_inference_steps=steps,
                    guidance_scale=guidance, strength=strength, generator=generator,
                    height=image.height, width=image.width)
        if self.kind != "FluxFillPipeline":
            args["negative_prompt"] = negative or None
        if callback is not None:
            args["callback_on_step_end"] = lambda pipe, step, t, kw: (callback(), kw)[1]
        with torch.inference_mode():
            result = self.pipe(**args).images[0]
        self.last_used = time.monotonic()
        return result


_lock = threading.Lock()
_active: Engine | None = None  # one generative model in memory at a time


def get(spec: str, base: Path | None, device: torch.device, dtype: torch.dtype, cache: Path) -> Engine:
    """The engine for ``spec``, loading it (and unloading any other) if needed."""
    global _active
    with _lock:
        if _active is not None and (_active.spec, _active.device, _active.dtype) == (spec, device, dtype):
            return _active
        unload_locked()
        _active = _load(spec, base, device, dtype, cache)
        return _active


def unload_if_idle(idle_seconds: float) -> bool:
    with _lock:
        if _active is not None and idle_seconds and time.monotonic() - _active.last_used > idle_seconds:
            unload_locked()
            return True
    return False


def unload() -> None:
    with _lock:
        unload_locked()


def unload_locked() -> None:
    global _active
    if _active is None:
        return
    log.info("generative model unloaded", model=_active.name)
    _active = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve(spec: str, base: Path | None) -> tuple[str, Path | None]:
    """("folder" | "file" | "hub", path) for a model spec; raises ModelNotFound with what was tried."""
    p = Path(spec).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    if p.is_dir() and (p / "model_index.json").exists():
        return "folder", p
    if p.is_file() and p.suffix == ".safetensors":
        return "file", p
    if p.exists():
        raise ModelNotFound(f"[inpaint].model = {spec!r}: {p} is neither a diffusers folder (with "
                            "model_index.json) nor a .safetensors checkpoint")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return "hub", None
    raise ModelNotFound(f"[inpaint].model = {spec!r}: no such file or folder ({p})")


def _load(spec: str, base: Path | None, device: torch.device, dtype: torch.dtype, cache: Path) -> Engine:
    import diffusers

    how, path = resolve(spec, base)
    t0 = time.monotonic()
    common = dict(torch_dtype=dtype, local_files_only=True)
    if how == "folder":
        pipe = diffusers.AutoPipelineForInpainting.from_pretrained(path, **common)
        digest = _folder_digest(path)
    elif how == "file":
        pipe = diffusers.StableDiffusionInpaintPipeline.from_single_file(
            str(path), config=str(single_file_config(cache)), safety_checker=None, requires_safety_checker=False,
            **common)
        digest = sha256_file(path)
    else:
        old = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            pipe = diffusers.AutoPipelineForInpainting.from_pretrained(spec, **common)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"[inpaint].model = {spec!r}: not in the Hugging Face cache "
                                f"({exc.__class__.__name__}); polishd never downloads models") from None
        finally:
            if old is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old
        digest = ""
    if hasattr(pipe, "safety_checker"):
        pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    name = path.name if path is not None else spec
    engine = Engine(spec, pipe, device, dtype, name, digest, NATIVE_SIZE.get(type(pipe).__name__, 512),
                    time.monotonic())
    log.info("generative model loaded", model=name, pipeline=engine.kind, device=str(device),
             dtype=dtype_name(dtype), seconds=round(time.monotonic() - t0, 2))
    return engine


def single_file_config(cache: Path) -> Path:
    """The shipped SD 1.x inpainting configs plus an offline-built tokenizer, as one folder in the cache."""
    target = cache / "diffusers-configs" / "sd15-inpaint"
    if not (target / "tokenizer" / "vocab.json").exists():
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(CONFIGS / "sd15-inpaint", tmp)
        write_tokenizer(tmp / "tokenizer")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def _folder_digest(path: Path) -> str:
    """A digest of a diffusers folder's weight files (names and sizes: hashing gigabytes per load is waste)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            h.update(f"{f.relative_to(path)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()
