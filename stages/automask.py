"""10 — auto-mask: faces and hands found with MediaPipe, turned into feathered masks.

Writes ``10-mask-face.png`` and ``10-mask-hand.png`` (or ``10-mask-face-0.png``, …
with ``merge = false``), ``10-mask-user.png`` from a user's ``<name>.mask.png``,
``10-mask-remove.png`` from a user's ``<name>.remove.png`` (things to take away),
and ``10-detections.png`` with every box, score and hand landmark drawn.  The
manifest lists every detection with its model file and sha256.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from automask.detect import Detection, Detector, DetectorSettings
from automask.mask import draw_detections, masks_for, select, user_mask
from daemon.archive import sha256_file
from daemon.config import AutomaskConfig
from stages.base import JobContext, ModelRef, Stage, StageResult, from_section

KINDS = ("face", "hand")


@dataclass(frozen=True)
class AutomaskParams(AutomaskConfig):
    pass


class AutoMaskStage(Stage):
    name = "automask"
    prefix = "10"

    def __init__(self) -> None:
        self._detector: Detector | None = None
        self._settings: DetectorSettings | None = None
        self._digests: dict[str, str] = {}

    def params(self, ctx: JobContext) -> AutomaskParams:
        return from_section(AutomaskParams, ctx.config.automask)

    def setup(self, ctx: JobContext, params: AutomaskParams) -> None:
        cfg = ctx.config
        settings = DetectorSettings(
            face_models=params.face_models,
            face_model_paths={k: cfg.model_path(v) for k, v in
                              (("short", params.face_model_short), ("full", params.face_model_full)) if v},
            hand_model=cfg.model_path(params.hand_model) if params.hand_model else None,
            num_hands=params.num_hands,
            min_confidence=min(params.face.min_confidence, params.hand.min_confidence, 0.5),
            upsample_below=params.upsample_below, tile_above=params.tile_above, nms_iou=params.nms_iou,
            faces=params.face.enabled, hands=params.hand.enabled)
        if settings == self._settings:
            return
        self.close()
        self._detector = Detector(settings)
        self._settings = settings
        self._digests = {k: sha256_file(p) for k, p in self._detector.model_files.items()}

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
        self._detector = self._settings = None

    def run(self, ctx: JobContext, params: AutomaskParams) -> StageResult:
        image = ctx.open_master()
        size = image.size
        user = ctx.sidecars.get("mask")
        found: list[Detection] = []
        if not (user and params.user_mask == "replace"):
            ctx.check_stop()
            found = self._detector.detect(image)
        kept: list[Detection] = []
        outputs: list[str] = []
        produces: dict[str, str] = {}
        for kind in KINDS:
            settings = getattr(params, kind)
            chosen = select([d for d in found if d.kind == kind], settings, size) if settings.enabled else []
            kept += chosen
            masks = masks_for(chosen, settings, size)
            for i, mask in enumerate(masks):
                name = f"{self.prefix}-mask-{kind}.png" if settings.merge else f"{self.prefix}-mask-{kind}-{i}.png"
                ctx.archive.save_image(name, mask)
                outputs.append(name)
                produces[f"mask-{kind}" if settings.merge else f"mask-{kind}-{i}"] = name
        for kind in ("user", "remove"):  # <name>.mask.png (repaint) and <name>.remove.png (take away)
            drawn = ctx.sidecars.get("mask" if kind == "user" else kind)
            if drawn:
                with Image.open(ctx.path(drawn)) as raw:
                    mask = user_mask(raw, size)
                name = f"{self.prefix}-mask-{kind}.png"
                ctx.archive.save_image(name, mask)
                outputs.append(name)
                produces[f"mask-{kind}"] = name
        dropped = [d for d in found if d not in kept]
        ctx.archive.save_image(f"{self.prefix}-detections.png", draw_detections(image, kept, dropped))
        outputs.append(f"{self.prefix}-detections.png")
        produces["detections"] = f"{self.prefix}-detections.png"
        counts = {k: sum(d.kind == k for d in kept) for k in KINDS}
        summary = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in counts.items()) if kept \
            else "no faces or hands found"
        if user:
            summary += f"; user mask ({params.user_mask})"
        if ctx.sidecars.get("remove"):
            summary += "; removal mask"
        area = float(size[0] * size[1])
        return StageResult(
            outputs=outputs, summary=summary, produces=produces,
            models=[ModelRef(k, self._digests[k], str(p)) for k, p in self._detector.model_files.items()]
            if self._detector else [],
            details={"detections": [
                {"kind": d.kind, "box": [round(v, 1) for v in d.box], "score": round(d.score, 4),
                 "area_ratio": round(d.area / area, 5), "model": d.model,
                 "model_sha256": self._digests.get(d.model, ""), **({"label": d.label} if d.label else {})}
                for d in kept],
                "dropped": len(dropped), "counts": counts})
