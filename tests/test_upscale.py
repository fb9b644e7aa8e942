"""Real-ESRGAN: weight conversion against ncnn itself, the tiler, modes, user weights, the stage."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms

from stages.esrgan import load as esrgan_load
from stages.esrgan import tile as tiling
from stages.esrgan.arch import UnsupportedModelError
from stages.files import sha256_file
from stages.models import ModelKind, Models, ModelSetting
from stages.upscale import UpscaleConfig, UpscaleParams, UpscaleStage, target_size
from tests.conftest import DATA, REPO

CACHE = REPO / "var" / "models"


def load(name: str, models_dir: Path = CACHE) -> esrgan_load.LoadedModel:
    """[upscale].model = name, resolved as the stage resolves it (files looked for in models_dir)."""
    setting = ModelSetting("[upscale].model", name, ModelKind.UPSCALER)
    return esrgan_load.load(Models(None, models_dir).resolve(setting), CACHE)


def crop(size: int, box=(200, 80)) -> np.ndarray:
    im = Image.open(DATA / "astronaut.png").convert("RGB").crop((*box, box[0] + size, box[1] + size))
    return np.asarray(im, dtype=np.float32) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def runner(net):
    def run(x):
        with torch.inference_mode():
            return net(x)
    return run


@pytest.mark.parametrize("name, size", [("animevideov3", 48), ("x4plus-anime", 32), ("x4plus", 24)])
def test_converted_weights_match_ncnn_running_the_same_files(name, size):
    ncnn = pytest.importorskip("ncnn")
    model = load(name)
    stem = esrgan_load.BUILTINS[name].ncnn_stem
    folder = esrgan_load.package_dir()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, flag, False)  # ncnn's exact fp32 path, to compare numbers
    net.load_param(str(folder / f"{stem}.param"))
    net.load_model(str(folder / f"{stem}.bin"))
    x = np.ascontiguousarray(crop(size).transpose(2, 0, 1))
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(x))
    _, out = ex.extract("output")
    theirs = np.array(out)
    with torch.inference_mode():
        ours = model.net(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == theirs.shape == (3, size * 4, size * 4)
    assert np.abs(ours - theirs).max() <= 1e-4


def test_converted_weights_are_cached_as_safetensors():
    path = esrgan_load.builtin_weights("animevideov3", CACHE)
    assert path.suffix == ".safetensors" and path.parent == CACHE / "realesrgan"
    converted = path.stat().st_mtime_ns
    model = load("animevideov3")
    assert model.path == path and model.sha256 == sha256_file(path)  # the digest is of the file it loaded
    assert path.stat().st_mtime_ns == converted  # converted once, then read from the cache


@pytest.mark.parametrize("length, tile, overlap", [(100, 32, 8), (257, 64, 16), (40, 64, 16), (129, 128, 16)])
def test_tile_weights_sum_to_one_so_a_pointwise_model_is_reproduced_exactly(length, tile, overlap):
    """With nearest-neighbour upsampling as the 'model', tiled output must equal untiled output."""
    rng = np.random.default_rng(0)
    image = rng.random((length, length + 13, 3), dtype=np.float32)

    def nearest(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")

    tiled = tiling.upscale(nearest, image, 2, tile, overlap)
    whole = tiling.upscale(nearest, image, 2, 10_000, 0)
    assert tiled.shape == (2 * length, 2 * (length + 13), 3)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # float rounding of the blend only


def test_spans_partition_the_image():
    for length in (1, 7, 128, 129, 1000):
        s = tiling.spans(length, 100, 10)
        assert s[0].core_start == 0 and s[-1].core_end == length
        assert all(a.core_end == b.core_start for a, b in zip(s, s[1:], strict=False))
        assert all(0 <= sp.input_start <= sp.keep_start <= sp.core_start < sp.core_end <= sp.keep_end
                   <= sp.input_end <= length for sp in s)


def test_tiled_animevideov3_matches_untiled_without_seams():
    net = load("animevideov3").net
    image = crop(128)
    whole = tiling.upscale(runner(net), image, 4, 1000, 0)
    tiled = tiling.upscale(runner(net), image, 4, 48, 16)
    assert psnr(tiled, whole) >= 45.0


@pytest.mark.slow
def test_tiled_x4plus_matches_untiled_at_45_db():
    net = load("x4plus").net
    image = crop(192, box=(150, 40))
    whole = tiling.upscale(runner(net), image, 4, 1000, 0)
    tiled = tiling.upscale(runner(net), image, 4, 96, 16)
    assert psnr(tiled, whole) >= 45.0


@pytest.mark.parametrize("params, expected", [
    (UpscaleConfig(scale=2), (200, 100)),
    (UpscaleConfig(scale=3), (300, 150)),
    (UpscaleConfig(long_edge=4096), (4096, 2048)),
    (UpscaleConfig(width=640), (640, 320)),
    (UpscaleConfig(height=64), (128, 64)),
    (UpscaleConfig(width=500, height=300), (500, 300)),
])
def test_target_size(params, expected):
    assert target_size((100, 50), params) == expected


@pytest.fixture(scope="module")
def stage():
    return UpscaleStage()


class _Ctx:
    """Just enough of a JobContext for setup()."""

    def __init__(self, models: Path):
        self.models = Models(None, models)


@pytest.fixture(scope="module")
def anime(stage):
    params = UpscaleParams(model="animevideov3", scale=2, device="cpu", tile=32)
    stage.setup(_Ctx(CACHE), params)
    return params


def small(mode: str) -> Image.Image:
    return Image.open(DATA / "astronaut.png").crop((200, 80, 240, 110)).convert(mode)


def test_modes_come_back_as_they_went_in(stage, anime):
    rgba = small("RGBA")
    a = np.array(rgba)
    a[:, :20, 3] = 0
    rgba = Image.fromarray(a)
    out = stage.upscale_image(rgba, anime, 32).image
    assert out.mode == "RGBA" and out.size == (80, 60)
    alpha = np.asarray(out.getchannel("A"))
    assert alpha[:, :30].max() < 16 and alpha[:, 50:].min() > 240
    assert stage.upscale_image(small("L"), anime, 32).image.mode == "L"
    assert stage.upscale_image(small("P"), anime, 32).image.mode == "RGB"
    grey16 = Image.fromarray(np.asarray(small("L"), dtype=np.uint16) * 257)
    out16 = stage.upscale_image(grey16, anime, 32).image
    assert out16.mode == "I;16" and out16.size == (80, 60)
    values = np.asarray(out16)
    assert values.max() > 255 and len(np.unique(values)) > 256  # 16-bit range and precision kept


def test_stage_writes_upscale_with_icc_profile_and_manifest(tmp_path):
    from daemon import config as config_mod
    from tests.conftest import run_one, write_config

    path = write_config(tmp_path, '[upscale]\nmodel = "animevideov3"\nscale = 3\ntile = 64\n')
    cfg = config_mod.load(path)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = cfg.paths.inbox / "photo.png"
    Image.open(DATA / "astronaut.png").resize((96, 64)).save(src, icc_profile=icc)
    out, manifest = run_one(cfg, src, [UpscaleStage()])
    up = Image.open(out.archive / "40-upscale.png")
    assert up.size == (288, 192) and up.info.get("icc_profile") == icc
    entry = manifest.stages[0]
    assert entry.name == "upscale" and entry.outputs == ["40-upscale.png"]
    # The default by the CPU's class: OpenVINO in bf16 with bf16 instructions, MNN in fp32 on AVX2 without
    # AVX-512, OpenVINO in fp32 on AVX-512 without bf16, ncnn with bf16 storage on any other.
    from stages.esrgan.cpu import cpu_class

    expected = {"bf16": ("openvino", "bf16"), "avx2": ("mnn", "fp32"), "avx512": ("openvino", "fp32")}.get(
        cpu_class(), ("ncnn", "bf16"))
    assert entry.device == "cpu" and (entry.details.backend, entry.dtype) == expected
    assert entry.details.native_scale == 4
    assert entry.models[0].name == "animevideov3" and len(entry.models[0].sha256) == 64


# ---------------------------------------------------------------------- user weights


def test_official_pth_layouts_and_old_esrgan_keys_load(tmp_path):
    sd = load("x4plus-anime").net.state_dict()
    torch.save({"params_ema": sd}, tmp_path / "4x-anime.pth")
    old = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "body":
            old[f"model.1.sub.{parts[1]}.{parts[2].upper().replace('RDB', 'RDB')}.{parts[3]}.0.{parts[4]}"] = v
        elif parts[0] == "conv_body":
            old[f"model.1.sub.6.{parts[1]}"] = v
        else:
            old[{"conv_first": "model.0", "conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8",
                 "conv_last": "model.10"}[parts[0]] + "." + parts[1]] = v
    torch.save(old, tmp_path / "old-esrgan.pth")
    x = torch.from_numpy(np.ascontiguousarray(crop(16).transpose(2, 0, 1)))[None]
    with torch.inference_mode():
        ref = load("x4plus-anime").net(x)
        for name in ("4x-anime", "old-esrgan.pth"):
            m = load(name, tmp_path)
            assert m.scale == 4 and torch.equal(m.net(x), ref), name


class Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_pickles_that_are_not_plain_tensors_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"params": Evil()}))
    with pytest.raises(esrgan_load.UnsafeModelError, match="weights_only=True"):
        load(str(path))


def test_unknown_architectures_and_missing_models_are_named(tmp_path):
    import importlib.util

    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    # Without spandrel, the error says how to get other architectures (with it: tests/test_spandrel.py).
    hint = "pip install spandrel" if importlib.util.find_spec("spandrel") is None else "spandrel does not know"
    with pytest.raises(UnsupportedModelError, match=f"not a Real-ESRGAN.*{hint}"):
        load("other.pth", tmp_path)
    with pytest.raises(esrgan_load.ModelNotFound, match=r"\[upscale\].model = 'nope'"):
        load("nope", tmp_path)


def test_onnxruntime_backend_gives_the_torch_result(tmp_path):
    pytest.importorskip("onnxruntime")
    image = Image.fromarray((crop(40) * 255).astype(np.uint8))
    outs = {}
    for backend in ("torch", "onnxruntime"):
        stage = UpscaleStage()
        params = UpscaleParams(model="animevideov3", scale=4, device="cpu", tile=32, backend=backend)
        stage.setup(_Ctx(CACHE), params)
        assert stage.backend == backend
        outs[backend] = np.asarray(stage.upscale_image(image, params, 32).image, dtype=int)
    assert np.abs(outs["torch"] - outs["onnxruntime"]).max() <= 1  # a rounding step at most
    assert (CACHE / "onnx").is_dir()


def test_cpu_backends_run_the_model_and_are_faithful_to_torch_fp32(monkeypatch):
    from stages.esrgan import mnn_backend, ncnn_backend, openvino_backend
    from stages.esrgan.cpu import cpu_class

    calls = {"openvino": 0, "ncnn": 0, "mnn": 0}
    for backend, cls in (("openvino", openvino_backend.OpenVinoRunner), ("ncnn", ncnn_backend.NcnnRunner),
                         ("mnn", mnn_backend.MnnRunner)):
        def counted(self, x, _call=cls.__call__, _name=backend):
            calls[_name] += 1
            return _call(self, x)
        monkeypatch.setattr(cls, "__call__", counted)
    # 44×36: tiles of 32 with overlap 8 give four different tile shapes, all served by one loaded model.
    image = Image.open(DATA / "astronaut.png").crop((190, 70, 234, 106)).convert("RGB")
    outs = {}
    for backend, dtype in (("torch", "fp32"), ("openvino", "fp32"), ("openvino", "auto"), ("ncnn", "fp32"),
                           ("ncnn", "auto"), ("mnn", "auto")):
        stage = UpscaleStage()
        params = UpscaleParams(model="x4plus", scale=4, device="cpu", tile=32, tile_overlap=8, backend=backend,
                               dtype=dtype)
        stage.setup(_Ctx(CACHE), params)
        assert stage.backend == backend
        before = dict(calls)
        outs[backend, dtype] = np.asarray(stage.upscale_image(image, params, 32).image)
        if backend != "torch":  # the tiles really went through the backend named
            assert calls[backend] - before[backend] == 4
    torch_out = outs["torch", "fp32"]
    assert np.abs(outs["openvino", "fp32"].astype(int) - torch_out).max() <= 1
    assert np.abs(outs["ncnn", "fp32"].astype(int) - torch_out).max() <= 1
    # bf16 is kept only because it stays faithful: the bar is 45 dB against fp32.
    assert psnr(outs["openvino", "auto"], torch_out) >= 45
    assert psnr(outs["ncnn", "auto"], torch_out) >= 45
    assert not np.array_equal(outs["ncnn", "auto"], outs["ncnn", "fp32"])  # bf16 storage is really on
    if cpu_class() != "bf16":
        assert np.abs(outs["openvino", "auto"].astype(int) - torch_out).max() <= 1
    # MNN computes in fp32, with Winograd's own rounding: a step or two, not more
    assert psnr(outs["mnn", "auto"], torch_out) >= 60
    assert np.abs(outs["mnn", "auto"].astype(int) - torch_out).max() <= 2


def test_ncnn_runs_the_built_in_models_only_and_not_in_fp16(tmp_path):
    from stages.schema import Errors

    torch.save({"params_ema": load("x4plus-anime").net.state_dict()}, tmp_path / "4x-anime.pth")
    with pytest.raises(RuntimeError, match='backend = "ncnn" runs the built-in models only'):
        UpscaleStage().setup(_Ctx(tmp_path), UpscaleParams(model="4x-anime", device="cpu", backend="ncnn"))
    stage = UpscaleStage()  # "auto" takes the file through its ONNX export instead
    stage.setup(_Ctx(tmp_path), UpscaleParams(model="4x-anime", device="cpu"))
    from stages.esrgan.cpu import cpu_class

    assert stage.backend == ("mnn" if cpu_class() == "avx2" else "openvino")
    problems: list[str] = []
    UpscaleConfig(backend="ncnn", dtype="fp16").check(Errors("pipeline.toml", "upscale", problems))
    assert problems == ['pipeline.toml: [upscale].dtype must be "auto", "fp32" or "bf16" with backend = "ncnn" '
                        '(got "fp16")']


@pytest.mark.parametrize("refused, cpu_kind, dtype, instead", [
    # fp32 on a CPU of no class of its own: "auto" takes OpenVINO, which refuses, then torch
    (("openvino_backend", "OpenVinoRunner", "openvino"), "other", "fp32", "torch"),
    # on an AVX2 CPU: MNN, which refuses, then ncnn for a built-in model
    (("mnn_backend", "runner", "mnn"), "avx2", "auto", "ncnn"),
])
def test_when_a_backend_cannot_take_the_model_auto_goes_on_and_the_backend_by_name_fails(monkeypatch, refused,
                                                                                          cpu_kind, dtype, instead):
    from stages.esrgan import cpu

    module, name, backend = refused

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot take it")

    monkeypatch.setattr(importlib.import_module(f"stages.esrgan.{module}"), name, refuse)
    monkeypatch.setattr(cpu, "cpu_class", lambda: cpu_kind)
    stage = UpscaleStage()
    stage.setup(_Ctx(CACHE), UpscaleParams(model="animevideov3", scale=2, device="cpu", tile=32, dtype=dtype))
    assert stage.backend == instead
    out = stage.upscale_image(small("RGB"), UpscaleParams(model="animevideov3", scale=2, device="cpu"), 32).image
    assert out.size == (80, 60)
    with pytest.raises(RuntimeError, match="cannot take it"):  # asked for by name: no silent switch
        UpscaleStage().setup(_Ctx(CACHE), UpscaleParams(model="animevideov3", device="cpu", backend=backend))


def test_openvino_compiles_a_model_once_and_loads_it_from_the_models_folder_after(tmp_path):
    from stages.esrgan import onnx_backend, openvino_backend

    model = load("animevideov3")
    onnx = onnx_backend.export(model.net, model.sha256, CACHE)
    first = openvino_backend.OpenVinoRunner(onnx, 2, False, tmp_path / "openvino")
    assert first.compiled.get_property("LOADED_FROM_CACHE") is False and list((tmp_path / "openvino").iterdir())
    again = openvino_backend.OpenVinoRunner(onnx, 2, False, tmp_path / "openvino")  # as a fresh process would
    assert again.compiled.get_property("LOADED_FROM_CACHE") is True
    x = torch.from_numpy(np.ascontiguousarray(crop(24).transpose(2, 0, 1)))[None]
    assert torch.equal(first(x), again(x))


def test_the_onnx_export_says_nothing_the_user_cannot_act_on_and_keeps_its_weights_in_one_file(tmp_path):
    import warnings

    import onnx

    from stages.esrgan import onnx_backend

    model = load("animevideov3")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        path = onnx_backend.export(model.net, model.sha256, tmp_path)
    assert [str(w.message) for w in said if issubclass(w.category, DeprecationWarning)] == []
    onnx.checker.check_model(str(path))  # one self-contained file: no external weights beside it
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# ---------------------------------------------------------------------- MNN and the CPU classes


def test_mnn_converts_a_model_once_and_again_when_the_file_it_kept_cannot_be_read(tmp_path):
    from stages.esrgan import mnn_backend, onnx_backend

    model = load("animevideov3")
    onnx = onnx_backend.export(model.net, model.sha256, CACHE)
    kept = mnn_backend.convert(onnx, tmp_path)
    assert kept.parent == tmp_path / "mnn" and kept.stem.startswith(onnx.stem)
    first = kept.stat()
    x = torch.from_numpy(np.ascontiguousarray(crop(24).transpose(2, 0, 1)))[None]
    expected = mnn_backend.runner(onnx, tmp_path, 2)(x)
    assert kept.stat().st_mtime_ns == first.st_mtime_ns  # taken as it was, not converted again
    kept.write_bytes(kept.read_bytes()[:100_000])  # damaged on disk
    with pytest.raises(mnn_backend.UnreadableModel, match=kept.name):
        mnn_backend.MnnRunner(kept, 2)
    assert torch.equal(mnn_backend.runner(onnx, tmp_path, 2)(x), expected)
    assert kept.stat().st_size == first.st_size
    assert sorted(p.name for p in (tmp_path / "mnn").iterdir()) == [kept.name]  # nothing half-written beside it


def test_mnn_names_an_export_it_cannot_convert_and_leaves_nothing_behind(tmp_path):
    from stages.esrgan import mnn_backend

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="MNN could not convert .*broken.onnx"):
        mnn_backend.convert(broken, tmp_path)
    assert list((tmp_path / "mnn").iterdir()) == []


def test_auto_chooses_the_cpu_path_by_the_cpu_class(monkeypatch, tmp_path):
    from stages.esrgan import backends, cpu, mnn_backend

    torch.save({"params_ema": load("x4plus-anime").net.state_dict()}, tmp_path / "4x-anime.pth")
    cpu_device, gpu = torch.device("cpu"), torch.device("cuda")
    builtin, other = load("animevideov3"), load("4x-anime", tmp_path)

    def choose(kind, model, dtype="auto", device=cpu_device):
        monkeypatch.setattr(cpu, "cpu_class", lambda: kind)
        return backends.auto(device, model, dtype)[0]

    assert choose("bf16", builtin, device=gpu) == "torch"
    assert [choose("bf16", m) for m in (builtin, other)] == ["openvino", "openvino"]
    assert [choose("avx2", m) for m in (builtin, other)] == ["mnn", "mnn"]
    assert choose("avx2", builtin, "fp32") == "mnn"
    assert choose("avx2", builtin, "bf16") == "ncnn"  # bf16 asked for: ncnn's bf16 storage
    assert [choose("avx512", m) for m in (builtin, other)] == ["openvino", "openvino"]
    assert choose("avx512", builtin, "bf16") == "ncnn"
    assert [choose("other", m) for m in (builtin, other)] == ["ncnn", "openvino"]
    # what auto tries when its choice cannot take the model: after MNN the choice without it, then torch
    assert choose("avx2", builtin) == "mnn" and backends.auto(cpu_device, builtin, "auto") == ["mnn", "ncnn", "torch"]
    assert backends.auto(cpu_device, other, "auto") == ["mnn", "openvino", "torch"]
    assert backends.auto(gpu, builtin, "auto") == ["torch"]
    monkeypatch.setattr(mnn_backend, "available", lambda: False)
    assert [choose("avx2", m) for m in (builtin, other)] == ["ncnn", "openvino"]


def test_onnxruntime_asked_for_but_not_installed_is_said_before_the_first_image(monkeypatch):
    import importlib.util

    from stages.schema import Errors

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    problems: list[str] = []
    UpscaleConfig(backend="onnxruntime").check(Errors("pipeline.toml", "upscale", problems))
    UpscaleConfig(backend="auto").check(Errors("pipeline.toml", "upscale", problems))  # auto never needs it
    assert problems == ['pipeline.toml: [upscale].backend is "onnxruntime", which is not installed: '
                        'pip install "polishd[onnxruntime]"']


def test_mnn_runs_in_fp32_only():
    from stages.schema import Errors

    problems: list[str] = []
    for dtype in ("bf16", "fp16"):
        UpscaleConfig(backend="mnn", dtype=dtype).check(Errors("pipeline.toml", "upscale", problems))
    UpscaleConfig(backend="mnn", dtype="fp32").check(Errors("pipeline.toml", "upscale", problems))
    assert problems == [f'pipeline.toml: [upscale].dtype must be "auto" or "fp32" with backend = "mnn" (got "{d}")'
                        for d in ("bf16", "fp16")]


def test_the_cpu_class_follows_torchs_reading_of_the_cpu_and_the_caps_on_it():
    from stages.esrgan.cpu import CLASSES, cpu_class

    assert cpu_class() in CLASSES
    width = torch.backends.cpu.get_cpu_capability()

    def capped(**env) -> str:
        code = "from stages.esrgan.cpu import cpu_class; print(cpu_class())"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                              env={**os.environ, **env, "PYTHONPATH": str(REPO)}).stdout.strip()

    if width in ("AVX2", "AVX512"):  # an x86 CPU with AVX2 at least
        assert capped(ATEN_CPU_CAPABILITY="avx2") == "avx2"
    else:
        assert capped(ATEN_CPU_CAPABILITY="avx2") == cpu_class()
    if width == "AVX512":  # oneDNN kept below bf16: the CPU is of the AVX-512 class, bf16 or not
        assert capped(ONEDNN_MAX_CPU_ISA="AVX512_CORE_VNNI") == "avx512"
