"""The checkpoint an image was generated with, found among the user's own models: by hash first, then by name.

An image names its checkpoint by name (``Model: ponyDiffusionV6XL``, ComfyUI's ``ckpt_name``) and often by
hash: A1111's AutoV2 (the first 10 hex digits of the file's sha256), its legacy hash (8 hex digits of the
sha256 of 64 KiB read at 1 MiB into the file), or a full sha256 (Fooocus).  A renamed file is still found
by its hash.  Hashes are computed once per file and kept in ``[paths].state/checkpoint-hashes.json``, computed
again only when a file's size or modification time changes; hashing a multi-GB file reports its progress.

Looked in: ``[paths].models`` and its checkpoint folders as A1111 and ComfyUI name them (``Stable-diffusion/``,
``checkpoints/``, ``diffusers/``, ``inpaint/``), subfolders included.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stages.files import atomic_write
from stages.models import SUBFOLDERS, ModelKind

# Which family a single-file checkpoint is, told by a key only that family has.
FAMILY_KEYS = (("sdxl", "conditioner.embedders.1.model."), ("sd2", "cond_stage_model.model."),
               ("sd1", "cond_stage_model.transformer."), ("flux", "double_blocks."))
UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
# What each family's single file must hold to load as a whole pipeline (a UNet-only file does not).
PARTS = {"sd1": (("model.diffusion_model.", "UNet"), ("first_stage_model.", "VAE"),
                 ("cond_stage_model.transformer.", "text encoder")),
         "sd2": (("model.diffusion_model.", "UNet"), ("first_stage_model.", "VAE"),
                 ("cond_stage_model.model.", "text encoder")),
         "sdxl": (("model.diffusion_model.", "UNet"), ("first_stage_model.", "VAE"),
                  ("conditioner.embedders.0.", "first text encoder"),
                  ("conditioner.embedders.1.", "second text encoder"))}
# The families whose single files load with the configs polishd ships (stages/diffusion/configs/<folder>).
SHIPPED_CONFIGS = {"sd1": "sd15-inpaint", "sdxl": "sdxl-inpaint"}
FAMILIES = {"sd1": "an SD 1.x", "sd2": "an SD 2.x", "sdxl": "an SDXL", "flux": "a Flux", "unknown": "an unrecognised"}

MAX_FILES = 20_000
MAX_DEPTH = 4
CHUNK = 8 * 1024 * 1024
LEGACY_AT, LEGACY_LENGTH = 0x100000, 0x10000
FILE = "checkpoint-hashes.json"


@dataclass(frozen=True)
class Checkpoint:
    """What a single-file checkpoint is, from its header alone."""

    family: str                 # sd1, sd2, sdxl, flux or unknown
    in_channels: int            # 9 for an inpainting UNet, 4 for an ordinary one, 0 if none
    v_prediction: bool = False  # a "v_pred" key: trained to predict v (NoobAI-XL v-pred and the like)
    zero_snr: bool = False      # a "ztsnr" key: trained with zero terminal SNR
    missing: tuple[str, ...] = ()  # parts of its family's pipeline the file does not hold (e.g. "VAE")

    def incomplete(self) -> str | None:
        """What the file lacks to load as a whole pipeline ("holds no VAE and no …"), or None when it is whole."""
        if not self.missing or self.family == "flux":
            return None
        return f"holds no {' and no '.join(self.missing)}"

    def describe(self) -> str:
        parts = ["inpainting" if self.in_channels == 9 else "not inpainting"]
        if self.v_prediction:
            parts.append("v-prediction" + (", zero terminal SNR" if self.zero_snr else ""))
        return f"{FAMILIES.get(self.family, 'an unrecognised')} checkpoint ({', '.join(parts)})"


def describe(path: Path) -> Checkpoint:
    """Family, UNet input channels and prediction of a ``.safetensors`` checkpoint, from its header (no
    tensor is read).  ValueError when the file is not a readable ``.safetensors`` file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            in_channels = f.get_slice(UNET_IN).get_shape()[1] if UNET_IN in keys else 0
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{path}: not a readable .safetensors file ({exc})") from None
    family = next((name for name, prefix in FAMILY_KEYS if any(k.startswith(prefix) for k in keys)), "unknown")
    missing = tuple(name for prefix, name in PARTS.get(family, ()) if not any(k.startswith(prefix) for k in keys))
    return Checkpoint(family, int(in_channels), "v_pred" in keys, "ztsnr" in keys, missing)


def folder_family(folder: Path) -> str:
    """The family a diffusers folder's configs describe: sdxl (two text encoders), sd2 (1024-wide
    cross-attention), flux, or sd1."""
    index = json.loads((folder / "model_index.json").read_text())
    if "Flux" in str(index.get("_class_name", "")):
        return "flux"
    if "text_encoder_2" in index:
        return "sdxl"
    unet = folder / "unet" / "config.json"
    return "sd2" if unet.is_file() and json.loads(unet.read_text()).get("cross_attention_dim") == 1024 else "sd1"


def legacy_hash(path: Path) -> str:
    """A1111's old model hash: 8 hex digits of the sha256 of 64 KiB at 1 MiB into the file."""
    with open(path, "rb") as f:
        f.seek(LEGACY_AT)
        return hashlib.sha256(f.read(LEGACY_LENGTH)).hexdigest()[:8]


class Hashes:
    """The sha256 and legacy hash of each checkpoint file, kept between runs (keyed by path; valid while the
    file's size and modification time are what they were)."""

    def __init__(self, state: Path):
        self.path = state / FILE
        self._lock = threading.Lock()
        try:
            data = json.loads(self.path.read_text())
            self.known = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.known = {}
        self.hashed = 0  # files hashed in this process (tests and the benchmark count them)
        self.dirty = False

    def _entry(self, path: Path) -> tuple[dict | None, os.stat_result]:
        st = path.stat()
        entry = self.known.get(str(path))
        fresh = isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns
        return (entry if fresh else None), st

    def legacy(self, path: Path) -> str:
        entry, st = self._entry(path)
        if entry and entry.get("legacy"):
            return entry["legacy"]
        value = legacy_hash(path)
        self._put(path, st, {"legacy": value}, keep=entry)
        return value

    def sha256(self, path: Path, progress: Callable[[int, int], None] | None = None) -> str:
        entry, st = self._entry(path)
        if entry and entry.get("sha256"):
            return entry["sha256"]
        digest, done = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, st.st_size)
        self.hashed += 1
        value = digest.hexdigest()
        self._put(path, st, {"sha256": value}, keep=entry)
        return value

    def _put(self, path: Path, st: os.stat_result, values: dict, keep: dict | None) -> None:
        with self._lock:
            self.known[str(path)] = {**(keep or {}), "size": st.st_size, "mtime_ns": st.st_mtime_ns, **values}
            self.dirty = True
        if "sha256" in values:  # minutes of reading: kept at once; a legacy hash waits for save()
            self.save()

    def save(self) -> None:
        """What was hashed, to ``[paths].state`` (a read-only state folder: hashed again next time, never a
        failed image)."""
        with self._lock:
            if not self.dirty:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, (json.dumps(self.known, indent=1, sort_keys=True) + "\n").encode())
                self.dirty = False
            except OSError:
                pass


@dataclass(frozen=True)
class Found:
    path: Path | None
    how: str = ""   # "hash" or "name"
    why: str = ""   # when not found: what was looked for, and where


def name_of(named: str) -> str:
    """A checkpoint as an image names it, reduced to what a file's stem would be: no folder, no extension,
    no trailing `` [hash]``."""
    name = re.sub(r"\s*\[[0-9a-fA-F]{6,64}\]\s*$", "", named.strip())
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (".safetensors", ".ckpt", ".pt", ".bin", ".sft"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return name.casefold()


def candidates(models_dir: Path) -> list[Path]:
    """The checkpoint files and diffusers folders under the models folder's checkpoint folders."""
    roots = [models_dir, *(models_dir / sub for sub in SUBFOLDERS[ModelKind.DIFFUSION])]
    out: list[Path] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack and len(out) < MAX_FILES:
            folder, depth = stack.pop()
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for p in entries:
                if p in seen:
                    continue
                seen.add(p)
                if _is_checkpoint(p):
                    out.append(p)
                elif p.is_dir() and root != models_dir and depth < MAX_DEPTH:  # the models folder's own
                    stack.append((p, depth + 1))  # subfolders hold other kinds (loras, upscale_models, …)
    return out


def find(checkpoint: str | None, checkpoint_hash: str | None, models_dir: Path, hashes: Hashes,
         progress: Callable[[str, int, int], None] | None = None) -> Found:
    """The file of an image's checkpoint: by hash first (the files whose names match are hashed first), then
    by name."""
    if not checkpoint and not checkpoint_hash:
        return Found(None, why="the image names no checkpoint")
    files = candidates(models_dir)
    wanted = name_of(checkpoint) if checkpoint else ""
    named = [p for p in files if _stem(p) == wanted] if wanted else []
    h = (checkpoint_hash or "").lower()
    try:
        found = _by_hash(h, named + [p for p in files if p not in named], hashes, progress) if h else None
    finally:
        hashes.save()
    if found is not None:
        return found
    if named:
        return Found(named[0], "name")
    said = " ".join(x for x in (repr(checkpoint) if checkpoint else "", f"[{h}]" if h else "") if x)
    return Found(None, why=f"the image's checkpoint {said} is not among the {len(files)} checkpoints under "
                           f"{models_dir}")


def _by_hash(h: str, files: list[Path], hashes: Hashes, progress) -> Found | None:
    """The first of ``files`` whose legacy (8 hex), AutoV2 (10 or 12) or full hash is ``h``."""
    for p in files:
        if p.is_dir():
            continue
        try:
            if len(h) == 8:
                match = hashes.legacy(p) == h
            else:
                full = hashes.sha256(p, _named(progress, p)) if len(h) in (10, 12, 64) else ""
                match = full.startswith(h) if len(h) < 64 else full == h
        except OSError:
            continue
        if match:
            return Found(p, "hash")
    return None


def _is_checkpoint(p: Path) -> bool:
    return p.is_file() and p.suffix == ".safetensors" or p.is_dir() and (p / "model_index.json").is_file()


def _stem(p: Path) -> str:
    return (p.name if p.is_dir() else p.stem).casefold()


def _named(progress, path: Path):
    return (lambda done, total: progress(path.name, done, total)) if progress is not None else None
