"""99 — contact sheet: what the pipeline did to one image, side by side, for a person to review.

``99-contact.jpg``: the original, the detections, each later snapshot that is a
picture of the whole image (inpainted, variants, upscaled), each scaled to one
height and labelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from daemon.config import ContactConfig
from stages.base import JobContext, Stage, StageResult, from_section

@dataclass(frozen=True)
class ContactParams(ContactConfig):
    pass


class ContactSheetStage(Stage):
    name = "contact"
    prefix = "99"

    def params(self, ctx: JobContext) -> ContactParams:
        return from_section(ContactParams, ctx.config.contact)

    def panels(self, ctx: JobContext) -> list[tuple[str, str]]:
        """(archive name, label) in review order; masks are left out (the detections show the boxes)."""
        a = ctx.artifacts
        out = [(a["image"], "original")]
        if "detections" in a:
            out.append((a["detections"], "detections"))
        if "inpainted" in a:
            out.append((a["inpainted"], "inpainted"))
        out += [(name, f"variant {key.removeprefix('variant-')}") for key, name in sorted(a.items())
                if key.startswith("variant-")]
        if "upscaled" in a:
            out.append((a["upscaled"], "upscaled"))
        return out

    def run(self, ctx: JobContext, params: ContactParams) -> StageResult:
        height, pad = params.height, max(4, params.height // 48)
        font = ImageFont.load_default(size=max(12, height // 20))
        tiles = []
        for name, label in self.panels(ctx):
            with Image.open(ctx.path(name)) as im:
                size = im.size
                im = im.convert("RGB")
                im.thumbnail((height * 4, height), Image.Resampling.LANCZOS)
                tiles.append((im, f"{label}  {size[0]}x{size[1]}"))  # the default font has no "×"
        label_h = font.size + 2 * pad
        width = sum(t.width for t, _ in tiles) + pad * (len(tiles) + 1)
        sheet = Image.new("RGB", (width, height + label_h + 2 * pad), (28, 28, 28))
        draw = ImageDraw.Draw(sheet)
        x = pad
        for im, label in tiles:
            sheet.paste(im, (x, pad + (height - im.height) // 2))
            draw.text((x, height + 2 * pad), label, fill=(235, 235, 235), font=font)
            x += im.width + pad
        name = f"{self.prefix}-contact.jpg"
        ctx.archive.save_image(name, sheet, quality=88)
        return StageResult(outputs=[name], summary=f"{len(tiles)} panels")
