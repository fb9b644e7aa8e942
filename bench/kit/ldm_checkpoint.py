"""Write a diffusers SD 1.x/2.x or SDXL folder as one original-layout (LDM) ``.safetensors`` checkpoint.

This is the file layout that A1111, ComfyUI and the model sites use, and what
``[inpaint].model = "something.safetensors"`` loads.  The tests build a tiny pipeline with
diffusers, write it here in that layout, and load it back through polishd's real single-file path.
The key mapping is the inverse of the one diffusers applies when it reads such a file; it covers
the block types the tiny pipelines use (and SD 1.x and SDXL themselves): ResNet and cross-attention
blocks, SDXL's size-conditioning embedding, CLIP (SD 1.x, SDXL's first encoder) and OpenCLIP
(SDXL's second encoder, with its fused q/k/v projection).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(f))
    return out


def _rename(key: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old):]
    raise KeyError(f"no LDM name for {key!r}")


def _resnet_pairs(diffusers_prefix: str, ldm_prefix: str) -> list[tuple[str, str]]:
    return [(f"{diffusers_prefix}.{a}.", f"{ldm_prefix}.{b}.") for a, b in RESNET.items()]


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    lpb = config["layers_per_block"]
    n_down = len(config["down_block_types"])
    pairs = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
             ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]
    for i in range(n_down):
        for j in range(lpb):
            idx = (lpb + 1) * i + j + 1
            pairs += _resnet_pairs(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{idx}.0")
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{idx}.1."))
        if i < n_down - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(lpb + 1) * (i + 1)}.0.op."))
    for i, kind in enumerate(config["up_block_types"]):
        for j in range(lpb + 1):
            idx = (lpb + 1) * i + j
            pairs += _resnet_pairs(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{idx}.0")
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{idx}.1."))
        slot = 2 if "CrossAttn" in kind else 1
        pairs.append((f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{(lpb + 1) * i + lpb}.{slot}.conv."))
    pairs += _resnet_pairs("mid_block.resnets.0", "middle_block.0")
    pairs += _resnet_pairs("mid_block.resnets.1", "middle_block.2")
    pairs.append(("mid_block.attentions.0.", "middle_block.1."))
    pairs += [("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2.")]
    return {"model.diffusion_model." + _rename(k, pairs): v for k, v in state.items()}


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    n = len(config["up_block_types"])
    pairs = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for i in range(len(config["down_block_types"])):
        pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv."))
        pairs.append((f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."))
    for i in range(n):
        pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{n - 1 - i}.upsample.conv."))
        pairs.append((f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."))
    for part in ("encoder", "decoder"):
        pairs.append((f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."))
        pairs.append((f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."))
        pairs += [(f"{part}.mid_block.attentions.0.{a}.", f"{part}.mid.attn_1.{b}.") for a, b in VAE_ATTENTION.items()]
    for name in ("conv_in", "conv_out"):
        pairs += [(f"{part}.{name}.", f"{part}.{name}.") for part in ("encoder", "decoder")]
    pairs += [("quant_conv.", "quant_conv."), ("post_quant_conv.", "post_quant_conv.")]
    out = {}
    for k, v in state.items():
        ldm = _rename(k, pairs).replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # the original VAE's attention projections are 1×1 convolutions
        out["first_stage_model." + ldm] = v
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str = "cond_stage_model.transformer.") \
        -> dict[str, torch.Tensor]:
    # transformers ≥ 5.6 saves CLIPTextModel without its "text_model." level; the original layout has it.
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}


OPEN_CLIP = [("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
             ("mlp.fc2.", "mlp.c_proj."), ("self_attn.out_proj.", "attn.out_proj.")]


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A CLIP text model in OpenCLIP's layout (SD 2.x's encoder, SDXL's second)."""
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
           prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight")}
    if "text_projection.weight" in state:  # SDXL's second encoder has one; SD 2.x's encoder does not
        out[prefix + "text_projection"] = state.pop("text_projection.weight").T.contiguous()
    for k in [k for k in state if k.startswith("final_layer_norm.")]:
        out[prefix + "ln_final." + k.split(".")[-1]] = state.pop(k)
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")})
    for n in layers:
        src, dst = f"encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for part in ("weight", "bias"):  # q, k and v travel as one in_proj tensor
            out[f"{dst}attn.in_proj_{part}"] = torch.cat([state.pop(f"{src}self_attn.{x}_proj.{part}")
                                                         for x in "qkv"])
        for k in [k for k in state if k.startswith(src)]:
            out[dst + _rename(k[len(src):], OPEN_CLIP)] = state.pop(k)
    if state:
        raise KeyError(f"no OpenCLIP name for {sorted(state)}")
    return out


def write_ldm_checkpoint(folder: Path, target: Path, open_clip: bool = False) -> Path:
    """``folder``: a diffusers SD 1.x/2.x or SDXL folder; ``target``: the single ``.safetensors`` file to write.
    ``open_clip``: the text encoder in SD 2.x's OpenCLIP layout rather than SD 1.x's CLIP layout."""
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    state = unet_to_ldm(_weights(folder / "unet"), unet_cfg)
    state.update(vae_to_ldm(_weights(folder / "vae"), vae_cfg))
    if (folder / "text_encoder_2").is_dir():  # SDXL: two encoders, under "conditioner.embedders"
        state.update(clip_to_ldm(_weights(folder / "text_encoder"), "conditioner.embedders.0.transformer."))
        state.update(open_clip_to_ldm(_weights(folder / "text_encoder_2"), "conditioner.embedders.1.model."))
    elif open_clip:
        state.update(open_clip_to_ldm(_weights(folder / "text_encoder"), "cond_stage_model.model."))
    else:
        state.update(clip_to_ldm(_weights(folder / "text_encoder")))
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    return target
