"""The stage contract: what the runner promises a stage, and what a stage must do.

The runner (``daemon/runner.py``) owns the order of stages, the archive folder's
manifest, resuming and error handling.  For each job and each stage, in order, it:

1. calls ``params(config)`` — every config value the stage will use, as one frozen
   dataclass.  The stage reads nothing else of the config: its parameters hash
   (recorded in the manifest) then says exactly what its outputs depend on;
2. hands the stage a ``JobContext`` holding only the ``Products`` slots the stage
   ``consumes``, the image's archive folder, the model resolver and the stop flag;
3. keeps the stage's earlier outputs, without calling it, when the manifest shows
   it done with the same parameters hash and the same inputs (the consumed values
   and the bytes of every file they name), whatever earlier stages did;
4. otherwise records a skip when ``params.enabled`` is false or ``skip_reason``
   names one; else calls ``setup``, ``run`` and — always, whatever happened —
   ``cleanup``;
5. merges what ``run`` returned into the job's products (a stage may set only the
   slots it ``produces``) and writes the manifest.  Only the runner writes it.

A stage must:

* write its files into the archive folder through the context (``save_picture``
  attaches the source's colour profile), named ``<prefix>-…`` and listed in its
  result's ``outputs``;
* return a ``StageResult`` with typed ``products``, or ``Skipped(reason)`` when it
  finds it has nothing to do; raise ``ModelUnavailable`` (from setup or run) when a
  model it needs cannot be found or loaded — the runner records a skip with that
  reason, never retries it;
* call ``ctx.check_stop()`` between tiles, steps and regions: at those safe points
  a shutdown ends the stage with ``StopRequested`` and the job goes back in the queue;
* hold no per-job state: one instance serves many jobs (in several worker threads,
  one job at a time inside a stage) and may keep models loaded between them.
  ``close()`` unloads them at shutdown.

Any other exception fails the attempt; the runner retries the job up to
``[daemon].max_attempts`` and then moves the image to ``failed/`` with a report.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from stages.files import Folder
from stages.models import Models, ModelSetting
from stages.picture import View, open_view
from stages.products import Picture, Products, Slot
from stages.schema import section_dict


class StopRequested(Exception):
    """Raised at a safe point when the daemon is shutting down; the job goes back to the queue."""


class StageStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ModelRef:
    name: str
    sha256: str
    path: str = ""


@dataclass
class StageResult:
    outputs: list[str]                 # archive names of every file written, in order
    summary: str = ""                  # one line for people: the manifest's "reason", the log's "summary"
    products: Products = field(default_factory=Products)
    models: list[ModelRef] = field(default_factory=list)
    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    details: Any = None  # the stage's own record (stages/records.py): a typed value, or plain values
    attention: list[str] = field(default_factory=list)  # why a person should look at this image ("needs review")


@dataclass(frozen=True)
class Skipped:
    reason: str
    warn: bool = False  # a skip the user did not ask for (a model missing): said as a warning


@dataclass
class JobContext:
    """What a stage may read and write for one image."""

    id: str                    # the archive folder's name
    folder: Folder
    sha256: str                # of the dropped bytes: the image's identity (seeds derive from it)
    products: Products         # the slots this stage consumes, and only those
    models: Models
    icc: bytes | None = None   # the source's colour profile, attached to every picture written
    stop: threading.Event = field(default_factory=threading.Event)
    beat: Callable[[], None] = lambda: None  # "still making progress", for systemd's watchdog
    report: Callable[[int, int, str], None] = lambda done, total, unit: None  # for a progress bar
    stem: str = ""             # the image's name in the folder's name (what delivered files are named after)

    def __post_init__(self) -> None:
        self.stem = self.stem or self.id

    def check_stop(self, done: int | None = None, total: int | None = None, unit: str = "") -> None:
        """A safe point: long stages call this between tiles, steps and regions, saying how far they are
        (``done`` of ``total`` ``unit``) where they know."""
        self.beat()
        if total:
            self.report(done or 0, total, unit)
        if self.stop.is_set():
            raise StopRequested()

    def path(self, name: str) -> Path:
        return self.folder.file(name)

    def view(self, picture: Picture) -> View:
        """The 8-bit view of an archived picture (see stages/picture.py)."""
        return open_view(self.path(picture.name))

    def save_picture(self, name: str, image: Image.Image, **save_args: Any) -> str:
        """Writes a picture with the source's ICC profile: the colour policy of stages/picture.py."""
        if self.icc:
            save_args.setdefault("icc_profile", self.icc)
        self.folder.save_image(name, image, **save_args)
        return name

    def save_mask(self, name: str, mask: Image.Image) -> str:
        self.folder.save_image(name, mask)
        return name


class Stage(abc.ABC):
    name: ClassVar[str]                  # short and stable: its pipeline.toml table, the manifest, the logs
    prefix: ClassVar[str]                # the two digits its snapshot files start with
    Config: ClassVar[type]               # its pipeline.toml table (a frozen dataclass with check(err))
    consumes: ClassVar[frozenset[Slot]]
    produces: ClassVar[frozenset[Slot]]
    version: ClassVar[int] = 1           # bump when the same params would now give other pixels

    @abc.abstractmethod
    def params(self, config: Any) -> Any:
        """Every config value this stage uses, as a frozen dataclass with an ``enabled`` field."""

    def model_settings(self, params: Any) -> list[ModelSetting]:
        """The model settings these params name (checked by ``polishd check-config``)."""
        return []

    def setting_problems(self, params: Any) -> list[str]:
        """Other files these params name that are not there (a logo, a LUT, a key), as ``[table].key = …: why``,
        for ``polishd check-config`` and the daemon's start."""
        return []

    def skip_reason(self, ctx: JobContext, params: Any) -> str | None:
        """Why this stage has nothing to do for this job, or None.  Cheap: no model is loaded yet."""
        return None

    def setup(self, ctx: JobContext, params: Any) -> None:  # noqa: B027 (an optional hook: a stage overrides it only when it needs it)
        """Load models; called before every run, so it must be cheap when they are already loaded."""

    @abc.abstractmethod
    def run(self, ctx: JobContext, params: Any) -> StageResult | Skipped:
        """Do the work, write the snapshots, return them with the typed products."""

    def cleanup(self, ctx: JobContext) -> None:  # noqa: B027 (an optional hook: a stage overrides it only when it needs it)
        """Always called after setup: success, skip, error or stop."""

    def close(self) -> None:  # noqa: B027 (an optional hook: a stage overrides it only when it needs it)
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
