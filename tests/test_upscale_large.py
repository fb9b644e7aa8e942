"""Beyond 4× and beyond memory: rasters on disk, repeated Real-ESRGAN passes, tiled diffusion refinement,
the detail pass — on the real small upscaler and the tiny diffusion pipeline the tests build from configs."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from bench.kit.measure import seam_ratio
from daemon import config as config_mod
from stages import raster, refine
from stages.automask import AutoMaskStage
from stages.diffusion import engine as engine_mod
from stages.models import ModelKind, Models, ModelSetting
from stages.upscale import UpscaleStage
from tests.conftest import DATA, REPO, manifest_of, run_one, write_config

CACHE = REPO / "var" / "models"


# --------------------------------------------------------------------------- rasters and the PNG writer


def _png(mode: str, array: np.ndarray, band: int, icc: bytes | None = None) -> Image.Image:
    buf = io.BytesIO()
    h, w = array.shape[:2]
    rows = array if array.ndim == 3 else array[:, :, None]
    raster.write_png(buf, w, h, mode, (rows[y:y + band] for y in range(0, h, band)), icc=icc)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("mode, channels, dtype", [("RGB", 3, np.uint8), ("RGBA", 4, np.uint8), ("L", 1, np.uint8),
                                                   ("LA", 2, np.uint8), ("I;16", 1, np.uint16)])
def test_png_written_in_bands_reads_back_exactly(mode, channels, dtype):
    rng = np.random.default_rng(3)
    a = rng.integers(0, np.iinfo(dtype).max, (37, 29, channels), dtype=dtype)
    im = _png(mode, a, band=8, icc=b"profile bytes")
    assert im.size == (29, 37) and im.info["icc_profile"] == b"profile bytes"
    assert np.array_equal(np.asarray(im).reshape(a.shape), a)


def test_png_writer_refuses_rows_that_do_not_add_up():
    with pytest.raises(ValueError, match="given 10"):
        raster.write_png(io.BytesIO(), 4, 12, "RGB", iter([np.zeros((10, 4, 3), np.uint8)]))


def test_banded_lanczos_is_pillows_lanczos(tmp_path):
    a = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))
    src = raster.from_array(tmp_path / "a.raw", a)
    for size in ((1100, 700), (300, 200), (512, 2048)):
        whole = np.stack([np.asarray(Image.fromarray(a[:, :, c].astype(np.float32), "F").resize(
            size, Image.Resampling.LANCZOS)) for c in range(3)], axis=-1)
        whole = np.clip(np.rint(whole), 0, 255)
        out = raster.resize(src, tmp_path / "b.raw", size, band=97)
        assert (out.width, out.height) == size
        assert np.abs(out.rows(0, out.height).astype(int) - whole).max() <= 1  # float rounding of the band's box


def test_an_unfinished_raster_is_not_taken_as_done(tmp_path):
    r = raster.Raster.create(tmp_path / "x.raw", 10, 4, 3)
    r.write(0, np.ones((5, 4, 3), np.uint8))
    assert raster.Raster.open(tmp_path / "x.raw") is None
    r.finish()
    assert raster.Raster.open(tmp_path / "x.raw").shape == (10, 4, 3)


# --------------------------------------------------------------------------- the grid


@pytest.mark.parametrize("length, tile, overlap", [(100, 128, 32), (448, 128, 32), (1000, 512, 64), (8192, 512, 64),
                                                   (961, 512, 128)])
def test_tiles_cover_the_axis_and_their_weights_sum_to_one(length, tile, overlap):
    spans = refine.grid(length, tile, overlap)
    assert spans[0].start == 0 and spans[-1].end == length
    assert all(s.end - s.start == min(tile, length) for s in spans)
    assert all(a.end - b.start >= overlap for a, b in zip(spans, spans[1:], strict=False))
    total = np.zeros(length)
    for i, s in enumerate(spans):
        total[s.start:s.end] += refine.weights(spans, i, overlap)
    assert np.allclose(total, 1.0, atol=1e-6)


# --------------------------------------------------------------------------- refinement on the tiny pipeline


@pytest.fixture(scope="module")
def engine(tiny_sd):
    models = Models(None, CACHE)
    setting = ModelSetting("[inpaint].model", str(tiny_sd), ModelKind.DIFFUSION)
    yield engine_mod.get(models.resolve(setting), None, torch.device("cpu"), torch.float32, CACHE)
    engine_mod.unload()


HOW = refine.Paint("a photo", "", 4, 6.0, 0.3, 11)


def _source(tmp_path: Path, size: tuple[int, int]) -> raster.Raster:
    a = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB").resize(size, Image.Resampling.LANCZOS))
    return raster.from_array(tmp_path / f"src-{size[0]}x{size[1]}.raw", a)


def _refine(engine, src, folder: Path, seam_fix=True):
    store = refine.TileStore(folder / "tiles")
    return refine.refine(engine, src, folder / "out.raw", store, HOW, 128, 32, seam_fix, 32, 0.3, 16)


@pytest.mark.slow
def test_refined_tiles_blend_without_seams_where_cut_tiles_show_them(engine, tmp_path):
    src = _source(tmp_path, (448, 320))
    out, report = _refine(engine, src, tmp_path)
    assert report.grid == (5, 3) and report.tiles == 15 and report.seams == 4 * 3 + 2 * 5
    img = out.rows(0, out.height)
    assert img.shape == (320, 448, 3)
    cols, rows = refine.grid(448, 128, 32), refine.grid(320, 128, 32)
    xs, ys = refine.joins(cols), refine.joins(rows)
    assert max(seam_ratio(img, xs, ys)) <= 1.1
    # the same painted tiles cut edge to edge at the joins: the measure does see a seam
    store = refine.TileStore(tmp_path / "tiles")
    cut = np.zeros((320, 448, 3), np.float32)
    for ri, r in enumerate(rows):
        for ci, c in enumerate(cols):
            tile = store.get(f"tile-{ri}-{ci}", (r.end - r.start, c.end - c.start, 3)).astype(np.float32)
            w = refine.weights(rows, ri, 0)[:, None] * refine.weights(cols, ci, 0)[None, :]
            cut[r.start:r.end, c.start:c.end] += tile * w[:, :, None]
    assert min(seam_ratio(np.clip(np.rint(cut), 0, 255).astype(np.uint8), xs, ys)) > 1.5


@pytest.mark.slow
def test_refinement_is_deterministic_and_keeps_finished_tiles(engine, tmp_path):
    src = _source(tmp_path, (320, 192))
    first, _ = _refine(engine, src, tmp_path / "a")
    again, _ = _refine(engine, src, tmp_path / "b")
    assert np.array_equal(first.rows(0, 192), again.rows(0, 192))
    # an interrupted run: some tiles and segments are on disk, the rest is painted
    tiles = sorted((tmp_path / "a" / "tiles").glob("*.png"))
    for t in tiles[::2]:
        t.unlink()
    resumed, report = _refine(engine, src, tmp_path / "a")
    assert report.kept == len(tiles) - len(tiles[::2])
    assert np.array_equal(resumed.rows(0, 192), first.rows(0, 192))
    # a tile cut short by a crash, or of another size, is painted again, never trusted
    tiles[1].write_bytes(tiles[1].read_bytes()[:200])
    Image.new("RGB", (8, 8)).save(tiles[3])
    again, report = _refine(engine, src, tmp_path / "a")
    assert report.kept == len(tiles) - 2
    assert np.array_equal(again.rows(0, 192), first.rows(0, 192))


@pytest.mark.slow
def test_refinement_memory_does_not_grow_with_the_picture(engine, tmp_path):
    """The blend holds one band of tile rows: four times the rows cost no more memory."""
    peaks = []
    for height in (256, 1024):
        src = _source(tmp_path, (128, height))
        tracemalloc.start()
        _refine(engine, src, tmp_path / str(height), seam_fix=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    whole = 1024 * 128 * 4 * 4  # the taller picture as float colour sums and weights
    assert peaks[1] < whole and peaks[1] < 1.3 * peaks[0], peaks


# --------------------------------------------------------------------------- the stage


def _stage_config(tmp_path: Path, tiny_sd: Path | None, upscale: str, refine_on: bool = False,
                  detail: bool = False, others: str = ""):
    extra = f"""{others}
[inpaint]
enabled = {str(not others).lower()}
model = "{tiny_sd or ''}"
steps = 4
[upscale]
model = "animevideov3"
backend = "torch"
tile = 32
tile_overlap = 8
{upscale}
[upscale.refine]
enabled = {str(refine_on).lower()}
tile = 128
overlap = 32
steps = 4
seam_width = 32
seam_padding = 16
[upscale.detail]
enabled = {str(detail).lower()}
resolution = 128
"""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return config_mod.load(write_config(tmp_path, extra))


def _run(cfg, image: Image.Image, name: str = "astro.png", automask: bool = False):
    src = cfg.paths.inbox / name
    image.save(src)
    stages = ([AutoMaskStage()] if automask else []) + [UpscaleStage()]
    out, manifest = run_one(cfg, src, stages)
    return out.archive, manifest.stages[-1]


def astro(size: int) -> Image.Image:
    return Image.open(DATA / "astronaut.png").convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


@pytest.mark.parametrize("upscale, size, expected", [
    ("scale = 8", (40, 30), (320, 240)),
    ("scale = 16", (24, 20), (384, 320)),
    ("scale = 5", (40, 30), (200, 150)),
    ("long_edge = 1000", (100, 60), (1000, 600)),
])
def test_beyond_the_native_scale_the_passes_repeat_and_land_on_the_exact_size(tmp_path, upscale, size, expected):
    cfg = _stage_config(tmp_path, None, upscale)
    archive, entry = _run(cfg, astro(200).resize(size))
    assert entry.status == "done", entry.reason
    with Image.open(archive / "40-upscale.png") as im:
        assert im.size == expected and im.mode == "RGB"
    large = entry.details.large["40-upscale.png"]
    assert large["passes"] == (1 if expected[0] / size[0] <= 4 else 2)
    assert not (archive / ".work").exists()  # the work files go once the picture is written


def test_the_large_path_keeps_alpha_grey_and_the_colour_profile(tmp_path):
    from tests.helpers.icc import rgb_profile

    p3 = rgb_profile()
    cfg = _stage_config(tmp_path, None, "scale = 8")
    rgba = np.array(astro(32).convert("RGBA"))
    rgba[:, :16, 3] = 0
    im = Image.fromarray(rgba)
    src = cfg.paths.inbox / "cut.png"
    im.save(src, icc_profile=p3)
    out, manifest = run_one(cfg, src, [UpscaleStage()])
    with Image.open(out.archive / "40-upscale.png") as up:
        assert up.mode == "RGBA" and up.size == (256, 256) and up.info["icc_profile"] == p3
        alpha = np.asarray(up.getchannel("A"))
        assert alpha[:, :120].max() < 16 and alpha[:, 136:].min() > 240
    archive, _ = _run(_stage_config(tmp_path / "g", None, "scale = 8"), astro(32).convert("L"), "grey.png")
    with Image.open(archive / "40-upscale.png") as up:
        assert up.mode == "L" and up.size == (256, 256)


def test_refine_without_a_generative_model_skips_with_the_reason(tmp_path):
    cfg = _stage_config(tmp_path, None, "scale = 8", refine_on=True)
    _, entry = _run(cfg, astro(32))
    assert entry.status == "skipped"
    assert "[upscale.refine]" in entry.reason and "[inpaint].model" in entry.reason


@pytest.mark.slow  # whole upscale stages with tiled refinement: among the longest tests
def test_refine_and_detail_in_the_stage(tmp_path, tiny_sd):
    """8× with refinement and the detail pass: exact size, every tile and region recorded, pixels outside the
    detail masks exactly those of the refined picture, and a rerun gives the same bytes."""
    cfg = _stage_config(tmp_path / "a", tiny_sd, "scale = 8", refine_on=True, detail=True)
    archive, entry = _run(cfg, astro(48), automask=True)
    assert entry.status == "done", entry.reason
    large = entry.details.large["40-upscale.png"]
    assert large["refine"]["grid"] == [4, 4] and large["refine"]["tiles"] == 16 and large["refine"]["kept"] == 0
    kinds = sorted(d["kind"] for d in large["detail"])
    assert kinds and set(kinds) <= {"face", "hand"} and all("seed" in d for d in large["detail"])
    detailed = np.asarray(Image.open(archive / "40-upscale.png"))
    assert detailed.shape == (384, 384, 3)
    # without the detail pass: the same refined picture; they differ only where a scaled mask is not 0
    plain_cfg = _stage_config(tmp_path / "b", tiny_sd, "scale = 8", refine_on=True)
    plain_archive, _ = _run(plain_cfg, astro(48), automask=True)
    plain = np.asarray(Image.open(plain_archive / "40-upscale.png"))
    inside = np.zeros(plain.shape[:2], bool)
    for d in large["detail"]:
        with Image.open(archive / d["mask"]) as m:
            inside |= np.asarray(m.resize((384, 384), Image.Resampling.BILINEAR)) > 0
    changed = np.any(detailed != plain, axis=2)
    assert changed.any() and not (changed & ~_grown(inside, 2)).any()
    again, _ = _run(_stage_config(tmp_path / "c", tiny_sd, "scale = 8", refine_on=True, detail=True), astro(48),
                    automask=True)
    assert _digest(again / "40-upscale.png") == _digest(archive / "40-upscale.png")


def _grown(mask: np.ndarray, px: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * px + 1))) > 0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Measured(UpscaleStage):
    """The upscale stage, with the peak of Python and numpy memory its run allocates."""

    peak = 0

    def run(self, ctx, params):
        tracemalloc.start()
        try:
            return super().run(ctx, params)
        finally:
            Measured.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()


@pytest.mark.slow
def test_large_upscale_memory_does_not_grow_with_the_picture(tmp_path):
    """Real-ESRGAN passes, Lanczos and the PNG go band by band: four times the rows cost no more memory,
    and less than the picture itself."""
    peaks = []
    for n, height in enumerate((64, 256)):
        cfg = _stage_config(tmp_path / str(n), None, "scale = 16")
        src = cfg.paths.inbox / "tall.png"
        astro(256).resize((64, height)).save(src)
        run_one(cfg, src, [Measured()])
        peaks.append(Measured.peak)
    picture = 1024 * 4096 * 3  # the taller result as bytes
    assert peaks[1] < picture and peaks[1] < 1.3 * peaks[0], peaks


# --------------------------------------------------------------------------- kill -9 in the middle of the tiles


ONLY_UPSCALE = """
[automask]
enabled = false
[outpaint]
enabled = false
[deliver]
enabled = false
[contact]
enabled = false
"""


def _process(cfg_path: Path, src: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(cfg_path), "--log-format", "json",
                             "process", "--no-progress", str(src)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.slow  # whole upscale stages with tiled refinement: among the longest tests
def test_a_killed_refinement_resumes_from_the_tiles_it_had_finished(tmp_path, tiny_sd):
    runs = {}
    for label in ("killed", "clean"):
        root = tmp_path / label
        root.mkdir()
        cfg = _stage_config(root, tiny_sd, "scale = 8", refine_on=True, others=ONLY_UPSCALE)
        src = root / "astro.png"
        astro(48).save(src)
        if label == "killed":
            p = _process(cfg.source, src)
            deadline = time.monotonic() + 120
            tiles: list[Path] = []
            while time.monotonic() < deadline and p.poll() is None:
                tiles = list(cfg.paths.archive.glob("*/.work/*/tiles/tile-*.png"))
                if len(tiles) >= 3:
                    break
                time.sleep(0.05)
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            before = len(list(cfg.paths.archive.glob("*/.work/*/tiles/tile-*.png")))
            assert 3 <= before < 16
        p = _process(cfg.source, src)
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
        archive = next(cfg.paths.archive.iterdir())
        runs[label] = (archive, manifest_of(archive).stage("upscale"))
    archive, entry = runs["killed"]
    refined = entry.details.large["40-upscale.png"]["refine"]
    assert refined["kept"] >= before  # what was finished was not painted again
    resumed, clean = archive / "40-upscale.png", runs["clean"][0] / "40-upscale.png"
    if _digest(resumed) != _digest(clean):  # say where they differ before failing
        a, b = (np.asarray(Image.open(f)).astype(np.int16) for f in (resumed, clean))
        changed = np.argwhere(np.abs(a - b).max(axis=2) > 0)
        pytest.fail(f"the resumed picture differs from the uninterrupted one: {len(changed)} pixels, max "
                    f"{np.abs(a - b).max()}, rows {changed[:, 0].min()}–{changed[:, 0].max()}, columns "
                    f"{changed[:, 1].min()}–{changed[:, 1].max()} (kept {refined['kept']} of {refined['tiles']} "
                    f"tiles, {before} on disk at the kill)")


def test_the_detail_pass_finds_the_faces_in_a_variant_through_its_frame(tmp_path):
    """A variant holds the master inside a wider canvas: its detail regions sit where the master's faces are
    in it, and nothing outside them moves."""
    from bench.kit.tiny_sd import build_tiny_sd
    from stages.outpaint import OutpaintStage

    # outpaint works at the model's own 512 px: the VAE that divides by 8 keeps that quick
    model = build_tiny_sd(tmp_path / "tiny-sd-eightfold", eightfold=True)
    variant = '[outpaint]\nvariants = ["16:9"]\nmax_step = 1.0\nsteps = 2\nseam_pass = false\n'
    runs = {}
    for on in (True, False):
        cfg = _stage_config(tmp_path / str(on), model, "scale = 4", detail=on, others=variant)
        src = cfg.paths.inbox / "astro.png"
        astro(64).save(src)
        out, manifest = run_one(cfg, src, [AutoMaskStage(), OutpaintStage(), UpscaleStage()])
        runs[on] = (out.archive, manifest)
    archive, manifest = runs[True]
    entry = manifest.stages[-1]
    detail = entry.details.large["40-upscale-16x9.png"]["detail"]
    outpaint = manifest.stage("outpaint")
    (v,) = outpaint.products.variants
    x0, y0, x1, y1 = v.frame
    with Image.open(archive / "40-upscale-16x9.png") as im:
        detailed = np.asarray(im)
    plain = np.asarray(Image.open(runs[False][0] / "40-upscale-16x9.png"))
    h, w = detailed.shape[:2]
    with Image.open(archive / "10-mask-face.png") as m:  # the master's mask, placed in the variant, upscaled
        canvas = Image.new("L", (round(w / 4), round(h / 4)))
        canvas.paste(m.resize((x1 - x0, y1 - y0)), (x0, y0))
        inside = np.asarray(canvas.resize((w, h), Image.Resampling.BILINEAR)) > 0
    changed = np.any(detailed != plain, axis=2)
    face = next(d for d in detail if d["kind"] == "face")
    assert face["box"][0] >= x0 * 4 - 1 and face["box"][2] <= x1 * 4 + 1
    assert changed.any() and not (changed & ~_grown(inside, 3)).any()
