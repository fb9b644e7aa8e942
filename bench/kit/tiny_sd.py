"""A tiny, randomly initialised SD 1.x inpainting pipeline, built from configs (no weights downloaded).

It exercises the real diffusers code paths — 9-channel UNet, VAE, CLIP text encoder, our offline
tokenizer — in seconds on a CPU.  Its pixels are noise: it tests plumbing, never quality.
"""

from __future__ import annotations

from pathlib import Path

from stages.diffusion.tokenizer import clip_tokenizer


def build_tiny_sd(folder: Path, in_channels: int = 9, sd2: bool = False, eightfold: bool = False) -> Path:
    """``in_channels`` 9: an inpainting UNet (latents + mask + masked image); 4: an ordinary one.
    ``sd2``: SD 2.x's shape — linear attention projections, an OpenCLIP-style (GELU) text encoder.
    ``eightfold``: a VAE that divides the picture by 8, as SD's does (four narrow blocks), so the latent of a
    512² tile is 64², as with a real model; the default VAE divides by 2 (fast on the small crops of the
    tests, but its attention over a 256² latent makes a 512² tile take half a minute)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16,
                                in_channels=in_channels, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8, use_linear_projection=sd2)
    blocks = 4 if eightfold else 2
    vae = AutoencoderKL(block_out_channels=(16, 16, 32, 32) if eightfold else (32, 64), in_channels=3,
                        out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * blocks,
                        up_block_types=("UpDecoderBlock2D",) * blocks, norm_num_groups=8)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, pad_token_id=1,
                                        vocab_size=49408, projection_dim=32,
                                        hidden_act="gelu" if sd2 else "quick_gelu"))
    pipe = StableDiffusionInpaintPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=clip_tokenizer(),
                                          scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
                                          safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def write_single_file(folder: Path, target: Path, open_clip: bool = False) -> tuple[Path, Path]:
    """The pipeline in ``folder`` as one original-layout checkpoint, plus a folder of its configs only
    (what ``[inpaint].model_config`` points at for a checkpoint that is not full-size SD 1.x)."""
    import shutil

    from bench.kit.ldm_checkpoint import write_ldm_checkpoint

    configs = target.parent / (target.stem + "-configs")
    for f in folder.rglob("*.json"):
        (configs / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, configs / f.relative_to(folder))
    return write_ldm_checkpoint(folder, target, open_clip), configs


def build_tiny_sdxl(folder: Path) -> Path:
    """A tiny SDXL inpainting pipeline: two text encoders (the second with a projection), the
    size/crop "time ids" conditioning, 9-channel UNet."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=9,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                                projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=32 + 48,
                                norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8)
    # The two encoders differ in width, as SDXL's do (768 and 1280): that is how a single file tells them apart.
    text = dict(bos_token_id=0, eos_token_id=2, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                pad_token_id=1, vocab_size=49408, projection_dim=32, hidden_act="gelu")
    pipe = StableDiffusionXLInpaintPipeline(
        unet=unet, vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=32, **text)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=48, **text)),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1, timestep_spacing="leading"),
        requires_aesthetics_score=False, force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_flux_fill(folder: Path) -> Path:
    """A tiny Flux Fill pipeline: a flow-matching transformer fed latents, masked-image latents and the
    mask (packed 2×2), a CLIP and a T5 text encoder.  The T5 tokenizer is a small unigram vocabulary
    written here: Flux's own comes with the model folder."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    latent = 4
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=latent,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    # Packed 2×2: latents (4·latent) + masked-image latents (4·latent) + the mask (4 · vae factor², here 2²).
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4 * latent * 2 + 4 * 4, out_channels=4 * latent,
                                         num_layers=1, num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                         axes_dims_rope=[4, 4, 8])
    clip = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, pad_token_id=1,
                                        vocab_size=49408, projection_dim=32))
    words = "a an the of and with photo portrait face hand natural detailed background person".split()  # noqa: SIM905
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"▁{w}", -1.0 - i) for i, w in enumerate(words)]
    pieces += [(c, -30.0) for c in "abcdefghijklmnopqrstuvwxyz,."] + [("▁", -40.0)]
    t5_tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=64)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                 num_heads=4, decoder_start_token_id=0))
    pipe = FluxFillPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip,
                            tokenizer=clip_tokenizer(), text_encoder_2=t5, tokenizer_2=t5_tokenizer,
                            transformer=transformer)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_ip_adapter(pipeline: Path, target: Path, seed: int = 0) -> tuple[Path, Path]:
    """A random IP-Adapter for the tiny pipeline in ``pipeline`` (ComfyUI's single-file layout: ``image_proj.*``
    and ``ip_adapter.*`` keys) and a tiny CLIP image encoder as one transformers-layout ``.safetensors`` file
    (as ComfyUI keeps them in ``clip_vision/``).  Returns (adapter file, encoder file)."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    g = torch.Generator().manual_seed(seed)
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # Width 768: a known tower's width, so the head count (12) is read from it as from a real file.
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=768, intermediate_size=37, num_attention_heads=12, num_hidden_layers=2, image_size=32,
        patch_size=8, projection_dim=16, hidden_act="quick_gelu"))
    encoder_file = target / "tiny-clip-vision.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(encoder_file))
    unet = UNet2DConditionModel.from_pretrained(pipeline / "unet")
    cross = unet.config.cross_attention_dim
    weights = {"image_proj.proj.weight": torch.randn(cross * 4, 16, generator=g) * 0.2,
               "image_proj.proj.bias": torch.zeros(cross * 4),
               "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        inner = unet.get_submodule(name.removesuffix(".processor")).to_k.weight.shape[0]
        for part in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{key}.{part}.weight"] = torch.randn(inner, cross, generator=g) * 0.5
        key += 2
    adapter_file = target / "tiny-ip-adapter-face.safetensors"
    save_file(weights, str(adapter_file))
    return adapter_file, encoder_file
