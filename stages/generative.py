"""The one way inpaint and outpaint acquire a generative engine.

``acquire`` resolves the model settings (``stages/models.py``), picks the device
and dtype, and returns the loaded engine, shared between stages: at most
``[inpaint].max_loaded`` generative models are held in memory at once, the least
recently used unloaded first (``stages/held.py``).  A model that
cannot be found or loaded raises ``ModelUnavailable`` with a reason that names the
setting the user set; the runner records it as the stage's skip reason.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from stages import checkpoints
from stages.device import pick_device, pick_dtype
from stages.held import OWNER
from stages.models import ModelKind, Models, ModelSetting, ModelUnavailable

log = structlog.get_logger("polishd.generative")

GB = 2**30
# Memory one generative engine takes with room to run it: SDXL in fp16 is ~7 GB of weights on a GPU, in fp32
# ~10 GB on a CPU, with the working tensors of a 1024² repaint on top.
PER_ENGINE = {"cuda": 12 * GB, "cpu": 16 * GB}
_max_loaded = 0  # [inpaint].max_loaded, as the runner last set it (0 = by the device's memory)


def configure(max_loaded: int) -> None:
    """The runner's [inpaint].max_loaded for the jobs from now on."""
    global _max_loaded
    _max_loaded = max_loaded


def slots(max_loaded: int, where) -> int:
    """How many generative engines may be in memory at once: ``max_loaded``, or by the device's memory (one
    per 12 GB of a CUDA device, one per 16 GB of RAM on a CPU, one on Apple's MPS, whose memory the system
    shares; at most 4)."""
    if max_loaded:
        return max_loaded
    import os

    if where.type == "cuda":
        import torch

        total = torch.cuda.get_device_properties(where).total_memory
        return max(1, min(4, total // PER_ENGINE["cuda"]))
    if where.type == "cpu":
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return 1
        return max(1, min(4, total // PER_ENGINE["cpu"]))
    return 1


def acquire(models: Models, model: ModelSetting, config: ModelSetting | None, device: str):
    """The engine for ``model`` (with ``config`` for a single file of another family), on ``device``, with no
    LoRA left in it by a repaint that failed half-way."""
    engine = _acquire(models, model, config, device)
    engine.clear_loras()
    return engine


def _acquire(models: Models, model: ModelSetting, config: ModelSetting | None, device: str):
    from stages.diffusion import engine  # torch: imported by a job that runs the model

    try:
        resolved = models.resolve(model)
        resolved_config = models.resolve(config) if config is not None and config.value else None
    except FileNotFoundError as exc:
        raise ModelUnavailable(str(exc)) from None
    where = pick_device(device)
    OWNER.limits["diffusion"] = slots(_max_loaded, where)
    try:
        return engine.get(resolved, resolved_config, where, pick_dtype(where, "auto"), models.cache)
    except MemoryError:
        raise  # not the model's fault: the attempt is retried
    except FileNotFoundError as exc:
        raise ModelUnavailable(str(exc)) from None
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, on a busy GPU: retried like any other attempt
            raise
        raise ModelUnavailable(f"{model.setting} = {model.value!r} could not be loaded: "
                               f"{type(exc).__name__}: {exc}") from exc


_FOUND: dict[str, checkpoints.Found] = {}  # the image's sha256 → its checkpoint looked up (the last image only)


def image_checkpoint(ctx, state: str) -> checkpoints.Found | None:
    """The checkpoint the image's generation record names, among the user's models (looked up once per image,
    whichever stage asks first), or None when the image names none."""
    gen = ctx.products.source.generation if ctx.products.source is not None else None
    if gen is None or not (gen.checkpoint or gen.checkpoint_hash):
        return None
    if ctx.sha256 not in _FOUND:
        hashes = checkpoints.Hashes(Path(state) if state else ctx.models.cache)
        found = checkpoints.find(gen.checkpoint, gen.checkpoint_hash, ctx.models.cache, hashes,
                                 lambda name, done, total: ctx.check_stop(done >> 20, total >> 20,
                                                                          f"MB of {name} hashed"))
        _FOUND.clear()
        _FOUND[ctx.sha256] = found
    return _FOUND[ctx.sha256]


def acquire_for(ctx, model: ModelSetting | None, config: ModelSetting | None, device: str, from_image: bool,
                state: str):
    """(engine, which model and why): the image's own checkpoint when ``from_image`` and it is there and loads,
    else ``model`` (the stage's setting).  ModelUnavailable when neither can be had."""
    found = image_checkpoint(ctx, state) if from_image else None
    fallback = f"{model.setting} ({found.why})" if model and found is not None and found.path is None else \
        (model.setting if model else "")
    if found is not None and found.path is not None:
        own = ModelSetting("the image's checkpoint", str(found.path), ModelKind.DIFFUSION)
        try:
            return (acquire(ctx.models, own, config_for(found.path, config, ctx.models), device),
                    f"the image's own checkpoint {found.path.name}, found by {found.how}")
        except ModelUnavailable as exc:
            if model is None or not model.value:
                raise ModelUnavailable(f"the image's checkpoint {found.path.name} could not be used: {exc}") from None
            fallback = f"{model.setting} (the image's checkpoint {found.path.name} could not be used: {exc})"
            log.warning("the image's own checkpoint could not be used", checkpoint=str(found.path), error=str(exc))
    if model is None or not model.value:
        raise ModelUnavailable("no generative model configured" + (f", and {found.why}" if found else ""))
    return acquire(ctx.models, model, config, device), fallback


def config_for(path: Path, config: ModelSetting | None, models: Models) -> ModelSetting | None:
    """The model_config setting for the image's own single file when its folder is of the file's family (a
    folder of another family describes the file wrongly: then none, and the configs polishd ships serve)."""
    if path.is_dir() or config is None or not config.value:
        return None
    try:
        folder = models.resolve(config).path
        return config if checkpoints.describe(path).family == checkpoints.folder_family(folder) else None
    except (FileNotFoundError, ValueError):  # not there, or not a readable file: the engine says which
        return None
