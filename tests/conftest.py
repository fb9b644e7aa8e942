from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.kit.pipeline import CPU_PIPELINE, DATA, REPO, jpeg_bytes, manifest_of, png_bytes, run_one, write_config  # noqa: F401 (the tests' names)
from daemon import config as config_mod
from daemon.journal import Journal


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


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny SD 1.x inpainting pipeline (9-channel UNet), built from configs, saved as a diffusers folder."""
    from bench.kit.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-inpaint")


@pytest.fixture(scope="session")
def tiny_sd2(tmp_path_factory) -> Path:
    """A tiny pipeline of SD 2.x's shape (linear attention projections, a GELU text encoder)."""
    from bench.kit.tiny_sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd2-inpaint", sd2=True)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    """A tiny SDXL inpainting pipeline (two text encoders, size conditioning), saved as a diffusers folder."""
    from bench.kit.tiny_sd import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl-inpaint")


@pytest.fixture(scope="session")
def tiny_flux_fill(tmp_path_factory) -> Path:
    """A tiny Flux Fill pipeline (flow-matching transformer, CLIP + T5), saved as a diffusers folder."""
    from bench.kit.tiny_sd import build_tiny_flux_fill

    return build_tiny_flux_fill(tmp_path_factory.mktemp("models") / "tiny-flux-fill")


@pytest.fixture(scope="session")
def tiny_sd_file(tiny_sd, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny pipeline as one A1111-layout ``.safetensors`` file, and a folder holding its configs only."""
    from bench.kit.tiny_sd import write_single_file

    return write_single_file(tiny_sd, tmp_path_factory.mktemp("single") / "tiny-sd-inpaint.safetensors")


@pytest.fixture
def astronaut(tmp_path: Path) -> Path:
    p = tmp_path / "src" / "astronaut.png"
    p.parent.mkdir(exist_ok=True)
    shutil.copy(DATA / "astronaut.png", p)
    return p
