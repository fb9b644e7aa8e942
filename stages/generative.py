"""The one way inpaint and outpaint acquire a generative engine.

``acquire`` resolves the model settings (``stages/models.py``), picks the device
and dtype, and returns the loaded engine, shared between stages: one generative
model is held in memory at a time (``stages/held.py``).  A model that
cannot be found or loaded raises ``ModelUnavailable`` with a reason that names the
setting the user set; the runner records it as the stage's skip reason.
"""

from __future__ import annotations

from stages.device import pick_device, pick_dtype
from stages.models import Models, ModelSetting, ModelUnavailable


def acquire(models: Models, model: ModelSetting, config: ModelSetting | None, device: str):
    """The engine for ``model`` (with ``config`` for a single file of another family), on ``device``."""
    from stages.diffusion import engine  # torch: imported by a job that runs the model

    try:
        resolved = models.resolve(model)
        resolved_config = models.resolve(config) if config is not None and config.value else None
    except FileNotFoundError as exc:
        raise ModelUnavailable(str(exc)) from None
    where = pick_device(device)
    try:
        return engine.get(resolved, resolved_config, where, pick_dtype(where, "auto"), models.cache)
    except MemoryError:
        raise  # not the model's fault: the attempt is retried
    except FileNotFoundError as exc:
        raise ModelUnavailable(str(exc)) from None
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, on a busy GPU: retried like any other attempt
            raise
        raise ModelUnavailable(f"{model.setting} = {model.value!r} could not be loaded: "
                               f"{type(exc).__name__}: {exc}") from exc
