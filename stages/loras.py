"""The LoRAs a repaint uses: the image's own (A1111 ``<lora:…>`` and ``<lyco:…>`` tags, ComfyUI's LoRA loader
nodes — from its generation record) and the user's (``[inpaint].loras``, and per kind
``[inpaint.face].loras``: a face-detail LoRA on faces only), found in ``[paths].models`` under ComfyUI's
``loras/`` and A1111's ``Lora/`` and ``LyCORIS/`` (subfolders too) by name, with or without the extension.
One the image names that is not there is painted without, and said.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stages.generation import LoraRef

FOLDERS = ("loras", "Lora", "LyCORIS")
EXTENSIONS = (".safetensors",)
MAX_FILES = 5000


@dataclass(frozen=True)
class Use:
    name: str
    path: Path
    weight: float              # the UNet's
    te_weight: float           # the text encoders'


def parse(setting: str) -> LoraRef:
    """``"name"``, ``"name:0.6"`` or ``"name:0.6:0.3"`` (UNet weight, then the text encoders'), as the
    config takes them."""
    name, *weights = setting.split(":")
    w = float(weights[0]) if weights else 1.0
    te = float(weights[1]) if len(weights) > 1 else None
    return LoraRef(name.strip(), w, te)


def check(setting: str) -> str | None:
    """Why a config entry is not a LoRA setting, or None."""
    try:
        ref = parse(setting)
    except ValueError:
        return f'entries are "name", "name:weight" or "name:weight:text_encoder_weight" (got {setting!r})'
    if not ref.name or not -10 <= ref.weight <= 10 or ref.te_weight is not None and not -10 <= ref.te_weight <= 10:
        return f'entries are "name" with weights from -10 to 10 (got {setting!r})'
    return None


def available(models_dir: Path) -> dict[str, Path]:
    """Every LoRA file by its name (case as written; looked up without case too)."""
    out: dict[str, Path] = {}
    for sub in FOLDERS:
        root = models_dir / sub
        if not root.is_dir():
            continue
        for n, p in enumerate(sorted(root.rglob("*"))):
            if n >= MAX_FILES:
                break
            if p.is_file() and p.suffix in EXTENSIONS:
                out.setdefault(p.stem, p)
    return out


def _stem(name: str) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (*EXTENSIONS, ".pt", ".ckpt"):
        name = name.removesuffix(ext)
    return name


def wanted(from_image: list[LoraRef], own: list[str], models_dir: Path) -> tuple[list[Use], list[str]]:
    """(the LoRAs to load with their weights, what was asked for and is not there)."""
    files = available(models_dir)
    folded = {k.casefold(): v for k, v in files.items()}
    uses: list[Use] = []
    missing: list[str] = []
    for ref in [*from_image, *(parse(s) for s in own)]:
        stem = _stem(ref.name)
        path = files.get(stem) or folded.get(stem.casefold())
        if path is None:
            missing.append(f"LoRA {ref.name}: not in {', '.join(str(models_dir / f) for f in FOLDERS)}")
        elif not any(u.path == path for u in uses):
            te = ref.te_weight if ref.te_weight is not None else ref.weight
            uses.append(Use(path.stem, path, ref.weight, te))
    return uses, missing
