"""The stage contract (stages/base.py), proved by every stage in daemon/pipeline.py's list.

A new stage joins these tests by being listed there; where a test needs to know how a stage can be
made to skip, the table below must name it (the test says so when it does not).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from PIL import Image

from daemon import config as config_mod
from daemon.archive import ArchiveFolder, Manifest, StageEntry
from daemon.journal import Journal
from daemon.pipeline import STAGES, default_stages
from daemon.runner import JobStatus, Runner
from stages.base import Stage, params_hash
from stages.schema import META_FIELDS
from tests.conftest import CPU_PIPELINE, DATA, manifest_of, write_config
from tests.helpers.toy_stages import BoomStage

# A small job every stage does real work on, on the CPU and without generative weights: a face to find,
# a user's removal mask (inpainted with no model), one variant, a 2× upscale, the sheet.
JOB = """
[inpaint.remove]
fill = "telea"
""" + CPU_PIPELINE + """apply_to = ["master"]
"""

# How each stage can be made to skip for a reason of its own (None: it has none but being disabled):
# (extra config, the reason, whether the job keeps its removal mask).
OWN_SKIP: dict[str, tuple[str, str, bool] | None] = {
    "automask": ('[automask]\nhand_model = "no-such-hand.task"\n', "[automask].hand_model = 'no-such-hand.task'",
                 True),
    "inpaint": ("", "no inpainting model configured", False),  # faces found, no model, nothing to take away
    "outpaint": ("[outpaint]\nvariants = []\n", "no variants asked for", True),
    "upscale": ('[upscale]\nmodel = "animevideo3"\n', "did you mean 'animevideov3'?", True),
    "deliver": ("[deliver]\nrequire_review = true\n", "waiting for approval ([deliver].require_review = true)",
                True),
    "contact": None,
}

NAMES = [cls.name for cls in STAGES]


def _setup(tmp_path: Path, extra: str = "", removal: bool = True):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = config_mod.load(write_config(tmp_path, JOB))
    if extra:  # merged table by table, as an image's own settings would be
        cfg = config_mod.with_overrides(cfg, tomllib.loads(extra), "extra.toml")
    src = cfg.paths.inbox / "astro.png"
    Image.open(DATA / "astronaut.png").resize((256, 256)).save(src)
    if removal:
        remove = Image.new("L", (256, 256), 0)
        remove.paste(255, (20, 200, 44, 230))
        remove.save(cfg.paths.inbox / "astro.remove.png")
    journal = Journal(cfg.paths.state / "journal.sqlite3")
    data = src.read_bytes()
    journal.enqueue(src, hashlib.sha256(data).hexdigest(), len(data), src.stat().st_mtime)
    return cfg, journal


def _manifest(archive: Path) -> Manifest:
    return manifest_of(archive)


def _entry(archive: Path, name: str) -> StageEntry | None:
    return next((s for s in _manifest(archive).stages if s.name == name), None)


def _counting(stage: Stage, calls: list[str]) -> Stage:
    """Notes each call of ``stage.run`` (an instance attribute shadows the method)."""
    run = stage.run

    def counted(ctx, params):
        calls.append(stage.name)
        return run(ctx, params)
    stage.run = counted
    return stage


def test_every_stage_declares_its_part_of_the_contract():
    assert len(set(NAMES)) == len(NAMES) and len({cls.prefix for cls in STAGES}) == len(STAGES)
    for cls in STAGES:
        assert dataclasses.is_dataclass(cls.Config) and hasattr(cls.Config, "check"), cls.name
        assert isinstance(cls.consumes, frozenset) and isinstance(cls.produces, frozenset), cls.name
        assert "enabled" in {f.name for f in dataclasses.fields(cls.Config)}, cls.name
    assert set(OWN_SKIP) == set(NAMES), "every listed stage needs a row in OWN_SKIP"


# ---------------------------------------------------------------------- 1. stops at a safe point


@pytest.mark.parametrize("name", NAMES)
def test_the_stage_stops_at_a_safe_point_when_asked_and_the_job_resumes(tmp_path, name):
    cfg, journal = _setup(tmp_path)
    stages = default_stages()
    target = next(s for s in stages if s.name == name)
    inside, stop = threading.Event(), threading.Event()
    run = target.run

    def entered(ctx, params):
        inside.set()
        return run(ctx, params)
    target.run = entered
    runner = Runner(journal, lambda: cfg, stages, stop)
    runner.beat = lambda: stop.set() if inside.is_set() else None  # asked to stop at its first safe point
    out = runner.run_job(journal.claim())
    assert out.status == JobStatus.STOPPED
    assert _entry(out.archive, name) is None  # nothing recorded as done for the interrupted stage
    job = journal.get(out.job_id)
    assert job.state == "queued" and job.attempts == 0  # a clean stop is not a failed attempt
    stop.clear()
    inside.clear()
    target.run = run
    again = Runner(journal, lambda: cfg, stages).run_job(journal.claim())
    assert again.status == JobStatus.DONE and _entry(again.archive, name).status == "done"
    for stage in stages:
        stage.close()


# ---------------------------------------------------------------------- 2. config reads are in the hash


class _Recorder:
    """A config that notes every option read through it (a nested table counts as all its keys)."""

    def __init__(self, obj: Any, path: str, reads: set[str]):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_reads", reads)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        if name.startswith("__"):
            return value  # dataclasses.fields() asks for __dataclass_fields__
        path = f"{self._path}.{name}" if self._path else name
        if not self._path and dataclasses.is_dataclass(value):
            return _Recorder(value, path, self._reads)  # a table: note its keys one by one
        self._reads.add(path)
        return value


def _leaves(obj: Any, path: str) -> list[str]:
    value = obj
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    if dataclasses.is_dataclass(value):
        return [leaf for f in dataclasses.fields(value) for leaf in _leaves(obj, f"{path}.{f.name}")]
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):  # an array of tables
        return [path] + [leaf for i in range(len(value)) for leaf in _leaves(obj, f"{path}.{i}")]
    return [path]


def _other(value: Any, hint: Any) -> Any:
    """A different value of the same type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return not value
    if origin is Literal:
        return next(a for a in args if a != value)
    if origin is tuple and dataclasses.is_dataclass(args[0]):  # one table more, named apart
        item = value[-1] if value else args[0]()
        key = next(k for k in ("name", "label", "model") if hasattr(item, k))
        return value + (dataclasses.replace(item, **{key: getattr(item, key) + "-more"}),)
    if origin is tuple:
        options = typing.get_args(args[0]) if typing.get_origin(args[0]) is Literal else ("changed",)
        missing = [o for o in options if o not in value]
        return value + (missing[0],) if missing else value[:-1]
    if origin is not None and type(None) in args:  # X | None
        inner = next(a for a in args if a is not type(None))
        if value is None and typing.get_origin(inner) is tuple:  # a per-kind list left to the table above it
            return ()
        return {str: "changed", int: 1, float: 0.5}[inner] if value is None else _other(value, inner)
    if hint is Path:
        return value / "changed"
    return {int: lambda v: v + 1, float: lambda v: v + 0.25, str: lambda v: v + "-changed"}[hint](value)


def _replaced(obj: Any, parts: list[str]) -> Any:
    if parts[0].isdigit():  # one table of an array
        i = int(parts[0])
        return obj[:i] + (_replaced(obj[i], parts[1:]),) + obj[i + 1:]
    hint = typing.get_type_hints(type(obj))[parts[0]]
    new = _other(getattr(obj, parts[0]), hint) if len(parts) == 1 else _replaced(getattr(obj, parts[0]), parts[1:])
    return dataclasses.replace(obj, **{parts[0]: new})


@pytest.mark.parametrize("name", NAMES)
def test_every_config_value_the_stage_reads_is_in_its_parameters_hash(tmp_path, name):
    cfg = config_mod.load(write_config(tmp_path, JOB))
    stage = next(cls() for cls in STAGES if cls.name == name)
    reads: set[str] = set()
    before = params_hash(stage, stage.params(_Recorder(cfg, "", reads)))
    options = [p for p in reads if p.split(".")[0] not in META_FIELDS]
    assert f"{name}.enabled" in options  # it reads at least its own table
    for leaf in sorted({leaf for p in options for leaf in _leaves(cfg, p)}):
        changed = _replaced(cfg, leaf.split("."))
        assert params_hash(stage, stage.params(changed)) != before, \
            f"[{name}] reads {leaf} but its parameters hash does not change with it"


# ---------------------------------------------------------------------- 3. skip reasons reach the manifest


@pytest.mark.parametrize("name", NAMES)
def test_its_skip_reasons_reach_the_manifest_and_the_job_still_finishes(tmp_path, name):
    cases = [(f"[{name}]\nenabled = false\n", f"disabled in pipeline.toml ([{name}].enabled = false)", True)]
    if OWN_SKIP[name]:
        cases.append(OWN_SKIP[name])
    for n, (extra, reason, removal) in enumerate(cases):
        cfg, journal = _setup(tmp_path / str(n), extra, removal)
        stages = default_stages()
        out = Runner(journal, lambda cfg=cfg: cfg, stages).run_job(journal.claim())
        assert out.status == JobStatus.DONE, out.error
        entry = _entry(out.archive, name)
        assert entry.status == "skipped" and reason in entry.reason and entry.outputs == [], entry
        for stage in stages:
            stage.close()


# ---------------------------------------------------------------------- 4. resume keeps finished work


@pytest.mark.parametrize("name", NAMES)
def test_a_resume_keeps_its_outputs_when_params_and_inputs_are_unchanged(tmp_path, name):
    cfg, journal = _setup(tmp_path)
    stages = default_stages()
    first = Runner(journal, lambda: cfg, [*stages, BoomStage()]).run_job(journal.claim())
    assert first.status == JobStatus.RETRY
    done = _entry(first.archive, name)
    assert done.status == "done"
    stamps = {o: (first.archive / o).stat().st_mtime_ns for o in done.outputs}
    # Every stage before it runs again (its entry is gone), makes the same bytes: this one is kept.
    manifest = _manifest(first.archive)
    order = [s.name for s in stages]
    manifest.stages = [s for s in manifest.stages if order.index(s.name) >= order.index(name)]
    ArchiveFolder(first.archive).write_manifest(manifest)
    calls: list[str] = []
    again = Runner(journal, lambda: cfg, [_counting(s, calls) for s in stages]).run_job(journal.claim())
    assert again.status == JobStatus.DONE and again.archive == first.archive
    assert name not in calls and calls == order[:order.index(name)], calls
    assert {o: (first.archive / o).stat().st_mtime_ns for o in done.outputs} == stamps
    for stage in stages:
        stage.close()
