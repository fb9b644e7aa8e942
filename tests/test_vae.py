"""The image's own VAE: found by name where A1111 and ComfyUI keep it, read safely, decoding that repaint only."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from stages import vae as vae_files
from tests.conftest import DATA, run_one, write_config
from tests.helpers.hostile import write_hostile


def _other_vae(tiny_sd, seed: int):
    """A VAE of the tiny model's shape with weights of its own (a "fine-tuned VAE")."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL.from_config(AutoencoderKL.load_config(tiny_sd / "vae"))


def _a1111_file(vae, path):
    """As A1111 users have them: the original layout, without the checkpoint's ``first_stage_model.`` prefix."""
    from bench.kit.ldm_checkpoint import vae_to_ldm

    path.parent.mkdir(parents=True, exist_ok=True)
    state = vae_to_ldm({k: v.contiguous() for k, v in vae.state_dict().items()}, dict(vae.config))
    save_file({k.removeprefix("first_stage_model."): v for k, v in state.items()}, str(path))
    return path


def _image(path, vae_name: str | None):
    info = PngImagePlugin.PngInfo()
    settings = "Steps: 2, Sampler: Euler, CFG scale: 5, Seed: 1" + (f", VAE: {vae_name}" if vae_name else "")
    info.add_text("parameters", f"an astronaut portrait\nNegative prompt: ugly\n{settings}")
    Image.open(DATA / "astronaut.png").save(path, pnginfo=info)
    return path


def _job(root, model, src, models, extra: str = ""):
    from daemon import config as config_mod
    from stages.automask import AutoMaskStage
    from stages.inpaint import InpaintStage

    root.mkdir(parents=True)
    path = write_config(root, f'[inpaint]\nmodel = "{model}"\nresolution = 64\nseed = 1\n{extra}\n'
                              "[upscale]\nenabled = false\n[inpaint.gate]\nenabled = false\n", models=models)
    cfg = config_mod.load(path)
    shutil.copyfile(src, cfg.paths.inbox / src.name)
    out, manifest = run_one(cfg, cfg.paths.inbox / src.name, [AutoMaskStage(), InpaintStage()])
    return np.asarray(Image.open(out.archive / "20-inpaint.png")).astype(int), manifest.stages[1]


def test_the_images_vae_decodes_its_repaint_exactly_as_that_vae_in_the_pipeline_would(tmp_path, tiny_sd):
    models = tmp_path / "models"
    vae = _other_vae(tiny_sd, 5)
    _a1111_file(vae, models / "VAE" / "kl-f8-anime2.safetensors")
    assert vae_files.find("kl-f8-anime2.safetensors", models) == models / "VAE" / "kl-f8-anime2.safetensors"
    assert vae_files.find("KL-F8-ANIME2", models) is not None and vae_files.find("other.pt", models) is None
    src = _image(tmp_path / "astro.png", "kl-f8-anime2.safetensors")
    own, entry = _job(tmp_path / "own", tiny_sd, src, models)
    region = entry.details.regions[0]
    assert entry.status == "done" and region.vae == "kl-f8-anime2.safetensors" and "vae" in region.inherited
    # The same model with that VAE put in its folder, told to inherit nothing of it: the same pixels.
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny_sd, swapped)
    shutil.rmtree(swapped / "vae")
    vae.save_pretrained(swapped / "vae")
    by_hand, _ = _job(tmp_path / "by-hand", swapped, src, models, '[inpaint.face]\ninherit = ["steps", "cfg", '
                                                                   '"sampler", "clip_skip"]\n')
    assert np.array_equal(own, by_hand), (np.abs(own - by_hand).max(), (own != by_hand).mean())
    plain, entry = _job(tmp_path / "plain", tiny_sd, src, models, '[inpaint.face]\ninherit = ["steps", "cfg", '
                                                                  '"sampler", "clip_skip"]\n')
    assert entry.details.regions[0].vae is None and not np.array_equal(own, plain)
    # The next image, which names no VAE, decodes with the checkpoint's own again (same seed, same pixels).
    after, _ = _job(tmp_path / "after", tiny_sd, _image(tmp_path / "plain.png", None), models)
    assert np.array_equal(after, plain)


def test_a_vae_that_is_not_there_or_not_this_models_is_painted_without_and_said(tmp_path, tiny_sd):
    models = tmp_path / "models"
    _, entry = _job(tmp_path / "gone", tiny_sd, _image(tmp_path / "a.png", "vae-ft-mse-840000.safetensors"), models)
    region = entry.details.regions[0]
    assert entry.status == "done" and "vae" not in region.inherited
    assert region.missing == [f"VAE vae-ft-mse-840000.safetensors: not in {models / 'VAE'} or {models / 'vae'}"]
    wrong = models / "vae" / "sdxl_vae.safetensors"  # ComfyUI's folder; another family's shapes
    wrong.parent.mkdir(parents=True)
    save_file({"encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
               "decoder.conv_out.weight": torch.zeros(3, 128, 3, 3)}, str(wrong))
    _, entry = _job(tmp_path / "wrong", tiny_sd, _image(tmp_path / "b.png", "sdxl_vae.safetensors"), models)
    (said,) = entry.details.regions[0].missing
    assert entry.status == "done" and said.startswith("VAE sdxl_vae.safetensors: sdxl_vae.safetensors is not a VAE")


def test_a_vae_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, tiny_sd):
    from stages.generative import acquire
    from stages.models import ModelKind, Models, ModelSetting

    path = tmp_path / "VAE" / "evil.pt"
    ran = write_hostile(path, lambda code: {"state_dict": {"encoder.conv_in.weight": code}})
    eng = acquire(Models(None, tmp_path), ModelSetting("[inpaint].model", str(tiny_sd), ModelKind.DIFFUSION),
                  None, "cpu")
    with pytest.raises(ValueError, match="evil.pt could not be read safely"):
        eng.vae(path)
    assert not ran.exists()
    # A .pt of tensors only, as A1111's VAEs often are, is read.
    from safetensors.torch import load_file

    vae = _other_vae(tiny_sd, 6)
    ckpt = tmp_path / "VAE" / "fine.ckpt"
    torch.save({"state_dict": load_file(str(_a1111_file(vae, tmp_path / "as-file.safetensors")))}, str(ckpt))
    loaded = eng.vae(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vae.state_dict().values(), strict=True))
