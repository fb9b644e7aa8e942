"""The contract every stage keeps, and what a stage sees of a job.

A stage is an object with:

``name``            short, stable, used in the manifest and in logs;
``prefix``          the two-digit number its snapshot files start with;
``params(ctx)``     its typed parameters for this job (a frozen dataclass);
``able_to_run(ctx, params)``  None, or the reason it has nothing to do here;
``setup(ctx, params)``        load what it needs (models stay loaded between jobs);
``run(ctx, params) -> StageResult``  do the work, write snapshots, list them;
``cleanup(ctx)``    always called after ``run`` — success, error or stop.

The runner (``daemon/runner.py``) owns the order, the manifest, resuming and
error handling; a stage only does its one thing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from PIL import Image

from daemon.archive import ArchiveFolder
from daemon.config import Config, section_dict


class StopRequested(Exception):
    """Raised at a safe point when the daemon is shutting down; the job goes back to the queue."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    sha256: str
    path: str = ""


@dataclass
class StageResult:
    outputs: list[str]
    summary: str = ""
    models: list[ModelRef] = field(default_factory=list)
    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # Names of archive files later stages build on, e.g. {"master": "20-inpaint.png"}.
    produces: dict[str, str] = field(default_factory=dict)


@dataclass
class JobContext:
    """What a stage may read and write for one image."""

    id: str
    config: Config
    archive: ArchiveFolder
    original: str  # archive name of 00-original.<ext>
    sha256: str  # of the dropped bytes: the image's identity (seeds derive from it)
    sidecars: dict[str, str]  # archive names of sidecars, by kind ("mask", "remove", "toml", "json")
    overrides: dict = field(default_factory=dict)  # the per-image settings a sidecar gave (already in config)
    artifacts: dict[str, str] = field(default_factory=dict)  # e.g. master, mask-face, variant-16x9
    stop: threading.Event = field(default_factory=threading.Event)
    beat: Callable[[], None] = lambda: None  # "still making progress", for systemd's watchdog

    def check_stop(self) -> None:
        """A safe point: long stages call this between tiles or steps."""
        self.beat()
        if self.stop.is_set():
            raise StopRequested()

    def path(self, name: str) -> Path:
        return self.archive.file(name)

    @property
    def master_name(self) -> str:
        return self.artifacts.get("master", self.original)

    def open_master(self) -> Image.Image:
        with Image.open(self.path(self.master_name)) as im:
            im.load()
            return im


class Stage:
    name: ClassVar[str]
    prefix: ClassVar[str]
    version: ClassVar[int] = 1  # bump when the same params would now give other pixels

    def params(self, ctx: JobContext) -> Any:
        raise NotImplementedError

    def enabled(self, params: Any) -> bool:
        return bool(getattr(params, "enabled", True))

    def able_to_run(self, ctx: JobContext, params: Any) -> str | None:
        return None

    def setup(self, ctx: JobContext, params: Any) -> None:
        """Load models; called before every run, so it must be cheap when already loaded."""

    def run(self, ctx: JobContext, params: Any) -> StageResult:
        raise NotImplementedError

    def cleanup(self, ctx: JobContext) -> None:
        """Always called after run."""

    def close(self) -> None:
        """Unload models (daemon shutdown)."""


def from_section(params_cls: type, section: Any, **extra: Any) -> Any:
    """A stage's params from its config section (nested tables kept as dataclasses), plus extra fields."""
    return params_cls(**{f.name: getattr(section, f.name) for f in dataclasses.fields(section)}, **extra)


def params_dict(params: Any) -> dict:
    return section_dict(params) if dataclasses.is_dataclass(params) else dict(params)


def params_hash(stage: Stage, params: Any) -> str:
    blob = json.dumps({"stage": stage.name, "version": stage.version, "params": params_dict(params)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
