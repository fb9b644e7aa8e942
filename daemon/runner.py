"""The stage runner: one job through every stage, into the archive, out of the inbox.

The order of stages lives in ``default_stages`` and nowhere else.  For one job
the runner:

1. reads the dropped file once (links refused, format by content, fully decoded);
2. settles duplicates (same bytes already finished → recorded, not redone);
3. opens the archive folder and writes ``00-original.<ext>`` and the sidecars;
4. runs each stage — disabled or unable ones are recorded as skipped, ones whose
   snapshots and parameters are already in the manifest (a resumed job) are kept;
5. marks the manifest done, and only then removes the file from the inbox.

Bad input fails at once; any other error is retried up to ``max_attempts``, then
the file moves to ``failed/`` with ``<name>.error.json`` beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import structlog

from daemon import archive as arc
from daemon.archive import ArchiveFolder, Manifest
from daemon import config as config_mod
from daemon.config import Config, ConfigError
from daemon.intake import SIDECAR_KINDS, Dropped, InputError, decode, read_dropped, sidecars_for
from daemon.journal import Job, Journal
from stages.base import JobContext, Stage, StageResult, StopRequested, params_dict, params_hash

log = structlog.get_logger("polishd.runner")


def default_stages() -> list[Stage]:
    """The pipeline, in order.  Stage modules are imported here, lazily, so the CLI starts without torch."""
    from stages.automask import AutoMaskStage
    from stages.contact import ContactSheetStage
    from stages.inpaint import InpaintStage
    from stages.outpaint import OutpaintStage
    from stages.upscale import UpscaleStage

    return [
        # Find faces and hands first, on the untouched original.
        AutoMaskStage(),
        # Repaint them inside their masks; skipped (with the reason) when no model is configured.
        InpaintStage(),
        # Aspect-ratio variants of the finished master (they see the repaired faces and hands).
        OutpaintStage(),
        # Upscale after every stage that changes pixels: it finishes the master (later its variants).
        UpscaleStage(),
        # Last of all: a picture of everything above, for the person who reviews the batch.
        ContactSheetStage(),
    ]


@dataclass
class Outcome:
    job_id: int
    name: str
    status: str  # done | failed | duplicate | retry | stopped
    archive: Path | None = None
    error: str | None = None
    stages: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class _Failure(Exception):
    def __init__(self, stage: str, exc: BaseException):
        super().__init__(str(exc))
        self.stage, self.exc = stage, exc


class Runner:
    def __init__(self, journal: Journal, config: Callable[[], Config], stages: list[Stage],
                 stop: threading.Event | None = None):
        self.journal = journal
        self.config = config  # called once per job: a reload applies from the next job on
        self.stages = stages
        self.stop = stop or threading.Event()
        self.active: set[int] = set()
        self.beat: Callable[[], None] = lambda: None
        # Models are shared between worker threads: one job at a time inside a stage,
        # while other workers may be in other stages.
        self._locks = {stage.name: threading.Lock() for stage in stages}

    # ------------------------------------------------------------------ one job
    def run_job(self, job: Job) -> Outcome:
        cfg = self.config()
        consume = job.origin == "inbox"
        started = time.monotonic()
        self.active.add(job.id)
        structlog.contextvars.bind_contextvars(image=job.name, job=job.id)
        try:
            outcome = self._run(job, cfg, consume)
        except Exception as exc:  # outside any stage (a full disk, a bug): retried, then failed like the rest
            log.error("job error outside the stages", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            outcome = self._fail(job, cfg, "runner", exc, consume, manifest=None, folder=None)
        finally:
            self.active.discard(job.id)
        outcome.seconds = time.monotonic() - started
        durations = {s["name"]: s.get("duration_s") for s in outcome.stages if s.get("status") == "done"}
        log.info("job finished", status=outcome.status, archive=str(outcome.archive or ""),
                 seconds=round(outcome.seconds, 3), stages=durations, error=outcome.error)
        structlog.contextvars.unbind_contextvars("image", "job", "stage")
        return outcome

    def _run(self, job: Job, cfg: Config, consume: bool) -> Outcome:
        d = cfg.daemon
        # 1. Read the dropped file.
        try:
            dropped = read_dropped(job.path, d.formats, d.max_pixels, d.max_bytes)
        except FileNotFoundError:
            msg = f"{job.name} disappeared from {job.path.parent} before it was processed"
            self.journal.finish(job.id, "failed", error=msg, stage="intake")
            log.warning("input vanished", path=str(job.path))
            return Outcome(job.id, job.name, "failed", error=msg)
        except InputError as exc:
            return self._fail(job, cfg, "intake", exc, consume, manifest=None, folder=None)
        structlog.contextvars.bind_contextvars(image=f"{arc.safe_stem(job.name)}-{dropped.sha256[:8]}")

        # 2. Duplicates.
        if cfg.daemon.duplicates == "skip":
            first = self.journal.first_done_with(dropped.sha256, job.id)
            if first is not None and first.archive and _holds_original(Path(first.archive), dropped.sha256):
                return self._duplicate(job, first, dropped, consume)

        # 3. Archive folder, original and sidecars.
        folder = self._folder_for(job, cfg, dropped)
        manifest = folder.read_manifest()
        if manifest is None or manifest.source.get("sha256") != dropped.sha256:
            manifest = Manifest(id=folder.path.name, config_sha256=cfg.sha256,
                                source={"name": job.name, "sha256": dropped.sha256, "bytes": len(dropped.data),
                                        "format": dropped.format})
        manifest.status, manifest.config_sha256, manifest.error = "running", cfg.sha256, None
        try:
            ctx = self._prepare(job, cfg, folder, dropped, manifest)
        except InputError as exc:  # a sidecar that does not parse or validate
            return self._fail(job, cfg, "intake", exc, consume, manifest=manifest, folder=folder)

        # 4. Stages.
        try:
            self._stages(ctx, manifest)
        except StopRequested:
            folder.write_manifest(manifest)
            self.journal.requeue(job.id, count_attempt=False)
            log.info("job put back in the queue for shutdown")
            return Outcome(job.id, job.name, "stopped", folder.path, stages=manifest.stages)
        except _Failure as f:
            return self._fail(job, cfg, f.stage, f.exc, consume, manifest=manifest, folder=folder)

        # 5. Done: the manifest says so before the inbox copy goes.
        manifest.status, manifest.finished = "done", arc.now_iso()
        folder.write_manifest(manifest)
        if consume:
            self._consume(job, dropped, folder)
        self.journal.finish(job.id, "done")
        return Outcome(job.id, job.name, "done", folder.path, stages=manifest.stages)

    def _folder_for(self, job: Job, cfg: Config, dropped: Dropped) -> ArchiveFolder:
        if job.archive and _holds_original(Path(job.archive), dropped.sha256):
            return ArchiveFolder(Path(job.archive))  # a resumed job
        root = cfg.paths.archive
        root.mkdir(parents=True, exist_ok=True)
        base = root / f"{arc.safe_stem(job.name)}-{dropped.sha256[:8]}"
        path = base
        n = 2
        while path.exists():
            existing = ArchiveFolder(path).read_manifest()
            if existing is None and not any(path.iterdir()):
                break
            if existing is not None and existing.source.get("sha256") == dropped.sha256 \
                    and existing.status != "done":
                break  # a crash before the journal learned the folder: resume it
            path = base.with_name(f"{base.name}-{n}")
            n += 1
        path.mkdir(exist_ok=True)
        arc.fsync_dir(root)
        self.journal.set_archive(job.id, str(path))
        return ArchiveFolder(path)

    def _prepare(self, job: Job, cfg: Config, folder: ArchiveFolder, dropped: Dropped,
                 manifest: Manifest) -> JobContext:
        original = f"00-original.{dropped.ext}"
        target = folder.file(original)
        if not (target.exists() and arc.sha256_file(target) == dropped.sha256):
            folder.write_bytes(original, dropped.data)
        sidecars, dropped_names = {}, {}
        for name, src in sidecars_for(job.path).items():
            dropped_names[name] = src.name
            data = src.read_bytes()
            if SIDECAR_KINDS[name] in ("mask", "remove"):  # a drawn mask that does not decode cannot heal
                decode(data, src.name, ("png", "jpeg", "webp"), cfg.daemon.max_pixels)
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
        ctx = JobContext(id=folder.path.name, config=cfg, archive=folder, original=original, sha256=dropped.sha256,
                         sidecars=sidecars, overrides=overrides, stop=self.stop, beat=self.beat)
        ctx.artifacts["image"] = original
        return ctx

    def _stages(self, ctx: JobContext, manifest: Manifest) -> None:
        resuming = True  # keep earlier results only while every stage before was kept too
        for stage in self.stages:
            ctx.check_stop()
            structlog.contextvars.bind_contextvars(stage=stage.name)
            params = stage.params(ctx)
            entry = {"name": stage.name, "params": params_dict(params), "params_sha256": params_hash(stage, params)}
            previous = manifest.stage(stage.name)
            if resuming and _reusable(previous, entry, ctx):
                ctx.artifacts.update(previous.get("produces", {}))
                log.info("stage kept from an earlier attempt", outputs=previous["outputs"])
                continue
            resuming = False
            reason = None if stage.enabled(params) else f"disabled in pipeline.toml ([{stage.name}].enabled = false)"
            reason = reason or stage.able_to_run(ctx, params)
            if reason:
                log.debug("stage skipped", reason=reason)
                manifest.put_stage({**entry, "status": "skipped", "reason": reason, "outputs": []})
                ctx.archive.write_manifest(manifest)
                continue
            manifest.put_stage(self._run_stage(stage, ctx, params, entry))
            ctx.archive.write_manifest(manifest)
        structlog.contextvars.unbind_contextvars("stage")

    def _run_stage(self, stage: Stage, ctx: JobContext, params, entry: dict) -> dict:
        t0 = time.monotonic()
        try:
            with self._locks[stage.name]:
                stage.setup(ctx, params)
                try:
                    result: StageResult = stage.run(ctx, params)
                finally:
                    stage.cleanup(ctx)
        except StopRequested:
            raise
        except InputError as exc:
            raise _Failure(stage.name, exc) from exc
        except Exception as exc:
            log.error("stage failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            raise _Failure(stage.name, exc) from exc
        seconds = round(time.monotonic() - t0, 3)
        ctx.artifacts.update(result.produces)
        log.info("stage completed", summary=result.summary, outputs=result.outputs, seconds=seconds)
        out = {**entry, "status": "done", "reason": result.summary, "outputs": result.outputs,
               "models": [m.__dict__ for m in result.models], "duration_s": seconds,
               "produces": result.produces}
        for key in ("device", "dtype", "seed"):
            if getattr(result, key) is not None:
                out[key] = getattr(result, key)
        if result.details:
            out["details"] = result.details
        return out

    # ------------------------------------------------------------------ endings
    def _consume(self, job: Job, dropped: Dropped, folder: ArchiveFolder) -> None:
        """Removes the inbox file (and its sidecars) once the archive holds a byte-identical copy."""
        original = next(folder.path.glob("00-original.*"))
        if arc.sha256_file(original) != dropped.sha256:  # pragma: no cover - guarded by _prepare
            raise RuntimeError(f"archive copy of {job.name} does not match; inbox file kept")
        for name, src in sidecars_for(job.path).items():
            if folder.file(name).exists() and folder.file(name).read_bytes() == src.read_bytes():
                src.unlink()
        _unlink_if_same(job.path, dropped.sha256)
        arc.fsync_dir(job.path.parent)

    def _duplicate(self, job: Job, first: Job, dropped: Dropped, consume: bool) -> Outcome:
        folder = ArchiveFolder(Path(first.archive))
        manifest = folder.read_manifest()
        if manifest is not None:
            manifest.duplicates.append({"name": job.name, "job": job.id, "at": arc.now_iso()})
            folder.write_manifest(manifest)
        if consume:
            _unlink_if_same(job.path, dropped.sha256)
        self.journal.finish(job.id, "duplicate", dup_of=first.id)
        log.info("duplicate of an earlier image; not processed again", first_job=first.id,
                 archive=str(folder.path))
        return Outcome(job.id, job.name, "duplicate", folder.path)

    def _fail(self, job: Job, cfg: Config, stage: str, exc: BaseException, consume: bool,
              manifest: Manifest | None, folder: ArchiveFolder | None) -> Outcome:
        message = f"{type(exc).__name__}: {exc}"
        permanent = isinstance(exc, InputError)
        if not permanent and job.attempts < cfg.daemon.max_attempts:
            self.journal.requeue(job.id, error=message, stage=stage)
            if manifest is not None and folder is not None:
                manifest.status = "retrying"
                manifest.error = {"stage": stage, "message": message, "attempt": job.attempts}
                folder.write_manifest(manifest)
            log.warning("attempt failed; will retry", attempt=job.attempts, max_attempts=cfg.daemon.max_attempts,
                        error=message)
            return Outcome(job.id, job.name, "retry", folder.path if folder else None, message)
        report = {"image": job.name, "error": type(exc).__name__, "message": str(exc), "stage": stage,
                  "attempts": job.attempts, "job": job.id, "time": arc.now_iso(),
                  "archive": str(folder.path) if folder else None,
                  "traceback": None if permanent else "".join(traceback.format_exception(exc))}
        if manifest is not None and folder is not None:
            manifest.status, manifest.finished = "failed", arc.now_iso()
            manifest.error = {"stage": stage, "message": message}
            folder.write_manifest(manifest)
        destination = None
        if consume:
            destination = _move_to_failed(job.path, cfg.paths.failed, report)
        self.journal.finish(job.id, "failed", error=message, stage=stage,
                            source=str(destination) if destination else None)
        log.error("image failed", stage=stage, error=message, moved_to=str(destination or ""))
        return Outcome(job.id, job.name, "failed", folder.path if folder else None, message)


# ---------------------------------------------------------------------- helpers


def _reusable(previous: dict | None, entry: dict, ctx: JobContext) -> bool:
    if not previous or previous.get("status") != "done":
        return False
    if previous.get("params_sha256") != entry["params_sha256"]:
        return False
    return all(ctx.path(name).exists() for name in previous.get("outputs", []))


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


def _holds_original(folder: Path, sha256: str) -> bool:
    return any(arc.sha256_file(p) == sha256 for p in folder.glob("00-original.*"))


def _unlink_if_same(path: Path, sha256: str) -> None:
    """Removes ``path`` only if it still holds the bytes we archived (the user may have replaced it)."""
    try:
        if arc.sha256_file(path) == sha256:
            path.unlink()
        else:
            log.warning("inbox file changed while it was processed; left in place", path=str(path))
    except FileNotFoundError:
        pass


def _move(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError:
        shutil.move(src, dst)  # another filesystem: copy, then remove


def _move_to_failed(path: Path, failed_root: Path, report: dict) -> Path | None:
    """Moves the dropped file (a link is moved as a link, its target untouched) and writes the report."""
    failed_root.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(path):
        return None
    destination = arc.unique_path(failed_root / path.name)
    report = {**report, "moved_to": str(destination)}
    arc.atomic_write(destination.with_name(destination.name + ".error.json"),
                     (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
    sidecars = sidecars_for(path) if not path.is_symlink() else {}
    _move(path, destination)
    stem = destination.name.rsplit(".", 1)[0]
    for src in sidecars.values():
        suffix = src.name[len(path.name.rsplit(".", 1)[0]):]
        _move(src, arc.unique_path(failed_root / (stem + suffix)))
    arc.fsync_dir(failed_root)
    arc.fsync_dir(path.parent)
    return destination
