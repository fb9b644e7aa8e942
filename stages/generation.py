"""How an image was generated, read from whatever its generator wrote: one typed record for every tool.

Read from (all untrusted: bounded in size, depth and node count, never executed, never raising — what cannot
be read is absent):

* A1111 / Forge / SD.Next / Civitai-style text: the PNG text chunk ``parameters``, or in a JPEG or WebP the EXIF
  ``UserComment`` (with its ``UNICODE``/``ASCII`` prefix): the prompt, ``Negative prompt: …``, and a last line
  of ``Key: value`` settings (values may be JSON-quoted). ``<lora:name:te:unet>`` and ``<lyco:…>`` tags are
  taken out of the prompt into ``loras``, as A1111 does (the first weight is the text encoder's, the
  second the UNet's, which defaults to the first; ``te=``/``unet=`` name them).
* Fooocus: ``parameters`` as JSON (its own scheme; ``fooocus_scheme`` says so), or its A1111 scheme.
* SwarmUI: ``parameters`` as JSON with ``sui_image_params``.
* InvokeAI: ``invokeai_metadata`` JSON.
* NovelAI: ``Comment`` JSON (``Software: NovelAI``).
* ComfyUI: the API graph in ``prompt`` — the samplers on the path to the saved image (the first of them for
  the prompt: a hires pass's shorter prompt is not the picture's), custom samplers with guiders, text through
  primitive, string and concatenate nodes, SDXL/SD3/Flux encoders, LoRA loaders and CLIP skip on the way —
  or, when only the UI graph ``workflow`` is there, that graph read for the nodes whose widgets are known.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from stages.records import omit, rest

MAX_PARAMETERS = 64 * 1024    # characters of an A1111/Fooocus/SwarmUI text: any real one is a few thousand
MAX_GRAPH = 4 * 1024 * 1024   # characters of a ComfyUI graph
MAX_NODES = 5000
MAX_DEPTH = 64                # nesting of any JSON read
MAX_TEXT = 16 * 1024          # characters of one prompt


@dataclass
class LoraRef:
    name: str
    weight: float = 1.0                 # the UNet's (model's) weight
    te_weight: float | None = omit(None)  # the text encoder's, when it differs
    kind: str = "lora"                  # "lora" or "lyco"
    hash: str | None = omit(None)


@dataclass
class Generation:
    """One image's generation, whatever made it.  ``tool``: a1111, forge, sdnext, civitai, fooocus, swarmui,
    invokeai, novelai, comfyui."""

    tool: str
    positive: str = ""
    negative: str = ""
    checkpoint: str | None = omit(None)
    checkpoint_hash: str | None = omit(None)  # A1111's AutoV2 (10 hex) or legacy (8 hex), or a sha256
    vae: str | None = omit(None)
    loras: list[LoraRef] = omit(factory=list)
    embeddings: list[str] = omit(factory=list)
    sampler: str | None = omit(None)          # as the tool names it: "DPM++ 2M", "dpmpp_2m", "k_euler"
    schedule: str | None = omit(None)         # "Karras", "karras", "sgm_uniform", …
    steps: int | None = omit(None)
    cfg: float | None = omit(None)
    seed: int | None = omit(None)
    clip_skip: int | None = omit(None)
    size: list[int] | None = omit(None)       # [width, height] generated
    rest: dict = rest()

    def fields_set(self) -> list[str]:
        """The names of the fields this record has (for ``polishd inspect`` and the manifest)."""
        return [k for k, v in self.__dict__.items() if k not in ("tool", "rest") and v not in (None, "", [])]


# --------------------------------------------------------------------------- reading an image


def read(image) -> Generation | None:
    """The generation record of a decoded PIL image, or None.  Never raises."""
    try:
        return _read(image)
    except Exception:  # untrusted bytes: whatever went wrong, the answer is "not readable"
        return None


def _read(image) -> Generation | None:
    info = {k: v for k, v in (getattr(image, "text", None) or image.info or {}).items() if isinstance(v, str)}
    params = info.get("parameters")
    if params is None:
        params = user_comment(image)
    if params:
        found = from_parameters(params, info.get("fooocus_scheme", ""))
        if found is not None:
            return found
    if "invokeai_metadata" in info:
        found = _invokeai(_json(info["invokeai_metadata"], MAX_PARAMETERS))
        if found is not None:
            return found
    if "prompt" in info or "workflow" in info:
        found = from_comfyui(info.get("prompt"), info.get("workflow"))
        if found is not None:
            return found
    if "Comment" in info and ("NovelAI" in info.get("Software", "") or '"uc"' in info["Comment"][:MAX_PARAMETERS]):
        return _novelai(_json(info["Comment"], MAX_PARAMETERS), info.get("Description", ""))
    return None


def user_comment(image) -> str | None:
    """EXIF UserComment (in the Exif IFD, or in IFD0 where Fooocus puts it), decoded from its 8-byte prefix."""
    try:
        exif = image.getexif()
    except Exception:
        return None
    value = exif.get_ifd(0x8769).get(0x9286) if exif else None
    if value is None:
        value = exif.get(0x9286)
    if isinstance(value, str):
        return value[:MAX_PARAMETERS + 1]
    if not isinstance(value, bytes) or len(value) > 4 * MAX_PARAMETERS:
        return None
    prefix, body = value[:8], value[8:]
    if prefix == b"UNICODE\0":
        # UTF-16 without a BOM, of either order: the order whose high bytes are mostly zero (text is mostly ASCII)
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", "replace")
        big = body[0::2].count(0) >= body[1::2].count(0)
        return body.decode("utf-16-be" if big else "utf-16-le", "replace").rstrip("\0")
    if prefix in (b"ASCII\0\0\0", b"\0" * 8):
        return body.decode("utf-8", "replace").rstrip("\0")
    return value.decode("utf-8", "replace").rstrip("\0")


# --------------------------------------------------------------------------- bounded JSON


def _json(text: Any, limit: int) -> Any:
    """Parsed JSON, or None: too long, not JSON, or nested deeper than ``MAX_DEPTH``."""
    if not isinstance(text, str) or len(text) > limit:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > MAX_DEPTH:
            return None
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return value


def _int(v: Any, low: int, high: int) -> int | None:
    try:
        n = int(float(v)) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None
    except (ValueError, OverflowError):
        return None
    return n if n is not None and low <= n <= high else None


def _float(v: Any, low: float, high: float) -> float | None:
    try:
        x = float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None
    except (ValueError, OverflowError):
        return None
    return x if x is not None and low <= x <= high else None


def _text(v: Any) -> str:
    return v[:MAX_TEXT].strip() if isinstance(v, str) else ""


def _name(v: Any) -> str | None:
    return v[:512].strip() or None if isinstance(v, str) else None


def _size(w: Any, h: Any) -> list[int] | None:
    w, h = _int(w, 1, 65535), _int(h, 1, 65535)
    return [w, h] if w and h else None


SEED_MAX = 2 ** 64


# --------------------------------------------------------------------------- A1111 and its family

_SETTING = re.compile(r'\s*([A-Za-z][\w \-/+.()]*?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_EXTRA_NETWORK = re.compile(r"<(lora|lyco):([^<>]+)>", re.I)
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def settings(line: str) -> dict[str, str]:
    """A1111's last line: ``Key: value, Key: "quoted, value", …`` as a table (JSON-quoted values unquoted)."""
    out = {}
    for key, value in _SETTING.findall(line):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        out[key.strip()] = value if isinstance(value, str) else str(value)
    return out


def lora_tags(prompt: str) -> tuple[str, list[LoraRef]]:
    """The prompt without its ``<lora:…>``/``<lyco:…>`` tags, and the LoRAs they name."""
    loras = []

    def take(m: re.Match) -> str:
        kind, body = m.group(1).lower(), m.group(2).split(":")
        name, positional, named = body[0].strip(), [], {}
        for part in body[1:]:
            if "=" in part:
                k, _, v = part.partition("=")
                named[k.strip()] = v.strip()
            else:
                positional.append(part.strip())
        te = _float(named.get("te", positional[0] if positional else 1.0), -100, 100)
        te = 1.0 if te is None else te
        unet = _float(named.get("unet", positional[1] if len(positional) > 1 else te), -100, 100)
        unet = te if unet is None else unet
        if name:
            loras.append(LoraRef(name, unet, te if te != unet else None, kind))
        return ""
    return _EXTRA_NETWORK.sub(take, prompt), loras


def _tidy(prompt: str) -> str:
    """A prompt after tags were taken out: no doubled commas or spaces left where they stood."""
    prompt = re.sub(r"[ \t]+", " ", prompt)
    prompt = re.sub(r"\s*,(\s*,)+", ",", prompt)
    return prompt.strip().strip(",").strip()


def from_parameters(text: str, scheme: str = "") -> Generation | None:
    """A1111-style text, or the JSON Fooocus and SwarmUI write in the same chunk."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_PARAMETERS:
        return None
    stripped = text.strip()
    if stripped.startswith("{"):
        data = _json(stripped, MAX_PARAMETERS)
        if isinstance(data, dict):
            if isinstance(data.get("sui_image_params"), dict):
                return _swarmui(data["sui_image_params"])
            if scheme == "fooocus" or "base_model" in data or "full_prompt" in data:
                return _fooocus(data)
        return None
    return _a1111(stripped)


def _a1111(text: str) -> Generation | None:
    *lines, last = text.split("\n")
    last, resources = _cut_json(last, "Civitai resources:")
    table = settings(last)
    if len(table) < 3 and not last.startswith("Steps: "):  # not a settings line: part of the prompt
        lines.append(last)
        table = {}
    positive, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):]
        (negative if in_negative else positive).append(line.strip())
    pos_text, loras = lora_tags("\n".join(positive))
    neg_text, _ = lora_tags("\n".join(negative))
    version = table.get("Version", "")
    tool = ("forge" if version.startswith("f") and re.match(r"f\d", version) else
            "fooocus" if "Fooocus" in version else
            "sdnext" if "SD.Next" in table.get("App", "") or "sdnext" in version.lower() else
            "civitai" if "Civitai resources" in table or "Civitai metadata" in table else "a1111")
    gen = Generation(tool, _tidy(pos_text)[:MAX_TEXT], _tidy(neg_text)[:MAX_TEXT])
    gen.checkpoint = _name(table.get("Model"))
    gen.checkpoint_hash = _hex(table.get("Model hash"))
    gen.vae = _name(table.get("VAE"))
    sampler = _name(table.get("Sampler"))
    schedule = _name(table.get("Schedule type"))
    if sampler and not schedule:  # older A1111: "DPM++ 2M Karras"
        for suffix in ("Karras", "Exponential", "SGM Uniform", "Polyexponential"):
            if sampler.endswith(" " + suffix):
                sampler, schedule = sampler[:-len(suffix) - 1], suffix
    gen.sampler, gen.schedule = sampler, schedule
    gen.steps = _int(table.get("Steps"), 1, 1000)
    gen.cfg = _float(table.get("CFG scale"), 0, 100)
    gen.seed = _int(table.get("Seed"), -1, SEED_MAX)
    gen.clip_skip = _int(table.get("Clip skip"), 1, 24)
    size = _SIZE.match(table.get("Size", ""))
    gen.size = _size(*size.groups()) if size else None
    hashes = _pairs(table.get("Lora hashes", ""))
    for lora in loras:
        lora.hash = _hex(hashes.get(lora.name))
    gen.loras = loras or [LoraRef(n, _float(w, -100, 100) or 1.0) for n, w in _pairs(table.get("Lora weights", "")
                                                                                 ).items()]
    gen.embeddings = list(_pairs(table.get("TI hashes", "")))
    _civitai(gen, resources)
    if resources is not None and gen.tool == "a1111":
        gen.tool = "civitai"
    gen.rest = {k: v[:1000] for k, v in table.items() if k in ("Denoising strength", "Hires upscale", "Hires steps",
                                                                "Hires upscaler", "Version", "RNG", "Emphasis")}
    return gen if gen.positive or gen.negative or table else None


def _cut_json(line: str, key: str) -> tuple[str, Any]:
    """A settings line without ``key: <JSON>`` (Civitai writes its list unquoted, commas and all), and the
    parsed value (None when absent or not JSON)."""
    at = line.find(key)
    if at < 0:
        return line, None
    start = at + len(key)
    while start < len(line) and line[start] == " ":
        start += 1
    try:
        value, end = json.JSONDecoder().raw_decode(line, start)
    except (ValueError, RecursionError):
        return line, None
    return line[:at] + line[end:].lstrip(" ,"), value


def _hex(v: Any) -> str | None:
    return v.strip().lower() if isinstance(v, str) and re.fullmatch(r"\s*[0-9a-fA-F]{8,64}\s*", v) else None


def _pairs(text: str) -> dict[str, str]:
    """``"name: value, other: value"`` (A1111's Lora hashes, TI hashes) as a table."""
    out = {}
    for part in text.split(","):
        name, sep, value = part.rpartition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def _civitai(gen: Generation, data: Any) -> None:
    """Civitai's ``Civitai resources: [{"type": "checkpoint", "modelName": …}, {"type": "lora", …}]``."""
    if not isinstance(data, list):
        return
    for r in data[:100]:
        if not isinstance(r, dict):
            continue
        name = _name(r.get("modelName"))
        if r.get("type") == "checkpoint" and name and not gen.checkpoint:
            gen.checkpoint = name
        elif r.get("type") in ("lora", "lycoris", "locon") and name and not any(x.name == name for x in gen.loras):
            gen.loras.append(LoraRef(name, _float(r.get("weight"), -100, 100) or 1.0))
        elif r.get("type") == "embed" and name:
            gen.embeddings.append(name)


# --------------------------------------------------------------------------- Fooocus, SwarmUI, InvokeAI, NovelAI


def _fooocus(d: dict) -> Generation:
    gen = Generation("fooocus", _text(d.get("prompt")), _text(d.get("negative_prompt")))
    gen.checkpoint = _name(d.get("base_model"))
    gen.checkpoint_hash = _hex(d.get("base_model_hash"))
    vae = _name(d.get("vae"))
    gen.vae = vae if vae not in (None, "Default (model)", "None") else None
    gen.sampler, gen.schedule = _name(d.get("sampler")), _name(d.get("scheduler"))
    gen.steps = _int(d.get("steps"), 1, 1000)
    gen.cfg = _float(d.get("guidance_scale"), 0, 100)
    gen.seed = _int(d.get("seed"), -1, SEED_MAX)
    res = re.findall(r"\d+", d.get("resolution", "")) if isinstance(d.get("resolution"), str) else []
    gen.size = _size(*res[:2]) if len(res) >= 2 else None
    for lora in d.get("loras", [])[:50] if isinstance(d.get("loras"), list) else []:
        if isinstance(lora, list) and lora and isinstance(lora[0], str):
            gen.loras.append(LoraRef(lora[0], _float(lora[1] if len(lora) > 1 else 1, -100, 100) or 1.0,
                                     hash=_hex(lora[2]) if len(lora) > 2 else None))
    return gen


def _swarmui(d: dict) -> Generation:
    prompt, loras = lora_tags(_text(d.get("prompt")))
    gen = Generation("swarmui", _tidy(prompt), _text(d.get("negativeprompt")))
    gen.checkpoint = _name(d.get("model"))
    gen.vae = _name(d.get("vae"))
    gen.sampler, gen.schedule = _name(d.get("sampler")), _name(d.get("scheduler"))
    gen.steps = _int(d.get("steps"), 1, 1000)
    gen.cfg = _float(d.get("cfgscale"), 0, 100)
    gen.seed = _int(d.get("seed"), -1, SEED_MAX)
    stop = _int(d.get("clipstopatlayer"), -24, -1)
    gen.clip_skip = -stop if stop else None
    gen.size = _size(d.get("width"), d.get("height"))
    names = d.get("loras") if isinstance(d.get("loras"), list) else []
    weights = d.get("loraweights") if isinstance(d.get("loraweights"), list) else []
    for i, name in enumerate(names[:50]):
        if isinstance(name, str):
            w = _float(weights[i], -100, 100) if i < len(weights) else None
            loras.append(LoraRef(name, 1.0 if w is None else w))
    gen.loras = loras
    return gen


def _invokeai(d: Any) -> Generation | None:
    if not isinstance(d, dict):
        return None
    gen = Generation("invokeai", _text(d.get("positive_prompt")), _text(d.get("negative_prompt")))
    model = d.get("model")
    if isinstance(model, dict):
        gen.checkpoint = _name(model.get("name") or model.get("model_name"))
        gen.checkpoint_hash = _hex(str(model.get("hash", "")).removeprefix("blake3:").removeprefix("sha256:"))
    vae = d.get("vae")
    gen.vae = _name(vae.get("name") or vae.get("model_name")) if isinstance(vae, dict) else None
    gen.sampler = _name(d.get("scheduler"))
    gen.steps = _int(d.get("steps"), 1, 1000)
    gen.cfg = _float(d.get("cfg_scale"), 0, 100)
    gen.seed = _int(d.get("seed"), -1, SEED_MAX)
    gen.clip_skip = _int(d.get("clip_skip"), 1, 24)
    gen.size = _size(d.get("width"), d.get("height"))
    for lora in d.get("loras", [])[:50] if isinstance(d.get("loras"), list) else []:
        if not isinstance(lora, dict):
            continue
        ref = lora.get("model") if isinstance(lora.get("model"), dict) else lora.get("lora")
        name = _name(ref.get("name") or ref.get("model_name")) if isinstance(ref, dict) else None
        if name:
            gen.loras.append(LoraRef(name, _float(lora.get("weight"), -100, 100) or 1.0))
    return gen if gen.positive or gen.checkpoint else None


def _novelai(d: Any, description: str) -> Generation | None:
    if not isinstance(d, dict):
        return None
    gen = Generation("novelai", _text(d.get("prompt")) or _text(description), _text(d.get("uc")))
    gen.sampler = _name(d.get("sampler"))
    gen.steps = _int(d.get("steps"), 1, 1000)
    gen.cfg = _float(d.get("scale"), 0, 100)
    gen.seed = _int(d.get("seed"), -1, SEED_MAX)
    gen.size = _size(d.get("width"), d.get("height"))
    return gen


# --------------------------------------------------------------------------- ComfyUI

OUTPUTS = ("SaveImage", "PreviewImage", "Image Save", "SaveImageWebsocket", "SaveAnimatedWEBP", "SaveImageExtended")
TEXT_KEYS = ("text", "string", "value", "prompt", "text_g", "t5xxl", "clip_l", "clip_g", "text_l", "STRING", "Text")
CONCAT_SKIP = ("delimiter", "separator", "clean_whitespace", "linebreak_addition")


class _Graph:
    """A ComfyUI API graph: ``{id: {"class_type": …, "inputs": {name: value or [id, output]}}}``."""

    def __init__(self, graph: dict):
        self.nodes = {str(k): v for k, v in list(graph.items())[:MAX_NODES]
                      if isinstance(v, dict) and isinstance(v.get("class_type"), str)}
        self.budget = 4 * MAX_NODES  # node visits for all text lookups: a graph of diamonds cannot blow it up
        self.path: set[int] = set()  # the nodes of the lookup under way: a cycle ends it

    def _enter(self, node: dict) -> bool:
        self.budget -= 1
        if self.budget < 0 or id(node) in self.path:
            return False
        self.path.add(id(node))
        return True

    def node(self, ref: Any) -> tuple[dict, int] | None:
        """The node an input is wired to, and which of its outputs."""
        if isinstance(ref, list) and len(ref) == 2 and str(ref[0]) in self.nodes and isinstance(ref[1], int):
            return self.nodes[str(ref[0])], ref[1]
        return None

    @staticmethod
    def inputs(node: dict) -> dict:
        return node["inputs"] if isinstance(node.get("inputs"), dict) else {}

    def upstream(self, start: dict, keys: tuple[str, ...] | None = None) -> list[dict]:
        """Every node ``start`` reads from (breadth first, each once; through ``keys`` inputs only when given)."""
        seen, out, queue = {id(start)}, [], deque([start])
        while queue and len(out) < MAX_NODES:
            for k, v in self.inputs(queue.popleft()).items():
                found = self.node(v) if keys is None or k in keys else None
                if found is not None and id(found[0]) not in seen:
                    seen.add(id(found[0]))
                    out.append(found[0])
                    queue.append(found[0])
        return out

    # ------------------------------------------------------------------ text
    def string(self, value: Any, depth: int = 0) -> str:
        """A string input: itself, or what the string, primitive or concatenate node it is wired to gives."""
        if isinstance(value, str):
            return value[:MAX_TEXT]
        found = self.node(value)
        if found is None or depth > MAX_DEPTH or not self._enter(found[0]):
            return ""
        try:
            return self._string(found[0], depth)
        finally:
            self.path.discard(id(found[0]))

    def _string(self, node: dict, depth: int) -> str:
        inputs, cls = self.inputs(node), node["class_type"]
        if "concat" in cls.lower() or "join" in cls.lower() or "combine" in cls.lower():
            sep = inputs.get("delimiter", inputs.get("separator", " "))
            parts = [self.string(v, depth + 1) for k, v in inputs.items() if k not in CONCAT_SKIP]
            return (sep if isinstance(sep, str) else " ").join(p for p in parts if p)[:MAX_TEXT]
        for key in TEXT_KEYS:
            if key in inputs:
                return self.string(inputs[key], depth + 1)
        return ""

    def conditioning(self, ref: Any, role: str, depth: int = 0) -> str:
        """The text a conditioning input was encoded from (``role``: "positive" or "negative")."""
        found = self.node(ref)
        if found is None or depth > MAX_DEPTH or not self._enter(found[0]):
            return ""
        try:
            return self._conditioning(*found, role, depth)
        finally:
            self.path.discard(id(found[0]))

    def _conditioning(self, node: dict, slot: int, role: str, depth: int) -> str:
        inputs, cls = self.inputs(node), node["class_type"]
        if cls.startswith("CLIPTextEncode") or "TextEncode" in cls:
            for key in ("text", "text_g", "t5xxl", "clip_l", "clip_g", "text_l", "prompt"):
                if key in inputs:
                    text = self.string(inputs[key])
                    if text:
                        return text
            return ""
        if isinstance(inputs.get(role), str) and "conditioning" not in inputs:  # efficiency nodes' loader
            return inputs[role][:MAX_TEXT]
        if "positive" in inputs and "negative" in inputs:  # ControlNetApplyAdvanced and the like: by output
            return self.conditioning(inputs["positive" if slot == 0 else "negative"], role, depth + 1)
        parts = [self.conditioning(inputs[k], role, depth + 1) for k in
                 ("conditioning", "conditioning_1", "conditioning_to", "conditioning_2", "conditioning_from")
                 if k in inputs]
        return ", ".join(dict.fromkeys(p for p in parts if p))


def _is_sampler(node: dict) -> bool:
    inputs = _Graph.inputs(node)
    return ("positive" in inputs and "sampler" in node["class_type"].lower()) or "guider" in inputs


def from_comfyui(prompt: Any, workflow: Any = None) -> Generation | None:
    graph = _json(prompt, MAX_GRAPH) if prompt else None
    if not isinstance(graph, dict) and workflow:
        graph = _from_workflow(_json(workflow, MAX_GRAPH))
    if not isinstance(graph, dict):
        return None
    g = _Graph(graph)
    samplers = _samplers(g)
    if not samplers:
        return None
    gen = Generation("comfyui")
    for s in samplers:  # the first sampler of the picture's chain that has a prompt
        pos, neg = _prompts(g, s)
        if pos or neg:
            gen.positive, gen.negative = pos.strip(), neg.strip()
            break
    _settings(g, samplers[0], gen)
    for s in samplers[1:]:  # what the first sampler does not say, a later one may
        _settings(g, s, gen, fill_only=True)
    if gen.vae is None:
        gen.vae = _decoder_vae(g)
    text, loras = lora_tags(gen.positive)
    if loras:  # a custom node that reads A1111 tags: the tags are not the picture's text
        gen.positive, gen.loras = _tidy(text), gen.loras + loras
    gen.embeddings = sorted({m for t in (gen.positive, gen.negative)
                             for m in re.findall(r"embedding:([\w.\-]+)", t)})
    return gen


def _outputs(g: _Graph) -> list[dict]:
    return [n for n in g.nodes.values() if n["class_type"] in OUTPUTS or n["class_type"].startswith("Save")]


def _decoder_vae(g: _Graph) -> str | None:
    """The VAE the saved picture was decoded with, when a loader of its own gives it."""
    for out in _outputs(g):
        decoder = next((n for n in g.upstream(out) if "VAEDecode" in n["class_type"]), None)
        if decoder is None:
            continue
        found = g.node(g.inputs(decoder).get("vae"))
        chain = [found[0], *g.upstream(found[0])] if found else []
        return next((_name(g.inputs(n).get("vae_name")) for n in chain if n["class_type"] == "VAELoader"), None)
    return None


def _samplers(g: _Graph) -> list[dict]:
    """The samplers that made the saved picture, first to last: from the output node back along the latent
    chain.  Without an output node, every sampler no other sampler reads from heads its own chain."""
    finals = []
    for out in _outputs(g):
        finals += [n for n in g.upstream(out) if _is_sampler(n)][:1]
    if not finals:
        all_samplers = [n for n in g.nodes.values() if _is_sampler(n)]
        fed = {id(n) for s in all_samplers for n in g.upstream(s) if _is_sampler(n)}
        finals = [s for s in all_samplers if id(s) not in fed][:1]
    if not finals:
        return []
    final = finals[0]
    chain = [final] + [n for n in g.upstream(final, ("latent_image", "samples", "latent", "pixels", "image"))
                       if _is_sampler(n)]
    return list(reversed(chain))


def _prompts(g: _Graph, sampler: dict) -> tuple[str, str]:
    inputs = g.inputs(sampler)
    if "guider" in inputs:
        found = g.node(inputs["guider"])
        if found is None:
            return "", ""
        guider = g.inputs(found[0])
        if "conditioning" in guider:  # BasicGuider (Flux): one conditioning, no negative
            return g.conditioning(guider["conditioning"], "positive"), ""
        positive = guider.get("positive", guider.get("cond1"))
        return g.conditioning(positive, "positive"), g.conditioning(guider.get("negative"), "negative")
    return g.conditioning(inputs.get("positive"), "positive"), g.conditioning(inputs.get("negative"), "negative")


def _settings(g: _Graph, sampler: dict, gen: Generation, fill_only: bool = False) -> None:
    """Sampler, schedule, steps, CFG and seed of one sampler (a custom sampler's from the nodes it reads),
    then the checkpoint, LoRAs, VAE, CLIP skip and size found upstream of it."""
    found: dict[str, Any] = {}
    inputs = g.inputs(sampler)
    scope = [sampler] + [n for n in g.upstream(sampler) if not _is_sampler(n)]
    for node in scope:
        _collect(node["class_type"], g.inputs(node), found)
    if "denoise" in inputs:
        found.setdefault("denoise", inputs["denoise"])
    values = {"sampler": _name(found.get("sampler")), "schedule": _name(found.get("schedule")),
              "steps": _int(found.get("steps"), 1, 1000), "cfg": _float(found.get("cfg"), 0, 100),
              "seed": _int(found.get("seed"), -1, SEED_MAX), "checkpoint": _name(found.get("checkpoint")),
              "vae": _name(found.get("vae")), "clip_skip": found.get("clip_skip"), "size": found.get("size")}
    for k, v in values.items():
        if v is not None and (not fill_only or getattr(gen, k) in (None, "", [])):
            setattr(gen, k, v)
    if found.get("loras") and not fill_only:
        gen.loras = list(reversed(found["loras"]))  # nearest the checkpoint first, as they were applied


def _collect(cls: str, i: dict, found: dict[str, Any]) -> None:
    """What one node upstream of a sampler says of the generation, into ``found`` (the nearest node first)."""
    for key, field_name in (("sampler_name", "sampler"), ("scheduler", "schedule"), ("steps", "steps"),
                            ("cfg", "cfg"), ("seed", "seed"), ("noise_seed", "seed")):
        if key in i and not isinstance(i[key], list) and field_name not in found:
            found[field_name] = i[key]
    if cls == "FluxGuidance" and "cfg" not in found:
        found["cfg"] = i.get("guidance")
    if cls in ("CheckpointLoaderSimple", "CheckpointLoader", "Efficient Loader", "Eff. Loader SDXL",
               "ImageOnlyCheckpointLoader", "CheckpointLoader|pysssss") or "ckpt_name" in i:
        found.setdefault("checkpoint", i.get("ckpt_name") or i.get("base_ckpt_name"))
        if isinstance(i.get("lora_name"), str) and i["lora_name"] not in ("None", ""):
            found.setdefault("loras", []).append(LoraRef(i["lora_name"], _float(
                i.get("lora_model_strength"), -100, 100) or 1.0))
    if cls in ("UNETLoader", "UnetLoaderGGUF"):
        found.setdefault("checkpoint", i.get("unet_name"))
    if cls.startswith("LoraLoader") and isinstance(i.get("lora_name"), str):
        model_w = _float(i.get("strength_model"), -100, 100)
        clip_w = _float(i.get("strength_clip"), -100, 100)
        w = 1.0 if model_w is None else model_w
        found.setdefault("loras", []).append(LoraRef(i["lora_name"], w, clip_w if clip_w not in (None, w)
                                                     else None))
    if cls == "VAELoader":
        found.setdefault("vae", i.get("vae_name"))
    stop = _int(i.get("stop_at_clip_layer", i.get("clip_skip") if "Loader" in cls else None), -24, -1)
    if stop is not None:  # CLIPSetLastLayer, or an efficiency loader's clip_skip: -2 is A1111's "Clip skip: 2"
        found.setdefault("clip_skip", -stop)
    if cls.startswith("Empty") and "Latent" in cls:
        found.setdefault("size", _size(i.get("width"), i.get("height")))


# The widgets of the nodes a workflow-only file is read for, in the order the UI stores them.
WIDGETS = {
    "KSampler": ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", "control_after_generate", "steps", "cfg", "sampler_name",
                         "scheduler", "start_at_step", "end_at_step", "return_with_leftover_noise"),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "VAELoader": ("vae_name",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "RandomNoise": ("noise_seed", "control_after_generate"),
    "CFGGuider": ("cfg",),
    "FluxGuidance": ("guidance",),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "PrimitiveNode": ("value",),
    "PrimitiveString": ("value",),
    "PrimitiveStringMultiline": ("value",),
    "SaveImage": ("filename_prefix",),
}


def _from_workflow(workflow: Any) -> dict | None:
    """A UI workflow (``nodes`` and ``links``) as an API graph, for the nodes whose widgets are known (and
    text encoders: their first non-empty text widget)."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        return None
    links = {}
    for link in workflow.get("links", [])[:MAX_NODES * 4] if isinstance(workflow.get("links"), list) else []:
        if isinstance(link, list) and len(link) >= 5 and all(isinstance(x, int) for x in link[:5]):
            links[link[0]] = [str(link[1]), link[2]]
    graph = {}
    for node in workflow["nodes"][:MAX_NODES]:
        if not isinstance(node, dict) or not isinstance(node.get("type"), str) or "id" not in node:
            continue
        cls = node["type"]
        values = node.get("widgets_values") if isinstance(node.get("widgets_values"), list) else []
        inputs: dict[str, Any] = {}
        if cls.startswith("CLIPTextEncode"):
            text = next((v for v in values if isinstance(v, str) and v.strip()), "")
            inputs["text"] = text
        else:
            inputs.update(zip(WIDGETS.get(cls, ()), values, strict=False))
        for i in node.get("inputs", []) if isinstance(node.get("inputs"), list) else []:
            if isinstance(i, dict) and isinstance(i.get("name"), str) and i.get("link") in links:
                inputs[i["name"]] = links[i["link"]]
        graph[str(node["id"])] = {"class_type": cls, "inputs": inputs}
    return graph

