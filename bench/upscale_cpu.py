"""The upscaler's candidate CPU paths on this machine's CPU, and the one polishd picks for it.

    python -m bench.upscale_cpu [--model x4plus] [--size 256] [--threads 2]

Each path runs the same weights on the same size×size photo in one piece, warm (a first run of that
shape is not counted), with the same number of threads.  PSNR is measured against plain fp32 torch; a
path is faithful at 45 dB or more.  The int8 rows need NNCF (``pip install nncf``); they quantize the
ONNX export after calibrating on crops of the bundled photos (post-training, no accuracy control; the
second keeps the convolutions that write into the residual trunk in fp32, the layers int8 hurts most).
The MNN row needs MNN (``pip install MNN``): its Winograd kernels, fp32, on the same ONNX export, converted with
MNN's compiled converter (``_tools.mnnconvert``; its Python wrapper ``MNN.tools.mnnconvert`` is not used: it
installs a logging package with pip and sends a usage record home).
Writes bench/out/upscale_cpu.md and bench/out/upscale_cpu.png (seconds per path, faithful ones in colour).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.upscale import CACHE, OUT, Ncnn, PlainTorch, Polishd, photo, psnr, to_uint8
from stages.esrgan import load as esrgan_load
from stages.esrgan import onnx_backend, openvino_backend

FAITHFUL_DB = 45.0
FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16",
         "amx_int8")


def cpu() -> tuple[str, list[str]]:
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return model, [f for f in FLAGS if f in flags]


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


def mnn_path(onnx: Path, threads: int):
    """MNN on the ONNX export, converted once beside it, fp32 ("high" precision), one session per input shape."""
    import _tools
    import MNN

    mnn_file = onnx.with_suffix(".mnn")
    if not mnn_file.is_file():
        tmp = mnn_file.with_suffix(".mnn.tmp")
        if not _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx), "--MNNModel", str(tmp),
                                  "--bizCode", "polishd"]) or not tmp.is_file():
            raise RuntimeError(f"MNN could not convert {onnx}")
        tmp.replace(mnn_file)
    interp = MNN.Interpreter(str(mnn_file))
    session = interp.createSession({"backend": "CPU", "precision": "high", "numThread": threads})
    inp = interp.getSessionInput(session)
    shape: list = [None]

    def run(image: Image.Image) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0)
        if shape[0] != x.shape:
            interp.resizeTensor(inp, x.shape)
            interp.resizeSession(session)
            shape[0] = x.shape
        inp.copyFrom(MNN.Tensor(x.shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe))
        interp.runSession(session)
        out = interp.getSessionOutput(session)
        host = MNN.Tensor(out.getShape(), MNN.Halide_Type_Float, np.zeros(out.getShape(), np.float32),
                          MNN.Tensor_DimensionType_Caffe)
        out.copyToHostTensor(host)
        y = np.array(host.getData(), dtype=np.float32).reshape(out.getShape())[0]
        return to_uint8(np.clip(y, 0, 1))
    return run


def _resolved(model: str):
    from stages.models import ModelKind, Models, ModelSetting

    return Models(None, CACHE).resolve(ModelSetting("[upscale].model", model, ModelKind.UPSCALER))


def warm_seconds(fn, image: Image.Image, repeat: int) -> tuple[np.ndarray, float]:
    """The output and the median time of ``repeat`` runs, after one that is not counted (the first run
    of a shape plans its memory; tiles repeat one shape)."""
    fn(image)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(image)
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
    args = ap.parse_args(argv)
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
    if openvino_backend.bf16_capable():
        paths["OpenVINO bf16"] = lambda: openvino_path(onnx, args.threads, "bf16")
    try:
        import nncf  # noqa: F401
    except ImportError:
        print("nncf is not installed: the int8 rows are left out (pip install nncf)", flush=True)
    else:
        paths["OpenVINO int8 (NNCF, all convolutions)"] = lambda: openvino_path(onnx, args.threads, "f32", "all")
        paths["OpenVINO int8, residual convs fp32"] = lambda: openvino_path(onnx, args.threads, "f32", "trunk-fp32")
    try:
        import MNN  # noqa: F401
    except ImportError:
        print("MNN is not installed: its row is left out (pip install MNN)", flush=True)
    else:
        paths["MNN fp32 (Winograd)"] = lambda: mnn_path(onnx, args.threads)
    polishd = Polishd(args.model, args.threads, tile=args.size)
    picked = f"polishd auto ({polishd.stage.backend}, {'bf16' if polishd.stage.dtype == torch.bfloat16 else 'fp32'})"
    rows = [{"path": "torch fp32 (the reference)", "seconds": ref_s, "psnr": float("inf"), "picked": False}]
    for label, make in paths.items():
        out, s = warm_seconds(make(), image, args.repeat)
        rows.append({"path": label, "seconds": s, "psnr": psnr(out, reference), "picked": False})
        print(f"{label:42s} {s:7.2f} s  {rows[-1]['psnr']:5.1f} dB", flush=True)
    out, s = warm_seconds(lambda im: np.asarray(polishd(im)), image, args.repeat)
    rows.append({"path": picked, "seconds": s, "psnr": psnr(out, reference), "picked": True})
    print(f"{picked:42s} {s:7.2f} s  {rows[-1]['psnr']:5.1f} dB", flush=True)

    ncnn_s = rows[1]["seconds"]
    lines = [f"# Upscaler paths on this CPU ({args.model}, {args.size}² photo, {args.threads} threads)", "",
             f"CPU: {name}; flags: {', '.join(flags) or 'none of interest'}; "
             f"OpenVINO bf16: {'yes' if openvino_backend.bf16_capable() else 'no'}.", "",
             f"`python -m bench.upscale_cpu --size {args.size} --threads {args.threads}` "
             f"(median of {args.repeat} warm runs; the int8 rows need `pip install nncf`, the MNN row "
             "`pip install MNN`)", "",
             "| path | s (median, warm) | vs ncnn defaults | PSNR vs torch fp32 | faithful (≥ 45 dB) |",
             "|---|---|---|---|---|"]
    for r in rows:
        db = "∞" if r["psnr"] == float("inf") else f"{r['psnr']:.1f} dB"
        lines.append(f"| {'**' + r['path'] + '**' if r['picked'] else r['path']} | {r['seconds']:.2f} | "
                     f"{ncnn_s / r['seconds']:.2f}× | {db} | {'yes' if r['psnr'] >= FAITHFUL_DB else 'no'} |")
    report = "\n".join(lines) + "\n"
    (OUT / "upscale_cpu.md").write_text(report)
    (OUT / "upscale_cpu.json").write_text(json.dumps({"cpu": name, "flags": flags, "rows": rows}, indent=2))
    chart(rows, OUT / "upscale_cpu.png", f"{args.model}, {args.size}x{args.size} photo, {args.threads} threads, {name}")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
