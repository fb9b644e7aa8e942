"""What a running daemon says: progress events in JSON lines, the live line on a terminal, skips once."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

from structlog.testing import capture_logs

from daemon.runner import Runner
from daemon.talk import Talk
from stages.base import JobContext, Stage, StageResult
from stages.models import ModelUnavailable
from tests.conftest import png_bytes
from tests.helpers.toy_stages import CopyStage


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class StepsParams:
    steps: int
    enabled: bool = True


class StepsStage(Stage):
    """Twenty steps, each a second on the test's clock, each a safe point that says how far it is."""

    name = "steps"
    prefix = "18"
    Config = StepsParams
    consumes = frozenset()
    produces = frozenset()

    def __init__(self, clock: Clock, steps: int = 20):
        self.clock, self.steps = clock, steps

    def params(self, config) -> StepsParams:
        return StepsParams(self.steps)

    def run(self, ctx: JobContext, params: StepsParams) -> StageResult:
        for i in range(params.steps):
            self.clock.now += 1.0
            ctx.check_stop(i + 1, params.steps, "steps")
        return StageResult(outputs=[], summary=f"{params.steps} steps")


class NoModel(CopyStage):
    name = "nomodel"

    def run(self, ctx, params):
        raise ModelUnavailable("weights.safetensors is not in [paths].models")


class Unasked(CopyStage):
    name = "unasked"

    def skip_reason(self, ctx, params):
        return "nothing to repaint: no face or hand found"


def _queue(cfg, journal, name="a.png"):
    data = png_bytes()
    path = cfg.paths.inbox / name
    path.write_bytes(data)
    st = os.lstat(path)
    journal.enqueue(path, hashlib.sha256(data).hexdigest(), st.st_size, st.st_mtime)
    return journal.claim()


def _events(logs, name):
    return [e for e in logs if e["event"] == name]


def test_json_progress_comes_at_most_every_few_seconds_with_how_far_and_ends_with_the_job(workdir, journal):
    root, cfg = workdir
    clock = Clock()
    talk = Talk(5.0, clock=clock)
    runner = Runner(journal, lambda: cfg, [StepsStage(clock)])
    runner.progress = talk
    with capture_logs() as logs:
        out = runner.run_job(_queue(cfg, journal))
        talk.tick()  # the job is over: nothing more is said of it
    assert out.status == "done"
    events = _events(logs, "progress")
    assert [(e["done"], e["stage_s"]) for e in events] == [(5, 5.0), (10, 10.0), (15, 15.0), (20, 20.0)]
    assert {(e["stage"], e["total"], e["unit"], e["job"]) for e in events} == {("steps", 20, "steps", out.job_id)}
    assert events[0]["image"] == out.archive.name  # the image as the archive names it, as every other line


def test_a_stage_that_reports_nothing_is_still_said_to_run_by_the_clock(workdir):
    clock = Clock()
    talk = Talk(5.0, clock=clock)
    with capture_logs() as logs:
        talk("upscale", 0, 0, "")
        for _ in range(12):
            clock.now += 1.0
            talk.tick()
        talk("", 0, 0, "")
        clock.now += 30
        talk.tick()
    assert [(e["stage"], e["stage_s"], e["total"]) for e in _events(logs, "progress")] == \
        [("upscale", 5.0, 0), ("upscale", 10.0, 0)]


def test_progress_every_zero_says_nothing(workdir):
    clock = Clock()
    talk = Talk(0, clock=clock)
    with capture_logs() as logs:
        talk("upscale", 0, 0, "")
        clock.now += 100
        talk("upscale", 3, 4, "tiles")
        talk.tick()
    assert _events(logs, "progress") == []


class Line:
    def __init__(self):
        self.shown: list[str] = []

    def set_description_str(self, text, refresh=True):
        self.shown.append(text)


def test_the_live_line_shows_each_running_image_its_stage_how_far_and_how_long(workdir):
    import structlog

    clock, line = Clock(), Line()
    talk = Talk(5.0, line, clock=clock)

    def job(image, stage, done, total):
        structlog.contextvars.bind_contextvars(image=image, job=1)
        talk(stage, 0, 0, "")
        clock.now += 3
        talk(stage, done, total, "tiles")

    with capture_logs() as logs:
        t = threading.Thread(target=job, args=("a.png", "upscale", 2, 8))
        t.start()
        t.join()
        job("b.png", "automask", 0, 0)
    assert line.shown[-1] == "a.png · upscale 2/8 tiles · 6 s  b.png · automask · 3 s"
    assert _events(logs, "progress") == []  # on a terminal the line says it, not events
    talk("", 0, 0, "")
    assert line.shown[-1] == "a.png · upscale 2/8 tiles · 6 s"
    structlog.contextvars.unbind_contextvars("image", "job")


def test_every_skip_is_said_once_with_its_reason_and_a_missing_model_as_a_warning(workdir, journal):
    root, cfg = workdir
    runner = Runner(journal, lambda: cfg, [Unasked(), NoModel(), CopyStage()])
    with capture_logs() as logs:
        out = runner.run_job(_queue(cfg, journal))
    assert out.status == "done"
    skips = [(e["log_level"], e["reason"]) for e in logs if "skipped" in e["event"]]
    assert skips == [("info", "nothing to repaint: no face or hand found"),
                     ("warning", "weights.safetensors is not in [paths].models")]
    assert [e for e in logs if e["event"] == "job started"][0]["attempt"] == 1
