"""The pipeline: its stages, in order.  To add a stage: one module in stages/, one line here, its table in
pipeline.toml.  The config schema (daemon/config.py) and the runner both read this list.

Stage modules import no torch, diffusers or MediaPipe at import time, so the CLI (``status``,
``check-config``) starts fast; models load in each stage's ``setup``.
"""

from __future__ import annotations

from stages.automask import AutoMaskStage
from stages.base import Stage
from stages.contact import ContactSheetStage
from stages.deliver import DeliverStage
from stages.inpaint import InpaintStage
from stages.outpaint import OutpaintStage
from stages.upscale import UpscaleStage

STAGES: tuple[type[Stage], ...] = (
    # Find faces and hands first, on the upright original.
    AutoMaskStage,
    # Repaint them inside their masks; skipped (with the reason) when no model is configured.
    InpaintStage,
    # Aspect-ratio variants of the finished master (they see the repaired faces and hands).
    OutpaintStage,
    # Upscale after every stage that changes pixels: the master and its variants.
    UpscaleStage,
    # The finished files by preset, into the outbox: sized, in sRGB, graded, with the logo and the AI label.
    DeliverStage,
    # Last of all: a picture of everything above, for the person who reviews the batch.
    ContactSheetStage,
)


def default_stages() -> list[Stage]:
    return [cls() for cls in STAGES]
