"""Test-only stages: real files written through the real archive, no models."""

from __future__ import annotations

import time
from dataclasses import dataclass

from stages.base import JobContext, Stage, StageResult
from stages.products import Picture, Products, Slot


@dataclass(frozen=True)
class SleepParams:
    seconds: float
    enabled: bool = True


class SleepStage(Stage):
    """Sleeps in small steps (safe points between them), then writes a marker file."""

    name = "sleep"
    prefix = "15"
    Config = SleepParams
    consumes = frozenset()
    produces = frozenset()

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.runs = 0

    def params(self, config) -> SleepParams:
        return SleepParams(self.seconds)

    def run(self, ctx: JobContext, params: SleepParams) -> StageResult:
        self.runs += 1
        end = time.monotonic() + params.seconds
        while time.monotonic() < end:
            ctx.check_stop()
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        ctx.folder.write_bytes("15-sleep.txt", f"slept {params.seconds}\n".encode())
        return StageResult(outputs=["15-sleep.txt"], summary=f"slept {params.seconds} s")


@dataclass(frozen=True)
class CopyParams:
    enabled: bool = True


class CopyStage(Stage):
    """Writes the master as a PNG snapshot and makes it the new master."""

    name = "copy"
    prefix = "16"
    Config = CopyParams
    consumes = frozenset({Slot.MASTER})
    produces = frozenset({Slot.MASTER})

    def __init__(self):
        self.runs = 0

    def params(self, config) -> CopyParams:
        return CopyParams()

    def run(self, ctx: JobContext, params: CopyParams) -> StageResult:
        self.runs += 1
        ctx.check_stop()
        name = ctx.save_picture("16-copy.png", ctx.view(ctx.products.master).image())
        return StageResult(outputs=[name], products=Products(master=Picture(name, "copied")))


class BoomStage(Stage):
    """Fails every time, like a stage with a bug or a broken model."""

    name = "boom"
    prefix = "17"
    Config = CopyParams
    consumes = frozenset()
    produces = frozenset()

    def params(self, config) -> CopyParams:
        return CopyParams()

    def run(self, ctx: JobContext, params: CopyParams) -> StageResult:
        raise RuntimeError("the model exploded")


class PoisonStage(BoomStage):
    """Fails for every image whose archive name holds "poison": a poison job among good ones."""

    name = "poison"
    prefix = "18"

    def run(self, ctx: JobContext, params: CopyParams) -> StageResult:
        if "poison" in ctx.id:
            raise RuntimeError("this image poisons the model")
        return StageResult(outputs=[], summary="not poisoned")


class HangStage(SleepStage):
    """Sleeps in one piece, with no safe point: a stage stuck in a native call."""

    name = "hang"
    prefix = "19"

    def run(self, ctx: JobContext, params: SleepParams) -> StageResult:
        self.runs += 1
        time.sleep(params.seconds)
        return StageResult(outputs=[], summary=f"hung {params.seconds} s")
