"""Typed records as JSON: the one codec for products and manifests, and what each stage records.

A record is a dataclass.  ``to_json`` turns it into plain JSON values; ``from_json(kind, value)`` turns
plain values back into ``kind``, following the type hints: nested dataclasses, lists, tuples, ``dict[str, X]``,
unions with None, and enums.  Reading is lenient, because a manifest may have been written by any release:

* a key the record does not know is kept in the record's ``rest`` field when it has one (written back
  flat, beside the known keys), else dropped;
* a key the record knows but the file lacks takes the field's default;
* a value of the wrong shape for its field raises ``RecordError`` naming the path to it.

Fields marked ``omit()`` are left out of the JSON while they hold their empty default, as optional keys were
before the records were typed: people and ``jq`` read the same files.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

_CUSTOM: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {}


def custom(kind: type, encode: Callable[[Any], Any], decode: Callable[[Any], Any]) -> None:
    """A type that writes and reads itself (``Products`` keeps only the slots that are set)."""
    _CUSTOM[kind] = (encode, decode)


class RecordError(ValueError):
    """A stored record does not have the shape of its type."""


def omit(default: Any = None, factory: Any = None) -> Any:
    """A field left out of the JSON while it holds its (empty) default."""
    if factory is not None:
        return field(default_factory=factory, metadata={"omit": True})
    return field(default=default, metadata={"omit": True})


def rest() -> Any:
    """The field that keeps the keys of a stored record its type does not know (written back flat)."""
    return field(default_factory=dict, metadata={"rest": True})


def to_json(value: Any) -> Any:
    if type(value) in _CUSTOM:
        return _CUSTOM[type(value)][0](value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.metadata.get("rest"):
                out.update({k: v2 for k, v2 in v.items() if k not in out})
            elif f.metadata.get("omit") and _empty(v, f):
                continue
            else:
                out[f.name] = to_json(v)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def _empty(value: Any, f: dataclasses.Field) -> bool:
    if f.default is not dataclasses.MISSING:
        return value == f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return value == f.default_factory()  # type: ignore[misc]
    return False


def from_json(kind: Any, value: Any, where: str = "") -> Any:
    """``value`` (plain JSON) as ``kind``; RecordError names the path of a value of the wrong shape."""
    if kind is Any or kind is object:
        return value
    if kind in _CUSTOM:
        return _custom(kind, value, where)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _union(kind, value, where)
    if value is None:
        raise RecordError(f"{where or 'value'}: missing (null)")
    if origin is typing.Literal:
        if value not in typing.get_args(kind):
            raise RecordError(f"{where or 'value'}: {value!r} is not one of {typing.get_args(kind)}")
        return value
    if origin in (tuple, list):
        return _sequence(kind, origin, value, where)
    if origin is dict:
        args = typing.get_args(kind)
        vkind = args[1] if len(args) == 2 else Any
        return {str(k): from_json(vkind, v, f"{where}.{k}") for k, v in _expect(dict, value, where).items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _record(kind, value, where)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise RecordError(f"{where or 'value'}: {value!r} is not a {kind.__name__}") from None
    return _plain_value(kind, value, where)


def _custom(kind: type, value: Any, where: str) -> Any:
    try:
        return _CUSTOM[kind][1](value)
    except RecordError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecordError(f"{where or kind.__name__}: {exc}") from None


def _union(kind: Any, value: Any, where: str) -> Any:
    """The first of the union's types that takes ``value`` (None where the union allows it)."""
    args = typing.get_args(kind)
    if value is None and type(None) in args:
        return None
    errors = []
    for a in (a for a in args if a is not type(None)):
        try:
            return from_json(a, value, where)
        except RecordError as exc:
            errors.append(str(exc))
    raise RecordError(errors[0] if errors else f"{where or 'value'}: no type fits")


def _sequence(kind: Any, origin: type, value: Any, where: str) -> list | tuple:
    value = _expect(list, value, where)
    args = typing.get_args(kind)
    if not args:
        items = list(value)
    elif len(args) == 1 or args[1:] == (Ellipsis,):
        items = [from_json(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    else:
        if len(args) != len(value):
            raise RecordError(f"{where or 'value'}: expected {len(args)} items, got {len(value)}")
        items = [from_json(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
    return tuple(items) if origin is tuple else items


def _plain_value(kind: Any, value: Any, where: str) -> Any:
    """A number, string, flag, or a table or list kept as plain values."""
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(f"{where or 'value'}: expected a number, got {type(value).__name__}")
        return value
    if kind is int and isinstance(value, bool):
        raise RecordError(f"{where or 'value'}: expected int, got bool")
    if kind in (int, str, bool, dict, list):
        return _expect(kind, value, where)
    return value


def _expect(kind: type, value: Any, where: str) -> Any:
    """``value`` if it is a ``kind`` (a JSON array may have been read as a tuple), else RecordError."""
    ok = isinstance(value, (list, tuple)) if kind is list else isinstance(value, kind)
    if not ok:
        names = {dict: "a table", list: "a list"}
        raise RecordError(f"{where or 'value'}: expected {names.get(kind, kind.__name__)}, got {type(value).__name__}")
    return value


@cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _record(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise RecordError(f"{where or kind.__name__}: expected a table, got {type(value).__name__}")
    hints = _hints(kind)
    fields = dataclasses.fields(kind)
    known = {f.name for f in fields if not f.metadata.get("rest")}
    args = {}
    for f in fields:
        if f.metadata.get("rest"):
            args[f.name] = {k: v for k, v in value.items() if k not in known}
        elif f.name in value:
            args[f.name] = from_json(hints[f.name], value[f.name], f"{where}.{f.name}" if where else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise RecordError(f"{where or kind.__name__}: {f.name!r} is missing")
    return kind(**args)


# --------------------------------------------------------------------------- what each stage records


@dataclass
class DetectionRecord:
    kind: str                    # face | hand
    box: list[float]             # x0, y0, x1, y1 in the upright picture's pixels
    score: float
    area_ratio: float = 0.0
    model: str = ""
    model_sha256: str = ""
    label: str = omit("")
    rest: dict = rest()


@dataclass
class AutomaskDetails:
    detections: list[DetectionRecord] = field(default_factory=list)
    dropped: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    rest: dict = rest()


class Gate(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"


@dataclass
class GateTry:
    """One repaint of a region and the quality gate's verdict on it; its scores are the rest."""

    seed: int
    strength: float
    passed: bool
    why: str = omit("")
    rest: dict = rest()

    @property
    def scores(self) -> dict:
        return self.rest


@dataclass
class RegionRecord:
    """One repainted region (a face, a hand, a user or removal mask) and how it went."""

    kind: str
    index: int | None = None
    box: list[float] = field(default_factory=list)
    skipped: str | None = omit(None)   # why it was left as it is (no model)
    before: str = omit("")             # the crop before and after (archive names), for a person to compare
    after: str = omit("")
    gate: Gate | None = omit(None)
    tries: list[GateTry] = omit(factory=list)
    seed: int | None = omit(None)      # what the kept repaint was made with
    prompt: str | None = omit(None)
    negative_prompt: str | None = omit(None)
    prompt_source: str | None = omit(None)
    steps: int | None = omit(None)
    strength: float | None = omit(None)
    guidance: float | None = omit(None)
    padding: int | None = omit(None)
    fill: str | None = omit(None)      # a removal: how the hole was filled, and whether a model refined it
    refined: bool | None = omit(None)
    controlnet: str | None = omit(None)  # a hand's ControlNet (or why none was used), its kind, scale and image
    controlnet_type: str | None = omit(None)
    controlnet_scale: float | None = omit(None)
    control_image: str | None = omit(None)
    sampler: str | None = omit(None)     # the scheduler it was painted with, and why not the image's own
    prompt_tokens: int | None = omit(None)  # the prompt's CLIP tokens (in chunks of 75 for SD 1.x/2.x)
    prompt_cut: bool | None = omit(None)    # true: the pipeline read only its first 75 tokens (SDXL, Flux)
    embeddings: list[str] = omit(factory=list)  # the textual inversions its prompts used
    loras: list[str] = omit(factory=list)       # the LoRAs it was painted with, and their weights
    missing: list[str] = omit(factory=list)     # what its prompts asked for that it was painted without, and why
    inherited: list[str] = omit(factory=list)  # what came from the image's generation record (steps, cfg, …)
    vae: str | None = omit(None)               # the image's own VAE file, when it decoded the repaint
    ip_adapter: str | None = omit(None)        # a face's IP-Adapter, its scale and image encoder
    rest: dict = rest()

    @property
    def failed_gate(self) -> bool:
        return self.gate == Gate.FAILED


@dataclass
class Alternative:
    """An A/B candidate of the inpaint stage: the same regions painted with another model or settings."""

    label: str
    picture: str = omit("")
    model: str = omit("")
    skipped: str | None = omit(None)
    regions: list[RegionRecord] = omit(factory=list)
    rest: dict = rest()


@dataclass
class InpaintDetails:
    pipeline: str | None = None
    scheduler: str | None = None
    regions: list[RegionRecord] = field(default_factory=list)
    alternatives: list[Alternative] = omit(factory=list)
    from_image: list[str] = omit(factory=list)  # the fields of the image's generation record the repaint used
    checkpoint: str | None = omit(None)  # which model painted, and why (the image's own, or [inpaint].model)
    rest: dict = rest()


@dataclass
class VariantPlan:
    variant: str
    label: str
    size: list[int]
    origin: list[int]
    output_size: list[int]
    steps: list[dict] = field(default_factory=list)
    seam_score: float | None = None
    drift: dict | None = omit(None)     # stages.colour.SeamDrift: ΔE, lightness and visibility across the seams
    gate: str | None = omit(None)       # "passed", "failed: <why>", or "not judged: <why>"
    infill: str | None = omit(None)     # the infill that alone made the new area (no generative model)
    rest: dict = rest()


@dataclass
class OutpaintDetails:
    infill: str = ""
    generative: bool = False
    variants: list[VariantPlan] = field(default_factory=list)
    max_step: float | None = None
    alpha: str | None = None            # "edge": the new canvas takes the nearest edge's transparency
    checkpoint: str | None = omit(None)  # with a generative model: which painted, and why
    prompt: str | None = omit(None)     # with a generative model: what it painted the new area with
    negative_prompt: str | None = omit(None)
    seed: int | None = omit(None)
    steps: int | None = omit(None)
    strength: float | None = omit(None)
    guidance: float | None = omit(None)
    seam_band: int | None = omit(None)
    seam_strength: float | None = omit(None)
    rest: dict = rest()


@dataclass
class UpscaleSize:
    """A picture's size before (``from``, a word Python keeps for itself: in ``rest``) and after."""

    to: list[int]
    colour_fix: str | None = omit(None)  # "wavelet", "adain", "none"
    drift: dict | None = omit(None)      # low-pass CIEDE2000 against the source resized: {"mean", "p99"}
    rest: dict = rest()

    @classmethod
    def of(cls, before: tuple[int, int] | list[int], after: tuple[int, int] | list[int], colour_fix: str | None = None,
           drift: dict | None = None) -> UpscaleSize:
        return cls(list(after), colour_fix, drift, {"from": list(before)})

    @property
    def before(self) -> list[int]:
        return list(self.rest.get("from", []))


@dataclass
class UpscaleDetails:
    backend: str = ""
    native_scale: int = 0
    tile: int | None = None
    tile_overlap: int = 0
    sizes: dict[str, UpscaleSize] = field(default_factory=dict)
    large: dict | None = omit(None)
    rest: dict = rest()


@dataclass
class Delivery:
    preset: str
    path: str
    sha256: str
    source: str = ""
    size: list[int] = field(default_factory=list)
    format: str = ""
    rendition_sha256: str = ""
    label: str = ""
    steps: list[str] = field(default_factory=list)
    rest: dict = rest()


@dataclass
class PresetFailure:
    preset: str
    reason: str
    rest: dict = rest()


@dataclass
class DeliverDetails:
    deliveries: list[Delivery] = field(default_factory=list)
    failed: list[PresetFailure] = field(default_factory=list)
    c2pa: str = ""
    held: list[PresetFailure] = omit(factory=list)  # presets kept back until a reviewer approves (infill variants)
    rest: dict = rest()


# What each stage's ``details`` are; a stage not named here records none, or plain values.
DETAILS: dict[str, type] = {"automask": AutomaskDetails, "inpaint": InpaintDetails, "outpaint": OutpaintDetails,
                            "upscale": UpscaleDetails, "deliver": DeliverDetails}
