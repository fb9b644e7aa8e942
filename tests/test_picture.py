"""One picture model from intake to every output: orientation, colour profile, 16-bit and alpha.

Each case drops a real file the test makes and runs it through the real stages (detection, outpaint
infill, upscale, contact sheet) with the real runner.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from daemon import config as config_mod
from stages.automask import AutoMaskStage
from stages.contact import ContactSheetStage
from stages.outpaint import OutpaintStage
from stages.outpaint_plan import plan
from stages.picture import fill_hidden, orientation, view
from stages.upscale import UpscaleStage
from tests.conftest import CPU_PIPELINE, DATA, run_one, write_config
from tests.helpers.icc import rgb_profile


def _run(tmp_path, name: str, data: bytes, extra: str = ""):
    cfg = config_mod.load(write_config(tmp_path, CPU_PIPELINE + extra))
    src = cfg.paths.inbox / name
    src.write_bytes(data)
    out, manifest = run_one(cfg, src, [AutoMaskStage(), OutpaintStage(), UpscaleStage(), ContactSheetStage()])
    return out.archive, {s.name: s for s in manifest.stages}


def _encoded(image: Image.Image, fmt: str, **args) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **args)
    return buf.getvalue()


def _face_centres(entry) -> list[tuple[float, float]]:
    return [((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2)
            for d in entry.details.detections if d.kind == "face"]


def test_a_turned_jpeg_gives_upright_masks_variants_upscales_and_sheet(tmp_path):
    upright = Image.open(DATA / "astronaut.png").convert("RGB").crop((0, 64, 512, 448))  # 512×384, landscape
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera held sideways stores it: 384×512
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = _encoded(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (512, 384)

    archive, stages = _run(tmp_path, "turned.jpg", data)
    assert (archive / "00-original.jpg").read_bytes() == data  # what was dropped, byte for byte
    assert Image.open(archive / "00-upright.png").size == (512, 384)
    (face,) = _face_centres(stages["automask"])  # her face, where it is in the upright picture
    assert 180 < face[0] < 300 and 40 < face[1] < 170, face
    assert Image.open(archive / "10-mask-face.png").size == (512, 384)
    assert Image.open(archive / "10-detections.png").size == (512, 384)
    (variant,) = stages["outpaint"].products.variants
    assert variant.frame[2] - variant.frame[0] == 512 and variant.frame[3] - variant.frame[1] == 384
    assert Image.open(archive / "30-outpaint-16x9.png").size == plan((512, 384), "16:9").size  # not (384, 512)'s
    assert Image.open(archive / "40-upscale.png").size == (1024, 768)
    # The variant holds the upright picture where its frame says, not a sideways one.
    x0, y0, x1, y1 = variant.frame
    inner = np.asarray(Image.open(archive / "30-outpaint-16x9.png").convert("RGB"))[y0:y1, x0:x1].astype(int)
    assert np.abs(inner - np.asarray(Image.open(archive / "00-upright.png").convert("RGB"))).max() == 0
    for p in archive.iterdir():  # no output carries an orientation tag that would turn it again
        if p.suffix in (".png", ".jpg") and p.name != "00-original.jpg":
            assert orientation(Image.open(p)) == 1, p.name


def _patch_srgb(image: Image.Image, box) -> tuple[int, int, int]:
    """The patch's mean colour, converted to sRGB through the picture's own ICC profile."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
    srgb = ImageCms.applyTransform(image.convert("RGB").crop(box), ImageCms.buildTransform(
        profile, ImageCms.createProfile("sRGB"), "RGB", "RGB"))
    return tuple(int(round(v)) for v in np.asarray(srgb).reshape(-1, 3).mean(axis=0))


def test_a_display_p3_patch_reads_the_same_colour_in_every_output(tmp_path):
    p3 = rgb_profile()
    image = Image.new("RGB", (256, 192), (90, 110, 130))
    image.paste((200, 40, 40), (96, 64, 160, 128))  # a saturated P3 red: outside sRGB
    archive, stages = _run(tmp_path, "wide.png", _encoded(image, "PNG", icc_profile=p3))
    expected = _patch_srgb(Image.open(archive / "00-original.png"), (104, 72, 152, 120))
    assert expected != (200, 40, 40)  # the profile matters: read as sRGB, the colour would be wrong
    (variant,) = stages["outpaint"].products.variants
    x0, y0 = variant.frame[:2]
    shown = {"variant": (Image.open(archive / "30-outpaint-16x9.png"), (x0 + 104, y0 + 72, x0 + 152, y0 + 120)),
             "upscale": (Image.open(archive / "40-upscale.png"), (216, 152, 296, 232)),
             "detections": (Image.open(archive / "10-detections.png"), (104, 72, 152, 120))}
    for what, (picture, box) in shown.items():
        assert picture.info.get("icc_profile") == p3, what
        got = _patch_srgb(picture, box)
        assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 2, (what, got, expected)
    for name in ("99-contact.jpg", "30-outpaint-16x9-compare.png"):
        assert Image.open(archive / name).info.get("icc_profile") == p3, name


@pytest.mark.slow
def test_sixteen_bit_grey_is_seen_scaled_and_upscaled_at_full_depth(tmp_path):
    grey8 = np.asarray(Image.open(DATA / "astronaut.png").convert("L"))
    grey16 = Image.fromarray(grey8.astype(np.uint16) * 257)  # the same picture, 16 bits deep
    archive, stages = _run(tmp_path, "deep.png", _encoded(grey16, "PNG"))
    assert stages["automask"].details.counts["face"] == 1  # not clipped white: her face is found
    (variant,) = stages["outpaint"].products.variants
    x0, y0, x1, y1 = variant.frame
    inner = np.asarray(Image.open(archive / "30-outpaint-16x9.png").convert("L"))[y0:y1, x0:x1]
    assert np.array_equal(inner, grey8)  # 65535 → 255: the 8-bit view is the picture, scaled
    up = Image.open(archive / "40-upscale.png")
    assert up.mode == "I;16" and up.size == (1024, 1024) and np.asarray(up).max() > 255


def test_rgba_variants_keep_alpha_and_hidden_colours_never_show(tmp_path):
    rgba = np.zeros((192, 256, 4), np.uint8)
    rgba[..., :3] = (0, 255, 0)  # hidden: pure green under fully transparent pixels
    rgba[32:160, 64:192] = (150, 90, 60, 255)  # an opaque brown cut-out in the middle
    archive, stages = _run(tmp_path, "cutout.png", _encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    variant = Image.open(archive / "30-outpaint-16x9.png")
    assert variant.mode == "RGBA"
    alpha = np.asarray(variant.getchannel("A"))
    (v,) = stages["outpaint"].products.variants
    x0, y0, x1, y1 = v.frame
    assert np.array_equal(alpha[y0:y1, x0:x1], rgba[..., 3])  # the master's alpha, as it was
    assert alpha[:, :x0].max() == 0 and alpha[:, x1:].max() == 0  # the new canvas: the edge's alpha (clear)
    for name in ("30-outpaint-16x9.png", "40-upscale.png", "40-upscale-16x9.png"):
        px = np.asarray(Image.open(archive / name).convert("RGBA")).astype(int)
        visible = px[..., 3] > 0
        greenish = (px[..., 1] > px[..., 0] + 40) & visible
        assert not greenish.any(), (name, int(greenish.sum()))
    sheet = np.asarray(Image.open(archive / "99-contact.jpg").convert("RGB")).astype(int)
    assert not ((sheet[..., 1] > sheet[..., 0] + 60) & (sheet[..., 1] > 150)).any()  # shown over grey


def test_opaque_pictures_stay_opaque_in_their_variants(tmp_path):
    image = Image.open(DATA / "astronaut.png").convert("RGBA").resize((256, 256))
    archive, _ = _run(tmp_path, "opaque.png", _encoded(image, "PNG"))
    alpha = np.asarray(Image.open(archive / "30-outpaint-16x9.png").getchannel("A"))
    assert alpha.min() == 255


def test_fill_hidden_takes_the_nearest_visible_colour():
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    rgb[2, 3] = (200, 100, 50)
    alpha = np.zeros((3, 4), np.uint8)
    alpha[0, 0] = alpha[2, 3] = 255
    out = fill_hidden(rgb, alpha)
    assert tuple(out[0, 1]) == (10, 20, 30) and tuple(out[2, 2]) == (200, 100, 50)
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[2, 3]) == (200, 100, 50)  # visible: untouched


@pytest.mark.parametrize("mode", ["P", "PA", "LA", "CMYK", "1"])
def test_every_mode_has_an_eight_bit_view(mode):
    im = Image.open(DATA / "astronaut.png").convert("RGBA").resize((32, 32)).convert(mode)
    v = view(im)
    assert v.rgb.dtype == np.uint8 and v.rgb.shape == (32, 32, 3)
    assert (v.alpha is not None) == (mode in ("PA", "LA"))
