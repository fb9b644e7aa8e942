"""Auto-mask: MediaPipe on real photographs, and the mask maths on their own."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from automask.detect import SHIPPED, Detection, Detector, DetectorSettings, nms, tiles
from automask.mask import box_mask, masks_for, select, user_mask
from daemon import config as config_mod
from stages.automask import FaceMaskConfig
from stages.automask import AutoMaskStage
from tests.conftest import DATA, run_one, write_config


@pytest.fixture(scope="module")
def detector():
    d = Detector(DetectorSettings())
    yield d
    d.close()


def faces(dets, min_score=0.5):
    return [d for d in dets if d.kind == "face" and d.score >= min_score]


def centre(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def test_astronaut_has_one_face_where_her_face_is(detector):
    dets = detector.detect(Image.open(DATA / "astronaut.png"))
    (face,) = faces(dets)
    cx, cy = centre(face.box)
    assert abs(cx - 224) < 20 and abs(cy - 120) < 20  # her face, measured by eye on the photo
    assert 80 < face.box[2] - face.box[0] < 130
    assert face.score > 0.85


def test_camera_man_in_profile_is_found_grey_input_converted(detector):
    im = Image.open(DATA / "camera.png")
    assert im.mode == "L"
    (face,) = faces(detector.detect(im))
    cx, cy = centre(face.box)
    assert abs(cx - 236) < 20 and abs(cy - 160) < 20


def test_no_hand_is_found_on_a_face_crop(detector):
    crop = Image.open(DATA / "astronaut.png").crop((150, 50, 300, 200))
    dets = detector.detect(crop)
    assert [d for d in dets if d.kind == "hand"] == []
    assert len(faces(dets)) == 1


def test_palette_and_rgba_inputs_are_converted_and_boxes_clamped(detector):
    im = Image.open(DATA / "astronaut.png")
    for mode in ("P", "RGBA"):
        dets = detector.detect(im.convert(mode))
        assert len(faces(dets)) == 1
        assert all(0 <= d.box[0] <= d.box[2] <= 512 and 0 <= d.box[1] <= d.box[3] <= 512 for d in dets)


def test_large_images_are_searched_in_tiles_and_small_faces_found(detector):
    """A 2400 px canvas with the astronaut's face at 1/6 of its size: tiles find what the whole view misses."""
    face = Image.open(DATA / "astronaut.png").crop((150, 40, 300, 190))
    canvas = Image.new("RGB", (2400, 1600), (120, 130, 140))
    canvas.paste(face, (1700, 1200))
    dets = faces(detector.detect(canvas))
    assert len(dets) == 1
    cx, cy = centre(dets[0].box)
    assert 1700 < cx < 1850 and 1200 < cy < 1350


def test_an_enlarged_copy_finds_what_the_original_finds(detector):
    """Tiles of a 4x enlarged photo see blur and fabric at a face's size; only the one real face is kept."""
    im = Image.open(DATA / "astronaut.png").convert("RGB")
    big = im.resize((2048, 2048), Image.Resampling.LANCZOS)
    small_faces, big_faces = faces(detector.detect(im)), faces(detector.detect(big))
    assert len(small_faces) == len(big_faces) == 1
    (sx, sy), (bx, by) = centre(small_faces[0].box), centre(big_faces[0].box)
    assert abs(bx / 4 - sx) < 10 and abs(by / 4 - sy) < 10
    assert not [d for d in detector.detect(big) if d.kind == "hand" and d.score >= 0.3]


def test_tiles_cover_the_image_with_overlap():
    ts = tiles(2000, 1000, 768)
    assert ts[0][:2] == (0, 0) and max(t[2] for t in ts) == 2000 and max(t[3] for t in ts) == 1000
    assert all(t[2] - t[0] <= 768 for t in ts)
    covered = np.zeros((1000, 2000), int)
    for x0, y0, x1, y1 in ts:
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1  # every pixel is searched
    xs = sorted({t[0] for t in ts})
    ends = sorted({t[2] for t in ts})
    # Neighbouring tiles share at least a quarter of a tile, so a face cut by one border is whole in the next.
    assert all(end - start >= 768 // 4 for start, end in zip(xs[1:], ends[:-1])), (xs, ends)


def test_nms_keeps_the_most_confident_of_overlapping_boxes_per_kind():
    a = Detection("face", (0, 0, 100, 100), 0.9, "m")
    b = Detection("face", (10, 10, 105, 105), 0.7, "m")
    c = Detection("hand", (10, 10, 105, 105), 0.6, "m")
    inner = Detection("face", (30, 30, 60, 60), 0.95, "m")
    assert nms([a, b, c], 0.4) == [a, c]
    assert nms([a, inner], 0.4) == [inner]  # one box mostly inside another: the same face


# ---------------------------------------------------------------------- masks


def test_feathered_mask_is_full_in_the_centre_and_empty_far_outside():
    s = FaceMaskConfig(padding=8, dilate=4, feather=6.0)
    m = np.asarray(box_mask((200, 200), [(50, 50, 150, 150)], s))
    assert m.dtype == np.uint8 and m.shape == (200, 200)
    assert m[100, 100] == 255 and m[60, 60] == 255
    assert m[0, 0] == 0 and m[100, 10] == 0
    edge = m[100, 50 - 12]  # the grown edge itself is half-way through the feather
    assert 60 < edge < 200


def test_box_touching_the_border_is_clipped_not_wrapped():
    m = np.asarray(box_mask((100, 80), [(-10, -5, 30, 20)], FaceMaskConfig(padding=0, dilate=0, feather=0)))
    assert m[0, 0] == 255 and m[19, 29] == 255 and m[79, 99] == 0 and m[20, 30] == 0


def test_negative_dilation_erodes_and_can_erase():
    s = FaceMaskConfig(padding=0, dilate=-10, feather=0)
    m = np.asarray(box_mask((100, 100), [(20, 20, 80, 80)], s))
    assert m[25, 25] == 0 and m[35, 35] == 255
    assert np.asarray(box_mask((100, 100), [(20, 20, 35, 35)], s)).max() == 0


def test_overlapping_detections_merge_or_stay_apart():
    dets = [Detection("face", (10, 10, 60, 60), 0.9, "m"), Detection("face", (40, 40, 90, 90), 0.8, "m")]
    merged = masks_for(dets, FaceMaskConfig(feather=0, padding=0, dilate=0), (100, 100))
    assert len(merged) == 1 and np.asarray(merged[0])[50, 50] == 255 and np.asarray(merged[0])[20, 80] == 0
    apart = masks_for(dets, FaceMaskConfig(feather=0, padding=0, dilate=0, merge=False), (100, 100))
    assert len(apart) == 2 and np.asarray(apart[0])[85, 85] == 0 and np.asarray(apart[1])[85, 85] == 255
    assert masks_for([], FaceMaskConfig(), (100, 100)) == []


def test_filters_confidence_area_and_top_k():
    dets = [Detection("face", (0, 0, 10, 10), 0.9, "m"), Detection("face", (0, 0, 50, 50), 0.6, "m"),
            Detection("face", (0, 0, 90, 90), 0.2, "m"), Detection("face", (0, 0, 30, 30), 0.8, "m")]
    size = (100, 100)
    assert [d.score for d in select(dets, FaceMaskConfig(min_confidence=0.5), size)] == [0.6, 0.8, 0.9]
    assert [d.score for d in select(dets, FaceMaskConfig(min_confidence=0.5, min_area_ratio=0.05), size)] == \
        [0.6, 0.8]
    assert [d.score for d in select(dets, FaceMaskConfig(min_confidence=0.0, max_area_ratio=0.5), size)] == \
        [0.6, 0.8, 0.9]
    assert [d.score for d in select(dets, FaceMaskConfig(min_confidence=0.5, top_k=1, rank_by="confidence"),
                                    size)] == [0.9]


def test_user_masks_painted_on_transparency_or_as_grey():
    rgba = Image.new("RGBA", (40, 20), (255, 255, 255, 0))
    rgba.paste((255, 255, 255, 255), (0, 0, 10, 10))
    m = np.asarray(user_mask(rgba, (80, 40)))
    assert m.shape == (40, 80) and m[5, 5] == 255 and m[30, 60] == 0
    grey = Image.new("L", (80, 40), 0)
    assert np.asarray(user_mask(grey, (80, 40))).max() == 0


# ---------------------------------------------------------------------- the stage


def _run(tmp_path, name: str, image: Image.Image, extra: str = "", mask: Image.Image | None = None,
         stages=None):
    cfg = config_mod.load(write_config(tmp_path, extra + "\n[upscale]\nenabled = false\n"))
    src = cfg.paths.inbox / name
    image.save(src)
    if mask is not None:
        mask.save(cfg.paths.inbox / (src.stem + ".mask.png"))
    out, manifest = run_one(cfg, src, stages or [AutoMaskStage()])
    return out.archive, manifest["stages"][0]


def test_stage_writes_masks_detections_and_manifest(tmp_path):
    archive, entry = _run(tmp_path, "astronaut.png", Image.open(DATA / "astronaut.png"))
    assert entry["status"] == "done" and entry["reason"] == "1 face, 0 hands"
    assert entry["outputs"] == ["10-mask-face.png", "10-detections.png"]
    mask = Image.open(archive / "10-mask-face.png")
    assert mask.mode == "L" and mask.size == (512, 512)
    (det,) = entry["details"]["detections"]
    assert det["kind"] == "face" and det["model"].startswith("face-") and det["score"] > 0.85
    assert 0.02 < det["area_ratio"] < 0.06
    shipped = {m["name"]: m["sha256"] for m in entry["models"]}
    assert shipped["face-short"] == hashlib.sha256(SHIPPED["short"].read_bytes()).hexdigest()
    assert np.asarray(mask)[120, 224] == 255 and np.asarray(mask)[450, 450] == 0
    assert Image.open(archive / "10-detections.png").size == (512, 512)


def test_stage_with_nothing_found_says_so(tmp_path):
    _, entry = _run(tmp_path, "sky.png", Image.new("RGB", (300, 200), (90, 140, 220)))
    assert entry["reason"] == "no faces or hands found" and entry["outputs"] == ["10-detections.png"]


def test_user_mask_replace_skips_detection(tmp_path):
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (10, 10, 60, 60))
    archive, entry = _run(tmp_path, "astro.png", Image.open(DATA / "astronaut.png"),
                          '[automask]\nuser_mask = "replace"\n', mask=mask)
    assert entry["outputs"] == ["10-mask-user.png", "10-detections.png"]
    assert entry["details"]["detections"] == []
    assert np.asarray(Image.open(archive / "10-mask-user.png"))[30, 30] == 255
    assert (archive / "00-sidecar-mask.png").exists()


def test_contact_sheet_shows_original_and_detections_labelled(tmp_path):
    from stages.contact import ContactSheetStage

    archive, _ = _run(tmp_path, "astronaut.png", Image.open(DATA / "astronaut.png"),
                      stages=[AutoMaskStage(), ContactSheetStage()])
    manifest = json.loads((archive / "manifest.json").read_text())
    contact = manifest["stages"][1]
    assert contact["name"] == "contact" and contact["outputs"] == ["99-contact.jpg"]
    assert contact["reason"] == "2 panels"
    sheet = Image.open(archive / "99-contact.jpg")
    assert sheet.format == "JPEG" and sheet.height > 384 and 2 * 384 < sheet.width < 2 * 384 + 60
