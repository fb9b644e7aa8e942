"""Auto-mask: MediaPipe on real photographs, and the mask maths on their own."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from automask.detect import (
    DETAIL,
    SHIPPED,
    Detection,
    Detector,
    DetectorSettings,
    detail,
    loose_around,
    nms,
    spans,
    tiles,
)
from automask.found import containment, iou
from automask.mask import COLOURS, box_mask, draw_detections, masks_for, select, user_mask
from daemon import config as config_mod
from stages.automask import AutoMaskStage, FaceMaskConfig, HandMaskConfig, select_faces
from tests.conftest import DATA, manifest_of, run_one, write_config


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
    """A 2400 px canvas with the astronaut's face at 1/6 of its size: tiles find what the whole view misses.  A
    face only tiles found is labelled so, and the stage keeps it when the face landmark model sees a face there,
    as it does here; the same box on the plain canvas beside it is no face to that model."""
    from automask.face_mesh import FaceMesh
    from automask.found import IN_TILES

    face = Image.open(DATA / "astronaut.png").crop((150, 40, 300, 190))
    canvas = Image.new("RGB", (2400, 1600), (120, 130, 140))
    canvas.paste(face, (1700, 1200))
    dets = faces(detector.detect(canvas))
    assert len(dets) == 1 and dets[0].label == IN_TILES
    cx, cy = centre(dets[0].box)
    assert 1700 < cx < 1850 and 1200 < cy < 1350
    mesh = FaceMesh()
    x0, y0, x1, y1 = dets[0].box
    beside = dataclasses.replace(dets[0], box=(x0 - 300, y0, x1 - 300, y1), landmarks=[])
    assert mesh.confirmed(canvas, [dets[0], beside], 0.5) == [dets[0]]
    mesh.close()


def test_a_sharpened_enlargements_flag_star_is_no_hand(detector, monkeypatch):
    """An upscaler's output is large and sharp: the astronaut enlarged 4× and sharpened (unsharp mask), searched at
    full resolution as a picture with detail there is (``detail`` made to say so), is searched in tiles, where a star
    of the flag behind her looks like a hand and a second look finds it again (0.65).  The landmark model on the crop
    the find's own joints give is not fooled (0.09): no hand, and her face is still found.  (Real hands that only
    tiles find stay: ``test_automask_dev``.)"""
    from PIL import ImageFilter

    at_full_resolution(monkeypatch)
    image = Image.open(DATA / "astronaut.png").convert("RGB")
    big = image.resize((2048, 2048), Image.Resampling.LANCZOS).filter(ImageFilter.UnsharpMask(4, 150, 2))
    found = detector.detect(big)
    assert detector.searched_size == big.size
    assert [d for d in found if d.kind == "hand"] == []
    assert len(faces(found)) == 1


def test_a_dark_picture_is_searched_brightened_to_white_and_a_well_exposed_one_as_it_is():
    """An underexposed picture is searched with its brightest tones (the top 0.1 % of its pixels) scaled up to
    white, every channel alike; a picture that reaches three quarters of white already is searched as it is, and so
    is a black one — and a small bright face on a dull backdrop keeps the picture's own tones (clipping the brightest
    0.5 % whitened the face, and it was lost)."""
    from automask.detect import exposed

    photo = Image.open(DATA / "astronaut.png").convert("RGB")
    dark = Image.eval(photo, lambda v: v * 3 // 10)
    lit = exposed(dark)
    top = np.quantile(np.asarray(lit).max(axis=2), 0.999)
    assert 250 <= top <= 255 and np.asarray(lit).max() == 255
    before, after = np.asarray(dark, dtype=np.float64), np.asarray(lit, dtype=np.float64)
    unclipped = (after < 255).all(axis=2) & (before > 20).all(axis=2)
    gains = after[unclipped] / before[unclipped]
    assert np.ptp(gains) < 0.1 and 3.0 < gains.mean() < 3.6  # one gain for every channel: hues stay
    assert exposed(photo) is photo
    black = Image.new("RGB", (64, 64))
    assert exposed(black) is black
    canvas = Image.new("RGB", (2400, 1600), (120, 130, 140))
    canvas.paste(photo.crop((150, 40, 300, 190)), (1700, 1200))
    assert exposed(canvas) is canvas


def test_a_dark_colour_picture_is_searched_brightened_and_a_grey_one_on_its_own_stretched_tones():
    """What the searches see: a colour picture at 3/10 of its brightness, brightened to white; a grey one as dark as
    it is (its hands are searched on its tones stretched, ``grey_views``: brightened as well, the development
    photos' grey copies kept 54 of their 78 hands, not 58)."""
    seen = []
    d = Detector(DetectorSettings(hands=False))
    d._faces_in = lambda rgb, whole_view, f, views: seen.append(np.asarray(rgb).max()) or []
    try:
        for name in ("astronaut.png", "camera.png"):
            d.detect(Image.eval(Image.open(DATA / name).convert("RGB"), lambda v: v * 3 // 10))
    finally:
        d.close()
    assert seen[0] == 255 and seen[1] <= 255 * 3 // 10


def test_a_grey_photos_hands_are_found_and_its_coat_pocket_is_not_taken_for_one(detector):
    """The camera man's gloved hands: a grey picture, whose hands the palm detector scores far lower than in
    colour (none was found before grey pictures had thresholds of their own).  His left glove, at 512 px and on
    copies enlarged 2×, 4× and 8× (the same count at every size), and never the coat below it: the lowered
    thresholds' finds on his coat are not hands to the landmark model.  (The glove on the camera, half hidden,
    is not found: the landmark model does not see a hand in it either.)"""
    from automask.detect import is_grey

    im = Image.open(DATA / "camera.png").convert("RGB")
    assert is_grey(im) and not is_grey(Image.open(DATA / "astronaut.png").convert("RGB"))
    left, coat, pocket = (205, 222), (240, 276), (148, 316)  # by eye, in the 512 px photo

    def near(hands, point, f):
        return [d for d in hands if abs(centre(d.box)[0] / f - point[0]) < 30 and abs(centre(d.box)[1] / f
                                                                                    - point[1]) < 30]
    for f in (1, 2, 4, 8):
        big = im.resize((512 * f, 512 * f), Image.Resampling.LANCZOS) if f > 1 else im
        hands = [d for d in detector.detect(big) if d.kind == "hand" and d.score >= 0.3]
        assert len(hands) == 1 and near(hands, left, f), (f, hands)
        assert not near(hands, coat, f) and not near(hands, pocket, f)
    # A colour photo on a wide grey backdrop is not grey: its own thresholds stay.
    frame = Image.new("RGB", (1024, 1024), (128, 128, 128))
    frame.paste(Image.open(DATA / "astronaut.png").convert("RGB").resize((200, 200)), (400, 400))
    assert not is_grey(frame)


def test_a_less_sure_face_is_kept_when_the_landmark_model_sees_one():
    """A face scored under [automask.face].min_confidence (as a face turned down or away is) but at least 0.3
    is kept when the face landmark model sees a face in it; the same score on the shuttle model is not, and
    nothing under 0.3 is looked at."""
    from automask.face_mesh import CONFIRM_FROM, FaceMesh

    image = Image.open(DATA / "astronaut.png").convert("RGB")
    mesh = FaceMesh()
    face = Detection("face", (174, 70, 276, 172), 0.4, "face-full")
    shuttle = Detection("face", (370, 60, 450, 140), 0.4, "face-full")
    sure = Detection("face", (370, 300, 450, 380), 0.9, "face-full")
    faint = dataclasses.replace(face, score=CONFIRM_FROM - 0.05)
    assert mesh.confirmed(image, [face, shuttle, sure, faint], 0.5) == [face, sure]
    assert mesh.confirmed(image, [face], 0.35) == [face]
    # A less sure box set off a face already kept (the landmark model sees that face in it) is not another face.
    off = Detection("face", (224, 120, 364, 260), 0.4, "face-full", [(203, 97), (247, 97), (224, 125), (223, 148)])
    kept = dataclasses.replace(face, score=0.9)
    assert mesh.confirmed(image, [kept, off], 0.5) == [kept]
    mesh.close()


def test_a_face_box_between_two_faces_over_much_of_each_is_neither():
    """Two faces side by side, and an unsure box over the gap between them and a third of each (the short-range
    model's, on a group photo enlarged 4×): the landmark model sees a face in it, but it is neither face."""
    from automask.face_mesh import BETWEEN, MIN_PRESENCE, FaceMesh, pixels_of

    face = Image.open(DATA / "astronaut.png").convert("RGB").crop((164, 60, 286, 182)).resize((120, 120))
    canvas = Image.new("RGB", (400, 240), (90, 90, 90))
    for x in (40, 180):
        canvas.paste(face, (x, 60))
    left = Detection("face", (40, 60, 160, 180), 0.9, "face-full")
    right = Detection("face", (180, 60, 300, 180), 0.45, "face-full")  # judged, and kept, first
    between = Detection("face", (110, 50, 230, 190), 0.41, "face-short")
    assert all(containment(between.box, d.box) >= BETWEEN for d in (left, right))
    mesh = FaceMesh()
    assert mesh.landmarks(pixels_of(canvas), between)[1] >= MIN_PRESENCE
    assert mesh.confirmed(canvas, [left, right, between], 0.5) == [left, right]
    # With the right face found by nobody, the box is over one kept face only: judged as before, the face the
    # landmark model sees in it is kept.
    assert mesh.confirmed(canvas, [left, between], 0.5) == [left, between]
    mesh.close()


def test_a_large_face_on_a_grey_picture_is_kept_only_when_the_landmark_model_sees_one(detector):
    """On a grey picture the short-range model can see a face of hundreds of px in plain texture: such a face,
    however sure, is kept only when the face landmark model sees a face in it.  The detector labels a grey
    picture's faces so — but a sure one that a person's pose has there too, as her face is to hers; a face under
    40 px is too small for the landmark model to judge and is kept."""
    from automask.face_mesh import FaceMesh
    from automask.found import GREY_PICTURE

    grey = ImageOps.grayscale(Image.open(DATA / "astronaut.png")).convert("RGB")
    (posed,) = faces(detector.detect(grey))
    assert posed.label == ""
    without_poses = Detector(DetectorSettings(poses=False))
    try:
        (face,) = faces(without_poses.detect(grey))
    finally:
        without_poses.close()
    assert face.label == GREY_PICTURE
    assert all(d.label == "" for d in detector.detect(Image.open(DATA / "astronaut.png")))  # in colour: none
    mesh = FaceMesh()
    plain = Detection("face", (280, 240, 500, 460), 0.95, "face-short", label=GREY_PICTURE)  # her suit
    small = Detection("face", (400, 400, 430, 430), 0.9, "face-full", label=GREY_PICTURE)
    assert mesh.confirmed(grey, [face, plain, small], 0.5) == [face, small]
    assert mesh.confirmed(grey, [dataclasses.replace(plain, label="")], 0.5) != []  # unlabelled: not judged
    mesh.close()


def test_a_face_box_holding_a_far_smaller_one_is_judged_and_only_one_of_them_stays():
    """A face box over three times the size of a face inside it is judged by the face landmark model: a box of
    330 px around the astronaut's 102 px face is no face to it, and her face stays; her face's own box holding
    a 30 px "face" on her eye is a face, and the eye goes as a part of it."""
    from automask.face_mesh import FaceMesh
    from automask.found import HOLDS_FACE

    image = Image.open(DATA / "astronaut.png").convert("RGB")
    mesh = FaceMesh()
    face = Detection("face", (174, 70, 276, 172), 0.93, "face-full")
    loose = Detection("face", (60, -44, 390, 286), 0.9, "face-short", label=HOLDS_FACE)
    assert mesh.confirmed(image, [face, loose], 0.5) == [face]
    eye = Detection("face", (190, 95, 220, 125), 0.8, "face-full")
    holder = dataclasses.replace(face, label=HOLDS_FACE)
    assert mesh.confirmed(image, [holder, eye], 0.5) == [holder]
    mesh.close()
    # Merging keeps both for the judge; without the landmark model (box masks) the stage takes them as one
    # face, the larger box as sure as the surer, as merging did before.
    assert sorted(d.box for d in nms([loose, face], 0.4)) == sorted([loose.box, face.box])
    (one,) = select_faces([face, loose], FaceMaskConfig(), image.size, image, None)
    assert one.box == loose.box and one.score == face.score


def test_the_stage_keeps_a_less_sure_face_the_landmark_model_confirms_only_as_configured(tmp_path):
    """The astronaut's face scores about 0.93: with min_confidence 0.95 it is kept because the face landmark
    model sees a face there; not with confirm_from at 0.95 too, nor with box masks (which load no landmark
    model).  A confirm_from out of range is named."""
    image = Image.open(DATA / "astronaut.png")
    for folder in ("confirmed", "off", "box"):
        (tmp_path / folder).mkdir()
    _, entry = _run(tmp_path / "confirmed", "a.png", image, "[automask.face]\nmin_confidence = 0.95\n")
    assert entry.details.counts["face"] == 1
    _, entry = _run(tmp_path / "off", "a.png", image, "[automask.face]\nmin_confidence = 0.95\nconfirm_from = 0.95\n")
    assert entry.details.counts["face"] == 0
    _, entry = _run(tmp_path / "box", "a.png", image, '[automask.face]\nmin_confidence = 0.95\nshape = "box"\n')
    assert entry.details.counts["face"] == 0
    with pytest.raises(config_mod.ConfigError, match=r"\[automask.face\]\.confirm_from must be"):
        config_mod.load(write_config(tmp_path, "[automask.face]\nconfirm_from = 2\n"))


def test_toned_photos_are_searched_as_grey_ones_and_a_grey_astronaut_has_no_hand(detector):
    """A sepia or cyan-toned print has one hue: it is searched as the grey photo it is — a faded one (blacks
    lifted) finds what the grey copy finds: the camera man's left glove, not his coat below it — while a colour
    photo whose colours are few (skin on black) stays a colour photo.  On the astronaut turned grey, the lowered
    thresholds' finds (the shuttle model, the flag) are not hands to the landmark model and are dropped: she
    shows none."""
    from automask.detect import is_grey

    grey = Image.open(DATA / "camera.png").convert("L")
    as_grey = [d for d in detector.detect(grey.convert("RGB")) if d.score >= 0.3]
    for white in ((255, 230, 190), (200, 235, 255)):
        toned = ImageOps.colorize(grey, (20, 10, 0), white)
        assert is_grey(toned), white
        found = [d for d in detector.detect(toned) if d.score >= 0.3]
        hands = [d for d in found if d.kind == "hand"]
        assert len(hands) == 1 and abs(centre(hands[0].box)[0] - 205) < 30, (white, hands)
        assert len(found) == len(as_grey), (white, found, as_grey)
        assert all(max(iou(d.box, g.box) for g in as_grey if g.kind == d.kind) > 0.8 for d in found), white
    skin_on_black = Image.new("RGB", (256, 256), (0, 0, 0))
    skin_on_black.paste((224, 172, 140), (60, 60, 200, 200))
    skin_on_black.paste((40, 90, 200), (0, 220, 256, 256))  # and a blue stripe: two hues
    assert not is_grey(skin_on_black)
    astronaut = ImageOps.grayscale(Image.open(DATA / "astronaut.png")).convert("RGB")
    assert is_grey(astronaut)
    assert [d for d in detector.detect(astronaut) if d.kind == "hand" and d.score >= 0.3] == []


def test_a_grey_close_up_keeps_no_hand_on_its_face(detector):
    """A small grey close-up of a face: the palm detector's best places lie on the face, and the landmark model can
    be sure of a hand there (the camera man's face, 112 and 128 px wide: 0.84 and 0.9, on his cheek).  A hand mostly
    inside a sure face's box, on a grey picture, is that face."""
    from automask.detect import on_a_face
    from automask.found import containment

    face = Image.open(DATA / "camera.png").convert("RGB").crop((192, 113, 284, 206))
    for width in (112, 128):
        grey = ImageOps.grayscale(face.resize((width, round(face.height * width / face.width)),
                                              Image.Resampling.LANCZOS)).convert("RGB")
        found = [d for d in detector.detect(grey) if d.score >= 0.3]
        faces = [d for d in found if d.kind == "face" and d.score >= 0.75]
        assert len(faces) == 1, found
        assert not any(d.kind == "hand" and containment(d.box, faces[0].box) >= 0.7 for d in found), found
    # The rule itself: mostly inside a sure face larger than the hand, and only then.
    sure = Detection("face", (0, 0, 100, 100), 0.8, "face-short")
    hand = Detection("hand", (10, 40, 40, 75), 0.9, "hand")
    assert on_a_face(hand, [sure, hand])
    assert not on_a_face(hand, [dataclasses.replace(sure, score=0.6), hand])  # a fist the face model was unsure of
    assert not on_a_face(dataclasses.replace(hand, box=(80, 40, 120, 75)), [sure])  # half of it outside
    assert not on_a_face(dataclasses.replace(hand, box=(-10, -10, 110, 110)), [sure])  # larger than the face


def test_a_small_face_far_away_is_not_lost_in_a_false_box_around_it(tmp_path):
    """The astronaut 240 px wide on a 1024² frame of noise: the short-range model boxes hundreds of px of noise
    around her 48 px face, and merged with such a box her face was lost in grey, while in colour a box of her
    suit was kept beside it.  Kept apart and judged by the face landmark model, only her face stays."""
    rng = np.random.default_rng(0)
    frame = Image.fromarray(np.clip(rng.normal(0, 12, (1024, 1024, 3)) + (150, 140, 120), 0, 255).astype("uint8"))
    frame.paste(Image.open(DATA / "astronaut.png").convert("RGB").resize((240, 240), Image.Resampling.LANCZOS),
                (300, 300))
    for look, image in (("colour", frame), ("grey", ImageOps.grayscale(frame))):
        (tmp_path / look).mkdir()
        _, entry = _run(tmp_path / look, "far.png", image)
        (face,) = [d for d in entry.details.detections if d.kind == "face"]  # her face at (405, 357), 48 px
        assert abs(centre(face.box)[0] - 405) < 15 and abs(centre(face.box)[1] - 357) < 15, (look, face.box)
        assert face.box[2] - face.box[0] < 100, (look, face.box)


def test_an_enlarged_copy_finds_what_the_original_finds(detector):
    """A 4× enlarged photo holds nothing its photo does not: it is searched at its photo's size (``_searched``), not in
    tiles that see blur and fabric at a face's size; the one real face is found, where the photo has it."""
    im = Image.open(DATA / "astronaut.png").convert("RGB")
    big = im.resize((2048, 2048), Image.Resampling.LANCZOS)
    small_faces, big_faces = faces(detector.detect(im)), faces(detector.detect(big))
    assert detector.searched_size == im.size
    assert len(small_faces) == len(big_faces) == 1
    # (Both face models box her face at 0.92: either box may come out the surer after the Lanczos round trip.)
    assert iou(small_faces[0].box, tuple(v / 4 for v in big_faces[0].box)) > 0.6
    assert not [d for d in detector.detect(big) if d.kind == "hand" and d.score >= 0.3]


def _grid_of_photos() -> Image.Image:
    """The astronaut and the camera man, 512² each, in turn on a 4 × 4 grid: 2048² with detail at full resolution."""
    photos = [Image.open(DATA / name).convert("RGB") for name in ("astronaut.png", "camera.png")]
    grid = Image.new("RGB", (2048, 2048))
    for i in range(16):
        grid.paste(photos[i % 2], (512 * (i % 4), 512 * (i // 4)))
    return grid


def at_full_resolution(monkeypatch) -> None:
    """Large pictures searched at full resolution, as one with detail there is (``detail`` made to say so): an
    enlarged copy is otherwise searched at the size it was enlarged from (``Detector._searched``), and the tiles'
    rules a test holds would not be reached."""
    import automask.detect

    monkeypatch.setattr(automask.detect, "detail", lambda picture: 1.0)


def test_detail_tells_a_photo_from_the_same_photo_enlarged():
    """``detail``: the photos, and a grid of them 2048 px wide, have as much in their finest octave as ``DETAIL`` or
    more; the same photos enlarged 2–4× (Lanczos, bicubic) have less, and a plain picture none."""
    assert detail(_grid_of_photos()) >= DETAIL
    for im in (Image.open(DATA / name).convert("RGB") for name in ("astronaut.png", "camera.png")):
        assert detail(im) >= DETAIL
        for k, how in ((2, Image.Resampling.LANCZOS), (3, Image.Resampling.BICUBIC), (4, Image.Resampling.LANCZOS)):
            assert detail(im.resize((im.width * k, im.height * k), how)) < DETAIL, (im.size, k)
    assert detail(Image.new("RGB", (3000, 2000), (90, 120, 60))) == 0.0
    assert detail(Image.new("RGB", (3000, 40), (90, 120, 60))) >= DETAIL  # too narrow to tell: searched as it is


def test_a_picture_enlarged_from_a_smaller_one_is_searched_at_that_size(detector):
    """The camera man enlarged 4× (2048²) is searched at 512², the size he was enlarged from, and what is found
    there is given in the enlarged picture's pixels: his face where the photo has it, four times as large.  A picture
    as large made of the photos themselves, with detail at full resolution, is searched as it is; so is one no larger
    than ``tile_above``, which is not measured."""
    im = Image.open(DATA / "camera.png").convert("RGB")
    big = im.resize((2048, 2048), Image.Resampling.LANCZOS)
    photo = faces(detector.detect(im))
    found = faces(detector.detect(big))
    assert detector.searched_size == (512, 512)
    assert len(photo) == len(found) == 1
    assert iou(tuple(4 * v for v in photo[0].box), found[0].box) > 0.9
    for mode in ("RGBA", "L"):  # measured and halved on an RGB copy
        assert len(faces(detector.detect(big.convert(mode)))) == 1 and detector.searched_size == (512, 512)
    grid = _grid_of_photos()
    assert detector._searched(grid) == (grid, 1.0)
    assert detector._searched(im.resize((1536, 1536), Image.Resampling.LANCZOS))[1] == 1.0


def test_the_stage_says_when_it_searched_a_picture_at_the_size_it_was_enlarged_from(tmp_path):
    from structlog.testing import capture_logs

    big = Image.open(DATA / "camera.png").convert("RGB").resize((2048, 2048), Image.Resampling.LANCZOS)
    with capture_logs() as logs:
        _, entry = _run(tmp_path, "camera.png", big)
    said = [e for e in logs if e["event"] == "searched at the size it was enlarged from"]
    assert entry.status == "done" and len(said) == 1
    assert said[0]["searched"] == "512×512" and said[0]["size"] == "2048×2048"


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
    assert all(end - start >= 768 // 4 for start, end in zip(xs[1:], ends[:-1], strict=False)), (xs, ends)


def test_nms_keeps_the_most_confident_of_overlapping_boxes_per_kind():
    a = Detection("face", (0, 0, 100, 100), 0.9, "m")
    b = Detection("face", (10, 10, 105, 105), 0.7, "m")
    c = Detection("hand", (10, 10, 105, 105), 0.6, "m")
    inner = Detection("face", (30, 30, 70, 70), 0.95, "m")
    assert nms([a, b, c], 0.4) == [a, c]
    # One box mostly inside a larger one is a part of it (a finger a tile saw inside a whole hand): the
    # larger box stays, with the better score.
    (merged,) = nms([a, inner], 0.4)
    assert merged.box == a.box and merged.score == inner.score
    finger = Detection("hand", (40, 40, 55, 60), 0.95, "m")
    (merged,) = nms([dataclasses.replace(a, kind="hand"), finger], 0.4)
    assert merged.box == a.box and merged.score == finger.score
    # … but a face over three times smaller is not a part of a face box around it: both stay, and the stage
    # has the face landmark model judge the larger (a false box around a small real face is common).
    small, around = Detection("face", (40, 40, 65, 65), 0.95, "face-full"), dataclasses.replace(a, model="face-short")
    assert nms([around, small], 0.4) == [small, around]
    # A YOLO model's face box is not judged by that photo model: what lies in it merges as before.
    (merged,) = nms([dataclasses.replace(a, model="face_yolov8n.pt"), small], 0.4)
    assert merged.box == a.box and merged.model == "face_yolov8n.pt"
    # One large face boxed by two models well apart (IoU 0.39: the astronaut at 4096 px): one face, the surer
    # box; two faces side by side, overlapping less, stay two; two hands so placed stay two.
    full, short = Detection("face", (1376, 540, 2208, 1372), 0.92, "face-full"), \
        Detection("face", (1728, 599, 2444, 1315), 0.53, "face-short")
    assert nms([short, full], 0.4) == [full]
    beside = Detection("face", (2000, 540, 2832, 1372), 0.8, "face-full")
    assert len(nms([full, beside], 0.4)) == 2
    assert len(nms([dataclasses.replace(full, kind="hand"), dataclasses.replace(short, kind="hand")], 0.4)) == 2



def test_a_loose_box_around_faces_neither_takes_a_sure_face_s_place_nor_merges_two_faces():
    # Measured on the development photos pasted small on a frame of noise: the short-range model, unsure, boxes
    # a 54 px face 146 px wide (2.7 times: not "holding" it); as the larger box it took the face's place and its
    # score, and the stage then masked the torso.  An unsure face box is no face's better outline.
    face = Detection("face", (358, 320, 412, 374), 0.85, "face-full")
    loose = Detection("face", (317, 307, 463, 453), 0.34, "face-short")
    assert nms([loose, face], 0.4) == [face]
    # Two children's heads boxed as one (142 px, 0.33 and 0.61 sure) beside each child's own box: the box
    # around both is neither child, nor is either child a part of it, so long as it is less sure than one of them
    # (surer than both — not seen — they merge into it, as they did before): kept apart, or (less sure than the
    # full-range box it lies loose around: ``loose_around``) dropped.
    left = Detection("face", (319, 306, 381, 368), 0.73, "face-full")
    right = Detection("face", (392, 318, 443, 369), 0.84, "face-full")
    for score in (0.33, 0.61, 0.8):
        both = Detection("face", (309, 289, 451, 431), score, "face-short")
        boxes = [d.box for d in nms([both, left, right], 0.4)]
        assert left.box in boxes and right.box in boxes and set(boxes) <= {both.box, left.box, right.box}
        assert spans(both, [both, left, right]) and not spans(left, [both, left, right])
        # … and the stage drops it: judged by the face landmark model, or without it, for it spans two faces.
        kept = select_faces([both, left, right], FaceMaskConfig(), (1024, 1024), Image.new("RGB", (1024, 1024)),
                            None)
        assert sorted(d.box for d in kept) == sorted([left.box, right.box])
    # One face boxed twice, side by side with another: no box spans two faces apart, and the pair merges.
    twice = Detection("face", (394, 320, 445, 371), 0.6, "face-full")
    assert not spans(left, [left, right, twice]) and len(nms([left, right, twice], 0.4)) == 2


def test_a_face_keeps_its_tight_box_not_the_short_range_model_s_loose_one_around_it():
    # A group photo's 51 px face (PASCAL VOC, measured): the full-range model boxes it tightly, 0.92 sure; the
    # short-range model boxes it 99 px wide, 0.65 sure.  Twice its size (a box "holds" a face from three times),
    # the larger box took the face's place, and the mask took in her hair and her neighbours' faces.
    tight = Detection("face", (190, 112, 241, 163), 0.92, "face-full")
    loose = Detection("face", (163, 78, 262, 177), 0.65, "face-short")
    assert [d.box for d in nms([loose, tight], 0.4)] == [tight.box]
    assert loose_around(loose, tight) and not loose_around(tight, loose)
    # The short-range box surer than the full-range one inside it (a close-up whose inner part the full-range
    # model boxed) is the face, as before; and a hand's larger box still takes in a finger's.
    sure = dataclasses.replace(loose, score=0.95)
    assert [d.box for d in nms([sure, tight], 0.4)] == [sure.box]
    hand = Detection("hand", loose.box, 0.65, "hand")
    finger = Detection("hand", tight.box, 0.92, "hand")
    assert [(d.box, d.score) for d in nms([hand, finger], 0.4)] == [(hand.box, 0.92)]
    # A tilted face in a photo enlarged 4× by the upscaler (face-api's sample1 at 512 px, measured): the whole
    # view's short-range box of it lies off the face, over her hair, 0.52 sure; a tile's short-range box is tight,
    # 0.97.  The unsure box is no better outline of the tile's face than of the full-range model's.
    tile = Detection("face", (1576, 273, 1754, 451), 0.97, "face-short")
    off = Detection("face", (1594, 158, 1902, 466), 0.52, "face-short")
    assert [d.box for d in nms([off, tile], 0.4)] == [tile.box]
    # Sure of itself (a close-up boxed whole, a tile's sure box of a part of it inside), it stays the face.
    whole = dataclasses.replace(off, score=0.9)
    assert [(d.box, d.score) for d in nms([whole, tile], 0.4)] == [(whole.box, 0.97)]


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


def spread_hand(scale: float = 1.0, dx: float = 0.0) -> Detection:
    """21 landmarks of an open right hand, palm to the camera, fingers spread (MediaPipe's order)."""
    pts = [(100, 190), (72, 175), (55, 152), (42, 132), (30, 114),   # wrist, thumb
           (80, 120), (70, 90), (64, 70), (60, 52),                  # index
           (100, 115), (100, 82), (100, 60), (100, 40),              # middle
           (120, 118), (130, 88), (136, 68), (140, 50),              # ring
           (138, 128), (154, 104), (164, 88), (172, 72)]             # little
    pts = [(x * scale + dx, y * scale) for x, y in pts]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return Detection("hand", (min(xs), min(ys), max(xs), max(ys)), 0.95, "hand", pts, "Right")


def test_hand_mask_follows_the_fingers_and_leaves_the_gaps_between_them():
    hand = spread_hand()
    s = HandMaskConfig(padding=2, dilate=0, feather=0)
    m = np.asarray(masks_for([hand], s, (220, 220))[0])
    for x, y in hand.landmarks:  # every joint and fingertip is inside, with the flesh beyond the tip
        assert m[round(y), round(x)] == 255
    assert m[40 - 8, 100] == 255  # past the middle fingertip
    assert m[150, 100] == 255  # the palm
    # Between the spread fingertips and around the wrist is background: the box would repaint it.
    for x, y in [(82, 50), (120, 42), (156, 60), (40, 190), (165, 185)]:
        assert m[y, x] == 0, (x, y)
    box = np.asarray(masks_for([hand], dataclasses.replace(s, shape="box"), (220, 220))[0])
    assert (m > 0).sum() < 0.75 * (box > 0).sum()
    # It scales with the hand: the same hand at half size still has its gaps, and covers its joints.
    small = np.asarray(masks_for([spread_hand(0.5)], s, (220, 220))[0])
    assert small[25, 50] == 255 and small[round(50 * 0.5) - 1, round(120 * 0.5)] == 0


def test_hand_mask_grows_with_dilation_and_erodes_away():
    hand = spread_hand()
    grown = np.asarray(masks_for([hand], HandMaskConfig(padding=8, dilate=6, feather=0), (220, 220))[0])
    tight = np.asarray(masks_for([hand], HandMaskConfig(padding=0, dilate=0, feather=0), (220, 220))[0])
    assert (grown > 0).sum() > (tight > 0).sum() and ((tight > 0) <= (grown > 0)).all()
    gone = masks_for([hand], HandMaskConfig(padding=0, dilate=-40, feather=0), (220, 220))[0]
    assert np.asarray(gone).max() == 0
    # A hand without landmarks (a user's hand detector giving boxes) falls back to its box.
    boxed = Detection("hand", hand.box, 0.9, "hand")
    assert np.asarray(masks_for([boxed], HandMaskConfig(padding=0, dilate=0, feather=0), (220, 220))[0])[60, 82] == 255


def test_detections_picture_outlines_what_each_mask_will_repaint():
    image = Image.new("RGB", (220, 220), (40, 40, 40))
    hand = spread_hand()
    mask = masks_for([hand], HandMaskConfig(padding=2, dilate=0, feather=0), (220, 220))[0]
    out = np.asarray(draw_detections(image, [hand], [], [("hand", mask)]))
    inside = np.asarray(mask) >= 128
    edge = inside & ~np.roll(inside, 1, axis=1)  # the mask's left edges
    ys, xs = np.nonzero(edge)
    hand_blue = np.array(COLOURS["hand"])
    on_outline = [(out[y, x] == hand_blue).all() or (out[y, x - 1] == hand_blue).all()
                  for y, x in zip(ys, xs, strict=True)]
    assert np.mean(on_outline) > 0.9
    assert (out[110, 10] == (40, 40, 40)).all()  # far from the hand: the picture itself


def test_a_dropped_find_is_drawn_grey_and_labelled_as_dropped_never_as_a_bare_box():
    image = Image.new("RGB", (300, 200), (40, 40, 40))
    dropped = Detection("hand", (120.0, 100.0, 180.0, 160.0), 0.31, "hand")
    out = np.asarray(draw_detections(image, [], [dropped]))
    assert np.all(out[100, 120:181] == (160, 160, 160))  # the box's top edge, thin grey
    above = out[70:100, 120:300].astype(int)  # the text above it, "hand 0.31 dropped": grey on black
    assert (above[..., 0] > 100).sum() > 40
    assert np.all((above[..., 0] == above[..., 1]) & (above[..., 1] == above[..., 2]))  # no colour: not a find
    assert np.array_equal(np.asarray(draw_detections(image, [], [])), np.asarray(image))


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
         stages=None, models=None):
    cfg = config_mod.load(write_config(tmp_path, extra + "\n[upscale]\nenabled = false\n", models=models))
    src = cfg.paths.inbox / name
    image.save(src)
    if mask is not None:
        mask.save(cfg.paths.inbox / (src.stem + ".mask.png"))
    out, manifest = run_one(cfg, src, stages or [AutoMaskStage()])
    return out.archive, manifest.stages[0]


def test_stage_writes_masks_detections_and_manifest(tmp_path):
    archive, entry = _run(tmp_path, "astronaut.png", Image.open(DATA / "astronaut.png"))
    assert entry.status == "done" and entry.reason == "1 face, 0 hands"
    assert entry.outputs == ["10-mask-face.png", "10-detections.png"]
    mask = Image.open(archive / "10-mask-face.png")
    assert mask.mode == "L" and mask.size == (512, 512)
    (det,) = entry.details.detections
    assert det.kind == "face" and det.model.startswith("face-") and det.score > 0.85
    assert 0.02 < det.area_ratio < 0.06
    shipped = {m.name: m.sha256 for m in entry.models}
    assert shipped["face-short"] == hashlib.sha256(SHIPPED["short"].read_bytes()).hexdigest()
    from automask.pose import LANDMARKS
    assert shipped["pose-landmarks"] == hashlib.sha256(LANDMARKS.read_bytes()).hexdigest()  # each model it ran
    assert np.asarray(mask)[120, 224] == 255 and np.asarray(mask)[450, 450] == 0
    assert Image.open(archive / "10-detections.png").size == (512, 512)


def test_face_mask_is_the_face_oval_and_parts_are_narrow_masks_of_their_own(tmp_path):
    image = Image.open(DATA / "astronaut.png")
    (tmp_path / "parts").mkdir()
    (tmp_path / "box").mkdir()
    archive, entry = _run(tmp_path / "parts", "astronaut.png", image, '[automask.face]\nparts = ["eyes", "mouth"]\n')
    assert entry.outputs == ["10-mask-face.png", "10-mask-face-eyes.png", "10-mask-face-mouth.png",
                                "10-detections.png"]
    assert [m.name for m in entry.models][-1] == "face-landmarks"
    oval = np.asarray(Image.open(archive / "10-mask-face.png")) >= 128
    box_archive, _ = _run(tmp_path / "box", "astronaut.png", image, '[automask.face]\nshape = "box"\n')
    box = np.asarray(Image.open(box_archive / "10-mask-face.png")) >= 128
    # Her face (measured by eye): forehead, both cheeks, chin inside; the hair above her temples and the
    # background beside her jaw are in the box but not in the oval.
    for x, y in [(224, 85), (195, 130), (250, 130), (222, 172)]:
        assert oval[y, x] and box[y, x], (x, y)
    for x, y in [(176, 62), (272, 62), (172, 180), (275, 180)]:
        assert box[y, x] and not oval[y, x], (x, y)
    assert oval.sum() < 0.85 * box.sum()
    eyes = np.asarray(Image.open(archive / "10-mask-face-eyes.png")) >= 128
    mouth = np.asarray(Image.open(archive / "10-mask-face-mouth.png")) >= 128
    assert eyes[97, 203] and eyes[97, 247] and not eyes[148, 223]  # both eyes, not the mouth
    assert mouth[148, 223] and not mouth[97, 203] and not mouth[97, 247]
    assert eyes.sum() < 0.35 * oval.sum() and mouth.sum() < 0.2 * oval.sum()
    assert not (eyes & ~oval).sum() > 0.05 * eyes.sum()  # the parts lie within the face
    assert [m.kind for m in entry.products.masks] == ["face", "face-eyes", "face-mouth"]


def test_stage_with_nothing_found_says_so(tmp_path):
    _, entry = _run(tmp_path, "sky.png", Image.new("RGB", (300, 200), (90, 140, 220)))
    assert entry.reason == "no faces or hands found" and entry.outputs == ["10-detections.png"]


def test_user_mask_replace_skips_detection(tmp_path):
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (10, 10, 60, 60))
    archive, entry = _run(tmp_path, "astro.png", Image.open(DATA / "astronaut.png"),
                          '[automask]\nuser_mask = "replace"\n', mask=mask)
    assert entry.outputs == ["10-mask-user.png", "10-detections.png"]
    assert entry.details.detections == []
    assert np.asarray(Image.open(archive / "10-mask-user.png"))[30, 30] == 255
    assert (archive / "00-sidecar-mask.png").exists()


class _Given:
    """A YOLO detector whose finds are given (``automask.yolo``'s own are tested against ultralytics in
    ``test_yolo.py``): what the stage does with them, without a model's numbers."""

    def __init__(self, path, finds):
        self.path, self.finds = path, finds

    def find(self, image, kind, confidence, classes=()):
        return [dataclasses.replace(d, kind=kind, model=self.path.name) for d in self.finds if d.score >= confidence]


def test_a_person_model_bounds_where_hands_are_kept(tmp_path, monkeypatch):
    import stages.automask

    person = Detection("person", (100.0, 100.0, 300.0, 500.0), 0.9, "")
    # The same person as a -seg model outlines them: a body, and an arm held out to the right.
    body = [(170.0, 100.0), (230.0, 100.0), (230.0, 280.0), (300.0, 280.0), (300.0, 320.0), (230.0, 320.0),
            (230.0, 500.0), (170.0, 500.0)]
    outlined = dataclasses.replace(person, outlines={"segm": [body]})
    hands = [Detection("hand", (180.0, 280.0, 220.0, 320.0), 0.8, ""),  # on the body
             Detection("hand", (290.0, 300.0, 330.0, 340.0), 0.8, ""),  # at the arm's end, half past it
             Detection("hand", (110.0, 420.0, 150.0, 460.0), 0.8, ""),  # in the box, beside the body
             Detection("hand", (420.0, 60.0, 460.0, 100.0), 0.8, "")]  # nobody there
    people = {"person_yolov8n.pt": [person], "person_yolov8n-seg.pt": [outlined], "hand_yolov8n.pt": hands,
              "nobody.pt": []}
    monkeypatch.setattr(stages.automask, "held_yolo", lambda path, device: _Given(path, people[path.name]))
    models = tmp_path / "models" / "adetailer"
    models.mkdir(parents=True)
    for name in people:
        (models / name).write_bytes(name.encode())  # (never opened: held_yolo gives their finds)
    picture = Image.new("RGB", (512, 512), (128, 128, 128))

    def kept_hands(run: str, with_people: str):
        (tmp_path / run).mkdir()
        entries = '{model = "hand_yolov8n.pt", kind = "hand"}' + (
            f', {{model = "{with_people}", kind = "person"}}' if with_people else "")
        _, entry = _run(tmp_path / run, "people.png", picture, f'[automask]\nmediapipe = []\nyolo = [{entries}]\n'
                        '[automask.hand]\nshape = "box"\n', models=tmp_path / "models")
        return sorted(tuple(d.box) for d in entry.details.detections if d.kind == "hand"), entry.details.dropped

    assert kept_hands("alone", "") == (sorted(h.box for h in hands), 0)
    # With a person model, the hand nobody is at is dropped (and counted so); a bbox model's person is their box
    # and a tenth more (an arm held out), a -seg model's their outline and half a hand more.
    assert kept_hands("boxed", "person_yolov8n.pt") == (sorted(h.box for h in hands[:3]), 1)
    assert kept_hands("outlined", "person_yolov8n-seg.pt") == (sorted(h.box for h in hands[:2]), 2)
    # The detections picture shows the bound: the person's outline, or box, thin, in a colour of its own.
    from automask.mask import PERSON

    for run, on, off in (("outlined", (170, 200), (100, 200)), ("boxed", (100, 200), (170, 200))):
        (drawn,) = (tmp_path / run / "archive").glob("*/10-detections.png")
        pixels = Image.open(drawn).convert("RGB")
        assert pixels.getpixel(on) == PERSON and pixels.getpixel(off) != PERSON, run
    # A person model that finds nobody bounds nothing: a close-up of a hand shows no person.
    assert kept_hands("nobody", "nobody.pt") == (sorted(h.box for h in hands), 0)


def test_a_face_mediapipe_and_a_yolo_model_both_find_is_one_face(tmp_path, monkeypatch):
    import stages.automask

    models = tmp_path / "models" / "adetailer"
    models.mkdir(parents=True)
    (models / "face_yolov8n.pt").write_bytes(b"face")  # (never opened: held_yolo gives its finds)
    image = Image.open(DATA / "astronaut.png")
    (tmp_path / "alone").mkdir()
    _, alone = _run(tmp_path / "alone", "astronaut.png", image)
    (face,) = alone.details.detections
    x0, y0, x1, y1 = face.box
    finds = [Detection("face", (x0 + 4, y0 - 3, x1 + 4, y1 - 3), 0.99, ""),  # her face, boxed a little apart
             Detection("face", (400.0, 380.0, 440.0, 420.0), 0.95, "")]  # and a face nobody else sees
    monkeypatch.setattr(stages.automask, "held_yolo", lambda path, device: _Given(path, finds))
    (tmp_path / "both").mkdir()
    _, both = _run(tmp_path / "both", "astronaut.png", image, '[automask]\nyolo = [{model = "face_yolov8n.pt", '
                   'kind = "face"}]\n', models=tmp_path / "models")
    # Her face once (the surer find's), the other face beside it; both detectors' models named.
    assert sorted((d.model, tuple(d.box)) for d in both.details.detections) == \
        sorted(("face_yolov8n.pt", d.box) for d in finds)
    models_named = {m.name for m in both.models}
    assert "face_yolov8n.pt" in models_named and "face-short" in models_named


def test_contact_sheet_shows_original_and_detections_labelled(tmp_path):
    from stages.contact import ContactSheetStage

    archive, _ = _run(tmp_path, "astronaut.png", Image.open(DATA / "astronaut.png"),
                      stages=[AutoMaskStage(), ContactSheetStage()])
    manifest = manifest_of(archive)
    contact = manifest.stages[1]
    assert contact.name == "contact" and contact.outputs == ["99-contact.jpg"]
    assert contact.reason == "2 panels"
    sheet = Image.open(archive / "99-contact.jpg")
    assert sheet.format == "JPEG" and sheet.height > 384 and 2 * 384 < sheet.width < 2 * 384 + 60


def test_a_false_face_keeps_its_box_and_the_oval_is_only_drawn_on_a_face():
    from automask.face_mesh import FaceMesh

    mesh = FaceMesh()
    image = Image.open(DATA / "camera.png").convert("RGB")
    sky = Detection("face", (380, 20, 460, 100), 0.6, "face-short")  # an empty patch of sky
    assert mesh.outlines(image, sky) == {}
    (face,) = faces(Detector(DetectorSettings()).detect(image))
    outlines = mesh.outlines(image, face)
    oval = np.array(outlines["oval"][0])
    assert len(outlines["eyes"]) == 2 and len(outlines["mouth"]) == 1
    # The oval lies around the face the detector found (his face, in profile, at about (236, 160)).
    assert abs(oval[:, 0].mean() - 236) < 25 and abs(oval[:, 1].mean() - 160) < 25
    s = FaceMaskConfig(padding=0, dilate=0, feather=0)
    sky_mask = np.asarray(masks_for([sky], s, image.size)[0])
    assert sky_mask[60, 420] == 255 and sky_mask[21, 381] == 255  # the box, corners included
    mesh.close()


def test_without_the_face_landmark_model_faces_keep_their_boxes(tmp_path, monkeypatch):
    import automask.face_mesh

    def broken(*args, **kwargs):
        raise RuntimeError("cannot read face_landmark.tflite")

    monkeypatch.setattr(automask.face_mesh, "FaceMesh", broken)
    archive, entry = _run(tmp_path, "astronaut.png", Image.open(DATA / "astronaut.png"),
                          '[automask.face]\nparts = ["eyes"]\n')
    assert entry.status == "done"
    assert entry.outputs == ["10-mask-face.png", "10-detections.png"]  # no eyes without landmarks
    assert "face-landmarks" not in [m.name for m in entry.models]
    mask = np.asarray(Image.open(archive / "10-mask-face.png")) >= 128
    assert mask[62, 176] and mask[62, 272]  # the box's top corners (hair), which the oval leaves out


def test_a_face_find_on_a_hand_is_dropped_only_when_the_landmark_model_sees_no_face_there():
    from automask.mask import faces_on_hands

    joints = [(100 + 3 * i, 100 + 8 * i) for i in range(21)]
    hand = Detection("hand", (80, 80, 280, 300), 0.99, "hand", joints)
    knuckles = Detection("face", (120, 150, 200, 230), 0.51, "face-short")  # the landmark model saw no face
    behind = Detection("face", (120, 150, 200, 230), 0.9, "face-short",
                       outlines={"oval": [[(120, 150), (200, 150), (160, 230)]]})  # a face it did see
    beside = Detection("face", (300, 100, 380, 180), 0.6, "face-short")
    boxed = Detection("hand", (80, 80, 280, 300), 0.99, "hand")  # no joints: not the landmarker's
    assert faces_on_hands([knuckles, behind, beside], [hand]) == [knuckles]
    assert faces_on_hands([knuckles], [boxed]) == []
    bigger = Detection("face", (60, 60, 300, 320), 0.51, "face-short")  # a face larger than the hand
    assert faces_on_hands([bigger], [hand]) == []


def test_a_tiny_hand_beside_a_large_face_is_not_a_hand():
    from automask.detect import dwarfed

    face = Detection("face", (1000, 1000, 2000, 2000), 0.95, "face-short")
    hair = Detection("hand", (1900, 700, 2000, 830), 0.9, "hand")  # at the face's edge, an eighth its size
    far = Detection("hand", (3500, 3500, 3600, 3630), 0.9, "hand")  # small too, but nowhere near the face
    own = Detection("hand", (1900, 1800, 2600, 2600), 0.9, "hand")  # the person's own hand, face-sized
    assert dwarfed(hair, [face]) and not dwarfed(far, [face]) and not dwarfed(own, [face])
    assert not dwarfed(hair, []) and not dwarfed(face, [face])


def test_a_hand_only_tiles_found_mostly_inside_a_sure_face_is_that_face(detector, monkeypatch):
    # A colour group photo enlarged 4×: a tile saw a woman's nose as a hand (0.94), inside her face's box (0.87)
    # and over a quarter its size, so no speck; kept, the face would be repainted as a hand.  A hand only tiles
    # found that lies mostly inside a sure face is that face, as on grey pictures; a hand at the face's corner, and
    # one the whole view found too, stay.
    face = Detection("face", (1000, 1000, 2000, 2000), 0.87, "face-short")
    nose = Detection("hand", (1350, 1400, 1550, 1670), 0.94, "hand")
    own = Detection("hand", (1800, 1900, 2600, 2600), 0.9, "hand")
    monkeypatch.setattr(detector, "_beside", lambda *args, **kwargs: [face])
    monkeypatch.setattr(detector, "_poses", None)
    monkeypatch.setattr(detector, "settings",
                        dataclasses.replace(detector.settings, body_regions=False, hands_behind=False))
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).resize((3000, 3000))
    for whole, kept in (([], {face.box, own.box}), ([dataclasses.replace(nose, score=0.8)], {face.box, own.box,
                                                                                              nose.box})):
        monkeypatch.setattr(detector, "_hands_in", lambda *args, w=whole, **kwargs: (list(w), [nose, own]))
        assert {d.box for d in detector._detect(picture)} == kept


def test_body_regions_lie_below_and_beside_each_face_and_neighbours_are_searched_once():
    from automask.detect import body_regions

    a = Detection("face", (100, 100, 140, 150), 0.9, "face-short")  # 40 × 50
    (region,) = body_regions(1000, 1000, [a])
    assert region == (20, 100, 220, 450)  # 2.5 widths each side of its centre, down 6 heights below it
    beside = Detection("face", (150, 110, 190, 160), 0.9, "face-short")  # the next person along
    far = Detection("face", (700, 100, 740, 150), 0.9, "face-short")
    regions = body_regions(1000, 1000, [a, beside, far])
    assert len(regions) == 2 and regions[0][0] == 20 and regions[0][2] == 270
    assert body_regions(1000, 420, [a])[0][3] == 420  # cut to the image
    assert body_regions(600, 600, [a]) == []  # over half the image: the whole view saw it as closely


def test_the_crop_a_hand_gives_is_turned_to_its_fingers_twice_its_palm_and_shifted_towards_them():
    from automask.hand_joints import crop_of

    # An upright hand: the wrist below the knuckles' middle (x = 90), the palm joints 62 px wide, 75 tall.
    joints = np.zeros((21, 2))
    joints[:] = (100, 200)
    joints[0] = (90, 260)                                # wrist
    joints[[1, 2, 3]] = [(75, 250), (70, 235), (68, 222)]  # the thumb's first joints
    for i, x in zip((5, 9, 13, 17), (70, 90, 110, 130), strict=True):
        joints[i] = (x, 200)                              # knuckles
        joints[i + 1] = (x, 185)                          # the fingers' first joints
    centre, side, angle = crop_of(joints)
    assert angle == pytest.approx(0.0, abs=1e-6)
    assert side == pytest.approx(2 * 75)                 # twice the palm joints' extent (wrist 260 to 185)
    assert centre == pytest.approx(((68 + 130) / 2, (185 + 260) / 2 - 0.1 * side))  # a tenth towards the fingers
    # Turned a quarter (fingers pointing right, image y down): the same crop, turned with it.
    turned = np.stack([400 - (joints[:, 1] - 200), 300 + (joints[:, 0] - 100)], axis=1)
    c2, s2, a2 = crop_of(turned)
    assert a2 == pytest.approx(np.pi / 2) and s2 == pytest.approx(side)
    assert c2 == pytest.approx((400 - (centre[1] - 200), 300 + (centre[0] - 100)))


def test_a_hand_found_again_is_the_same_hand_only_where_its_joints_lie_where_the_first_ones_did():
    from automask.detect import _same_hand

    joints = [(100 + 5 * (i % 5), 100 + 10 * (i // 5)) for i in range(21)]  # 20 × 40 px
    first = Detection("hand", (90, 90, 130, 150), 0.9, "hand", joints)
    nudged = Detection("hand", (92, 92, 132, 152), 0.9, "hand", [(x + 4, y + 3) for x, y in joints])
    behind = Detection("hand", (110, 90, 150, 150), 0.9, "hand", [(x + 20, y - 5) for x, y in joints])
    assert _same_hand(nudged, first) and not _same_hand(behind, first)


def test_a_hand_bundle_without_its_landmark_model_is_refused_by_name(tmp_path):
    from automask.hand_joints import HandJoints

    bad = tmp_path / "hands.task"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="hands.task: not a hand landmarker bundle"):
        HandJoints(bad)
    # A zip without the palm detector (the palm places of a grey picture) is named too, with what it lacks.
    import zipfile

    from automask.palms import Palms

    lacking = tmp_path / "landmarks-only.task"
    with zipfile.ZipFile(lacking, "w") as z:
        z.writestr("hand_landmarks_detector.tflite", b"")
    with pytest.raises(ValueError, match="landmarks-only.task: .*hand_detector.tflite"):
        Palms(lacking)


def test_a_palms_crop_is_mediapipes_upright_around_the_fingers_and_the_anchors_are_the_models():
    # The hand's crop from a palm (MediaPipe's hand landmarker graph): 2.6 times the palm's box, a square, moved
    # half the box's height from the box's middle towards the fingers, turned so that the wrist is below them.
    import math

    from automask.palms import Palms, _palm

    box = (100.0, 100.0, 140.0, 150.0)  # 40 wide, 50 high
    up = np.array([[120.0, 150.0], [0, 0], [120.0, 110.0]] + [[0, 0]] * 4)  # wrist below the middle finger
    palm = _palm(0.5, box, up)
    assert palm.angle == pytest.approx(0.0) and palm.side == pytest.approx(130.0)
    assert palm.centre == pytest.approx((120.0, 100.0))
    right = np.array([[100.0, 125.0], [0, 0], [140.0, 125.0]] + [[0, 0]] * 4)  # fingers to the right
    palm = _palm(0.5, box, right)
    assert palm.angle == pytest.approx(math.pi / 2) and palm.centre == pytest.approx((145.0, 125.0))
    palms = Palms(SHIPPED["hand"])
    assert len(palms._anchors) == palms._scores_out.get_partial_shape()[1].get_length()  # one anchor a score
    # A picture without hands still has best places, ranked, distinct and above the floor asked for.
    best = palms.best(Image.open(DATA / "astronaut.png").convert("RGB"), 5, 0.01)
    assert 0 < len(best) <= 5 and all(b.score >= 0.01 for b in best)
    assert [b.score for b in best] == sorted((b.score for b in best), reverse=True)


def test_the_face_tiles_full_range_model_finds_what_mediapipe_finds_with_it(tmp_path):
    # The face tiles run the full-range model through OpenVINO, decoded as MediaPipe's graph decodes it: on crops
    # of the repository's photos — square, wide and tall (letterboxed), shrunk and enlarged on the way to the
    # model's 192² — it gives the faces the Tasks API gives, at the same places and with the same scores.
    from automask.face_tiles import FullRangeFaces

    mp = Detector(DetectorSettings(face_models=("full",), hands=False, min_confidence=0.3))
    ours = FullRangeFaces.of(SHIPPED["full"], 0.3)
    compared = 0
    try:
        for name in ("astronaut.png", "camera.png"):
            photo = Image.open(DATA / name).convert("RGB")
            for box in [(0, 0, 512, 512), (100, 0, 400, 512), (0, 50, 512, 300), (150, 20, 330, 200)]:
                for f in (1.0, 0.6):
                    crop = photo.crop(box)
                    crop = crop.resize((round(crop.width * f), round(crop.height * f)), Image.Resampling.LANCZOS)
                    theirs, found = mp._pass(crop, hands=False), ours.detect(crop)
                    assert len(found) == len(theirs), (name, box, f)
                    for t, o in zip(sorted(theirs, key=lambda d: d.box), sorted(found, key=lambda d: d.box),
                                    strict=True):
                        assert o.model == "face-full" and o.score == pytest.approx(t.score, abs=0.02)
                        assert np.allclose(o.box, t.box, atol=1), (name, box, f, o.box, t.box)
                        assert np.allclose(o.landmarks, t.landmarks, atol=2)
                        compared += 1
        assert compared >= 14  # each crop holds its photo's face
    finally:
        mp.close()
        ours.close()
    # MediaPipe's weighted suppression: boxes overlapping the surest become one, at their score-weighted mean
    # place, with its score; a box of no area stays one of its own.
    from automask.face_tiles import _weighted

    boxes = np.array([[0.2, 0.2, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1], [0.22, 0.2, 0.42, 0.4], [0.6, 0.6, 0.8, 0.8]])
    merged = list(_weighted(boxes, np.array([0.9, 0.95, 0.3, 0.5]), np.zeros((4, 6, 2))))
    assert [score for _, score, _ in merged] == [0.95, 0.9, 0.5]
    assert np.allclose(merged[1][0], [0.2 + 0.02 * 0.25, 0.2, 0.4 + 0.02 * 0.25, 0.4])
    # Another file set as the full-range model (here the short-range one) is left to MediaPipe.
    assert ours is not None and FullRangeFaces.of(SHIPPED["short"], 0.3) is None
    (tmp_path / "not-a-model.tflite").write_bytes(b"no model")
    assert FullRangeFaces.of(tmp_path / "not-a-model.tflite", 0.3) is None
    d = Detector(DetectorSettings(face_model_paths={"full": SHIPPED["short"]}, hands=False))
    try:
        assert d._full_tiles is None
        assert d.detect(Image.open(DATA / "astronaut.png")) is not None  # its tiles searched by MediaPipe
    finally:
        d.close()


def test_a_landmark_models_crop_samples_the_picture_where_its_affine_says_from_a_picture_or_its_pixels():
    # The crop the landmark models see (OpenCV) is the one its affine maps back: the same pixels PIL's affine
    # transform samples there, to a level; and a picture's pixels, made once for many looks, give the same crop
    # to a level (of a picture only the part the square covers is read, black beyond its edges as in the pixels').
    import math

    from automask.face_mesh import rotated_crop

    photo = Image.open(DATA / "astronaut.png").convert("RGB")
    for centre, side_, angle in [((250.3, 180.7), 150.0, 0.4), ((256, 256), 300.0, -2.0), ((300, 120), 60.0, 0.0)]:
        crop, affine = rotated_crop(photo, centre, side_, angle, 224)
        assert crop.shape == (224, 224, 3)
        from_pixels, same = rotated_crop(np.asarray(photo), centre, side_, angle, 224)
        assert same == affine and np.abs(crop.astype(int) - from_pixels).max() <= 1
        pil = np.asarray(photo.transform((224, 224), Image.Transform.AFFINE, affine, Image.Resampling.BILINEAR))
        assert np.abs(crop.astype(int) - pil).max() <= 1
        a, b, c, d, e, f = affine  # the crop's middle is the centre asked for, its up turned by the angle
        assert (a * 112 + b * 112 + c, d * 112 + e * 112 + f) == pytest.approx(centre)
        assert math.atan2(d, a) == pytest.approx(angle)
    assert rotated_crop(photo.convert("L"), (256, 256), 100.0, 0.0, 64)[0].shape == (64, 64, 3)
    edge = rotated_crop(photo, (20.5, 490.2), 200.0, 0.8, 224)[0]  # partly beyond the picture: black there
    assert np.abs(edge.astype(int) - rotated_crop(np.asarray(photo), (20.5, 490.2), 200.0, 0.8, 224)[0]).max() <= 1
    assert (edge == 0).all(axis=2).mean() > 0.3


def test_a_ninths_palm_places_are_in_the_pictures_pixels_and_its_hands_kept_only_when_sure():
    # The palm detector looks at each ninth of the picture (three sevenths of each side, at either end and in the
    # middle) on its own, in its 192² input as it would a picture; a place is read in the ninth's pixels and moved
    # into the picture's.  A ninth's places are taken at ``REGION_SETTLED``: a hand the landmark model flags 0.8 is
    # not one of them.
    from automask.detect import NINTH, _hand_at, _NinthPlaces
    from automask.palms import Palm

    crops = []

    class Palms:  # one palm at the middle of whatever it is shown, surer the later it is shown
        def best(self, rgb, count, floor):
            crops.append(rgb.size)
            i = len(crops)
            w, h = rgb.size
            return [Palm(i / 10, (w / 2 - 20, h / 2 - 20, w / 2 + 20, h / 2 + 20), (w / 2, h / 2), 104.0, 0.0)]

    picture = Image.new("RGB", (1400, 700))
    ninths = _NinthPlaces(picture, 2)
    ninths.rank_all(picture, Palms())
    places = ninths.items
    cw, ch = round(NINTH * 1400), round(NINTH * 700)
    assert (cw, ch) == (600, 300) and crops == [(cw, ch)] * 9
    starts = [(x, y) for x in (0, 400, 800) for y in (0, 200, 400)]  # the order they are ranked
    assert [p.centre for p in places] == [(x + cw / 2, y + ch / 2) for x, y in reversed(starts)]  # surest first
    assert all(p.box == (p.centre[0] - 20, p.centre[1] - 20, p.centre[0] + 20, p.centre[1] + 20) for p in places)
    # Two ninths side by side overlap a third of one: the first and the last start two thirds of a ninth apart twice.
    assert max(p.centre[0] for p in places) - min(p.centre[0] for p in places) == 2 * (cw - cw / 3)

    class Joints:  # a hand at every place, flagged 0.8 on the crop its joints give
        def look(self, rgb, centre, side, angle):
            return np.array([(centre[0] + dx, centre[1] + dy) for dx in (-20, 0, 20) for dy in (-20, 0, 20)]), 0.9, 1.0

        def settle(self, rgb, joints):
            return joints, 0.8

    assert _hand_at(np.asarray(picture), places[0], Joints()) is not None  # a whole view's place: kept at 0.7
    ninths.look(Joints())
    assert ninths.hands() == []


def test_the_ninths_give_the_same_places_whichever_thread_ranks_them():
    # Both threads rank the ninths, each taking the next free one with a palm detector of its own: the places are
    # those one thread ranking every ninth gives, in the same order, and they are taken only once every ninth is
    # ranked (the hands thread waits for the ninth the other is still ranking).
    import threading
    import time

    from automask.detect import _NinthPlaces
    from automask.palms import Palm

    picture = Image.new("RGB", (700, 700))

    class Palms:  # two palms a ninth, at the same place in each; the other thread's detector is slow
        def __init__(self, wait=0.0):
            self.wait, self.seen, self.started = wait, [], threading.Event()

        def best(self, rgb, count, floor):
            self.started.set()
            time.sleep(self.wait)
            self.seen.append(rgb.size)
            return [Palm(s, (10 + s * 100, 10, 50 + s * 100, 50), (30 + s * 100, 30), 104.0, 0.0) for s in (0.3, 0.6)]

    alone = _NinthPlaces(picture, 2)
    alone.rank_all(picture, Palms())
    mine, theirs = Palms(), Palms(wait=0.05)
    shared = _NinthPlaces(picture, 2)
    other = threading.Thread(target=shared.rank_some, args=(theirs,))
    other.start()
    theirs.started.wait()  # the other thread has taken the first ninth
    shared.rank_all(picture, mine)
    assert shared.ranked.is_set() and len(mine.seen) + len(theirs.seen) == 9 and theirs.seen and mine.seen
    other.join()
    assert [(p.score, p.box) for p in shared.items] == [(p.score, p.box) for p in alone.items]
    assert len(shared.items) > 2


def test_the_palm_detectors_best_places_give_the_same_hands_whichever_thread_looks():
    # Both threads look at the palm detector's best places (the whole view's, and a grey picture's skin-toned
    # copy's), each taking the next free one: the hands kept are those one thread looking at every place in turn
    # keeps — a place the landmark model is not sure of is none, a place on a hand a better place gave is none,
    # and a place on a hand found before is not looked at.  The skin-toned copy's places are looked at on the grey
    # picture itself; and the hands are read once the other thread's last look is done too.
    import threading
    import time

    from automask.detect import SKIN_PALMS, Detector, _Places
    from automask.palms import Palm

    places = [Palm(0.9 - i / 20, (100.0 * i, 0.0, 100.0 * i + 60, 60.0), (100.0 * i + 30, 30.0), 60.0, 0.0)
              for i in range(SKIN_PALMS - 1)]
    places.insert(2, Palm(0.8, (20.0, 10.0, 40.0, 30.0), (30.0, 20.0), 40.0, 0.0))  # on the first place's hand
    unsure = {3, 6}  # the places whose hand flag is low
    found = [Detection("hand", (410.0, 0.0, 470.0, 60.0), 0.9, "hand")]  # on place 5's centre
    looked_at: list[tuple] = []

    class Palms:
        def best(self, rgb, count, floor):
            return places[:count]

    class Joints:  # the landmark model, slower on some places than others (``pause``: on every place)
        def __init__(self, pause: float = 0.0):
            self.pause = pause

        def look(self, rgb, centre, side, angle):
            assert (np.asarray(rgb) == 0).all()  # the grey picture's pixels, not the skin-toned copy's
            looked_at.append(centre)
            i = next(k for k, p in enumerate(places) if p.centre == centre)
            time.sleep(self.pause or 0.002 * (i % 3))
            joints = np.array([(centre[0] + dx, centre[1] + dy) for dx in (-20, 0, 20) for dy in range(-20, 21, 6)])
            return joints, (0.2 if i in unsure else 0.95), 1.0

        def settle(self, rgb, joints):
            return joints, 0.9

    picture = Image.new("RGB", (900, 100))
    for before in ([], found):
        alone = Detector._best_palms(None, picture, before, Palms(), Joints(), len(places))
        # the place on the first place's hand, the unsure ones (and the one on the hand found before): none
        assert len(alone) == len(places) - 1 - len(unsure) - len(before)
        for pause in (0.0, 0.03):  # (the other thread slow: its last look outlasts this thread's)
            looked_at.clear()
            shared = _Places()
            shared.rank(Image.new("RGB", picture.size, (255, 199, 158)), picture, Palms(), SKIN_PALMS, before)
            other = threading.Thread(target=shared.look, args=(Joints(pause),))
            other.start()
            shared.look(Joints())
            shared.looked()
            assert [(d.box, d.score) for d in shared.hands()] == [(d.box, d.score) for d in alone]
            other.join()
            assert (places[5].centre in looked_at) == (not before)
            assert len(looked_at) == len(set(looked_at))  # none twice
            # (the place on the first place's hand is looked at only when taken before that hand was known)
            assert len(looked_at) >= len(places) - len(before) - 1
        looked_at.clear()  # one thread alone: that place is passed over
        alone_too = _Places()
        alone_too.rank(picture, picture, Palms(), SKIN_PALMS, before)
        alone_too.look(Joints())
        assert [d.box for d in alone_too.hands()] == [d.box for d in alone]
        assert places[2].centre not in looked_at
        assert len(looked_at) == len(places) - len(before) - 1


def test_peoples_hands_and_the_hands_behind_are_looked_at_on_both_threads_with_the_same_result(detector,
                                                                                               monkeypatch):
    # Where people's poses put hands, the detector's own thread, once free, looks too (each thread with its own
    # landmark model): the hands kept are those one thread looking at each place in turn keeps — a place on a hand
    # found before is not looked at, a place the model is not sure of is none, a place on a hand an earlier place
    # gave is none.  The hands-behind pass settles each hand on both threads too, each hand's own result kept.
    import threading
    import time

    from automask.detect import SETTLED, _People
    from automask.pose import HandPlace

    places = [HandPlace((100.0 * i + 50, 50.0), 60.0, 0.0, 0.9) for i in range(6)]
    places.insert(3, HandPlace((60.0, 60.0), 60.0, 0.0, 0.9))  # on the first place's hand
    unsure = {4}
    found = [Detection("hand", (520.0, 20.0, 580.0, 80.0), 0.9, "hand")]  # on the last place's centre
    threads: dict[str, set] = {"alone": set(), "shared": set()}

    class Joints:
        def __init__(self, mode: str):
            self.mode = mode

        def look(self, rgb, centre, side, angle):
            joints = np.array([(centre[0] + dx, centre[1] + dy) for dx in (-25, 0, 25) for dy in range(-24, 25, 8)])
            return joints, 0.9, 1.0

        def settle(self, rgb, joints):
            threads[self.mode].add(threading.current_thread().name)
            time.sleep(0.01)  # (long enough for the other thread to take some too)
            joints = np.asarray(joints)
            i = next(k for k, p in enumerate(places) if abs(p.centre[0] - np.mean(joints[:, 0])) < 2)
            return joints + 1, (SETTLED - 0.1 if i in unsure else 0.95)

    monkeypatch.setattr("automask.detect.hand_places", lambda body: places)
    people = _People()
    people.bodies, people.pixels = [object()], np.zeros((100, 700, 3), dtype=np.uint8)
    alone = detector._people(people, found, Joints("alone"))
    monkeypatch.setattr(detector, "_beside_joints", Joints("shared"))
    monkeypatch.setattr(detector, "_helpers", [])
    shared = detector._people(people, found, Joints("shared"), shared=True)
    detector._helped()
    assert [d.box for d in alone] == [d.box for d in shared]
    assert len(alone) == len(places) - 1 - len(unsure) - len(found)
    assert len(threads["alone"]) == 1 and len(threads["shared"]) == 2

    # The hands behind: each hand settled once, on either thread, kept with its own joints.
    hands = [dataclasses.replace(d, score=0.9) for d in alone]
    monkeypatch.setattr(detector, "_joints", Joints("shared"))
    monkeypatch.setattr(detector, "_pass", lambda *args, **kwargs: [])  # nothing behind them
    threads["shared"].clear()
    kept = detector._behind(Image.new("RGB", (700, 100)), hands)
    assert [d.landmarks for d in kept] == [[(x + 1, y + 1) for x, y in d.landmarks] for d in hands]
    assert len(threads["shared"]) == 2


def test_a_look_that_fails_on_one_thread_does_not_leave_the_other_waiting_for_it():
    # The hands thread waits (``looked``) for the places the faces thread took; a look that raises there is done
    # too: the wait ends, the other places' hands are read, and the error is the failing thread's own.
    import threading

    from automask.detect import _Places
    from automask.palms import Palm

    places = [Palm(0.9, (100.0 * i, 0.0, 100.0 * i + 60, 60.0), (100.0 * i + 30, 30.0), 60.0, 0.0) for i in range(4)]
    taken = threading.Event()

    class Palms:
        def best(self, rgb, count, floor):
            return places[:count]

    class Joints:
        def look(self, rgb, centre, side, angle):
            joints = np.array([(centre[0] + dx, centre[1] + dy) for dx in (-20, 0, 20) for dy in range(-20, 21, 6)])
            return joints, 0.95, 1.0

        def settle(self, rgb, joints):
            return joints, 0.9

    class Broken(Joints):
        def look(self, rgb, centre, side, angle):
            taken.set()
            raise RuntimeError("the model failed")

    shared = _Places()
    shared.rank(Image.new("RGB", (500, 100)), Image.new("RGB", (500, 100)), Palms(), len(places))
    errors: list[Exception] = []

    def other():
        try:
            shared.look(Broken())
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other, daemon=True)
    thread.start()
    taken.wait(5)
    shared.look(Joints())
    waiter = threading.Thread(target=shared.looked, daemon=True)  # (a regression must not hang the suite)
    waiter.start()
    waiter.join(5)
    assert not waiter.is_alive()  # the wait ended
    thread.join(5)
    assert [str(e) for e in errors] == ["the model failed"]
    assert len(shared.hands()) == len(places) - 1  # every place but the failed one gave its hand


def test_a_body_regions_hands_are_also_taken_at_its_best_palm_places_when_the_landmark_model_is_sure(detector,
                                                                                                  monkeypatch):
    # In a grey group photo the hand landmarker passes over most hands, even at its lowered thresholds, while its
    # palm detector ranks them among its best few places in a person's body region and the landmark model is
    # sure of them there.  Such a place's hand is kept when the model is sure of it (REGION_SETTLED), and not when
    # it is less sure, when it is a speck beside a face, or when it is a hand found already; a grey region's
    # places are ranked on its skin-toned copy and looked at on its own grey pixels, a colour region's on itself.
    from automask.detect import BODY_SIDE, REGION_PALMS
    from automask.palms import Palm

    region = (100, 200, 612, 712)  # 512 px: searched as it is (BODY_SIDE)
    assert region[2] - region[0] == BODY_SIDE
    face = Detection("face", (300, 120, 400, 220), 0.9, "face-short")
    found = Detection("hand", (500, 600, 560, 660), 0.9, "hand")  # in the picture's pixels
    # Places in the region's pixels: the flag the landmark model gives on the crop each one's joints give.
    places = {(100.0, 100.0): 0.95,            # sure: kept
              (300.0, 100.0): 0.85,            # less sure (a motion-blurred chin was 0.83): none
              (250.0, 20.0): 0.99,             # a speck beside the face (10 px across): none
              (430.0, 430.0): 0.99}            # the hand found already: none
    assert len(places) <= REGION_PALMS
    seen: dict[str, list] = {"ranked": [], "looked": []}

    class Palms:
        def best(self, rgb, count, floor):
            seen["ranked"].append(np.asarray(rgb))
            return [Palm(0.1, (x - 5, y - 5, x + 5, y + 5), (x, y), 40.0, 0.0) for x, y in places][:count]

    class Joints:
        def look(self, pixels, centre, side, angle):
            seen["looked"].append(np.asarray(pixels))
            reach = 2 if centre == (250.0, 20.0) else 25
            joints = np.array([(centre[0] + dx, centre[1] + dy) for dx in (-reach, 0, reach)
                               for dy in np.linspace(-reach, reach, 7)])
            return joints, 0.9, 1.0

        def settle(self, pixels, joints):
            return joints, places[tuple(float(v) for v in np.round(joints.mean(axis=0)))]

    monkeypatch.setattr(detector, "_pass", lambda *args, **kwargs: [])  # the hand landmarker finds nothing
    for name in ("_palms", "_skin_palms"):
        monkeypatch.setattr(detector, name, Palms())
    for name in ("_joints", "_beside_joints"):
        monkeypatch.setattr(detector, name, Joints())
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 256, (800, 800), dtype=np.uint8)).convert("RGB")
    for grey in (True, False):
        seen["ranked"].clear()
        seen["looked"].clear()
        monkeypatch.setattr(detector, "_grey", grey)
        (hand,) = detector._bodies(picture, [region], [face], [found])
        assert centre(hand.box) == pytest.approx((200, 300)) and hand.score == 0.95
        (ranked,) = seen["ranked"]
        assert (ranked[..., 0] != ranked[..., 2]).any() == grey  # the skin-toned copy: red above blue
        assert all((px[..., 0] == px[..., 2]).all() for px in seen["looked"])  # the grey pixels themselves


def test_a_colour_pictures_hands_are_also_taken_at_the_palm_detectors_best_places(detector, monkeypatch):
    # A hand round a glass: the hand landmarker passes over it, its palm detector ranks it first (0.4) and the
    # landmark model is sure of it there (0.99).  The whole view's best places are looked at in colour as in grey:
    # a place's hand is kept when the model is sure of it (PALM_SETTLED), not when less sure, and a place on a
    # hand found already, or a speck (a 64 px astronaut's suit), is not looked at; the gate's one look
    # (``palm_places`` off) takes none.
    from automask.detect import BEST_PALMS, PALM_SETTLED, PALM_SMALLEST
    from automask.palms import Palm
    from stages.gate import JUDGE_SETTINGS

    found = Detection("hand", (480, 480, 560, 560), 0.9, "hand", [(520.0, 520.0)] * 21)
    places = {(100.0, 100.0): PALM_SETTLED, (300.0, 100.0): PALM_SETTLED - 0.01, (520.0, 520.0): 1.0,
              (700.0, 700.0): 1.0}
    speck = (700.0, 700.0)
    looked: list = []

    class Palms:
        def best(self, rgb, count, floor):
            assert count == BEST_PALMS
            return [Palm(0.4, (x - 5, y - 5, x + 5, y + 5), (x, y), PALM_SMALLEST - 1.0 if (x, y) == speck else 40.0,
                         0.0) for x, y in places]

    class Joints:
        def look(self, pixels, centre, side, angle):
            looked.append(centre)
            return np.array([(centre[0] + dx, centre[1] + dy) for dx in (-25, 0, 25)
                             for dy in np.linspace(-25, 25, 7)]), 0.9, 1.0

        def settle(self, pixels, joints):
            return joints, places[tuple(float(v) for v in np.round(joints.mean(axis=0)))]

    monkeypatch.setattr(detector, "_pass", lambda *args, **kwargs: [found] if not kwargs.get("faces", True) else [])
    monkeypatch.setattr(detector, "_palms", Palms())
    monkeypatch.setattr(detector, "_joints", Joints())
    picture = Image.new("RGB", (800, 800), (200, 120, 90))
    hands, _ = detector._hands_in(picture, picture, 1.0, [], best=detector._whole_places(grey=False))
    assert [centre(d.box) for d in hands] == [(520, 520), pytest.approx((100, 100))]
    assert hands[1].score == PALM_SETTLED and hands[1].landmarks
    assert (520.0, 520.0) not in looked and speck not in looked  # the hand found already, the speck
    assert not JUDGE_SETTINGS.palm_places
    monkeypatch.setattr(detector, "settings", dataclasses.replace(detector.settings, palm_places=False))
    assert detector._whole_places(grey=False) is None and detector._whole_places(grey=True) is not None
    assert detector._hands_in(picture, picture, 1.0, [], best=detector._whole_places(grey=False))[0] == [found]


def test_a_hand_the_landmark_model_sees_no_hand_in_on_its_own_crop_is_dropped(detector, monkeypatch):
    # The hand landmarker was sure (0.96) of a hand on a colour photo's neckline; on the crop the find's own joints
    # give, the landmark model flags 0.03 there, where real hands flag 0.19 (dark gloves in a grey photo) to 1.
    # Such a find is no hand; one the model is unsure of but sees (0.3) keeps its joints and stays; a face stays.
    from automask.detect import NOT_A_HAND

    def hand(x, score):
        return Detection("hand", (x, 100, x + 60, 160), score, "hand",
                         [(x + 3.0 * i % 60, 100 + 2.5 * i) for i in range(21)])

    flags = {100: NOT_A_HAND - 0.07, 300: 0.3, 500: NOT_A_HAND}

    class Joints:
        def settle(self, pixels, joints):
            return np.asarray(joints) + 7, flags[round(min(x for x, _ in joints))]

    for name in ("_joints", "_beside_joints"):  # (the hands are settled on both threads)
        monkeypatch.setattr(detector, name, Joints())
    monkeypatch.setattr(detector, "_pass", lambda *args, **kwargs: [])  # nothing behind them
    face = Detection("face", (600, 20, 700, 120), 0.9, "face-short")
    kept = detector._behind(Image.new("RGB", (800, 400), (90, 90, 90)), [hand(100, 0.96), hand(300, 0.9),
                                                                           hand(500, 0.8), face])
    assert [(d.kind, d.box[0]) for d in kept] == [("hand", 300), ("hand", 500), ("face", 600)]
    assert kept[0].landmarks == hand(300, 0.9).landmarks  # unsure: its own joints, not the second look's


def test_a_find_beside_a_hidden_hand_that_settles_on_that_hand_is_not_a_hand_behind_it(detector, monkeypatch):
    # At 4096 px the hands-behind search found a business woman's hand again beside where its joints were painted
    # out: few of the find's joints lay on the paint, and they were not the hidden hand's; on the crop they give, the
    # landmark model settled on that hand again (IoU 0.75 with it).  Such a find is that hand.  A find that settles
    # on joints of its own, however near, is a hand behind it (two thumbs up, IoU 0.71 with the front hand).
    from automask.detect import _hand_box

    front_joints = [(200 + 8.0 * (i % 5), 100 + 10.0 * (i // 5)) for i in range(21)]
    front = Detection("hand", _hand_box(front_joints), 0.99, "hand", front_joints)
    beside = Detection("hand", (250, 80, 330, 160), 0.9, "hand", [(x + 60, y - 15) for x, y in front_joints])
    settles = {}

    class Joints:
        def settle(self, pixels, joints):
            if joints == front_joints:
                return np.asarray(joints), 0.99  # the front hand stays where it is
            return np.asarray(settles["to"]), 0.95

    for name in ("_joints", "_beside_joints"):
        monkeypatch.setattr(detector, name, Joints())
    monkeypatch.setattr(detector, "_pass", lambda *args, **kwargs: [beside])
    picture = Image.new("RGB", (400, 300), (90, 90, 90))
    settles["to"] = [(x + 3, y + 2) for x, y in front_joints]  # the hidden hand's joints again
    assert [d.box for d in detector._behind(picture, [front]) if d.kind == "hand"] == [front.box]
    settles["to"] = [(x + 14, y - 6) for x, y in front_joints]  # its own, a fifth of the hand's size away
    behind = [d for d in detector._behind(picture, [front]) if d.kind == "hand"][1:]
    assert len(behind) == 1 and behind[0].landmarks[0] == (214.0, 94.0)


def test_the_openvino_models_are_not_pinned_to_one_core(detector):
    # The detector's two threads each run OpenVINO models (hand joints, palms, face tiles, poses); pinned, as OpenVINO
    # pins by default, they would share one core and wait for each other.
    detector.detect(ImageOps.grayscale(Image.open(DATA / "camera.png")))  # a grey picture loads the palm models
    models = [detector._joints._compiled, detector._beside_joints._compiled, detector._palms._compiled,
              detector._full_tiles._compiled, *detector._poses.compiled]
    assert all(m.get_property("ENABLE_CPU_PINNING") is False for m in models)
    assert all(m.get_property("INFERENCE_NUM_THREADS") == 1 for m in models)


def test_a_face_model_that_fails_fails_the_search_and_the_detector_still_closes():
    # Faces are searched on the detector's own thread: what goes wrong there reaches the caller (the stage
    # reports it), rather than an image passing on with its faces silently unsearched.
    d = Detector(DetectorSettings())

    class Broken:
        def detect(self, image):
            raise RuntimeError("face model broke")

        def close(self):
            pass

    name, model = d._faces[0]
    d._faces[0] = (name, Broken())
    try:
        with pytest.raises(RuntimeError, match="face model broke"):
            d.detect(Image.open(DATA / "astronaut.png"))
        # A grey picture too: the hands thread, waiting for the skin-toned places the face thread ranks, is not
        # left waiting when that thread fails, before ranking them or after (the search ends with the error, and
        # the next one runs).
        grey = ImageOps.grayscale(Image.open(DATA / "camera.png"))
        with pytest.raises(RuntimeError, match="face model broke"):
            d.detect(grey)
        d._faces[0] = (name, model)

        class BrokenPalms:
            def best(self, rgb, count, floor):
                raise RuntimeError("palm model broke")

            def close(self):
                pass

        palms, d._skin_palms = d._skin_palms, BrokenPalms()
        with pytest.raises(RuntimeError, match="palm model broke"):
            d.detect(grey)
        d._skin_palms = palms
        assert faces(d.detect(grey))
    finally:
        model.close()
        d.close()
    with pytest.raises(RuntimeError, match="shutdown"):  # closed: its thread takes no more work
        d._thread.submit(print)


def test_searches_from_several_threads_at_once_each_get_their_own_picture_s_finds(detector):
    # The gate's detector is shared by jobs on several workers: a grey picture's search and a colour one's at
    # the same time each give what they give alone.
    from concurrent.futures import ThreadPoolExecutor

    astronaut = Image.open(DATA / "astronaut.png").convert("RGB")
    camera = Image.open(DATA / "camera.png").convert("RGB")  # grey: its own thresholds and passes

    def boxes(image):
        return sorted((d.kind, tuple(round(v) for v in d.box)) for d in detector.detect(image))
    alone = [boxes(astronaut), boxes(camera)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(boxes, [astronaut, camera] * 4))
    assert together == alone * 4


def test_a_picture_without_people_has_no_hand_places_and_the_camera_man_has_his():
    from automask.pose import Poses

    rng = np.random.default_rng(3)
    noise = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    poses = Poses()
    try:
        assert poses.hands(noise) == []
        places = poses.hands(Image.open(DATA / "camera.png").convert("RGB"))
    finally:
        poses.close()
    # One person, both hands: his gloved hands hold the camera, right of his face and below it, and each place's
    # crop holds the glove on the camera (about 305, 195).  (The pose model's numbers differ a little from one CPU's
    # kernels to another's: a place's centre moved 9 px between an AVX-512 and an AVX2 CPU.)
    assert len(places) == 2
    assert all(230 <= p.centre[0] <= 360 and 150 <= p.centre[1] <= 260 for p in places)
    assert all(abs(p.centre[0] - 305) < p.side / 2 and abs(p.centre[1] - 195) < p.side / 2 for p in places)


def test_a_hand_where_a_pose_puts_it_is_kept_only_when_the_landmark_model_is_sure_of_it():
    from automask.detect import SETTLED, _hand_of_person
    from automask.pose import HandPlace

    joints = np.array([(100 + i, 100 + (i % 5) * 4) for i in range(21)], dtype=np.float64)

    class Joints:  # the hand landmark model, scripted: its flag on the second look decides
        def __init__(self, flag):
            self.flag = flag

        def look(self, pixels, centre, side, angle):
            return joints, 0.0, 0.9  # however unsure on the pose's looser crop

        def settle(self, pixels, j):
            return joints + 1, self.flag

    place = HandPlace((110.0, 105.0), 60.0, 0.0, 0.9)
    pixels = np.zeros((200, 200, 3), np.uint8)
    kept = _hand_of_person(pixels, place, Joints(SETTLED))
    assert kept is not None and kept.kind == "hand" and kept.label == "Right" and kept.score == SETTLED
    assert kept.landmarks[0] == (101.0, 101.0)
    assert _hand_of_person(pixels, place, Joints(SETTLED - 0.01)) is None


def test_pictures_of_a_pixel_or_a_sliver_are_searched_without_error(detector):
    # A picture of one coloured pixel has one hue (toned, searched as grey); whatever a speck or a sliver gives
    # lies inside it.
    rng = np.random.default_rng(0)
    for w, h in ((1, 1), (2, 1), (3, 500), (500, 3)):
        picture = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert all(0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h for d in detector.detect(picture))


def test_a_face_upside_down_is_found_on_its_head_turned_upright():
    # The astronaut, grey and upside down: the face detectors see no face in the whole picture; her pose puts
    # her head where it is, and upright there the face is found, where it is.
    picture = ImageOps.grayscale(Image.open(DATA / "astronaut.png")).convert("RGB").rotate(180)
    with_poses, without = Detector(DetectorSettings()), Detector(DetectorSettings(poses=False))
    try:
        found = [d for d in with_poses.detect(picture) if d.kind == "face" and d.score >= 0.5]
        assert not [d for d in without.detect(picture) if d.kind == "face" and d.score >= 0.5]
    finally:
        with_poses.close()
        without.close()
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    assert x0 < 512 - 221 < x1 and y0 < 512 - 123 < y1 and x1 - x0 < 160  # her face, turned with the picture


def test_a_heads_crop_levels_the_eyes_and_a_head_without_a_visible_face_has_none():
    from automask.pose import EARS, EYES, NOSE, Person, head

    points = np.zeros((39, 2))
    points[NOSE] = (100, 100)
    points[EYES[0]], points[EYES[1]] = (90, 110), (110, 90)  # the right eye lower: the head tilted 45°
    points[EARS[1]], points[EARS[0]] = (80, 120), (120, 80)
    seen = np.ones(39)
    (cx, cy), side_px, angle = head(Person(0.9, points, seen))
    assert (cx, cy) == (100.0, 100.0) and side_px == pytest.approx(3 * np.hypot(40, 40))
    assert math.degrees(angle) == pytest.approx(-45)  # the crop turned with the head: its eyes level in it
    seen[NOSE] = 0.1  # the back of a head
    assert head(Person(0.9, points, seen)) is None


def test_a_pose_model_that_fails_fails_the_search_and_leaves_no_thread_waiting():
    # People are found by one thread and their heads looked at by the other: a pose model that fails, on a colour
    # picture (found on the hands thread) or a grey one (on the faces thread), ends that search with its error,
    # the other thread is not left waiting, and the next search, with the model back, finds what it found.
    d = Detector(DetectorSettings())

    class BrokenPoses:
        def bodies(self, rgb, pixels=None):
            raise RuntimeError("pose model broke")

        def close(self):
            pass

    astronaut = Image.open(DATA / "astronaut.png").convert("RGB")
    grey = ImageOps.grayscale(Image.open(DATA / "camera.png")).convert("RGB")
    try:
        before = [(x.kind, x.box) for x in d.detect(astronaut)]
        poses, d._poses = d._poses, BrokenPoses()
        for picture in (astronaut, grey):
            with pytest.raises(RuntimeError, match="pose model broke"):
                d.detect(picture)
        d._poses = poses
        assert [(x.kind, x.box) for x in d.detect(astronaut)] == before
    finally:
        d.close()


def test_people_are_looked_for_around_sure_faces_the_whole_pictures_pose_did_not_explain():
    # Largest sure face first; passed over: a face a person found has their nose on, one not sure, one too large
    # for the square around it to be smaller than the picture, one inside a face looked around already; at most
    # PEOPLE_AROUND looks.  Each look goes along the face's own down (eyes → mouth), in the whole view's pixels.
    from automask.detect import PEOPLE_AROUND, _People
    from automask.pose import NOSE, Person

    d = Detector(DetectorSettings())
    calls = []

    class Recorded:
        def around(self, rgb, pixels, face, down=(0.0, 1.0)):
            calls.append((tuple(round(v) for v in face), tuple(round(v, 3) for v in down)))
            return None

        def close(self):
            pass

    def face(x, y, size, score=0.9, keypoints=()):
        return Detection("face", (x, y, x + size, y + size), score, "face-full", list(keypoints))

    people = _People()
    people.pixels = np.zeros((500, 500, 3), np.uint8)  # the whole view of a 1000 px picture (f = 0.5)
    nose = np.zeros((39, 2))
    nose[NOSE] = (55, 55)  # on the first face, in the whole view
    people.bodies = [Person(0.9, nose, np.ones(39))]
    sideways = [(110, 300), (110, 320), (0, 0), (140, 310)]  # eyes above each other, the mouth to the right
    small = [face(50 + 90 * i, 800, 24 - i) for i in range(PEOPLE_AROUND + 2)]  # more than are looked around
    found = [face(100, 100, 20), face(300, 300, 30, keypoints=sideways), face(600, 100, 40, score=0.3),
             face(0, 0, 120), face(305, 305, 10)] + small
    poses, d._poses = d._poses, Recorded()
    try:
        assert d._around_faces(people, Image.new("RGB", (500, 500)), found, 0.5) == []
    finally:
        d._poses = poses
        d.close()
    assert calls[0] == ((150, 150, 165, 165), (1.0, 0.0))  # the largest one looked at, along its own down
    assert [c[0] for c in calls[1:]] == [tuple(round(v / 2) for v in d.box) for d in small[:PEOPLE_AROUND - 1]]
    assert len(calls) == PEOPLE_AROUND and all(down == (0.0, 1.0) for _, down in calls[1:])


def test_a_face_is_a_persons_when_their_nose_is_in_its_middle_and_their_face_is_its_size():
    from automask.pose import EARS, EYES, NOSE, Person, has_face

    points, seen = np.zeros((39, 2)), np.ones(39)
    points[NOSE] = (100, 100)
    points[EYES[0]], points[EYES[1]] = (90, 95), (110, 95)
    points[EARS[1]], points[EARS[0]] = (75, 98), (125, 98)  # 50 px ear to ear
    person = Person(0.9, points, seen)
    assert has_face(person, (70, 70, 130, 130))
    assert not has_face(person, (95, 70, 155, 130))  # the nose at the box's edge: another face
    assert not has_face(person, (-50, -50, 250, 250))  # a box six times the face: a frame around people
    assert not has_face(person, (90, 90, 110, 110))  # a box under half the face: a part of it
    seen[EYES[1]] = 0.2  # an eye the pose does not see
    assert not has_face(Person(0.9, points, seen), (70, 70, 130, 130))


class _StubPoses:
    """In place of ``pose.Poses``: the people each search in turn finds in the whole view (then nobody); nobody
    around faces."""

    def __init__(self, *searches):
        self._searches = list(searches)

    def bodies(self, rgb, pixels=None):
        return self._searches.pop(0) if self._searches else []

    def around(self, rgb, pixels, box, down=None):
        return None

    def close(self):
        pass


def _person_facing_us(seen_shoulders: float = 1.0):
    """A person upright at x = 100: a face 50 px ear to ear at y = 100, shoulders at y = 160, hips at y = 300."""
    from automask.pose import EARS, EYES, NOSE, TORSO, Person

    points, seen = np.zeros((39, 2)), np.ones(39)
    points[NOSE] = (100, 100)
    points[EYES[0]], points[EYES[1]] = (90, 95), (110, 95)
    points[EARS[1]], points[EARS[0]] = (75, 98), (125, 98)
    for i, xy in zip(TORSO, ((150, 160), (50, 160), (60, 300), (140, 300)), strict=True):
        points[i] = xy
    seen[list(TORSO[:2])] = seen_shoulders
    return Person(0.9, points, seen)


def test_a_face_far_smaller_than_a_persons_own_on_their_torso_is_a_thing_they_wear():
    # A coat's button in a 4× enlarged portrait was a face to the detectors and to the face landmark model (0.96):
    # on the torso (shoulders to hips) and under a third of the person's face, it is not one.  A face beside the
    # torso, or a third of theirs and larger (a child held to the chest), or the person's own, is.
    from automask.pose import on_torso

    person = _person_facing_us()
    assert on_torso(person, (95, 200, 105, 210))       # a 10 px button on the chest
    assert on_torso(person, (60, 280, 75, 295))        # … one near a hip (the quadrilateral's corner)
    assert not on_torso(person, (160, 200, 170, 210))  # beside the torso
    assert not on_torso(person, (90, 190, 110, 210))   # 20 px: over a third of the 50 px face
    assert not on_torso(person, (75, 75, 125, 125))    # the face itself, above the shoulders
    assert not on_torso(_person_facing_us(seen_shoulders=0.2), (95, 200, 105, 210))  # where the torso is, unseen
    facing_away = _person_facing_us()
    facing_away.visibility[0] = 0.1  # the nose unseen: no face of theirs to measure by
    assert not on_torso(facing_away, (95, 200, 105, 210))


def test_the_detector_drops_a_small_face_on_a_persons_torso_and_keeps_the_others():
    # The face searches and the pose model stubbed (the picture is blank): what the detector returns has the
    # person's face and a small face beside them, not the small face on their chest.
    d = Detector(DetectorSettings())
    own = Detection("face", (75.0, 75.0, 125.0, 125.0), 0.95, "face-full")
    chest = Detection("face", (95.0, 200.0, 105.0, 210.0), 0.9, "face-full")
    beside = Detection("face", (170.0, 200.0, 180.0, 210.0), 0.9, "face-full")

    d._poses = _StubPoses([_person_facing_us()])
    d._faces_in = lambda *args: [own, chest, beside]
    try:
        found = [x.box for x in d.detect(Image.new("RGB", (300, 400), (90, 110, 140))) if x.kind == "face"]
    finally:
        d.close()
    assert own.box in found and beside.box in found
    assert chest.box not in found


def _turned_points(person, size: tuple[int, int], turns: int):
    """``person`` of a picture of ``size`` as they stand in it turned ``turns`` quarter turns anticlockwise."""
    from automask.detect import turned_points
    from automask.pose import Person

    return Person(person.score, np.array(turned_points(person.points, size, turns)), person.visibility)


def test_the_way_up_of_a_picture_is_the_way_its_people_stand():
    # Turned anticlockwise k quarters, a picture is upright after 4 − k more; people who do not stand along one
    # way (a head in profile) have no say, and a way up needs more people than any other.
    from automask.pose import NOSE, quarter_turns

    upright = _person_facing_us()
    assert quarter_turns([]) == 0 and quarter_turns([upright]) == 0
    for k in (1, 2, 3):
        assert quarter_turns([_turned_points(upright, (300, 400), k)]) == 4 - k
    profile = _person_facing_us()
    profile.points[NOSE] = (160, 140)  # the nose well to the side of the shoulders, the ears above them
    assert quarter_turns([_turned_points(profile, (300, 400), 1)]) == 0
    profile.points[NOSE] = (140, 120)  # … or aslant
    assert quarter_turns([_turned_points(profile, (300, 400), 1)]) == 0
    lying = _turned_points(upright, (300, 400), 1)
    assert quarter_turns([lying, upright]) == 0  # one on their side, one upright: the picture stands as it is
    assert quarter_turns([lying, lying, upright]) == 3


def test_the_way_up_of_a_picture_is_the_way_its_sure_faces_look():
    # A face's keypoints (right eye, left eye, nose, mouth): the mouth below the eyes is upright.  Turned
    # anticlockwise k quarters, the picture is upright after 4 − k more; an unsure face, one aslant or one without
    # keypoints has no say, and a way up needs more faces than any other.
    from automask.detect import faces_turns, turned

    def face(x, score=0.9, mouth=(0, 30)):
        eyes = [(x - 10.0, 100.0), (x + 10.0, 100.0)]
        return Detection("face", (x - 20.0, 80.0, x + 20.0, 140.0), score, "face-full",
                         eyes + [(x, 115.0), (x + mouth[0], 100.0 + mouth[1])])

    upright = [face(50), face(150)]
    assert faces_turns([]) == 0 and faces_turns(upright) == 0
    for k in (1, 2, 3):
        assert faces_turns([turned(d, (300, 400), k) for d in upright]) == 4 - k
    lying = turned(face(250), (300, 400), 1)
    assert faces_turns([lying]) == 3
    assert faces_turns([turned(face(250, score=0.3), (300, 400), 1)]) == 0  # unsure
    assert faces_turns([turned(face(250, mouth=(25, 25)), (300, 400), 1)]) == 0  # aslant
    assert faces_turns([dataclasses.replace(lying, landmarks=[])]) == 0
    assert faces_turns([lying, upright[0]]) == 0 and faces_turns([lying, lying, upright[0]]) == 3


def test_a_find_on_a_turned_picture_lies_where_the_turn_takes_its_pixels():
    from automask.detect import turned

    picture = Image.new("RGB", (160, 120), (0, 0, 0))
    ImageDraw.Draw(picture).rectangle((40, 30, 99, 69), fill=(255, 255, 255))
    find = Detection("face", (40.0, 30.0, 100.0, 70.0), 0.9, "face-full", [(40.0, 30.0), (100.0, 70.0)])
    for k in (1, 2, 3):
        copy = picture.rotate(90 * k, expand=True)
        moved = turned(find, picture.size, k)
        assert moved.box == tuple(float(v) for v in copy.getbbox()), k
        # the find's corner points are the turned box's opposite corners
        assert {x for x, _ in moved.landmarks} == {moved.box[0], moved.box[2]}
        assert {y for _, y in moved.landmarks} == {moved.box[1], moved.box[3]}
        back = turned(moved, copy.size, 4 - k)
        assert back.box == find.box and back.landmarks == find.landmarks


def test_a_picture_whose_people_lie_on_their_side_is_searched_upright():
    # The astronaut turned a quarter: her pose says which way is up, the picture is searched that way up, and her
    # face is where the upright picture's face lies once turned back.  Upright, nothing is searched twice.
    from automask.detect import turned

    astronaut = Image.open(DATA / "astronaut.png").convert("RGB")
    d = Detector(DetectorSettings())
    try:
        upright = [x for x in d.detect(astronaut) if x.kind == "face" and x.score >= 0.5]
        assert "sideways" not in d.timings
        side = astronaut.rotate(90, expand=True)
        found = [x for x in d.detect(side) if x.kind == "face" and x.score >= 0.5]
        assert "sideways" in d.timings
    finally:
        d.close()
    assert len(upright) == 1 and len(found) == 1
    assert iou(found[0].box, turned(upright[0], astronaut.size, 1).box) >= 0.8


def _searched_with(poses, faces_of):
    """A plain 300 × 400 picture searched with ``poses`` in place of the pose models, the face searches finding
    ``faces_of(n)`` in the n-th search of it: the faces kept, the passes' timings, and the sizes searched."""
    d = Detector(DetectorSettings())
    calls = []

    def faces_in(*args):
        calls.append(args[0].size)
        return faces_of(len(calls))

    d._poses = poses
    d._faces_in = faces_in
    try:
        found = [x for x in d.detect(Image.new("RGB", (300, 400), (90, 110, 140))) if x.kind == "face"]
        return found, dict(d.timings), calls
    finally:
        d.close()


@pytest.mark.parametrize("first, again, upright", [
    ([0.9], [], False),             # a pose sideways in a close-up of hands: no face when turned
    ([0.94, 0.69], [0.76], False),  # a small group far away, a pose aslant: fewer faces turned
    ([0.9, 0.7], [0.8, 0.7], False),  # as many, less sure
    ([0.6], [0.6, 0.9], True),      # people on their side: more faces upright
    ([0.6], [0.8], True),           # … or the same faces, surer
])
def test_a_turned_search_is_taken_when_it_finds_more_sure_faces(first, again, upright):
    # The poses say the picture is turned; the search turned upright is taken when it finds more sure faces than
    # the first, or as many more surely; else what the first search found stands.
    def faces_of(search):
        return [Detection("face", (10.0 + 60 * i, 10.0, 40.0 + 60 * i, 40.0), s, "face-full")
                for i, s in enumerate(first if search == 1 else again)]

    poses = _StubPoses([_turned_points(_person_facing_us(), (300, 400), 1)], [])  # the second search: upright
    found, timings, calls = _searched_with(poses, faces_of)
    assert calls == [(300, 400), (400, 300)]  # searched as it is, then turned (three quarters anticlockwise)
    assert sorted(x.score for x in found) == sorted(again if upright else first)
    assert ("sideways" in timings) == upright and ("upright" in timings) != upright
    if upright:  # turned back a quarter: the upright picture's top-left box lies at the original's bottom left
        assert any(x.box == (10.0, 360.0, 40.0, 390.0) for x in found), [x.box for x in found]


def test_a_picture_of_faces_without_bodies_turned_a_quarter_is_searched_upright():
    # Nobody's pose is found (faces in a collage): the sure faces' mouths lie to the right of their eyes, so the
    # picture is searched again turned upright (three quarters anticlockwise), and that search, finding more sure
    # faces, is taken.
    def faces_of(search):
        if search == 1:  # on its side: eyes one above the other, the mouth to their right
            return [Detection("face", (10.0 + 60 * i, 10.0, 40.0 + 60 * i, 40.0), 0.7, "face-full",
                              [(20.0 + 60 * i, 30.0), (20.0 + 60 * i, 20.0), (27.0 + 60 * i, 25.0),
                               (34.0 + 60 * i, 25.0)]) for i in range(2)]
        return [Detection("face", (10.0 + 60 * i, 10.0, 40.0 + 60 * i, 40.0), 0.9, "face-full") for i in range(3)]

    found, timings, calls = _searched_with(_StubPoses([], []), faces_of)
    assert calls == [(300, 400), (400, 300)]
    assert len(found) == 3 and "sideways" in timings


def test_a_person_is_looked_for_around_a_face_at_the_pictures_edge_and_never_around_a_speck():
    # The astronaut's face: the square around it reaches below the picture (black there), and she is found, her
    # nose on her face.  A face box of a pixel or none has no body around it to see: nobody, and no error.
    from automask.pose import NOSE, Poses

    astronaut = Image.open(DATA / "astronaut.png").convert("RGB")
    pixels = np.asarray(astronaut)
    poses = Poses()
    try:
        person = poses.around(astronaut, pixels, (170.0, 60.0, 275.0, 165.0))
        assert person is not None
        assert 170 <= person.points[NOSE][0] <= 275 and 60 <= person.points[NOSE][1] <= 165
        assert poses.around(astronaut, pixels, (100.0, 100.0, 100.0, 100.0)) is None
        assert poses.around(astronaut, pixels, (100.0, 100.0, 101.0, 101.0)) is None
    finally:
        poses.close()


def test_a_body_search_that_fails_on_the_detectors_thread_fails_the_search_and_the_next_one_works():
    # Body regions are searched on both threads: a landmarker that breaks on the detector's own thread ends the
    # search with its error (none is lost or left waiting), and with it back the next search finds what it found.
    import threading

    from automask.detect import _HandModels, body_regions

    d = Detector(DetectorSettings())
    picture = Image.open(DATA / "camera.png").convert("RGB").resize((1024, 1024))
    small = Image.open(DATA / "astronaut.png").convert("RGB").resize((200, 200))
    for x, y in ((40, 600), (600, 600), (320, 40)):
        picture.paste(small, (x, y))
    try:
        faces = [x for x in d.detect(picture) if x.kind == "face" and x.score >= 0.5]
        regions = body_regions(*picture.size, faces)
        assert len(regions) >= 2
        before = d._bodies(picture, regions, faces, [])

        broke = threading.Event()

        class Broken:
            def detect(self, image):
                broke.set()
                raise RuntimeError("landmarker broke")

        class Waiting:  # the caller's landmarker waits for the detector's thread to take a region first
            def __init__(self, landmarker):
                self.landmarker = landmarker

            def detect(self, image):
                broke.wait(10)
                return self.landmarker.detect(image)

        own, beside = d._own_hands, d._beside_hands
        d._own_hands = _HandModels(Waiting(own.hands), Waiting(own.grey), own.joints)
        d._beside_hands = _HandModels(Broken(), Broken(), beside.joints)
        with pytest.raises(RuntimeError, match="landmarker broke"):
            d._bodies(picture, regions, faces, [])
        assert broke.is_set()
        d._own_hands, d._beside_hands = own, beside
        assert [(x.box, x.score) for x in d._bodies(picture, regions, faces, [])] == \
            [(x.box, x.score) for x in before]
    finally:
        d.close()


def test_the_annotated_photos_bench_reads_imglab_boxes_and_pairs_finds_with_them(tmp_path, monkeypatch):
    """``bench.annotated`` measures the stage on photos someone boxed (dlib's imglab XML): a box's label is its
    kind (a face without one), ``ignore`` boxes neither count nor make a find false, a photo that is not there is
    left out; a mirrored look mirrors the boxes."""
    import shutil

    from bench import annotated

    shutil.copy(DATA / "camera.png", tmp_path / "camera.png")
    xml = tmp_path / "boxes.xml"
    xml.write_text("""<?xml version='1.0'?><dataset><images>
      <image file='camera.png'>
        <box top='121' left='200' width='76' height='77'/>
        <box top='150' left='160' width='60' height='60'><label>hand</label></box>
        <box top='400' left='20' width='40' height='40' ignore='1'><label>hand</label></box>
      </image>
      <image file='gone.png'><box top='0' left='0' width='9' height='9'/></image>
    </images></dataset>""", encoding="utf-8")
    photos = annotated.read(xml)
    assert [p.path.name for p in photos] == ["camera.png"]
    assert photos[0].boxes == [("face", (200.0, 121.0, 276.0, 198.0)), ("hand", (160.0, 150.0, 220.0, 210.0))]
    assert photos[0].ignored == [("hand", (20.0, 400.0, 60.0, 440.0))]
    # A loose box on a small face finds it, a box of half the picture around it does not; each box once.
    face = (200, 121, 276, 198)
    assert annotated.paired([(190, 110, 290, 210), (0, 0, 256, 256), (205, 125, 270, 195)], [face]) == (1, 2)
    assert annotated.moved(face, "mirrored", (512, 512), (512, 512)) == (236, 121, 312, 198)
    monkeypatch.setattr(annotated, "OUT", tmp_path / "out")
    assert annotated.main([str(xml), "--looks", "colour,mirrored"]) == 0
    report = (tmp_path / "out" / "annotated.md").read_text(encoding="utf-8")
    assert "| colour | 1/1 (100%) | 0 |" in report and "| mirrored | 1/1 (100%) | 0 |" in report, report
    # … and, needing no boxes, the mirrored look beside the photo in colour: its face kept where colour keeps it.
    beside = report.split("Beside the photos in colour")[1]
    assert "| mirrored | 1/1 (100%) | 0 |" in beside and "| colour |" not in beside, report
    assert (tmp_path / "out" / "annotated.png").is_file()
    # --side: each photo and its boxes resized first (a generation's size, before the upscaler's look).
    assert annotated._resized(photos[0], 2).boxes == [("face", (400.0, 242.0, 552.0, 396.0)),
                                                      ("hand", (320.0, 300.0, 440.0, 420.0))]
    assert annotated.main([str(xml), "--looks", "colour", "--side", "1024"]) == 0
    report = (tmp_path / "out" / "annotated.md").read_text(encoding="utf-8")
    assert "--side 1024`" in report and "| camera.png | 1024×1024 |" in report and "| colour | 1/1 (100%) | 0 |" \
        in report, report
    with pytest.raises(SystemExit):
        annotated.main([str(xml), "--looks", "sideways"])
    broken = tmp_path / "broken.xml"
    broken.write_text("<dataset><images><image file='camera.png'>", encoding="utf-8")
    assert annotated.main([str(broken)]) == 2 and annotated.main([str(tmp_path / "none.xml")]) == 2


def test_the_annotated_photos_bench_counts_a_looks_finds_where_the_photo_in_colour_has_them():
    """Beside the photo in colour, a look's finds are counted where colour's lie on its copy (moved with it), each
    once, and the others as elsewhere, kind by kind: a grey photo's lost hand is read without anyone boxing it."""
    from bench import annotated

    in_colour = [Detection("hand", (10, 10, 50, 50), 0.9, "hand"), Detection("hand", (100, 10, 140, 50), 0.9, "hand"),
                 Detection("face", (60, 60, 100, 100), 0.9, "face-short")]
    counts = {k: [0, 0, 0] for k in annotated.KINDS}
    # Mirrored (200 px wide): colour's first hand lies at 150–190 there; the look keeps it, twice over, and a hand
    # where nothing was; it loses the second hand and keeps the face.
    found = [Detection("hand", (152, 12, 188, 48), 0.9, "hand"), Detection("hand", (150, 10, 190, 50), 0.8, "hand"),
             Detection("hand", (0, 150, 30, 190), 0.9, "hand"),
             Detection("face", (100, 60, 140, 100), 0.9, "face-short")]
    annotated._count_beside(counts, in_colour, found, "mirrored", (200, 200), (200, 200))
    assert counts == {"face": [1, 1, 0], "hand": [2, 1, 2]}
    annotated._count_beside(counts, in_colour, in_colour, "colour", (200, 200), (200, 200))
    assert counts == {"face": [2, 2, 0], "hand": [4, 3, 2]}


def test_the_annotated_photos_bench_moves_each_box_with_its_look():
    """Every copy ``bench.annotated`` searches (turned, mirrored, enlarged, …) has the photo's boxes where the
    copy's pixels put them: a white box drawn on a photo lies in the box moved with the look."""
    from bench import annotated

    box = (40.0, 30.0, 100.0, 70.0)
    photo = Image.new("RGB", (160, 120), (0, 0, 0))
    ImageDraw.Draw(photo).rectangle((40, 30, 99, 69), fill=(255, 255, 255))
    for look, (change, _) in annotated.LOOKS.items():
        if look in annotated.ASKED_ONLY:
            continue
        copy = change(photo)
        bright = copy.convert("L").point(lambda v: 255 if v > 60 else 0).getbbox()
        moved = annotated.moved(box, look, photo.size, copy.size)
        slack = 3 * copy.width / photo.width + 8 * (look == "motion blur")  # resampling's ringing, the smear
        assert all(abs(a - b) <= slack for a, b in zip(bright, moved, strict=True)), (look, bright, moved)


def test_a_face_the_short_range_model_is_unsure_of_gets_its_own_box_or_the_landmark_model_s_judgement(detector):
    """The camera man, his face 46 px in a 640² picture of noise: the short-range model alone finds him, boxed
    115 px wide and 0.54 sure, and the face landmark model sees no face in so loose a box.  The full-range model,
    on a crop around that box, boxes his face itself: that box takes its place, and the landmark model, judging it,
    sees his face.  A box the short-range model was as unsure of where no face is (a torso, a dog's head) is
    labelled, and the landmark model drops it."""
    from automask.face_mesh import FaceMesh
    from automask.found import SHORT_RANGE

    rng = np.random.default_rng(0)
    frame = Image.fromarray(np.clip(rng.normal(0, 12, (1024, 1024, 3)) + (150, 140, 120), 0, 255).astype("uint8"))
    frame.paste(Image.open(DATA / "camera.png").convert("RGB").resize((500, 500), Image.Resampling.LANCZOS),
                (292, 307))
    picture = frame.resize((640, 640), Image.Resampling.LANCZOS)
    found = [d for d in detector.detect(picture) if d.kind == "face"]
    mesh = FaceMesh()
    try:
        (face,) = select_faces(found, FaceMaskConfig(), picture.size, picture, mesh)
        assert face.model == "face-full" and face.label == SHORT_RANGE and 35 <= face.box[2] - face.box[0] <= 60
        assert 300 <= (face.box[0] + face.box[2]) / 2 <= 350 and 260 <= (face.box[1] + face.box[3]) / 2 <= 310
        none = Detection("face", (40, 40, 140, 140), 0.6, "face-short", label=SHORT_RANGE)  # noise
        assert mesh.confirmed(picture, [face, none], 0.5) == [face]
        assert mesh.confirmed(picture, [dataclasses.replace(none, label="")], 0.5) != []  # unlabelled: not judged
    finally:
        mesh.close()
