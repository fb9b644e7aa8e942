"""The stage runner: one job through every stage, into the archive, out of the inbox.

The order of stages lives in ``daemon/pipeline.py``; the contract between the
runner and a stage is written in ``stages/base.py``.  For one job the runner:

1. reads the dropped file once (links refused, format by content, fully decoded),
   keeps what the stages need of it (orientation, colour profile, prompt) and
   lets the decoded pixels go;
2. settles duplicates (same bytes already finished → recorded, not redone);
3. opens the archive folder and writes ``00-original.<ext>``, the sidecars and,
   for a turned photo, ``00-upright.png`` (``stages/picture.py``);
4. runs each stage, handing it the typed products it consumes — disabled or
   unable ones are recorded as skipped; ones whose parameters and inputs match a
   finished entry in the manifest (a resumed job) are kept without running;
5. marks the manifest done, and only then removes the file from the inbox.

Bad input fails at once; any other error is retried up to ``max_attempts``, then
the file moves to ``failed/`` with ``<name>.error.json`` beside it.  The runner is
the only writer of ``manifest.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import threading
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import structlog
from PIL import Image

from daemon import archive as arc
from daemon import config as config_mod
from daemon import webhooks
from daemon.archive import (
    ArchiveFolder,
    DuplicateRecord,
    ErrorRecord,
    ImageStatus,
    Manifest,
    ModelRecord,
    SourceRecord,
    StageEntry,
)
from daemon.config import Config, ConfigError
from daemon.intake import SIDECAR_KINDS, Dropped, InputError, Undecodable, decode, read_dropped, sidecars_for
from daemon.journal import Job, Journal
from stages import generation, generative, picture, prompts, records
from stages.base import JobContext, Skipped, Stage, StageResult, StageStatus, StopRequested, params_dict, params_hash
from stages.models import ModelUnavailable
from stages.products import Picks, Picture, Products, Source

log = structlog.get_logger("polishd.runner")


class JobStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    RETRY = "retry"        # the attempt failed; the job is queued again
    WAITING = "waiting"    # the file was still being written: queued again, no attempt counted
    DISK_FULL = "disk full"  # no space to write, or read-only: queued again, no attempt counted; the daemon pauses
    STOPPED = "stopped"    # put back in the queue for a shutdown
    TAKEN_OVER = "taken over"  # a cluster worker's job, sent on to another while this one could not beat


@dataclass
class Outcome:
    job_id: int
    name: str
    status: JobStatus
    archive: Path | None = None
    error: str | None = None
    stages: list[StageEntry] = field(default_factory=list)
    seconds: float = 0.0


class Interrupted(RuntimeError):
    """A job started more often than ``max_attempts`` allows, none of those attempts having ended."""


class JobTimeout(Exception):
    """A cluster job that ran past ``[cluster].task_timeout``: the attempt fails (and is retried)."""


class _StopOrDeadline:
    """The stop flag a stage sees: set by a shutdown, once the job's deadline has passed, or once the attempt
    no longer owns its job."""

    def __init__(self, stop: threading.Event, deadline: float | None, owns: Callable[[], bool] = lambda: True):
        self.stop, self.deadline, self.owns = stop, deadline, owns

    def is_set(self) -> bool:
        return self.stop.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline) \
            or not self.owns()

    def wait(self, timeout: float | None = None) -> bool:
        if self.deadline is not None:
            timeout = max(0.0, min(timeout if timeout is not None else 1e9, self.deadline - time.monotonic()))
        return self.stop.wait(timeout) or self.is_set()


class _Failure(Exception):
    def __init__(self, stage: str, exc: BaseException):
        super().__init__(str(exc))
        self.stage, self.exc = stage, exc


class JobLog(Protocol):
    """What a job records while it runs: its folder, the bytes it read, and the one question it asks (did these
    bytes finish earlier?).  The journal is one; a cluster worker's ``Recorder`` writes the calls down."""

    def set_archive(self, job_id: int, archive: str | None) -> None: ...

    def set_sha256(self, job_id: int, sha256: str) -> None: ...

    def first_done_with(self, sha256: str, before_id: int) -> Earlier | None: ...


class Earlier(Protocol):
    """An earlier finished job with the same bytes: its id and archive folder."""

    id: int
    archive: str | None


class Endings(Protocol):
    """What the end of an attempt does to the journal and the user's file (``JournalEndings``), or the record of
    it a cluster worker sends back (``Recorder``)."""

    def requeue(self, job: Job, *, error: str | None = None, stage: str | None = None,
                count_attempt: bool = True) -> None: ...

    def done(self, job: Job, sha256: str, archive: Path) -> None: ...

    def duplicate(self, job: Job, first_id: int, sha256: str) -> None: ...

    def failed(self, job: Job, message: str, stage: str, report: FailureReport | None,
               problems: list[str] | None = None) -> str: ...


@dataclass(frozen=True)
class Attempt:
    """One attempt at a job: the config it runs with, where it records what it does and how it ends, and (for a
    cluster worker) the time past which the next safe point fails it (``time.monotonic()``)."""

    cfg: Config
    journal: JobLog
    endings: Endings
    deadline: float | None = None
    # Whether this attempt still owns its job (a cluster worker: its task's lease).  One that lost it — a
    # worker stopped (SIGSTOP, a frozen VM) long enough for the job to be sent on — stops at its next safe
    # point and writes nothing more: the archive is the other worker's.
    owns: Callable[[], bool] = lambda: True


@dataclass(frozen=True)
class FailureReport:
    """``failed/<name>.error.json``: why an image failed, built in one place for the runner, the worker and the
    coordinator."""

    image: str
    error: str      # the exception's kind ("InputError" for every fault of the input itself)
    message: str
    stage: str
    attempts: int
    job: int
    time: str = ""
    archive: str | None = None
    traceback: str | None = None

    @classmethod
    def of(cls, job: Job, error: str, message: str, stage: str, archive: Path | None = None,
           exc: BaseException | None = None) -> FailureReport:
        """The report of ``job``; with ``exc``, its traceback (a fault of the input itself needs none)."""
        return cls(job.name, error, message, stage, job.attempts, job.id, arc.now_iso(),
                   str(archive) if archive else None, "".join(traceback.format_exception(exc)) if exc else None)


class Runner:
    def __init__(self, journal: Journal | None, config: Callable[[], Config], stages: list[Stage],
                 stop: threading.Event | None = None):
        # The daemon's own attempts: its journal, the inbox's endings, the config in force (called once per job,
        # so a reload applies from the next job on).  A cluster worker passes an Attempt of its own per job.
        self.journal = journal
        self.config = config
        self.stages = stages
        self.stop = stop or threading.Event()
        self.active: set[int] = set()
        self.beat: Callable[[], None] = lambda: None
        # (stage, done, total, unit) as a stage starts (0, 0, ""), at its safe points, and with stage "" when the
        # job is over: for a progress bar or daemon/talk.py.
        self.progress: Callable[[str, int, int, str], None] = lambda stage, done, total, unit: None
        # Models are shared between worker threads: one job at a time inside a stage,
        # while other workers may be in other stages.
        self._locks = {stage.name: threading.Lock() for stage in stages}
        self._folders: dict[int, Path] = {}  # job id → its archive folder, once this attempt knows it

    # ------------------------------------------------------------------ one job
    def attempt(self) -> Attempt:
        """An attempt of the daemon's own: the journal and the inbox, the config in force now."""
        return Attempt(self.config(), self.journal, JournalEndings(self.journal, self.config))

    def run_job(self, job: Job, attempt: Attempt | None = None) -> Outcome:
        a = attempt or self.attempt()
        started = time.monotonic()
        self.active.add(job.id)
        structlog.contextvars.bind_contextvars(image=job.name, job=job.id)
        log.info("job started", attempt=job.attempts, path=str(job.path))
        try:
            outcome = self._run(job, a)
        except Exception as exc:  # outside any stage (a full disk, a bug): retried, then failed like the rest
            log.error("job error outside the stages", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            outcome = self._fail(job, a, "runner", exc, manifest=None, folder=None)
        finally:
            self.active.discard(job.id)
            self._folders.pop(job.id, None)
            self.progress("", 0, 0, "")
        outcome.seconds = time.monotonic() - started
        durations = {s.name: s.duration_s for s in outcome.stages if s.done}
        log.info("job finished", status=outcome.status, archive=str(outcome.archive or ""),
                 seconds=round(outcome.seconds, 3), stages=durations, error=outcome.error)
        structlog.contextvars.unbind_contextvars("image", "job", "stage")
        return outcome

    def _run(self, job: Job, a: Attempt) -> Outcome:
        cfg = a.cfg
        d = cfg.daemon
        generative.configure(cfg.inpaint.max_loaded)
        if job.attempts > d.max_attempts:  # started that often and never ended: what ran it died each time
            return self._fail(job, a, "runner", Interrupted(
                f"started {job.attempts - 1} times without finishing (the process running it ended each time, "
                f"as a crash or a kill -9 does); [daemon].max_attempts = {d.max_attempts}"), None, None)
        # 1. Read the dropped file.
        try:
            dropped = read_dropped(job.path, d.formats, d.max_pixels, d.max_bytes)
        except FileNotFoundError:
            msg = f"{job.name} disappeared from {job.path.parent} before it was processed"
            a.endings.failed(job, msg, "intake", report=None)
            log.warning("input vanished", path=str(job.path))
            return Outcome(job.id, job.name, JobStatus.FAILED, error=msg)
        except Undecodable as exc:
            if (job.origin == "inbox" or job.watched) and self._still_being_written(job, cfg.daemon.stability_delay):
                a.endings.requeue(job, count_attempt=False)
                log.info("input still being written; back in the queue", reason=str(exc))
                return Outcome(job.id, job.name, JobStatus.WAITING)
            return self._fail(job, a, "intake", exc, manifest=None, folder=None)
        except InputError as exc:
            return self._fail(job, a, "intake", exc, manifest=None, folder=None)
        structlog.contextvars.bind_contextvars(image=f"{arc.safe_stem(job.name)}-{dropped.sha256[:8]}")
        if dropped.sha256 != job.sha256:  # the file changed after it was queued: record what is being processed
            a.journal.set_sha256(job.id, dropped.sha256)
        decoded, dropped.image = dropped.image, None  # the stages decode what they read themselves

        # 2. Duplicates (a job that runs an archived image again is that image, not a copy of it).
        if cfg.daemon.duplicates == "skip" and (first := _duplicate_of(job, a, dropped.sha256)) is not None:
            return self._duplicate(job, a, first, dropped)

        # 3. Archive folder, original and sidecars.
        folder = self._folder_for(job, a, dropped)
        folder.guard = _owned_or_stop(a)
        if swept := folder.sweep_partial():
            log.info("half-written files of an interrupted attempt removed", files=swept)
        manifest = folder.read_manifest()
        if manifest is None or manifest.source.sha256 != dropped.sha256:
            manifest = Manifest(id=folder.path.name, config_sha256=cfg.sha256,
                                source=SourceRecord(job.name, dropped.sha256, len(dropped.data), dropped.format))
        manifest.status, manifest.config_sha256, manifest.error = ImageStatus.RUNNING, cfg.sha256, None
        manifest.job = job.id
        try:
            cfg, sidecars = self._prepare(job, cfg, folder, dropped, manifest, _upright_size(decoded))
        except InputError as exc:  # a sidecar that does not parse or validate
            return self._fail(job, a, "intake", exc, manifest=manifest, folder=folder)
        source, icc = _intake_picture(folder, dropped, decoded, sidecars)
        manifest.source.generation, manifest.source.notes = source.generation, dropped.notes
        for note in dropped.notes:
            log.warning("part of the file is not taken", note=note)
        del decoded

        # 4. Stages.
        verdict = manifest.verdict()
        products = Products(source=source, master=source.picture, review=verdict, picks=Picks(verdict.picks))
        try:
            self._stages(_JobState(cfg, folder, dropped.sha256, icc, a.deadline, a.owns), products, manifest)
        except StopRequested:
            return self._stopped(job, a, folder, manifest)
        except _Failure as f:
            return self._fail(job, a, f.stage, f.exc, manifest=manifest, folder=folder)
        return self._done(job, a, folder, manifest, dropped.sha256)

    def _done(self, job: Job, a: Attempt, folder: ArchiveFolder, manifest: Manifest, sha256: str) -> Outcome:
        """5. Done: the manifest says so before the inbox copy goes."""
        if not a.owns():
            return self._taken_over(job, folder)
        manifest.status, manifest.finished = ImageStatus.DONE, arc.now_iso()
        folder.write_manifest(manifest)
        a.endings.done(job, sha256, folder.path)
        return Outcome(job.id, job.name, JobStatus.DONE, folder.path, stages=manifest.stages)

    def _stopped(self, job: Job, a: Attempt, folder: ArchiveFolder, manifest: Manifest) -> Outcome:
        """A shutdown (or a lost lease) at a safe point: what is done stays, the job goes back."""
        if not a.owns():
            return self._taken_over(job, folder)
        folder.write_manifest(manifest)
        a.endings.requeue(job, count_attempt=False)
        log.info("job put back in the queue for shutdown")
        return Outcome(job.id, job.name, JobStatus.STOPPED, folder.path, stages=manifest.stages)

    def _still_being_written(self, job: Job, delay: float) -> bool:
        """A file that does not decode is looked at once more after ``stability_delay``: a writer that paused
        longer than that has changed its size or mtime meanwhile (the watcher judged it stable too soon)."""
        self.stop.wait(delay)
        try:
            now = os.lstat(job.path)
        except OSError:
            return False
        return (now.st_size, now.st_mtime) != (job.bytes, job.mtime)  # as the watcher saw it when it queued it

    def _folder_for(self, job: Job, a: Attempt, dropped: Dropped) -> ArchiveFolder:
        if job.archive and _holds_original(Path(job.archive), dropped.sha256):
            self._folders[job.id] = Path(job.archive)
            return ArchiveFolder(Path(job.archive))  # a resumed job
        root = a.cfg.paths.archive
        root.mkdir(parents=True, exist_ok=True)
        base = root / f"{arc.safe_stem(job.name)}-{dropped.sha256[:8]}"
        path = base
        n = 2
        while path.exists():
            existing = ArchiveFolder(path).read_manifest()
            if existing is None and not any(path.iterdir()):
                break
            if existing is not None and existing.source.sha256 == dropped.sha256 \
                    and (existing.status != ImageStatus.DONE or existing.job == job.id):
                break  # a crash before the journal learned the folder (or its result was lost): resume it
            path = base.with_name(f"{base.name}-{n}")
            n += 1
        path.mkdir(exist_ok=True)
        arc.fsync_dir(root)
        a.journal.set_archive(job.id, str(path))
        self._folders[job.id] = path
        return ArchiveFolder(path)

    def _prepare(self, job: Job, cfg: Config, folder: ArchiveFolder, dropped: Dropped,
                 manifest: Manifest, size: tuple[int, int]) -> tuple[Config, dict[str, str]]:
        """Writes the original and the sidecars; returns the config with the image's own settings merged in,
        and the archive names of the sidecars by kind ("mask", "remove", "toml", "json").  ``size``: the
        upright picture's, which a drawn mask must match in shape."""
        original = f"00-original.{dropped.ext}"
        target = folder.file(original)
        if not (target.exists() and arc.sha256_file(target) == dropped.sha256):
            folder.write_bytes(original, dropped.data)
        sidecars, dropped_names = {}, {}
        found = ({n: folder.file(n) for n in SIDECAR_KINDS if folder.file(n).is_file()} if _reruns_archive(job)
                 else sidecars_for(job.path))  # an archived image runs again with its archived sidecars
        for name, src in found.items():
            dropped_names[name] = src.name
            data = src.read_bytes()
            if SIDECAR_KINDS[name] in ("mask", "remove"):  # a drawn mask that does not decode cannot heal
                _, mask = decode(data, src.name, ("png", "jpeg", "webp"), cfg.daemon.max_pixels)
                _same_shape(mask.size, size, src.name, job.name)
            if not folder.file(name).exists() or folder.file(name).read_bytes() != data:
                folder.write_bytes(name, data)
            sidecars[SIDECAR_KINDS[name]] = name
        settings = sidecars.get("toml") or sidecars.get("json")
        overrides = _sidecar_overrides(folder, settings, dropped_names.get(settings)) if settings else {}
        if overrides:
            try:
                cfg = config_mod.with_overrides(cfg, overrides, dropped_names[settings])
            except ConfigError as exc:
                raise InputError(str(exc)) from None
            manifest.overrides = overrides
        folder.write_manifest(manifest)
        return cfg, sidecars

    def _stages(self, job: _JobState, products: Products, manifest: Manifest) -> None:
        digests = _Digests(job.folder, {products.source.original: job.sha256})
        models = config_mod.models_for(job.cfg)
        for stage in self.stages:
            if self.stop.is_set() or not job.owns():
                raise StopRequested()
            structlog.contextvars.bind_contextvars(stage=stage.name)
            params = stage.params(job.cfg)
            inputs = products.only(stage.consumes)
            entry = StageEntry(stage.name, StageStatus.SKIPPED, params_dict(params), params_hash(stage, params),
                               digests.of(inputs))
            previous = manifest.stage(stage.name)
            if _reusable(previous, entry, job.folder):
                products = products.merged(previous.products)
                log.info("stage kept from an earlier attempt", outputs=previous.outputs)
                continue
            self.progress(stage.name, 0, 0, "")
            ctx = JobContext(id=job.folder.path.name, stem=job.stem, folder=job.folder, sha256=job.sha256,
                             products=inputs,
                             models=models, icc=job.icc, stop=_StopOrDeadline(self.stop, job.deadline, job.owns),
                             beat=self.beat,
                             report=lambda done, total, unit, name=stage.name: self.progress(name, done, total, unit))
            outcome, seconds = self._attempt(stage, ctx, params, job.deadline)
            if isinstance(outcome, Skipped):
                (log.warning if outcome.warn else log.info)("stage skipped", reason=outcome.reason)
                entry.reason = outcome.reason
                manifest.put_stage(entry)
            else:
                products = products.merged(_checked(stage, outcome.products))
                manifest.put_stage(_done_entry(entry, outcome, seconds))
            if not job.owns():
                raise StopRequested()
            job.folder.write_manifest(manifest)
        structlog.contextvars.unbind_contextvars("stage")

    def _attempt(self, stage: Stage, ctx: JobContext, params,
                 deadline: float | None) -> tuple[StageResult | Skipped, float]:
        """The stage's result or skip, and the seconds it took; a stop passes through; any other error
        becomes a _Failure."""
        if not getattr(params, "enabled", True):
            return Skipped(f"disabled in pipeline.toml ([{stage.name}].enabled = false)"), 0.0
        reason = stage.skip_reason(ctx, params)
        if reason:
            return Skipped(reason), 0.0
        t0 = time.monotonic()
        try:
            with self._locks[stage.name]:
                try:
                    stage.setup(ctx, params)
                    result = stage.run(ctx, params)
                finally:
                    stage.cleanup(ctx)
        except StopRequested:
            if deadline is not None and time.monotonic() >= deadline:
                raise _Failure(stage.name, JobTimeout("the job ran past [cluster].task_timeout")) from None
            raise
        except ModelUnavailable as exc:  # said once, as the stage's skip
            return Skipped(str(exc), warn=True), 0.0
        except InputError as exc:
            raise _Failure(stage.name, exc) from exc
        except Exception as exc:
            log.error("stage failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            raise _Failure(stage.name, exc) from exc
        return result, round(time.monotonic() - t0, 3)


    # ------------------------------------------------------------------ endings
    def _duplicate(self, job: Job, a: Attempt, first: Earlier, dropped: Dropped) -> Outcome:
        folder = ArchiveFolder(Path(first.archive))
        manifest = folder.read_manifest()
        if manifest is not None:
            manifest.duplicates.append(DuplicateRecord(job.name, job.id, arc.now_iso()))
            folder.write_manifest(manifest)
        a.endings.duplicate(job, first.id, dropped.sha256)
        log.info("duplicate of an earlier image; not processed again", first_job=first.id,
                 archive=str(folder.path))
        return Outcome(job.id, job.name, JobStatus.DUPLICATE, folder.path)

    def _taken_over(self, job: Job, folder: ArchiveFolder) -> Outcome:
        log.warning("the job was sent to another worker while this one could not beat (stopped or frozen); "
                    "nothing more is written here: the archive is the other worker's")
        return Outcome(job.id, job.name, JobStatus.TAKEN_OVER, folder.path, "taken over by another worker")

    def _fail(self, job: Job, a: Attempt, stage: str, exc: BaseException,
              manifest: Manifest | None, folder: ArchiveFolder | None) -> Outcome:
        if not a.owns():
            return self._taken_over(job, folder) if folder is not None else \
                Outcome(job.id, job.name, JobStatus.TAKEN_OVER, None, "taken over by another worker")
        full = disk_full(exc)
        if full is not None:
            return self._no_space(job, a, full, manifest, folder)
        permanent = isinstance(exc, InputError)
        kind = "InputError" if permanent else type(exc).__name__  # one name for every fault of the input itself
        message = f"{kind}: {exc}"
        if not permanent and job.attempts < a.cfg.daemon.max_attempts:
            a.endings.requeue(job, error=message, stage=stage)
            if manifest is not None and folder is not None:
                manifest.status = ImageStatus.RETRYING
                manifest.error = ErrorRecord(stage, message, job.attempts)
                folder.write_manifest(manifest)
            log.warning("attempt failed; will retry", attempt=job.attempts, max_attempts=a.cfg.daemon.max_attempts,
                        error=message)
            return Outcome(job.id, job.name, JobStatus.RETRY, folder.path if folder else None, message)
        report = FailureReport.of(job, kind, str(exc), stage, folder.path if folder else None,
                                  None if permanent else exc)
        # Whatever fails from here on (a full disk, a name the file system refuses), the job ends failed
        # in the journal with the reason, and the worker moves on.
        problems = []
        if manifest is not None and folder is not None:
            manifest.status, manifest.finished = ImageStatus.FAILED, arc.now_iso()
            manifest.error = ErrorRecord(stage, message)
            try:
                folder.write_manifest(manifest)
            except OSError as err:
                problems.append(f"manifest not written: {err}")
        error = a.endings.failed(job, message, stage, report=report, problems=problems)
        return Outcome(job.id, job.name, JobStatus.FAILED, folder.path if folder else None, error)


    def _no_space(self, job: Job, a: Attempt, where: str, manifest: Manifest | None,
                  folder: ArchiveFolder | None) -> Outcome:
        """Not the image's fault: back in the queue with no attempt counted, and no archive folder left
        behind that holds nothing finished (the original is still where the user put it)."""
        archive = folder.path if folder is not None else (
            self._folders.get(job.id) or (Path(job.archive) if job.archive else None))
        finished = manifest is not None and any(s.done for s in manifest.stages)
        if archive is not None and archive.is_dir() and not finished:
            shutil.rmtree(archive, ignore_errors=True)
            a.journal.set_archive(job.id, None)
            archive = None
        a.endings.requeue(job, error=where, stage="runner", count_attempt=False)
        log.warning("nothing can be written; the job goes back to the queue", where=where)
        return Outcome(job.id, job.name, JobStatus.DISK_FULL, archive, error=where)


# ---------------------------------------------------------------------- endings


class JournalEndings:
    """What the end of an attempt does to the journal and to the user's file: the one place that removes an
    inbox file, moves one to ``failed/``, or settles a job.  A cluster worker records these calls instead
    (daemon/cluster.py), and the coordinator, which owns the inbox and the journal, makes them."""

    def __init__(self, journal: Journal, config: Callable[[], Config]):
        self.journal, self.config = journal, config

    def requeue(self, job: Job, *, error: str | None = None, stage: str | None = None,
                count_attempt: bool = True) -> None:
        self.journal.requeue(job.id, error=error, stage=stage, count_attempt=count_attempt)

    def done(self, job: Job, sha256: str, archive: Path) -> None:
        """The manifest says done: the inbox file goes once the archive holds a byte-identical copy."""
        folder = ArchiveFolder(archive)
        if job.origin == "inbox":
            _consume(job.path, sha256, folder)
            _upload_folder_gone(job)
        manifest = folder.read_manifest()
        attention = manifest.attention() if manifest is not None else []
        timings = {s.name: s.duration_s for s in manifest.stages if s.done and s.duration_s is not None} \
            if manifest is not None else None
        payload = webhooks.job_payload(job, "done", archive, manifest)
        events = ["done"] + (["needs_review"] if attention else []) + (["delivered"] if payload["deliverables"]
                                                                       else [])
        self.journal.finish(job.id, "done", attention="\n".join(attention) or None, timings=timings,
                            outbox=webhooks.calls(self.config(), events, payload))
        if attention:
            log.warning("image needs review", reasons=attention)

    def duplicate(self, job: Job, first_id: int, sha256: str) -> None:
        if job.origin == "inbox":
            first = self.journal.get(first_id)
            if first is not None and first.archive:
                _remove_sidecars(job.path, Path(first.archive))  # the same settings: kept with the first
            _unlink_if_same(job.path, sha256)
            _upload_folder_gone(job)
        self.journal.finish(job.id, "duplicate", dup_of=first_id)

    def failed(self, job: Job, message: str, stage: str, report: FailureReport | None,
               problems: list[str] | None = None) -> str:
        """Moves an inbox file to ``failed/`` with its report (when there is one) and ends the job failed.
        Whatever goes wrong on the way, the job ends failed with the reason; returns the error recorded."""
        problems = list(problems or [])
        destination = None
        if job.origin == "inbox" and report is not None:
            try:
                destination = _move_to_failed(job.path, self.config().paths.failed, report)
            except OSError as err:
                problems.append(f"not moved to failed/ ({err}); left in the inbox and not taken again until "
                                "it changes")
        error = "; ".join([message, *problems])
        calls = webhooks.calls(self.config(), ["failed"], webhooks.job_payload(job, "failed", None, error=error))
        self.journal.finish(job.id, "failed", error=error, stage=stage,
                            source=str(destination) if destination else None, outbox=calls)
        if report is not None:
            log.error("image failed", stage=stage, error=error, moved_to=str(destination or ""))
        _upload_folder_gone(job)
        return error


# ---------------------------------------------------------------------- helpers


def _consume(path: Path, sha256: str, folder: ArchiveFolder) -> None:
    """Removes the inbox file (and its sidecars) once the archive holds a byte-identical copy."""
    manifest = folder.read_manifest()
    original = next(folder.path.glob("00-original.*"), None)
    if manifest is None or manifest.status != ImageStatus.DONE or original is None \
            or arc.sha256_file(original) != sha256:
        raise RuntimeError(f"the archive {folder.path} does not hold a finished, verified copy of {path.name}; "
                           "inbox file kept")
    _remove_sidecars(path, folder.path)
    _unlink_if_same(path, sha256)
    arc.fsync_dir(path.parent)


def _upload_folder_gone(job: Job) -> None:
    """An upload's own folder under state/uploads, once its file has left it (archived or in failed/)."""
    if job.watched == "upload":
        with contextlib.suppress(OSError):  # not empty (the file stayed): kept, as the file is
            job.path.parent.rmdir()


def _remove_sidecars(path: Path, archive: Path) -> None:
    """The inbox sidecars of ``path`` that ``archive`` holds byte for byte."""
    for name, src in sidecars_for(path).items():
        kept = archive / name
        if kept.is_file():
            _unlink_if_same(src, arc.sha256_file(kept))


def _same_sidecars(path: Path, archive: Path) -> bool:
    """A file is a duplicate only with the settings it came with: its sidecars are those archived with the
    first one (none if none).  The same picture dropped with other settings is processed again."""
    mine = {name: src.read_bytes() for name, src in sidecars_for(path).items()}
    theirs = {name: (archive / name).read_bytes() for name in SIDECAR_KINDS if (archive / name).is_file()}
    return mine == theirs



def disk_full(exc: BaseException) -> str | None:
    """What keeps anything from being written, if that is what ``exc`` or its causes are — "disk full at …"
    (the disk or the quota), "read-only at …" (a file system mounted read-only, or gone so); else None."""
    import errno
    import sqlite3

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            where = str(exc.filename) if exc.filename else "the archive or state folder"
            return f"{'read-only' if exc.errno == errno.EROFS else 'disk full'} at {where}"
        if isinstance(exc, sqlite3.OperationalError) and ("full" in str(exc) or "readonly" in str(exc)):
            return f"{'disk full' if 'full' in str(exc) else 'read-only'} at the journal (in [paths].state)"
        exc = getattr(exc, "exc", None) or exc.__cause__ or exc.__context__
    return None


def _upright_size(image: Image.Image) -> tuple[int, int]:
    w, h = image.size
    return (h, w) if picture.orientation(image) in (5, 6, 7, 8) else (w, h)  # the EXIF turns that swap sides


def _same_shape(mask: tuple[int, int], size: tuple[int, int], mask_name: str, image_name: str) -> None:
    """A drawn mask at another size but the picture's shape is scaled to it (a mask drawn on a preview); one
    of another shape would be stretched over the wrong places: refused, by name."""
    (mw, mh), (w, h) = mask, size
    if abs(mw * h - mh * w) > 0.01 * mh * w:
        raise InputError(f"{mask_name} is {mw}×{mh}, another shape than {image_name} ({w}×{h} upright): draw the "
                         "mask over the picture, at its size or at least its shape; it is not stretched to fit")
    if (mw, mh) != (w, h):
        log.info("the drawn mask is scaled to the picture", mask=mask_name, mask_size=f"{mw}×{mh}",
                 size=f"{w}×{h}")


def _owned_or_stop(a: Attempt) -> Callable[[], None]:
    """The archive folder's guard: an attempt that lost its job writes nothing more (Attempt.owns)."""

    def guard() -> None:
        if not a.owns():
            raise StopRequested()
    return guard


@dataclass
class _JobState:
    """What every stage of one job shares: the config (with the image's own settings), the folder, the identity."""

    cfg: Config
    folder: ArchiveFolder
    sha256: str
    icc: bytes | None
    deadline: float | None = None  # past this (time.monotonic()), the next safe point fails the attempt
    owns: Callable[[], bool] = lambda: True  # Attempt.owns

    @property
    def stem(self) -> str:
        """The folder's name less its ``-<first 8 hex of sha256>`` (a ``-2`` folder keeps its whole name)."""
        name, tail = self.folder.path.name, f"-{self.sha256[:8]}"
        return name[: -len(tail)] if name.endswith(tail) and len(name) > len(tail) else name


class _Digests:
    """sha256 of archive files, each read once per job: a stage's inputs are its consumed values and these."""

    def __init__(self, folder: ArchiveFolder, known: dict[str, str]):
        self.folder, self.known = folder, dict(known)

    def file(self, name: str) -> str:
        if name not in self.known:
            self.known[name] = arc.sha256_file(self.folder.file(name))
        return self.known[name]

    def of(self, inputs: Products) -> str:
        blob = json.dumps({"values": inputs.to_json(), "files": {n: self.file(n) for n in inputs.files()}},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _reusable(previous: StageEntry | None, entry: StageEntry, folder: ArchiveFolder) -> bool:
    """A finished entry with the same parameters and inputs, whose files are all still there."""
    if previous is None or not previous.done:
        return False
    if (previous.params_sha256, previous.inputs_sha256) != (entry.params_sha256, entry.inputs_sha256):
        return False
    return all(folder.file(name).exists() for name in previous.outputs)


def _done_entry(entry: StageEntry, result: StageResult, seconds: float) -> StageEntry:
    """The stage's finished entry; its details are checked against the stage's record type as they are kept."""
    log.info("stage completed", summary=result.summary, outputs=result.outputs, seconds=seconds)
    details = result.details or None
    kind = records.DETAILS.get(entry.name)
    if kind is not None and isinstance(details, dict):
        details = records.from_json(kind, details, f"{entry.name} details")
    return dataclasses.replace(
        entry, status=StageStatus.DONE, reason=result.summary, outputs=list(result.outputs),
        models=[ModelRecord(m.name, m.sha256, m.path) for m in result.models], duration_s=seconds,
        products=result.products, device=result.device, dtype=result.dtype, seed=result.seed, details=details,
        attention=list(result.attention))


def _checked(stage: Stage, products: Products) -> Products:
    extra = products.slots() - stage.produces
    if extra:
        raise RuntimeError(f"stage {stage.name} produced {sorted(extra)}, which it does not declare")
    return products


def _intake_picture(folder: ArchiveFolder, dropped: Dropped, decoded: Image.Image,
                    sidecars: dict[str, str]) -> tuple[Source, bytes | None]:
    """The picture model at intake: upright once (00-upright.png), its colour profile, its prompt."""
    original = f"00-original.{dropped.ext}"
    icc = picture.icc_of(decoded)
    turned = picture.upright(decoded)
    if turned is None and dropped.readable is not None:  # the pixels as Pillow reads them, for every stage
        turned = decoded
    if turned is not None:
        if not folder.file(picture.UPRIGHT).exists():
            folder.save_image(picture.UPRIGHT, turned, **({"icc_profile": icc} if icc else {}))
        shown, size = Picture(picture.UPRIGHT), turned.size
    else:
        shown, size = Picture(original), decoded.size
    record = generation.read(decoded)
    source = Source(original=original, picture=shown, size=size, prompt=prompts.of(record), generation=record,
                    user_mask=sidecars.get("mask"), remove_mask=sidecars.get("remove"))
    return source, icc


SIDECAR_LIMIT = 64 * 1024  # bytes: a sidecar is a few settings, not a payload


def _sidecar_overrides(folder: ArchiveFolder, name: str, shown: str) -> dict:
    """Per-image settings from ``<name>.toml`` (or ``.json``): tables of pipeline.toml to override."""
    data = folder.file(name).read_bytes()
    if len(data) > SIDECAR_LIMIT:
        raise InputError(f"{shown}: larger than {SIDECAR_LIMIT} bytes")
    try:
        parsed = tomllib.loads(data.decode("utf-8")) if name.endswith(".toml") else json.loads(data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{shown}: per-image settings do not parse: {exc}") from None
    if not isinstance(parsed, dict):
        raise InputError(f"{shown}: per-image settings must be a table of pipeline.toml sections")
    return parsed


def _reruns_archive(job: Job) -> bool:
    """A job that runs an archived image again (review's approval or "retry with…"): its source is the
    original in its own archive folder."""
    return job.origin == "process" and job.archive is not None and Path(job.source).parent == Path(job.archive)


def _duplicate_of(job: Job, a: Attempt, sha256: str) -> Job | None:
    """The earlier finished job this one repeats: the same bytes, archived, with the same sidecars (a job that
    runs an archived image again is that image, not a copy of it)."""
    if _reruns_archive(job):
        return None
    first = a.journal.first_done_with(sha256, job.id)
    if first is None or not first.archive or not _holds_original(Path(first.archive), sha256):
        return None
    if not _same_sidecars(job.path, Path(first.archive)):
        log.info("the same picture with settings of its own: processed again", first_job=first.id)
        return None
    return first


def _holds_original(folder: Path, sha256: str) -> bool:
    return any(arc.sha256_file(p) == sha256 for p in folder.glob("00-original.*"))


def _unlink_if_same(path: Path, sha256: str) -> None:
    """Removes ``path`` only if it holds the bytes we archived (the user may have replaced it, at any moment).

    The name is first moved aside (one atomic rename to a hidden name the watcher ignores), and what was moved
    is hashed: a file written to ``path`` after that is never touched, whenever it arrives.  If what was moved
    is not ours, it goes back to its name; if that name is taken again meanwhile, beside it (``-2``), so no
    file is ever replaced or lost."""
    tag = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:12]  # short: the name may be near the limit
    # The bytes it should hold and its suffixes are in the name too: a process killed before the check leaves
    # the file aside, and the next start settles it (``settle_removals``).
    suffix = "".join(Path(path.name).suffixes)[-32:]
    aside = path.with_name(f"{REMOVING}{tag}-{sha256[:12]}-{os.getpid()}-{threading.get_ident()}{suffix}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    _between_rename_and_check(path)
    if arc.sha256_file(aside) == sha256:
        aside.unlink()
        return
    try:
        os.link(aside, path)  # back under its name, unless a newer file took it: link never replaces
        aside.unlink()
        log.warning("inbox file changed while it was processed; left in place", path=str(path))
        return
    except FileExistsError:
        kept = arc.unique_path(path)
    except OSError:  # a file system without hard links
        kept = path if not os.path.lexists(path) else arc.unique_path(path)
    os.rename(aside, kept)
    log.warning("inbox file changed while it was processed; kept", path=str(kept))


REMOVING = ".polishd-removing-"


def settle_removals(inbox: Path) -> list[Path]:
    """Files an earlier process moved aside to remove (``_unlink_if_same``) and was killed before it checked
    them: one holding the bytes its name says (archived before the removal began) is removed; any other
    (written to the inbox name just as the removal began) goes back beside the inbox's files, visible, as
    ``recovered-<tag><suffixes>``, to be taken as a new file.  Nothing else runs in the inbox at start (it is
    locked).  Returns the files put back."""
    back: list[Path] = []
    for aside in sorted(inbox.glob(f"{REMOVING}*")):
        parts = aside.name[len(REMOVING):].split("-", 3)
        if len(parts) < 4 or not aside.is_file():
            continue
        tag, expected = parts[0], parts[1]
        if arc.sha256_file(aside)[:12] == expected:
            aside.unlink()
            log.info("an earlier removal finished", file=aside.name)
            continue
        suffix = "".join(Path(parts[3]).suffixes)
        kept = arc.unique_path(inbox / f"recovered-{tag}{suffix}")
        os.rename(aside, kept)
        back.append(kept)
        log.warning("an inbox file an earlier process was removing had changed; put back", path=str(kept))
    return back


def _between_rename_and_check(path: Path) -> None:
    """A seam for the race test: another writer may act here (nothing happens in production)."""


def _move(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError:
        shutil.move(src, dst)  # another filesystem: copy, then remove


def _move_to_failed(path: Path, failed_root: Path, report: FailureReport) -> Path | None:
    """Moves the dropped file (a link is moved as a link, its target untouched) and writes the report."""
    failed_root.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(path):
        return None
    destination = arc.unique_path(failed_root / arc.short_name(path.name))
    record = {**dataclasses.asdict(report), "moved_to": str(destination)}
    arc.atomic_write(destination.with_name(destination.name + ".error.json"),
                     (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())
    sidecars = sidecars_for(path) if not path.is_symlink() else {}
    try:
        _move(path, destination)
    except OSError:
        destination.with_name(destination.name + ".error.json").unlink(missing_ok=True)  # no report without it
        raise
    stem = destination.name.rsplit(".", 1)[0]
    for src in sidecars.values():
        suffix = src.name[len(path.name.rsplit(".", 1)[0]):]
        _move(src, arc.unique_path(failed_root / (stem + suffix)))
    arc.fsync_dir(failed_root)
    arc.fsync_dir(path.parent)
    return destination
