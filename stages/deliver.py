"""50 — deliver: finished files by preset in the outbox, sized, colour-managed, graded, branded, labelled.

For each ``[[deliver.preset]]`` the stage takes its source (the master, or a variant by label; the upscaled
version when there is one), and in this order: fits it to the preset's size, converts it to sRGB through
the source's ICC profile (``colour = "srgb"``) or keeps it, applies the ``.cube`` grade at ``lut_strength``,
lays the logo over it, and encodes it with the metadata the preset asks for.  It writes
``outbox/<archive id>/<stem>-<preset>.<ext>`` (``layout = "flat"``: ``outbox/<stem>-<preset>.<ext>``, with
``-2``, ``-3`` … when another image took the name) atomically, and lists every delivery with its sha256 in
the manifest and in ``50-deliver.json``.

A preset that cannot be made for this image (a variant it does not have, a ``cover`` crop that would cut
into the original composition, a missing logo) fails alone, with the reason; the image still finishes.
A re-delivery writes the same bytes: nothing in a file depends on the time (a signed file is left as it
is when what it signs has not changed).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageCms, ImageColor, ImageFilter, PngImagePlugin

from stages import provenance, records
from stages.base import JobContext, Skipped, Stage, StageResult
from stages.files import Folder, check_user_file, fsync_dir, sha256_file
from stages.picture import ORIENTATION_TAG, opened_for_metadata, view
from stages.products import Products, Slot
from stages.records import DeliverDetails, Delivery, PresetFailure
from stages.schema import Errors

RECORD = "50-deliver.json"
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("polishd")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@dataclass(frozen=True)
class PresetConfig:
    name: str = "master"
    source: str = "master"        # "master" or a variant label ("16x9", "4x5", …)
    size: str = ""                # "1080x1350" (then fit), or "" for long_edge / full size
    fit: Literal["cover", "contain", "exact"] = "cover"
    long_edge: int = 0            # the long side in pixels, keeping the shape (0 = as it is)
    format: Literal["png", "jpeg", "webp"] = "png"
    quality: int = 92             # JPEG and WebP
    colour: Literal["srgb", "keep"] = "srgb"
    metadata: Literal["label", "strip", "keep"] = "label"
    lut: str = ""                 # a .cube 3D LUT (relative to pipeline.toml)
    lut_strength: float = 1.0
    logo: str = ""                # a PNG with alpha (relative to pipeline.toml)
    logo_position: Literal["top-left", "top-right", "bottom-left", "bottom-right", "centre"] = "bottom-right"
    logo_margin: int = 24         # pixels from the edges, at the delivered size
    logo_scale: float = 0.15      # the logo's width as a share of the delivered width
    logo_opacity: float = 0.85
    background: str = "#ffffff"   # contain's bars, and what transparency becomes in a JPEG

    def check(self, err: Errors) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            err.add("name", f"must be 1–64 letters, digits, '_', '.' or '-' (got {self.name!r})")
        if self.size and not re.fullmatch(r"[1-9]\d{0,4}x[1-9]\d{0,4}", self.size):
            err.add("size", f'must look like "1080x1350" (got {self.size!r})')
        if self.size and self.long_edge:
            err.add("long_edge", "cannot be set together with size: one or the other")
        err.between("long_edge", self.long_edge, 0, 65535)
        err.between("quality", self.quality, 1, 100)
        err.between("lut_strength", self.lut_strength, 0.0, 1.0)
        err.between("logo_margin", self.logo_margin, 0, 10000)
        err.between("logo_scale", self.logo_scale, 0.01, 1.0)
        err.between("logo_opacity", self.logo_opacity, 0.0, 1.0)
        try:
            ImageColor.getrgb(self.background)
        except ValueError:
            err.add("background", f'must be a colour such as "#ffffff" (got {self.background!r})')


@dataclass(frozen=True)
class C2paConfig:
    certificate: str = ""         # PEM: the signing certificate, then its CA chain (relative to pipeline.toml)
    private_key: str = ""         # PEM (PKCS#8)
    algorithm: Literal["es256", "es384", "ps256", "ed25519"] = "es256"
    timestamp_url: str = ""       # an RFC 3161 time-stamp authority ("" = none)

    def check(self, err: Errors) -> None:
        if bool(self.certificate) != bool(self.private_key):
            err.add("certificate", "and private_key go together: set both to sign, or neither")


@dataclass(frozen=True)
class DeliverConfig:
    enabled: bool = True
    layout: Literal["per-image", "flat"] = "per-image"
    require_review: bool = False  # deliver only what a reviewer approved
    # A variant made by the infill alone (no generative model): "approved" = once a reviewer approves the image
    # or that variant; "always"; "never"
    infill_variants: Literal["approved", "always", "never"] = "approved"
    input: Literal["auto", "generated", "photo"] = "auto"  # "auto": by the image's metadata and its making
    generator: str = ""           # the generator, when the image's own metadata does not name it
    preset: tuple[PresetConfig, ...] = (PresetConfig(),)
    c2pa: C2paConfig = field(default_factory=C2paConfig)

    def check(self, err: Errors) -> None:
        names = [p.name for p in self.preset]
        for name in sorted({n for n in names if names.count(n) > 1}):
            err.add("preset", f"names {name!r} twice; each preset needs a name of its own")


@dataclass(frozen=True)
class PresetParams(PresetConfig):
    lut_path: str = ""            # resolved, and the file's sha256 (a changed file delivers again)
    lut_sha256: str = ""
    logo_path: str = ""
    logo_sha256: str = ""


@dataclass(frozen=True)
class DeliverParams:
    enabled: bool
    layout: str
    require_review: bool
    input: str
    generator: str
    outbox: str
    infill_variants: str
    presets: tuple[PresetParams, ...]
    c2pa: C2paConfig
    signing: provenance.SigningKey | None
    signing_sha256: str
    software: str


class PresetFailed(Exception):
    """This preset cannot be made for this image; the others can."""


class PresetHeld(Exception):
    """This preset waits for a reviewer: its source is a variant made by the infill alone."""


class DeliverStage(Stage):
    name = "deliver"
    prefix = "50"
    Config = DeliverConfig
    consumes = frozenset({Slot.SOURCE, Slot.REVIEW, Slot.MASTER, Slot.VARIANTS, Slot.UPSCALED})
    produces = frozenset()

    def params(self, config) -> DeliverParams:
        d = config.deliver
        base = config.source.parent if config.source is not None else Path.cwd()
        presets = tuple(_resolved(p, base) for p in d.preset)
        signing, digest = None, ""
        if d.c2pa.certificate:
            cert, key = _path(base, d.c2pa.certificate), _path(base, d.c2pa.private_key)
            signing = provenance.SigningKey(cert, key, d.c2pa.algorithm, d.c2pa.timestamp_url)
            digest = _digest(cert) + _digest(key)
        return DeliverParams(d.enabled, d.layout, d.require_review, d.input, d.generator,
                             str(config.paths.outbox), d.infill_variants, presets, d.c2pa, signing, digest,
                             f"polishd {_version()}")

    def setting_problems(self, params: DeliverParams) -> list[str]:
        files = [(f"[deliver.preset.{p.name}].{key}", path) for p in params.presets
                 for key, path in (("lut", p.lut_path), ("logo", p.logo_path)) if path]
        if params.signing is not None:
            files += [("[deliver.c2pa].certificate", str(params.signing.certificate)),
                      ("[deliver.c2pa].private_key", str(params.signing.private_key))]
        return [f"{where} = {path}: no such file (that preset fails for every image until it is there)"
                for where, path in files if not Path(path).is_file()]

    def skip_reason(self, ctx: JobContext, params: DeliverParams) -> str | None:
        if params.require_review and not (ctx.products.review and ctx.products.review.approved):
            return "waiting for approval ([deliver].require_review = true): delivered once a reviewer approves it"
        return None

    def run(self, ctx: JobContext, params: DeliverParams) -> StageResult | Skipped:
        products = ctx.products
        stem = ctx.stem
        folder = Path(params.outbox) if params.layout == "flat" else Path(params.outbox) / ctx.id
        earlier = _earlier(ctx)
        origin = _origin(ctx, products, params)
        delivered, failed, held = [], [], []
        for n, preset in enumerate(params.presets):
            ctx.check_stop(n, len(params.presets), "presets")
            try:
                _hold_infill_variant(products, preset, params.infill_variants)
                image, frame, source_name = _source(ctx, products, preset)
                made_by = origin.steps_for(source_name, products)
                data, steps = render(image, frame, preset, ctx.icc, made_by, _kept_metadata(ctx, preset))
                rendition = hashlib.sha256(data).hexdigest()
                target = _target(folder, stem, preset, params.layout, earlier.get(preset.name))
                if params.signing is not None and preset.metadata != "strip":
                    data = _signed_unless_unchanged(data, rendition, target, earlier.get(preset.name), preset,
                                                    made_by, steps, ctx, params, stem)
                if data is not None:
                    _write(target, data)
                delivered.append(Delivery(preset.name, str(target), sha256_file(target), source_name,
                                          list(steps["size"]), preset.format, rendition, _label_kind(preset, params),
                                          [what for _, what in steps["done"]]))
            except PresetHeld as exc:
                held.append(PresetFailure(preset.name, str(exc)))
            except (PresetFailed, provenance.SigningError) as exc:  # this preset, for this image: the rest go on
                failed.append(PresetFailure(preset.name, str(exc)))
        record = DeliverDetails(delivered, failed, "signed" if params.signing is not None else
                                "not configured: the XMP label alone ([deliver.c2pa] has no certificate)", held)
        ctx.folder.write_bytes(RECORD, (json.dumps(records.to_json(record), indent=2, ensure_ascii=False)
                                        + "\n").encode())
        summary = f"{len(delivered)} delivered" + (f", {len(failed)} failed" if failed else "") + \
            (f", {len(held)} held for review" if held else "")
        return StageResult(outputs=[RECORD], summary=summary, details=record)


# --------------------------------------------------------------------------- what to deliver


def _resolved(p: PresetConfig, base: Path) -> PresetParams:
    lut = _path(base, p.lut) if p.lut else None
    logo = _path(base, p.logo) if p.logo else None
    return PresetParams(**{k: getattr(p, k) for k in PresetConfig.__dataclass_fields__},
                        lut_path=str(lut or ""), lut_sha256=_digest(lut) if lut else "",
                        logo_path=str(logo or ""), logo_sha256=_digest(logo) if logo else "")


def _path(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


def _digest(path: Path) -> str:
    try:
        return sha256_file(check_user_file(path))
    except OSError:
        return "missing"


def _hold_infill_variant(products: Products, preset: PresetParams, allowed: str) -> None:
    """PresetHeld when the preset's source is a variant the infill alone made and ``[deliver].infill_variants``
    does not let it go (unapproved, or "never")."""
    variant = next((v for v in products.variants or () if v.label == preset.source), None)
    if variant is None or not variant.infill or allowed == "always":
        return
    verdict = products.review
    said = verdict.on_variant(variant.label) if verdict else None
    if allowed == "approved" and said != "reject" and (said == "approve" or (verdict and verdict.approved)):
        return
    how = "never delivered ([deliver].infill_variants = \"never\")" if allowed == "never" else \
        "delivered once a reviewer approves the image or this variant"
    raise PresetHeld(f"variant {variant.label} is the {variant.infill} infill alone (no generative model painted its "
                     f"new area): {how}")


def _source(ctx: JobContext, products: Products, preset: PresetParams) -> tuple[Image.Image, tuple, str]:
    """The picture a preset starts from (upscaled when there is one), the original composition's box in it,
    and its archive name."""
    pick = products.review.pick("upscale") if products.review else None  # an A/B pick, when a reviewer made one
    upscaled = {u.source: u.picture for u in products.upscaled or () if not u.engine}
    upscaled |= {u.source: u.picture for u in products.upscaled or () if pick and u.engine == pick}
    if preset.source == "master":
        picture = upscaled.get("master") or products.master
        base_size = None
        frame_in_base = None
    else:
        variants = {v.label: v for v in products.variants or ()}
        if preset.source not in variants:
            known = ", ".join(sorted(variants)) or "none"
            raise PresetFailed(f"no variant {preset.source!r} for this image (its variants: {known}); "
                               "add it to [outpaint].variants or change the preset's source")
        variant = variants[preset.source]
        picture = upscaled.get(variant.label) or variant.picture
        with Image.open(ctx.path(variant.picture.name)) as im:
            base_size = im.size
        frame_in_base = variant.frame
    with Image.open(ctx.path(picture.name)) as im:
        image = view(im).image()
    if frame_in_base is None:
        frame = (0.0, 0.0, float(image.width), float(image.height))
    else:
        sx, sy = image.width / base_size[0], image.height / base_size[1]
        x0, y0, x1, y1 = frame_in_base
        frame = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    return image, frame, picture.name


# --------------------------------------------------------------------------- the picture


def render(image: Image.Image, frame: tuple, preset: PresetParams, icc: bytes | None, origin: provenance.Origin,
           kept: dict) -> tuple[bytes, dict]:
    """The encoded file for one preset, and what was done (for the manifest and C2PA's actions)."""
    done: list[tuple[str, str]] = []  # (C2PA action, what was done)
    fitted = fit(image, frame, preset)
    if fitted.size != image.size or (preset.size and preset.fit == "cover"):
        cropped = preset.size and preset.fit == "cover" and \
            abs(image.width / image.height - fitted.width / fitted.height) > 1e-3
        if cropped:
            done.append(("c2pa.cropped", f"cropped to {preset.size.replace('x', ':')} (outpainted canvas only)"))
        if fitted.size != image.size:
            done.append(("c2pa.resized", f"resized {image.width}x{image.height} -> {fitted.width}x{fitted.height}"
                                         + (f" ({preset.fit})" if preset.size else "")))
    out, out_icc = fitted, icc
    if preset.colour == "srgb":
        out, converted = to_srgb(out, icc)
        out_icc = SRGB_ICC
        if converted:
            done.append(("c2pa.color_adjustments", "converted to sRGB"))
    if preset.lut_path:
        out = apply_lut(out, read_cube(Path(preset.lut_path)), preset.lut_strength)
        done.append(("c2pa.color_adjustments", f"graded with {Path(preset.lut_path).name} at "
                                               f"{preset.lut_strength:g}"))
    if preset.logo_path:
        out = lay_logo(out, _read_logo(Path(preset.logo_path)), preset)
        done.append(("c2pa.placed", f"logo {Path(preset.logo_path).name} {preset.logo_position}"))
    data = encode(out, preset, out_icc, origin, kept)
    return data, {"size": out.size, "done": done}


def fit(image: Image.Image, frame: tuple, preset: PresetParams) -> Image.Image:
    lanczos = Image.Resampling.LANCZOS
    if preset.long_edge:
        scale = preset.long_edge / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image if size == image.size else image.resize(size, lanczos)
    if not preset.size:
        return image
    tw, th = (int(v) for v in preset.size.split("x"))
    if preset.fit == "exact":
        return image.resize((tw, th), lanczos)
    if preset.fit == "contain":
        scale = min(tw / image.width, th / image.height)
        inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), lanczos)
        bars = ImageColor.getrgb(preset.background)[:3]
        canvas = Image.new(inner.mode, (tw, th), bars + ((255,) if inner.mode == "RGBA" else ()))
        canvas.paste(inner, ((tw - inner.width) // 2, (th - inner.height) // 2))
        return canvas
    # cover: the largest window of the target's shape, placed around the original composition
    w, h = image.size
    cw, ch = (h * tw / th, h) if w / h > tw / th else (w, w * th / tw)
    fx0, fy0, fx1, fy1 = frame
    tolerance = 0.005 * max(w, h) + 1
    if fx1 - fx0 > cw + tolerance or fy1 - fy0 > ch + tolerance:
        raise PresetFailed(
            f"cover to {tw}x{th} would cut into the original composition ({fx1 - fx0:.0f}x{fy1 - fy0:.0f} of "
            f"this {w}x{h} picture; a {tw}:{th} crop keeps {cw:.0f}x{ch:.0f}): use fit = \"contain\", or a "
            "variant of that shape as the preset's source")
    x0 = min(max((fx0 + fx1) / 2 - cw / 2, 0.0), w - cw)
    y0 = min(max((fy0 + fy1) / 2 - ch / 2, 0.0), h - ch)
    return image.resize((tw, th), lanczos, box=(x0, y0, x0 + cw, y0 + ch))


def _srgb_profile() -> bytes:
    """lcms's built-in sRGB profile, with a fixed creation date (bytes 24–35 of the header; the profile ID is
    left zero): a profile stamped with the hour would make every delivery's bytes differ."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data[24:36] = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
    return bytes(data)


SRGB_ICC = _srgb_profile()


def to_srgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bool]:
    """The picture converted from its ICC profile to sRGB (relative colorimetric); a picture without a
    profile is taken as sRGB already.  (image, whether it was converted)."""
    if not icc:
        return image, False
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    rgb = image.convert("RGB")
    srgb = ImageCms.ImageCmsProfile(io.BytesIO(SRGB_ICC))
    out = ImageCms.profileToProfile(rgb, source, srgb, renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                                    outputMode="RGB")
    if alpha is not None:
        out.putalpha(alpha)
    return out, True


@dataclass(frozen=True)
class Cube:
    size: int
    table: tuple[float, ...]  # r fastest, then g, then b; three values a point, 0–1


def read_cube(path: Path) -> Cube:
    """An Adobe/Resolve ``.cube`` 3D LUT: LUT_3D_SIZE N, then N³ lines of ``r g b`` with red changing fastest."""
    try:
        lines = check_user_file(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise PresetFailed(f"lut {path}: cannot be read ({exc.strerror or exc})") from None
    size, low, high, values = 0, [0.0] * 3, [1.0] * 3, []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("TITLE"):
            continue
        head, *rest = line.split()
        if head == "LUT_3D_SIZE":
            try:
                size = int(rest[0])
            except (IndexError, ValueError):
                raise PresetFailed(f"lut {path}: line {number}: LUT_3D_SIZE needs a number") from None
        elif head == "LUT_1D_SIZE":
            raise PresetFailed(f"lut {path}: a 1D LUT; a .cube 3D LUT (LUT_3D_SIZE) is needed")
        elif head in ("DOMAIN_MIN", "DOMAIN_MAX", "LUT_3D_INPUT_RANGE"):
            try:
                numbers = [float(v) for v in rest]
                if head == "LUT_3D_INPUT_RANGE":
                    low, high = [numbers[0]] * 3, [numbers[1]] * 3
                elif head == "DOMAIN_MIN":
                    low = numbers
                else:
                    high = numbers
            except (IndexError, ValueError):
                raise PresetFailed(f"lut {path}: line {number}: {head} needs numbers") from None
        else:
            try:
                values.extend(float(v) for v in (head, *rest))
            except ValueError:
                raise PresetFailed(f"lut {path}: line {number} is not a .cube line") from None  # never its text
    if not 2 <= size <= 65 or len(values) != 3 * size ** 3:
        raise PresetFailed(f"lut {path}: LUT_3D_SIZE {size} needs {3 * size ** 3} values, found {len(values)}")
    if low != [0.0] * 3 or high != [1.0] * 3:
        raise PresetFailed(f"lut {path}: only the 0–1 input domain is supported (DOMAIN_MIN/MAX)")
    return Cube(size, tuple(min(1.0, max(0.0, v)) for v in values))


def apply_lut(image: Image.Image, cube: Cube, strength: float) -> Image.Image:
    """The grade by trilinear interpolation (Pillow's Color3DLUT), mixed with the ungraded picture at
    ``strength``; alpha is left alone."""
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    rgb = image.convert("RGB")
    graded = rgb.filter(ImageFilter.Color3DLUT(cube.size, list(cube.table), channels=3))
    if strength < 1.0:
        graded = Image.blend(rgb, graded, strength)
    if alpha is not None:
        graded.putalpha(alpha)
    return graded


def _read_logo(path: Path) -> Image.Image:
    try:
        with Image.open(check_user_file(path)) as im:
            logo = im.convert("RGBA")
    except (OSError, ValueError) as exc:
        raise PresetFailed(f"logo {path}: cannot be read as an image ({exc})") from None
    return logo


def lay_logo(image: Image.Image, logo: Image.Image, preset: PresetParams) -> Image.Image:
    width = max(1, round(image.width * preset.logo_scale))
    height = max(1, round(logo.height * width / logo.width))
    logo = logo.resize((width, height), Image.Resampling.LANCZOS)
    if preset.logo_opacity < 1.0:
        a = np.asarray(logo.getchannel("A"), dtype=np.float32) * preset.logo_opacity
        logo.putalpha(Image.fromarray(np.round(a).astype(np.uint8)))
    m, (W, H) = preset.logo_margin, image.size
    x = {"left": m, "right": W - width - m}.get(preset.logo_position.split("-")[-1], (W - width) // 2)
    y = {"top": m, "bottom": H - height - m}.get(preset.logo_position.split("-")[0], (H - height) // 2)
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.paste(logo, (x, y))
    out = Image.alpha_composite(base, layer)
    return out if image.mode == "RGBA" else out.convert("RGB")


# --------------------------------------------------------------------------- the file


def _kept_metadata(ctx: JobContext, preset: PresetParams) -> dict:
    """For ``metadata = "keep"``: the source's text chunks and EXIF (without the orientation it no longer
    needs: the picture is upright)."""
    if preset.metadata != "keep":
        return {}
    with opened_for_metadata(ctx.path(ctx.products.source.original)) as im:
        text = {k: v for k, v in (getattr(im, "text", None) or {}).items() if isinstance(v, str)}
        exif = im.getexif()
        if ORIENTATION_TAG in exif:
            del exif[ORIENTATION_TAG]
        return {"text": text, "exif": exif.tobytes() if len(exif) else b""}


def encode(image: Image.Image, preset: PresetParams, icc: bytes | None, origin: provenance.Origin,
           kept: dict) -> bytes:
    args: dict = {}
    if icc:
        args["icc_profile"] = icc
    xmp = provenance.xmp_packet(origin) if preset.metadata == "label" else None
    if preset.format == "jpeg" and image.mode == "RGBA":
        bars = Image.new("RGB", image.size, ImageColor.getrgb(preset.background)[:3])
        bars.paste(image, mask=image.getchannel("A"))
        image = bars
    if preset.format == "png":
        info = PngImagePlugin.PngInfo()
        for k, v in kept.get("text", {}).items():
            info.add_itxt(k, v)
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=False)
        args.update(pnginfo=info, compress_level=6)
    elif preset.format == "jpeg":
        args.update(quality=preset.quality, optimize=True, subsampling="4:2:0" if preset.quality < 90 else "4:4:4")
    else:
        args.update(quality=preset.quality, method=4)
    if preset.format != "png" and xmp:
        args["xmp"] = xmp
    exif = kept.get("exif", b"")
    if preset.format != "png" and kept.get("text", {}).get("parameters"):
        # A1111's own place for its settings in a JPEG or WebP: EXIF UserComment (Unicode)
        data = Image.Exif()
        if exif:
            data.load(exif)
        data.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + kept["text"]["parameters"].encode("utf-16-be")
        exif = data.tobytes()
    if exif:
        args["exif"] = exif
    buf = io.BytesIO()
    image.save(buf, format={"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[preset.format], **args)
    return buf.getvalue()


def _origin(ctx: JobContext, products: Products, params: DeliverParams) -> provenance.Origin:
    with opened_for_metadata(ctx.path(products.source.original)) as im:
        info = {k: v for k, v in {**im.info, **(getattr(im, "text", None) or {})}.items() if isinstance(v, str)}
    prompt = products.source.prompt.positive if products.source.prompt else None
    source_type = params.input
    if source_type == "auto":  # a generator's own metadata is evidence; anything else is decided per picture
        generated = prompt is not None or provenance.generated_by_metadata(info)
        source_type = "generated" if generated else "auto"
    named = provenance.generator_of(products.source.generation, info)
    return provenance.Origin(source_type, named or params.generator or None, prompt, params.software)


def _label_kind(preset: PresetParams, params: DeliverParams) -> str:
    """What marks the file as AI-made: the XMP label and/or C2PA ("strip" asks for neither)."""
    kind = {"label": "xmp", "keep": "kept", "strip": "strip"}[preset.metadata]
    return kind + "+c2pa" if params.signing is not None and preset.metadata != "strip" else kind


def _target(folder: Path, stem: str, preset: PresetParams, layout: str, earlier: Delivery | None) -> Path:
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[preset.format]
    target = folder / f"{stem}-{preset.name}.{ext}"
    if layout == "flat":
        if earlier and Path(earlier.path).parent == folder and Path(earlier.path).suffix == target.suffix:
            return Path(earlier.path)  # this image's own file from before: the same name again
        n = 2
        while target.exists():
            target = folder / f"{stem}-{preset.name}-{n}.{ext}"
            n += 1
    return target


def _earlier(ctx: JobContext) -> dict[str, Delivery]:
    """What this stage delivered for this image before (its own record), by preset."""
    try:
        record = records.from_json(DeliverDetails, json.loads(ctx.path(RECORD).read_text(encoding="utf-8")))
    except (OSError, ValueError):  # none yet, or not one this release can read: delivered afresh
        return {}
    return {d.preset: d for d in record.deliveries}


def _signed_unless_unchanged(data: bytes, rendition: str, target: Path, earlier: Delivery | None,
                             preset: PresetParams, origin: provenance.Origin, steps: dict, ctx: JobContext,
                             params: DeliverParams, stem: str) -> bytes | None:
    """The signed file; None when the file already there signs this very rendition (a signature is not the
    same twice: re-signing would change bytes that need not change)."""
    if earlier and earlier.rendition_sha256 == rendition and Path(earlier.path) == target \
            and target.exists() and sha256_file(target) == earlier.sha256:
        return None
    actions: dict[str, list[str]] = {}
    for action, what in steps["done"]:
        actions.setdefault(action, []).append(what)
    original = ctx.path(ctx.products.source.original)
    components = {"logo": Path(preset.logo_path)} if "c2pa.placed" in actions else {}
    manifest = provenance.c2pa_manifest(
        origin, f"{stem}-{preset.name}",
        [{"action": a, "parameters": {"description": "; ".join(w),
                                      **({"ingredientIds": ["logo"]} if a == "c2pa.placed" else {})}}
         for a, w in actions.items()])
    fmt = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}[original.suffix.lower().lstrip(".")]
    return provenance.sign(data, preset.format, manifest, original, fmt, params.signing, components)


def _write(target: Path, data: bytes) -> None:
    """Atomically, and not at all when the file there already holds these bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return
    Folder(target.parent).write_bytes(target.name, data)
    fsync_dir(target.parent)
