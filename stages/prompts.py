"""The generation prompt an image carries: the texts of its generation record (stages/generation.py).

Repaints put it in their prompt templates (``{prompt}``) and add its negative to theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from stages import generation


@dataclass(frozen=True)
class FoundPrompt:
    positive: str
    negative: str
    source: str  # the tool that wrote it: "a1111", "forge", "comfyui", "fooocus", …


def fill(prompt: str, negative: str, found: FoundPrompt | None) -> tuple[str, str]:
    """A prompt template with the image's own prompt in ``{prompt}``, and the negative with the image's own
    negative added: (prompt, negative)."""
    own = found.negative if found is not None else ""
    return (prompt.replace("{prompt}", found.positive if found is not None else "").strip(" ,"),
            ", ".join(p for p in (negative, own) if p))


def of(record: generation.Generation | None) -> FoundPrompt | None:
    """The prompt of a generation record, or None when it has no text."""
    if record is None or not (record.positive or record.negative):
        return None
    return FoundPrompt(record.positive, record.negative, record.tool)


def from_image(image: Image.Image) -> FoundPrompt | None:
    return of(generation.read(image))
