"""The image's own sampler, steps, CFG and clip skip: the name table, and a repaint that really uses them."""

from __future__ import annotations

import json

import pytest
from PIL import Image, PngImagePlugin

from stages.diffusion import samplers
from tests.conftest import DATA


@pytest.mark.parametrize("sampler, schedule, cls, options", [
    ("DPM++ 2M", "Karras", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                           "use_karras_sigmas": True}),
    ("DPM++ 2M Karras", None, "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                              "use_karras_sigmas": True}),  # A1111 before 1.9
    ("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {}),
    ("dpmpp_2m_sde_gpu", "karras", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++",
                                                                   "solver_order": 2, "use_karras_sigmas": True}),
    ("euler", "sgm_uniform", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),  # ComfyUI
    ("dpmpp_2m_k", None, "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                         "use_karras_sigmas": True}),  # InvokeAI
    ("k_euler_ancestral", None, "EulerAncestralDiscreteScheduler", {}),  # NovelAI
    ("UniPC", "Exponential", "UniPCMultistepScheduler", {"use_exponential_sigmas": True}),
    ("DDIM", None, "DDIMScheduler", {}),
])
def test_sampler_names_of_every_tool_map_to_their_diffusers_scheduler(sampler, schedule, cls, options):
    choice = samplers.choose(sampler, schedule)
    assert (choice.cls, choice.options, choice.reason) == (cls, options, "")


def test_samplers_without_a_counterpart_keep_the_models_own_with_the_reason():
    assert samplers.choose("DPM adaptive").reason == "sampler 'DPM adaptive' has no diffusers counterpart"
    assert samplers.choose("my_custom_sampler").cls is None
    assert samplers.choose(None).reason == "the image names no sampler"
    odd = samplers.choose("Euler", "Align Your Steps")
    assert odd.cls == "EulerDiscreteScheduler" and "not one polishd knows" in odd.reason
    assert "single-step" in samplers.choose("DPM++ 2S a").reason  # close, and the record says how


def test_every_mapped_scheduler_builds_from_an_sd_scheduler_config_or_says_why(tiny_sd):
    config = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    for name in samplers.SAMPLERS:
        choice = samplers.choose(name, "karras")
        try:
            scheduler, dropped = samplers.build(choice, config)
        except ValueError as exc:  # a scheduler that needs a package this install lacks names it
            assert (name, "torchsde") in [("dpm++ sde", "torchsde")] and "torchsde" in str(exc) or \
                (name == "lms" and "scipy" in str(exc)), str(exc)
            continue
        assert type(scheduler).__name__ == choice.cls
        assert scheduler.config.num_train_timesteps == config["num_train_timesteps"]  # the model's own betas
        if "use_karras_sigmas" not in dropped and "use_karras_sigmas" in scheduler.config:
            assert scheduler.config.use_karras_sigmas is True


def _a1111_png(path, settings: str):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"an astronaut portrait\nNegative prompt: ugly\n{settings}")
    Image.open(DATA / "astronaut.png").save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("inherit", [None, "[]"])
def test_a_repaint_uses_the_images_own_sampler_steps_cfg_and_clip_skip(tmp_path, tiny_sd, monkeypatch, inherit):
    import diffusers

    from tests.test_inpaint import _job

    seen = []
    real = diffusers.StableDiffusionInpaintPipeline.__call__

    def spy(self, *a, **k):
        seen.append((type(self.scheduler).__name__, k.get("num_inference_steps"), k.get("guidance_scale"),
                     k.get("prompt_embeds") is not None))
        return real(self, *a, **k)
    monkeypatch.setattr(diffusers.StableDiffusionInpaintPipeline, "__call__", spy)
    src = _a1111_png(tmp_path / "astro.png", "Steps: 3, Sampler: Euler a, Schedule type: Automatic, "
                                              "CFG scale: 2.5, Seed: 7, Clip skip: 2")
    extra = f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 4\nguidance = 7.0\nresolution = 64\n'
    if inherit:
        extra += f"[inpaint.face]\ninherit = {inherit}\n"
    _, entry = _job(tmp_path / "run", extra, src)
    region = entry.details.regions[0]
    if inherit is None:
        assert seen[0] == ("EulerAncestralDiscreteScheduler", 3, 2.5, True)  # clip skip: our own embeddings
        assert region.inherited == ["steps", "cfg", "sampler", "clip_skip"]
        assert region.sampler == "EulerAncestralDiscreteScheduler" and (region.steps, region.guidance) == (3, 2.5)
        assert entry.details.from_image == ["positive", "negative", "cfg", "clip_skip", "sampler", "steps"]
    else:  # the face told to take nothing: [inpaint]'s own
        assert seen[0] == ("PNDMScheduler", 4, 7.0, False)
        assert region.inherited == [] and region.sampler is None


def test_clip_skip_embeddings_are_the_layer_a1111_reads(tiny_sd):
    import diffusers
    import torch

    from stages.diffusion.engine import skipped_embeddings

    pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(tiny_sd)
    ids = pipe.tokenizer("a red fox", padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = pipe.text_encoder(ids, output_hidden_states=True)
        own, _ = pipe.encode_prompt("a red fox", "cpu", 1, False)
    one, _ = skipped_embeddings(pipe, "a red fox", "", 1)  # clip skip 1: the last layer, what diffusers gives
    assert torch.allclose(one, own, atol=1e-5)
    two, negative = skipped_embeddings(pipe, "a red fox", "", 2)  # the layer before, through the final norm
    with torch.inference_mode():
        expected = pipe.text_encoder.final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(two, expected, atol=1e-6) and not torch.allclose(two, one)
    assert negative.shape == two.shape
