"""What one stage hands the next: typed values, never artifact names to parse.

Each stage declares the slots it consumes and the slots it produces
(``Stage.consumes`` / ``Stage.produces``).  The runner gives a stage only the
slots it consumes, merges what it produces into the job's ``Products``, and
records them in the manifest, from which a resumed job rebuilds them.  Every
file a value names is a plain name in the image's archive folder.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from automask.detect import Detection
from stages import records
from stages.generation import Generation
from stages.prompts import FoundPrompt

Box = tuple[float, float, float, float]
IntBox = tuple[int, int, int, int]


class Slot(StrEnum):
    """The kinds of value that pass between stages, in the order a job fills them."""

    SOURCE = "source"          # the dropped image: set by the runner at intake
    REVIEW = "review"          # what reviewers decided (polishd serve): set by the runner at intake
    PICKS = "picks"            # the reviewers' A/B picks alone (a stage that makes candidates reads them)
    DETECTIONS = "detections"  # faces and hands found (automask)
    MASKS = "masks"            # what may be repainted, by kind (automask)
    MASTER = "master"          # the picture later stages build on: the upright original, then the repaired one
    VARIANTS = "variants"      # aspect-ratio variants by label (outpaint)
    UPSCALED = "upscaled"      # upscaled pictures by what they were made from (upscale)


@dataclass(frozen=True)
class Picture:
    """A whole picture in the archive folder."""

    name: str
    caption: str = ""  # what a reviewer calls it ("inpainted"), for the contact sheet
    generative: bool = False  # a generative model painted part of it (the provenance label says so)


@dataclass(frozen=True)
class Source:
    original: str                 # 00-original.<ext>: byte-identical to what was dropped
    picture: Picture              # the upright picture the stages start from: the original or 00-upright.png
    size: tuple[int, int]         # of the upright picture
    prompt: FoundPrompt | None = None  # the generation prompt the image carries in its metadata
    generation: Generation | None = None  # all its metadata says of how it was generated
    user_mask: str | None = None  # 00-sidecar-mask.png: the user's own repaint mask
    remove_mask: str | None = None  # 00-sidecar-remove.png: what the user wants taken away


@dataclass(frozen=True)
class Verdict:
    """The reviewers' word on an image so far (the newest decision on the image itself)."""

    approved: bool = False
    picks: tuple[tuple[str, str], ...] = ()  # (stage, choice) of each A/B comparison a reviewer decided
    variants: tuple[tuple[str, str], ...] = ()  # (label, "approve" | "reject"): the newest decision on each variant

    def on_variant(self, label: str) -> str | None:
        return dict(self.variants).get(label)

    def pick(self, stage: str) -> str | None:
        return dict(self.picks).get(stage)


@dataclass(frozen=True)
class Picks:
    """The A/B picks alone: an approval elsewhere changes nothing for a stage that reads only these."""

    picks: tuple[tuple[str, str], ...] = ()

    def pick(self, stage: str) -> str | None:
        return dict(self.picks).get(stage)


@dataclass(frozen=True)
class Found:
    detections: tuple[Detection, ...]
    picture: Picture  # 10-detections.png: every kept box, score and landmark drawn


@dataclass(frozen=True)
class Mask:
    """An 8-bit mask at the picture's size: 255 = repaint (for ``remove``: take away)."""

    kind: str                     # face | hand | user | remove
    name: str
    bounds: IntBox                # where the mask is not 0
    boxes: tuple[Box, ...] = ()   # the detections a merged mask holds: each is repainted as its own region
    index: int | None = None      # one mask per detection (``merge = false``)


@dataclass(frozen=True)
class Variant:
    label: str       # "16x9", "4x5-left", …
    picture: Picture
    frame: IntBox    # where the master's pixels sit in the variant (the original composition)
    infill: str = ""  # the infill that alone made the new area ("backdrop", …); "" = a generative model painted it


@dataclass(frozen=True)
class Upscaled:
    source: str      # "master" or a variant's label
    picture: Picture
    engine: str = ""  # "" for [upscale].model; the model's name for an A/B candidate of [upscale].compare


@dataclass(frozen=True)
class Products:
    source: Source | None = None
    review: Verdict | None = None
    picks: Picks | None = None
    detections: Found | None = None
    masks: tuple[Mask, ...] | None = None
    master: Picture | None = None
    variants: tuple[Variant, ...] | None = None
    upscaled: tuple[Upscaled, ...] | None = None

    def slots(self) -> set[Slot]:
        return {Slot(f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def only(self, slots: frozenset[Slot]) -> Products:
        return Products(**{s.value: getattr(self, s.value) for s in slots})

    def merged(self, other: Products) -> Products:
        return dataclasses.replace(self, **{s.value: getattr(other, s.value) for s in other.slots()})

    def files(self) -> Iterator[str]:
        """Every archive file the values name, in a stable order."""
        yield from _files(self)

    def to_json(self) -> dict:
        return {s.value: records.to_json(getattr(self, s.value)) for s in sorted(self.slots(), key=list(Slot).index)}

    @classmethod
    def from_json(cls, data: dict) -> Products:
        if not isinstance(data, dict):
            raise records.RecordError(f"products: expected a table, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: records.from_json(hints[k], v, f"products.{k}") for k, v in data.items()
                      if k in Slot.__members__.values()})


# ---------------------------------------------------------------------- files named


def _files(value: Any) -> Iterator[str]:
    if isinstance(value, (Picture, Mask)):
        yield value.name
    if isinstance(value, Source):
        yield from (n for n in (value.original, value.user_mask, value.remove_mask) if n)
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            if f.name != "name":
                yield from _files(getattr(value, f.name))
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _files(v)


records.custom(Products, Products.to_json, Products.from_json)
