"""Billboard upscales: a 1024² picture to 8192² and 16384², with tiled refinement — time, peak memory, seams.

Each size runs in a process of its own (the upscale stage through the real runner: Real-ESRGAN
passes, Lanczos to the exact size, tiled diffusion with the seam fix, the detail pass, the PNG
written in bands), and this process samples its resident memory every 0.2 s.  The diffusion model
is the tiny pipeline built from configs, with SD's geometry (its VAE divides by 8, so a 512² tile
has a 64² latent, as with a real SD 1.x model): its pixels are noise, its memory and the mechanics
are the real ones.  Real-ESRGAN is the real x4plus.

    python -m bench.upscale_large                 # → bench/out/upscale_large.md, upscale_large.png
    python -m bench.upscale_large --scales 8      # one size only (the report keeps the other's last run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.upscale_cpu import cpu

OUT = Path(__file__).parent / "out"
REPO = Path(__file__).parent.parent


def child(args) -> int:
    """One upscale, run in this process; prints what it measured as JSON on the last line."""
    sys.path.insert(0, str(REPO))
    from bench.kit.pipeline import DATA, run_one, write_config
    from daemon import config as config_mod
    from stages.automask import AutoMaskStage
    from stages.records import to_json
    from stages.upscale import UpscaleStage

    root = Path(args.root)
    extra = f"""
[inpaint]
model = "{args.model_dir}"
[upscale]
model = "{args.esrgan}"
scale = {args.scale}
[upscale.refine]
enabled = true
steps = {args.steps}
[upscale.detail]
enabled = true
"""
    cfg = config_mod.load(write_config(root, extra))
    src = cfg.paths.inbox / "astronaut.png"
    Image.open(DATA / "astronaut.png").convert("RGB").resize((args.size, args.height or args.size),
                                                              Image.Resampling.LANCZOS).save(src)
    t0 = time.monotonic()
    out, manifest = run_one(cfg, src, [AutoMaskStage(), UpscaleStage()])
    entry = manifest.stages[-1]
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    print(json.dumps({"seconds": time.monotonic() - t0, "stage_seconds": entry.duration_s,
                      "peak_rss_mb": hwm / 1024, "archive": str(out.archive), "details": to_json(entry.details),
                      "summary": entry.reason}))
    return 0


def seam_ratio(path: Path, grid_x: list[float], grid_y: list[float]) -> tuple[float, float]:
    from bench.kit.measure import seam_ratio as ratio

    Image.MAX_IMAGE_PIXELS = None  # our own 16384² output, not an untrusted upload
    with Image.open(path) as im:
        return ratio(np.asarray(im.convert("RGB")), grid_x, grid_y)


def run(scale: int, args, model_dir: Path) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"polishd-large-{scale}-"))
    cmd = [sys.executable, "-m", "bench.upscale_large", "--child", "--root", str(root), "--scale", str(scale),
           "--size", str(args.size), "--height", str(args.height or args.size), "--model-dir", str(model_dir),
           "--esrgan", args.esrgan, "--steps", str(args.steps)]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    trace, t0 = [], time.monotonic()
    while p.poll() is None:
        try:
            rss = next(int(line.split()[1]) for line in Path(f"/proc/{p.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS"))
            trace.append((time.monotonic() - t0, rss / 1024))
        except (OSError, StopIteration):
            pass
        time.sleep(0.2)
    out = p.stdout.read().strip().splitlines()
    if p.returncode != 0 or not out:
        raise SystemExit(f"the {scale}× run failed (exit {p.returncode})")
    result = json.loads(out[-1])
    result["trace"] = trace
    large = result["details"]["large"]["40-upscale.png"]
    from stages import refine

    ref = large["refine"]
    cols = refine.grid(args.size * scale, ref["tile"], ref["overlap"])
    rows = refine.grid((args.height or args.size) * scale, ref["tile"], ref["overlap"])
    result["seams"] = seam_ratio(Path(result["archive"]) / "40-upscale.png", refine.joins(cols), refine.joins(rows))
    with Image.open(Path(result["archive"]) / "40-upscale.png") as im:
        result["size"] = list(im.size)
    result["scale"] = scale
    result["input"] = [args.size, args.height or args.size]
    return result


def chart(results: list[dict], path: Path) -> None:
    w, h, left, bottom, top = 820, 440, 70, 50, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), "polishd upscale with tiled refinement: resident memory over time (MB)", fill="black")
    d.text((10, 24), "dashed: the full square picture of that width as bytes (W x W x 3); as float32, 4x that",
           fill="black")
    colours = [(40, 90, 200), (200, 80, 40)]
    t_max = max(r["trace"][-1][0] for r in results)
    y_max = max(max(max(v for _, v in r["trace"]) for r in results), max(
        r["size"][0] ** 2 * 3 / 2**20 for r in results)) * 1.1
    pw, ph = w - left - 30, h - top - bottom

    def xy(t, v):
        return left + pw * t / t_max, top + ph * (1 - v / y_max)
    d.line((left, top, left, top + ph, left + pw, top + ph), fill="black")
    for v in np.linspace(0, y_max, 6):
        d.text((8, xy(0, v)[1] - 6), f"{v:.0f}", fill="black")
    for t in np.linspace(0, t_max, 6):
        d.text((xy(t, 0)[0] - 10, top + ph + 6), f"{t:.0f}s", fill="black")
    for r, c in zip(results, colours, strict=False):
        d.line([xy(t, v) for t, v in r["trace"]], fill=c, width=2)
        picture = r["size"][0] ** 2 * 3 / 2**20
        x = left
        while x < left + pw:
            d.line((x, xy(0, picture)[1], min(x + 8, left + pw), xy(0, picture)[1]), fill=c)
            x += 16
        d.text((left + pw - 300, xy(0, picture)[1] - 14), f"{r['size'][0]} x {r['size'][0]} as bytes: {picture:.0f} MB",
               fill=c)
        d.text((left + 10, top - 18 + 14 * results.index(r)),
               f"{r['scale']}x -> {r['size'][0]} x {r['size'][1]}: peak {r['peak_rss_mb']:.0f} MB, "
               f"{r['seconds']:.0f} s",
               fill=c)
    img.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", type=int, nargs="*", default=[8, 16],
                    help="sizes to run (none: only rebuild the report from the runs kept in bench/out)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--height", type=int, default=0, help="input height (default: --size): a strip of the full "
                    "width has the full picture's memory, which grows with the width alone")
    ap.add_argument("--esrgan", default="x4plus")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    sys.path.insert(0, str(REPO))
    from bench.kit.tiny_sd import build_tiny_sd

    model_dir = Path(tempfile.mkdtemp(prefix="polishd-tiny-sd-")) / "tiny-sd-eightfold"
    if args.scales:
        build_tiny_sd(model_dir, eightfold=True)
    OUT.mkdir(exist_ok=True)
    for s in args.scales:  # each run is kept as it ends: a later failure loses nothing
        (OUT / f"upscale_large-{s}x-{args.size}x{args.height or args.size}.json").write_text(
            json.dumps(run(s, args, model_dir)))
    results = [json.loads(f.read_text()) for f in sorted(OUT.glob("upscale_large-*x-*.json"),
                                                         key=lambda f: (int(f.name.split("-")[1][:-1]), f.name))]
    name, flags = cpu()
    rows = []
    for r in results:
        large = r["details"]["large"]["40-upscale.png"]
        ref = large["refine"]
        rows.append(f"| {r['scale']}× | {r['input'][0]}×{r['input'][1]} | {r['size'][0]}×{r['size'][1]} | "
                    f"{large['passes']} | "
                    f"{ref['grid'][0]}×{ref['grid'][1]} = {ref['tiles']} | {ref['seams']} | "
                    f"{len(large.get('detail', []))} | {r['seams'][0]:.2f} / {r['seams'][1]:.2f} | "
                    f"{r['peak_rss_mb']:.0f} | {r['size'][0] ** 2 * 3 / 2**20:.0f} | {r['seconds']:.0f} |")
    report = "\n".join([
        "# Billboard upscales: to 8192 and 16384 px, refined in tiles",
        "",
        f"CPU: {name}, {os.cpu_count()} cores; flags: {', '.join(flags) or 'none of interest'}.",
        "",
        f"`python -m bench.upscale_large` — Real-ESRGAN {args.esrgan} (the real weights), then "
        f"[upscale.refine] with the tiny pipeline (SD geometry, random weights: its pixels are noise, its "
        f"memory is real) at its default 512² tiles, 64 px overlap, seam fix on, {args.steps} steps at "
        "denoise 0.3, and [upscale.detail] on the faces and hands found on the input. A strip (input "
        "1024×64) has the full width's memory: the work goes in bands of rows, so memory grows with the width "
        "alone (tests/test_upscale_large.py measures that), and the strip takes minutes where the square takes "
        "the better part of an hour on 2 cores.",
        "",
        "| scale | input | output | ESRGAN passes | tiles | seam segments | detail regions | seam ratio (x / y) "
        "| peak RSS MB | the full square as bytes, MB | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Seam ratio: the strongest mean gradient at a tile join over the mean gradient inside the tiles "
        "(of the blurred luminance; tests/test_upscale_large.py, which also shows the same tiles cut edge to "
        "edge score above 1.5); at most 1.1 is the target. Peak RSS is the whole process: Python, torch, "
        "MediaPipe, both models and the work — the picture itself is never held (it goes through "
        "`.work/` files band by band).",
        "",
        "![resident memory over time](upscale_large.png)",
        "",
    ])
    (OUT / "upscale_large.md").write_text(report)
    chart(results, OUT / "upscale_large.png")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
