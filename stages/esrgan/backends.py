"""The upscaler's runtimes as a registry, in spandrel's manner: each backend says whether it is installed, what
it needs of a model, and builds a runner for a loaded one.  ``auto`` is a function of the registry and the CPU's
class (``stages.esrgan.cpu``): the order in which ``[upscale].backend = "auto"`` tries them.

Every backend here is faithful: at least 45 dB PSNR against fp32 torch on the test photos, in the precision it
is built with (``tests/test_upscale.py`` checks each one that is installed; ``bench/upscale_cpu.py`` measures
them per CPU class, with the numbers in ``bench/out/``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.esrgan import cpu, mnn_backend, ncnn_backend, onnx_backend, openvino_backend
from stages.esrgan.load import BUILTINS, LoadedModel, SpandrelNet

Runner = Callable[[torch.Tensor], torch.Tensor]


class Unsupported(RuntimeError):
    """The backend cannot run this model (e.g. ncnn and a model that is not built in)."""


@dataclass(frozen=True)
class Request:
    """What building a runner takes: the model, where it runs, the precision picked and the one asked for."""

    model: LoadedModel
    device: torch.device
    dtype: torch.dtype  # the precision the device would run in ([upscale].dtype resolved for it)
    setting: str        # [upscale].dtype as written: auto | fp32 | fp16 | bf16
    threads: int
    cache: Path         # where exported and compiled models are kept ([paths].models)


@dataclass(frozen=True)
class Built:
    run: Runner
    dtype: torch.dtype  # the precision it really computes in (the manifest's dtype)


@dataclass(frozen=True)
class Backend:
    name: str
    available: Callable[[], bool]
    build: Callable[[Request], Built]
    cpu_only: bool = True


class TorchRunner:
    """The model itself, moved to its device and precision (channels-last on a CPU)."""

    def __init__(self, net: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        net = net.to(device=device, dtype=dtype)
        if device.type == "cpu":
            net = net.to(memory_format=torch.channels_last)
        self.net, self.device, self.dtype = net, device, dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(device=self.device, dtype=self.dtype)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            return self.net(x).float().cpu()


def _torch(r: Request) -> Built:
    runner = TorchRunner(r.model.net, r.device, r.dtype)
    r.model.net = runner.net
    return Built(runner, r.dtype)


def _onnx(r: Request) -> Path:
    return onnx_backend.export(r.model.net, r.model.sha256, r.cache)


def _mnn(r: Request) -> Built:
    return Built(mnn_backend.runner(_onnx(r), r.cache, r.threads), torch.float32)


def _ncnn(r: Request) -> Built:
    if r.model.ncnn is None:
        raise Unsupported(f'[upscale].backend = "ncnn" runs the built-in models only ({", ".join(BUILTINS)}); '
                          f'use "auto" for {r.model.name}')
    bf16 = r.setting in ("auto", "bf16")
    return Built(ncnn_backend.NcnnRunner(*r.model.ncnn, r.threads, bf16), torch.bfloat16 if bf16 else torch.float32)


def _openvino(r: Request) -> Built:
    bf16 = r.setting == "bf16" or (r.setting == "auto" and cpu.cpu_class() == "bf16")
    runner = openvino_backend.OpenVinoRunner(_onnx(r), r.threads, bf16, r.cache / "openvino")
    return Built(runner, torch.bfloat16 if bf16 else torch.float32)


def _onnxruntime(r: Request) -> Built:
    return Built(onnx_backend.OrtRunner(_onnx(r), r.threads), r.dtype)


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", lambda: True, _torch, cpu_only=False),
    # each runtime's own check, looked up when asked (a runtime may be uninstalled, or a test may say so)
    "openvino": Backend("openvino", lambda: openvino_backend.available(), _openvino),
    "mnn": Backend("mnn", lambda: mnn_backend.available(), _mnn),
    "ncnn": Backend("ncnn", lambda: ncnn_backend.available(), _ncnn),
    "onnxruntime": Backend("onnxruntime", lambda: onnx_backend.available(), _onnxruntime),
}


def auto(device: torch.device, model: LoadedModel, setting: str) -> list[str]:
    """The backends ``auto`` tries, in order, always ending in torch: the first choice (``choose``); after MNN,
    the choice without it; after any other, torch."""
    order = [choose(device, model, setting)]
    if order[0] == "mnn":
        order.append(choose(device, model, setting, mnn=False))
    return order if order[-1] == "torch" else [*order, "torch"]


def choose(device: torch.device, model: LoadedModel, setting: str, mnn: bool = True) -> str:
    """The fastest faithful backend for this device and model.

    On a GPU, torch.  On the CPU, by its class: with bf16 instructions, OpenVINO in bf16; on x86 with AVX2 and
    no AVX-512, MNN's Winograd in fp32; with AVX-512 and no bf16, OpenVINO in fp32; on any other, a built-in
    model in ncnn with bf16 storage, and anything else in OpenVINO fp32.  ``dtype = "bf16"`` off the bf16 class
    means ncnn's bf16 storage.  Architectures that only spandrel knows run in torch.
    """
    if device.type != "cpu":
        return "torch"
    ours = not isinstance(model.net, SpandrelNet)
    kind = cpu.cpu_class()
    if kind == "bf16":
        return "openvino" if ours else "torch"
    fp32 = ours and setting in ("auto", "fp32")
    if mnn and kind == "avx2" and fp32 and BACKENDS["mnn"].available():
        return "mnn"
    if kind == "avx512" and fp32 and BACKENDS["openvino"].available():
        return "openvino"
    if model.ncnn is not None and setting in ("auto", "bf16") and BACKENDS["ncnn"].available():
        return "ncnn"
    return "openvino" if ours and BACKENDS["openvino"].available() else "torch"
