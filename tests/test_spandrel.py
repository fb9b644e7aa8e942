"""Upscaler weights of architectures polishd does not build itself, loaded through spandrel.

spandrel imports torchvision, which needs a torch build of its own, so these tests run in their own
environment: ``make test-spandrel`` (the third tier of ``make test``).  The models are small, randomly
initialised instances of spandrel's own architectures, saved the way their trainers save them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stages.esrgan import load as esrgan_load
from stages.esrgan.arch import UnsupportedModelError
from stages.models import ModelKind, Models, ModelSetting
from stages.upscale import UpscaleParams, UpscaleStage
from tests.conftest import DATA

pytestmark = pytest.mark.spandrel


class _Ctx:
    def __init__(self, models):
        self.models = Models(None, models)


def _load(name: str, folder):
    """[upscale].model = name, found in ``folder`` as the stage finds it."""
    setting = ModelSetting("[upscale].model", name, ModelKind.UPSCALER)
    return esrgan_load.load(Models(None, folder).resolve(setting), folder / "cache")


def _span(scale: int) -> torch.nn.Module:
    from spandrel.architectures.SPAN.__arch.span import SPAN as SPANNet

    torch.manual_seed(0)
    return SPANNet(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=scale).eval()


def _swinir(scale: int) -> torch.nn.Module:
    from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR

    torch.manual_seed(0)
    return SwinIR(upscale=scale, in_chans=3, img_size=32, window_size=8, img_range=1.0, depths=[2],
                  embed_dim=24, num_heads=[2], mlp_ratio=2, upsampler="pixelshuffle").eval()


@pytest.mark.parametrize("build, scale, architecture", [(_span, 2, "SPAN"), (_swinir, 4, "SwinIR")])
def test_other_architectures_upscale_through_spandrel(tmp_path, build, scale, architecture):
    import spandrel

    net = build(scale)
    path = tmp_path / f"4x-tiny-{architecture}.pth"
    torch.save({"params_ema": net.state_dict()}, path)  # the BasicSR trainers' layout
    loaded = _load(path.name, tmp_path)
    assert isinstance(loaded.net, esrgan_load.SpandrelNet) and loaded.net.architecture == architecture
    assert loaded.scale == scale and len(loaded.sha256) == 64

    stage = UpscaleStage()
    # colour_fix "none": compared with the architecture's own output (a random net's colours are no source's)
    params = UpscaleParams(model=str(path), scale=scale, device="cpu", tile=128, tile_overlap=8, colour_fix="none")
    stage.setup(_Ctx(tmp_path / "cache"), params)
    # 70×50: not a multiple of SwinIR's window, so spandrel pads and crops.  One tile, so no blending.
    image = Image.open(DATA / "astronaut.png").crop((180, 60, 250, 110)).convert("RGB")
    out = stage.upscale_image(image, params, 128).image
    assert out.size == (70 * scale, 50 * scale)
    # The same as spandrel's own descriptor on the whole image.
    reference = spandrel.ModelLoader().load_from_state_dict(torch.load(path, weights_only=True)["params_ema"])
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        expected = (reference(x)[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255)
    got = np.asarray(out, dtype=np.float32)
    assert np.abs(got - expected).max() <= 1.0


def test_spandrel_refuses_what_is_not_an_rgb_upscaler(tmp_path):
    from spandrel.architectures.SPAN.__arch.span import SPAN as SPANNet

    grey = SPANNet(num_in_ch=1, num_out_ch=1, feature_channels=16, upscale=2)
    torch.save(grey.state_dict(), tmp_path / "grey.pth")
    with pytest.raises(UnsupportedModelError, match="1→1 channels.*not a whole-image RGB upscaler"):
        _load("grey.pth", tmp_path)
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(UnsupportedModelError, match="spandrel does not know it either"):
        _load("other.pth", tmp_path)
