"""What the dashboard shows: does the pipeline keep up, and is its output good.

Everything is read from the journal (no manifest is opened): jobs ended per hour over the last day, each
stage's median and 95th-percentile seconds over the jobs done in that day, the queue's depth and the age
of its oldest job, images waiting for a look and failures, the reviewers' approval rate, the A/B win rates,
and the newest finished images.  The charts are plain SVG drawn by the template from the geometry made here.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

from daemon import ops
from daemon.config import Config
from daemon.journal import Journal

DAY = 24 * 3600
CHART_W, CHART_H = 720, 140      # the throughput chart's plot area, in SVG units
STAGE_W, STAGE_ROW = 460, 26     # the time-per-stage chart: bar length at the slowest p95, row height
LATEST = 12                      # thumbnails of the newest finished images


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank: a value that was measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def duration(seconds: float | None) -> str:
    """12 s, 4 min, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < DAY:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // DAY} d {s % DAY // 3600} h"


def throughput(hourly: list[dict], now: float) -> dict:
    """Bars for the jobs ended per hour (done below, failed stacked on top), labelled by local hour."""
    top = max([h["done"] + h["failed"] for h in hourly] + [1])
    step = CHART_W / len(hourly)
    bars = []
    for i, h in enumerate(hourly):
        start = now - (len(hourly) - i) * 3600
        done_h = CHART_H * h["done"] / top
        failed_h = CHART_H * h["failed"] / top
        label = time.strftime("%H:%M", time.localtime(start))
        bars.append({"x": round(i * step + 1, 1), "w": round(step - 2, 1),
                     "done_y": round(CHART_H - done_h, 1), "done_h": round(done_h, 1),
                     "failed_y": round(CHART_H - done_h - failed_h, 1), "failed_h": round(failed_h, 1),
                     "label": label, "tick": i % 3 == 0, **h})
    return {"bars": bars, "top": top, "w": CHART_W, "h": CHART_H,
            "done": sum(h["done"] for h in hourly), "failed": sum(h["failed"] for h in hourly)}


def stage_times(seconds: dict[str, list[float]], order: list[str]) -> dict:
    """One row a stage, in pipeline order: median and p95 as bars on one scale, with the numbers."""
    names = [s for s in order if s in seconds] + sorted(set(seconds) - set(order))
    rows = [{"stage": s, "n": len(seconds[s]), "median": statistics.median(seconds[s]), "p95": p95(seconds[s])}
            for s in names]
    longest = max([r["p95"] for r in rows] + [1e-9])
    for i, r in enumerate(rows):
        r.update(y=i * STAGE_ROW, median_w=round(STAGE_W * r["median"] / longest, 1),
                 p95_w=round(STAGE_W * r["p95"] / longest, 1))
    return {"rows": rows, "w": STAGE_W, "h": max(1, len(rows)) * STAGE_ROW}


def dashboard(cfg: Config, journal: Journal, now: float | None = None) -> dict:
    from daemon.pipeline import STAGES

    now = time.time() if now is None else now
    data = ops.status_data(cfg, failures=20, journal=journal)
    oldest = journal.oldest_queued()
    decided = journal.decisions()
    reviewed = decided["approve"] + decided["reject"]
    latest, _ = journal.gallery("all", LATEST, 0)
    data.update(
        throughput=throughput(journal.hourly(now), now),
        stages=stage_times(journal.stage_seconds(now - DAY), [s.name for s in STAGES]),
        queue={"depth": data["counts"]["queued"], "oldest": duration(now - oldest) if oldest else None},
        approval={"reviewed": reviewed, "approved": decided["approve"],
                  "rate": decided["approve"] / reviewed if reviewed else None},
        win_rates=journal.win_rates(),
        latest=[{"id": Path(j.archive).name, "name": j.name, "review": j.review} for j in latest],
    )
    return data
