"""The sampler an image was generated with, as a diffusers scheduler: A1111/Forge names (with Forge's and newer
A1111's ``Schedule type``), ComfyUI's ``sampler_name`` + ``scheduler`` (which Fooocus and SwarmUI write too),
InvokeAI's and NovelAI's names.  The table is the README's ("Samplers"); a name it does not hold, or one
diffusers has no scheduler for, keeps the model's own scheduler, and the reason is recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# sampler (normalised) → (diffusers scheduler class, its options)
SAMPLERS: dict[str, tuple[str, dict]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpm++ 2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++ 2m sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpm++ 3m sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "dpm++ sde": ("DPMSolverSDEScheduler", {}),
    "dpm++ 2s a": ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddim": ("DDIMScheduler", {}),
    "plms": ("PNDMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
}
# Other tools' names for the same samplers.
ALIASES = {
    "euler_ancestral": "euler a", "euler_a": "euler a", "dpm_2": "dpm2", "dpm_2_ancestral": "dpm2 a",
    "kdpm_2": "dpm2", "kdpm_2_a": "dpm2 a", "dpmpp_2m": "dpm++ 2m", "dpmpp_2m_sde": "dpm++ 2m sde",
    "dpmpp_3m_sde": "dpm++ 3m sde", "dpmpp_sde": "dpm++ sde", "dpmpp_2s_ancestral": "dpm++ 2s a",
    "dpmpp_2s": "dpm++ 2s a", "uni_pc": "unipc", "uni_pc_bh2": "unipc", "dpmpp_3m": "dpm++ 3m sde",
    "ddim_uniform": "ddim",
}
# A schedule → the scheduler's options.
SCHEDULES: dict[str, dict] = {
    "automatic": {}, "normal": {}, "simple": {}, "uniform": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sgm uniform": {"timestep_spacing": "trailing"},
}
# The "warnings" a sampler's name carries: A1111 samplers diffusers has no counterpart for.
UNMATCHED = {"dpm fast", "dpm adaptive", "restart", "lcm karras", "euler cfg++", "euler a cfg++"}


@dataclass(frozen=True)
class Choice:
    """The scheduler to repaint with: ``cls`` None keeps the model's own (``reason`` says why)."""

    cls: str | None
    options: dict = field(default_factory=dict)
    reason: str = ""

    @property
    def label(self) -> str:
        if self.cls is None:
            return "the model's own"
        extra = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return self.cls + (f" ({extra})" if extra else "")


def _normal(name: str) -> str:
    n = name.strip().lower()
    n = re.sub(r"^k_", "", n)               # NovelAI: k_euler_ancestral
    n = re.sub(r"_gpu$", "", n)             # ComfyUI: dpmpp_2m_sde_gpu
    return ALIASES.get(n, n)


def choose(sampler: str | None, schedule: str | None = None) -> Choice:
    """The diffusers scheduler for a sampler and schedule as any of the tools name them."""
    if not sampler:
        return Choice(None, reason="the image names no sampler")
    name = _normal(sampler)
    sched = (schedule or "").strip().lower().replace("_", " ")
    if name not in SAMPLERS:  # A1111 before Schedule type, InvokeAI: the schedule in the name
        for suffix, key in ((" karras", "karras"), ("_k", "karras"), (" exponential", "exponential"),
                            (" sgm uniform", "sgm uniform")):
            base = _normal(name.removesuffix(suffix)) if name.endswith(suffix) else None
            if base in SAMPLERS:
                name, sched = base, sched or key
                break
    if name not in SAMPLERS:
        why = "has no diffusers counterpart" if name in UNMATCHED else "is not one polishd knows"
        return Choice(None, reason=f"sampler {sampler!r} {why}")
    cls, options = SAMPLERS[name]
    if sched and sched not in SCHEDULES:
        return Choice(cls, dict(options), f"schedule {schedule!r} is not one polishd knows: the sampler's default")
    return Choice(cls, {**options, **SCHEDULES.get(sched, {})}, CLOSE.get(name, ""))


@dataclass(frozen=True)
class Sampling:
    """How a repaint samples besides steps and CFG: the scheduler, and A1111's clip skip (2 = the
    penultimate layer)."""

    scheduler: Choice | None = None
    clip_skip: int | None = None
    embeddings: tuple = ()  # (name, vectors per text encoder) of the prompt's textual inversions, for this call only
    vae: object = None      # the image's own VAE (a loaded AutoencoderKL), decoding this call only
    identity: object = None  # an IP-Adapter and the face's crop (``identity.Identity``), this call only


# Where the counterpart is close rather than the same, the record says so.
CLOSE = {"dpm++ 2s a": "diffusers has no ancestral single-step DPM++: its single-step solver, without the noise"}


def build(choice: Choice, config: dict):
    """(the scheduler of ``choice`` built from a pipeline's scheduler config, what it could not take), or
    ValueError with the reason when this diffusers cannot build it (DPM++ SDE needs the torchsde package)."""
    import inspect

    import diffusers

    cls = getattr(diffusers, choice.cls or "", None)
    if cls is None:
        raise ValueError(f"{choice.cls} is not in this diffusers")
    takes = set(inspect.signature(cls.__init__).parameters)
    known = len(takes) > 2  # a wrapped __init__ shows nothing: then its options are passed and trusted
    dropped = [k for k in choice.options if known and k not in takes]
    try:
        scheduler = cls.from_config(config, **{k: v for k, v in choice.options.items() if k not in dropped})
    except (ImportError, OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{choice.cls} cannot be built here ({exc})") from None
    if cls.__name__ == "DPMSolverSDEScheduler":  # builds, then needs torchsde at the first step
        import importlib.util

        if importlib.util.find_spec("torchsde") is None:
            raise ValueError("DPMSolverSDEScheduler needs the torchsde package (pip install torchsde)")
    return scheduler, dropped
