"""An IP-Adapter for faces: the face's own crop, through a CLIP image encoder, conditions its repaint.

What users have (ComfyUI's ``models/ipadapter/`` and ``models/clip_vision/``): the adapter as one
``.safetensors`` file whose keys start ``image_proj.`` and ``ip_adapter.`` (or a ``.bin`` of the same two
dictionaries, read tensors-only), and the image encoder as one ``.safetensors`` file in transformers' layout
without a config.  The config is read from the tensors' shapes (width, depth, MLP size, patch and image size,
projection); the head count, which no shape shows, from the known encoders: OpenAI's ViT-L/14 and
OpenCLIP's ViT-H/14 and ViT-bigG/14 all have 16 heads (64, 80 and 104 wide).  A diffusers/transformers folder
with ``config.json`` is read as it is.  diffusers' ``load_ip_adapter`` puts the adapter into the UNet for one
repaint; ``unload_ip_adapter`` takes it out after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from stages.files import read_weights

# width → (heads, activation) of the CLIP vision towers IP-Adapters are trained with
KNOWN = {768: (12, "quick_gelu"), 1024: (16, "quick_gelu"), 1280: (16, "gelu"), 1664: (16, "gelu")}


@dataclass(frozen=True)
class Identity:
    """What the engine needs for one face: the adapter's two state dicts, the encoder, the scale, the crop."""

    name: str
    adapter: dict
    encoder: object
    scale: float
    image: Image.Image


def read_adapter(path: Path) -> dict:
    """``{"image_proj": {...}, "ip_adapter": {...}}`` from an IP-Adapter file, read without running code.
    ValueError with the reason when it is not one."""
    state = read_weights(path)
    if path.suffix == ".safetensors":  # one flat file: image_proj.* and ip_adapter.* keys
        flat, state = state, {"image_proj": {}, "ip_adapter": {}}
        for key, value in flat.items():
            part, _, rest = key.partition(".")
            if part in state and rest:
                state[part][rest] = value
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) and state[k]
                                              for k in ("image_proj", "ip_adapter")):
        raise ValueError(f"{path.name} is not an IP-Adapter (no image_proj and ip_adapter weights)")
    return {k: state[k] for k in ("image_proj", "ip_adapter")}


def encoder_config(shapes: dict[str, tuple[int, ...]]):
    """A CLIP vision config for a transformers-layout state dict, from its tensors' shapes."""
    from transformers import CLIPVisionConfig

    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise ValueError(f"not a CLIP vision model (no {name})")
        return shapes[name]
    width = shape("vision_model.embeddings.class_embedding")[0]
    patch = shape("vision_model.embeddings.patch_embedding.weight")[-1]
    positions = shape("vision_model.embeddings.position_embedding.weight")[0]
    side = round((positions - 1) ** 0.5)
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k)))
    heads, act = KNOWN.get(width, (max(1, width // 64), "gelu"))
    return CLIPVisionConfig(hidden_size=width, intermediate_size=shape(
        "vision_model.encoder.layers.0.mlp.fc1.weight")[0], num_hidden_layers=layers, num_attention_heads=heads,
        patch_size=patch, image_size=side * patch, projection_dim=shape("visual_projection.weight")[0],
        hidden_act=act, layer_norm_eps=1e-5)


def read_encoder(path: Path, device: torch.device, dtype: torch.dtype):
    """The CLIP image encoder in ``path`` (a folder with config.json, or one ``.safetensors`` file)."""
    from transformers import CLIPVisionModelWithProjection

    try:
        if path.is_dir():
            model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True, dtype=dtype)
        else:
            from safetensors.torch import load_file

            state = load_file(str(path))
            config = encoder_config({k: tuple(v.shape) for k, v in state.items()})
            model = CLIPVisionModelWithProjection(config)
            missing, _ = model.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"{len(missing)} of its weights are missing")
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    except Exception as exc:  # a broken file, another model
        raise ValueError(f"{path.name} could not be read as a CLIP image encoder ({type(exc).__name__})") from None
    return model.to(device, dtype).eval()
