"""What a delivered file says about where it came from: the XMP label, and C2PA Content Credentials.

* **The label** (``metadata = "label"``): an XMP packet with the IPTC digital source type
  (``trainedAlgorithmicMedia``, or ``compositeWithTrainedAlgorithmicMedia`` when the input was a
  photograph), the generator and the prompt when the image's own metadata names them, and polishd as the
  software that processed it.  Nothing that identifies a person or a device is copied: no GPS, no camera
  serial, no comments.  No timestamp either: a re-delivery writes the same bytes.
* **C2PA** (``[deliver.c2pa]`` with a certificate chain and its private key): a signed manifest in the file,
  through the ``c2pa-python`` package — ``c2pa.created`` (by the generator), ``c2pa.edited`` for each stage
  that changed pixels, ``c2pa.resized`` / ``c2pa.color_adjustments`` for the preset, and the original as
  the parent ingredient (carrying its own manifest, when it had one).
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

IPTC_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# IPTC's digital source types, by what polishd knows of a picture (see Origin.steps_for for the rule)
SOURCE_TYPES = {"generated": "trainedAlgorithmicMedia", "photo": "compositeWithTrainedAlgorithmicMedia",
                "composite": "compositeSynthetic", "enhanced": "algorithmicallyEnhanced"}
MAX_PROMPT = 4000  # characters of a prompt carried in the label
# Metadata keys a generator writes (A1111/Forge/SD.Next "parameters", ComfyUI "prompt"/"workflow", Fooocus,
# SwarmUI, InvokeAI, NovelAI): their presence is evidence the picture was generated.
GENERATOR_KEYS = ("parameters", "prompt", "workflow", "fooocus_scheme", "sui_image_params", "invokeai_metadata")


def generated_by_metadata(info: dict) -> bool:
    """Whether the image's own metadata says a generator made it (NovelAI names itself as the software)."""
    return any(k in info for k in GENERATOR_KEYS) or str(info.get("Software", "")).startswith("NovelAI")


@dataclass(frozen=True)
class Origin:
    """What is known of how the image was made."""

    source_type: str            # a key of SOURCE_TYPES, or "auto": decided per picture by steps_for
    generator: str | None       # "ComfyUI (sdxl_base_1.0.safetensors)", …
    prompt: str | None
    software: str               # "polishd 0.1.0"
    steps: tuple[str, ...] = ()  # the stages that changed this picture's pixels: "inpaint", "outpaint", "upscale"

    def steps_for(self, picture: str, products) -> Origin:
        """This origin with the stages that made ``picture`` (an archive name): the repair when the master was
        repainted, the outpaint for a variant, the upscale for an upscaled picture."""
        upscaled = {u.picture.name: u.source for u in products.upscaled or ()}
        made_from = upscaled.get(picture, picture)
        variant = made_from != "master" and (made_from in {v.label for v in products.variants or ()}
                                             or picture in {v.picture.name for v in products.variants or ()})
        repaired = products.master not in (None, products.source.picture)
        steps = [name for name, done in (
            ("inpaint", repaired), ("outpaint", variant), ("upscale", picture in upscaled)) if done]
        source_type = self.source_type
        if source_type == "auto":  # no generator metadata: what this picture's own making says
            painted = [repaired and products.master.generative,
                       variant and any(v.picture.generative for v in products.variants or ()
                                       if v.label == made_from or v.picture.name == picture),
                       any(u.picture.generative for u in products.upscaled or () if u.picture.name == picture)]
            source_type = "photo" if any(painted) else "composite" if variant else "enhanced"
        return dataclasses.replace(self, source_type=source_type, steps=tuple(steps))


def source_type_uri(kind: str) -> str:
    return IPTC_SOURCE_TYPE + SOURCE_TYPES[kind]


def xmp_packet(origin: Origin) -> bytes:
    """The XMP label.  Values are XML-escaped (a prompt is the image's text, not ours)."""
    events = ([("created", origin.generator)] if origin.generator else []) + [("edited", origin.software)]
    history = "".join(
        f'<rdf:li rdf:parseType="Resource"><stEvt:action>{action}</stEvt:action>'
        f"<stEvt:softwareAgent>{escape(agent)}</stEvt:softwareAgent></rdf:li>" for action, agent in events)
    description = (f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(_clip(origin.prompt))}'
                   "</rdf:li></rdf:Alt></dc:description>") if origin.prompt else ""
    generator = (f"<Iptc4xmpExt:AISystemUsed>{escape(origin.generator)}</Iptc4xmpExt:AISystemUsed>"
                 if origin.generator else "")
    prompt = (f"<Iptc4xmpExt:AIPromptInformation>{escape(_clip(origin.prompt))}</Iptc4xmpExt:AIPromptInformation>"
              if origin.prompt else "")
    body = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"'
        ' xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
        f" Iptc4xmpExt:DigitalSourceType={quoteattr(source_type_uri(origin.source_type))}"
        f" xmp:CreatorTool={quoteattr(origin.generator or origin.software)}>"
        f"{generator}{prompt}{description}"
        f"<xmpMM:History><rdf:Seq>{history}</rdf:Seq></xmpMM:History>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>")
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>' + body + '<?xpacket end="r"?>').encode()


def _clip(text: str | None) -> str:
    text = (text or "").replace("\x00", "")
    return text if len(text) <= MAX_PROMPT else text[:MAX_PROMPT] + "…"


TOOLS = {"a1111": "Stable Diffusion web UI", "forge": "Stable Diffusion WebUI Forge", "sdnext": "SD.Next",
         "civitai": "Civitai", "fooocus": "Fooocus", "swarmui": "SwarmUI", "invokeai": "InvokeAI",
         "novelai": "NovelAI", "comfyui": "ComfyUI"}


def generator_of(record, info: dict) -> str | None:
    """The generator an image's own metadata names: the tool of its generation record (stages/generation.py)
    with the checkpoint it names, or a ``Software`` text."""
    if record is not None:
        name = TOOLS.get(record.tool, record.tool)
        model = (record.checkpoint or "").replace("\\", "/").rsplit("/", 1)[-1]
        return (name + (f" ({model})" if model else ""))[:200]
    software = info.get("Software") or info.get("software")
    return str(software)[:200] if software else None


# --------------------------------------------------------------------------- C2PA


class SigningError(Exception):
    """The certificate or key does not sign (a user's setting to fix)."""


@dataclass(frozen=True)
class SigningKey:
    certificate: Path   # PEM: the signing certificate, then the CA certificates up to the root
    private_key: Path   # PEM (PKCS#8)
    algorithm: str      # es256 | es384 | ps256 | ed25519
    timestamp_url: str  # an RFC 3161 time-stamp authority, or ""


MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def c2pa_manifest(origin: Origin, title: str, preset_actions: list[dict]) -> dict:
    created = {"action": "c2pa.created", "digitalSourceType": source_type_uri("generated")}
    if origin.generator:
        created["softwareAgent"] = {"name": origin.generator}
    made = origin.source_type == "generated"
    actions = [created] if made else [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["original"]}}]
    edit_type = source_type_uri("generated" if origin.source_type in ("generated", "photo") else origin.source_type)
    actions += [{"action": "c2pa.edited", "softwareAgent": {"name": origin.software},
                 "digitalSourceType": edit_type, "parameters": {"description": step}}
                for step in origin.steps]
    actions += [{"softwareAgent": {"name": origin.software}, **a} for a in preset_actions]
    return {"claim_generator_info": [{"name": "polishd", "version": origin.software.split()[-1]}],
            "title": title,
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}}]}


def sign(data: bytes, fmt: str, manifest: dict, original: Path, original_fmt: str, key: SigningKey,
         components: dict[str, Path] | None = None) -> bytes:
    """``data`` (an encoded image) with a signed C2PA manifest embedded; the original as parent ingredient, and
    ``components`` (label → PNG file: a logo) as the ingredients ``c2pa.placed`` actions name."""
    import c2pa

    algorithms = {"es256": c2pa.C2paSigningAlg.ES256, "es384": c2pa.C2paSigningAlg.ES384,
                  "ps256": c2pa.C2paSigningAlg.PS256, "ed25519": c2pa.C2paSigningAlg.ED25519}
    try:
        info = c2pa.C2paSignerInfo(alg=algorithms[key.algorithm], sign_cert=key.certificate.read_bytes(),
                                   private_key=key.private_key.read_bytes(),
                                   ta_url=key.timestamp_url.encode() if key.timestamp_url else None)
        signer = c2pa.Signer.from_info(info)
    except (OSError, c2pa.C2paError) as exc:
        raise SigningError(f"[deliver.c2pa]: the certificate and key do not make a signer: {exc}") from None
    try:
        with c2pa.Builder(manifest) as builder:
            with open(original, "rb") as f:
                builder.add_ingredient({"title": original.name, "relationship": "parentOf",
                                        "label": "original"}, MIME[original_fmt], f)
            for label, path in (components or {}).items():
                with open(path, "rb") as f:
                    builder.add_ingredient({"title": path.name, "relationship": "componentOf", "label": label},
                                           "image/png", f)
            out = io.BytesIO()
            builder.sign(signer, MIME[fmt], io.BytesIO(data), out)
            return out.getvalue()
    except c2pa.C2paError as exc:
        raise SigningError(f"[deliver.c2pa]: signing failed: {exc}") from None
    finally:
        signer.close()
