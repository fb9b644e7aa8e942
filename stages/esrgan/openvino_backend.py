"""OpenVINO for the upscaler on the CPU (``[upscale].backend = "openvino"``; "auto" on a CPU with bf16, and for
weights files that ncnn cannot run where MNN is not chosen).

The same weights, exported once to ONNX (by sha256, see ``onnx_backend.export``) and compiled by
OpenVINO's CPU plugin with free height and width, so one compiled model serves every tile shape.
Where the CPU has bf16 instructions (AVX-512 BF16, AMX) OpenVINO runs the convolutions in bf16 with
fp32 accumulation (above 45 dB PSNR against fp32 torch); elsewhere in fp32, which matches torch to about
1e-5.  Speeds per CPU class: ``python -m bench.upscale_cpu``, numbers per machine in ``bench/out/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def bf16_capable() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner:
    """Callable like the torch path: 1×3×h×w float tensor in, 1×3×h·s×w·s float tensor out."""

    def __init__(self, onnx_path: Path, threads: int, bf16: bool, cache: Path | None = None):
        import openvino as ov

        core = ov.Core()
        if cache is not None:
            # OpenVINO keeps the compiled model there, keyed by the model's content, the device and the
            # compile settings (precision, threads): a fresh process loads it instead of compiling again.
            cache.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache)})
        model = core.read_model(str(onnx_path))
        self.precision = "bf16" if bf16 else "f32"
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.request.infer({0: np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        return torch.from_numpy(np.array(out[self.compiled.output(0)], dtype=np.float32, copy=True))
