"""How much of the upscaler int8 can run at 45 dB: NNCF post-training int8, one block at a time.

    PYTHONPATH=. python docs/decisions/upscale_int8.py [--model x4plus] [--threads 2] [--isa native|avx2|avx512]

(needs pip install nncf)

Accuracy control for int8 keeps in fp32 the layers int8 hurts most, until the output is faithful again.
NNCF's ``quantize_with_accuracy_control`` does that by reverting quantizer groups one at a time and
measuring again; on this model it ran for more than 44 minutes without ending.  This benchmark measures the
same thing directly and in about twelve minutes: it quantizes every convolution once (NNCF, calibrated on
crops of the bundled photos), then, for each block (one residual dense block of the trunk, or one conv
of the head and tail), builds the model with only that block int8 (its int8 weights and the quantizers
on its inputs; every other conv back on its fp32 weights) and measures the error it adds on eight 96²
crops the calibration did not see.  Errors of independent blocks add, so the blocks that buy the most
multiply-adds per unit of error are taken first while the sum stays inside the ``--db`` budget; that mix
is then checked as a whole and timed on the 256² photo, against all-fp32 and all-int8.

``--isa avx512`` runs the code of an AVX-512 CPU without bf16 (VNNI: int8 at its fastest short of AMX),
as ``bench.upscale_cpu`` does.  Writes bench/out/upscale_int8[-<isa>-only].md and the chart beside it
(the PSNR each block would leave alone, against the budget).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.upscale import CACHE, OUT, REPO, PlainTorch, db, photo, psnr, to_uint8
from bench.upscale_cpu import FAITHFUL_DB, ISA_ENV, _resolved, calibration_crops, cpu, warm_seconds
from stages.esrgan import load as esrgan_load
from stages.esrgan import onnx_backend

CROP = 96


def validation() -> list[np.ndarray]:
    """Eight 96² crops of the bundled photos at 320², away from the calibration crops' grid."""
    crops = []
    for name in ("astronaut.png", "camera.png"):
        im = Image.open(REPO / "tests" / "data" / name).convert("RGB").resize((320, 320), Image.Resampling.LANCZOS)
        for x, y in ((20, 30), (200, 40), (110, 200), (220, 210)):
            crops.append(np.asarray(im.crop((x, y, x + CROP, y + CROP)), np.float32).transpose(2, 0, 1)[None] / 255)
    return crops


def block_of(conv: str) -> str:
    """``/body/body.3/rdb2/conv1/Conv`` → ``body.3.rdb2``; a conv outside the trunk is its own block."""
    m = re.match(r"/body/body\.(\d+)/rdb(\d)/", conv)
    return f"body.{m[1]}.rdb{m[2]}" if m else conv.strip("/").split("/")[0]


def fed_convs(fq) -> set[str]:
    """The convolutions a quantizer's output reaches as data, through concatenations."""
    found, todo = set(), [fq.output(0)]
    while todo:
        for target in todo.pop().get_target_inputs():
            node = target.get_node()
            if node.get_type_name() == "Concat":
                todo.append(node.output(0))
            elif node.get_type_name() == "Convolution" and target.get_index() == 0:
                found.add(node.get_friendly_name())
    return found


class Mixer:
    """Models with int8 in the chosen blocks only, built from one all-int8 quantization."""

    def __init__(self, onnx, threads: int):
        import nncf
        import openvino as ov

        nncf.set_log_level(logging.ERROR)
        self.ov, self.core, self.threads = ov, ov.Core(), threads
        fp32 = self.core.read_model(str(onnx))
        self.fp32_weights = {op.get_friendly_name(): op.input_value(1).get_node().get_data().copy()
                             for op in fp32.get_ops() if op.get_type_name() == "Convolution"}
        self.int8 = nncf.quantize(fp32, nncf.Dataset(calibration_crops()), subset_size=32,
                                  fast_bias_correction=True)
        self.blocks: dict[str, list[str]] = {}
        for conv in self.fp32_weights:
            self.blocks.setdefault(block_of(conv), []).append(conv)
        shaped = fp32.clone()
        shaped.reshape([1, 3, CROP, CROP])
        pixels = {op.get_friendly_name(): int(np.prod(op.get_output_shape(0)[2:]))
                  for op in shaped.get_ops() if op.get_type_name() == "Convolution"}
        self.macs = {block: sum(int(np.prod(self.fp32_weights[c].shape)) * pixels[c] for c in convs)
                     for block, convs in self.blocks.items()}

    def build(self, blocks):
        keep = {c for b in blocks for c in self.blocks[b]}
        model = self.int8.clone()
        for op in model.get_ops():
            kind = op.get_type_name()
            if kind == "FakeQuantize" and not fed_convs(op) & keep:
                op.output(0).replace(op.input_value(0))
            elif kind == "Convolution" and op.get_friendly_name() not in keep:
                weights = self.ov.opset13.constant(self.fp32_weights[op.get_friendly_name()])
                op.input(1).replace_source_output(weights.output(0))
        compiled = self.core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": self.threads,
                                                          "INFERENCE_PRECISION_HINT": "f32",
                                                          "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return lambda x: to_uint8(np.clip(request.infer({0: x})[compiled.output(0)][0], 0, 1))


def mse(run, crops, refs) -> float:
    return float(np.mean([np.mean((run(c).astype(np.float64) - r) ** 2) for c, r in zip(crops, refs, strict=True)]))


def chart(alone: dict[str, float], budget: float, chosen: list[str], path, title: str) -> None:
    order = sorted(alone, key=lambda b: -db(alone[b]))
    w, h, left, bottom = 900, 360, 50, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), title, fill="black")
    d.text((10, 22), f"PSNR with only that block int8 (orange: in the mix kept at {budget:.0f} dB); the line: "
           f"{budget:.0f} dB", fill="black")
    lo, hi = 30.0, 60.0
    y_of = lambda v: h - bottom - (h - bottom - 50) * (min(max(v, lo), hi) - lo) / (hi - lo)  # noqa: E731
    bar = (w - left - 10) / len(order)
    for i, b in enumerate(order):
        x0 = left + i * bar
        colour = (230, 120, 40) if b in chosen else (90, 140, 200) if b.startswith("body") else (120, 180, 90)
        d.rectangle((x0, y_of(db(alone[b])), x0 + bar - 2, h - bottom), fill=colour)
    for v in (30, 40, 50, 60):
        d.text((10, y_of(v) - 6), f"{v} dB", fill="black")
    d.line((left, y_of(budget), w - 10, y_of(budget)), fill=(200, 0, 0), width=2)
    d.text((left, h - bottom + 8), "blocks, least harmed first (blue: trunk blocks, green: head and tail convs)",
           fill="black")
    img.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="x4plus", choices=list(esrgan_load.BUILTINS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", choices=tuple(ISA_ENV), default="native")
    ap.add_argument("--db", type=float, default=FAITHFUL_DB, help="the PSNR the mix must keep")
    args = ap.parse_args(argv)
    env = ISA_ENV[args.isa]
    if any(os.environ.get(k) != v for k, v in env.items()):
        os.execve(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None
                                                                                 else argv)], {**os.environ, **env})
    try:
        import nncf  # noqa: F401
    except ImportError:
        print("docs/decisions/upscale_int8.py needs NNCF, which polishd does not install: pip install nncf", flush=True)
        return 0
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    name, flags = cpu()
    ref_net = PlainTorch(args.model).net
    onnx = onnx_backend.export(ref_net, esrgan_load.load(_resolved(args.model), CACHE).sha256, CACHE)
    crops = validation()
    with torch.no_grad():
        refs = [to_uint8(ref_net(torch.from_numpy(c))[0].clamp(0, 1).numpy()).astype(np.float64) for c in crops]
    t0 = time.perf_counter()
    mixer = Mixer(onnx, args.threads)
    base = mse(mixer.build([]), crops, refs)  # fp32 through the same graph: the floor
    alone = {}
    for block in mixer.blocks:
        alone[block] = max(mse(mixer.build([block]), crops, refs) - base, 0.0)
        print(f"{block:18s} alone int8: {db(alone[block] + base):5.1f} dB", flush=True)
    budget = 255.0 ** 2 / 10 ** (args.db / 10)
    order = sorted(mixer.blocks, key=lambda b: alone[b] / mixer.macs[b])
    chosen, spent = [], base
    for block in order:
        if spent + alone[block] <= budget:
            chosen.append(block)
            spent += alone[block]
    while chosen and mse(mixer.build(chosen), crops, refs) > budget:
        chosen.pop()  # errors do not add exactly: give back the last taken until the whole mix holds
    ranking_s = time.perf_counter() - t0

    image = photo(256)
    x = np.asarray(image, np.float32).transpose(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        reference = to_uint8(ref_net(torch.from_numpy(x))[0].clamp(0, 1).numpy())
    total = sum(mixer.macs.values())
    rows = []
    for label, blocks in (("OpenVINO fp32", []), (f"int8 mix kept at {args.db:.0f} dB", chosen),
                          ("int8, every convolution", list(mixer.blocks))):
        run = mixer.build(blocks)
        out, seconds = warm_seconds(run, x, 3)
        rows.append({"path": label, "blocks": len(blocks), "int8_macs": sum(mixer.macs[b] for b in blocks) / total,
                     "seconds": seconds, "psnr_photo": psnr(out, reference),
                     "psnr_crops": db(mse(run, crops, refs))})
        print(rows[-1], flush=True)
    trunk = sorted(db(alone[b] + base) for b in alone if b.startswith("body"))
    capped = args.isa != "native"
    code = {"avx2": "AVX2 code only", "avx512": "AVX-512 code without bf16"}.get(args.isa, "this CPU")
    command = (f"PYTHONPATH=. python docs/decisions/upscale_int8.py --threads {args.threads}"
               + (f" --isa {args.isa}" if capped else ""))
    lines = [f"# How much of the upscaler int8 can run at {args.db:.0f} dB ({args.model}, {code})", "",
             f"CPU: {name}; flags: {', '.join(flags) or 'none of interest'}."
             + (f" Run with {', '.join(f'`{k}={v}`' for k, v in env.items())}." if capped else ""), "",
             f"`{command}` (NNCF post-training int8, calibrated on 32 crops 64² of the bundled photos; errors "
             f"measured on 8 other crops {CROP}²; ranking and check took {ranking_s / 60:.0f} min)", "",
             f"- Every convolution int8 leaves {rows[2]['psnr_photo']:.1f} dB. One trunk block alone int8 (of "
             f"{len(trunk)}; every other conv fp32) leaves {trunk[0]:.1f}–{trunk[-1]:.1f} dB, median "
             f"{trunk[len(trunk) // 2]:.1f} dB: each block's error alone spends most of a {args.db:.0f} dB budget.",
             f"- The mix that holds {args.db:.0f} dB runs {len(chosen)} of {len(mixer.blocks)} blocks int8 "
             f"({', '.join(chosen) or 'none'}): {rows[1]['int8_macs']:.0%} of the multiply-adds.", "",
             "| path | blocks int8 | multiply-adds int8 | s (256² photo, median of 3) | vs fp32 | PSNR photo | "
             "PSNR crops |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['path']} | {r['blocks']} | {r['int8_macs']:.0%} | {r['seconds']:.2f} | "
                     f"{rows[0]['seconds'] / r['seconds']:.2f}× | {r['psnr_photo']:.1f} dB | "
                     f"{r['psnr_crops']:.1f} dB |")
    report = "\n".join(lines) + "\n"
    stem = f"upscale_int8-{args.isa}-only" if capped else "upscale_int8"
    (OUT / f"{stem}.md").write_text(report)
    (OUT / f"{stem}.json").write_text(json.dumps({"cpu": name, "flags": flags, "isa": args.isa, "rows": rows,
                                                  "alone_db": {b: db(alone[b] + base) for b in alone},
                                                  "chosen": chosen}, indent=2))
    chart({b: alone[b] + base for b in alone}, args.db, chosen, OUT / f"{stem}.png",
          f"{args.model}, int8 one block at a time, {name}, {code}")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
