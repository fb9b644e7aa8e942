from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from PIL import Image

from daemon.intake import InputError, decode, is_junk, owner_of_sidecar, read_dropped, sidecar_suffix, sidecars_for
from tests.conftest import DATA, jpeg_bytes, png_bytes

FORMATS = ("png", "jpeg", "webp")


def _decode(data: bytes, max_pixels: int = 89_478_485):
    return decode(data, "x.png", FORMATS, max_pixels)


def truncated_jpeg_that_verifies() -> bytes:
    data = jpeg_bytes()
    return data[: len(data) // 2]


def bomb_png(side: int = 12000) -> bytes:
    """A tiny PNG that claims side×side pixels (a decompression bomb)."""
    raw = zlib.compress(b"\x00" * (side + 1) * 1, 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_good_images_decode_by_content_whatever_the_name():
    fmt, im = _decode(png_bytes())
    assert fmt == "png" and im.size == (64, 48)
    fmt, _ = _decode(jpeg_bytes())
    assert fmt == "jpeg"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "WEBP")
    assert _decode(buf.getvalue())[0] == "webp"


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (png_bytes()[:60], "cannot be decoded"),
    (os.urandom(4096), "not a PNG, JPEG or WebP"),
    (bomb_png(), "decompression-bomb guard"),
])
def test_bad_input_is_an_input_error_naming_the_file(data, match):
    with pytest.raises(InputError, match=match):
        _decode(data)


def test_truncated_jpeg_that_passes_verify_is_refused():
    data = truncated_jpeg_that_verifies()
    Image.open(io.BytesIO(data)).verify()  # Pillow's cheap check says yes…
    with pytest.raises(InputError, match="cannot be decoded as JPEG"):
        _decode(data)  # …the full decode says no


def test_format_not_in_config_is_refused():
    with pytest.raises(InputError, match="not accepted by \\[daemon\\].formats"):
        decode(jpeg_bytes(), "a.jpg", ("png",), 10**8)


def test_links_are_refused_and_their_targets_untouched(tmp_path):
    target = tmp_path / "outside.png"
    target.write_bytes(png_bytes())
    before = target.read_bytes()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "sym.png").symlink_to(target)
    os.link(target, inbox / "hard.png")
    with pytest.raises(InputError, match="symbolic link"):
        read_dropped(inbox / "sym.png", FORMATS, 10**8, 10**9)
    with pytest.raises(InputError, match="hard link"):
        read_dropped(inbox / "hard.png", FORMATS, 10**8, 10**9)
    assert target.read_bytes() == before


@pytest.mark.parametrize("name", ["a.part", "b.png.tmp", "c.crdownload", ".hidden.png", "~lock.png",
                                  "._mac.png", "Thumbs.db", ".syncthing.x.png.tmp", "x.png.error.json"])
def test_junk_names_are_ignored(name):
    assert is_junk(name)


def test_extra_ignore_globs():
    assert is_junk("draft-1.png", ("draft-*",))
    assert not is_junk("final.png", ("draft-*",))


def test_sidecars_are_found_by_stem(tmp_path):
    img = tmp_path / "hero.png"
    img.write_bytes(png_bytes())
    (tmp_path / "hero.mask.png").write_bytes(png_bytes())
    (tmp_path / "hero.remove.png").write_bytes(png_bytes())
    (tmp_path / "hero.toml").write_text("[upscale]\nscale = 2\n")
    (tmp_path / "other.json").write_text("{}")
    found = sidecars_for(img)
    assert set(found) == {"00-sidecar-mask.png", "00-sidecar-remove.png", "00-sidecar.toml"}
    names = {"hero.png", "hero.mask.png", "hero.remove.png", "hero.toml", "other.json"}
    assert owner_of_sidecar(tmp_path / "hero.mask.png", names) == "hero.png"
    assert owner_of_sidecar(tmp_path / "hero.remove.png", names) == "hero.png"
    assert sidecar_suffix("hero.remove.png") == ".remove.png"  # never taken for an image of its own
    assert owner_of_sidecar(tmp_path / "other.json", names) is None


def test_the_bomb_guard_names_our_setting_and_its_value_at_any_size():
    # 20000² is past twice Pillow's own constant: Pillow's guard would have spoken first, naming its limit.
    for side, limit in ((12000, 89_478_485), (20000, 89_478_485), (2000, 1_000_000)):
        with pytest.raises(InputError) as err:
            _decode(bomb_png(side), max_pixels=limit)
        assert f"is {side}×{side} = {side * side} pixels, over [daemon].max_pixels ({limit})" in str(err.value)
        assert "178956970" not in str(err.value)


def test_a_limit_above_pillows_own_is_honoured():
    """[daemon].max_pixels is the one limit: set above Pillow's constant, an image below it is not refused."""
    Image.new("L", (1, 1)).save(io.BytesIO(), "PNG")  # Pillow imported and configured by daemon.intake
    im = Image.open(io.BytesIO(bomb_png(14000)))  # 196 M pixels: more than twice Pillow's 89.5 M
    assert im.size == (14000, 14000)  # opened: the header alone, no guard of Pillow's in the way


def test_text_metadata_past_pillows_bounds_is_left_unread_and_the_picture_is_processed(tmp_path):
    """A 20 MB prompt, compressed into a 20 KB iTXt chunk: Pillow refuses to open such a PNG at all."""
    import io

    from PIL import Image, PngImagePlugin

    from bench.kit.pipeline import run_one, write_config
    from daemon import config as config_mod
    from daemon.pipeline import default_stages

    cfg = config_mod.load(write_config(tmp_path, "[outpaint]\nenabled = false\n[upscale]\nenabled = false\n"))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", "masterpiece, " * 1_600_000, zip=True)
    buf = io.BytesIO()
    Image.open(DATA / "astronaut.png").convert("RGB").resize((128, 128)).save(buf, "PNG", pnginfo=info)
    src = tmp_path / "inbox" / "huge-prompt.png"
    src.write_bytes(buf.getvalue())
    assert len(buf.getvalue()) < 200_000
    out, manifest = run_one(cfg, src, default_stages())
    assert (out.archive / "00-original.png").read_bytes() == buf.getvalue()  # kept as it came
    assert manifest.source.generation is None and "not read" in manifest.source.notes[0]
    assert {s.name: s.status for s in manifest.stages}["deliver"] == "done"
    with Image.open(out.archive / "00-upright.png") as im:  # the picture every stage used
        assert im.size == (128, 128) and not getattr(im, "text", {})


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_animation_is_processed_as_its_first_frame_and_the_manifest_says_so(tmp_path, fmt):
    import io

    from PIL import Image

    from bench.kit.pipeline import run_one, write_config
    from daemon import config as config_mod
    from tests.helpers.toy_stages import CopyStage

    cfg = config_mod.load(write_config(tmp_path))
    frames = [Image.new("RGB", (48, 32), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    src = tmp_path / "inbox" / f"anim.{fmt.lower()}"
    src.write_bytes(buf.getvalue())
    out, manifest = run_one(cfg, src, [CopyStage()])
    assert manifest.source.notes == ["animated (3 frames): the first frame is processed, the animation is not kept"]
    with Image.open(out.archive / "16-copy.png") as im:
        assert im.getpixel((5, 5))[:3] == (200, 30, 30)
