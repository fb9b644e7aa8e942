from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from daemon import config as config_mod
from daemon.archive import ArchiveFolder
from daemon.journal import Journal

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


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


def write_config(root: Path, extra: str = "", stability_delay: float = 0.3) -> Path:
    path = root / "pipeline.toml"
    path.write_text(
        f"""
[paths]
inbox = "inbox"
archive = "archive"
failed = "failed"
state = "state"
models = "{REPO / 'var' / 'models'}"

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


@pytest.fixture
def workdir(tmp_path: Path):
    path = write_config(tmp_path)
    return tmp_path, config_mod.load(path)


@pytest.fixture
def journal(workdir):
    root, cfg = workdir
    j = Journal(cfg.paths.state / "journal.sqlite3")
    yield j
    j.close()


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


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny SD 1.x inpainting pipeline (9-channel UNet), built from configs, saved as a diffusers folder."""
    from tests.helpers.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-inpaint")


@pytest.fixture(scope="session")
def tiny_sd2(tmp_path_factory) -> Path:
    """A tiny pipeline of SD 2.x's shape (linear attention projections, a GELU text encoder)."""
    from tests.helpers.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd2-inpaint", sd2=True)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    """A tiny SDXL inpainting pipeline (two text encoders, size conditioning), saved as a diffusers folder."""
    from tests.helpers.tiny_sd import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl-inpaint")


@pytest.fixture(scope="session")
def tiny_flux_fill(tmp_path_factory) -> Path:
    """A tiny Flux Fill pipeline (flow-matching transformer, CLIP + T5), saved as a diffusers folder."""
    from tests.helpers.tiny_sd import build_tiny_flux_fill

    return build_tiny_flux_fill(tmp_path_factory.mktemp("models") / "tiny-flux-fill")


@pytest.fixture(scope="session")
def tiny_sd_file(tiny_sd, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny pipeline as one A1111-layout ``.safetensors`` file, and a folder holding its configs only."""
    from tests.helpers.tiny_sd import write_single_file

    return write_single_file(tiny_sd, tmp_path_factory.mktemp("single") / "tiny-sd-inpaint.safetensors")


@pytest.fixture
def astronaut(tmp_path: Path) -> Path:
    p = tmp_path / "src" / "astronaut.png"
    p.parent.mkdir(exist_ok=True)
    shutil.copy(DATA / "astronaut.png", p)
    return p


def run_one(cfg, src: Path, stages: list, expect: str = "done"):
    """Queues ``src``, runs it once through ``stages`` with the real runner; returns (outcome, manifest)."""
    from daemon.runner import Runner

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


def manifest_of(folder: Path):
    """The typed manifest of an archive folder (daemon.archive.Manifest)."""
    return ArchiveFolder(folder).read_manifest()
