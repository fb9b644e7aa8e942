"""The two Real-ESRGAN network architectures, with the official parameter names.

RRDBNet (ESRGAN / Real-ESRGAN x4plus, x4plus-anime) and SRVGGNetCompact
(realesr-animevideov3, realesr-general).  Parameter names match the official
``.pth`` files, so their state dicts load as they are.  Sizes are read from a
state dict by ``infer``, never asked of the user.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator; ×2 and ×1 variants fold the input with pixel-unshuffle first."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, scale: int = 4, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32):
        super().__init__()
        self.scale = scale
        fold = {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * fold, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 2:
            x = F.pixel_unshuffle(x, 2)
        elif self.scale == 1:
            x = F.pixel_unshuffle(x, 4)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class SRVGGNetCompact(nn.Module):
    """A plain VGG-style stack with PReLU, pixel-shuffle up, plus a nearest-upsampled input."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4):
        super().__init__()
        self.upscale = upscale
        self.scale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


class UnsupportedModelError(ValueError):
    """A state dict that is none of the architectures polishd knows."""


def _has_all(sd: dict, *keys: str) -> bool:
    return all(k in sd for k in keys)


def infer(sd: dict[str, torch.Tensor]) -> nn.Module:
    """Builds the architecture a state dict belongs to, with sizes read from its tensors."""
    if _has_all(sd, "conv_first.weight", "conv_body.weight", "conv_up1.weight", "conv_last.weight"):
        num_feat, in_ch_folded = sd["conv_first.weight"].shape[:2]
        num_out_ch = sd["conv_last.weight"].shape[0]
        num_block = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.", k)))
        num_grow_ch = sd["body.0.rdb1.conv1.weight"].shape[0]
        scale = {3: 4, 12: 2, 48: 1}.get(int(in_ch_folded) * 3 // num_out_ch)
        if scale is None:
            raise UnsupportedModelError(f"RRDBNet with {in_ch_folded} input channels is not a ×1, ×2 or ×4 model")
        return RRDBNet(num_out_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)
    if _has_all(sd, "body.0.weight", "body.1.weight") and sd["body.1.weight"].ndim == 1:
        convs = sorted(int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.weight$", k))
                       and sd[k].ndim == 4)
        num_in_ch, num_feat = sd["body.0.weight"].shape[1], sd["body.0.weight"].shape[0]
        last = sd[f"body.{convs[-1]}.weight"].shape[0]
        num_out_ch = num_in_ch
        upscale = int(round((last / num_out_ch) ** 0.5))
        return SRVGGNetCompact(num_in_ch, num_out_ch, num_feat, len(convs) - 2, upscale)
    raise UnsupportedModelError(
        "not a Real-ESRGAN RRDBNet or SRVGGNetCompact state dict (keys start with: "
        + ", ".join(list(sd)[:4]) + ")")
