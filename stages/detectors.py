"""The YOLO detectors a user configures ([[automask.yolo]]): their settings, and the one way a stage gets one
(held by ``stages.held``, shared by automask, which finds with it, and the inpaint gate, which judges with it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from automask import yolo
from stages.held import OWNER
from stages.models import ModelKind, ModelSetting
from stages.schema import Errors


@dataclass(frozen=True)
class YoloConfig:
    """One [[automask.yolo]] detector: an Ultralytics bbox or -seg model the user has (ADetailer's
    ``models/adetailer/``, ComfyUI's ``models/ultralytics/bbox/`` and ``segm/``)."""

    model: str = ""
    kind: Literal["face", "hand", "person"] = "face"  # what its finds are; "person" bounds where hands are kept
    confidence: float = 0.3
    classes: tuple[str, ...] = ()  # the model's class names to take (empty: all)

    def check(self, err: Errors) -> None:
        if not self.model:
            err.add("model", "must name a YOLO model file (.pt)")
        err.between("confidence", self.confidence, 0.0, 1.0)


def yolo_settings(entries: tuple[YoloConfig, ...]) -> list[ModelSetting]:
    return [ModelSetting("[[automask.yolo]].model", e.model, ModelKind.DETECTOR) for e in entries if e.model]


def held_yolo(path: Path, device: str) -> yolo.YoloModel:
    """The YOLO model in ``path``, checked and loaded once (ValueError, YoloUnavailable: why it cannot be)."""
    return OWNER.get("detector", ("yolo", str(path), device), lambda: yolo.load(path, yolo_device(device)),
                     yolo.YoloModel.close)


def yolo_device(device: str) -> str:
    """Where YOLO runs: CUDA when asked for or (auto) there, else the CPU (MediaPipe runs on the CPU anyway)."""
    if device in ("cpu", "mps"):
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"
