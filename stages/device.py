"""Where models run: ``device = "auto"`` means CUDA, then Apple's MPS, then the CPU.

torch is imported when a device is first asked for, not when a stage module is:
the CLI (``status``, ``check-config``) starts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pick_device(preference: str) -> torch.device:
    import torch

    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError('[daemon].device = "cuda" but torch sees no CUDA device')
    if preference == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError('[daemon].device = "mps" but torch sees no MPS device')
    return torch.device(preference)


def pick_dtype(device: torch.device, preference: str) -> torch.dtype:
    """fp16 where it is safe and fast (CUDA, MPS); fp32 on the CPU unless asked otherwise."""
    import torch

    if preference == "fp32":
        return torch.float32
    if preference == "fp16":
        if device.type == "cpu":
            raise RuntimeError('dtype "fp16" is not supported on the CPU; use "fp32" or "bf16"')
        return torch.float16
    if preference == "bf16":
        return torch.bfloat16
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def dtype_name(dtype: torch.dtype) -> str:
    return _NAMES[str(dtype)]
