"""The image's own checkpoint: found by hash (renamed files too), then by name; hashes kept and renewed."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
from PIL import Image, PngImagePlugin

from stages import checkpoints
from tests.conftest import DATA


def fake_checkpoint(path, seed: int, size: int = 1_200_000):
    """A file of checkpoint size for hashing: past 1 MiB + 64 KiB, where A1111's legacy hash reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def test_a_renamed_checkpoint_is_found_by_its_autov2_legacy_or_full_hash(tmp_path):
    models = tmp_path / "models"
    real = fake_checkpoint(models / "Stable-diffusion" / "SDXL" / "my-renamed-pony.safetensors", 1)
    fake_checkpoint(models / "checkpoints" / "other.safetensors", 2)
    fake_checkpoint(models / "loras" / "not-a-checkpoint.safetensors", 3)  # another kind's folder: not looked in
    sha = hashlib.sha256(real.read_bytes()).hexdigest()
    hashes = checkpoints.Hashes(tmp_path / "state")
    for h in (sha[:10], checkpoints.legacy_hash(real), sha):
        found = checkpoints.find("ponyDiffusionV6XL_v6StartWithThisOne", h, models, hashes)
        assert (found.path, found.how) == (real, "hash"), h
    assert len(checkpoints.candidates(models)) == 2


def test_by_name_with_or_without_extension_hash_suffix_or_folder(tmp_path):
    models = tmp_path / "models"
    dream = fake_checkpoint(models / "checkpoints" / "SD15" / "dreamshaper_8.safetensors", 1, 1000)
    hashes = checkpoints.Hashes(tmp_path / "state")
    for named in ("dreamshaper_8", "dreamshaper_8.safetensors", "dreamshaper_8 [879db523c3]",
                  "SD15/dreamshaper_8.safetensors", "SD15\\DreamShaper_8.safetensors"):
        found = checkpoints.find(named, None, models, hashes)
        assert (found.path, found.how) == (dream, "name"), named
    missing = checkpoints.find("juggernautXL_v9", "0123456789", models, hashes)
    assert missing.path is None and "'juggernautXL_v9' [0123456789] is not among the 1 checkpoints" in missing.why


def test_hashes_are_kept_between_runs_and_renewed_when_a_file_changes(tmp_path):
    models = tmp_path / "models"
    f = fake_checkpoint(models / "checkpoints" / "a.safetensors", 1)
    first = checkpoints.Hashes(tmp_path / "state")
    sha = first.sha256(f)
    assert first.hashed == 1 and (tmp_path / "state" / checkpoints.FILE).is_file()
    again = checkpoints.Hashes(tmp_path / "state")  # a new run: read from [paths].state, not hashed
    assert again.sha256(f) == sha and again.hashed == 0
    f.write_bytes(f.read_bytes()[:-1] + b"x")  # a new version of the file under the same name
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert again.sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest() != sha and again.hashed == 1
    (tmp_path / "state" / checkpoints.FILE).write_text('{"not": "what it wrote"')  # a cut file, or anyone's
    broken = checkpoints.Hashes(tmp_path / "state")
    assert broken.sha256(f) == again.sha256(f) and broken.hashed == 1  # hashed again, never a failed image
    seen = []
    checkpoints.Hashes(tmp_path / "other").sha256(f, lambda done, total: seen.append((done, total)))
    assert seen[-1] == (f.stat().st_size, f.stat().st_size)  # progress, up to the whole file


def _run(root, extra: str, src, models, stage: str = "inpaint"):
    """One image through automask and inpaint (or outpaint alone) with ``models`` as [paths].models."""
    from daemon import config as config_mod
    from stages.automask import AutoMaskStage
    from stages.inpaint import InpaintStage
    from stages.outpaint import OutpaintStage
    from tests.conftest import run_one, write_config

    root.mkdir(parents=True)
    path = write_config(root, extra + "\n[upscale]\nenabled = false\n[inpaint.gate]\nenabled = false\n", models=models)
    cfg = config_mod.load(path)
    shutil.copyfile(src, cfg.paths.inbox / src.name)
    stages = [AutoMaskStage(), InpaintStage()] if stage == "inpaint" else [OutpaintStage()]
    return run_one(cfg, cfg.paths.inbox / src.name, stages)[1].stage(stage)


def test_an_image_is_repainted_with_its_own_checkpoint_found_by_hash(tmp_path, tiny_sd_file):
    single, configs = tiny_sd_file
    models = tmp_path / "models"
    own = models / "Stable-diffusion" / "renamed-on-disk.safetensors"
    own.parent.mkdir(parents=True)
    shutil.copyfile(single, own)
    autov2 = hashlib.sha256(own.read_bytes()).hexdigest()[:10]
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"an astronaut portrait\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 1, "
                                f"Model hash: {autov2}, Model: tinyModel_v1")
    src = tmp_path / "astro.png"
    Image.open(DATA / "astronaut.png").save(src, pnginfo=info)
    # No [inpaint].model at all: the image's own checkpoint paints (the configs of its family beside it)
    entry = _run(tmp_path / "run", f'[inpaint]\nmodel_config = "{configs}"\nresolution = 64\n', src, models)
    assert entry.status == "done", entry.reason
    assert entry.details.checkpoint == "the image's own checkpoint renamed-on-disk.safetensors, found by hash"
    assert entry.models[0].path == str(own) and "checkpoint" in entry.details.from_image
    # Outpaint follows the same record: its variant painted by the same checkpoint, not the infill alone
    wide = _run(tmp_path / "wide", f'[inpaint]\nmodel_config = "{configs}"\nresolution = 64\n'
                                   '[outpaint]\nvariants = ["16:9"]\nmax_step = 1.0\nsteps = 2\n', src, models,
                "outpaint")
    assert wide.details.generative and wide.details.checkpoint == entry.details.checkpoint
    # Told not to: no model configured, so the faces are left with the reason
    off = _run(tmp_path / "off", f'[inpaint]\nmodel_from_image = false\nmodel_config = "{configs}"\n', src, models)
    assert off.status == "skipped" and "no inpainting model configured" in off.reason


def _header_only(path, keys: dict):
    """A .safetensors file with just these (tiny) tensors: what a family's header holds, no weights."""
    from safetensors.numpy import save_file

    save_file({k: np.zeros(v, np.float32) for k, v in keys.items()}, str(path))
    return path


def test_the_header_says_family_inpainting_and_v_prediction(tmp_path):
    vpred = _header_only(tmp_path / "noobai-vpred.safetensors", {
        "conditioner.embedders.1.model.ln_final.weight": (4,), checkpoints.UNET_IN: (8, 4, 3, 3), "v_pred": (0,),
        "ztsnr": (0,), "model.diffusion_model.out.0.bias": (4,)})
    assert checkpoints.describe(vpred) == checkpoints.Checkpoint(
        "sdxl", 4, True, True, missing=("VAE", "first text encoder"))
    assert checkpoints.describe(vpred).describe() == \
        "an SDXL checkpoint (not inpainting, v-prediction, zero terminal SNR)"
    flux = _header_only(tmp_path / "flux1-dev.safetensors", {"double_blocks.0.img_attn.norm.key_norm.scale": (4,)})
    assert checkpoints.describe(flux).family == "flux"


def test_check_config_says_what_each_checkpoint_is_and_whether_it_will_load(tmp_path, tiny_sd_file):
    import subprocess
    import sys

    from tests.conftest import REPO, write_config

    single, configs = tiny_sd_file
    vpred = _header_only(tmp_path / "noobai-vpred.safetensors", {
        "conditioner.embedders.1.model.ln_final.weight": (4,), checkpoints.UNET_IN: (8, 4, 3, 3), "v_pred": (0,)})
    flux = _header_only(tmp_path / "flux1-dev.safetensors", {"double_blocks.0.img_attn.norm.key_norm.scale": (4,)})

    def check(extra: str):
        root = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        root.mkdir()
        path = write_config(root, extra)
        return subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    out = check(f'[inpaint]\nmodel = "{vpred}"\n')  # a header of an SDXL file's UNet, nothing else
    assert out.returncode == 3 and "[inpaint].model = noobai-vpred.safetensors: an SDXL checkpoint (not " \
        "inpainting, v-prediction): the file holds no VAE and no first text encoder: it is not a whole " \
        "checkpoint" in out.stderr
    whole = _header_only(tmp_path / "noobai-whole.safetensors", {
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (4,),
        "conditioner.embedders.1.model.ln_final.weight": (4,), "first_stage_model.decoder.conv_in.bias": (4,),
        checkpoints.UNET_IN: (8, 4, 3, 3), "v_pred": (0,)})
    out = check(f'[inpaint]\nmodel = "{whole}"\n')
    assert out.returncode == 0 and "noobai-whole.safetensors: an SDXL checkpoint (not inpainting, v-prediction): " \
        "loads with the SDXL configs polishd ships as v-prediction" in out.stdout, out.stderr
    out = check(f'[inpaint]\nmodel = "{flux}"\n')
    assert out.returncode == 3 and "a full Flux single file is not an inpainting model" in out.stderr
    out = check(f'[inpaint]\nmodel = "{single}"\nmodel_config = "{configs}"\n')
    assert out.returncode == 0, out.stderr
    assert f"an SD 1.x checkpoint (inpainting): loads with the configs of {configs}" in out.stdout


def test_a_v_prediction_file_is_sampled_as_v_prediction_with_zero_terminal_snr(tmp_path, tiny_sd_file):
    import torch
    from safetensors.torch import load_file, save_file

    from stages.generative import acquire
    from stages.models import ModelKind, Models, ModelSetting

    single, configs = tiny_sd_file
    weights = load_file(str(single))
    weights["v_pred"] = torch.zeros(0)
    vpred = tmp_path / "tiny-vpred.safetensors"
    save_file(weights, str(vpred))
    engine = acquire(Models(None, tmp_path), ModelSetting("[inpaint].model", str(vpred), ModelKind.DIFFUSION),
                     ModelSetting("[inpaint].model_config", str(configs), ModelKind.DIFFUSION_CONFIG), "cpu")
    config = engine.pipe.scheduler.config
    assert (config.prediction_type, config.rescale_betas_zero_snr, config.timestep_spacing) == (
        "v_prediction", True, "trailing")
