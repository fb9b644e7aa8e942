"""ControlNet-guided hands: the control images drawn from the 21 landmarks, and the repaint through a tiny
ControlNet built from its config (random weights, its zero convolutions included, so that it steers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automask.detect import Detection
from daemon import config as config_mod
from stages import control
from stages.automask import AutoMaskStage
from stages.inpaint import InpaintStage
from tests.conftest import DATA, run_one, write_config


def open_hand(cx: float, cy: float, size: float) -> list[tuple[float, float]]:
    """21 landmarks of an open right hand, fingers up, in MediaPipe's order, ``size`` px from wrist to tips."""
    pts = [(0.0, 0.0)]
    for angle, base_y, lengths in ((-55, -0.25, (0.18, 0.16, 0.14)), (-18, -0.55, (0.2, 0.14, 0.12)),
                                   (0, -0.58, (0.22, 0.16, 0.13)), (16, -0.55, (0.2, 0.15, 0.12)),
                                   (34, -0.48, (0.16, 0.12, 0.1))):
        a = np.radians(angle)
        x, y = np.sin(a) * 0.35, base_y
        pts.append((x, y))
        for length in lengths:
            x, y = x + np.sin(a) * length, y - np.cos(a) * length
            pts.append((x, y))
    return [(cx + x * size, cy + 0.5 * size + y * size) for x, y in pts]


HAND = open_hand(256, 330, 180)


def test_the_openpose_image_is_openposes_hand_skeleton():
    crop, size = (116, 160, 396, 440), (512, 512)
    image = np.asarray(control.control_image("openpose", HAND, crop, size))
    assert image.shape == (512, 512, 3)
    points = control.place(HAND, crop, size)
    for p in points:  # every joint a blue dot
        x, y = int(round(p[0])), int(round(p[1]))
        assert tuple(image[y, x]) == control.JOINT
    for i, (a, b) in enumerate(control.BONES):  # every bone in its own hue, in OpenPose's limb order
        mid = (points[a] + points[b]) / 2
        x, y = int(round(mid[0])), int(round(mid[1]))
        near = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(int)
        assert np.abs(near - control.bone_colour(i)).sum(axis=1).min() < 60, i
    assert control.bone_colour(0) == (255, 0, 0) and control.bone_colour(5)[1] == 255
    assert (image.sum(axis=2) == 0).mean() > 0.8  # black ground


def test_the_depth_image_shades_the_hand_round_and_leaves_the_ground_far():
    crop, size = (116, 160, 396, 440), (512, 512)
    depth = np.asarray(control.control_image("depth", HAND, crop, size))[:, :, 0].astype(int)
    points = control.place(HAND, crop, size)
    palm_centre = points[[0, 5, 9, 13, 17]].mean(axis=0).round().astype(int)
    assert depth[palm_centre[1], palm_centre[0]] > 200  # the palm's middle is near
    assert depth[5, 5] == 0 and depth[-5, -5] == 0     # the ground is far
    tip, joint = points[8], points[7]                   # across the index finger: lightest in its middle
    mid = ((tip + joint) / 2).round().astype(int)
    assert depth[mid[1], mid[0]] > depth[mid[1], mid[0] + 9] and depth[mid[1], mid[0] + 45] == 0
    assert control.guess_kind("models/control_v11f1p_sd15_depth.safetensors") == "depth"
    assert control.guess_kind("control_v11p_sd15_openpose") == "openpose"


# --------------------------------------------------------------------------- through the stage


@pytest.fixture(scope="module")
def tiny_controlnet(tmp_path_factory) -> Path:
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(1)
    net = ControlNetModel(block_out_channels=(32, 64), layers_per_block=1, in_channels=4,
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), cross_attention_dim=32,
                          conditioning_embedding_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=4)
    with torch.no_grad():  # a trained ControlNet's zero convolutions are not zero any more
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            conv.weight.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("models") / "tiny-controlnet-openpose"
    net.save_pretrained(folder)
    return folder


class WithHand(AutoMaskStage):
    """The real auto-mask stage, whose detector finds one open hand where the test put it."""

    def setup(self, ctx, params):
        super().setup(ctx, params)
        self._detector.detect = lambda image: [Detection("hand", (150, 190, 362, 430), 0.95, "hand", HAND, "Right")]


def _run(tmp_path: Path, tiny_sd: Path, hand: str):
    extra = (f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 3\nresolution = 64\n[inpaint.gate]\nenabled = false\n'
             f"[inpaint.hand]\nstrength = 0.9\n{hand}\n[automask.face]\nenabled = false\n"
             "[upscale]\nenabled = false\n")
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = config_mod.load(write_config(tmp_path, extra))
    src = cfg.paths.inbox / "astronaut.png"
    src.write_bytes((DATA / "astronaut.png").read_bytes())
    out, manifest = run_one(cfg, src, [WithHand(), InpaintStage()])
    entry = next(s for s in manifest.stages if s.name == "inpaint")
    return out.archive, entry


def test_a_hand_is_repainted_through_the_controlnet_with_its_pose(tmp_path, tiny_sd, tiny_controlnet):
    archive, entry = _run(tmp_path / "pose", tiny_sd, f'controlnet = "{tiny_controlnet}"\ncontrolnet_scale = 1.5')
    assert entry.status == "done", entry.reason
    (region,) = entry.details.regions
    assert region.controlnet == "tiny-controlnet-openpose" and region.controlnet_type == "openpose"
    assert region.controlnet_scale == 1.5 and region.control_image == "20-hand-0-control.png"
    assert "20-hand-0-control.png" in entry.outputs
    with Image.open(archive / "20-hand-0-control.png") as im:
        drawn = np.asarray(im.convert("RGB"))
    assert drawn.shape == (64, 64, 3)  # at the working size ([inpaint].resolution)
    assert (np.all(drawn == control.JOINT, axis=2)).sum() >= 21  # the 21 joints, drawn on the crop
    guided = np.asarray(Image.open(archive / "20-inpaint.png"))
    # the control image steers the repaint: without it, or with the depth cue instead, the hand differs
    plain_archive, plain = _run(tmp_path / "plain", tiny_sd, "")
    assert plain.details.regions[0].controlnet is None
    depth_archive, depth = _run(tmp_path / "depth", tiny_sd,
                                f'controlnet = "{tiny_controlnet}"\ncontrolnet_type = "depth"\ncontrolnet_scale = 1.5')
    assert depth.details.regions[0].controlnet_type == "depth"
    for other in (plain_archive, depth_archive):
        assert not np.array_equal(guided, np.asarray(Image.open(other / "20-inpaint.png")))
    # outside the hand's mask nothing moved
    mask = np.asarray(Image.open(archive / "10-mask-hand.png"))
    source = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))
    assert np.array_equal(guided[mask == 0], source[mask == 0])


def test_a_controlnet_that_cannot_be_used_is_said_and_the_hand_still_painted(tmp_path, tiny_sd):
    archive, entry = _run(tmp_path, tiny_sd, f'controlnet = "{tmp_path / "nowhere"}"')
    (region,) = entry.details.regions
    assert region.controlnet.startswith("not used:") and "nowhere" in region.controlnet
    assert region.control_image is None and (archive / "20-inpaint.png").exists()


def test_check_config_names_a_missing_controlnet(tmp_path):
    from stages.models import Models

    extra = '[inpaint]\nmodel = "x"\n[inpaint.hand]\ncontrolnet = "no-such-net"\n'
    cfg = config_mod.load(write_config(tmp_path, extra))
    stage = InpaintStage()
    problem = Models(None, cfg.paths.models).problem(
        [m for m in stage.model_settings(stage.params(cfg)) if m.setting.startswith("[inpaint.hand]")])
    assert problem and "[inpaint.hand].controlnet = 'no-such-net'" in problem


def test_sdxl_inpainting_takes_its_controlnet_counterpart(tiny_sdxl, tmp_path):
    import torch
    from diffusers import ControlNetModel

    from stages.diffusion import engine as engine_mod
    from stages.models import ModelKind, Models, ModelSetting

    config = {k: v for k, v in json.loads((tiny_sdxl / "unet" / "config.json").read_text()).items()
              if not k.startswith("_")}
    ControlNetModel.from_config({**config, "in_channels": 4, "conditioning_embedding_out_channels": (16, 32)}
                                ).save_pretrained(tmp_path / "sdxl-controlnet")
    models = Models(None, tmp_path)
    try:
        engine = engine_mod.get(models.resolve(ModelSetting("[inpaint].model", str(tiny_sdxl), ModelKind.DIFFUSION)),
                                None, torch.device("cpu"), torch.float32, tmp_path)
        net = engine_mod.controlnet(models.resolve(ModelSetting("[inpaint.hand].controlnet",
                                                                str(tmp_path / "sdxl-controlnet"),
                                                                ModelKind.CONTROLNET)), None, engine.device,
                                    engine.dtype)
        crop = Image.open(DATA / "astronaut.png").convert("RGB").resize((64, 64))
        pose = control.control_image("openpose", HAND, (116, 160, 396, 440), (64, 64))
        out = engine.inpaint(crop, Image.new("L", (64, 64), 255), "a hand", "", 3, 5.0, 0.9, 1,
                             control=engine_mod.Control(net, pose, 1.0))
        assert out.size == (64, 64)
        assert type(engine.controlled[net.spec]).__name__ == "StableDiffusionXLControlNetInpaintPipeline"
    finally:
        engine_mod.unload()
