"""pipeline.toml → frozen, validated dataclasses.

Every option the code reads is declared here once, with its default; the root
``pipeline.toml`` documents the same options for people.  Errors name the file,
the table and the key, and say what is allowed::

    pipeline.toml: [upscale].scale must be one of 2, 3, 4 (got 5)
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CONFIG_ENV = "POLISHD_CONFIG"
DEFAULT_CONFIG_NAME = "pipeline.toml"


class ConfigError(ValueError):
    """pipeline.toml (or a sidecar) does not parse or does not validate."""


_META = ("source", "sha256", "raw")  # Config fields that are not options
# Tables a per-image sidecar may override: the stages', not where files go or how the daemon runs.
SIDECAR_TABLES = ("automask", "inpaint", "outpaint", "upscale", "contact")


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class PathsConfig:
    inbox: Path = Path("var/inbox")
    archive: Path = Path("var/archive")
    failed: Path = Path("var/failed")
    state: Path = Path("var/state")
    models: Path = Path("var/models")

    def check(self, err: _Errors) -> None:
        pass


@dataclass(frozen=True)
class DaemonConfig:
    watch: Literal["native", "polling"] = "native"
    stability_delay: float = 2.0
    rescan_interval: float = 60.0
    workers: int = 1
    max_attempts: int = 3
    duplicates: Literal["skip", "process"] = "skip"
    stop_timeout: float = 30.0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    formats: tuple[Literal["png", "jpeg", "webp"], ...] = ("png", "jpeg", "webp")
    ignore: tuple[str, ...] = ()
    max_pixels: int = 89_478_485
    max_bytes: int = 512 * 1024 * 1024

    def check(self, err: _Errors) -> None:
        err.at_least("stability_delay", self.stability_delay, 0.0)
        err.at_least("rescan_interval", self.rescan_interval, 1.0)
        err.at_least("workers", self.workers, 1)
        err.at_least("max_attempts", self.max_attempts, 1)
        err.at_least("stop_timeout", self.stop_timeout, 0.0)
        err.at_least("max_pixels", self.max_pixels, 1)
        err.at_least("max_bytes", self.max_bytes, 1)
        if not self.formats:
            err.add("formats", "must name at least one format")


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = "auto"

    def check(self, err: _Errors) -> None:
        pass


@dataclass(frozen=True)
class FaceMaskConfig:
    enabled: bool = True
    min_confidence: float = 0.5
    top_k: int = 0
    rank_by: Literal["area", "confidence"] = "area"
    min_area_ratio: float = 0.0
    max_area_ratio: float = 1.0
    padding: int = 8
    dilate: int = 4
    feather: float = 4.0
    merge: bool = True

    def check(self, err: _Errors) -> None:
        err.between("min_confidence", self.min_confidence, 0.0, 1.0)
        err.at_least("top_k", self.top_k, 0)
        err.between("min_area_ratio", self.min_area_ratio, 0.0, 1.0)
        err.between("max_area_ratio", self.max_area_ratio, 0.0, 1.0)
        if self.min_area_ratio > self.max_area_ratio:
            err.add("min_area_ratio", f"must not exceed max_area_ratio ({self.max_area_ratio})")
        err.at_least("padding", self.padding, 0)
        err.at_least("feather", self.feather, 0.0)


@dataclass(frozen=True)
class HandMaskConfig(FaceMaskConfig):
    min_confidence: float = 0.3
    padding: int = 24
    dilate: int = 8
    feather: float = 6.0


@dataclass(frozen=True)
class AutomaskConfig:
    enabled: bool = True
    face_models: tuple[Literal["short", "full"], ...] = ("short", "full")
    face_model_short: str = ""
    face_model_full: str = ""
    hand_model: str = ""
    num_hands: int = 12
    upsample_below: int = 768
    tile_above: int = 1536
    nms_iou: float = 0.4
    user_mask: Literal["merge", "replace"] = "merge"
    face: FaceMaskConfig = field(default_factory=FaceMaskConfig)
    hand: HandMaskConfig = field(default_factory=HandMaskConfig)

    def check(self, err: _Errors) -> None:
        if not self.face_models:
            err.add("face_models", 'must name at least one of "short", "full"')
        err.between("num_hands", self.num_hands, 1, 64)
        err.at_least("upsample_below", self.upsample_below, 0)
        err.at_least("tile_above", self.tile_above, 256)
        err.between("nms_iou", self.nms_iou, 0.0, 1.0)


@dataclass(frozen=True)
class UpscaleConfig:
    enabled: bool = True
    model: str = "x4plus"
    scale: int = 4
    long_edge: int = 0
    width: int = 0
    height: int = 0
    tile: int = 0
    tile_overlap: int = 16
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    apply_to: tuple[Literal["master", "variants"], ...] = ("master", "variants")
    threads: int = 0
    backend: Literal["auto", "torch", "openvino", "onnxruntime"] = "auto"

    def check(self, err: _Errors) -> None:
        err.one_of("scale", self.scale, (2, 3, 4))
        for key in ("long_edge", "width", "height"):
            err.between(key, getattr(self, key), 0, 32768)
        if self.long_edge and (self.width or self.height):
            err.add("long_edge", "cannot be combined with width/height; set one or the other")
        if self.tile and not 32 <= self.tile <= 4096:
            err.add("tile", f"must be 0 (automatic) or between 32 and 4096 (got {self.tile})")
        err.between("tile_overlap", self.tile_overlap, 0, 256)
        if self.tile and self.tile_overlap * 2 >= self.tile:
            err.add("tile_overlap", f"must be less than half of tile ({self.tile}) (got {self.tile_overlap})")
        err.at_least("threads", self.threads, 0)


@dataclass(frozen=True)
class InpaintKindConfig:
    """Per-kind overrides of [inpaint]; a key left out (None) inherits the [inpaint] value."""

    enabled: bool = True
    prompt: str | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    padding: int | None = None

    def check(self, err: _Errors) -> None:
        err.generation(self)


@dataclass(frozen=True)
class InpaintFaceConfig(InpaintKindConfig):
    prompt: str | None = "a detailed natural face, {prompt}"
    strength: float | None = 0.45


@dataclass(frozen=True)
class InpaintHandConfig(InpaintKindConfig):
    prompt: str | None = "a detailed natural hand with five fingers, {prompt}"
    strength: float | None = 0.6


@dataclass(frozen=True)
class InpaintRemoveConfig(InpaintKindConfig):
    """A user's ``<name>.remove.png``: what is under it is taken away, with no model needed."""

    fill: Literal["patchmatch", "telea", "navier-stokes"] = "patchmatch"
    refine: bool = True
    prompt: str | None = "seamless natural background"
    strength: float | None = 0.5


@dataclass(frozen=True)
class InpaintConfig:
    enabled: bool = True
    model: str = ""
    model_config: str = ""
    steps: int = 30
    guidance: float = 7.0
    strength: float = 0.6
    prompt: str = "{prompt}"
    negative_prompt: str = "blurry, deformed, extra fingers, bad anatomy, lowres"
    padding: int = 32
    resolution: int = 0
    seed: int = -1
    colour_match: bool = True
    idle_unload: float = 600.0
    face: InpaintFaceConfig = field(default_factory=InpaintFaceConfig)
    hand: InpaintHandConfig = field(default_factory=InpaintHandConfig)
    user: InpaintKindConfig = field(default_factory=InpaintKindConfig)
    remove: InpaintRemoveConfig = field(default_factory=InpaintRemoveConfig)

    def check(self, err: _Errors) -> None:
        err.generation(self)
        if self.resolution and (self.resolution % 8 or not 64 <= self.resolution <= 2048):
            err.add("resolution", f"must be 0 (the model's own) or a multiple of 8 from 64 to 2048 "
                                  f"(got {self.resolution})")
        err.at_least("seed", self.seed, -1)
        err.at_least("idle_unload", self.idle_unload, 0.0)


# An outpaint variant: "W:H" or "WIDTHxHEIGHT", optionally "@anchor".
VARIANT = re.compile(r"^(?:(\d+):(\d+)|(\d+)x(\d+))(?:@(center|left|right|top|bottom))?$")


@dataclass(frozen=True)
class OutpaintConfig:
    enabled: bool = True
    variants: tuple[str, ...] = ("16:9", "9:16", "4:5")
    max_step: float = 0.3
    infill: Literal["blur", "reflect", "color", "patchmatch"] = "blur"
    model: str = ""
    model_config: str = ""
    prompt: str = "{prompt}"
    negative_prompt: str = ""
    steps: int = 30
    guidance: float = 7.0
    strength: float = 0.9
    seam_band: int = 32
    seam_strength: float = 0.35
    seam_pass: bool = True

    def check(self, err: _Errors) -> None:
        for v in self.variants:
            m = VARIANT.match(v)
            if not m or "0" in (m.group(1), m.group(2), m.group(3), m.group(4)):
                err.add("variants", f'entries are "W:H" or "WIDTHxHEIGHT", optionally "@left", "@right", "@top", '
                                    f'"@bottom" or "@center" (got {v!r})')
        err.between("max_step", self.max_step, 0.05, 1.0)
        err.generation(self)
        err.between("seam_band", self.seam_band, 0, 512)
        err.between("seam_strength", self.seam_strength, 0.0, 1.0)


@dataclass(frozen=True)
class ContactConfig:
    enabled: bool = True
    height: int = 384

    def check(self, err: _Errors) -> None:
        err.between("height", self.height, 64, 4096)


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    log: LogConfig = field(default_factory=LogConfig)
    automask: AutomaskConfig = field(default_factory=AutomaskConfig)
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)
    outpaint: OutpaintConfig = field(default_factory=OutpaintConfig)
    upscale: UpscaleConfig = field(default_factory=UpscaleConfig)
    contact: ContactConfig = field(default_factory=ContactConfig)
    source: Path | None = None
    sha256: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def check(self, err: _Errors) -> None:
        pass

    def model_path(self, value: str) -> Path:
        """A model path from the config: absolute, or relative to the config's folder."""
        p = Path(value).expanduser()
        if not p.is_absolute() and self.source is not None:
            p = self.source.parent / p
        return p


# --------------------------------------------------------------------------- loading


class _Errors:
    """Collects every problem in one table so the user fixes them in one go."""

    def __init__(self, origin: str, table: str, problems: list[str]):
        self.origin, self.table, self.problems = origin, table, problems

    def add(self, key: str, message: str) -> None:
        where = f"[{self.table}].{key}" if self.table else f"[{key}]"
        self.problems.append(f"{self.origin}: {where} {message}")

    def one_of(self, key: str, value: Any, allowed: tuple) -> None:
        if value not in allowed:
            names = ", ".join(json.dumps(a) if isinstance(a, str) else str(a) for a in allowed[:-1])
            last = json.dumps(allowed[-1]) if isinstance(allowed[-1], str) else str(allowed[-1])
            self.add(key, f"must be one of {names} or {last} (got {_show(value)})")

    def at_least(self, key: str, value: float, low: float) -> None:
        if value < low:
            self.add(key, f"must be at least {low} (got {_show(value)})")

    def between(self, key: str, value: float, low: float, high: float) -> None:
        if not low <= value <= high:
            self.add(key, f"must be between {low} and {high} (got {_show(value)})")

    def generation(self, section: Any) -> None:
        """The diffusion settings [inpaint], its per-kind tables and [outpaint] share; None = inherited."""
        for key, (low, high) in _GENERATION_BOUNDS.items():
            value = getattr(section, key, None)
            if value is not None:
                self.between(key, value, low, high)


_GENERATION_BOUNDS = {"steps": (1, 500), "guidance": (0.0, 50.0), "strength": (0.0, 1.0), "padding": (0, 1024)}


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _build(cls: type, data: dict, table: str, origin: str, problems: list[str]) -> Any:
    """Turns one TOML table into ``cls``, type-checking each key and naming the bad ones."""
    err = _Errors(origin, table, problems)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _META}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            known = "keys" if table else "tables"
            hint = f"; did you mean {close[0]!r}?" if close else f"; known {known}: {', '.join(fields)}"
            where = f"key [{table}].{key}" if table else f"table [{key}]"
            problems.append(f"{origin}: unknown {where}{hint}")
            continue
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                err.add(key, f"must be a table (got {_show(value)})")
                continue
            kwargs[key] = _build(kind, value, f"{table}.{key}" if table else key, origin, problems)
            continue
        ok, converted = _convert(kind, value)
        if ok:
            kwargs[key] = converted
        else:
            err.add(key, _describe(kind, value))
    obj = cls(**kwargs)
    obj.check(err)
    return obj


def _convert(kind: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(kind)
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is str:
        return isinstance(value, str), value
    if kind is Path:
        return isinstance(value, str) and value != "", Path(value) if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):  # "X | None": TOML has no null, so it is an X
        inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
        return _convert(inner, value)
    if origin is Literal:
        return value in typing.get_args(kind) and type(value) in {type(a) for a in typing.get_args(kind)}, value
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(kind)
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, c = _convert(item, v)
            if not ok:
                return False, value
            out.append(c)
        return True, tuple(out)
    raise TypeError(f"unsupported config type {kind!r}")  # pragma: no cover


def _describe(kind: Any, value: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _describe([a for a in typing.get_args(kind) if a is not type(None)][0], value)
    if origin is Literal:
        allowed = typing.get_args(kind)
        return "must be one of " + ", ".join(_show(a) for a in allowed) + f" (got {_show(value)})"
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if typing.get_origin(item) is Literal:
            allowed = ", ".join(_show(a) for a in typing.get_args(item))
            return f"must be a list of {allowed} (got {_show(value)})"
        return f"must be a list of {item.__name__} (got {_show(value)})"
    name = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            Path: "a non-empty path string"}.get(kind, str(kind))
    return f"must be {name} (got {_show(value)})"


def parse(text: str, origin: str = DEFAULT_CONFIG_NAME, source: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    problems: list[str] = []
    cfg = _build(Config, data, "", origin, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    base = source.parent if source is not None else Path.cwd()
    paths = PathsConfig(**{f.name: _resolve(base, getattr(cfg.paths, f.name))
                           for f in dataclasses.fields(PathsConfig)})
    digest = hashlib.sha256(text.encode()).hexdigest()
    return dataclasses.replace(cfg, paths=paths, source=source, sha256=digest, raw=data)


def with_overrides(cfg: Config, overrides: dict, origin: str) -> Config:
    """``cfg`` with a sidecar's tables merged in, validated like pipeline.toml itself."""
    problems = [f"{origin}: [{k}] cannot be set per image; only {', '.join(SIDECAR_TABLES)} can"
                for k in overrides if k not in SIDECAR_TABLES]
    if problems:
        raise ConfigError("\n".join(problems))
    merged = _deep_merge(cfg.raw, overrides)
    built = _build(Config, merged, "", origin, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    digest = hashlib.sha256(json.dumps(merged, sort_keys=True, default=str).encode()).hexdigest()
    return dataclasses.replace(built, paths=cfg.paths, source=cfg.source, sha256=digest, raw=merged)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else Path(os.path.normpath(base / p))


def load(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse(text, origin=path.name, source=path.resolve())


def default_path(explicit: str | None) -> Path:
    """--config, then $POLISHD_CONFIG, then ./pipeline.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else Path(DEFAULT_CONFIG_NAME)


def section_dict(obj: Any) -> dict:
    """A section as plain JSON-able data (for manifests and parameter hashes)."""
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(obj))
