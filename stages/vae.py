"""The VAE an image was made with, found where A1111 (``models/VAE``) and ComfyUI (``models/vae``) keep it.

A1111 writes ``VAE: name.safetensors`` (and ``VAE hash``) only when a VAE other than the checkpoint's own
was chosen; ComfyUI's graph names it in a ``VAELoader``.  Found by name (no folder, any extension, case
ignored) under ``[paths].models``; the engine reads it tensors-only and decodes with it for that repaint.
"""

from __future__ import annotations

from pathlib import Path

from stages.checkpoints import name_of
from stages.models import EXTENSIONS, SUBFOLDERS, ModelKind

MAX_FILES = 5000


def find(named: str, models_dir: Path) -> Path | None:
    """The file of the VAE ``named``, or None."""
    wanted = name_of(named)
    seen = 0
    for sub in SUBFOLDERS[ModelKind.VAE]:
        root = models_dir / sub
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            seen += 1
            if seen > MAX_FILES:
                return None
            if p.is_file() and p.suffix in EXTENSIONS[ModelKind.VAE] and name_of(p.name) == wanted:
                return p
    return None
