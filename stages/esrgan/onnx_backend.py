"""ONNX Runtime for the upscaler on the CPU (``[upscale].backend = "onnxruntime"``).

The same weights, exported once per weights file (by sha256) into ``<models>/onnx/`` with free height
and width.  It matches torch to about 1e-5, but each new tile shape makes ORT plan and keep more arena
memory (a large image in many tile shapes grows by gigabytes), and with the arena off it is slower than
torch.  So it is never chosen by "auto" (OpenVINO is, see ``openvino_backend``); it is here for small
images, and its export is what the OpenVINO backend compiles.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from stages.files import atomic_write


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export(net: torch.nn.Module, sha256: str, cache: Path) -> Path:
    path = cache / "onnx" / f"{sha256[:16]}.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    net = net.float().to(memory_format=torch.contiguous_format)
    example = (torch.rand(1, 3, 64, 64),)
    # The TorchScript exporter, deprecated since torch 2.9 but kept in the pinned torch: for x4plus it takes
    # 2.9 s where the torch.export one takes 26 s (Xeon, Sapphire Rapids, 2 cores), and it needs neither
    # onnxscript nor external weight files.  Its deprecation notice is not the user's to act on, so it is not
    # shown; a torch without it uses the torch.export exporter, weights inside the one file.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(net, example, str(tmp), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "H", 3: "W"}}, opset_version=17,
                              dynamo=False)
    except (TypeError, AttributeError, NotImplementedError):
        h, w = torch.export.Dim("h", min=8), torch.export.Dim("w", min=8)
        torch.onnx.export(net, example, str(tmp), input_names=["x"], output_names=["y"],
                          dynamic_shapes=({2: h, 3: w},), opset_version=18, dynamo=True, external_data=False,
                          verbose=False)
    atomic_write(path, tmp.read_bytes())
    tmp.unlink()
    return path


class OrtRunner:
    """Callable like the torch path: 1×3×h×w float tensor in, 1×3×h·s×w·s float tensor out."""

    def __init__(self, onnx_path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.session.run(None, {"x": np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(y)
