"""An IP-Adapter for faces: the face's own crop conditions its repaint, for that face only."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from stages.diffusion import identity
from tests.conftest import DATA
from tests.helpers.hostile import write_hostile
from tests.test_vae import _job


def test_an_encoder_file_without_a_config_is_read_as_the_tower_it_is():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    towers = {  # OpenCLIP ViT-H/14 (most IP-Adapters) and ViT-bigG/14, OpenAI ViT-L/14
        "vit-h": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                      patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu"),
        "vit-bigg": dict(hidden_size=1664, intermediate_size=8192, num_hidden_layers=48, num_attention_heads=16,
                         patch_size=14, image_size=224, projection_dim=1280, hidden_act="gelu"),
        "vit-l": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu"),
    }
    for name, want in towers.items():
        with torch.device("meta"):
            model = CLIPVisionModelWithProjection(CLIPVisionConfig(**want))
        got = identity.encoder_config({k: tuple(v.shape) for k, v in model.state_dict().items()})
        assert {k: getattr(got, k) for k in want} == want, name
    with pytest.raises(ValueError, match="not a CLIP vision model"):
        identity.encoder_config({"encoder.conv_in.weight": (8, 3, 3, 3)})


@pytest.fixture(scope="module")
def adapter_models(tiny_sd, tmp_path_factory):
    from bench.kit.tiny_sd import build_tiny_ip_adapter

    models = tmp_path_factory.mktemp("ip") / "models"
    adapter, encoder = build_tiny_ip_adapter(tiny_sd, models / "made")
    (models / "ipadapter").mkdir()
    (models / "clip_vision").mkdir()
    shutil.move(adapter, models / "ipadapter" / adapter.name)  # ComfyUI's folders
    shutil.move(encoder, models / "clip_vision" / encoder.name)
    return models


def _face(scale: float | None) -> str:
    if scale is None:
        return ""
    return ('[inpaint.face]\nip_adapter = "tiny-ip-adapter-face"\nip_adapter_encoder = "tiny-clip-vision"\n'
            f"ip_adapter_scale = {scale}\n")


def test_the_faces_own_crop_conditions_its_repaint_and_leaves_nothing_behind(tmp_path, tiny_sd, adapter_models,
                                                                             monkeypatch):
    import diffusers

    seen = []
    real = diffusers.StableDiffusionInpaintPipeline.__call__

    def spy(self, *a, **k):
        seen.append(k.get("ip_adapter_image"))
        return real(self, *a, **k)
    monkeypatch.setattr(diffusers.StableDiffusionInpaintPipeline, "__call__", spy)
    src = DATA / "astronaut.png"
    plain, _ = _job(tmp_path / "plain", tiny_sd, src, adapter_models)
    guided, entry = _job(tmp_path / "guided", tiny_sd, src, adapter_models, _face(0.8))
    region = entry.details.regions[0]
    assert entry.status == "done" and region.kind == "face"
    assert region.ip_adapter == "tiny-ip-adapter-face.safetensors at 0.8 (tiny-clip-vision.safetensors)"
    assert not np.array_equal(plain, guided)
    # What the adapter saw: the face's own box of the picture, before its repaint.
    crop = seen[-1]
    x0, y0, x1, y1 = region.box
    from PIL import Image

    source = np.asarray(Image.open(src).convert("RGB"))
    assert crop.size == (x1 - x0, y1 - y0) and np.array_equal(np.asarray(crop), source[y0:y1, x0:x1])
    # At scale 0 the adapter adds nothing: the same pixels as without it.
    zero, _ = _job(tmp_path / "zero", tiny_sd, src, adapter_models, _face(0.0))
    assert np.array_equal(zero, plain)
    # The next image paints as if it had never been loaded.
    after, _ = _job(tmp_path / "after", tiny_sd, src, adapter_models)
    assert np.array_equal(after, plain)


def test_an_ip_adapter_that_cannot_be_had_is_said_and_the_face_painted_without(tmp_path, tiny_sd, adapter_models):
    src = DATA / "astronaut.png"
    models = tmp_path / "models"
    shutil.copytree(adapter_models, models)
    ran = write_hostile(models / "ipadapter" / "evil.bin", lambda code: {"image_proj": {"proj.weight": code}})
    plain, _ = _job(tmp_path / "plain", tiny_sd, src, models)
    face = _face(0.8).replace("tiny-ip-adapter-face", "evil.bin")
    painted, entry = _job(tmp_path / "evil", tiny_sd, src, models, face)
    region = entry.details.regions[0]
    assert entry.status == "done" and region.ip_adapter is None and np.array_equal(painted, plain)
    assert region.missing == ["IP-Adapter: evil.bin could not be read safely (UnpicklingError)"]
    assert not ran.exists()


def test_check_config_names_a_missing_encoder(tmp_path):
    from daemon import config as config_mod
    from tests.conftest import write_config

    with pytest.raises(config_mod.ConfigError, match=r"\[inpaint\.face\]\.ip_adapter_encoder must name"):
        config_mod.load(write_config(tmp_path, '[inpaint.face]\nip_adapter = "ip-adapter-plus-face_sd15"\n'))
