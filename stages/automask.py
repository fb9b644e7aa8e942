"""10 — auto-mask: faces and hands found with MediaPipe, turned into feathered masks.

Writes ``10-mask-face.png`` and ``10-mask-hand.png`` (or ``10-mask-face-0.png``, …
with ``merge = false``), ``10-mask-user.png`` from a user's ``<name>.mask.png``,
``10-mask-remove.png`` from a user's ``<name>.remove.png`` (things to take away),
and ``10-detections.png`` with every box, score and hand landmark drawn.  The
manifest lists every detection with its model file and sha256.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import structlog
from PIL import Image

from automask import face_mesh, yolo
from automask.detect import MODELS, Detection, Detector, DetectorSettings, holds, nms, spans
from automask.found import segm_outline, side
from automask.mask import MaskSettings, draw_detections, faces_on_hands, masks_for, part_mask, select, user_mask
from stages.base import JobContext, ModelRef, Stage, StageResult, from_section
from stages.detectors import YoloConfig, held_yolo, yolo_settings
from stages.files import sha256_file
from stages.held import OWNER
from stages.models import ModelKind, ModelSetting, ModelUnavailable
from stages.products import Found, Mask, Picture, Products, Slot
from stages.records import AutomaskDetails, DetectionRecord
from stages.schema import Errors

log = structlog.get_logger("polishd.automask")

KINDS = ("face", "hand")
# The hand landmarker's own detection and presence thresholds.  Lower than the selection after it
# ([automask.hand].min_confidence, on the handedness score): at MediaPipe's usual 0.3–0.5 the palm detector
# drops hands in full-body and group shots before they are ever scored.
HAND_MODEL_CONFIDENCE = 0.2


# --------------------------------------------------------------------------- [automask]


@dataclass(frozen=True)
class _KindMaskConfig(MaskSettings):
    def check(self, err: Errors) -> None:
        err.between("min_confidence", self.min_confidence, 0.0, 1.0)
        err.at_least("top_k", self.top_k, 0)
        err.between("min_area_ratio", self.min_area_ratio, 0.0, 1.0)
        err.between("max_area_ratio", self.max_area_ratio, 0.0, 1.0)
        if self.min_area_ratio > self.max_area_ratio:
            err.add("min_area_ratio", f"must not exceed max_area_ratio ({self.max_area_ratio})")
        err.at_least("padding", self.padding, 0)
        err.at_least("feather", self.feather, 0.0)


@dataclass(frozen=True)
class FaceMaskConfig(_KindMaskConfig):
    shape: Literal["box", "oval", "segm"] = "oval"
    parts: tuple[Literal["eyes", "mouth"], ...] = ()  # narrow masks of their own: 10-mask-face-eyes.png, …
    # A face less sure than min_confidence, down to this, is kept when the face landmark model sees a face in
    # it (with the oval or parts, which load that model); at or above min_confidence: never.
    confirm_from: float = face_mesh.CONFIRM_FROM

    def check(self, err: Errors) -> None:
        super().check(err)
        err.between("confirm_from", self.confirm_from, 0.0, 1.0)


@dataclass(frozen=True)
class HandMaskConfig(_KindMaskConfig):
    min_confidence: float = 0.3
    padding: int = 8
    dilate: int = 6
    feather: float = 6.0
    shape: Literal["box", "landmarks", "segm"] = "landmarks"


@dataclass(frozen=True)
class AutomaskConfig:
    enabled: bool = True
    mediapipe: tuple[Literal["face", "hand"], ...] = ("face", "hand")  # the kinds MediaPipe looks for
    face_models: tuple[Literal["short", "full"], ...] = ("short", "full")
    face_model_short: str = ""
    face_model_full: str = ""
    hand_model: str = ""
    num_hands: int = 12
    upsample_below: int = 768
    tile_above: int = 1536
    body_search: bool = True
    hands_behind: bool = True
    pose_search: bool = True
    nms_iou: float = 0.4
    user_mask: Literal["merge", "replace"] = "merge"
    face: FaceMaskConfig = field(default_factory=FaceMaskConfig)
    hand: HandMaskConfig = field(default_factory=HandMaskConfig)
    yolo: tuple[YoloConfig, ...] = ()

    def check(self, err: Errors) -> None:
        if not self.face_models:
            err.add("face_models", 'must name at least one of "short", "full"')
        err.between("num_hands", self.num_hands, 1, 64)
        err.at_least("upsample_below", self.upsample_below, 0)
        err.at_least("tile_above", self.tile_above, 256)
        err.between("nms_iou", self.nms_iou, 0.0, 1.0)


@dataclass(frozen=True)
class AutomaskParams(AutomaskConfig):
    device: str = "auto"  # [daemon].device: where YOLO models run


MODEL_KEYS = ("face_model_short", "face_model_full", "hand_model")


class AutoMaskStage(Stage):
    name = "automask"
    prefix = "10"
    Config = AutomaskConfig
    consumes = frozenset({Slot.SOURCE, Slot.MASTER})
    produces = frozenset({Slot.DETECTIONS, Slot.MASKS})

    def __init__(self) -> None:
        # This job's models, as stages.held holds them (set in setup)
        self._detector: Detector | None = None
        self._digests: dict[str, str] = {}
        self._mesh = None  # automask.face_mesh.FaceMesh, when a face's oval or parts are asked for
        self._yolo: list[tuple[YoloConfig, yolo.YoloModel]] = []
        self._yolo_problems: list[str] = []

    def params(self, config) -> AutomaskParams:
        return from_section(AutomaskParams, config.automask, device=config.daemon.device)

    def model_settings(self, params: AutomaskParams) -> list[ModelSetting]:
        return [ModelSetting(f"[automask].{key}", getattr(params, key), ModelKind.DETECTOR)
                for key in MODEL_KEYS if getattr(params, key)] + yolo_settings(params.yolo)

    def _model_paths(self, ctx: JobContext, params: AutomaskParams) -> dict[str, Path]:
        paths = {}
        for key in MODEL_KEYS:
            if getattr(params, key):
                try:
                    paths[key] = ctx.models.resolve(ModelSetting(f"[automask].{key}", getattr(params, key),
                                                                 ModelKind.DETECTOR)).path
                except FileNotFoundError as exc:
                    raise ModelUnavailable(str(exc)) from None
        return paths

    def setup(self, ctx: JobContext, params: AutomaskParams) -> None:
        paths = self._model_paths(ctx, params)
        settings = DetectorSettings(
            face_models=params.face_models,
            face_model_paths={k: paths[f"face_model_{k}"] for k in ("short", "full") if f"face_model_{k}" in paths},
            hand_model=paths.get("hand_model"),
            num_hands=params.num_hands,
            min_confidence=min(params.face.min_confidence, params.hand.min_confidence, 0.5),
            hand_confidence=min(params.hand.min_confidence, HAND_MODEL_CONFIDENCE),
            upsample_below=params.upsample_below, tile_above=params.tile_above, nms_iou=params.nms_iou,
            faces=params.face.enabled and "face" in params.mediapipe,
            hands=params.hand.enabled and "hand" in params.mediapipe, body_regions=params.body_search,
            hands_behind=params.hands_behind, poses=params.pose_search)
        # MediaPipe is loaded only when it looks for something: the YOLO models alone need none of it.
        loaded = OWNER.get("detector", repr(settings), lambda: _load_detector(settings), _Loaded.close) \
            if settings.faces or settings.hands else None
        self._detector, self._digests = (loaded.detector, dict(loaded.digests)) if loaded else (None, {})
        self._yolo, self._yolo_problems = [], []
        for n, (entry, ms) in enumerate(zip(params.yolo, yolo_settings(params.yolo), strict=True)):
            try:
                path = ctx.models.resolve(ms).path
                model = held_yolo(path, params.device)
            except (FileNotFoundError, ValueError, yolo.YoloUnavailable) as exc:
                self._yolo_problems.append(f"[[automask.yolo]] #{n + 1} ({entry.model}) not used: {exc}")
                log.warning("a YOLO detector could not be used; detection goes on without it", error=str(exc))
                continue
            self._yolo.append((entry, model))
            self._digests[path.name] = sha256_file(path)
        self._mesh = None
        if _needs_mesh(params):
            try:
                self._mesh = OWNER.get("detector", "face-landmarks", lambda: face_mesh.FaceMesh(FACE_MESH_MODEL),
                                       lambda mesh: mesh.close())
            except (ImportError, RuntimeError, OSError) as exc:  # faces keep their boxes; parts are skipped
                log.warning("the face landmark model could not be loaded; faces are masked by their boxes",
                            error=f"{type(exc).__name__}: {exc}")
            else:
                self._digests["face-landmarks"] = _digest(FACE_MESH_MODEL)

    def close(self) -> None:
        OWNER.drop("detector")
        self._detector = self._mesh = None

    def run(self, ctx: JobContext, params: AutomaskParams) -> StageResult:
        source = ctx.products.source
        view = ctx.view(ctx.products.master)
        image, size = view.image(), view.size
        found: list[Detection] = []
        people: list[Detection] = []
        outside: list[Detection] = []  # hands a person model has no one at (dropped, and drawn so)
        if not (source.user_mask and params.user_mask == "replace"):
            ctx.check_stop()
            found = self._detector.detect(image) if self._detector is not None else []
            searched = self._detector.searched_size if self._detector is not None else None
            if searched is not None and searched != size:
                # (nothing in its finest octave: enlarged from a smaller picture, or that soft)
                log.info("searched at the size it was enlarged from", searched=f"{searched[0]}×{searched[1]}",
                         size=f"{size[0]}×{size[1]}")
            for entry, model in self._yolo:
                ctx.check_stop()
                finds = model.find(image, entry.kind, entry.confidence, entry.classes)
                (people if entry.kind == "person" else found).extend(finds)
            if self._yolo:  # several detectors' finds of one thing are one find, as the passes' are
                found = nms(found, params.nms_iou)
            if people:  # a person model bounds where hands are: one outside every person is not a hand
                outside = [d for d in found if d.kind == "hand" and not _among(d, people)]
                found = [d for d in found if not any(d is o for o in outside)]
        kept: list[Detection] = []
        outputs: list[str] = []
        masks: list[Mask] = []
        drawn_masks: list[tuple[str, Image.Image]] = []
        chosen_of: dict[str, list[Detection]] = {}
        for kind in KINDS:
            settings = getattr(params, kind)
            of_kind = [d for d in found if d.kind == kind]
            ctx.check_stop()  # faces may each be looked at by the landmark model
            chosen_of[kind] = ((select_faces(of_kind, settings, size, image, self._mesh) if kind == "face"
                                else select(of_kind, settings, size)) if settings.enabled else [])
        if _needs_mesh(params) and self._mesh is not None:
            pixels = face_mesh.pixels_of(image)  # made once for every face's crop
            for d in chosen_of["face"]:
                ctx.check_stop()
                d.outlines = self._mesh.outlines(pixels, d)
            on_hands = faces_on_hands(chosen_of["face"], chosen_of["hand"])
            chosen_of["face"] = [d for d in chosen_of["face"] if d not in on_hands]
        for kind in KINDS:
            settings, chosen = getattr(params, kind), chosen_of[kind]
            kept += chosen
            for i, mask in enumerate(masks_for(chosen, settings, size)):
                name = f"{self.prefix}-mask-{kind}.png" if settings.merge else f"{self.prefix}-mask-{kind}-{i}.png"
                outputs.append(ctx.save_mask(name, mask))
                drawn_masks.append((kind, mask))
                boxes = tuple(tuple(d.box) for d in chosen) if settings.merge else ()
                masks.append(Mask(kind, name, _bounds(mask), boxes, None if settings.merge else i))
            for part in settings.parts if kind == "face" else ():
                groups = [chosen] if settings.merge else [[d] for d in chosen]
                for i, group in enumerate(g for g in groups if any(d.outlines for d in g)):
                    mask = part_mask(size, group, part, settings)
                    name = f"{self.prefix}-mask-face-{part}.png" if settings.merge else \
                        f"{self.prefix}-mask-face-{part}-{i}.png"
                    outputs.append(ctx.save_mask(name, mask))
                    drawn_masks.append((f"face-{part}", mask))
                    boxes = tuple(b for b in (_bounds(part_mask(size, [d], part, settings)) for d in group)
                                  if b != (0, 0, 0, 0)) if settings.merge else ()
                    masks.append(Mask(f"face-{part}", name, _bounds(mask), boxes, None if settings.merge else i))
        for kind, drawn in (("user", source.user_mask), ("remove", source.remove_mask)):
            if drawn:  # <name>.mask.png (repaint) and <name>.remove.png (take away)
                with Image.open(ctx.path(drawn)) as raw:
                    mask = user_mask(raw, size)
                name = ctx.save_mask(f"{self.prefix}-mask-{kind}.png", mask)
                outputs.append(name)
                masks.append(Mask(kind, name, _bounds(mask)))
        dropped = [d for d in found if d not in kept] + outside
        picture = Picture(ctx.save_picture(f"{self.prefix}-detections.png",
                                           draw_detections(view.flat(), kept, dropped, drawn_masks, people)))
        outputs.append(picture.name)
        return StageResult(
            outputs=outputs, summary=_summary(kept, source, params),
            products=Products(detections=Found(tuple(kept), picture),
                              masks=tuple(m for m in masks if m.bounds != (0, 0, 0, 0))),
            models=([ModelRef(k, self._digests[k], str(p)) for k, p in self._detector.model_files.items()]
                    if self._detector is not None else [])
            + [ModelRef(m.path.name, self._digests[m.path.name], str(m.path)) for _, m in self._yolo]
            + ([ModelRef("face-landmarks", self._digests["face-landmarks"], str(FACE_MESH_MODEL))]
               if self._mesh is not None and any(d.outlines for d in kept) else []),
            details=AutomaskDetails([self._record(d, size) for d in kept], len(dropped),
                                    {k: sum(d.kind == k for d in kept) for k in KINDS}),
            attention=list(self._yolo_problems))

    def _record(self, d: Detection, size: tuple[int, int]) -> DetectionRecord:
        return DetectionRecord(d.kind, [round(v, 1) for v in d.box], round(d.score, 4),
                               round(d.area / float(size[0] * size[1]), 5), d.model,
                               self._digests.get(d.model, ""), d.label or "")


FACE_MESH_MODEL = MODELS / "face_landmark.tflite"


def _among(hand: Detection, people: list[Detection], margin: float = 0.1) -> bool:
    """Whether a hand's centre lies on a person: a -seg model's person in their outline or no further from it
    than half the hand's side (the outline's own edge, a hand half outside it); a bbox model's in their box,
    grown by ``margin`` of its size (arms held out)."""
    import cv2

    cx, cy = (hand.box[0] + hand.box[2]) / 2, (hand.box[1] + hand.box[3]) / 2
    for p in people:
        outline = segm_outline(p)
        if outline:
            reach = side(hand.box) / 2
            if any(cv2.pointPolygonTest(np.asarray(poly, dtype=np.float32), (cx, cy), True) >= -reach
                   for poly in outline):
                return True
            continue
        mx, my = margin * (p.box[2] - p.box[0]), margin * (p.box[3] - p.box[1])
        if p.box[0] - mx <= cx <= p.box[2] + mx and p.box[1] - my <= cy <= p.box[3] + my:
            return True
    return False


@dataclass(frozen=True)
class _Loaded:
    """The detector as ``stages.held`` keeps it, with the sha256 of each model file it read."""

    detector: Detector
    digests: tuple[tuple[str, str], ...]

    def close(self) -> None:
        self.detector.close()


def _load_detector(settings: DetectorSettings) -> _Loaded:
    try:
        detector = Detector(settings)
    except (RuntimeError, ValueError, OSError) as exc:  # MediaPipe refusing a model file
        raise ModelUnavailable(f"a detection model could not be loaded: {exc}") from None
    return _Loaded(detector, tuple((k, sha256_file(p)) for k, p in detector.model_files.items()))


@functools.cache
def _digest(path: Path) -> str:
    """The sha256 of a model file shipped with polishd (it never changes while polishd runs)."""
    return sha256_file(path)


def select_faces(faces: list[Detection], settings: FaceMaskConfig, size: tuple[int, int], image: Image.Image,
                 mesh: face_mesh.FaceMesh | None) -> list[Detection]:
    """``select`` for faces: with the face landmark model (``mesh``), a face less sure than min_confidence, down
    to confirm_from, is kept when that model sees a face in it (``FaceMesh.confirmed``)."""
    if mesh is not None:
        faces = mesh.confirmed(image, faces, settings.min_confidence, settings.confirm_from)
        settings = dataclasses.replace(settings, min_confidence=min(settings.min_confidence, settings.confirm_from))
    else:  # nothing judges a face that holds smaller ones: it is one face with them, as sure as the surest; a
        # box around two faces apart is neither of them
        faces = [d for d in faces if not spans(d, faces)]
        faces = [dataclasses.replace(d, score=max([d.score] + [o.score for o in faces if holds(d, o)]))
                 for d in faces if not any(holds(o, d) for o in faces)]
    return select(faces, settings, size)


def _needs_mesh(params: AutomaskParams) -> bool:
    return params.face.enabled and (params.face.shape == "oval" or bool(params.face.parts))


def _bounds(mask: Image.Image) -> tuple[int, int, int, int]:
    box = mask.getbbox()
    return tuple(box) if box else (0, 0, 0, 0)


def _summary(kept: list[Detection], source, params: AutomaskParams) -> str:
    counts = {k: sum(d.kind == k for d in kept) for k in KINDS}
    summary = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in counts.items()) if kept \
        else "no faces or hands found"
    if source.user_mask:
        summary += f"; user mask ({params.user_mask})"
    if source.remove_mask:
        summary += "; removal mask"
    return summary

