"""ncnn for the built-in upscalers (``[upscale].backend = "ncnn"``; "auto" on CPUs of neither the bf16 nor
the AVX2 class, see ``stages/esrgan/cpu.py``).

The built-in weights ship in ncnn's own format, so ncnn runs them as they are: no export, no compile,
nothing cached.  ncnn's x86 kernels use Winograd for the 3×3 convolutions, which oneDNN (OpenVINO's
CPU plugin) does only on AVX-512; and with ``bf16`` ncnn keeps weights and activations in bf16
between layers and computes in fp32, which halves the memory traffic on any CPU — it needs no bf16
instructions; its output stays above 45 dB PSNR against fp32 torch.  How it compares with the other
backends on each CPU class: ``python -m bench.upscale_cpu``, with the numbers per machine in ``bench/out/``.

Memory is bounded by the tiler like every other backend: ncnn sees one tile at a time, and with
``lightmode`` (its default) it frees each intermediate blob as soon as the next layer has read it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def available() -> bool:
    try:
        import ncnn  # noqa: F401
    except ImportError:
        return False
    return True


class NcnnRunner:
    """Callable like the torch path: 1×3×h×w float tensor in, 1×3×h·s×w·s float tensor out."""

    def __init__(self, param: Path, weights: Path, threads: int, bf16: bool):
        import ncnn

        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False  # the GPU path is torch's
        self.net.opt.num_threads = threads
        self.net.opt.use_bf16_storage = bf16
        self.net.opt.lightmode = True
        self.precision = "bf16" if bf16 else "f32"
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise RuntimeError(f"ncnn could not read {param.name} / {weights.name}")
        self._input, self._output = self.net.input_names()[0], self.net.output_names()[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        chw = np.ascontiguousarray(x[0].numpy(), dtype=np.float32)
        ex = self.net.create_extractor()
        ex.input(self._input, self._ncnn.Mat(chw))
        status, out = ex.extract(self._output)
        if status != 0:
            raise RuntimeError(f"ncnn failed on a {chw.shape[2]}×{chw.shape[1]} tile (status {status})")
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))[None]
