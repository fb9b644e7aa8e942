"""The CPU classes that the upscaler's "auto" backend is chosen by (each measured in ``bench/upscale_cpu.py``).

- ``"bf16"``: bf16 instructions (AVX-512 BF16, AMX; OpenVINO says so): OpenVINO in bf16.
- ``"avx2"``: x86 with AVX2 and FMA but no AVX-512 (AMD Zen 1–3, Intel desktop parts): MNN's Winograd.
- ``"avx512"``: AVX-512 without bf16 (Intel Skylake to Ice Lake servers): ncnn or OpenVINO fp32.
- ``"other"``: anything else (ARM, older x86): ncnn or OpenVINO fp32.

The vector width is torch's own reading of the CPU (``torch.backends.cpu.get_cpu_capability()``), so
torch's ``ATEN_CPU_CAPABILITY`` variable caps it as it caps torch's kernels: with ``avx2`` an AVX-512
machine chooses, and runs torch, as an AVX2 one does (``bench.upscale_cpu --isa avx2`` uses that).
"""

from __future__ import annotations

CLASSES = ("bf16", "avx512", "avx2", "other")


def cpu_class() -> str:
    import torch

    from stages.esrgan import openvino_backend

    width = torch.backends.cpu.get_cpu_capability()
    if width != "AVX2" and openvino_backend.available() and openvino_backend.bf16_capable():
        return "bf16"
    return {"AVX2": "avx2", "AVX512": "avx512"}.get(width, "other")
