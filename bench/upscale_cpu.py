"""The upscaler's candidate CPU paths on this machine's CPU, and the one polishd picks for it.

    python -m bench.upscale_cpu [--model x4plus] [--size 256] [--threads 2] [--isa avx2|avx512 [--ncnn DIR]]

Each path runs the same weights on the same size×size photo in one piece, warm (a first run of that
shape is not counted), with the same number of threads.  PSNR is measured against plain fp32 torch; a
path is faithful at 45 dB or more.  The int8 rows need NNCF (``pip install nncf``); they quantize the
ONNX export after calibrating on crops of the bundled photos (post-training, no accuracy control; the
second keeps the convolutions that write into the residual trunk in fp32, the layers int8 hurts most;
``docs/decisions/upscale_int8.md`` records how much of the model int8 can take at 45 dB).
The MNN row is the stage's own MNN path (``stages/esrgan/mnn_backend.py``: Winograd, fp32).

``--isa avx2`` measures, on a CPU that has more, the code an AVX2 CPU without AVX-512 runs: the
benchmark starts itself again with torch capped by ``ATEN_CPU_CAPABILITY=avx2`` (which also makes
polishd choose as on such a CPU, see ``stages/esrgan/cpu.py``) and OpenVINO's oneDNN by
``ONEDNN_MAX_CPU_ISA=AVX2``; MNN's x86 wheel has no AVX-512 code at all.  ncnn's wheel picks its
AVX-512 kernels at run time, so ``--ncnn DIR`` takes an ncnn Python package built without them, made
from the sdist of the installed version (fetched by its address: ``pip download`` refuses it, as its
metadata names the day it is built, not its release), for example:

    mkdir -p /tmp/ncnnsrc && cd /tmp/ncnnsrc && curl -LO https://files.pythonhosted.org/packages/b7/50/\\
32b5172afe7d3e0dce410b7d8f4a5b7b84b942a0d69affbaedf669de52bc/ncnn-1.0.20261020.tar.gz
    tar xf ncnn-*.tar.gz && cd ncnn-*/ && mkdir build && cd build
    cmake .. -DCMAKE_BUILD_TYPE=Release -DNCNN_PYTHON=ON -DNCNN_VULKAN=OFF -DNCNN_BUILD_TOOLS=OFF \\
        -DNCNN_BUILD_EXAMPLES=OFF -DNCNN_BUILD_BENCHMARK=OFF -DNCNN_AVX512=OFF -DNCNN_AVXVNNI=OFF
    make -j2 && mkdir -p /tmp/ncnn_avx2/ncnn && cp python/ncnn/*.so ../python/ncnn/__init__.py /tmp/ncnn_avx2/ncnn/

``--isa avx512`` does the same for a CPU with AVX-512 and no bf16 (Skylake to Ice Lake servers):
``ATEN_CPU_CAPABILITY=avx512`` and ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI``; ncnn's wheel runs its
AVX-512 kernels as it would there, though its bf16-storage row may use bf16 instructions this CPU has.

That is a stand-in for the CPU, not the CPU: the code is the same, the core that runs it is not.

Writes bench/out/upscale_cpu.md (``upscale_cpu-avx2-only.md``, ``upscale_cpu-avx512-only.md`` with
``--isa``) and the chart beside it (seconds per path, faithful ones in colour).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.kit.machine import FLAGS, cpu  # noqa: F401 (the benchmarks name the CPU through here too)
from bench.upscale import CACHE, OUT, Ncnn, PlainTorch, Polishd, photo, psnr, through, to_uint8
from stages.esrgan import cpu as cpu_classes
from stages.esrgan import load as esrgan_load
from stages.esrgan import mnn_backend, onnx_backend, openvino_backend

FAITHFUL_DB = 45.0
def calibration_crops() -> list[np.ndarray]:
    """64² crops of the bundled photos, the way NNCF's calibration wants its samples (1×3×h×w, 0–1)."""
    crops = []
    for name in ("astronaut.png", "camera.png"):
        im = Image.open(Path(__file__).resolve().parent.parent / "tests" / "data" / name).convert("RGB")
        im = im.resize((256, 256), Image.Resampling.LANCZOS)
        for y in range(0, 256, 64):
            for x in range(0, 256, 64):
                crops.append(np.asarray(im.crop((x, y, x + 64, y + 64)), dtype=np.float32).transpose(2, 0, 1)[None]
                             / 255.0)
    return crops


def openvino_path(onnx: Path, threads: int, precision: str, int8: str = ""):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(onnx))
    if int8:
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)
        ignored = (nncf.IgnoredScope(patterns=[".*conv5.*", ".*conv_(body|up1|up2|hr|last).*"], validate=False)
                   if int8 == "trunk-fp32" else None)
        model = nncf.quantize(model, nncf.Dataset(calibration_crops()), subset_size=32,
                              fast_bias_correction=True, **({"ignored_scope": ignored} if ignored else {}))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                 "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(image: Image.Image) -> np.ndarray:
        x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
        return to_uint8(np.clip(request.infer({0: x})[compiled.output(0)][0], 0, 1))
    return run


ISA_ENV = {"native": {},
           "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
           "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}}


def _resolved(model: str):
    from stages.models import ModelKind, Models, ModelSetting

    return Models(None, CACHE).resolve(ModelSetting("[upscale].model", model, ModelKind.UPSCALER))


def warm_seconds(fn, arg, repeat: int) -> tuple[np.ndarray, float]:
    """``fn(arg)`` (a photo, or an array for a model run directly) and the median time of ``repeat``
    runs, after one that is not counted (the first run of a shape plans its memory; tiles repeat one shape)."""
    fn(arg)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(arg)
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def chart(rows: list[dict], path: Path, title: str) -> None:
    w, bar_h, left = 760, 26, 260
    img = Image.new("RGB", (w, 60 + bar_h * len(rows)), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), title, fill="black")
    d.text((10, 24), f"seconds per image, lower is better; grey: below {FAITHFUL_DB:.0f} dB PSNR (not faithful)",
           fill="black")
    top = max(r["seconds"] for r in rows)
    for i, r in enumerate(rows):
        y = 48 + i * bar_h
        colour = (230, 120, 40) if r["picked"] else (90, 140, 200) if r["psnr"] >= FAITHFUL_DB else (190, 190, 190)
        d.text((10, y + 6), r["path"][:40], fill="black")
        x1 = left + (w - left - 120) * r["seconds"] / top
        d.rectangle((left, y + 3, x1, y + bar_h - 5), fill=colour)
        db = "exact" if r["psnr"] == float("inf") else f"{r['psnr']:.1f} dB"
        d.text((x1 + 6, y + 6), f"{r['seconds']:.2f} s  {db}", fill="black")
    img.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="x4plus", choices=list(esrgan_load.BUILTINS))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per path (the median is reported)")
    ap.add_argument("--isa", choices=tuple(ISA_ENV), default="native",
                    help="avx2 / avx512: run the code a CPU with AVX2 and no AVX-512 / AVX-512 and no bf16 runs "
                    "(see the module's text)")
    ap.add_argument("--ncnn", type=Path, help="a folder holding the ncnn Python package to use (with --isa avx2: "
                    "one built without its AVX-512 kernels)")
    args = ap.parse_args(argv)
    env = ISA_ENV[args.isa]
    if any(os.environ.get(k) != v for k, v in env.items()):
        # torch and oneDNN read their caps when they start: start again with them set
        os.execve(sys.executable, [sys.executable, "-m", "bench.upscale_cpu", *(sys.argv[1:] if argv is None
                                                                                else argv)],
                  {**os.environ, **env})
    if args.ncnn:
        sys.path.insert(0, str(args.ncnn.resolve()))
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    name, flags = cpu()
    image = photo(args.size)
    reference, ref_s = warm_seconds(PlainTorch(args.model), image, args.repeat)
    torch_net = PlainTorch(args.model).net
    onnx = onnx_backend.export(torch_net, esrgan_load.load(_resolved(args.model), CACHE).sha256, CACHE)
    paths = {"ncnn, its defaults (fp32, Winograd)": lambda: Ncnn(args.model, args.threads),
             "ncnn, bf16 storage": lambda: Ncnn(args.model, args.threads, bf16=True),
             "OpenVINO fp32": lambda: openvino_path(onnx, args.threads, "f32")}
    kind = cpu_classes.cpu_class()
    if kind == "bf16":
        paths["OpenVINO bf16"] = lambda: openvino_path(onnx, args.threads, "bf16")
    try:
        import nncf  # noqa: F401
    except ImportError:
        print("nncf is not installed: the int8 rows are left out (pip install nncf)", flush=True)
    else:
        paths["OpenVINO int8 (NNCF, all convolutions)"] = lambda: openvino_path(onnx, args.threads, "f32", "all")
        paths["OpenVINO int8, residual convs fp32"] = lambda: openvino_path(onnx, args.threads, "f32", "trunk-fp32")
    if mnn_backend.available():
        # the stage's own MNN runner on the ONNX export (converted once into the models folder)
        paths["MNN fp32 (Winograd)"] = lambda: through(mnn_backend.runner(onnx, CACHE, args.threads))
    else:
        print("MNN is not installed: its row is left out (pip install MNN)", flush=True)
    polishd = Polishd(args.model, args.threads, tile=args.size, colour_fix="none")
    picked = f"polishd auto ({polishd.stage.backend}, {'bf16' if polishd.stage.dtype == torch.bfloat16 else 'fp32'})"
    rows = [{"path": "torch fp32 (the reference)", "seconds": ref_s, "psnr": float("inf"), "picked": False}]
    for label, make in paths.items():
        out, s = warm_seconds(make(), image, args.repeat)
        rows.append({"path": label, "seconds": s, "psnr": psnr(out, reference), "picked": False})
        print(f"{label:42s} {s:7.2f} s  {rows[-1]['psnr']:5.1f} dB", flush=True)
    out, s = warm_seconds(lambda im: np.asarray(polishd(im)), image, args.repeat)
    rows.append({"path": picked, "seconds": s, "psnr": psnr(out, reference), "picked": True})
    print(f"{picked:42s} {s:7.2f} s  {rows[-1]['psnr']:5.1f} dB", flush=True)

    import ncnn

    ncnn_s = rows[1]["seconds"]
    capped = args.isa != "native"
    code = {"avx2": "AVX2 code only", "avx512": "AVX-512 code without bf16"}.get(args.isa, "")
    title = code or "this CPU"
    command = f"python -m bench.upscale_cpu --size {args.size} --threads {args.threads}"
    if capped:
        command += f" --isa {args.isa}" + (f" --ncnn {args.ncnn}" if args.ncnn else "")
    lines = [f"# Upscaler paths, {title} ({args.model}, {args.size}² photo, {args.threads} threads)", "",
             f"CPU: {name}; flags: {', '.join(flags) or 'none of interest'}; "
             f"OpenVINO bf16: {'yes' if openvino_backend.bf16_capable() else 'no'}; "
             f"polishd's CPU class: {kind}.", ""]
    if capped:
        caps = ", ".join(f"`{k}={v}`" for k, v in env.items())
        lines += [f"Run with {code}, as on a CPU without {'AVX-512' if args.isa == 'avx2' else 'bf16'}: torch and "
                  f"OpenVINO with {caps}, MNN as it is (its wheel has no AVX-512 code), ncnn from "
                  f"`{Path(ncnn.__file__).parent}`"
                  + ("" if args.ncnn else " (the installed wheel: it picks its kernels from what the CPU has)")
                  + ". The code is that of such a CPU; the core that runs it is not.", ""]
    lines += [f"`{command}` (median of {args.repeat} warm runs; the int8 rows need `pip install nncf`). The "
              "polishd row is the upscale stage with `colour_fix = \"none\"`: the colour fix changes the picture on "
              "purpose (`bench.colour`), and would be counted here as the engine's error.", "",
             "| path | s (median, warm) | vs ncnn defaults | PSNR vs torch fp32 | faithful (≥ 45 dB) |",
             "|---|---|---|---|---|"]
    for r in rows:
        db = "∞" if r["psnr"] == float("inf") else f"{r['psnr']:.1f} dB"
        lines.append(f"| {'**' + r['path'] + '**' if r['picked'] else r['path']} | {r['seconds']:.2f} | "
                     f"{ncnn_s / r['seconds']:.2f}× | {db} | {'yes' if r['psnr'] >= FAITHFUL_DB else 'no'} |")
    report = "\n".join(lines) + "\n"
    stem = f"upscale_cpu-{args.isa}-only" if capped else "upscale_cpu"
    (OUT / f"{stem}.md").write_text(report)
    (OUT / f"{stem}.json").write_text(json.dumps({"cpu": name, "flags": flags, "isa": args.isa, "class": kind,
                                                  "ncnn": str(Path(ncnn.__file__).parent), "rows": rows}, indent=2))
    chart(rows, OUT / f"{stem}.png", f"{args.model}, {args.size}x{args.size} photo, {args.threads} threads, {name}"
          + (f", {code}" if capped else ""))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
