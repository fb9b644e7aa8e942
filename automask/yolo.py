"""YOLO detectors: the bbox and segmentation models ADetailer and Impact Pack users already have.

``face_yolov8n.pt``, ``hand_yolov8s.pt``, ``person_yolov8n-seg.pt`` and the community's anime face and hand
models are Ultralytics checkpoints, read by the ``ultralytics`` package (an optional extra,
``pip install -e '.[yolo]'``; AGPL-3.0, see the README).

A ``.pt`` file is a pickle, and a pickle can run code as it is read.  Before one is opened, every global
it names is read from the file without unpickling anything (``torch.serialization.
get_unsafe_globals_in_checkpoint``) and must be a model class of ``torch.nn`` or ``ultralytics.nn``, or one of
a few plain containers; anything else (``os.system``, ``builtins.exec``, a class of another package) refuses
the file, naming what it asked for.  The file is then read by Ultralytics' own restricted loader
(``weights_only=True`` with those classes allowed), never by plain ``pickle``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from automask.found import Detection

# What a YOLO checkpoint may name: model classes, and the plain data of its training arguments.
ALLOWED_MODULES = ("torch.nn.modules.", "ultralytics.nn.modules.", "ultralytics.nn.tasks.")
ALLOWED_NAMES = frozenset({
    "collections.OrderedDict", "builtins.getattr", "builtins.set", "builtins.frozenset", "builtins.slice",
    "ultralytics.utils.IterableSimpleNamespace", "types.SimpleNamespace", "argparse.Namespace",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "pathlib.PosixPath", "pathlib.WindowsPath",
    "torch.torch_version.TorchVersion",
})
KINDS = ("face", "hand", "person")


class YoloUnavailable(RuntimeError):
    """The ultralytics package is not installed."""


def refused_globals(path: Path) -> list[str]:
    """The globals the checkpoint names that a YOLO model does not need (empty: it may be opened).
    ValueError when the file is not a PyTorch checkpoint at all."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a torch.save zip archive: an old-style pickle, or no checkpoint at all
        raise ValueError(f"{path.name} is not a PyTorch checkpoint polishd can check before opening "
                         f"({type(exc).__name__})") from None
    return sorted(n for n in names if n not in ALLOWED_NAMES and not n.startswith(ALLOWED_MODULES)
                  and not n.startswith("numpy.dtypes."))


@dataclass
class YoloModel:
    path: Path
    model: object  # ultralytics.YOLO
    task: str      # "detect" | "segment"
    names: dict[int, str]
    imgsz: int
    device: str = "cpu"
    seconds: list[float] = field(default_factory=list)  # time per call, for the benchmark

    def describe(self) -> str:
        shown = ", ".join(list(self.names.values())[:8]) + (", …" if len(self.names) > 8 else "")
        return f"YOLO {'segmentation' if self.task == 'segment' else 'bbox'} model, {len(self.names)} " \
               f"class{'es' if len(self.names) != 1 else ''} ({shown}), input {self.imgsz} px"

    def find(self, image: Image.Image, kind: str, confidence: float, classes: tuple[str, ...] = ()) -> list[Detection]:
        """Its finds in ``image`` (RGB) at ``confidence``, as detections of ``kind``; a segmentation model's
        outline of each under ``outlines["segm"]``."""
        wanted = [i for i, n in self.names.items() if n in classes] if classes else None
        t0 = time.perf_counter()
        result = self.model.predict(image, imgsz=self.imgsz, conf=confidence, classes=wanted, device=self.device,
                                    verbose=False)[0]
        self.seconds.append(time.perf_counter() - t0)
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        xyxy = boxes.xyxy.cpu().numpy().astype(float)
        scores = boxes.conf.cpu().numpy().astype(float)
        labels = boxes.cls.cpu().numpy().astype(int)
        polygons = result.masks.xy if self.task == "segment" and result.masks is not None else None
        out = []
        for i in range(len(xyxy)):
            d = Detection(kind, tuple(float(v) for v in xyxy[i]), float(scores[i]), self.path.name,
                          label=self.names.get(int(labels[i]), str(labels[i])))
            if polygons is not None and len(polygons[i]) >= 3:
                d.outlines = {"segm": [[(float(x), float(y)) for x, y in np.asarray(polygons[i])]]}
            out.append(d)
        return out

    def close(self) -> None:
        self.model = None


def load(path: Path, device: str = "cpu") -> YoloModel:
    """A YOLO checkpoint, checked before it is opened (see the module's text).  ValueError naming the file
    and the reason when it cannot be used; YoloUnavailable without the ultralytics package."""
    refused = refused_globals(path)
    if refused:
        raise ValueError(f"{path.name} is refused: it asks for {', '.join(refused[:5])}"
                         f"{' …' if len(refused) > 5 else ''}, which no YOLO checkpoint needs (a pickle that "
                         "names them could run code when read)")
    os.environ["YOLO_OFFLINE"] = "1"  # never a network call (settings sync, hub checks, font downloads)
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    try:
        import ultralytics.nn.tasks as tasks
        from ultralytics import YOLO
    except ImportError:
        raise YoloUnavailable("YOLO detectors need the ultralytics package: pip install -e '.[yolo]' "
                              "(AGPL-3.0; see the README)") from None
    tasks.SAFE_LOAD = True  # its restricted loader, even if ultralytics was imported before the flag was set
    try:
        model = YOLO(str(path))
    except Exception as exc:  # a broken file, a YOLOv5 model, a classifier
        raise ValueError(f"{path.name} could not be loaded as a YOLO model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if model.task not in ("detect", "segment"):
        raise ValueError(f"{path.name} is a YOLO {model.task} model; face and hand detection takes bbox (detect) "
                         "or segmentation models")
    args = getattr(model.model, "args", {}) or {}
    imgsz = args.get("imgsz", 640) if isinstance(args, dict) else getattr(args, "imgsz", 640)
    imgsz = int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz)
    return YoloModel(path, model, model.task, dict(model.names), imgsz, device)
