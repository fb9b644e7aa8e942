"""LoRAs: the image's own and the user's, found by name, loaded through diffusers' kohya reader at their weights
for one region, and gone after it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from stages import loras
from stages.generation import LoraRef
from tests.conftest import DATA

pytest.importorskip("peft", reason="diffusers loads LoRAs through peft (a dependency: make setup installs it)")

RANK, ALPHA = 2, 2.0  # alpha / rank = 1


def kohya_lora(unet, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA of the UNet's attention projections as kohya's sd-scripts writes one: ``lora_unet_<module with
    _ for .>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_v")) and \
                isinstance(module, torch.nn.Linear):
            key = "lora_unet_" + name.replace(".", "_")
            out[f"{key}.lora_down.weight"] = torch.randn(RANK, module.in_features, generator=g) * 0.3
            out[f"{key}.lora_up.weight"] = torch.randn(module.out_features, RANK, generator=g) * 0.3
            out[f"{key}.alpha"] = torch.tensor(ALPHA)
    return out


def test_the_images_and_the_users_loras_are_found_by_name_and_what_is_not_there_is_said(tmp_path):
    models = tmp_path / "models"
    (models / "Lora" / "styles").mkdir(parents=True)
    (models / "loras").mkdir()
    (models / "Lora" / "styles" / "armor_v2.safetensors").write_bytes(b"x")
    (models / "loras" / "FaceDetail.safetensors").write_bytes(b"x")
    uses, missing = loras.wanted([LoraRef("armor_v2", 0.8, 0.5), LoraRef("gone.safetensors", 1.0)],
                                 ["facedetail:0.6"], models)
    assert [(u.name, u.weight, u.te_weight) for u in uses] == [("armor_v2", 0.8, 0.5), ("FaceDetail", 0.6, 0.6)]
    assert len(missing) == 1 and missing[0].startswith("LoRA gone.safetensors: not in")
    assert loras.check("face:0.6:0.2") is None and "weights from -10 to 10" in loras.check("face:99")
    assert "entries are" in loras.check("face:strong")


@pytest.fixture(scope="module")
def engine(tiny_sd):
    from stages.generative import acquire
    from stages.models import ModelKind, Models, ModelSetting

    return acquire(Models(None, tiny_sd.parent), ModelSetting("[inpaint].model", str(tiny_sd), ModelKind.DIFFUSION),
                   None, "cpu")


def _paint(engine) -> np.ndarray:
    from stages.diffusion.repaint import repaint

    image = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB").resize((128, 128)))
    mask = np.zeros((128, 128), np.uint8)
    mask[32:96, 32:96] = 255
    return repaint(engine, image, mask, (32, 32, 96, 96), 8, 64, "a face", "", 3, 5.0, 0.8, 7)[0].astype(int)


def test_a_kohya_lora_at_08_paints_as_its_weights_fused_by_hand_and_nothing_carries_over(engine, tmp_path):
    unet = engine.pipe.unet
    state = kohya_lora(unet)
    path = tmp_path / "loras" / "tiny_style.safetensors"
    path.parent.mkdir()
    save_file(state, str(path))
    before = _paint(engine)
    loaded, problems = engine.apply_loras([loras.Use("tiny_style", path, 0.8, 0.8)])
    try:
        assert (loaded, problems) == (["tiny_style"], [])
        with_lora = _paint(engine)
    finally:
        engine.clear_loras()
    after = _paint(engine)
    assert np.array_equal(after, before)  # the next image paints as if it had never been loaded
    assert np.abs(with_lora - before).mean() > 1  # the LoRA changed the picture
    # the same weights fused by hand at 0.8: W + 0.8 · (alpha / rank) · up · down
    modules = dict(unet.named_modules())
    saved = {}
    with torch.no_grad():
        for key in {k.rsplit(".", 2)[0] for k in state if k.endswith("lora_down.weight")}:
            name = next(n for n in modules if "lora_unet_" + n.replace(".", "_") == key)
            weight = modules[name].weight
            saved[name] = weight.clone()
            weight += 0.8 * (ALPHA / RANK) * state[f"{key}.lora_up.weight"] @ state[f"{key}.lora_down.weight"]
    try:
        fused = _paint(engine)
    finally:
        with torch.no_grad():
            for name, weight in saved.items():
                modules[name].weight.copy_(weight)
    assert np.abs(fused - with_lora).max() <= 2 and np.abs(fused - before).mean() > 1


def test_a_flux_lora_at_08_paints_as_its_weights_fused_by_hand(tiny_flux_fill, tmp_path):
    from stages.diffusion import engine as engine_mod
    from stages.generative import acquire
    from stages.models import ModelKind, Models, ModelSetting

    flux = acquire(Models(None, tiny_flux_fill.parent),
                   ModelSetting("[inpaint].model", str(tiny_flux_fill), ModelKind.DIFFUSION), None, "cpu")
    try:
        modules = dict(flux.pipe.transformer.named_modules())
        g = torch.Generator().manual_seed(3)
        state = {}  # diffusers' own layout for a Flux LoRA: transformer.<module>.lora_A / lora_B
        for name, module in modules.items():
            if name.endswith(("attn.to_q", "attn.to_v")) and isinstance(module, torch.nn.Linear):
                state[f"transformer.{name}.lora_A.weight"] = torch.randn(RANK, module.in_features, generator=g) * 2
                state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, RANK, generator=g) * 2
        path = tmp_path / "flux_style.safetensors"
        save_file(state, str(path))
        before = _paint(flux)
        loaded, problems = flux.apply_loras([loras.Use("flux_style", path, 0.8, 0.3)])
        try:
            assert (loaded, problems) == (["flux_style"], [])
            with_lora = _paint(flux)
        finally:
            flux.clear_loras()
        assert np.array_equal(_paint(flux), before)
        saved = {}
        with torch.no_grad():  # the transformer's weight, not the text encoder's, is the first number
            for key in {k.removeprefix("transformer.").rsplit(".", 2)[0] for k in state}:
                weight = modules[key].weight
                saved[key] = weight.clone()
                weight += 0.8 * state[f"transformer.{key}.lora_B.weight"] @ state[f"transformer.{key}.lora_A.weight"]
        try:
            fused = _paint(flux)
        finally:
            with torch.no_grad():
                for key, weight in saved.items():
                    modules[key].weight.copy_(weight)
        assert np.abs(fused - with_lora).max() <= 2 and np.abs(fused - before).mean() > 1
    finally:
        engine_mod.unload()


def test_a_lora_that_cannot_be_loaded_is_said_and_the_region_painted_without_it(engine, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    loaded, problems = engine.apply_loras([loras.Use("broken", bad, 1.0, 1.0)])
    engine.clear_loras()
    assert loaded == [] and problems and problems[0].startswith("LoRA broken: could not be loaded")


def test_the_stage_uses_the_images_lora_tag_and_the_kinds_own(tmp_path, tiny_sd):
    import shutil

    import diffusers

    from tests.test_checkpoints import _run

    models = tmp_path / "models"
    shutil.copytree(tiny_sd, models / "diffusers" / "tiny")
    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny_sd / "unet")
    (models / "Lora").mkdir()
    save_file(kohya_lora(unet, 1), str(models / "Lora" / "armor_v2.safetensors"))
    save_file(kohya_lora(unet, 2), str(models / "Lora" / "face_detail.safetensors"))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "an astronaut <lora:armor_v2:0.7> <lora:not_here:1>\nSteps: 3, Seed: 1, CFG scale: 5")
    src = tmp_path / "astro.png"
    Image.open(DATA / "astronaut.png").save(src, pnginfo=info)
    entry = _run(tmp_path / "run", '[inpaint]\nmodel = "tiny"\nresolution = 64\n'
                                   '[inpaint.face]\nloras = ["face_detail:0.5"]\n', src, models)
    region = entry.details.regions[0]
    assert entry.status == "done" and region.loras == ["armor_v2 0.7", "face_detail 0.5"]
    assert any(m.startswith("LoRA not_here: not in") for m in region.missing)
    assert "<lora" not in region.prompt  # tags leave the text
    # and the image is flagged with it: `polishd status` and the review page say what it lacked
    assert any("painted without what its prompt asked for: LoRA not_here" in a for a in entry.attention)
