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

    from stages.diffusion import weighting
    from tests.test_inpaint import _job

    seen, skips = [], []
    real, real_embeddings = diffusers.StableDiffusionInpaintPipeline.__call__, weighting.embeddings

    def spy(self, *a, **k):
        seen.append((type(self.scheduler).__name__, k.get("num_inference_steps"), k.get("guidance_scale"),
                     skips[-1]))
        return real(self, *a, **k)

    def embeddings(pipe, prompt, negative, clip_skip=1):
        skips.append(clip_skip)
        return real_embeddings(pipe, prompt, negative, clip_skip)
    monkeypatch.setattr(diffusers.StableDiffusionInpaintPipeline, "__call__", spy)
    monkeypatch.setattr(weighting, "embeddings", embeddings)
    src = _a1111_png(tmp_path / "astro.png", "Steps: 3, Sampler: Euler a, Schedule type: Automatic, "
                                              "CFG scale: 2.5, Seed: 7, Clip skip: 2")
    extra = f'[inpaint]\nmodel = "{tiny_sd}"\nsteps = 4\nguidance = 7.0\nresolution = 64\n'
    if inherit:
        extra += f"[inpaint.face]\ninherit = {inherit}\n"
    _, entry = _job(tmp_path / "run", extra, src)
    region = entry.details.regions[0]
    if inherit is None:
        assert seen[0] == ("EulerAncestralDiscreteScheduler", 3, 2.5, 2)  # A1111's clip skip 2
        assert region.inherited == ["steps", "cfg", "sampler", "clip_skip"]
        assert region.sampler == "EulerAncestralDiscreteScheduler" and (region.steps, region.guidance) == (3, 2.5)
        assert entry.details.from_image == ["positive", "negative", "cfg", "clip_skip", "sampler", "steps"]
    else:  # the face told to take nothing: [inpaint]'s own
        assert seen[0] == ("PNDMScheduler", 4, 7.0, 1)
        assert region.inherited == [] and region.sampler is None
