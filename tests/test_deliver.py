"""Delivery: real files through the real runner, each checked by value (sizes, colours, the grade, the logo,
the label read back by exiftool, C2PA validated by c2pa-python's reader)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from bench.kit.review_archive import PIPELINE
from daemon import config as config_mod
from daemon.archive import StageEntry
from daemon.pipeline import default_stages
from stages.deliver import Cube, PresetFailed, apply_lut, read_cube
from stages.records import Delivery
from tests.conftest import DATA, REPO, run_one, write_config
from tests.helpers.icc import P3_D50, rgb_profile

EXIFTOOL = shutil.which("exiftool")
if EXIFTOOL is None and os.environ.get("CI"):
    raise RuntimeError("CI must read the label back: .ci/run installs exiftool (libimage-exiftool-perl)")

# Only what delivery needs in front of it: the master, and two infill variants (no models).
BASE = "[automask]\nenabled = false\n" + PIPELINE


# A full-size master and a 16:9 banner from the variant.
MASTER_AND_BANNER = """
[[deliver.preset]]
name = "master"
[[deliver.preset]]
name = "banner"
source = "16x9"
"""


def _deliver(tmp_path: Path, presets: str, source: Path | None = None, extra: str = "", expect: str = "done",
             infill_variants: str = "always"):
    """One image through the pipeline with these presets; its infill variants delivered unless told otherwise
    (they are what these tests deliver from; the default, held for review, has tests of its own)."""
    text = BASE + extra + presets
    said = f'infill_variants = "{infill_variants}"\n'
    text = text.replace("[deliver]\n", "[deliver]\n" + said) if "[deliver]\n" in text else f"[deliver]\n{said}" + text
    cfg = config_mod.load(write_config(tmp_path, text))
    if source is None:
        source = tmp_path / "src" / "astro.png"
        source.parent.mkdir(exist_ok=True)
        Image.open(DATA / "astronaut.png").convert("RGB").resize((320, 240)).save(source)
    out, manifest = run_one(cfg, source, default_stages(), expect=expect)
    entry = manifest.stage("deliver")
    return cfg, out, entry


def _by_preset(entry: StageEntry) -> dict[str, Delivery]:
    return {d.preset: d for d in entry.details.deliveries}


def test_every_fit_gives_the_exact_size_and_the_manifest_lists_each_file_with_its_sha256(tmp_path):
    _, out, entry = _deliver(tmp_path, """
[[deliver.preset]]
name = "master"
[[deliver.preset]]
name = "banner"
source = "16x9"
size = "1920x1080"
format = "webp"
[[deliver.preset]]
name = "feed"
source = "4x5"
size = "1080x1350"
format = "jpeg"
[[deliver.preset]]
name = "square"
size = "500x500"
fit = "contain"
[[deliver.preset]]
name = "stretched"
size = "300x100"
fit = "exact"
[[deliver.preset]]
name = "small"
long_edge = 160
""")
    got = _by_preset(entry)
    sizes = {name: Image.open(d.path).size for name, d in got.items()}
    assert sizes == {"master": (320, 240), "banner": (1920, 1080), "feed": (1080, 1350), "square": (500, 500),
                     "stretched": (300, 100), "small": (160, 120)}
    outbox = tmp_path / "var" / "outbox" / out.archive.name
    assert sorted(p.name for p in outbox.iterdir()) == ["astro-banner.webp", "astro-feed.jpg", "astro-master.png",
                                                        "astro-small.png", "astro-square.png", "astro-stretched.png"]
    for d in got.values():
        assert hashlib.sha256(Path(d.path).read_bytes()).hexdigest() == d.sha256
    assert Image.open(got["banner"].path).format == "WEBP" and Image.open(got["feed"].path).format == "JPEG"
    # contain: the picture whole (500x375) in the middle, white bars of 62 and 63 px above and below it
    square = np.asarray(Image.open(got["square"].path).convert("RGB"))
    assert (square[:62] == 255).all() and (square[-63:] == 255).all()
    assert not (square[62] == 255).all() and not (square[-64] == 255).all()
    assert entry.details.failed == []
    assert entry.details.c2pa.startswith("not configured")


def test_cover_never_cuts_the_original_composition_and_a_missing_variant_fails_that_preset_alone(tmp_path):
    _, out, entry = _deliver(tmp_path, """
[[deliver.preset]]
name = "wide-from-master"
size = "1920x1080"
[[deliver.preset]]
name = "tall-from-wide"
source = "16x9"
size = "1080x1350"
[[deliver.preset]]
name = "story"
source = "9x16"
size = "1080x1920"
[[deliver.preset]]
name = "banner"
source = "16x9"
size = "1600x900"
""")
    failed = {f.preset: f.reason for f in entry.details.failed}
    assert set(failed) == {"wide-from-master", "tall-from-wide", "story"}
    assert "cover to 1920x1080 would cut into the original composition" in failed["wide-from-master"]
    assert "cover to 1080x1350 would cut into the original composition" in failed["tall-from-wide"]
    assert "no variant '9x16' for this image (its variants: 16x9, 4x5)" in failed["story"]
    assert list(_by_preset(entry)) == ["banner"]  # the image still finishes, with what could be made
    assert entry.reason == "1 delivered, 3 failed"
    # the 16:9 banner is the whole variant: its master (the original composition) inside, uncut
    banner = Image.open(_by_preset(entry)["banner"].path)
    variant = Image.open(out.archive / "30-outpaint-16x9.png")
    assert banner.size == (1600, 900) and abs(variant.width / variant.height - 16 / 9) < 0.01


def _srgb_from_p3(rgb: tuple[int, int, int]) -> np.ndarray:
    """What a colour-managed conversion must give: the profile's gamma 2.2 and D50 primaries to XYZ, then
    Bradford-adapted sRGB (as lcms stores it) and the sRGB curve."""
    lin = (np.array(rgb) / 255.0) ** 2.2
    xyz = np.array([P3_D50["rXYZ"], P3_D50["gXYZ"], P3_D50["bXYZ"]]).T @ lin
    srgb_d50 = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
                         [0.0139322, 0.0971045, 0.7141733]])
    out = np.clip(np.linalg.solve(srgb_d50, xyz), 0, 1)
    out = np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)
    return out * 255


def test_a_display_p3_patch_is_converted_to_its_srgb_value_or_kept_as_it_is(tmp_path):
    p3 = rgb_profile()
    patch = (170, 110, 80)  # inside sRGB's gamut: a conversion, not a clip
    src = tmp_path / "src" / "wide.png"
    src.parent.mkdir()
    Image.new("RGB", (160, 120), patch).save(src, icc_profile=p3)
    _, _, entry = _deliver(tmp_path, """
[[deliver.preset]]
name = "web"
[[deliver.preset]]
name = "print"
colour = "keep"
""", source=src)
    got = _by_preset(entry)
    web, kept = Image.open(got["web"].path), Image.open(got["print"].path)
    expected = _srgb_from_p3(patch)
    assert np.abs(np.asarray(web.convert("RGB"))[60, 80].astype(float) - expected).max() <= 2.0, expected
    assert tuple(np.asarray(web)[60, 80]) != patch  # it really moved
    from PIL import ImageCms

    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(web.info["icc_profile"]))).startswith(
        "sRGB")
    assert tuple(np.asarray(kept)[60, 80]) == patch and kept.info["icc_profile"] == p3
    assert "converted to sRGB" in got["web"].steps and "converted to sRGB" not in got["print"].steps


def _write_cube(path: Path, n: int, f) -> Path:
    lines = [f"LUT_3D_SIZE {n}"]
    for b in range(n):
        for g in range(n):
            for r in range(n):
                lines.append(" ".join(f"{v:.6f}" for v in f(np.array([r, g, b]) / (n - 1))))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_identity_lut_is_bit_identical_and_a_known_lut_gives_its_values(tmp_path):
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    identity = read_cube(_write_cube(tmp_path / "id.cube", 33, lambda rgb: rgb))
    assert np.array_equal(np.asarray(apply_lut(picture, identity, 1.0)), np.asarray(picture))
    # swap red and blue, and darken green to half: linear, so trilinear interpolation is exact between points
    swap = read_cube(_write_cube(tmp_path / "swap.cube", 17, lambda rgb: np.array([rgb[2], rgb[1] / 2, rgb[0]])))
    a, out = np.asarray(picture).astype(int), np.asarray(apply_lut(picture, swap, 1.0)).astype(int)
    assert np.abs(out[..., 0] - a[..., 2]).max() <= 1 and np.abs(out[..., 2] - a[..., 0]).max() <= 1
    assert np.abs(out[..., 1] - a[..., 1] / 2).max() <= 1
    half = np.asarray(apply_lut(picture, swap, 0.5)).astype(int)
    assert np.abs(half[..., 0] - (a[..., 0] + a[..., 2]) / 2).max() <= 1
    short = _truncated(_write_cube(tmp_path / "short.cube", 17, lambda rgb: rgb))
    with pytest.raises(PresetFailed, match=r"LUT_3D_SIZE 17 needs 14739 values, found 14709"):
        read_cube(short)
    assert isinstance(identity, Cube) and identity.size == 33


def _truncated(path: Path) -> Path:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-10]) + "\n")
    return path


def test_the_logo_lands_where_asked_at_its_size_and_opacity(tmp_path):
    Image.new("RGBA", (40, 20), (255, 0, 0, 255)).save(tmp_path / "logo.png")
    src = tmp_path / "src" / "black.png"
    src.parent.mkdir()
    Image.new("RGB", (400, 300), (0, 0, 0)).save(src)
    _, _, entry = _deliver(tmp_path, """
[[deliver.preset]]
name = "branded"
logo = "logo.png"
logo_position = "bottom-left"
logo_margin = 10
logo_scale = 0.25
logo_opacity = 0.5
[[deliver.preset]]
name = "centred"
logo = "logo.png"
logo_position = "centre"
logo_scale = 0.5
logo_opacity = 1.0
""", source=src)
    got = _by_preset(entry)
    a = np.asarray(Image.open(got["branded"].path).convert("RGB")).astype(int)
    red = a[..., 0] > 60
    ys, xs = np.nonzero(red)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (10, 110, 240, 290)  # 100×50 at the margin
    assert abs(a[265, 60, 0] - 128) <= 2 and a[265, 60, 1] == 0  # half opacity over black
    c = np.asarray(Image.open(got["centred"].path).convert("RGB")).astype(int)
    ys, xs = np.nonzero(c[..., 0] > 60)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (100, 300, 100, 200) and c[150, 200, 0] == 255
    (tmp_path / "again" / "src").mkdir(parents=True)
    Image.new("RGB", (400, 300), (0, 0, 0)).save(tmp_path / "again" / "src" / "black.png")
    missing = _deliver(tmp_path / "again", '[[deliver.preset]]\nname = "x"\nlogo = "no-such-logo.png"\n',
                       source=tmp_path / "again" / "src" / "black.png")[2]
    assert "cannot be read as an image" in missing.details.failed[0].reason


def _a1111_jpeg_with_gps(path: Path) -> None:
    image = Image.open(DATA / "astronaut.png").convert("RGB").resize((200, 200))
    exif = Image.Exif()
    exif[0x0112] = 1  # orientation
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)
    image.save(path, "JPEG", exif=exif.tobytes())


def _a1111_png(path: Path, prompt: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Model: dreamshaper_8")
    Image.open(DATA / "astronaut.png").convert("RGB").resize((200, 200)).save(path, pnginfo=info)


def _exiftool(path: Path) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-a", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (apt-get install libimage-exiftool-perl)")
def test_the_ai_label_reads_back_in_exiftool_and_nothing_identifying_is_kept(tmp_path):
    src = tmp_path / "src" / "gen.png"
    src.parent.mkdir()
    _a1111_png(src, 'a <b>bold</b> "astronaut" & friends')
    _, _, entry = _deliver(tmp_path, """
[[deliver.preset]]
name = "png"
[[deliver.preset]]
name = "jpeg"
format = "jpeg"
[[deliver.preset]]
name = "webp"
format = "webp"
[[deliver.preset]]
name = "bare"
metadata = "strip"
""", source=src)
    got = _by_preset(entry)
    for name in ("png", "jpeg", "webp"):
        tags = _exiftool(Path(got[name].path))
        assert tags["XMP-iptcExt:DigitalSourceType"] == \
            "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia", name
        assert tags["XMP-xmp:CreatorTool"] == "Stable Diffusion web UI (dreamshaper_8)", name
        assert tags["XMP-dc:Description"] == 'a <b>bold</b> "astronaut" & friends', name  # escaped, read back whole
        assert "polishd" in str(tags["XMP-xmpMM:HistorySoftwareAgent"]), name
        assert not any(k.startswith("PNG:Parameters") or "GPS" in k for k in tags), name
    bare = _exiftool(Path(got["bare"].path))
    assert not any(k.startswith("XMP") for k in bare) and "ICC-header:ProfileClass" in bare
    # a photograph with AI edits, declared per image: composite, and its GPS and camera are not copied
    photo = tmp_path / "photo" / "src" / "trip.jpg"
    photo.parent.mkdir(parents=True)
    _a1111_jpeg_with_gps(photo)
    (photo.parent / "trip.toml").write_text('[deliver]\ninput = "photo"\n')
    _, _, entry = _deliver(tmp_path / "photo", '[[deliver.preset]]\nname = "web"\nformat = "jpeg"\n', source=photo)
    tags = _exiftool(Path(_by_preset(entry)["web"].path))
    assert tags["XMP-iptcExt:DigitalSourceType"].endswith("/compositeWithTrainedAlgorithmicMedia")
    assert not any("GPS" in k or k.endswith(":Make") for k in tags), tags


def test_keep_keeps_the_generation_text_and_exif_but_not_the_orientation(tmp_path):
    src = tmp_path / "src" / "gen.png"
    src.parent.mkdir()
    _a1111_png(src, "an astronaut")
    _, _, entry = _deliver(tmp_path, '[[deliver.preset]]\nname = "kept"\nmetadata = "keep"\n'
                                     '[[deliver.preset]]\nname = "jpg"\nmetadata = "keep"\nformat = "jpeg"\n',
                           source=src)
    kept = Image.open(_by_preset(entry)["kept"].path)
    assert kept.text["parameters"].startswith("an astronaut\nNegative prompt: blurry")
    assert "XML:com.adobe.xmp" not in kept.text
    comment = Image.open(_by_preset(entry)["jpg"].path).getexif().get_ifd(0x8769)[0x9286]
    assert comment[:8] == b"UNICODE\0" and comment[8:].decode("utf-16-be").startswith("an astronaut\n")
    photo = tmp_path / "photo" / "src" / "turned.jpg"
    photo.parent.mkdir(parents=True)
    image = Image.open(DATA / "astronaut.png").convert("RGB").resize((120, 80))
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "PhoneMaker"  # turned 90°
    image.save(photo, "JPEG", exif=exif.tobytes())
    _, _, entry = _deliver(tmp_path / "photo", '[[deliver.preset]]\nname = "k"\nmetadata = "keep"\nformat = "jpeg"\n',
                           source=photo)
    out = Image.open(_by_preset(entry)["k"].path)
    assert out.size == (80, 120) and out.getexif().get(0x010F) == "PhoneMaker" and 0x0112 not in out.getexif()


def _process(cfg, src: Path, archive: Path | None = None):
    """``src`` through the runner as ``polishd process`` would (the file stays), into ``archive`` if given."""
    from daemon.journal import Journal
    from daemon.runner import Runner

    journal = Journal(cfg.paths.state / "process.sqlite3")
    st = src.stat()
    job = journal.start_direct(src, hashlib.sha256(src.read_bytes()).hexdigest(), st.st_size, st.st_mtime)
    if archive is not None:
        journal.set_archive(job.id, str(archive))
        job = journal.get(job.id)
    try:
        out = Runner(journal, lambda: cfg, default_stages()).run_job(job)
    finally:
        journal.close()
    assert out.status == "done", out.error
    return out


def test_a_redelivery_writes_the_same_bytes_and_the_flat_layout_numbers_a_clash(tmp_path):
    presets = """
[deliver]
layout = "flat"
[[deliver.preset]]
name = "feed"
source = "4x5"
size = "540x675"
format = "jpeg"
[[deliver.preset]]
name = "web"
format = "webp"
"""
    src = tmp_path / "src" / "astro.png"
    src.parent.mkdir()
    Image.open(DATA / "astronaut.png").convert("RGB").resize((320, 240)).save(src)
    def config(extra: str = ""):  # the same bytes may be processed again here
        path = write_config(tmp_path, BASE + presets.replace("[deliver]\n", '[deliver]\ninfill_variants = "always"\n')
                            + extra)
        path.write_text(path.read_text().replace("[daemon]\n", '[daemon]\nduplicates = "process"\n'))
        return config_mod.load(path)

    cfg = config()
    first = _process(cfg, src)
    outbox = tmp_path / "var" / "outbox"
    delivered = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in outbox.iterdir()}
    assert sorted(delivered) == ["astro-feed.jpg", "astro-web.webp"]
    # A preset added later: the stage runs again in the same archive folder; what it made before is the same
    # bytes, not even rewritten, under the same names.
    cfg2 = config('[[deliver.preset]]\nname = "extra"\n')
    again = _process(cfg2, src, archive=first.archive)
    assert again.archive == first.archive
    for name, (data, mtime) in delivered.items():
        assert (outbox / name).read_bytes() == data and (outbox / name).stat().st_mtime_ns == mtime, name
    assert sorted(p.name for p in outbox.iterdir()) == ["astro-extra.png", "astro-feed.jpg", "astro-web.webp"]
    # Another image of the same name: in the flat layout it gets -2, and the first one's files stay.
    other = tmp_path / "other" / "astro.png"
    other.parent.mkdir()
    Image.open(DATA / "astronaut.png").convert("RGB").resize((320, 240)).rotate(180).save(other)
    _process(cfg, other)
    assert sorted(p.name for p in outbox.iterdir()) == ["astro-extra.png", "astro-feed-2.jpg", "astro-feed.jpg",
                                                        "astro-web-2.webp", "astro-web.webp"]
    assert (outbox / "astro-feed.jpg").read_bytes() == delivered["astro-feed.jpg"][0]


def test_content_credentials_are_signed_and_validate_with_the_reader(tmp_path):
    import c2pa

    from bench.kit.c2pa_chain import make_chain

    chain, key, _root = make_chain(tmp_path / "keys")
    src = tmp_path / "src" / "gen.png"
    src.parent.mkdir()
    _a1111_png(src, "an astronaut")
    signing = f'[deliver.c2pa]\ncertificate = "{chain}"\nprivate_key = "{key}"\n'
    presets = signing + """
[[deliver.preset]]
name = "feed"
source = "4x5"
size = "540x675"
format = "jpeg"
lut = "warm.cube"
logo = "logo.png"
[[deliver.preset]]
name = "master"
"""
    _write_cube(tmp_path / "warm.cube", 5, lambda rgb: np.clip(rgb * np.array([1.05, 1.0, 0.9]), 0, 1))
    Image.new("RGBA", (40, 20), (255, 255, 255, 200)).save(tmp_path / "logo.png")
    _, out, entry = _deliver(tmp_path, presets, source=src)
    got = _by_preset(entry)
    assert entry.details.c2pa == "signed" and got["feed"].label == "xmp+c2pa"
    for name, mime in (("feed", "image/jpeg"), ("master", "image/png")):
        data = Path(got[name].path).read_bytes()
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            assert reader.get_validation_state() in ("Valid", "Trusted"), reader.get_validation_results()
            manifest = reader.get_active_manifest()
        actions = [a["action"] for s in manifest["assertions"] if s["label"].startswith("c2pa.actions")
                   for a in s["data"]["actions"]]
        assert actions[0] == "c2pa.created"
        # the feed is a variant: outpainting made it; the master is the generation itself, nothing repainted
        assert ("c2pa.edited" in actions) == (name == "feed")
        created = next(a for s in manifest["assertions"] if s["label"].startswith("c2pa.actions")
                       for a in s["data"]["actions"] if a["action"] == "c2pa.created")
        assert created["softwareAgent"]["name"] == "Stable Diffusion web UI (dreamshaper_8)"
        ingredients = {i["title"]: i["relationship"] for i in manifest["ingredients"]}
        assert ingredients == ({"00-original.png": "parentOf", "logo.png": "componentOf"} if name == "feed"
                               else {"00-original.png": "parentOf"})
    feed_actions = [a["action"] for s in manifest_of(got["feed"].path, c2pa)["assertions"]
                    if s["label"].startswith("c2pa.actions") for a in s["data"]["actions"]]
    assert "c2pa.resized" in feed_actions and "c2pa.color_adjustments" in feed_actions and \
        "c2pa.placed" in feed_actions  # the logo, placed as its own ingredient
    edited = [a for s in manifest_of(got["feed"].path, c2pa)["assertions"] if s["label"].startswith("c2pa.actions")
              for a in s["data"]["actions"] if a["action"] == "c2pa.edited"]
    assert [a["parameters"]["description"] for a in edited] == ["outpaint"]
    if EXIFTOOL:  # the XMP label survives the signing
        assert _exiftool(Path(got["feed"].path))["XMP-iptcExt:DigitalSourceType"].endswith(
            "/trainedAlgorithmicMedia")


def manifest_of(path: str, c2pa) -> dict:
    with c2pa.Reader("image/jpeg", io.BytesIO(Path(path).read_bytes())) as reader:
        return reader.get_active_manifest()


def test_an_input_with_content_credentials_keeps_them_as_its_ingredient(tmp_path):
    import c2pa

    from bench.kit.c2pa_chain import make_chain
    from stages import provenance

    chain, key, _ = make_chain(tmp_path / "keys")
    plain = io.BytesIO()
    Image.open(DATA / "astronaut.png").convert("RGB").resize((200, 200)).save(plain, "PNG")
    origin = provenance.Origin("generated", "SomeGenerator 2", None, "elsewhere 1.0")
    raw = tmp_path / "raw.png"
    raw.write_bytes(plain.getvalue())
    signed = provenance.sign(plain.getvalue(), "png", provenance.c2pa_manifest(origin, "gen", []), raw, "png",
                             provenance.SigningKey(chain, key, "es256", ""))
    src = tmp_path / "src" / "credited.png"
    src.parent.mkdir()
    src.write_bytes(signed)
    signing = f'[deliver.c2pa]\ncertificate = "{chain}"\nprivate_key = "{key}"\n'
    _, _, entry = _deliver(tmp_path, signing + '[[deliver.preset]]\nname = "web"\n', source=src)
    with c2pa.Reader("image/png", io.BytesIO(Path(_by_preset(entry)["web"].path).read_bytes())) as reader:
        store = json.loads(reader.json())
    assert len(store["manifests"]) == 2  # ours, and the input's own, carried by the ingredient
    (ingredient,) = store["manifests"][store["active_manifest"]]["ingredients"]
    assert ingredient["active_manifest"] in store["manifests"]


def test_a_variant_of_the_infill_alone_is_held_until_a_reviewer_approves_it(tmp_path):
    from daemon.archive import ArchiveFolder, ReviewDecision

    presets = MASTER_AND_BANNER
    cfg, out, entry = _deliver(tmp_path, presets, infill_variants="approved")
    assert list(_by_preset(entry)) == ["master"] and entry.reason == "1 delivered, 1 held for review"
    (held,) = entry.details.held
    assert held.preset == "banner" and "16x9 is the backdrop infill alone" in held.reason
    outbox = tmp_path / "var" / "outbox" / out.archive.name
    assert [p.name for p in outbox.iterdir()] == ["astro-master.png"]
    # A reviewer approves the variant: the next run delivers it.
    folder = ArchiveFolder(out.archive)
    manifest = folder.read_manifest()
    manifest.review.append(ReviewDecision("ana", "2026-12-04T10:00:00Z", "approve", variant="16x9"))
    folder.write_manifest(manifest)
    again = _process(cfg, out.archive / manifest.original, archive=out.archive)
    delivered = ArchiveFolder(again.archive).read_manifest().stage("deliver").details
    assert sorted(d.preset for d in delivered.deliveries) == ["banner", "master"] and not delivered.held
    # "never": not even an approval delivers it.
    (tmp_path / "never").mkdir()
    _, _, never = _deliver(tmp_path / "never", presets, infill_variants="never")
    assert [h.preset for h in never.details.held] == ["banner"] and "never delivered" in never.details.held[0].reason


def test_require_review_waits_with_the_reason(tmp_path):
    _, out, entry = _deliver(tmp_path, '[deliver]\nrequire_review = true\n')
    assert entry.status == "skipped" and "waiting for approval" in entry.reason
    assert not (tmp_path / "var" / "outbox").exists() or not any((tmp_path / "var" / "outbox").iterdir())


def test_check_config_names_a_missing_logo_lut_or_key(tmp_path):
    config = write_config(tmp_path, '[[deliver.preset]]\nname = "feed"\nlogo = "brand/nope.png"\nlut = "grade.cube"\n'
                                    '[deliver.c2pa]\ncertificate = "chain.pem"\nprivate_key = "key.pem"\n')
    (tmp_path / "grade.cube").write_text("LUT_3D_SIZE 2\n" + "0 0 0\n" * 8)
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(config)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 3, out.stderr
    lines = out.stderr.splitlines()
    assert any(line.startswith("pipeline.toml: [deliver.preset.feed].logo = ") and "nope.png: no such file" in line
               for line in lines)
    assert not any("[deliver.preset.feed].lut" in line for line in lines)  # that one is there
    assert sum("[deliver.c2pa]." in line for line in lines) == 2


def _source_type(path: str) -> str:
    """The IPTC digital source type of a delivered file, from its XMP packet as written."""
    data = Path(path).read_bytes()
    found = re.search(rb'Iptc4xmpExt:DigitalSourceType="[^"]*/([A-Za-z]+)"', data)
    return found.group(1).decode() if found else ""


@pytest.mark.slow  # four pipelines, one with the tiny diffusion model
def test_labels_follow_evidence_a_photograph_is_not_called_generated(tmp_path, tiny_sd, monkeypatch):
    presets = MASTER_AND_BANNER
    for sub in ("plain", "painted", "gen", "said"):
        (tmp_path / sub).mkdir()
    # a photograph, no generator metadata, no model: the master = enhanced, infill-extended variant = composite
    _, _, entry = _deliver(tmp_path / "plain", presets)
    got = _by_preset(entry)
    assert _source_type(got["master"].path) == "algorithmicallyEnhanced"
    assert _source_type(got["banner"].path) == "compositeSynthetic"
    # the same photograph with its face repainted by a generative model: a composite with trained media
    painted = f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 2\nresolution = 64\n[inpaint.gate]\nenabled = false\n'
    monkeypatch.setattr(f"{__name__}.BASE", BASE.replace("[automask]\nenabled = false\n", ""))  # faces found
    _, _, entry = _deliver(tmp_path / "painted", presets, extra=painted)
    monkeypatch.undo()
    got = _by_preset(entry)
    assert {_source_type(d.path) for d in got.values()} == {"compositeWithTrainedAlgorithmicMedia"}
    # an A1111 generation is generated, whatever was done to it; and the user's word overrides the evidence
    src = tmp_path / "gen" / "src" / "gen.png"
    src.parent.mkdir()
    _a1111_png(src, "an astronaut")
    _, _, entry = _deliver(tmp_path / "gen", presets, source=src)
    assert {_source_type(d.path) for d in _by_preset(entry).values()} == {"trainedAlgorithmicMedia"}
    _, _, entry = _deliver(tmp_path / "said", presets, extra='[deliver]\ninput = "generated"\n')
    assert {_source_type(d.path) for d in _by_preset(entry).values()} == {"trainedAlgorithmicMedia"}


def test_a_lut_that_is_a_device_a_fifo_or_huge_is_never_read(tmp_path):
    """/dev/zero as a LUT used to wedge the daemon (its digest read for ever); a FIFO would block."""
    from stages.deliver import PresetFailed, _digest, read_cube

    fifo = tmp_path / "grade.cube"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo):
        assert _digest(path) == "missing"
        with pytest.raises(PresetFailed, match="not a regular file"):
            read_cube(path)
    secret = tmp_path / "secret.cube"
    secret.write_text("TOP-SECRET-LINE\n")
    with pytest.raises(PresetFailed) as err:
        read_cube(secret)
    assert "TOP-SECRET" not in str(err.value) and "line 1 is not a .cube line" in str(err.value)


def test_a_sidecar_or_a_retry_may_name_files_only_under_the_configs_folder_or_the_models(tmp_path):
    cfg = config_mod.load(write_config(tmp_path, ""))
    for value in ("/etc/shadow", "../../../../proc/self/environ", "~/.ssh/id_rsa"):
        with pytest.raises(config_mod.ConfigError, match="a per-image setting may only name files under"):
            config_mod.with_overrides(cfg, {"deliver": {"preset": [{"name": "web", "lut": value}]}}, "x.toml")
    with pytest.raises(config_mod.ConfigError, match=r"inpaint.model = '/etc/passwd'"):
        config_mod.with_overrides(cfg, {"inpaint": {"model": "/etc/passwd"}}, "x.toml")
    (tmp_path / "looks").mkdir()
    ok = config_mod.with_overrides(cfg, {"deliver": {"preset": [{"name": "web", "lut": "looks/warm.cube"}]}},
                                   "x.toml")  # beside the config: allowed
    assert ok.overrides


def test_a_bad_preset_size_does_not_hide_its_missing_logo(tmp_path):
    text = '[[deliver.preset]]\nname = "web"\nsize = "99999x0"\nlogo = "nologo.png"\n'
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.load(write_config(tmp_path, text))
    assert "[deliver.preset.web].size must look like" in str(err.value)
    assert "[deliver.preset.web].logo = 'nologo.png': no such file" in str(err.value)
