"""Every CPU class's upscaler table (``bench.upscale_cpu``) in one: what "auto" runs there, against ncnn.

    PYTHONPATH=. python docs/decisions/upscale_cpu_classes.py

Reads the ``bench/out/upscale_cpu*.json`` that ``bench.upscale_cpu`` wrote on each machine (copied to a
name per class and machine, see ``TABLES``) and writes ``bench/out/upscale_cpu-classes.md`` and the chart
beside it: the speed of polishd's pick against ncnn's defaults for each, with the 1.5× goal marked.  It
measures nothing itself.
"""

from __future__ import annotations

import json
import sys

from PIL import Image, ImageDraw

from bench.upscale import OUT
from bench.upscale_cpu import FAITHFUL_DB

GOAL = 1.5
NCNN = "ncnn, its defaults (fp32, Winograd)"
# file stem, the class's CPUs, how the code was run (native, or a larger CPU capped to the class's code)
TABLES = (
    ("upscale_cpu-bf16-amx", "bf16 + AMX: Intel Sapphire Rapids and later", "native"),
    ("upscale_cpu-bf16-no-amx", "bf16, no AMX: AMD Zen 4 and Zen 5", "native"),
    ("upscale_cpu-avx512-only-xeon", "avx512, no bf16: Intel Skylake to Ice Lake servers", "AVX-512 code only"),
    ("upscale_cpu-avx512-only", "avx512, no bf16 (no AMD part is in this class)", "AVX-512 code only"),
    ("upscale_cpu-avx2-only-xeon", "avx2: AMD Zen 1-3, Intel desktop parts", "AVX2 code only"),
    ("upscale_cpu-avx2-only", "avx2: AMD Zen 1-3, Intel desktop parts", "AVX2 code only"),
    ("upscale_cpu", "avx2: AMD Zen 1-3, Intel desktop parts", "native"),
)


def row(stem: str, cpus: str, code: str) -> dict:
    data = json.loads((OUT / f"{stem}.json").read_text())
    by_path = {r["path"]: r for r in data["rows"]}
    picked = next(r for r in data["rows"] if r["picked"])
    ncnn = by_path[NCNN]["seconds"]

    def against(path: str) -> float | None:
        return ncnn / by_path[path]["seconds"] if path in by_path else None

    return {"stem": stem, "cpus": cpus, "code": code, "cpu": data["cpu"],
            "auto": picked["path"].removeprefix("polishd auto ").strip("()"), "seconds": picked["seconds"],
            "ncnn": ncnn, "ratio": ncnn / picked["seconds"], "psnr": picked["psnr"],
            "openvino_fp32": against("OpenVINO fp32"), "torch": against("torch fp32 (the reference)")}


def chart(rows: list[dict], path) -> None:
    w, bar_h, left = 900, 30, 430
    img = Image.new("RGB", (w, 64 + bar_h * len(rows)), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), "x4plus, 256x256 photo, 2 threads: polishd's CPU pick against ncnn's defaults, per CPU class",
           fill="black")
    d.text((10, 24), f"times faster than ncnn, higher is better; the line is the {GOAL}x goal; "
           f"orange: at the goal and at least {FAITHFUL_DB:.0f} dB", fill="black")
    top = max(max(r["ratio"] for r in rows), GOAL) * 1.05
    scale = (w - left - 90) / top
    for i, r in enumerate(rows):
        y = 48 + i * bar_h
        ok = r["ratio"] >= GOAL and r["psnr"] >= FAITHFUL_DB
        d.text((10, y + 2), r["cpus"][:62], fill="black")
        d.text((10, y + 14), f"{r['cpu'][:40]}, {r['code']}", fill=(90, 90, 90))
        x1 = left + scale * r["ratio"]
        d.rectangle((left, y + 4, x1, y + bar_h - 6), fill=(230, 120, 40) if ok else (90, 140, 200))
        d.text((x1 + 6, y + 8), f"{r['ratio']:.2f}x {r['auto']}", fill="black")
    goal = left + scale * GOAL
    d.line((goal, 44, goal, 48 + bar_h * len(rows)), fill=(200, 0, 0), width=2)
    img.save(path)


def main() -> int:
    rows = [row(*t) for t in TABLES if (OUT / f"{t[0]}.json").exists()]
    if not rows:
        print("no bench/out/upscale_cpu*.json to gather: run python -m bench.upscale_cpu first", file=sys.stderr)
        return 2

    def times(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}×"

    lines = ["# The upscaler on each CPU class: what \"auto\" runs, against ncnn", "",
             "`PYTHONPATH=. python docs/decisions/upscale_cpu_classes.py`, from the tables it links to "
             "(x4plus, one 256² photo, 2 threads, "
             "median of 3 warm runs, PSNR against fp32 torch). The goal is at least "
             f"{GOAL}× ncnn's defaults at {FAITHFUL_DB:.0f} dB or more.", "",
             "\"AVX2 code only\" and \"AVX-512 code only\" are stand-ins: a larger CPU running the code of the "
             "smaller class (torch and oneDNN capped, ncnn built without AVX-512; see `bench/upscale_cpu.py`). "
             "The code is that class's; the core that runs it is not. The last two columns show how a core "
             "ranks the engines: a stand-in is only as good as its match with the CPU it stands for.", "",
             "| class: its CPUs | measured on | code | auto runs | auto | ncnn | vs ncnn | PSNR | "
             "OpenVINO fp32 vs ncnn | torch vs ncnn | table |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cpus']} | {r['cpu']} | {r['code']} | {r['auto']} | {r['seconds']:.2f} s | "
                     f"{r['ncnn']:.2f} s | **{r['ratio']:.2f}×** | {r['psnr']:.1f} dB | {times(r['openvino_fp32'])} | "
                     f"{times(r['torch'])} | [{r['stem']}]({r['stem']}.md) |")
    lines += ["", "![polishd's pick against ncnn per class](upscale_cpu-classes.png)", ""]
    (OUT / "upscale_cpu-classes.md").write_text("\n".join(lines))
    chart(rows, OUT / "upscale_cpu-classes.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
