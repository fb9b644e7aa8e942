"""What tests and benchmarks both need to run the real pipeline on small inputs: a config in a scratch folder,
small pictures, one job through the real runner, the typed manifest it wrote."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from daemon.archive import ArchiveFolder, Manifest
from daemon.journal import Journal
from daemon.runner import Runner

REPO = Path(__file__).resolve().parent.parent.parent
DATA = REPO / "tests" / "data"
DEV = REPO.parent / "shared" / "data" / "faces-hands-dev"  # licensed photos beside the project: read, never copied


def photos(own: list[Path], size: int) -> list[tuple[str, np.ndarray]]:
    """``own`` and the development photos (when they are there), RGB, resized to ``size`` on the long side."""
    paths = list(own)
    if DEV.is_dir():
        paths += sorted(p for p in DEV.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            f = size / max(im.size)
            out.append((p.stem, np.asarray(im.resize((max(8, round(im.width * f)), max(8, round(im.height * f))),
                                                     Image.Resampling.LANCZOS))))
    return out


# A pipeline every stage runs on the CPU in seconds: one variant in one step, a 2× upscale by the small model.
CPU_PIPELINE = """
[outpaint]
variants = ["16:9"]
max_step = 1.0
[upscale]
model = "animevideov3"
scale = 2
backend = "torch"
tile = 128
"""


def write_config(root: Path, extra: str = "", stability_delay: float = 0.3, models: Path | None = None) -> Path:
    """A pipeline.toml in ``root`` with its folders, ``extra`` appended; ``[paths].models`` is ``models`` (the
    repository's model cache unless given)."""
    path = root / "pipeline.toml"
    path.write_text(
        f"""
[paths]
inbox = "inbox"
archive = "archive"
failed = "failed"
state = "state"
models = "{models or REPO / 'var' / 'models'}"

[daemon]
stability_delay = {stability_delay}
rescan_interval = 1.0
stop_timeout = 10.0

[log]
format = "json"
level = "debug"
{extra}
""", encoding="utf-8")
    for sub in ("inbox", "archive", "failed", "state"):
        (root / sub).mkdir(exist_ok=True)
    return path


def png_bytes(size=(64, 48), color=(200, 40, 40), seed: int = 0) -> bytes:
    im = Image.new("RGB", size, color)
    im.putpixel((seed % size[0], (seed // size[0]) % size[1]), (seed % 256, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(size=(256, 256)) -> bytes:
    buf = io.BytesIO()
    Image.open(DATA / "astronaut.png").convert("RGB").resize(size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def run_one(cfg, src: Path, stages: list, expect: str = "done"):
    """Queues ``src``, runs it once through ``stages`` with the real runner; returns (outcome, manifest)."""
    journal = Journal(cfg.paths.state / "j.sqlite3")
    journal.enqueue(src, hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_size, src.stat().st_mtime)
    try:
        out = Runner(journal, lambda: cfg, stages).run_job(journal.claim())
    finally:
        for stage in stages:
            stage.close()
        journal.close()
    assert out.status == expect, out.error
    manifest = ArchiveFolder(out.archive).read_manifest() if out.archive else None
    return out, manifest


def manifest_of(folder: Path) -> Manifest | None:
    """The typed manifest of an archive folder (daemon.archive.Manifest)."""
    return ArchiveFolder(folder).read_manifest()
