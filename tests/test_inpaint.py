"""Inpainting: a tiny randomly initialised SD inpainting pipeline, saved and loaded through the real code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from daemon import config as config_mod
from stages import checkpoints, prompts
from stages.automask import AutoMaskStage
from stages.diffusion import engine as engine_mod
from stages.diffusion.repaint import colour_match, crop_box, paste, working_size
from stages.diffusion.tokenizer import clip_tokenizer
from stages.inpaint import InpaintStage
from stages.models import ModelKind, Models, ModelSetting
from tests.conftest import DATA, run_one, write_config


def test_clip_tokenizer_built_offline_matches_clip():
    assert clip_tokenizer()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


# ---------------------------------------------------------------------- geometry


def test_crop_box_is_square_padded_and_shifted_inside_the_image():
    assert crop_box((100, 100, 150, 200), 10, (512, 512)) == (65, 90, 185, 210)
    x0, y0, x1, y1 = crop_box((0, 0, 40, 20), 16, (512, 512))
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 72  # pushed in from the corner, not cut
    x0, y0, x1, y1 = crop_box((10, 10, 500, 60), 0, (512, 100))
    assert (x0, x1) == (10, 500) and (y0, y1) == (0, 100)  # too wide to square: the image height bounds it


def test_working_size_is_the_model_size_in_multiples_of_8():
    assert working_size((120, 120), 512) == (512, 512)
    assert working_size((300, 100), 512) == (512, 168)
    w, h = working_size((77, 51), 1024)
    assert w == 1024 and h % 8 == 0


def test_paste_keeps_pixels_outside_the_mask_bit_identical():
    rng = np.random.default_rng(1)
    original = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    patch = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 128
    mask[15:25, 15:25] = 255
    out = paste(original, patch, mask)
    assert np.array_equal(out[mask == 0], original[mask == 0])
    assert np.array_equal(out[mask == 255], patch[mask == 255])


def test_colour_match_moves_a_tinted_patch_to_its_surroundings():
    reference = np.full((32, 32, 3), (120, 100, 90), np.uint8)
    patch = np.full((32, 32, 3), (160, 100, 130), np.uint8)
    ring = np.zeros((32, 32), bool)
    ring[:4] = True
    matched = colour_match(patch, reference, ring)
    assert np.abs(matched.astype(int) - reference.astype(int)).max() <= 3


# ---------------------------------------------------------------------- prompts from metadata


def _png_with(tmp_path, key: str, value: str) -> Image.Image:
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    path = tmp_path / f"{key}.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return Image.open(path)


def test_a1111_parameters_are_read(tmp_path):
    im = _png_with(tmp_path, "parameters", "portrait of a knight, detailed\nNegative prompt: blurry, cartoon\n"
                                           "Steps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1")
    found = prompts.from_image(im)
    assert (found.positive, found.negative, found.source) == ("portrait of a knight, detailed", "blurry, cartoon",
                                                              "a1111")


def test_comfyui_prompt_graph_is_followed_to_the_sampler(tmp_path):
    graph = {"3": {"class_type": "KSampler", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "seed": 5}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in snow", "clip": ["4", 1]}},
             "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres", "clip": ["4", 1]}},
             "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "unused", "clip": ["4", 1]}}}
    found = prompts.from_image(_png_with(tmp_path, "prompt", json.dumps(graph)))
    assert (found.positive, found.negative, found.source) == ("a red fox in snow", "lowres", "comfyui")


def test_oversized_or_broken_metadata_is_ignored(tmp_path):
    assert prompts.from_image(_png_with(tmp_path, "parameters", "x" * 70_000)) is None
    assert prompts.from_image(_png_with(tmp_path, "prompt", "{not json")) is None


# ---------------------------------------------------------------------- the stage, end to end


def _job(tmp_path, extra: str, image_path: Path, sidecar: str | None = None, remove: Image.Image | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    # The quality gate is tested on its own below: a random tiny model's faces never pass it.
    gate = "" if "[inpaint.gate]" in extra else "\n[inpaint.gate]\nenabled = false\n"
    cfg = config_mod.load(write_config(tmp_path, extra + "\n[upscale]\nenabled = false\n" + gate))
    src = cfg.paths.inbox / image_path.name
    src.write_bytes(image_path.read_bytes())
    if sidecar:
        (cfg.paths.inbox / (src.stem + ".toml")).write_text(sidecar)
    if remove is not None:
        remove.save(cfg.paths.inbox / (src.stem + ".remove.png"))
    out, manifest = run_one(cfg, src, [AutoMaskStage(), InpaintStage()])
    return out.archive, manifest.stages[1]


def test_without_a_model_the_stage_is_skipped_with_the_reason(tmp_path):
    archive, entry = _job(tmp_path, "", DATA / "astronaut.png")
    assert entry.status == "skipped"
    assert "no inpainting model configured" in entry.reason
    assert not list(archive.glob("20-*"))
    _, entry = _job(tmp_path / "b", '[inpaint]\nmodel = "/nowhere/model.safetensors"\n', DATA / "astronaut.png")
    assert entry.status == "skipped" and "model not found" in entry.reason


def test_inpaints_the_face_only_inside_its_mask_and_reproducibly(tmp_path, tiny_sd):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "an astronaut portrait\nNegative prompt: ugly\nSteps: 20, Seed: 3")
    source = tmp_path / "astro.png"
    Image.open(DATA / "astronaut.png").save(source, pnginfo=info)
    extra = f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 2\nresolution = 64\n'
    archive, entry = _job(tmp_path / "one", extra, source)
    assert entry.status == "done", entry
    assert entry.outputs == ["20-face-0-before.png", "20-face-0-after.png", "20-inpaint.png"]
    region = entry.details.regions[0]
    assert region.prompt == "a detailed natural face, an astronaut portrait"
    assert region.prompt_source == "a1111" and region.negative_prompt.endswith("ugly")
    # what of the image's own record it used: its texts, and its "Steps: 20" over [inpaint].steps = 2
    assert entry.details.from_image == ["positive", "negative", "steps"]
    assert (region.steps, region.inherited) == (20, ["steps"])
    assert region.prompt_tokens == 8 and region.prompt_cut is None  # 7 words and a comma; SD 1.x: chunked, never cut
    assert entry.details.pipeline == "StableDiffusionInpaintPipeline"
    assert entry.details.scheduler == "PNDMScheduler"
    assert entry.models[0].name == "tiny-sd-inpaint" and entry.device == "cpu"
    original = np.asarray(Image.open(archive / "00-original.png").convert("RGB"))
    result = np.asarray(Image.open(archive / "20-inpaint.png").convert("RGB"))
    mask = np.asarray(Image.open(archive / "10-mask-face.png"))
    assert np.array_equal(result[mask == 0], original[mask == 0])  # untouched outside the mask
    assert np.abs(result[mask == 255].astype(int) - original[mask == 255]).mean() > 2  # repainted inside
    # The same seed gives the same pixels.
    archive2, _ = _job(tmp_path / "two", extra, source)
    assert (archive2 / "20-inpaint.png").read_bytes() == (archive / "20-inpaint.png").read_bytes()


@pytest.mark.parametrize("which, pipeline, scheduler", [
    ("tiny_sdxl", "StableDiffusionXLInpaintPipeline", "EulerDiscreteScheduler"),
    ("tiny_flux_fill", "FluxFillPipeline", "FlowMatchEulerDiscreteScheduler")])
def test_sdxl_and_flux_fill_folders_run_through_the_same_stage(tmp_path, request, which, pipeline, scheduler):
    model = request.getfixturevalue(which)
    archive, entry = _job(tmp_path, f'[inpaint]\nmodel = "{model}"\nsteps = 2\nresolution = 64\n',
                          DATA / "astronaut.png")
    assert entry.status == "done", entry
    assert entry.details.pipeline == pipeline and entry.details.scheduler == scheduler
    original = np.asarray(Image.open(archive / "00-original.png").convert("RGB"))
    result = np.asarray(Image.open(archive / "20-inpaint.png").convert("RGB"))
    mask = np.asarray(Image.open(archive / "10-mask-face.png"))
    assert np.array_equal(result[mask == 0], original[mask == 0])
    assert np.abs(result[mask == 255].astype(int) - original[mask == 255]).mean() > 2


def test_a_sidecar_prompt_comes_first_and_is_validated(tmp_path, tiny_sd):
    extra = f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 2\nresolution = 64\n'
    sidecar = '[inpaint.face]\nprompt = "a calm smiling face"\nstrength = 0.3\n'
    _, entry = _job(tmp_path, extra, DATA / "astronaut.png", sidecar=sidecar)
    region = entry.details.regions[0]
    assert region.prompt == "a calm smiling face" and region.prompt_source == "sidecar"
    assert region.strength == 0.3


def test_an_invalid_sidecar_fails_the_image_with_a_report(tmp_path):
    cfg = config_mod.load(write_config(tmp_path))
    src = cfg.paths.inbox / "x.png"
    src.write_bytes((DATA / "camera.png").read_bytes())
    (cfg.paths.inbox / "x.toml").write_text("[inpaint]\nstrength = 3\n")
    out, _ = run_one(cfg, src, [InpaintStage()], expect="failed")
    assert "x.toml: [inpaint].strength must be between 0.0 and 1.0 (got 3.0)" in out.error
    assert (cfg.paths.failed / "x.png").exists() and (cfg.paths.failed / "x.toml").exists()
    report = json.loads((cfg.paths.failed / "x.png.error.json").read_text())
    assert report["stage"] == "intake"


def _resolve(value: str, key: str = "model", models: Path | None = None):
    kind = ModelKind.DIFFUSION if key == "model" else ModelKind.DIFFUSION_CONFIG
    return Models(None, models or Path("/nonexistent")).resolve(ModelSetting(f"[inpaint].{key}", value, kind))


def test_engine_refuses_to_guess_what_a_path_is(tmp_path):
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(engine_mod.ModelNotFound, match="neither a diffusers folder"):
        _resolve(str(tmp_path / "notamodel"))
    with pytest.raises(engine_mod.ModelNotFound, match="not in the Hugging Face cache; polishd never downloads"):
        _resolve("someone/some-model")


@pytest.mark.parametrize("which, family", [("tiny_sd", "sd1"), ("tiny_sd2", "sd2"), ("tiny_sdxl", "sdxl")])
def test_a_single_file_checkpoint_paints_exactly_like_its_diffusers_folder(tmp_path, request, which, family):
    from bench.kit.tiny_sd import write_single_file

    folder = request.getfixturevalue(which)
    checkpoint, configs = write_single_file(folder, tmp_path / f"{which}.safetensors", open_clip=family == "sd2")
    assert engine_mod.inspect_checkpoint(checkpoint) == engine_mod.Checkpoint(family, 9)
    base = '[inpaint]\nsteps = 2\nresolution = 64\n'
    folder_archive, first = _job(tmp_path / "folder", base + f'model = "{folder}"\n', DATA / "astronaut.png")
    archive, entry = _job(tmp_path / "file", base + f'model = "{checkpoint}"\nmodel_config = "{configs}"\n',
                          DATA / "astronaut.png")
    assert entry.status == "done", entry
    assert entry.details.pipeline == first.details.pipeline
    model = entry.models[0]
    assert model.name == f"{which}.safetensors"
    assert model.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # Same weights, same configs, same seed: the same pixels, whichever way the model was stored.  (SDXL's
    # pooled text embedding goes through a projection stored transposed in the file: its float rounding may
    # differ in the last bit (2e-7), and a few pixels move by a level or three.  A wrong weight moves them all.)
    a = np.asarray(Image.open(archive / "20-inpaint.png")).astype(int)
    b = np.asarray(Image.open(folder_archive / "20-inpaint.png")).astype(int)
    if family in ("sd1", "sd2"):
        assert np.array_equal(a, b)
    else:
        assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.01, (np.abs(a - b).max(), np.abs(a - b).mean())


def test_an_ordinary_sd1_checkpoint_loads_with_its_four_channel_unet(tmp_path, tiny_sd_file):
    from bench.kit.tiny_sd import build_tiny_sd, write_single_file

    _, configs = tiny_sd_file  # an inpainting model's configs: 9 input channels
    checkpoint, _ = write_single_file(build_tiny_sd(tmp_path / "plain", in_channels=4), tmp_path / "plain.safetensors")
    assert engine_mod.inspect_checkpoint(checkpoint) == engine_mod.Checkpoint("sd1", 4)
    try:
        eng = engine_mod.get(_resolve(str(checkpoint)), _resolve(str(configs), "model_config"),
                             torch.device("cpu"), torch.float32, tmp_path / "cache")
        assert eng.kind == "StableDiffusionInpaintPipeline" and eng.pipe.unet.config.in_channels == 4
        image = Image.open(DATA / "astronaut.png").convert("RGB").resize((64, 64))
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        out = eng.inpaint(image, mask, "a face", "", steps=2, guidance=7.0, strength=0.5, seed=1)
        assert out.size == (64, 64)
    finally:
        engine_mod.unload()
    # The configs folder made for it holds configs and a tokenizer, never weights.
    (made,) = (tmp_path / "cache" / "diffusers-configs").iterdir()
    assert json.loads((made / "unet" / "config.json").read_text())["in_channels"] == 4
    assert json.loads((configs / "unet" / "config.json").read_text())["in_channels"] == 9  # the user's: untouched
    assert not [f for f in made.rglob("*") if f.suffix in (".safetensors", ".bin")]


def test_the_shipped_sd15_configs_describe_sd15_inpainting(tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    folder = engine_mod.single_file_config(tmp_path)
    with torch.device("meta"):  # the real SD 1.5 shapes, without allocating them
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    assert unet.conv_in.weight.shape == (320, 9, 3, 3) and unet.config.cross_attention_dim == 768
    assert vae.config.latent_channels == 4
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    plain = engine_mod.single_file_config(tmp_path, in_channels=4)
    assert plain != folder and json.loads((plain / "unet" / "config.json").read_text())["in_channels"] == 4


def test_the_shipped_sdxl_configs_describe_sdxl_base_and_inpainting(tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = engine_mod.single_file_config(tmp_path, engine_mod.CONFIGS / "sdxl-inpaint", in_channels=4)
    with torch.device("meta"):  # SDXL's real shapes, without allocating them
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    # The parameter counts of SDXL 1.0's UNet, VAE, CLIP ViT-L and OpenCLIP ViT-bigG text encoders: a config
    # one block, width or head off would give other numbers, and the weights of a real file would not fit.
    count = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text, text_2)]
    assert count == [2_567_463_684, 83_653_863, 123_060_480, 694_659_840]
    assert vae.config.scaling_factor == 0.13025 and vae.config.force_upcast
    tok, tok_2 = (CLIPTokenizer.from_pretrained(folder / name) for name in ("tokenizer", "tokenizer_2"))
    assert tok("a cat").input_ids == tok_2("a cat").input_ids == [49406, 320, 2368, 49407]
    assert tok.pad_token == "<|endoftext|>" and tok_2.pad_token == "!"  # OpenCLIP pads with "!"
    inpainting = engine_mod.single_file_config(tmp_path, engine_mod.CONFIGS / "sdxl-inpaint", in_channels=9)
    assert json.loads((inpainting / "unet" / "config.json").read_text())["in_channels"] == 9


def test_an_sdxl_single_file_loads_with_nothing_more(tmp_path, tiny_sdxl, monkeypatch):
    from bench.kit.tiny_sd import write_single_file

    checkpoint, configs = write_single_file(tiny_sdxl, tmp_path / "someone-pony.safetensors")
    # The shipped configs are full-size SDXL; stand in the tiny model's, and the rest is the real path: the family
    # from the header, the configs polishd picks for it, the UNet's channels set.  (The tiny model's tokenizers
    # come along: its second pads with "<|endoftext|>", where SDXL's, as polishd builds it, pads with "!".)
    import shutil

    shipped = tmp_path / "shipped"
    shutil.copytree(configs, shipped / "sdxl-inpaint")
    monkeypatch.setattr(engine_mod, "CONFIGS", shipped)
    base = '[inpaint]\nsteps = 2\nresolution = 64\n'
    folder_archive, first = _job(tmp_path / "folder", base + f'model = "{tiny_sdxl}"\n', DATA / "astronaut.png")
    archive, entry = _job(tmp_path / "file", base + f'model = "{checkpoint}"\n', DATA / "astronaut.png")
    assert entry.status == "done", entry
    assert entry.details.pipeline == first.details.pipeline == "StableDiffusionXLInpaintPipeline"
    a = np.asarray(Image.open(archive / "20-inpaint.png")).astype(int)
    b = np.asarray(Image.open(folder_archive / "20-inpaint.png")).astype(int)
    assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.01, (np.abs(a - b).max(), np.abs(a - b).mean())


def test_a_single_file_polishd_has_no_configs_for_is_refused_until_configs_are_given(tmp_path):
    from safetensors.torch import save_file

    def header(name: str, keys: list[str]) -> Path:
        save_file({k: torch.zeros(8, 9, 3, 3) if k == checkpoints.UNET_IN else torch.zeros(4) for k in keys},
                  str(tmp_path / name))
        return tmp_path / name
    sd2 = header("some-sd2-inpaint.safetensors", ["cond_stage_model.model.ln_final.weight", checkpoints.UNET_IN,
                                                   "first_stage_model.decoder.conv_in.bias"])
    assert engine_mod.inspect_checkpoint(sd2) == engine_mod.Checkpoint("sd2", 9)
    with pytest.raises(engine_mod.ModelNotFound, match="is an SD 2.x checkpoint.*set \\[inpaint\\].model_config"):
        engine_mod.config_folder(_resolve(str(sd2)).path, None)
    # An SDXL file that holds only its UNet (as some are shared) is named as such, not loaded half.
    unet_only = header("unet-only-sdxl.safetensors", ["conditioner.embedders.1.model.ln_final.weight",
                                                      checkpoints.UNET_IN])
    assert engine_mod.inspect_checkpoint(unet_only).missing == ("VAE", "first text encoder")
    with pytest.raises(engine_mod.ModelNotFound, match="holds no VAE and no first text encoder: not a whole"):
        engine_mod.config_folder(_resolve(str(unet_only)).path, None)
    flux = header("flux1-dev.safetensors", ["double_blocks.0.img_attn.norm.key_norm.scale"])
    with pytest.raises(engine_mod.ModelNotFound, match="a full Flux checkpoint.*Flux Fill from its diffusers folder"):
        engine_mod.config_folder(_resolve(str(flux)).path, None)
    with pytest.raises(engine_mod.ModelNotFound, match="not a diffusers folder"):
        _resolve(str(tmp_path), "model_config")
    broken = tmp_path / "truncated.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(engine_mod.ModelNotFound, match="not a readable .safetensors file"):
        engine_mod.config_folder(_resolve(str(broken)).path, None)
    # Through the stage: skipped with the reason, the image still finished.
    _, entry = _job(tmp_path / "job", f'[inpaint]\nmodel = "{sd2}"\n', DATA / "astronaut.png")
    assert entry.status == "skipped" and "SD 2.x checkpoint" in entry.reason


# camera.png's tower on the skyline: sky around it is ~208-214 grey, the tower 225-233 with a dark edge.
TOWER = (408, 112, 436, 190)


def _tower_mask() -> Image.Image:
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, TOWER)
    return mask


@pytest.mark.parametrize("fill", ["patchmatch", "telea"])
def test_a_removal_mask_takes_the_object_away_without_a_model(tmp_path, fill):
    extra = f'[inpaint.remove]\nfill = "{fill}"\n'
    archive, entry = _job(tmp_path, extra, DATA / "camera.png", remove=_tower_mask())
    assert entry.status == "done", entry
    assert entry.models == []  # no model configured: the face was left alone, the tower still went
    kinds = {r.kind: r for r in entry.details.regions}
    assert kinds["remove"].fill == fill and kinds["remove"].refined is False
    assert "no inpainting model configured" in kinds["face"].skipped
    assert "20-remove-0-before.png" in entry.outputs and "20-face-0-before.png" not in entry.outputs
    original = np.asarray(Image.open(DATA / "camera.png").convert("L")).astype(int)
    result = np.asarray(Image.open(archive / "20-inpaint.png").convert("L")).astype(int)
    inside = np.zeros_like(original, bool)
    inside[TOWER[1]:TOWER[3], TOWER[0]:TOWER[2]] = True
    assert np.array_equal(result[~inside], original[~inside])
    # The sky on either side, row by row, is what should be there now (above the tree line, where the
    # smooth OpenCV fills are at their best; PatchMatch also carries the trees across below it).
    x0, y0, x1, y1 = TOWER[0], TOWER[1], TOWER[2], 165
    sky = (original[y0:y1, x0 - 8:x0 - 2].mean(axis=1) + original[y0:y1, x1 + 2:x1 + 8].mean(axis=1)) / 2
    before = np.abs(original[y0:y1, x0:x1] - sky[:, None]).mean()
    after = np.abs(result[y0:y1, x0:x1] - sky[:, None]).mean()
    assert before > 12 and after < 4, (before, after)


def test_removal_is_refined_by_the_model_when_there_is_one(tmp_path, tiny_sd):
    extra = f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 2\nresolution = 64\n[inpaint.face]\nenabled = false\n' \
        "[inpaint.hand]\nenabled = false\n"  # the removal alone (the camera man's gloves are found too)
    archive, entry = _job(tmp_path, extra, DATA / "camera.png", remove=_tower_mask())
    assert entry.status == "done", entry
    (region,) = entry.details.regions
    assert region.kind == "remove" and region.refined is True
    assert region.prompt == "seamless natural background" and region.strength == 0.5
    assert entry.models[0].name == "tiny-sd-inpaint"


def test_a_removal_fill_must_be_one_we_have(tmp_path):
    with pytest.raises(config_mod.ConfigError, match=r"\[inpaint.remove\].fill must be one of"):
        config_mod.load(write_config(tmp_path, '[inpaint.remove]\nfill = "lama"\n'))


def test_flux_never_runs_in_fp16():
    assert engine_mod.safe_dtype("FluxFillPipeline", torch.float16) == torch.bfloat16
    assert engine_mod.safe_dtype("StableDiffusionXLInpaintPipeline", torch.float16) == torch.float16
    assert engine_mod.safe_dtype("FluxFillPipeline", torch.float32) == torch.float32


def test_a_broken_removal_mask_fails_the_image_and_keeps_both_files(tmp_path):
    cfg = config_mod.load(write_config(tmp_path, "[upscale]\nenabled = false\n"))
    src = cfg.paths.inbox / "shot.png"
    src.write_bytes((DATA / "camera.png").read_bytes())
    (cfg.paths.inbox / "shot.remove.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out, _ = run_one(cfg, src, [AutoMaskStage(), InpaintStage()], expect="failed")
    # Failed at once (a broken drawing cannot heal on a retry), naming the user's file.
    assert "shot.remove.png cannot be decoded as PNG" in out.error
    assert (cfg.paths.failed / "shot.png").read_bytes() == (DATA / "camera.png").read_bytes()
    assert (cfg.paths.failed / "shot.remove.png").exists() and not list(cfg.paths.inbox.iterdir())
    report = json.loads((cfg.paths.failed / "shot.png.error.json").read_text())
    assert report["stage"] == "intake"


def test_face_parts_are_repainted_alone_with_settings_inherited_from_the_face(tmp_path, tiny_sd):
    """[automask.face].parts: the eyes and the mouth get masks of their own, repainted with [inpaint.face-eyes]
    and [inpaint.face-mouth], whose keys fall back to [inpaint.face], then to [inpaint]."""
    extra = (f'[automask.face]\nparts = ["eyes", "mouth"]\n'
             f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 2\nresolution = 64\n'
             '[inpaint.face]\nenabled = false\nstrength = 0.4\n'
             '[inpaint.face-eyes]\nstrength = 0.25\nprompt = "bright eyes"\n'
             '[inpaint.face-mouth]\n')
    archive, entry = _job(tmp_path, extra, DATA / "astronaut.png")
    assert entry.status == "done", entry
    regions = {r.kind: r for r in entry.details.regions}
    assert set(regions) == {"face-eyes", "face-mouth"}  # the whole face is switched off
    assert regions["face-eyes"].prompt == "bright eyes" and regions["face-eyes"].strength == 0.25
    assert regions["face-mouth"].prompt == "a detailed natural face" and regions["face-mouth"].strength == 0.4
    original = np.asarray(Image.open(archive / "00-original.png").convert("RGB")).astype(int)
    result = np.asarray(Image.open(archive / "20-inpaint.png").convert("RGB")).astype(int)
    eyes = np.asarray(Image.open(archive / "10-mask-face-eyes.png"))
    mouth = np.asarray(Image.open(archive / "10-mask-face-mouth.png"))
    assert (result[(eyes == 0) & (mouth == 0)] == original[(eyes == 0) & (mouth == 0)]).all()
    assert np.abs(result[eyes == 255] - original[eyes == 255]).mean() > 1
    assert np.abs(result[mouth == 255] - original[mouth == 255]).mean() > 1


def test_an_unknown_face_part_is_named(tmp_path):
    with pytest.raises(config_mod.ConfigError, match=r'\[automask.face\].parts must be a list of "eyes", "mouth"'):
        config_mod.load(write_config(tmp_path, '[automask.face]\nparts = ["nose"]\n'))
