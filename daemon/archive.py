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
from datetime import datetime, timezone
from pathlib import Path

from stages.files import (FILE_MODE, MANIFEST, Folder, atomic_save_image, atomic_write, fsync_dir,  # noqa: F401
                          sha256_file)



def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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


def attention_of(stages: list[dict]) -> list[str]:
    """Why a person should look at an image ("needs review"), from its manifest's stage entries (e.g. the
    quality gate's), each as ``<stage>: <why>``."""
    return [f"{s['name']}: {why}" for s in stages if s.get("status") == "done" for why in s.get("attention", ())]


@dataclass
class Manifest:
    id: str
    source: dict
    config_sha256: str
    started: str = field(default_factory=now_iso)
    finished: str | None = None
    status: str = "running"
    stages: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)  # per-image settings from a sidecar
    error: dict | None = None
    job: int | None = None  # the journal's id of the job that made this folder
    review: list[dict] = field(default_factory=list)  # reviewers' decisions (polishd serve): who, when, what
    runs: list[dict] = field(default_factory=list)    # earlier runs kept in runs/<n>/ ("retry with…")
    picks: list[dict] = field(default_factory=list)   # A/B picks between engines: stage, choice, who, when

    def to_json(self) -> bytes:
        data = {k: v for k, v in self.__dict__.items() if v or k in ("stages", "finished", "status")}
        return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()

    def stage(self, name: str) -> dict | None:
        return next((s for s in self.stages if s["name"] == name), None)

    def attention(self) -> list[str]:
        return attention_of(self.stages)

    def put_stage(self, entry: dict) -> None:
        """Adds a stage's entry, or replaces its earlier one where it stands (entries stay in pipeline order)."""
        names = [s["name"] for s in self.stages]
        if entry["name"] in names:
            self.stages[names.index(entry["name"])] = entry
        else:
            self.stages.append(entry)


class ArchiveFolder(Folder):
    """One image's archive folder, as the runner sees it: the stages' files plus the manifest."""

    def read_manifest(self) -> Manifest | None:
        try:
            data = json.loads(self.file(MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        known = set(Manifest.__dataclass_fields__)
        return Manifest(**{k: v for k, v in data.items() if k in known})

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write(self.file(MANIFEST), manifest.to_json())
