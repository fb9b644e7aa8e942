"""The CPU classes that the upscaler's "auto" backend is chosen by (each measured in ``bench/upscale_cpu.py``).

- ``"bf16"``: bf16 instructions (AVX-512 BF16, AMX; OpenVINO says so): OpenVINO in bf16.
- ``"avx2"``: x86 with AVX2 and FMA but no AVX-512 (AMD Zen 1–3, Intel desktop parts): MNN's Winograd.
- ``"avx512"``: AVX-512 without bf16 (Intel Skylake to Ice Lake servers): OpenVINO fp32.
- ``"other"``: anything else (ARM, older x86): ncnn or OpenVINO fp32.

The vector width is torch's own reading of the CPU (``torch.backends.cpu.get_cpu_capability()``), so
torch's ``ATEN_CPU_CAPABILITY`` variable caps it as it caps torch's kernels; and ``ONEDNN_MAX_CPU_ISA``
below bf16 (which keeps OpenVINO's oneDNN from bf16 instructions) rules out the bf16 class.  With both,
a larger CPU chooses, and runs, as a smaller one does (``bench.upscale_cpu --isa`` uses that).
"""

from __future__ import annotations

import os

CLASSES = ("bf16", "avx512", "avx2", "other")
# oneDNN's names for the instruction sets below AVX-512 BF16
_NO_BF16_ISA = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_class() -> str:
    import torch

    from stages.esrgan import openvino_backend  # torch: imported by a job that runs the model

    width = torch.backends.cpu.get_cpu_capability()
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _NO_BF16_ISA
    if width != "AVX2" and not capped and openvino_backend.available() and openvino_backend.bf16_capable():
        return "bf16"
    return {"AVX2": "avx2", "AVX512": "avx512"}.get(width, "other")
