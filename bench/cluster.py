"""Cluster benchmark: jobs per second with 1, 2, 4 and 8 worker processes, and the dispatch overhead.

    python -m bench.cluster [--workers 1,2,4,8] [--jobs-per-worker 12] [--seconds 0.5]

For each count: a real Redis server on a free loopback port, a real coordinator (``polishd run`` with a
broker) and N ``polishd worker`` processes on this machine, whose one stage sleeps ``--seconds`` (standing for
GPU time, so that two cores can host eight "GPUs").  N × jobs-per-worker small PNGs are dropped into the inbox
at once; the coordinator's log gives, for every job, when the journal gave it to a task, when a worker started
it, when the worker finished and when the journal recorded the result.

* throughput: jobs / (last result in the journal − first job taken from it);
* scaling efficiency at N: throughput(N) / (N × throughput(1));
* dispatch overhead, journal → worker: start − max(taken from the journal, the worker free again);
  result → journal: recorded in the journal − finished on the worker (same machine, same clock).

Writes bench/out/cluster.md and bench/out/cluster.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from bench.kit import jsonlog
from bench.kit.pipeline import png_bytes, write_config
from bench.kit.redis_server import REDIS, RedisServer
from bench.upscale_cpu import cpu

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"


def _start(root: Path, name: str, args: list[str], seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.run_polishd", "--sleep", str(seconds), "--stages", "sleep", "--",
         "--config", str(root / "pipeline.toml"), *args],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=open(root / f"{name}.log", "wb"),
        stderr=subprocess.STDOUT)


def _wait(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (value := predicate()):
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def one_run(workers: int, jobs: int, seconds: float) -> dict:
    from daemon import cluster
    from daemon import config as config_mod

    with tempfile.TemporaryDirectory(prefix="polishd-cluster-") as tmp:
        root = Path(tmp)
        redis = RedisServer(root / "redis").start()
        procs = []
        try:
            write_config(root, extra=f'[cluster]\nbroker = "{redis.url}"\ntask_timeout = 120\nheartbeat = 1.0\n')
            cfg = config_mod.load(root / "pipeline.toml")
            procs.append(_start(root, "coordinator", ["run"], seconds))
            procs += [_start(root, f"w{i}", ["worker", "--name", f"w{i}", "--device", "cpu"], seconds)
                      for i in range(workers)]
            client = cluster.redis_client(cfg.cluster)
            _wait(lambda: len(cluster.live_workers(client, cfg.cluster)) == workers, 120, f"{workers} workers")
            time.sleep(1.5)  # the coordinator has seen them all (it looks twice a second)
            for i in range(jobs):
                (root / f"j{i:04d}.png").write_bytes(png_bytes(size=(16, 16), seed=i))
            for i in range(jobs):  # into the inbox at once
                os.replace(root / f"j{i:04d}.png", root / "inbox" / f"j{i:04d}.png")
            log = root / "coordinator.log"
            _wait(lambda: sum(r.get("event") == "dispatch timing" for r in jsonlog.records(log)) == jobs,
                  60 + jobs * seconds * 2, "every job")
            timings = [r for r in jsonlog.records(log) if r.get("event") == "dispatch timing"]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            redis.stop()
    span = max(t["settled"] for t in timings) - min(t["claimed"] for t in timings)
    start = [1000 * (t["received"] - max(t["claimed"], t["idle_since"])) for t in timings]
    result = [1000 * (t["settled"] - t["finished"]) for t in timings]
    return {"workers": workers, "jobs": jobs, "span_s": span, "jobs_per_s": jobs / span,
            "start_ms_median": statistics.median(start), "start_ms_p95": _p95(start),
            "result_ms_median": statistics.median(result), "result_ms_p95": _p95(result),
            "per_worker": {w: sum(t["worker"] == w for t in timings) for w in sorted({t["worker"] for t in timings})}}


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]


def chart(rows: list[dict], path: Path, seconds: float) -> None:
    w, h, left, bottom, top = 720, 420, 70, 60, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), f"polishd cluster: jobs per second, a {seconds} s stage, N worker processes on one machine",
           fill="black")
    d.text((10, 24), "blue: measured; grey: ideal (N / stage time); label: scaling efficiency vs N x 1 worker",
           fill="black")
    n_max = max(r["workers"] for r in rows)
    y_max = max(n_max / seconds, max(r["jobs_per_s"] for r in rows)) * 1.1
    plot_w, plot_h = w - left - 30, h - top - bottom

    def xy(n: float, v: float) -> tuple[float, float]:
        return left + plot_w * n / n_max, top + plot_h * (1 - v / y_max)

    d.line((left, top, left, top + plot_h, left + plot_w, top + plot_h), fill="black")
    for n in [r["workers"] for r in rows]:
        x, _ = xy(n, 0)
        d.text((x - 4, top + plot_h + 6), str(n), fill="black")
    d.text((left + plot_w // 2 - 40, h - 24), "worker processes", fill="black")
    for v in range(0, int(y_max) + 1, max(1, int(y_max) // 8)):
        _, y = xy(0, v)
        d.text((10, y - 6), f"{v}/s", fill="black")
    d.line([xy(0, 0), xy(n_max, n_max / seconds)], fill=(170, 170, 170), width=2)
    one = rows[0]["jobs_per_s"] / rows[0]["workers"]
    pts = [xy(r["workers"], r["jobs_per_s"]) for r in rows]
    d.line(pts, fill=(40, 90, 200), width=3)
    for r, (x, y) in zip(rows, pts, strict=True):
        d.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(40, 90, 200))
        d.text((x - 60, y - 18), f"{r['jobs_per_s']:.2f}/s  {100 * r['jobs_per_s'] / (r['workers'] * one):.0f}%",
               fill="black")
    img.save(path)


def main(argv=None) -> int:
    if REDIS is None:
        print("bench.cluster skipped: redis-server is not installed (apt-get install redis-server)")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--jobs-per-worker", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args(argv)
    rows = []
    for n in [int(x) for x in args.workers.split(",")]:
        row = one_run(n, n * args.jobs_per_worker, args.seconds)
        rows.append(row)
        print(json.dumps(row))
    one = rows[0]["jobs_per_s"] / rows[0]["workers"]
    model, flags = cpu()
    lines = ["# Cluster throughput", "",
             f"`python -m bench.cluster --workers {args.workers} --jobs-per-worker {args.jobs_per_worker} "
             f"--seconds {args.seconds}`", "",
             f"Machine: {model}, {os.cpu_count()} cores ({', '.join(flags)}). One Redis server, one coordinator "
             f"and N worker processes on this machine; the one stage sleeps {args.seconds} s (GPU time).", "",
             "| workers | jobs | jobs/s | ideal jobs/s | efficiency vs N × 1 worker | journal → worker, median "
             "(p95) ms | result → journal, median (p95) ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['jobs']} | {r['jobs_per_s']:.2f} | {r['workers'] / args.seconds:.1f} | "
                     f"{100 * r['jobs_per_s'] / (r['workers'] * one):.1f}% | {r['start_ms_median']:.1f} "
                     f"({r['start_ms_p95']:.1f}) | {r['result_ms_median']:.1f} ({r['result_ms_p95']:.1f}) |")
    lines += ["", "Jobs per worker: " + "; ".join(f"{r['workers']}: {r['per_worker']}" for r in rows), "",
              "Journal → worker: from the later of (the job taken from the journal, the worker free again) to "
              "the worker starting it. Result → journal: from the worker finishing to the journal recording "
              "the result (the inbox file removed). Throughput counts from the first job taken from the journal "
              "to the last result recorded, so the ramp-up is in it.", ""]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cluster.md").write_text("\n".join(lines))
    chart(rows, OUT / "cluster.png", args.seconds)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
