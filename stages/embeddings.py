"""Textual inversions a prompt uses, found among the user's embeddings, as A1111 and ComfyUI find them.

A1111: a word of the prompt that is the name of a file in ``embeddings/`` (``EasyNegative``) is that
embedding.  ComfyUI: ``embedding:name`` (with or without the extension) is, and the ``embedding:`` goes
from the text.  Looked for in ``[paths].models/embeddings/`` and its subfolders.  An embedding the prompt asks
for by ``embedding:`` that is not there, or one the image's record names (A1111's ``TI hashes``) that is not
there, is missing: painted without it, and said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from stages.models import EXTENSIONS, ModelKind

MAX_FILES = 5000
_COMFY = re.compile(r"embedding:([\w.\-]+)", re.I)


@dataclass(frozen=True)
class Wanted:
    """The embeddings to load for a repaint (name → file), the prompts with ComfyUI's ``embedding:`` taken out,
    and the names asked for that are not there."""

    files: tuple[tuple[str, Path], ...] = ()
    prompt: str = ""
    negative: str = ""
    missing: tuple[str, ...] = field(default_factory=tuple)


def available(models_dir: Path) -> dict[str, Path]:
    """Every embedding file by its name (the file's stem), the first found of a name kept."""
    root = models_dir / "embeddings"
    out: dict[str, Path] = {}
    if not root.is_dir():
        return out
    for n, p in enumerate(sorted(root.rglob("*"))):
        if n >= MAX_FILES:
            break
        if p.is_file() and p.suffix in EXTENSIONS[ModelKind.EMBEDDING]:
            out.setdefault(p.stem, p)
    return out


def wanted(prompt: str, negative: str, models_dir: Path, named: list[str] | None = None) -> Wanted:
    """What a prompt and its negative use."""
    files = available(models_dir)
    found: dict[str, Path] = {}
    missing: list[str] = []

    def comfy(text: str) -> str:
        def take(m: re.Match) -> str:
            name = m.group(1)
            for ext in EXTENSIONS[ModelKind.EMBEDDING]:
                name = name.removesuffix(ext)
            if name in files:
                found[name] = files[name]
            elif name not in missing:
                missing.append(name)
            return name
        return _COMFY.sub(take, text)

    prompt, negative = comfy(prompt), comfy(negative)
    for name, path in files.items():
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", f"{prompt}\n{negative}"):
            found[name] = path
    for name in named or ():
        if name not in files and name not in missing:
            missing.append(name)
    return Wanted(tuple(sorted(found.items())), prompt, negative, tuple(missing))
