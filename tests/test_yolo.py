"""YOLO detectors as ADetailer and Impact Pack users have them: checked before they are opened, their finds
ultralytics' own, a segmentation model's outline in the mask, check-config naming what it cannot use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from automask import yolo
from tests.conftest import DATA, REPO, write_config
from tests.helpers.hostile import RunsCode

MARKER = Path("/tmp/polishd-yolo-ran")


def _hostile(path: Path) -> Path:
    """A checkpoint as torch.save writes one, whose model entry runs code when unpickled."""
    torch.save({"model": RunsCode(MARKER), "date": "2026-01-01"}, str(path))
    return path


def test_a_pickle_that_would_run_code_is_refused_before_anything_in_it_runs(tmp_path):
    MARKER.unlink(missing_ok=True)
    evil = _hostile(tmp_path / "face_yolov8n.pt")
    with pytest.raises(ValueError, match=r"face_yolov8n.pt is refused: it asks for builtins.exec"):
        yolo.load(evil)
    assert not MARKER.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pt is not a PyTorch checkpoint"):
        yolo.load(tmp_path / "junk.pt")


def test_check_config_names_a_yolo_file_it_cannot_use_with_the_reason(tmp_path):
    MARKER.unlink(missing_ok=True)
    models = tmp_path / "models"
    (models / "adetailer").mkdir(parents=True)  # ADetailer's folder, found by name
    _hostile(models / "adetailer" / "hand_yolov8s.pt")
    path = write_config(tmp_path, '[automask]\nyolo = [{model = "hand_yolov8s.pt", kind = "hand"}]\n', models=models)
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 3
    assert "[[automask.yolo]] #1 (hand) = 'hand_yolov8s.pt': hand_yolov8s.pt is refused: it asks for " \
           "builtins.exec" in out.stderr
    assert not MARKER.exists() and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- with ultralytics (the extras tier)


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    pytest.importorskip("ultralytics", reason="the yolo extra is not installed (pip install -e '.[yolo]'; "
                                              "make test-spandrel runs these)")
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    folder = tmp_path_factory.mktemp("yolo")
    for cls, yaml, name, task in ((DetectionModel, "yolov8n.yaml", "random_yolov8n.pt", "detect"),
                                  (SegmentationModel, "yolov8n-seg.yaml", "random_yolov8n-seg.pt", "segment")):
        model = YOLO(yaml)  # random weights, built from its YAML, with classes of its own as ADetailer's have
        torch.manual_seed(0)
        model.model = cls(yaml, nc=2, verbose=False)
        model.model.names = {0: "face", 1: "hand"}
        head = model.model.model[-1]
        with torch.no_grad():  # class logits near 0 (scores near 0.5): a random model that finds things
            for branch in head.cv3:
                branch[-1].bias.zero_()
            for branch in getattr(head, "cv4", ()):  # mask coefficients whose outlines are not the boxes
                branch[-1].weight.zero_()
                branch[-1].bias.zero_()
                branch[-1].bias[0], branch[-1].bias[2] = 5.0, -5.0
        model.ckpt = {"train_args": {"task": task, "imgsz": 640}}  # as a trained checkpoint carries them
        model.save(str(folder / name))
    return folder


@pytest.mark.yolo
def test_the_boxes_polishd_reports_are_ultralytics_own(random_models):
    from ultralytics import YOLO

    path = random_models / "random_yolov8n.pt"
    assert yolo.refused_globals(path) == []  # a real checkpoint's globals are all allowed
    model = yolo.load(path)
    assert (model.task, model.imgsz, model.names) == ("detect", 640, {0: "face", 1: "hand"})
    assert model.describe() == "YOLO bbox model, 2 classes (face, hand), input 640 px"
    image = Image.open(DATA / "astronaut.png").convert("RGB")
    ours = model.find(image, "face", 0.01)
    theirs = YOLO(str(path)).predict(image, imgsz=640, conf=0.01, verbose=False, device="cpu")[0].boxes
    assert ours, "a random model at 0.01 finds something"
    assert np.allclose([d.box for d in ours], theirs.xyxy.numpy(), atol=1e-3)
    assert np.allclose([d.score for d in ours], theirs.conf.numpy(), atol=1e-5)
    assert {d.kind for d in ours} == {"face"} and all(d.model == "random_yolov8n.pt" for d in ours)
    assert {d.label for d in ours} == {"face", "hand"}
    only = model.find(image, "face", 0.01, classes=("hand",))
    assert only and all(d.label == "hand" for d in only)


@pytest.mark.yolo
def test_a_segmentation_models_outline_reaches_the_mask(random_models):
    from ultralytics import YOLO

    from automask.found import Detection
    from automask.mask import MaskSettings, polygon_mask, shape_mask

    path = random_models / "random_yolov8n-seg.pt"
    model = yolo.load(path)
    assert model.task == "segment" and model.describe().startswith("YOLO segmentation model")
    image = Image.open(DATA / "astronaut.png").convert("RGB")
    finds = model.find(image, "face", 0.01)
    theirs = YOLO(str(path)).predict(image, imgsz=640, conf=0.01, verbose=False, device="cpu")[0].masks.xy
    assert finds and len(finds) == len(theirs)
    for d, outline in zip(finds, theirs, strict=True):  # each find carries the outline the model drew
        assert np.allclose(np.asarray(d.outlines["segm"][0]), outline, atol=1e-3)
    settings = MaskSettings(shape="segm", padding=0, dilate=0, feather=0)
    d = finds[0]
    mask = np.asarray(shape_mask(image.size, [d], settings))
    assert mask.any() and np.array_equal(mask, polygon_mask(image.size, d.outlines["segm"], 0))
    # A find without an outline (another detector's) is masked by its box under the same setting.
    plain = Detection("face", (10.0, 10.0, 40.0, 50.0), 0.9, "short")
    boxed = np.asarray(shape_mask(image.size, [plain], settings))
    assert boxed[10:50, 10:40].all() and boxed.sum() == 30 * 40 * 255


@pytest.mark.yolo
def test_a_region_a_yolo_model_found_is_judged_by_that_model(random_models):
    from stages.gate import FINDER_FLOOR, GateConfig, Judge, judge

    model = yolo.load(random_models / "random_yolov8n.pt")
    crop = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB").resize((256, 256)))
    box = (0, 0, 256, 256)
    best = max((d.score for d in model.find(Image.fromarray(crop), "face", FINDER_FLOOR)), default=0.0)
    verdict = judge(Judge(), GateConfig(), "face", crop, crop, np.zeros((256, 256), np.uint8), box, finder=model)
    assert verdict.scores["judged_by"] == "random_yolov8n.pt"
    assert verdict.scores["face_before"] == verdict.scores["face_after"] == round(best, 3)


def _stage_run(tmp_path, models: Path, automask: str):
    """The astronaut through the auto-mask stage alone, with ``[paths].models`` at ``models``."""
    from daemon import config as config_mod
    from stages.automask import AutoMaskStage
    from tests.conftest import run_one

    path = write_config(tmp_path, automask + "\n[upscale]\nenabled = false\n", models=models)
    cfg = config_mod.load(path)
    src = cfg.paths.inbox / "astronaut.png"
    Image.open(DATA / "astronaut.png").convert("RGB").save(src)
    out, manifest = run_one(cfg, src, [AutoMaskStage()])
    return out.archive, manifest.stages[0]


@pytest.mark.yolo
def test_the_stage_masks_what_comfyuis_yolo_models_find_with_mediapipe_left_out(random_models, tmp_path):
    import hashlib
    import shutil

    from automask.mask import polygon_mask

    models = tmp_path / "models"
    for sub, name in (("segm", "random_yolov8n-seg.pt"), ("bbox", "random_yolov8n.pt")):
        (models / "ultralytics" / sub).mkdir(parents=True)
        shutil.copy(random_models / name, models / "ultralytics" / sub / name)  # ComfyUI's folders, by name
    archive, entry = _stage_run(tmp_path, models, """
[automask]
mediapipe = []
yolo = [{model = "random_yolov8n-seg.pt", kind = "face", confidence = 0.3, classes = ["face"]},
        {model = "random_yolov8n.pt", kind = "hand", confidence = 0.3, classes = ["hand"]}]
[automask.face]
shape = "segm"
min_confidence = 0.3
top_k = 2
merge = false
padding = 0
dilate = 0
feather = 0
[automask.hand]
shape = "segm"
min_confidence = 0.3
top_k = 1
padding = 0
dilate = 0
feather = 0
""")
    assert entry.status == "done"
    # MediaPipe looked for nothing and ran nothing: every find and every model named is a YOLO file's.
    assert {(d.kind, d.model) for d in entry.details.detections} == {("face", "random_yolov8n-seg.pt"),
                                                                      ("hand", "random_yolov8n.pt")}
    assert {m.name: m.sha256 for m in entry.models} == {
        name: hashlib.sha256((random_models / name).read_bytes()).hexdigest()
        for name in ("random_yolov8n-seg.pt", "random_yolov8n.pt")}
    assert entry.outputs[:3] == ["10-mask-face-0.png", "10-mask-face-1.png", "10-mask-hand.png"]
    image = Image.open(DATA / "astronaut.png").convert("RGB")
    seg = {tuple(round(v, 1) for v in d.box): d
           for d in yolo.load(random_models / "random_yolov8n-seg.pt").find(image, "face", 0.3, ("face",))}
    faces = [d for d in entry.details.detections if d.kind == "face"]
    for i, record in enumerate(faces):  # each face's own mask file is the outline the model drew for it
        outline = seg[tuple(record.box)].outlines["segm"]
        written = np.asarray(Image.open(archive / f"10-mask-face-{i}.png"))
        assert written.any() and np.array_equal(written, polygon_mask(image.size, outline, 0))
        x0, y0, x1, y1 = record.box
        assert (written > 0).sum() < 0.5 * (x1 - x0) * (y1 - y0)  # the outline, far smaller than the box
    # A bbox model's find under shape = "segm" has no outline: its box is its mask.
    (hand,) = [d for d in entry.details.detections if d.kind == "hand"]
    x0, y0, x1, y1 = (round(v) for v in hand.box)
    written = np.asarray(Image.open(archive / "10-mask-hand.png")) > 0
    assert written[y0 + 1:y1 - 1, x0 + 1:x1 - 1].all() and not written[:max(0, y0 - 2)].any()


@pytest.mark.yolo
def test_check_config_says_what_each_yolo_model_is_and_which_class_it_lacks(random_models, tmp_path):
    import shutil

    models = tmp_path / "models"
    (models / "ultralytics" / "segm").mkdir(parents=True)
    shutil.copy(random_models / "random_yolov8n-seg.pt", models / "ultralytics" / "segm" / "person_yolov8n-seg.pt")
    path = write_config(tmp_path, '[automask]\nyolo = [{model = "person_yolov8n-seg.pt", kind = "person", '
                                  'classes = ["person"]}]\n', models=models)
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    said = "[[automask.yolo]] #1 (person) = 'person_yolov8n-seg.pt'"
    assert f"{said}: YOLO segmentation model, 2 classes (face, hand), input 640 px" in out.stdout + out.stderr
    assert f"{said}: has no class 'person' (it has 'face', 'hand')" in out.stderr
    assert out.returncode == 3 and "Traceback" not in out.stderr
