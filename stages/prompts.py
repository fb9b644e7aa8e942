"""The generation prompt an image carries, read from its metadata (untrusted, size-limited).

* A1111 / Forge / SD.Next: a PNG text chunk ``parameters``: the prompt, then
  ``Negative prompt: …``, then a line of settings (``Steps: 30, Sampler: …``).
* ComfyUI: a PNG text chunk ``prompt`` holding the workflow's API JSON: the
  texts of the ``CLIPTextEncode`` nodes wired to a sampler's ``positive`` and
  ``negative`` inputs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from PIL import Image

MAX_CHUNK = 64 * 1024  # characters of metadata looked at; anything longer is not a prompt
_SETTINGS = re.compile(r"\n(Steps: \d+.*)$", re.S)


@dataclass(frozen=True)
class FoundPrompt:
    positive: str
    negative: str
    source: str  # "a1111" | "comfyui"


def fill(prompt: str, negative: str, found: FoundPrompt | None) -> tuple[str, str]:
    """A prompt template with the image's own prompt in ``{prompt}``, and the negative with the image's own
    negative added: (prompt, negative)."""
    own = found.negative if found is not None else ""
    return (prompt.replace("{prompt}", found.positive if found is not None else "").strip(" ,"),
            ", ".join(p for p in (negative, own) if p))


def from_image(image: Image.Image) -> FoundPrompt | None:
    info = getattr(image, "text", None) or image.info
    params = info.get("parameters")
    if isinstance(params, str) and 0 < len(params) <= MAX_CHUNK:
        return _a1111(params)
    workflow = info.get("prompt")
    if isinstance(workflow, str) and 0 < len(workflow) <= MAX_CHUNK:
        return _comfyui(workflow)
    return None


def _a1111(text: str) -> FoundPrompt | None:
    text = _SETTINGS.sub("", text.strip())
    positive, sep, negative = text.partition("Negative prompt:")
    positive, negative = positive.strip(), negative.strip() if sep else ""
    return FoundPrompt(positive, negative, "a1111") if positive or negative else None


def _comfyui(text: str) -> FoundPrompt | None:
    try:
        graph = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(graph, dict):
        return None

    def encoded_text(ref) -> str:
        # An input wired to another node is [node_id, output_index].
        if not (isinstance(ref, list) and ref and str(ref[0]) in graph):
            return ""
        node = graph[str(ref[0])]
        if not isinstance(node, dict):
            return ""
        inputs = node.get("inputs", {}) if isinstance(node.get("inputs"), dict) else {}
        if node.get("class_type", "").startswith("CLIPTextEncode"):
            value = inputs.get("text", inputs.get("text_g", ""))
            return value if isinstance(value, str) else encoded_text(value)
        # Pass-through nodes (conditioning combiners, concat): follow their first conditioning input.
        for key in ("conditioning", "conditioning_1", "conditioning_to"):
            if key in inputs:
                return encoded_text(inputs[key])
        return ""

    for node in graph.values():
        if not isinstance(node, dict) or "Sampler" not in str(node.get("class_type", "")):
            continue
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            continue
        positive, negative = encoded_text(inputs.get("positive")), encoded_text(inputs.get("negative"))
        if positive or negative:
            return FoundPrompt(positive.strip(), negative.strip(), "comfyui")
    return None
