"""One model layer: one resolver in one order, errors that name the setting the user set, a model that
cannot be had makes the stage a skip (never a retry, never a silent success), and check-config says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import config as config_mod
from stages.esrgan import load as esrgan_load
from stages.inpaint import InpaintStage
from stages.models import BUILTINS, ModelKind, ModelNotFound, Models, ModelSetting
from stages.outpaint import OutpaintStage
from stages.upscale import UpscaleStage
from tests.conftest import DATA, REPO, run_one, write_config

UPSCALER = ModelKind.UPSCALER


def _setting(value: str, kind=UPSCALER, where: str = "[upscale].model") -> ModelSetting:
    return ModelSetting(where, value, kind)


def test_the_resolver_looks_in_one_order(tmp_path):
    config_dir, models = tmp_path / "etc", tmp_path / "models"
    for folder in (config_dir, models / "upscale_models", tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
    (tmp_path / "elsewhere" / "abs.pth").write_bytes(b"x")
    (config_dir / "beside.pth").write_bytes(b"x")
    (models / "upscale_models" / "4x-Comfy.safetensors").write_bytes(b"x")
    (models / "x4plus.pth").write_bytes(b"x")  # a file named like a built-in wins: files come first
    r = Models(config_dir, models)
    assert r.resolve(_setting(str(tmp_path / "elsewhere" / "abs.pth"))).path == tmp_path / "elsewhere" / "abs.pth"
    assert r.resolve(_setting("beside.pth")).path == config_dir / "beside.pth"
    assert r.resolve(_setting("4x-Comfy")).path == models / "upscale_models" / "4x-Comfy.safetensors"
    assert r.resolve(_setting("x4plus")).path == models / "x4plus.pth"
    builtin = r.resolve(_setting("animevideov3"))
    assert builtin.how == "builtin" and builtin.path is None


def test_a_relative_path_is_relative_to_the_config_file_not_the_working_directory(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "mine.pth").write_bytes(b"x")
    cfg = config_mod.load(write_config(tmp_path, '[upscale]\nmodel = "weights/mine.pth"\n'))
    elsewhere = Path("/")  # systemd's working directory
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        resolved = config_mod.models_for(cfg).resolve(_setting(cfg.upscale.model))
    finally:
        os.chdir(cwd)
    assert resolved.path == tmp_path / "weights" / "mine.pth"


def test_errors_name_the_setting_and_suggest_a_built_in(tmp_path):
    r = Models(None, tmp_path)
    with pytest.raises(ModelNotFound, match=r"\[upscale\]\.model = 'animevideo3': no such file.*did you mean "
                                            r"'animevideov3'\?"):
        r.resolve(_setting("animevideo3"))
    with pytest.raises(ModelNotFound, match=r"\[outpaint\]\.model = 'someone/not-cached'.*Hugging Face cache"):
        r.resolve(_setting("someone/not-cached", ModelKind.DIFFUSION, "[outpaint].model"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelNotFound, match=r"\[inpaint\]\.model_config = .*not a diffusers folder"):
        r.resolve(_setting(str(tmp_path / "folder"), ModelKind.DIFFUSION_CONFIG, "[inpaint].model_config"))


def test_the_built_in_names_are_the_upscalers_registry():
    assert set(BUILTINS[UPSCALER]) == set(esrgan_load.BUILTINS)


def _pipeline(tmp_path, extra: str):
    cfg = config_mod.load(write_config(tmp_path, extra))
    src = cfg.paths.inbox / "astro.png"
    src.write_bytes((DATA / "astronaut.png").read_bytes())
    return cfg, src


def test_an_uncached_hub_id_for_outpaint_skips_outpaint_naming_outpaint(tmp_path):
    cfg, src = _pipeline(tmp_path, '[outpaint]\nmodel = "someone/not-cached"\nvariants = ["16:9"]\n')
    out, manifest = run_one(cfg, src, [InpaintStage(), OutpaintStage()])  # done, first time: never retried
    inpaint, outpaint = manifest.stages
    assert inpaint.status == "skipped" and "no masks to inpaint" in inpaint.reason
    assert outpaint.status == "skipped"
    assert "[outpaint].model = 'someone/not-cached'" in outpaint.reason and "[inpaint]" not in outpaint.reason


def test_a_model_file_that_does_not_load_is_a_skip_with_the_reason_not_a_retry(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint at all")
    cfg, src = _pipeline(tmp_path, '[upscale]\nmodel = "broken.pth"\n')
    out, manifest = run_one(cfg, src, [UpscaleStage()])
    (entry,) = manifest.stages
    assert entry.status == "skipped" and "broken.pth" in entry.reason


def test_a_generative_model_that_does_not_load_is_a_skip(tmp_path):
    broken = tmp_path / "broken-sd"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInpaintPipeline",
                                                         "unet": ["diffusers", "UNet2DConditionModel"]}))
    cfg, src = _pipeline(tmp_path, f'[inpaint]\nmodel = "{broken}"\n[outpaint]\nvariants = ["16:9"]\n')
    from stages.automask import AutoMaskStage

    out, manifest = run_one(cfg, src, [AutoMaskStage(), InpaintStage(), OutpaintStage()])
    inpaint, outpaint = manifest.stages[1:]
    for entry in (inpaint, outpaint):
        assert entry.status == "skipped" and "[inpaint].model" in entry.reason \
            and "could not be loaded" in entry.reason, entry


def _polishd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_check_config_reports_a_model_that_resolves_to_nothing(tmp_path):
    path = write_config(tmp_path, '[upscale]\nmodel = "animevideo3"\n[inpaint]\nmodel = "models/nothing-here"\n')
    out = _polishd("check-config", str(path))
    assert out.returncode == 3, out
    assert "pipeline.toml: [upscale].model = 'animevideo3': no such file" in out.stderr
    assert "did you mean 'animevideov3'?" in out.stderr
    assert "[inpaint].model = 'models/nothing-here'" in out.stderr
    assert out.stderr.count("[inpaint].model = 'models/nothing-here'") == 1  # outpaint uses it too: said once


def test_process_finishes_the_job_with_the_reason_when_a_model_is_missing(tmp_path):
    extra = ('[upscale]\nmodel = "animevideo3"\n[automask]\nenabled = false\n[outpaint]\nenabled = false\n'
             '[contact]\nenabled = false\n')
    cfg, src = _pipeline(tmp_path, extra)
    out = _polishd("--config", str(tmp_path / "pipeline.toml"), "process", str(src))
    assert out.returncode == 0, out.stderr
    assert "1 done" in out.stdout and "upscale: skipped" in out.stdout and "animevideov3" in out.stdout
    assert "a model setting resolves to nothing" in out.stderr  # said once, at the start


def test_process_exits_non_zero_when_a_job_did_not_finish(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"no picture")
    cfg = write_config(tmp_path, "[automask]\nenabled = false\n")
    out = _polishd("--config", str(cfg), "process", str(bad))
    assert out.returncode == 1 and "0 done" in out.stdout and "1 failed" in out.stdout


def test_the_cli_imports_no_model_library_to_start():
    code = ("import sys, daemon.cli, daemon.config, daemon.pipeline; "
            "print(sorted(m for m in ('torch', 'diffusers', 'mediapipe', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_transient_error_is_retried_in_place_by_process(tmp_path):
    """process runs the next attempt at once: a fault that heals ends in "done", exit 0."""
    from daemon.cli import main
    from tests.helpers.toy_stages import CopyStage

    class Flaky(CopyStage):
        name = "flaky"
        calls = 0

        def run(self, ctx, params):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise OSError("the GPU fell off the bus")
            return super().run(ctx, params)

    config = write_config(tmp_path)
    src = tmp_path / "a.png"
    src.write_bytes((DATA / "camera.png").read_bytes())
    assert main(["--config", str(config), "--log-format", "json", "process", "--no-progress", str(src)],
                stages=[Flaky()]) == 0
    assert Flaky.calls == 2
