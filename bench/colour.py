"""Colour after upscaling: how far each built-in model moves colours, and what the colour fix leaves.

    python -m bench.colour [--size 192] [--models x4plus x4plus-anime animevideov3]

For flat patches (the brand-colour case), a gradient, the repository's photos and the development photos
(``../shared/data/faces-hands-dev``, read there, resized to ``--size`` on the long side), each model upscales
×4 in fp32 torch; each correction (``none``, ``adain``, ``wavelet``) is applied to that output exactly as the
stage applies it.  Measured:

- flat patches: the largest difference of any pixel 40 px inside a patch from the patch's colour;
- photos: the mean and 99th percentile CIEDE2000 between the low-pass of the output and of the source
  resized (Lanczos) to its size (``stages.colour.drift``);
- detail: the variance of the Laplacian (grey) of the corrected output over the uncorrected one's;
- faithfulness: PSNR of each CPU backend's corrected output against fp32 torch's corrected output.

Writes bench/out/colour.md, colour.json and colour.png (crops: source, model, fixed, and the low-pass ΔE of
model and fixed as heat maps).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.kit.pipeline import DATA, REPO, photos
from bench.upscale_cpu import cpu
from stages import colour
from stages.upscale import UpscaleParams, UpscaleStage

OUT = REPO / "bench" / "out"
CACHE = REPO / "var" / "models"
METHODS = ("none", "adain", "wavelet")
BACKENDS = ("openvino", "ncnn", "mnn")
PATCH_COLOURS = ((200, 100, 50), (40, 160, 220))


class _Ctx:
    def __init__(self):
        from stages.models import Models

        self.models = Models(None, CACHE)


def patches() -> np.ndarray:
    a = np.zeros((96, 96, 3), np.uint8)
    a[:, :48], a[:, 48:] = PATCH_COLOURS
    return a


def gradient() -> np.ndarray:
    x = np.linspace(0, 1, 128, dtype=np.float32)
    r = np.outer(np.ones(96), x) * 200 + 30
    g = np.outer(np.linspace(1, 0, 96), np.ones(128)) * 180 + 40
    return np.clip(np.rint(np.stack([r, g, (r + g) / 3], axis=2)), 0, 255).astype(np.uint8)


class Upscaler:
    """One model on one backend, run as the stage runs it, with no colour fix: the fixes are applied after."""

    def __init__(self, model: str, backend: str):
        self.stage = UpscaleStage()
        dtype = "fp32" if backend == "torch" else "auto"
        self.params = UpscaleParams(model=model, device="cpu", backend=backend, dtype=dtype, colour_fix="none")
        self.stage.setup(_Ctx(), self.params)
        self.name = f"{self.stage.backend} {str(self.stage.dtype).removeprefix('torch.')}"

    def __call__(self, picture: np.ndarray) -> np.ndarray:
        return np.asarray(self.stage.upscale_image(Image.fromarray(picture), self.params, 256).image)


def fixed(method: str, source: np.ndarray, raw: np.ndarray) -> np.ndarray:
    out = raw.copy()
    colour.fix(method, source, colour.InMemory(out), colour.InMemory(out), 255.0)
    return out


def laplacian(image: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def flat_error(image: np.ndarray) -> int:
    inner = ((slice(40, 344), slice(40, 152)), (slice(40, 344), slice(232, 344)))
    return max(int(np.abs(image[r, c].astype(int) - v).max()) for (r, c), v in zip(inner, PATCH_COLOURS, strict=True))


def measure(models: list[str], size: int) -> dict:
    pictures = {"flat patches": patches(), "gradient": gradient(),
                **dict(photos([DATA / "astronaut.png", DATA / "camera.png"], size))}
    results: dict = {"size": size, "models": {}}
    for model in models:
        torch_run = Upscaler(model, "torch")
        rows: dict = {}
        keep: dict = {}
        for name, src in pictures.items():
            t = time.perf_counter()
            raw = torch_run(src)
            seconds = time.perf_counter() - t
            out = {m: fixed(m, src, raw) for m in METHODS}
            row = {"seconds": round(seconds, 2)}
            for m in METHODS:
                d = colour.drift(out[m], src)
                row[m] = {"drift_mean": round(d.mean, 3), "drift_p99": round(d.p99, 3),
                          "detail": round(laplacian(out[m]) / max(laplacian(raw), 1e-9), 4)}
                if name == "flat patches":
                    row[m]["flat_max_error"] = flat_error(out[m])
            rows[name] = row
            keep[name] = (src, raw, out["wavelet"])
        backends = {}
        for backend in BACKENDS:
            try:
                run = Upscaler(model, backend)
            except Exception as exc:  # a backend this machine cannot run: said, not hidden
                backends[backend] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            values = [psnr(fixed("wavelet", src, run(src)), keep[name][2]) for name, src in pictures.items()
                      if name not in ("flat patches", "gradient")][:3]
            backends[backend] = {"name": run.name, "psnr_min": round(min(values), 2)}
        results["models"][model] = {"pictures": rows, "backends": backends}
        if model == models[0]:
            results["_keep"] = keep
    return results


def heat(d: np.ndarray, top: float = 4.0) -> Image.Image:
    """ΔE as a heat map: black 0, red at top/2, yellow at ``top`` and beyond."""
    t = np.clip(d / top, 0, 1)
    rgb = np.stack([np.clip(2 * t, 0, 1), np.clip(2 * t - 1, 0, 1), np.zeros_like(t)], axis=2)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def low_delta(image: np.ndarray, src: np.ndarray) -> np.ndarray:
    up = np.asarray(Image.fromarray(src).resize((image.shape[1], image.shape[0]), Image.Resampling.LANCZOS))
    a = colour.low_pass(image.astype(np.float32)) / 255
    b = colour.low_pass(up.astype(np.float32)) / 255
    return colour.delta_e(colour.to_lab(a), colour.to_lab(b))


def picture(keep: dict, path: Path, model: str) -> None:
    names = [n for n in ("flat patches", "astronaut", "business-person", "woman-sitting") if n in keep]
    crop = 256
    cols = ("source (Lanczos)", f"{model}", "fixed (wavelet)", "dE2000 model (low-pass)", "dE2000 fixed")
    sheet = Image.new("RGB", (len(cols) * (crop + 8) + 8, len(names) * (crop + 24) + 28), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(cols):
        draw.text((8 + c * (crop + 8), 8), label, fill=(230, 230, 230))
    for r, name in enumerate(names):
        src, raw, fix = keep[name]
        up = np.asarray(Image.fromarray(src).resize((raw.shape[1], raw.shape[0]), Image.Resampling.LANCZOS))
        y0, x0 = max(0, raw.shape[0] // 2 - crop // 2), max(0, raw.shape[1] // 2 - crop // 2)
        if name == "flat patches":
            x0 = 192 - crop // 2  # across the join of the two colours
        box = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        tiles = [Image.fromarray(up[box]), Image.fromarray(raw[box]), Image.fromarray(fix[box]),
                 heat(low_delta(raw, src)[box]), heat(low_delta(fix, src)[box])]
        y = 28 + r * (crop + 24)
        draw.text((8, y), name, fill=(200, 200, 200))
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (8 + c * (crop + 8), y + 14))
    sheet.save(path)


def report(results: dict, models: list[str]) -> str:
    cpu_name, flags = cpu()
    lines = ["# Colour after upscaling", "",
             f"CPU: {cpu_name} ({', '.join(flags)}).  `python -m bench.colour --size {results['size']}`: each "
             "picture upscaled ×4 in fp32 torch; the corrections applied to that output as the stage applies them.",
             "",
             "Flat patches: the largest error of any pixel 40 px inside a patch (levels).  Photos: low-pass CIEDE2000 "
             "against the source resized, mean over all photos (and the worst photo's 99th percentile).  Detail: "
             "Laplacian variance of the corrected over the uncorrected output, the lowest over all photos.", "",
             "| model | correction | flat: max error | photos: mean ΔE | photos: worst p99 ΔE | gradient: mean ΔE "
             "| detail kept (min) |", "|---|---|---|---|---|---|---|"]
    for model in models:
        rows = results["models"][model]["pictures"]
        photo_rows = {k: v for k, v in rows.items() if k not in ("flat patches", "gradient")}
        for m in METHODS:
            mean = np.mean([v[m]["drift_mean"] for v in photo_rows.values()])
            p99 = max(v[m]["drift_p99"] for v in photo_rows.values())
            detail = min(v[m]["detail"] for v in [*photo_rows.values(), rows["gradient"]])
            lines.append(f"| {model} | {m} | {rows['flat patches'][m]['flat_max_error']} | {mean:.2f} | {p99:.2f} | "
                         f"{rows['gradient'][m]['drift_mean']:.2f} | {detail:.1%} |")
    lines += ["", "Per photo (wavelet; mean / p99 ΔE, detail kept):", "",
              "| photo | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    names = [n for n in results["models"][models[0]]["pictures"] if n != "flat patches"]
    for name in names:
        cells = []
        for model in models:
            w = results["models"][model]["pictures"][name]["wavelet"]
            cells.append(f"{w['drift_mean']:.2f} / {w['drift_p99']:.2f}, {w['detail']:.1%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Backends, each corrected (wavelet) against fp32 torch corrected: the lowest PSNR over three photos.",
              "", "| model | " + " | ".join(BACKENDS) + " |", "|---|" + "---|" * len(BACKENDS)]
    for model in models:
        b = results["models"][model]["backends"]
        cells = [f"{b[k]['psnr_min']:.1f} dB ({b[k]['name']})" if "psnr_min" in b[k] else f"not run: {b[k]['error']}"
                 for k in BACKENDS]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "Flat patches keep no detail by design: a source area of one colour comes back as that colour, "
              "without the grain some models invent there (x4plus: ±7 levels).", "",
              "![source, model, fixed, ΔE before and after](colour.png)", "",
              "Heat maps: low-pass CIEDE2000 against the source resized; black 0, red 2, yellow 4 and more.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=192, help="long edge of each photo before the ×4 upscale")
    ap.add_argument("--models", nargs="+", default=["x4plus", "x4plus-anime", "animevideov3"])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = measure(args.models, args.size)
    keep = results.pop("_keep")
    picture(keep, OUT / "colour.png", args.models[0])
    (OUT / "colour.json").write_text(json.dumps(results, indent=1) + "\n")
    text = report(results, args.models)
    (OUT / "colour.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
