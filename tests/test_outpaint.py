"""Outpainting: the planner's promises, each infill on a real photo, the invariant, one variant end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from daemon import config as config_mod
from stages.infill import infill, seam_score
from stages.outpaint import OutpaintStage, band_mask
from stages.outpaint_plan import canvas_size, plan
from tests.conftest import DATA, run_one, write_config

SPECS = ["16:9", "9:16", "4:5", "5:4", "1:1", "21:9", "3:2", "2:3", "1920x1080", "640x480", "16:9@left",
         "9:16@bottom", "7:3@right"]
SIZES = [(512, 512), (512, 768), (1024, 576), (333, 517), (64, 1000), (1000, 64), (8, 8)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("spec", SPECS)
def test_plan_exact_aspect_bounded_steps_never_a_crop(size, spec):
    p = plan(size, spec, max_step=0.3)
    w, h = p.size
    a, b = p.target.ratio
    if p.target.exact and p.target.exact[0] >= size[0] and p.target.exact[1] >= size[1]:
        assert (w, h) == p.target.exact
    else:
        assert w * b == h * a, "exact aspect"
        assert w % 8 == 0 and h % 8 == 0
    assert w >= size[0] and h >= size[1], "never a crop"
    prev = size
    for step in p.steps:
        grow_w, grow_h = step.size[0] - prev[0], step.size[1] - prev[1]
        assert 0 <= grow_w <= max(1, math.floor(prev[0] * 0.3)) and 0 <= grow_h <= max(1, math.floor(prev[1] * 0.3))
        assert 0 <= step.offset[0] <= grow_w and 0 <= step.offset[1] <= grow_h
        prev = step.size
    assert prev == (w, h) and 0 <= p.origin[0] <= w - size[0] and 0 <= p.origin[1] <= h - size[1]


def test_anchors_pin_the_original():
    assert plan((512, 512), "16:9@left").origin[0] == 0
    p = plan((512, 512), "16:9@right")
    assert p.origin[0] + 512 == p.size[0]
    p = plan((512, 512), "16:9")
    assert abs(p.origin[0] - (p.size[0] - 512 - p.origin[0])) <= len(p.steps)  # centred, to a px per step


def test_canvas_size_is_the_smallest_that_fits():
    assert canvas_size((512, 512), (16, 9)) == (1024, 576)
    assert canvas_size((512, 512), (4, 5)) == (512, 640)
    assert canvas_size((1920, 1080), (16, 9)) == (1920, 1080)


def _steps(image: np.ndarray, spec: str, method: str):
    p = plan(image.shape[1::-1], spec)
    canvas = image
    for st in p.steps:
        big = np.zeros((st.size[1], st.size[0], 3), np.uint8)
        ox, oy = st.offset
        big[oy:oy + canvas.shape[0], ox:ox + canvas.shape[1]] = canvas
        known = np.zeros(big.shape[:2], bool)
        known[oy:oy + canvas.shape[0], ox:ox + canvas.shape[1]] = True
        canvas = infill(method, big, known, 0)
    known = np.zeros(canvas.shape[:2], bool)
    known[p.origin[1]:p.origin[1] + image.shape[0], p.origin[0]:p.origin[0] + image.shape[1]] = True
    return canvas, known


@pytest.mark.parametrize("method", ["backdrop", "blur", "reflect", "color", "patchmatch"])
def test_each_infill_fills_the_strip_and_keeps_the_photo(method):
    if method == "patchmatch":
        pytest.importorskip("patchmatch")
    photo = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB").resize((256, 256)))
    canvas, known = _steps(photo, "16:9", method)
    assert canvas.shape == (288, 512, 3)
    assert np.array_equal(canvas[known].reshape(256, 256, 3), photo)
    strip = canvas[~known]
    assert strip.std() > 1 and strip.mean() > 10  # filled, not left black
    hard = canvas.copy()
    hard[~known] = 0  # the same canvas with the strip left black: a seam anyone sees
    assert seam_score(canvas, known) < seam_score(hard, known) / 1.4
    if method not in ("color", "backdrop"):  # these meet the photo at an edge by design; the others continue it
        assert seam_score(canvas, known) < 2.0


def test_seam_metric_tells_a_hard_edge_from_a_smooth_one():
    photo = np.asarray(Image.open(DATA / "camera.png").convert("RGB"))
    hard, known = _steps(photo, "16:9", "color")
    soft, _ = _steps(photo, "16:9", "reflect")
    assert seam_score(hard, known) > 3 * seam_score(soft, known)


def test_band_masks_never_reach_past_the_band():
    m = band_mask((300, 200), (50, 0), (200, 200), "left", 16, outside=True)
    assert m[:, :50].min() == 255 and m[:, 50 + 16:].max() == 0 and m[:, 50] .min() > 200
    s = band_mask((300, 200), (50, 0), (200, 200), "right", 8, outside=False)
    assert s[:, 250 - 8:250 + 8].min() > 0 and s[:, :250 - 8].max() == 0 and s[:, 250 + 8:].max() == 0


def _run(tmp_path, extra: str):
    cfg = config_mod.load(write_config(tmp_path, extra + "\n[upscale]\nenabled = false\n"))
    src = cfg.paths.inbox / "astro.png"
    src.write_bytes((DATA / "astronaut.png").read_bytes())
    out, manifest = run_one(cfg, src, [OutpaintStage()])
    return out.archive, manifest.stages[0]


def _original_untouched(archive, entry, label: str, band: int) -> None:
    variant = np.asarray(Image.open(archive / f"30-outpaint-{label}.png").convert("RGB"))
    plan_entry = next(v for v in entry.details.variants if v.label == label)
    ox, oy = plan_entry.origin
    original = np.asarray(Image.open(archive / "00-original.png").convert("RGB"))
    inner = variant[oy + band:oy + 512 - band, ox + band:ox + 512 - band]
    assert np.array_equal(inner, original[band:512 - band, band:512 - band])


def test_without_a_model_variants_are_infill_only_and_the_manifest_says_so(tmp_path):
    archive, entry = _run(tmp_path, '[outpaint]\nvariants = ["16:9", "4:5", "21:9"]\n')
    assert entry.status == "done" and "no generative model configured: the backdrop infill alone" in entry.reason
    assert entry.details.generative is False and entry.details.infill == "backdrop"
    assert Image.open(archive / "30-outpaint-16x9.png").size == (1024, 576)
    assert Image.open(archive / "30-outpaint-4x5.png").size == (512, 640)
    assert (archive / "30-outpaint-16x9-compare.png").exists()
    origins = {v.label: v.origin for v in entry.details.variants}
    assert [(v.label, v.picture.name, list(v.frame), v.infill) for v in entry.products.variants] == [
        (label, f"30-outpaint-{label}.png", [*origins[label], origins[label][0] + 512, origins[label][1] + 512],
         "backdrop") for label in ("16x9", "4x5", "21x9")]
    for v in entry.details.variants:  # one step to the whole canvas: no infill of an infill
        assert len(v.steps) == 1 and v.infill == "backdrop" and v.gate.startswith("not judged")
        assert set(v.drift) >= {"delta_e", "lightness", "seam", "sides"}
    assert [a.split(":")[0] for a in entry.attention] == ["16x9", "4x5", "21x9"]  # each needs a person's look
    _original_untouched(archive, entry, "16x9", 0)


def test_a_portrait_turned_16x9_without_a_model_gets_a_backdrop_with_the_original_untouched(tmp_path):
    cfg = config_mod.load(write_config(tmp_path, '[outpaint]\nvariants = ["16:9"]\n[upscale]\nenabled = false\n'))
    src = cfg.paths.inbox / "portrait.png"
    portrait = Image.open(DATA / "astronaut.png").convert("RGB").crop((96, 0, 416, 512))  # 320×512
    portrait.save(src)
    out, manifest = run_one(cfg, src, [OutpaintStage()])
    variant = np.asarray(Image.open(out.archive / "30-outpaint-16x9.png").convert("RGB")).astype(int)
    x0, y0, x1, y1 = manifest.stages[0].products.variants[0].frame
    assert (x1 - x0, y1 - y0) == (320, 512) and variant.shape[1] * 9 == variant.shape[0] * 16
    assert np.array_equal(variant[y0:y1, x0:x1], np.asarray(portrait))  # bit-identical inside
    # Behind it: a darker, blurred copy — no streaks: neighbouring columns of the backdrop barely differ.
    side = variant[:, :x0]
    assert side.mean() < np.asarray(portrait).mean() * 0.8
    assert np.abs(np.diff(side, axis=1)).mean() < 1.5 and np.abs(np.diff(side, axis=0)).mean() < 1.5


def _with_brighter_extension(monkeypatch, levels: int) -> None:
    """The outpaint stage's infill, with its new area made ``levels`` brighter: a drifting extension."""
    import stages.outpaint as outpaint_mod

    real = outpaint_mod.infill

    def brighter(method, canvas, known, seed=0):
        out = real(method, canvas, known, seed).astype(int)
        out[~known] += levels
        return np.clip(out, 0, 255).astype(np.uint8)
    monkeypatch.setattr(outpaint_mod, "infill", brighter)


@pytest.mark.parametrize("levels", [0, 24])
def test_a_variant_whose_extension_drifts_is_flagged_and_an_honest_one_is_not(tmp_path, monkeypatch, levels):
    _with_brighter_extension(monkeypatch, levels)
    archive, entry = _run(tmp_path, '[outpaint]\nvariants = ["16:9"]\ninfill = "blur"\n')
    (plan_entry,) = entry.details.variants
    drift_said = [a for a in entry.attention if "seam" in a]
    if levels:
        assert plan_entry.gate.startswith("failed") and plan_entry.drift["lightness"] > 5
        assert drift_said and "brighter" in plan_entry.gate or "seam shows" in plan_entry.gate
    else:
        assert plan_entry.gate == "passed" and not drift_said
    assert any("blur infill alone" in a for a in entry.attention)  # infill only either way


def test_one_variant_end_to_end_with_the_tiny_pipeline(tmp_path, tiny_sd):
    extra = (f'[inpaint]\nmodel = "{tiny_sd}"\nresolution = 64\n'
             '[outpaint]\nvariants = ["16:9"]\nsteps = 2\nseam_band = 16\n')
    archive, entry = _run(tmp_path, extra)
    details = entry.details
    assert details.generative is True and entry.models[0].name == "tiny-sd-inpaint"
    (variant,) = details.variants
    # The last step is the variant itself: one file, not a second copy of it.
    assert [s["file"] for s in variant.steps] == ["30-outpaint-16x9-step1.png", "30-outpaint-16x9-step2.png",
                                                     "30-outpaint-16x9.png"]
    assert not (archive / "30-outpaint-16x9-step3.png").exists()
    assert Image.open(archive / "30-outpaint-16x9.png").size == (1024, 576)
    _original_untouched(archive, entry, "16x9", 16)
    # The random tiny model repainted the strips: they differ from the plain infill.
    plain, known = _steps(np.asarray(Image.open(DATA / "astronaut.png").convert("RGB")), "16:9", "blur")
    out = np.asarray(Image.open(archive / "30-outpaint-16x9.png").convert("RGB"))
    assert np.abs(out[~known].astype(int) - plain[~known]).mean() > 2


def test_no_variant_canvas_past_max_pixels_is_ever_allocated(tmp_path):
    """``variants = ["99999:1"]`` (a sidecar, a retry) once asked for a 6 GB canvas."""
    for spec in ("99999:1", "1:17", "40000x512"):
        folder = tmp_path / spec.replace(":", "-")
        folder.mkdir()
        with pytest.raises(config_mod.ConfigError, match=r"\[outpaint\]\.variants .* at most 16:1 and 32768 px"):
            config_mod.load(write_config(folder, f'[outpaint]\nvariants = ["{spec}"]\n'))
    # Within the schema but past [daemon].max_pixels for this picture: said, and the other variants made.
    path = write_config(tmp_path, '[outpaint]\nvariants = ["16:1", "4:5"]\n[upscale]\nenabled = false\n')
    path.write_text(path.read_text().replace("[daemon]\n", "[daemon]\nmax_pixels = 600000\n", 1))
    cfg = config_mod.load(path)
    src = cfg.paths.inbox / "astro.png"
    src.write_bytes((DATA / "astronaut.png").read_bytes())
    out, manifest = run_one(cfg, src, [OutpaintStage()])
    archive, entry = out.archive, manifest.stages[0]
    assert entry.status == "done" and [v.label for v in entry.products.variants] == ["4x5"]
    assert any(a.startswith("variant 16x1 not made: its 8192×512 canvas is past [daemon].max_pixels (600000)")
               for a in entry.attention)
    assert not (archive / "30-outpaint-16x1.png").exists()
