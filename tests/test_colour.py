"""The colour fix after upscaling, and CIEDE2000: flat colours kept, detail kept, bands the same as a whole."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stages import colour, raster
from stages.upscale import UpscaleParams, UpscaleStage
from tests.conftest import DATA
from tests.test_upscale import CACHE, _Ctx

# Sharma, Wu and Dalal (2005), "The CIEDE2000 color-difference formula", table 1: pairs 1, 2, 3, 7, 17, 25,
# 34 and the two hue-wrap pairs 13 and 10.
SHARMA = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425), ((50, 3.1571, -77.2803), (50, 0, -82.7485), 2.8615),
          ((50, 2.8361, -74.02), (50, 0, -82.7485), 3.4412), ((50, 0, 0), (50, -1, 2), 2.3669),
          ((50, 2.5, 0), (73, 25, -18), 27.1492), ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
          ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
          ((50, 2.49, -0.001), (50, -2.49, 0.0009), 7.1792), ((50, -0.001, 2.49), (50, 0.0009, -2.49), 4.8045)]


def test_ciede2000_gives_the_published_values():
    lab1 = np.array([p[0] for p in SHARMA], float)
    lab2 = np.array([p[1] for p in SHARMA], float)
    assert np.allclose(colour.delta_e(lab1, lab2), [p[2] for p in SHARMA], atol=1e-4)
    assert np.allclose(colour.delta_e(lab2, lab1), [p[2] for p in SHARMA], atol=1e-4)  # symmetric


def patches() -> np.ndarray:
    """The brand-colour case: two flat patches side by side, 96²."""
    a = np.zeros((96, 96, 3), np.uint8)
    a[:, :48] = (200, 100, 50)
    a[:, 48:] = (40, 160, 220)
    return a


def upscaled(model: str, picture: np.ndarray, fix: str, **kw) -> np.ndarray:
    stage = UpscaleStage()
    params = UpscaleParams(model=model, device="cpu", colour_fix=fix, **kw)
    stage.setup(_Ctx(CACHE), params)
    return np.asarray(stage.upscale_image(Image.fromarray(picture), params, 256).image)


@pytest.mark.parametrize("model", ["animevideov3", "x4plus-anime", "x4plus"])
def test_flat_colours_come_back_within_one_level_with_the_fix_and_shifted_without(model):
    src = patches()
    inner = (slice(40, 344), slice(40, 152)), (slice(40, 344), slice(232, 344))  # 40 px inside each patch
    raw, fixed = upscaled(model, src, "none"), upscaled(model, src, "wavelet")
    for (rows, cols), value in zip(inner, ((200, 100, 50), (40, 160, 220)), strict=True):
        assert np.abs(fixed[rows, cols].astype(int) - value).max() <= 1
        assert np.abs(raw[rows, cols].astype(int) - value).max() >= 3  # the shift the fix is for


def gradient() -> np.ndarray:
    x = np.linspace(0, 1, 128, dtype=np.float32)
    r = np.outer(np.ones(96), x) * 200 + 30
    g = np.outer(np.linspace(1, 0, 96), np.ones(128)) * 180 + 40
    b = (r + g) / 3
    return np.clip(np.rint(np.stack([r, g, b], axis=2)), 0, 255).astype(np.uint8)


def laplacian_energy(image: np.ndarray) -> float:
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


@pytest.mark.parametrize("name", ["gradient", "photo"])
def test_low_frequencies_follow_the_source_and_detail_stays_the_models(name):
    src = gradient() if name == "gradient" else \
        np.asarray(Image.open(DATA / "astronaut.png").convert("RGB").crop((150, 60, 278, 156)))
    raw, fixed = upscaled("x4plus", src, "none"), upscaled("x4plus", src, "wavelet")
    before, after = colour.drift(raw, src), colour.drift(fixed, src)
    assert after.mean <= 1.0 and after.mean < before.mean
    assert abs(laplacian_energy(fixed) / laplacian_energy(raw) - 1) <= 0.05


def test_adain_matches_the_whole_pictures_colour_and_leaves_each_patchs_shift_where_wavelet_does_not():
    rng = np.random.default_rng(1)
    src = np.clip(patches() + rng.normal(0, 3, (96, 96, 3)), 0, 255).astype(np.uint8)  # textured: not flat
    out = np.asarray(Image.fromarray(src).resize((384, 384), Image.Resampling.BICUBIC)).astype(int)
    out[:, :96] += 6  # half of one patch up: a local shift no per-channel scale and offset can undo
    out = np.clip(out, 0, 255).astype(np.uint8)
    fixed = {}
    for method in ("adain", "wavelet"):
        fixed[method] = out.copy()
        colour.fix(method, src, colour.InMemory(fixed[method]), colour.InMemory(fixed[method]), 255.0)
    left = (slice(40, 344), slice(0, 60))  # in the shifted half, more than the low-pass reaches from its edge

    def off(image):
        return np.abs(image[left].reshape(-1, 3).mean(0) - src[10:86, 10:38].reshape(-1, 3).mean(0)).max()
    assert np.abs(fixed["adain"].reshape(-1, 3).mean(0) - src.reshape(-1, 3).mean(0)).max() < 1.0
    assert off(fixed["adain"]) > 3 and off(fixed["wavelet"]) < 1


def strip(width: int = 8192, height: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """A source and a 'model output' at twice its size, shifted in colour and with detail of its own."""
    rng = np.random.default_rng(3)
    src = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB").resize((width // 2, height // 2)))
    out = np.asarray(Image.fromarray(src).resize((width, height), Image.Resampling.BICUBIC)).astype(np.float32)
    out += rng.normal(0, 4, out.shape) + (4, -3, 6)
    return src, np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_bands_and_tiles_give_the_pixels_of_the_whole_picture_fixed_at_once(tmp_path, monkeypatch):
    src, out = strip()
    banded = raster.from_array(tmp_path / "out.raw", out)
    dst = raster.Raster.create(tmp_path / "fixed.raw", out.shape[0], out.shape[1], 3)
    drift = colour.fix("wavelet", src, banded, dst, 255.0, measure=True)
    by_bands = dst.finish().rows(0, out.shape[0])

    monkeypatch.setattr(colour, "TILE", out.shape[1])  # one tile, one band: the whole picture at once
    whole = out.copy()
    whole_drift = colour.fix("wavelet", src, colour.InMemory(whole), colour.InMemory(whole), 255.0,
                             band=out.shape[0], measure=True)
    assert np.abs(by_bands.astype(int) - whole).max() <= 1
    assert drift.mean == pytest.approx(whole_drift.mean, rel=1e-3)
    assert not np.array_equal(by_bands, out)  # it did fix something


def test_sixteen_bit_and_alpha_pictures_keep_their_kind():
    grey16 = Image.fromarray(np.asarray(Image.open(DATA / "astronaut.png").convert("L").crop((200, 80, 240, 110)),
                                         dtype=np.uint16) * 257)
    stage = UpscaleStage()
    params = UpscaleParams(model="animevideov3", scale=2, device="cpu", tile=32)
    stage.setup(_Ctx(CACHE), params)
    made = stage.upscale_image(grey16, params, 32)
    assert made.image.mode == "I;16" and np.asarray(made.image).max() > 255
    assert made.drift is not None and made.drift.mean < 1.0


def test_a_strip_8192_wide_through_files_gets_the_pixels_of_the_in_memory_path(tmp_path, monkeypatch):
    """The stage's two ways: in memory, and band by band through files (forced here by lowering the size
    past which it goes through files); the colour fix included in both."""
    from daemon import config as config_mod
    from stages import upscale as upscale_mod
    from tests.conftest import run_one, write_config

    strip_src = Image.open(DATA / "astronaut.png").convert("RGB").resize((2048, 24))
    outs = {}
    for way, limit in (("memory", upscale_mod.IN_MEMORY), ("files", 1)):
        monkeypatch.setattr(upscale_mod, "IN_MEMORY", limit)
        root = tmp_path / way
        root.mkdir()
        cfg = config_mod.load(write_config(root, '[upscale]\nmodel = "animevideov3"\nscale = 4\nbackend = "torch"\n'
                                                 'tile = 128\n'))
        src = cfg.paths.inbox / "strip.png"
        strip_src.save(src)
        out, manifest = run_one(cfg, src, [UpscaleStage()])
        outs[way] = np.asarray(Image.open(out.archive / "40-upscale.png").convert("RGB")).astype(int)
        size = manifest.stage("upscale").details.sizes["40-upscale.png"]
        assert size.to == [8192, 96] and size.colour_fix == "wavelet" and size.drift["mean"] < 1.0
    assert np.abs(outs["files"] - outs["memory"]).max() <= 1
