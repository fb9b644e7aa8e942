"""99 — contact sheet: what the pipeline did to one image, side by side, for a person to review.

``99-contact.jpg``: the upright original, the detections, each later snapshot that
is a picture of the whole image (inpainted, variants, upscaled), each scaled to one
height and labelled.  Transparent areas show over grey; the sheet carries the
source's colour profile like every other picture.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from stages.base import JobContext, Stage, StageResult, from_section
from stages.picture import SIXTEEN, flatten, view
from stages.products import Picture, Products, Slot
from stages.schema import Errors


@dataclass(frozen=True)
class ContactConfig:
    enabled: bool = True
    height: int = 384

    def check(self, err: Errors) -> None:
        err.between("height", self.height, 64, 4096)


@dataclass(frozen=True)
class ContactParams(ContactConfig):
    pass


class ContactSheetStage(Stage):
    name = "contact"
    prefix = "99"
    Config = ContactConfig
    consumes = frozenset({Slot.SOURCE, Slot.DETECTIONS, Slot.MASTER, Slot.VARIANTS, Slot.UPSCALED})
    produces = frozenset()

    def params(self, config) -> ContactParams:
        return from_section(ContactParams, config.contact)

    def run(self, ctx: JobContext, params: ContactParams) -> StageResult:
        height, pad = params.height, max(4, params.height // 48)
        font = ImageFont.load_default(size=max(12, height // 20))
        tiles = []
        shown = panels(ctx.products)
        for n, (picture, label) in enumerate(shown):
            ctx.check_stop(n, len(shown), "panels")
            with Image.open(ctx.path(picture.name)) as im:
                size = im.size
                im.draft("RGB", (height * 4, height))  # a JPEG decodes at a reduced size where it can
                panel = flatten(view(im).image()) if im.mode in ("RGBA", "LA", "PA", "P", *SIXTEEN) \
                    else im.convert("RGB")
            panel.thumbnail((height * 4, height), Image.Resampling.LANCZOS)
            tiles.append((panel, f"{label}  {size[0]}x{size[1]}"))  # the default font has no "×"
        label_h = font.size + 2 * pad
        width = sum(t.width for t, _ in tiles) + pad * (len(tiles) + 1)
        sheet = Image.new("RGB", (width, height + label_h + 2 * pad), (28, 28, 28))
        draw = ImageDraw.Draw(sheet)
        x = pad
        for im, label in tiles:
            sheet.paste(im, (x, pad + (height - im.height) // 2))
            draw.text((x, height + 2 * pad), label, fill=(235, 235, 235), font=font)
            x += im.width + pad
        name = ctx.save_picture(f"{self.prefix}-contact.jpg", sheet, quality=88)
        return StageResult(outputs=[name], summary=f"{len(tiles)} panels")


def panels(p: Products) -> list[tuple[Picture, str]]:
    """(picture, label) in review order; masks are left out (the detections show the boxes)."""
    out = [(p.source.picture, "original")]
    if p.detections is not None:
        out.append((p.detections.picture, "detections"))
    if p.master is not None and p.master != p.source.picture:
        out.append((p.master, p.master.caption or "master"))
    out += [(v.picture, f"variant {v.label}") for v in sorted(p.variants or (), key=lambda v: v.label)]
    upscaled = sorted((u for u in p.upscaled or () if not u.engine), key=lambda u: u.source != "master")
    if upscaled:
        out.append((upscaled[0].picture, "upscaled"))
    return out
