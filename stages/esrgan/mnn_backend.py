"""MNN for the upscaler on x86 CPUs with AVX2 and no AVX-512 (``[upscale].backend = "mnn"``, and "auto" there).

The same weights as every CPU path: the ONNX export (by sha256, see ``onnx_backend.export``), converted
once into MNN's own format beside it in ``<models>/mnn/``, named by the export and MNN's version.  MNN's
CPU kernels do the 3×3 convolutions with Winograd in AVX2 and FMA, in fp32: on CPUs without AVX-512
neither oneDNN (OpenVINO) nor ncnn has a Winograd as fast, and no bf16 or VNNI instruction is there to
help them.  Its output stays far above 45 dB PSNR against fp32 torch.  Speeds on that class:
``python -m bench.upscale_cpu --isa avx2``, numbers per machine in ``bench/out/`` and
``docs/decisions/upscale_cpu_classes.md``.

One session serves every tile shape: a new shape resizes it (a few milliseconds; its memory is planned
for the largest tile, which the tiler bounds).  MNN prints to standard output, past Python, when it is
imported and when it makes a session; while those calls run, descriptor 1 points at descriptor 2, where
``daemon.logs`` turns native output into log events.  The converter used is the compiled one in MNN's
wheel (``_tools.mnnconvert``), never its Python wrapper ``MNN.tools.mnnconvert``, which installs a
logging package with pip and sends a usage record.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from stages.files import fsync_dir


def available() -> bool:
    try:
        _mnn()
    except ImportError:
        return False
    return True


def _mnn():
    """MNN, imported with its load-time lines kept off standard output."""
    with _stdout_to_stderr():
        import MNN
    return MNN


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Points file descriptor 1 at descriptor 2 while MNN's native code may print."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no standard output to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _version() -> str:
    return metadata.version("MNN")


def runner(onnx: Path, cache: Path, threads: int) -> MnnRunner:
    """A runner on the export's MNN file, converted first where there is none.  A kept file that MNN
    cannot read all the same (damaged on disk) is converted again."""
    path = convert(onnx, cache)
    try:
        return MnnRunner(path, threads)
    except UnreadableModel:
        path.unlink(missing_ok=True)
        return MnnRunner(convert(onnx, cache), threads)


def convert(onnx: Path, cache: Path) -> Path:
    """The ONNX export in MNN's format, converted once and kept in ``<cache>/mnn/``.

    The new file is checked by loading it before it takes its name, so a file of that name is whole."""
    path = cache / "mnn" / f"{onnx.stem}-{_version()}.mnn"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with _stdout_to_stderr():
            import _tools

            _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", str(onnx), "--MNNModel", str(tmp),
                               "--bizCode", "polishd"])
        if not tmp.is_file() or not _loads(tmp):
            raise RuntimeError(f"MNN could not convert {onnx} (its converter's lines are in the log)")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _loads(path: Path) -> bool:
    try:
        _interpreter(path)
    except UnreadableModel:
        return False
    return True


class UnreadableModel(ValueError):
    """A file that MNN cannot read as a model."""


def _interpreter(path: Path):
    mnn = _mnn()
    try:
        with _stdout_to_stderr():
            return mnn.Interpreter(str(path))
    except Exception as exc:  # MNN raises a bare Exception for a file it cannot read
        raise UnreadableModel(f"MNN cannot read {path}: {exc}") from None


class MnnRunner:
    """Callable like the torch path: 1×3×h×w float tensor in, 1×3×h·s×w·s float tensor out."""

    def __init__(self, model: Path, threads: int):
        self._mnn = _mnn()
        self.interpreter = _interpreter(model)
        with _stdout_to_stderr():
            # "high": fp32 arithmetic throughout (the x86 wheel has no lower precision to offer anyway).
            self.session = self.interpreter.createSession({"backend": "CPU", "precision": "high",
                                                           "numThread": threads})
        self._input = self.interpreter.getSessionInput(self.session)
        self._shape: tuple[int, ...] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mnn = self._mnn
        nchw = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        if nchw.shape != self._shape:
            self.interpreter.resizeTensor(self._input, nchw.shape)
            self.interpreter.resizeSession(self.session)
            self._shape = nchw.shape
        self._input.copyFrom(mnn.Tensor(nchw.shape, mnn.Halide_Type_Float, nchw, mnn.Tensor_DimensionType_Caffe))
        status = self.interpreter.runSession(self.session)
        if status != 0:
            raise RuntimeError(f"MNN failed on a {nchw.shape[3]}×{nchw.shape[2]} tile (status {status})")
        out = self.interpreter.getSessionOutput(self.session)
        shape = out.getShape()
        host = mnn.Tensor(shape, mnn.Halide_Type_Float, np.empty(shape, np.float32), mnn.Tensor_DimensionType_Caffe)
        out.copyToHostTensor(host)
        return torch.from_numpy(np.array(host.getNumpyData(), dtype=np.float32, copy=True).reshape(shape))
