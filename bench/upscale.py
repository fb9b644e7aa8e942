"""Upscaler benchmark: polishd's tiled upscaler vs. ncnn vs. plain fp32 torch, same weights, same photo.

    python -m bench.upscale [--model x4plus] [--sizes 256 512] [--rss-size 2048] [--threads 2]

Prints a table and writes bench/out/upscale.md, bench/out/upscale.png (the chart) and
bench/out/upscale-compare.png (a crop of fp32 torch and polishd on the largest size, and their difference).  Each
engine runs once per size after a warm-up on a small input, all with the same
number of threads.  PSNR is measured against plain fp32 torch (untiled), the
reference of faithfulness; peak RSS of a large input is measured in a fresh
child process (VmHWM: the high-water mark of its own memory; ru_maxrss would carry the parent's
pages over the fork), so earlier runs do not count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from stages.device import dtype_name
from stages.esrgan import load as esrgan_load
from stages.esrgan import tile as tiling
from stages.models import ModelKind, Models, ModelSetting
from stages.upscale import UpscaleParams, UpscaleStage

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
CACHE = REPO / "var" / "models"
PHOTO = REPO / "tests" / "data" / "astronaut.png"


def photo(size: int) -> Image.Image:
    return Image.open(PHOTO).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def db(mse: float) -> float:
    """PSNR of a mean squared error on 0–255 levels."""
    return float("inf") if mse <= 0 else float(10 * np.log10(255.0 ** 2 / mse))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return db(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def to_uint8(chw: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(chw.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


def through(runner):
    """A stage's runner (1×3×h×w float tensor in and out) as a path from a photo to its uint8 upscale."""
    def run(image: Image.Image) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray((np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)))
        return to_uint8(runner(x[None])[0].numpy())
    return run


class Ncnn:
    """ncnn on the built-in model's own files, through the stage's runner (its CPU defaults unless ``bf16``)."""

    def __init__(self, model: str, threads: int, bf16: bool = False):
        from stages.esrgan.ncnn_backend import NcnnRunner

        self.runner = NcnnRunner(*esrgan_load.builtin_ncnn_files(model), threads, bf16)
        self._run = through(self.runner)

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self._run(image)


class PlainTorch:
    def __init__(self, model: str):
        setting = ModelSetting("[upscale].model", model, ModelKind.UPSCALER)
        self.net = esrgan_load.load(Models(None, CACHE).resolve(setting), CACHE).net

    def __call__(self, image: Image.Image) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0))
        with torch.inference_mode():
            return to_uint8(self.net(x[None])[0].clamp(0, 1).numpy())


class Polishd:
    """The upscale stage on the CPU, as a function of a photo, with the stage's colour fix (``colour_fix``: its
    default when not given).  ``"none"`` gives the model's own output, for measuring an engine against fp32 torch:
    the colour fix (``bench.colour``) changes the picture on purpose, and would be counted as the engine's error."""

    def __init__(self, model: str, threads: int, tile: int = 0, colour_fix: str | None = None):
        self.stage = UpscaleStage()
        self.params = UpscaleParams(model=model, scale=4, device="cpu", threads=threads, tile=tile,
                                    **({"colour_fix": colour_fix} if colour_fix else {}))

        class _Ctx:
            models = Models(None, CACHE)

        self.stage.setup(_Ctx(), self.params)
        self.tile = tile or self.stage._auto_tile()

    def __call__(self, image: Image.Image) -> np.ndarray:
        out = self.stage.upscale_image(image, self.params, self.tile).image
        return np.asarray(out)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def rss_child(model: str, size: int, threads: int) -> dict:
    """Runs polishd's upscaler on one size×size photo in a fresh process; returns seconds and peak RSS."""
    code = (
        f"import json, sys, time; sys.path.insert(0, {str(REPO)!r})\n"
        "from bench.upscale import Polishd, photo\n"
        f"p = Polishd({model!r}, {int(threads)}); im = photo({int(size)}); t = time.perf_counter(); out = p(im)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'shape': list(out.shape),"
        " 'peak_rss_mb': int(hwm) / 1024, 'tile': p.tile}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(reference: np.ndarray, candidate: np.ndarray, path: Path, side: int = 384) -> None:
    """A centre crop of fp32 torch, of polishd, and of their difference ×20, side by side."""
    h, w = reference.shape[:2]
    y, x = (h - side) // 2, (w - side) // 2
    a, b = reference[y:y + side, x:x + side], candidate[y:y + side, x:x + side]
    diff = np.clip(np.abs(a.astype(int) - b.astype(int)).max(axis=2) * 20, 0, 255).astype(np.uint8)
    canvas = Image.new("RGB", (3 * side + 16, side + 22), "white")
    for i, (tile, label) in enumerate([(a, "torch fp32"), (b, "polishd"), (np.stack([diff] * 3, 2), "difference x20")]):
        canvas.paste(Image.fromarray(tile), (i * (side + 8), 22))
        ImageDraw.Draw(canvas).text((i * (side + 8) + 4, 5), label, fill="black")
    canvas.save(path)


def chart(rows: list[dict], path: Path) -> None:
    """Seconds per image, one group of bars per size."""
    engines = ["ncnn", "torch fp32", "polishd"]
    colours = {"ncnn": (150, 150, 150), "torch fp32": (90, 140, 200), "polishd": (230, 120, 40)}
    w, h, margin = 720, 360, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top = max(r[e] for r in rows for e in engines)
    group = (w - 2 * margin) / len(rows)
    bar = group / (len(engines) + 1)
    for gi, r in enumerate(rows):
        for ei, e in enumerate(engines):
            x0 = margin + gi * group + ei * bar + bar / 2
            y0 = h - margin - (h - 2 * margin) * r[e] / top
            d.rectangle((x0, y0, x0 + bar * 0.9, h - margin), fill=colours[e])
            d.text((x0, y0 - 14), f"{r[e]:.1f}s", fill="black")
        d.text((margin + gi * group + group / 3, h - margin + 8), f"{r['size']}x{r['size']} input", fill="black")
    for i, e in enumerate(engines):
        d.rectangle((margin + i * 150, 12, margin + i * 150 + 14, 26), fill=colours[e])
        d.text((margin + i * 150 + 20, 13), e, fill="black")
    d.text((w - 300, 13), "seconds per image, lower is better", fill="black")
    img.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="x4plus", choices=list(esrgan_load.BUILTINS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--rss-size", type=int, default=2048, help="input side for the peak-RSS run (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    engines = {"ncnn": Ncnn(args.model, args.threads), "torch fp32": PlainTorch(args.model),
               "polishd": Polishd(args.model, args.threads, colour_fix="none")}
    warm = photo(32)
    for fn in engines.values():
        fn(warm)
    rows = []
    for size in args.sizes:
        im = photo(size)
        row: dict = {"size": size}
        outputs = {}
        for name, fn in engines.items():
            outputs[name], row[name] = timed(fn, im)
            print(f"{size}²  {name:10s} {row[name]:8.2f} s", flush=True)
        row["psnr_polishd"] = psnr(outputs["polishd"], outputs["torch fp32"])
        row["psnr_ncnn"] = psnr(outputs["ncnn"], outputs["torch fp32"])
        row["speedup_vs_ncnn"] = row["ncnn"] / row["polishd"]
        rows.append(row)
    # Tiled vs untiled on the largest size, with polishd's default tiling.
    big = photo(max(args.sizes))
    whole = tiling.upscale(engines["polishd"].stage._run, np.asarray(big, dtype=np.float32) / 255.0, 4, 10 ** 6, 0)
    tiled_psnr = psnr(outputs["polishd"], whole) if big.size[0] == rows[-1]["size"] else None
    rss = rss_child(args.model, args.rss_size, args.threads) if args.rss_size else None

    st = engines["polishd"].stage
    lines = [f"# Upscaler benchmark ({args.model}, {args.threads} threads, CPU)", "",
             f"polishd ran with its defaults but the colour fix (off, to measure the engine): backend {st.backend}, "
             f"{dtype_name(st.dtype)}, "
             f"tile {engines['polishd'].tile}.", "",
             "| input | ncnn s | torch fp32 s | polishd s | polishd vs ncnn | PSNR polishd vs fp32 | "
             "PSNR ncnn vs fp32 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']}² | {r['ncnn']:.2f} | {r['torch fp32']:.2f} | {r['polishd']:.2f} | "
                     f"{r['speedup_vs_ncnn']:.2f}× | {r['psnr_polishd']:.1f} dB | {r['psnr_ncnn']:.1f} dB |")
    lines += ["", f"Tiled (tile {engines['polishd'].tile}, overlap 16) vs untiled on {big.size[0]}²: "
              f"{tiled_psnr:.1f} dB"]
    if rss:
        lines.append(f"Peak RSS, {args.rss_size}² input, fresh process: {rss['peak_rss_mb']:.0f} MB "
                     f"({rss['seconds']:.0f} s, tile {rss['tile']}, output {rss['shape'][1]}×{rss['shape'][0]})")
    report = "\n".join(lines) + "\n"
    (OUT / "upscale.md").write_text(report)
    (OUT / "upscale.json").write_text(json.dumps({"rows": rows, "tiled_psnr": tiled_psnr, "rss": rss}, indent=2))
    chart(rows, OUT / "upscale.png")
    compare(outputs["torch fp32"], outputs["polishd"], OUT / "upscale-compare.png")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
