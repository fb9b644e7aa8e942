"""The per-image archive folder: atomic writes, numbered snapshots, manifest.json.

``archive/<stem>-<first 8 hex of sha256>/`` holds ``00-original.<ext>``
(byte-identical to what was dropped), the stages' numbered snapshots and
``manifest.json``.  Every file is written to a temporary name in the same
folder, fsynced, moved into place with ``os.replace`` and the folder fsynced, so
a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from stages import records
from stages.base import StageStatus
from stages.files import FILE_MODE, MANIFEST, Folder, atomic_save_image, atomic_write, fsync_dir, sha256_file  # noqa: F401
from stages.generation import Generation
from stages.picture import UPRIGHT
from stages.products import Products, Verdict
from stages.records import InpaintDetails, RegionRecord


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


def safe_stem(name: str, limit: int = 80) -> str:
    """A folder-name-safe stem from an untrusted file name.

    Keeps letters and digits of any script; everything else (spaces, newlines,
    control characters, path separators) becomes ``_``; no leading dots.
    """
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    stem = unicodedata.normalize("NFC", stem)
    stem = _UNSAFE.sub("_", stem).strip("._") or "image"
    return stem[:limit]


# A name in failed/ leaves room for "-NN", ".error.json" and a sidecar's suffix within the usual
# 255-byte limit of one file name.
FAILED_NAME_BYTES = 180


def short_name(name: str, limit: int = FAILED_NAME_BYTES) -> str:
    """``name`` if it fits in ``limit`` bytes, else its start, a short hash of the whole, and its extension."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext = name, ""
    digest = hashlib.sha256(raw).hexdigest()[:8]
    keep = limit - len(ext.encode()) - len(digest) - 2
    start = stem.encode("utf-8", "surrogateescape")[:keep].decode("utf-8", "ignore")
    return f"{start}-{digest}" + (f".{ext}" if ext else "")


def unique_path(path: Path) -> Path:
    """``path`` itself if free, else ``name-2.ext``, ``name-3.ext``, …: nothing is overwritten."""
    if not os.path.lexists(path):
        return path
    stem, suffix = (path.name.split(".", 1) + [""])[:2]
    suffix = f".{suffix}" if suffix else ""
    n = 2
    while True:
        candidate = path.with_name(f"{stem}-{n}{suffix}")
        if not os.path.lexists(candidate):
            return candidate
        n += 1


MANIFEST_VERSION = 2  # 1: every manifest before the version field (read as it was, see _upgrade)


class ImageStatus(StrEnum):
    RUNNING = "running"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"


@dataclass
class SourceRecord:
    name: str
    sha256: str
    bytes: int = 0
    format: str = "png"
    generation: Generation | None = records.omit(None)  # how its metadata says it was made (stages/generation.py)
    notes: list[str] = records.omit(factory=list)  # what of the file was not taken (an animation's other frames)
    rest: dict = records.rest()


@dataclass
class ModelRecord:
    name: str = ""
    sha256: str = ""
    path: str = ""
    rest: dict = records.rest()


@dataclass
class StageEntry:
    """One stage's line in the manifest: what it was given (params and inputs, by hash), how it ended, what it
    wrote and handed on, and its own typed record (``details``: see ``stages.records.DETAILS``)."""

    name: str
    status: StageStatus
    params: dict = field(default_factory=dict)
    params_sha256: str = ""
    inputs_sha256: str = records.omit("")
    reason: str = ""
    outputs: list[str] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)
    duration_s: float | None = records.omit(None)
    products: Products = records.omit(factory=Products)
    device: str | None = records.omit(None)
    dtype: str | None = records.omit(None)
    seed: int | None = records.omit(None)
    details: Any = records.omit(None)
    attention: list[str] = records.omit(factory=list)
    rest: dict = records.rest()

    @property
    def done(self) -> bool:
        return self.status == StageStatus.DONE


@dataclass
class DuplicateRecord:
    name: str
    job: int | None = None
    at: str = ""
    rest: dict = records.rest()


@dataclass
class ErrorRecord:
    stage: str
    message: str
    attempt: int | None = records.omit(None)
    rest: dict = records.rest()


@dataclass
class ReviewDecision:
    who: str
    at: str
    decision: str  # approve | reject
    reason: str = ""
    variant: str | None = records.omit(None)
    rest: dict = records.rest()


@dataclass
class RunRecord:
    """An earlier run kept in ``runs/<n>/`` when a reviewer retried the image with other settings."""

    run: int
    folder: str
    who: str = ""
    at: str = ""
    settings: dict = field(default_factory=dict)
    rest: dict = records.rest()


@dataclass
class PickRecord:
    stage: str
    choice: str
    shown: list[str] = field(default_factory=list)
    who: str = ""
    at: str = ""
    rest: dict = records.rest()


@dataclass
class Candidate:
    """One picture of an A/B comparison: ``choice`` names the engine (or "main"), ``picture`` its file."""

    choice: str
    picture: str


@dataclass
class Manifest:
    """``manifest.json``: one image's record.  Read and written only here (``ArchiveFolder``); JSON on disk."""

    id: str
    source: SourceRecord
    config_sha256: str
    version: int = MANIFEST_VERSION
    started: str = field(default_factory=now_iso)
    finished: str | None = None
    status: ImageStatus = ImageStatus.RUNNING
    stages: list[StageEntry] = field(default_factory=list)
    duplicates: list[DuplicateRecord] = records.omit(factory=list)
    overrides: dict = records.omit(factory=dict)  # per-image settings from a sidecar
    error: ErrorRecord | None = records.omit(None)
    job: int | None = records.omit(None)  # the journal's id of the job that made this folder
    review: list[ReviewDecision] = records.omit(factory=list)  # reviewers' decisions (polishd serve)
    runs: list[RunRecord] = records.omit(factory=list)    # earlier runs kept in runs/<n>/ ("retry with…")
    picks: list[PickRecord] = records.omit(factory=list)  # A/B picks between engines
    rest: dict = records.rest()

    # ------------------------------------------------------------------ (de)serialising
    def to_json(self) -> bytes:
        return (json.dumps(records.to_json(self), indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest.json") -> Manifest:
        """Any manifest written since the first release; ManifestError names what does not fit."""
        try:
            if not isinstance(data, dict):
                raise records.RecordError(f"expected a table, got {type(data).__name__}")
            data = _upgrade(data)
            manifest = records.from_json(cls, data)
            for entry in manifest.stages:
                kind = records.DETAILS.get(entry.name)
                if kind is not None and isinstance(entry.details, dict):
                    entry.details = records.from_json(kind, entry.details, f"stages.{entry.name}.details")
        except records.RecordError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        return manifest

    # ------------------------------------------------------------------ reading
    def stage(self, name: str) -> StageEntry | None:
        return next((s for s in self.stages if s.name == name), None)

    def details(self, name: str) -> Any:
        """A finished stage's typed record, or None."""
        entry = self.stage(name)
        return entry.details if entry is not None and entry.done else None

    def attention(self) -> list[str]:
        """Why a person should look at this image ("needs review"), each as ``<stage>: <why>``."""
        return [f"{s.name}: {why}" for s in self.stages if s.done for why in s.attention]

    def products(self) -> Products:
        """The typed hand-offs of the image as recorded, later stages' over earlier ones'."""
        products = Products()
        for entry in self.stages:
            products = products.merged(entry.products)
        return products

    @property
    def original(self) -> str:
        """The archive name of the byte-identical original."""
        ext = {"jpeg": "jpg"}.get(self.source.format, self.source.format)
        return f"00-original.{ext}"

    def outputs(self) -> list[str]:
        return [n for s in self.stages for n in s.outputs]

    def listed(self) -> set[str]:
        """The files this manifest accounts for: the original (and its upright copy), the drawn sidecar masks,
        and every stage's outputs; plain names only."""
        names = {self.original, UPRIGHT, "00-sidecar-mask.png", "00-sidecar-remove.png", *self.outputs()}
        return {n for n in names if n and "/" not in n and "\\" not in n and n not in (".", "..")}

    def regions(self) -> list[RegionRecord]:
        """The repainted regions with their before and after crops."""
        details = self.details("inpaint")
        return [r for r in details.regions if r.before and r.after] if details else []

    def comparisons(self) -> list[tuple[str, list[Candidate]]]:
        """The A/B comparisons: per stage, its candidates, the stage's own result first."""
        found: list[tuple[str, list[Candidate]]] = []
        inpaint = self.stage("inpaint")
        alternatives = [a for a in inpaint.details.alternatives if a.picture] \
            if inpaint is not None and isinstance(inpaint.details, InpaintDetails) else []
        if alternatives:
            main = next((n for n in inpaint.outputs if n.endswith("-inpaint.png")), "20-inpaint.png")
            found.append(("inpaint", [Candidate("main", main)] + [Candidate(a.label, a.picture) for a in alternatives]))
        upscaled = [u for u in self.products().upscaled or () if u.source == "master"]
        others = [u for u in upscaled if u.engine]
        if others:
            entry = self.stage("upscale")
            main_name = str(entry.params.get("model", "upscale")) if entry else "upscale"
            main = next((u.picture.name for u in upscaled if not u.engine), None)
            found.append(("upscale", [Candidate(main_name, main or self.master())]
                          + [Candidate(u.engine, u.picture.name) for u in others]))
        return found

    def master(self, start: str | None = None) -> str:
        """The finished picture: the upscaled master, else the repaired one, else ``start`` (the picture the
        stages began from: the upright copy of a turned photo), else the original."""
        products = self.products()
        upscaled = {u.source: u.picture.name for u in products.upscaled or () if not u.engine}
        return upscaled.get("master") or (products.master.name if products.master else start or self.original)

    def picked(self, stage: str) -> str | None:
        picks = [p for p in self.picks if p.stage == stage]
        return picks[-1].choice if picks else None

    def verdict(self) -> Verdict:
        """The reviewers' word so far: the newest decision on the image itself, and the newest pick per stage."""
        decisions = [r for r in self.review if not r.variant]
        picks = {p.stage: p.choice for p in self.picks}
        variants = {r.variant: r.decision for r in self.review if r.variant}
        return Verdict(approved=bool(decisions) and decisions[-1].decision == "approve",
                       picks=tuple(sorted(picks.items())), variants=tuple(sorted(variants.items())))

    # ------------------------------------------------------------------ writing
    def put_stage(self, entry: StageEntry) -> None:
        """Adds a stage's entry, or replaces its earlier one where it stands (entries stay in pipeline order)."""
        names = [s.name for s in self.stages]
        if entry.name in names:
            self.stages[names.index(entry.name)] = entry
        else:
            self.stages.append(entry)


class ManifestError(ValueError):
    """A manifest.json that is not JSON or not a manifest."""


def _upgrade(data: dict) -> dict:
    """A manifest of an earlier version, brought to this one (in memory: the file changes when next written)."""
    version = data.get("version", 1)
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise records.RecordError(f"version {version!r} is newer than this polishd reads ({MANIFEST_VERSION})")
    if version < 2:
        data = {**data, "version": MANIFEST_VERSION}
        for entry in data.get("stages") or []:
            if isinstance(entry, dict) and entry.get("name") == "inpaint" and isinstance(entry.get("details"), dict):
                _crops_by_name(entry)
            if isinstance(entry, dict) and "products" not in entry and isinstance(entry.get("produces"), dict):
                entry["products"] = _products_by_name(entry["produces"])
    return data


def _products_by_name(produces: dict) -> dict:
    """Before the typed hand-offs (November 2026) a stage listed what it made by role and file name: the
    detections picture, the repaired master and the upscales are read from it.  Masks and variants named there
    lack what their types need (bounds, frames) and stay in the stage's outputs only."""
    products: dict = {}
    upscaled = []
    for role, name in produces.items():
        if not isinstance(role, str) or not isinstance(name, str):
            continue
        if role == "detections":
            products["detections"] = {"detections": [], "picture": {"name": name}}
        elif role == "master":
            products["master"] = {"name": name}
        elif role == "upscaled" or role.startswith("upscaled-"):
            source = role.partition("-")[2] or "master"
            upscaled.append({"source": source, "picture": {"name": name}})
    if upscaled:
        products["upscaled"] = upscaled
    return products


def _crops_by_name(entry: dict) -> None:
    """Version 1 named a region's crops only by file name (``<prefix>-<kind>-<index>-before.png``)."""
    outputs = [n for n in entry.get("outputs") or [] if isinstance(n, str)]
    for region in entry["details"].get("regions") or []:
        if not isinstance(region, dict) or "before" in region:
            continue
        tail = f"-{region.get('kind')}-{region.get('index')}-before."
        before = next((n for n in outputs if tail in n), None)
        if before and before.replace("-before.", "-after.") in outputs:
            region["before"], region["after"] = before, before.replace("-before.", "-after.")


class ArchiveFolder(Folder):
    """One image's archive folder, as the runner sees it: the stages' files plus the manifest."""

    def read_manifest(self) -> Manifest | None:
        try:
            data = json.loads(self.file(MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{self.file(MANIFEST)}: not JSON ({exc})") from None
        return Manifest.from_json(data, str(self.file(MANIFEST)))

    def write_manifest(self, manifest: Manifest) -> None:
        if self.guard is not None:
            self.guard()
        atomic_write(self.file(MANIFEST), manifest.to_json())

    def sweep_partial(self) -> list[str]:
        """Removes what an attempt killed in the middle of a write left: ``.<name>.<random>.tmp`` files
        (stages/files.py writes every file so).  Called by the attempt that now owns the folder."""
        gone = []
        for p in self.path.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                gone.append(p.name)
        return sorted(gone)
