"""The diffusers inpainting engine: found offline, loaded once, kept by ``stages.held`` ([inpaint].max_loaded).

``[inpaint].model`` may be

* a diffusers folder (``model_index.json`` inside): SD 1.x/2.x inpainting, SDXL inpainting,
  or Flux Fill, whichever pipeline class the folder names (an ordinary text-to-image folder is
  loaded as its inpainting counterpart);
* a single ``.safetensors`` checkpoint in the original (A1111/ComfyUI) layout.  A single file
  holds weights but no configs and no tokenizer, and without ``config=`` diffusers would try to
  download them.  SD 1.x files — inpainting (9-channel UNet) or ordinary (4-channel, inpainted
  the way A1111 does with a normal model) — load with the configs that ship in
  ``configs/sd15-inpaint``, SDXL files (base or inpainting, ε or v-prediction) with those in
  ``configs/sdxl-inpaint``; SD 2.x needs ``model_config``: a diffusers folder of the same family
  whose ``*.json`` configs are used (its weights are never read).
  Missing tokenizers are built offline from the CLIP BPE merges;
* a hub id (``owner/name``) already in the user's Hugging Face cache, loaded with
  ``HF_HUB_OFFLINE=1``.

Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import torch
from PIL import Image

from stages.checkpoints import SHIPPED_CONFIGS, Checkpoint, describe
from stages.device import dtype_name
from stages.diffusion import weighting
from stages.diffusion.tokenizer import write_tokenizer
from stages.files import read_weights, sha256_file
from stages.held import OWNER
from stages.models import ModelNotFound, Resolved

log = structlog.get_logger("polishd.diffusion")

CONFIGS = Path(__file__).parent / "configs"
NATIVE_SIZE = {"StableDiffusionInpaintPipeline": 512, "StableDiffusionXLInpaintPipeline": 1024,
               "FluxFillPipeline": 1024}


SINGLE_FILE_PIPELINES = ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline")


def inspect_checkpoint(path: Path) -> Checkpoint:
    """What a single-file checkpoint is, from its header alone (``stages.checkpoints.describe``)."""
    try:
        return describe(path)
    except ValueError as exc:
        raise ModelNotFound(str(exc)) from None


# Pipelines whose prompts polishd encodes itself, as A1111 does (weights, BREAK, chunks, clip skip); SDXL's
# two encoders and Flux's T5 take the pipeline's own encoding.
WEIGHTED = ("StableDiffusionInpaintPipeline", "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
             "StableDiffusionControlNetInpaintPipeline")


@dataclass
class Engine:
    spec: str
    pipe: object
    device: torch.device
    dtype: torch.dtype
    name: str
    sha256: str
    native: int
    last_used: float = 0.0
    model_config: str = ""
    asked: torch.dtype | None = None  # the dtype asked for (``dtype`` is what it runs in)
    controlled: dict = field(default_factory=dict)  # ControlNet spec → this pipeline's ControlNet counterpart
    schedulers: dict = field(default_factory=dict)  # a sampler choice's label → its scheduler for this pipeline
    vaes: dict = field(default_factory=dict)  # the last VAE file an image asked for → its model (one kept)
    identities: dict = field(default_factory=dict)  # (IP-Adapter, image encoder) → their weights (one pair kept)

    @property
    def kind(self) -> str:
        return type(self.pipe).__name__

    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str, negative: str, steps: int,
                guidance: float, strength: float, seed: int, callback=None, control=None,
                sampling=None) -> Image.Image:
        """One crop in, the same size out.  ``image``/``mask`` must already be at the working size.
        ``callback(done, total)`` is called after each denoising step.  ``control``: a ``Control`` (a loaded
        ControlNet, its control image at the working size, and its conditioning scale).  ``sampling``: a
        ``samplers.Sampling`` (the image's own scheduler and clip skip), for this call only."""
        self.last_used = time.monotonic()
        # img2img runs int(steps × strength) steps: never let that round down to none.
        steps = max(steps, math.ceil(1 / strength)) if strength > 0 else steps
        generator = torch.Generator(device="cpu").manual_seed(seed)
        args = dict(prompt=prompt, image=image, mask_image=mask, num_inference_steps=steps,
                    guidance_scale=guidance, strength=strength, generator=generator,
                    height=image.height, width=image.width)
        if self.kind != "FluxFillPipeline":
            args["negative_prompt"] = negative or None
        if callback is not None:
            args["callback_on_step_end"] = lambda pipe, step, t, kw: (
                callback(step + 1, getattr(pipe, "num_timesteps", 0) or steps), kw)[1]
        pipe = self.pipe
        if control is not None:
            pipe = self.with_controlnet(control.net)
            args.update(control_image=control.image, controlnet_conditioning_scale=control.scale)
        own, own_vae = pipe.scheduler, pipe.vae
        if sampling is not None and sampling.scheduler is not None and sampling.scheduler.cls:
            pipe.scheduler = self.scheduler(sampling.scheduler)
        if sampling is not None and sampling.vae is not None:
            pipe.vae = sampling.vae
        identity = sampling.identity if sampling is not None else None
        loaded = False
        try:
            if identity is not None:  # the face's own crop conditions the repaint, this call only
                pipe.register_modules(image_encoder=identity.encoder)
                pipe.load_ip_adapter(identity.adapter, subfolder=None, weight_name=identity.name,
                                     image_encoder_folder=None)
                pipe.set_ip_adapter_scale(identity.scale)
                args["ip_adapter_image"] = identity.image
            for name, vectors in sampling.embeddings if sampling is not None else ():
                for (encoder, tokenizer), v in zip(self.text_pairs(pipe), vectors, strict=True):
                    pipe.load_textual_inversion(v, token=name, text_encoder=encoder, tokenizer=tokenizer)
                loaded = True
            if self.kind in WEIGHTED:  # A1111's weights, BREAK, chunks past 75 tokens, clip skip, embeddings
                skip = sampling.clip_skip if sampling is not None and sampling.clip_skip else 1
                positive, negative_embeds, _ = weighting.embeddings(pipe, prompt, negative, skip)
                args.pop("prompt")
                args.pop("negative_prompt", None)
                args.update(prompt_embeds=positive, negative_prompt_embeds=negative_embeds)
            elif self.kind in weighting.XL:  # both encoders, A1111's way; the prompt is no longer cut at 75
                positive, negative_embeds, pooled, negative_pooled, _ = weighting.embeddings_xl(pipe, prompt, negative)
                args.pop("prompt")
                args.pop("negative_prompt", None)
                args.update(prompt_embeds=positive, negative_prompt_embeds=negative_embeds,
                            pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled)
            with torch.inference_mode():
                result = pipe(**args).images[0]
        finally:
            pipe.scheduler, pipe.vae = own, own_vae
            if identity is not None:  # the UNet's own attention back, the encoder out (also after a half load)
                try:
                    pipe.unload_ip_adapter()
                except Exception as exc:  # said: the next image would otherwise be painted with it
                    log.error("the IP-Adapter could not be taken out of the pipeline", error=f"{exc}"[:300])
            if loaded:  # nothing carries over to the next image
                for encoder, tokenizer in self.text_pairs(pipe):
                    pipe.unload_textual_inversion(tokenizer=tokenizer, text_encoder=encoder)
        self.last_used = time.monotonic()
        return result

    def text_pairs(self, pipe=None) -> list[tuple[object, object]]:
        """The (text encoder, tokenizer) pairs a textual inversion goes into: one for SD 1.x/2.x, SDXL's two
        (CLIP ViT-L, then OpenCLIP ViT-bigG); none for a pipeline that takes no embeddings (Flux)."""
        pipe = pipe or self.pipe
        if self.kind in WEIGHTED:
            return [(pipe.text_encoder, pipe.tokenizer)]
        if self.kind in weighting.XL:
            return [(pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)]
        return []

    def embedding(self, path: Path) -> tuple[torch.Tensor, ...]:
        """A textual inversion's vectors for each text encoder (n × its width): ``(vectors,)`` for SD 1.x/2.x,
        ``(clip_l, clip_g)`` for SDXL; read without running code (a ``.safetensors`` file, or a pickle loaded
        tensors-only).  ValueError with the reason otherwise."""
        data = read_weights(path)
        pairs = self.text_pairs()
        if len(pairs) == 2:  # SDXL embeddings hold a part for each encoder
            if not (isinstance(data, dict) and isinstance(data.get("clip_l"), torch.Tensor)
                    and isinstance(data.get("clip_g"), torch.Tensor)):
                raise ValueError(f"{path.name} is not an SDXL embedding (it has no clip_l and clip_g vectors)")
            parts = (data["clip_l"], data["clip_g"])
        else:
            if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):  # A1111's .pt
                data = data["string_to_param"].get("*")
            elif isinstance(data, dict) and "emb_params" in data:  # A1111's .safetensors
                data = data["emb_params"]
            elif isinstance(data, dict) and len(data) == 1:  # diffusers' {token: vectors}
                data = next(iter(data.values()))
            parts = (data,)
        out = []
        for (encoder, _), vectors in zip(pairs, parts, strict=False):
            width = encoder.get_input_embeddings().weight.shape[1]
            if not isinstance(vectors, torch.Tensor) or vectors.ndim not in (1, 2) or vectors.shape[-1] != width:
                raise ValueError(f"{path.name} is not an embedding for this model (it needs vectors of {width})")
            out.append(vectors.reshape(-1, width).to(encoder.dtype))
        if len(out) != len(pairs) or (len(out) == 2 and out[0].shape[0] != out[1].shape[0]):
            raise ValueError(f"{path.name} is not an embedding for this model")
        return tuple(out)

    def vae(self, path: Path):
        """The VAE in ``path`` (A1111/ComfyUI layout or diffusers'), built on this pipeline's own VAE config
        and read without running code (``.safetensors``, or a pickle loaded tensors-only); the last one asked
        for is kept.  ValueError with the reason when it cannot be read or is not a VAE for this model."""
        key = str(path)
        if key in self.vaes:
            return self.vaes[key]
        from diffusers import AutoencoderKL
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = read_weights(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path.name} holds no VAE weights")
        config = dict(self.pipe.vae.config)
        if not any(k.startswith(("decoder.up_blocks.", "encoder.down_blocks.")) for k in state):
            state = convert_ldm_vae_checkpoint(state, config)  # the original (A1111/ComfyUI) layout
        model = AutoencoderKL.from_config(config)
        try:
            missing, _ = model.load_state_dict(state, strict=False)
        except RuntimeError:  # a tensor of another shape: another family's VAE
            raise ValueError(f"{path.name} is not a VAE for this model (its weights have other shapes)") from None
        if missing:
            raise ValueError(f"{path.name} is not a VAE for this model ({len(missing)} of its weights missing)")
        model.to(self.device, self.pipe.vae.dtype).eval()
        self.vaes.clear()
        self.vaes[key] = model
        log.info("image's VAE loaded", vae=path.name)
        return model

    def identity_parts(self, adapter: Path, encoder: Path) -> tuple[dict, object]:
        """An IP-Adapter's weights and its image encoder, read once (the last pair asked for is kept).
        ValueError with the reason when either cannot be read, or the pipeline takes no IP-Adapter."""
        from stages.diffusion import identity

        if not hasattr(self.pipe, "load_ip_adapter") or self.kind.startswith("Flux"):
            raise ValueError(f"{self.kind} takes no IP-Adapter here (SD 1.x/2.x and SDXL do)")
        key = (str(adapter), str(encoder))
        if key not in self.identities:
            parts = identity.read_adapter(adapter), identity.read_encoder(encoder, self.device, self.dtype)
            self.identities.clear()
            self.identities[key] = parts
            log.info("IP-Adapter read", adapter=adapter.name, encoder=encoder.name)
        return self.identities[key]

    def apply_loras(self, uses) -> tuple[list[str], list[str]]:
        """LoRAs (``stages.loras.Use``) loaded into the pipeline through diffusers' reader (kohya/A1111 and
        diffusers/PEFT files) at their UNet and text-encoder weights, until ``clear_loras``.  (loaded names,
        problems): one that cannot be loaded is left out, with the reason."""
        loaded, problems = [], []
        for n, use in enumerate(uses):
            adapter = f"polishd{n}"
            try:
                self.pipe.load_lora_weights(str(use.path), adapter_name=adapter)
            except Exception as exc:  # a broken file, another model's LoRA, peft missing: painted without it
                problems.append(f"LoRA {use.name}: could not be loaded ({type(exc).__name__}: {exc})"[:400])
                with contextlib.suppress(Exception):  # nothing of it may have been loaded
                    self.pipe.delete_adapters(adapter)
                continue
            loaded.append((adapter, use))
        if loaded:
            present = self.pipe.get_list_adapters()
            # the denoiser's weight (SD's UNet, Flux's transformer) and the text encoders' own
            weights = [{part: (use.weight if part in ("unet", "transformer") else use.te_weight)
                        for part, names in present.items() if adapter in names} for adapter, use in loaded]
            self.pipe.set_adapters([a for a, _ in loaded], adapter_weights=weights)
        return [use.name for _, use in loaded], problems

    def clear_loras(self) -> None:
        """Every LoRA out of the pipeline: the next region paints as if none had been loaded."""
        if getattr(self.pipe, "get_list_adapters", None) is not None and any(self.pipe.get_list_adapters().values()):
            self.pipe.unload_lora_weights()

    def scheduler(self, choice):
        """The pipeline's scheduler as ``choice`` (a ``samplers.Choice``) makes it, built once per choice."""
        from stages.diffusion import samplers

        if choice.label not in self.schedulers:
            self.schedulers[choice.label] = samplers.build(choice, self.pipe.scheduler.config)[0]
        return self.schedulers[choice.label]

    def with_controlnet(self, net: ControlNet):
        """This pipeline's ControlNet inpainting counterpart, sharing every component (built once per net)."""
        import diffusers

        if net.spec not in self.controlled:
            kinds = {"StableDiffusionInpaintPipeline": "StableDiffusionControlNetInpaintPipeline",
                     "StableDiffusionXLInpaintPipeline": "StableDiffusionXLControlNetInpaintPipeline"}
            if self.kind not in kinds:
                raise ModelNotFound(f"a ControlNet guides SD 1.x/2.x and SDXL inpainting; {self.kind} takes none")
            pipe = getattr(diffusers, kinds[self.kind]).from_pipe(self.pipe, controlnet=net.model)
            pipe.set_progress_bar_config(disable=True)
            self.controlled.clear()  # one at a time
            self.controlled[net.spec] = pipe
        return self.controlled[net.spec]


@dataclass
class ControlNet:
    spec: str
    model: object
    name: str
    sha256: str


@dataclass(frozen=True)
class Control:
    net: ControlNet
    image: Image.Image
    scale: float


def controlnet(model: Resolved, config: Resolved | None, device: torch.device, dtype: torch.dtype) -> ControlNet:
    """A ControlNet from a diffusers folder, or a single file with the configs of ``config`` (a diffusers
    ControlNet folder of the same family, whose config.json is read); loaded once, offline, and held by
    ``stages.held`` (one at a time, beside the generative model it guides)."""
    path = model.path
    return OWNER.get("controlnet", (str(path), str(device), dtype),
                     lambda: _load_controlnet(model, config, device, dtype))


def _load_controlnet(model: Resolved, config: Resolved | None, device: torch.device,
                     dtype: torch.dtype) -> ControlNet:
    import diffusers

    path = model.path
    if path.is_dir():
        net = diffusers.ControlNetModel.from_pretrained(path, dtype=dtype, local_files_only=True)
        digest = _folder_digest(path)
    else:
        if config is None:
            raise ModelNotFound(f"{model.setting.setting} = {model.setting.value!r} is a single file: set "
                                f"{model.setting.setting}_config to a diffusers ControlNet folder of its "
                                "family (only its config.json is read)")
        net = diffusers.ControlNetModel.from_single_file(str(path), config=str(config.path), dtype=dtype,
                                                         local_files_only=True)
        digest = sha256_file(path)
    net.to(device)
    log.info("controlnet loaded", model=model.label, device=str(device))
    return ControlNet(str(path), net, model.label, digest)


def get(model: Resolved, config: Resolved | None, device: torch.device, dtype: torch.dtype, cache: Path) -> Engine:
    """The engine for a resolved model setting, loading it if needed; ``stages.held`` holds it, and unloads the
    one before (with the ControlNet that guided it)."""
    spec = str(model.path) if model.path is not None else model.setting.value
    model_config = str(config.path) if config is not None else ""
    return OWNER.get("diffusion", (spec, model_config, str(device), dtype),
                     lambda: _load(model, config, device, dtype, cache), _unloaded)


def _unloaded(engine: Engine) -> None:
    OWNER.drop("controlnet")  # goes with the model it guided
    log.info("generative model unloaded", model=engine.name)


def unload_if_idle(idle_seconds: float) -> bool:
    return OWNER.drop_idle("diffusion", idle_seconds)


def unload() -> None:
    OWNER.drop("diffusion")
    OWNER.drop("controlnet")


def config_folder(path: Path, config: Resolved | None,
                  setting: str = "[inpaint].model_config") -> tuple[Path, Checkpoint]:
    """The folder whose configs describe the single file ``path``, and what the file is."""
    ckpt = inspect_checkpoint(path)
    if (incomplete := ckpt.incomplete()) is not None:
        raise ModelNotFound(f"{path.name} {incomplete}: not a whole checkpoint (a UNet-only or cut file); use the "
                            "full checkpoint")
    if config is not None:
        return config.path, ckpt
    if ckpt.family in SHIPPED_CONFIGS:
        return CONFIGS / SHIPPED_CONFIGS[ckpt.family], ckpt
    what = {"sd2": "an SD 2.x", "flux": "a full Flux"}.get(ckpt.family, "an unrecognised")
    hint = ("polishd paints with Flux Fill from its diffusers folder (FLUX.1-Fill-dev): point the model setting "
            "at that folder" if ckpt.family == "flux" else
            f"set {setting} to a diffusers folder of the same family (only its .json configs are read)")
    raise ModelNotFound(f"{path.name} is {what} checkpoint; polishd ships configs for SD 1.x and SDXL: {hint}")


def _load(model: Resolved, config: Resolved | None, device: torch.device, dtype: torch.dtype,
          cache: Path) -> Engine:
    import diffusers

    t0 = time.monotonic()
    common = dict(dtype=dtype, local_files_only=True)
    path = model.path
    if path is not None and path.is_dir():
        pipe = _from_pretrained(path, json.loads((path / "model_index.json").read_text()), common)
        digest = _folder_digest(path)
    elif path is not None:
        setting = model.setting.setting.replace("].model", "].model_config")
        source, ckpt = config_folder(path, config, setting)
        folder = single_file_config(cache, source, ckpt.in_channels)
        kind = json.loads((folder / "model_index.json").read_text())["_class_name"]
        if kind not in SINGLE_FILE_PIPELINES:
            raise ModelNotFound(f"{path.name}: the configs in {source} are for {kind}; a single file loads as "
                                "an SD 1.x/2.x or SDXL inpainting pipeline")
        extra = dict(safety_checker=None, requires_safety_checker=False) if "XL" not in kind else {}
        pipe = getattr(diffusers, kind).from_single_file(str(path), config=str(folder), **extra, **common)
        if ckpt.v_prediction:  # the file says how it was trained: its configs (made for ε) do not
            import inspect

            cls = type(pipe.scheduler)
            if "rescale_betas_zero_snr" not in inspect.signature(cls.__init__).parameters:
                cls = diffusers.EulerDiscreteScheduler  # what v-prediction checkpoints are sampled with
            pipe.scheduler = cls.from_config(pipe.scheduler.config, prediction_type="v_prediction",
                                             rescale_betas_zero_snr=True, timestep_spacing="trailing")
            log.info("v-prediction checkpoint: sampling as v-prediction with zero terminal SNR", model=path.name)
        digest = sha256_file(path)
    else:
        spec = model.setting.value
        old = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            pipe = _from_pretrained(spec, diffusers.DiffusionPipeline.load_config(spec, local_files_only=True),
                                    common)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"{model.setting.setting} = {spec!r}: not in the Hugging Face cache "
                                f"({exc.__class__.__name__}); polishd never downloads models") from None
        finally:
            if old is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old
        digest = ""
    actual = getattr(pipe, "dtype", dtype)
    if actual != dtype:
        log.info("generative model runs in another dtype than asked", asked=dtype_name(dtype),
                 dtype=dtype_name(actual), pipeline=type(pipe).__name__)
    if hasattr(pipe, "safety_checker"):
        pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    spec = str(path) if path is not None else model.setting.value
    engine = Engine(spec, pipe, device, actual, model.label, digest, NATIVE_SIZE.get(type(pipe).__name__, 512),
                    time.monotonic(), str(config.path) if config is not None else "", asked=dtype)
    log.info("generative model loaded", model=engine.name, pipeline=engine.kind, device=str(device),
             dtype=dtype_name(dtype), seconds=round(time.monotonic() - t0, 2))
    return engine


def _from_pretrained(where, index: dict, common: dict):
    """An inpainting pipeline from a diffusers folder or hub id: the class the folder names when it is
    one of ours (AutoPipeline knows no inpainting task for Flux Fill), else AutoPipeline's inpainting
    counterpart of it (e.g. an ordinary SD or SDXL text-to-image folder)."""
    import diffusers

    name = index.get("_class_name", "")
    common = {**common, "dtype": safe_dtype(name, common["dtype"])}
    if name in NATIVE_SIZE:
        return getattr(diffusers, name).from_pretrained(where, **common)
    return diffusers.AutoPipelineForInpainting.from_pretrained(where, **common)


def safe_dtype(pipeline: str, dtype: torch.dtype) -> torch.dtype:
    """Flux was trained in bf16 and its activations overflow fp16 (black or NaN images): where fp16 was
    picked for speed, a Flux pipeline gets bf16 instead.  SD and SDXL run in fp16 (diffusers keeps
    SDXL's VAE decode in fp32 where its config asks for that)."""
    return torch.bfloat16 if pipeline.startswith("Flux") and dtype == torch.float16 else dtype


def single_file_config(cache: Path, source: Path = CONFIGS / "sd15-inpaint", in_channels: int = 0) -> Path:
    """A config folder for ``from_single_file``, made once in the cache from ``source``: its ``*.json``
    and tokenizer files only (never its weights), with the UNet's input channels set to the
    checkpoint's (an ordinary SD 1.x file has 4, an inpainting one 9) and a CLIP tokenizer built
    offline wherever ``model_index.json`` asks for one that is missing."""
    import hashlib

    files = sorted(f for f in source.rglob("*") if f.is_file() and f.suffix in (".json", ".txt", ".model")
                   and not f.name.endswith(".index.json"))
    key = hashlib.sha256(f"{in_channels}".encode())
    for f in files:  # keyed by content: an edited config folder gets a fresh copy
        key.update(f"{f.relative_to(source)}\0".encode() + f.read_bytes())
    target = cache / "diffusers-configs" / f"{source.name}-{key.hexdigest()[:12]}"
    if (target / "model_index.json").exists():
        return target
    tmp = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in files:
        (tmp / f.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, tmp / f.relative_to(source))
    index = json.loads((tmp / "model_index.json").read_text())
    for name, spec in index.items():
        if isinstance(spec, list) and spec[1:] and "Tokenizer" in str(spec[1]) and not (tmp / name).is_dir():
            # SDXL's second tokenizer is the same BPE, padded with "!" as OpenCLIP pads
            write_tokenizer(tmp / name, pad_token="!" if name == "tokenizer_2" else "<|endoftext|>")
    unet_config = tmp / "unet" / "config.json"
    if in_channels and unet_config.exists():
        unet = json.loads(unet_config.read_text())
        if unet.get("in_channels") != in_channels:
            unet["in_channels"] = in_channels
            unet_config.write_text(json.dumps(unet, indent=2))
    try:
        os.replace(tmp, target)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _folder_digest(path: Path) -> str:
    """A digest of a diffusers folder's weight files (names and sizes: hashing gigabytes per load is waste)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            h.update(f"{f.relative_to(path)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()
