"""The generation record: one sample per tool, written as that tool writes it, read back to its record; hostile
metadata gives an empty record, never an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from stages import generation as gen_mod
from stages.generation import LoraRef, read

A1111_TEXT = (
    "masterpiece, 1girl, <lora:armor_v2:0.8>, (detailed face:1.3), silver armor, BREAK castle\n"
    "Negative prompt: EasyNegative, lowres, <lora:bad_hands:0.5:0.3>\n"
    'Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 832x1216, '
    'Model hash: 2a1b3c4d5e, Model: ponyDiffusionV6XL_v6StartWithThisOne, VAE: sdxl_vae.safetensors, '
    'Clip skip: 2, Lora hashes: "armor_v2: 0a1b2c3d4e5f, bad_hands: 9f8e7d6c5b4a", '
    'TI hashes: "EasyNegative: c74b4e810b03", Version: v1.10.1')


def png(tmp_path: Path, chunks: dict[str, str], name: str = "gen.png") -> Image.Image:
    """A PNG with these text chunks, written as the generators write them (Pillow's PngInfo: tEXt/iTXt)."""
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    path = tmp_path / name
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)
    return Image.open(path)


def exif_image(tmp_path: Path, comment: bytes, fmt: str, ifd0: bool = False) -> Image.Image:
    """A JPEG or WebP with an EXIF UserComment, in the Exif IFD as A1111/Forge write it (piexif), or in IFD0
    as Fooocus writes it."""
    exif = Image.Exif()
    if ifd0:
        exif[0x9286] = comment
    else:
        exif.get_ifd(0x8769)[0x9286] = comment
    path = tmp_path / f"gen.{fmt.lower()}"
    Image.new("RGB", (16, 16)).save(path, fmt, exif=exif.tobytes())
    return Image.open(path)


def test_a1111_png_reads_every_field_and_takes_the_lora_tags_out_of_the_prompt(tmp_path):
    g = read(png(tmp_path, {"parameters": A1111_TEXT}))
    assert g.tool == "a1111"
    assert g.positive == "masterpiece, 1girl, (detailed face:1.3), silver armor, BREAK castle"
    assert g.negative == "EasyNegative, lowres"
    assert (g.checkpoint, g.checkpoint_hash, g.vae) == ("ponyDiffusionV6XL_v6StartWithThisOne", "2a1b3c4d5e",
                                                         "sdxl_vae.safetensors")
    assert (g.sampler, g.schedule, g.steps, g.cfg, g.seed, g.clip_skip, g.size) == (
        "DPM++ 2M", "Karras", 28, 6.5, 1234567890, 2, [832, 1216])
    assert g.loras == [LoraRef("armor_v2", 0.8, None, "lora", "0a1b2c3d4e5f")]
    assert g.embeddings == ["EasyNegative"]


def test_lora_tags_follow_a1111_te_then_unet_and_named_weights():
    text, loras = gen_mod.lora_tags("a <lora:one:0.5> b <lora:two:0.7:0.3> <lyco:three:unet=0.2> <lora:four>")
    assert text.split() == ["a", "b"]
    assert loras == [LoraRef("one", 0.5), LoraRef("two", 0.3, 0.7), LoraRef("three", 0.2, 1.0, "lyco"),
                     LoraRef("four", 1.0)]


@pytest.mark.parametrize("order", ["utf-16-be", "utf-16-le"])
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111_and_forge_jpeg_and_webp_carry_it_in_the_exif_user_comment(tmp_path, fmt, order):
    text = A1111_TEXT.replace("Version: v1.10.1", "Version: f2.0.1v1.10.1-previous-313-g4f7ae82d")
    g = read(exif_image(tmp_path, b"UNICODE\0" + text.encode(order), fmt))
    assert g.tool == "forge" and g.steps == 28 and g.positive.startswith("masterpiece, 1girl")
    ascii_ = read(exif_image(tmp_path, b"ASCII\0\0\0" + A1111_TEXT.encode(), fmt))
    assert ascii_.tool == "a1111" and ascii_.checkpoint == "ponyDiffusionV6XL_v6StartWithThisOne"


def test_an_old_a1111_sampler_with_its_schedule_in_the_name(tmp_path):
    g = read(png(tmp_path, {"parameters": "a cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1"}))
    assert (g.sampler, g.schedule, g.negative) == ("DPM++ 2M", "Karras", "")


def test_civitai_resources_name_the_checkpoint_and_loras(tmp_path):
    resources = json.dumps([{"type": "checkpoint", "modelVersionId": 290640, "modelName": "Pony Diffusion V6 XL",
                             "modelVersionName": "V6"}, {"type": "lora", "weight": 0.65, "modelVersionId": 1,
                                                         "modelName": "Detail Tweaker"}])
    text = f"a knight\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 9, Civitai resources: {resources}"
    g = read(png(tmp_path, {"parameters": text}))
    assert g.tool == "civitai" and g.checkpoint == "Pony Diffusion V6 XL"
    assert g.loras == [LoraRef("Detail Tweaker", 0.65)]


def test_fooocus_json_scheme_and_its_jpeg(tmp_path):
    meta = {"adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "juggernautXL_v8Rundiffusion",
            "base_model_hash": "aeb7e9e6897a1e58b10494bd989d001e3d4bc9b634633cd7b559838f612c2867",
            "full_negative_prompt": ["unrealistic", "lowres"], "full_prompt": ["a cat, sharp"],
            "guidance_scale": 4.0, "loras": [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]],
            "negative_prompt": "lowres", "performance": "Speed", "prompt": "a cat", "refiner_model": "None",
            "resolution": "(1152, 896)", "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras",
            "seed": "1183271012", "sharpness": 2.0, "steps": 30, "styles": "['Fooocus V2']", "vae": "Default (model)",
            "version": "Fooocus v2.5.5"}
    text = json.dumps(dict(sorted(meta.items())))
    g = read(png(tmp_path, {"parameters": text, "fooocus_scheme": "fooocus"}))
    assert (g.tool, g.positive, g.negative, g.checkpoint) == ("fooocus", "a cat", "lowres",
                                                               "juggernautXL_v8Rundiffusion")
    assert (g.sampler, g.schedule, g.steps, g.cfg, g.seed, g.size, g.vae) == (
        "dpmpp_2m_sde_gpu", "karras", 30, 4.0, 1183271012, [1152, 896], None)
    assert g.loras == [LoraRef("sd_xl_offset_example-lora_1.0", 0.1, hash="4852686128")]
    jpeg = read(exif_image(tmp_path, text.encode(), "JPEG", ifd0=True))
    assert jpeg.tool == "fooocus" and jpeg.positive == "a cat"


def test_swarmui_json(tmp_path):
    meta = {"sui_image_params": {"prompt": "a lighthouse <lora:film_grain:0.6>", "negativeprompt": "blurry",
                                 "model": "OfficialStableDiffusion/sd_xl_base_1.0", "seed": 1897, "steps": 20,
                                 "cfgscale": 7.0, "aspectratio": "1:1", "width": 1024, "height": 1024,
                                 "sampler": "dpmpp_2m", "scheduler": "karras", "clipstopatlayer": -2,
                                 "loras": ["detail_slider"], "loraweights": ["0.8"], "swarm_version": "0.9.2.1"},
            "sui_extra_data": {"date": "2024-09-01", "prep_time": "0.01 sec", "generation_time": "3.2 sec"}}
    g = read(png(tmp_path, {"parameters": json.dumps(meta, indent=2)}))
    assert (g.tool, g.positive, g.negative, g.checkpoint) == ("swarmui", "a lighthouse", "blurry",
                                                               "OfficialStableDiffusion/sd_xl_base_1.0")
    assert (g.sampler, g.schedule, g.steps, g.cfg, g.seed, g.clip_skip, g.size) == (
        "dpmpp_2m", "karras", 20, 7.0, 1897, 2, [1024, 1024])
    assert g.loras == [LoraRef("film_grain", 0.6), LoraRef("detail_slider", 0.8)]


def test_invokeai_metadata(tmp_path):
    meta = {"generation_mode": "sdxl_txt2img", "positive_prompt": "a fox in snow", "negative_prompt": "blurry",
            "width": 1024, "height": 1024, "seed": 42, "rand_device": "cpu", "cfg_scale": 5.5, "steps": 30,
            "scheduler": "dpmpp_2m_k", "model": {"key": "a1b2", "hash": "blake3:0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                                                  "name": "Juggernaut XL v9", "base": "sdxl", "type": "main"},
            "loras": [{"model": {"key": "c3", "name": "add-detail-xl", "base": "sdxl"}, "weight": 0.75}],
            "app_version": "4.2.9"}
    g = read(png(tmp_path, {"invokeai_metadata": json.dumps(meta)}))
    assert (g.tool, g.positive, g.negative, g.checkpoint, g.sampler, g.steps, g.cfg, g.seed) == (
        "invokeai", "a fox in snow", "blurry", "Juggernaut XL v9", "dpmpp_2m_k", 30, 5.5, 42)
    assert g.checkpoint_hash == "0f1e2d3c4b5a69788796a5b4c3d2e1f0" and g.loras == [LoraRef("add-detail-xl", 0.75)]


def test_novelai_comment(tmp_path):
    comment = {"prompt": "1girl, cherry blossoms", "steps": 28, "height": 1216, "width": 832, "scale": 5.0,
               "uncond_scale": 1.0, "cfg_rescale": 0.0, "seed": 3551813436, "n_samples": 1,
               "noise_schedule": "native", "sampler": "k_euler_ancestral", "uc": "lowres, bad anatomy"}
    g = read(png(tmp_path, {"Title": "AI generated image", "Description": "1girl, cherry blossoms",
                            "Software": "NovelAI", "Source": "NovelAI Diffusion V3 C1E7DB",
                            "Comment": json.dumps(comment)}))
    assert (g.tool, g.positive, g.negative, g.sampler, g.steps, g.cfg, g.seed, g.size) == (
        "novelai", "1girl, cherry blossoms", "lowres, bad anatomy", "k_euler_ancestral", 28, 5.0, 3551813436,
        [832, 1216])


# --------------------------------------------------------------------------- ComfyUI


def _node(cls: str, **inputs) -> dict:
    return {"inputs": inputs, "class_type": cls, "_meta": {"title": cls}}


def hires_graph() -> dict:
    """Checkpoint → two LoRAs → base KSampler → latent upscale → hires KSampler (another, shorter prompt) →
    VAE decode with its own VAE → SaveImage; CLIP skip 2; the hires sampler listed first in the JSON."""
    return {
        "20": _node("KSampler", seed=77, steps=12, cfg=5.0, sampler_name="dpmpp_2m", scheduler="karras",
                    denoise=0.45, model=["11", 0], positive=["21", 0], negative=["7", 0], latent_image=["15", 0]),
        "21": _node("CLIPTextEncode", text="sharp", clip=["12", 0]),
        "4": _node("CheckpointLoaderSimple", ckpt_name="illustriousXL_v01.safetensors"),
        "10": _node("LoraLoader", lora_name="armor_v2.safetensors", strength_model=0.8, strength_clip=0.6,
                    model=["4", 0], clip=["4", 1]),
        "11": _node("LoraLoaderModelOnly", lora_name="detail.safetensors", strength_model=0.5, model=["10", 0]),
        "12": _node("CLIPSetLastLayer", stop_at_clip_layer=-2, clip=["10", 1]),
        "5": _node("EmptyLatentImage", width=832, height=1216, batch_size=1),
        "6": _node("CLIPTextEncode", text="1girl, silver armor, embedding:goodhands", clip=["12", 0]),
        "7": _node("CLIPTextEncode", text="lowres, embedding:EasyNegative", clip=["12", 0]),
        "3": _node("KSampler", seed=1234, steps=28, cfg=6.0, sampler_name="euler_ancestral", scheduler="normal",
                   denoise=1.0, model=["11", 0], positive=["6", 0], negative=["7", 0], latent_image=["5", 0]),
        "15": _node("LatentUpscaleBy", upscale_method="nearest-exact", scale_by=1.5, samples=["3", 0]),
        "8": _node("VAEDecode", samples=["20", 0], vae=["9", 0]),
        "9": _node("VAELoader", vae_name="sdxl_vae.safetensors"),
        "30": _node("SaveImage", filename_prefix="ComfyUI", images=["8", 0]),
        "40": _node("CLIPTextEncode", text="an unused prompt", clip=["12", 0]),
    }


def test_comfyui_the_base_sampler_on_the_path_to_the_saved_image(tmp_path):
    g = read(png(tmp_path, {"prompt": json.dumps(hires_graph()), "workflow": "{}"}))
    assert (g.tool, g.positive, g.negative) == ("comfyui", "1girl, silver armor, embedding:goodhands",
                                                "lowres, embedding:EasyNegative")
    assert (g.checkpoint, g.vae, g.clip_skip, g.size) == ("illustriousXL_v01.safetensors", "sdxl_vae.safetensors",
                                                          2, [832, 1216])
    assert (g.sampler, g.schedule, g.steps, g.cfg, g.seed) == ("euler_ancestral", "normal", 28, 6.0, 1234)
    assert g.loras == [LoraRef("armor_v2.safetensors", 0.8, 0.6), LoraRef("detail.safetensors", 0.5)]
    assert g.embeddings == ["EasyNegative", "goodhands"]


def test_comfyui_flux_template_with_a_custom_sampler_and_text_from_string_nodes(tmp_path):
    graph = {
        "6": _node("CLIPTextEncodeFlux", clip_l=["31", 0], t5xxl=["31", 0], guidance=3.5, clip=["11", 0]),
        "30": _node("PrimitiveString", value="a red fox"),
        "32": _node("PrimitiveString", value="in deep snow"),
        "31": _node("StringConcatenate", string_a=["30", 0], string_b=["32", 0], delimiter=", "),
        "26": _node("FluxGuidance", guidance=3.5, conditioning=["6", 0]),
        "22": _node("BasicGuider", model=["12", 0], conditioning=["26", 0]),
        "12": _node("UNETLoader", unet_name="flux1-dev.safetensors", weight_dtype="fp8_e4m3fn"),
        "16": _node("KSamplerSelect", sampler_name="euler"),
        "17": _node("BasicScheduler", scheduler="simple", steps=20, denoise=1.0, model=["12", 0]),
        "25": _node("RandomNoise", noise_seed=219670278747233),
        "27": _node("EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
        "13": _node("SamplerCustomAdvanced", noise=["25", 0], guider=["22", 0], sampler=["16", 0],
                    sigmas=["17", 0], latent_image=["27", 0]),
        "8": _node("VAEDecode", samples=["13", 0], vae=["10", 0]),
        "10": _node("VAELoader", vae_name="ae.safetensors"),
        "9": _node("SaveImage", filename_prefix="flux", images=["8", 0]),
    }
    g = read(png(tmp_path, {"prompt": json.dumps(graph)}))
    assert (g.positive, g.negative, g.checkpoint, g.vae) == ("a red fox, in deep snow", "", "flux1-dev.safetensors",
                                                             "ae.safetensors")
    assert (g.sampler, g.schedule, g.steps, g.cfg, g.seed, g.size) == ("euler", "simple", 20, 3.5, 219670278747233,
                                                                       [1024, 1024])


def test_comfyui_efficiency_nodes(tmp_path):
    graph = {
        "1": _node("Efficient Loader", ckpt_name="dreamshaper_8.safetensors", vae_name="Baked VAE", clip_skip=-2,
                   lora_name="None", lora_model_strength=1.0, lora_clip_strength=1.0,
                   positive="a castle at dusk", negative="blurry", empty_latent_width=512,
                   empty_latent_height=768, batch_size=1),
        "2": _node("KSampler (Efficient)", seed=5, steps=25, cfg=7.0, sampler_name="dpmpp_2m",
                   scheduler="karras", denoise=1.0, preview_method="auto", vae_decode="true", model=["1", 0],
                   positive=["1", 1], negative=["1", 2], latent_image=["1", 3], optional_vae=["1", 4]),
        "3": _node("SaveImage", filename_prefix="eff", images=["2", 5]),
    }
    g = read(png(tmp_path, {"prompt": json.dumps(graph)}))
    assert (g.positive, g.negative, g.checkpoint, g.steps, g.sampler, g.clip_skip) == (
        "a castle at dusk", "blurry", "dreamshaper_8.safetensors", 25, "dpmpp_2m", 2)


def test_a_workflow_only_file_is_read_for_the_nodes_it_knows(tmp_path):
    workflow = {"last_node_id": 9, "last_link_id": 9, "nodes": [
        {"id": 4, "type": "CheckpointLoaderSimple", "outputs": [], "widgets_values": ["v1-5-pruned.safetensors"]},
        {"id": 6, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
         "widgets_values": ["a watercolour harbour"]},
        {"id": 7, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "type": "CLIP", "link": 5}],
         "widgets_values": ["text, watermark"]},
        {"id": 5, "type": "EmptyLatentImage", "widgets_values": [512, 512, 1]},
        {"id": 3, "type": "KSampler", "inputs": [
            {"name": "model", "link": 1}, {"name": "positive", "link": 4}, {"name": "negative", "link": 6},
            {"name": "latent_image", "link": 2}], "widgets_values": [156680208700286, "randomize", 20, 8, "euler",
                                                                     "normal", 1]},
        {"id": 8, "type": "VAEDecode", "inputs": [{"name": "samples", "link": 7}, {"name": "vae", "link": 8}]},
        {"id": 9, "type": "SaveImage", "inputs": [{"name": "images", "link": 9}], "widgets_values": ["ComfyUI"]}],
        "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"],
                  [4, 6, 0, 3, 1, "CONDITIONING"], [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"],
                  [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4}
    g = read(png(tmp_path, {"workflow": json.dumps(workflow)}))
    assert (g.tool, g.positive, g.negative, g.checkpoint) == ("comfyui", "a watercolour harbour", "text, watermark",
                                                              "v1-5-pruned.safetensors")
    assert (g.steps, g.cfg, g.sampler, g.schedule, g.seed, g.size) == (20, 8.0, "euler", "normal",
                                                                       156680208700286, [512, 512])


# --------------------------------------------------------------------------- hostile metadata


def _deep(n: int) -> str:
    return "[" * n + "]" * n


HOSTILE = {
    "huge parameters": {"parameters": "x" * 70_000},
    "deep json in parameters": {"parameters": '{"a": ' + _deep(5000) + "}"},
    "deep json graph": {"prompt": '{"1": {"class_type": "KSampler", "inputs": {"positive": ' + _deep(3000) + "}}}"},
    "graph of the wrong shape": {"prompt": json.dumps([1, 2, 3])},
    "wrong types": {"prompt": json.dumps({"1": {"class_type": 5, "inputs": []}, "2": "x", "3": {
        "class_type": "KSampler", "inputs": {"positive": ["9", "a"], "steps": "many", "seed": [], "cfg": {}}}})},
    "a cycle": {"prompt": json.dumps({
        "1": _node("KSampler", positive=["2", 0], negative=["3", 0], latent_image=["1", 0], model=["1", 0]),
        "2": _node("ConditioningCombine", conditioning_1=["3", 0], conditioning_2=["2", 0]),
        "3": _node("ConditioningConcat", conditioning_to=["2", 0], conditioning_from=["1", 0]),
        "4": _node("SaveImage", images=["1", 0])})},
    "string cycle": {"prompt": json.dumps({
        "1": _node("KSampler", positive=["2", 0], latent_image=["5", 0], model=["5", 0]),
        "2": _node("CLIPTextEncode", text=["3", 0]), "3": _node("StringConcatenate", string_a=["3", 0]),
        "4": _node("SaveImage", images=["1", 0])})},
    "fooocus wrong types": {"parameters": json.dumps({"base_model": 5, "prompt": ["a"], "loras": "x",
                                                      "resolution": 7, "steps": "1e999"}),
                            "fooocus_scheme": "fooocus"},
    "not a comment": {"Comment": '{"uc": ' + _deep(4000) + "}", "Software": "NovelAI"},
    "invokeai garbage": {"invokeai_metadata": "[[[["},
    "a1111 absurd numbers": {"parameters": "a\nSteps: 99999999999999999999, Seed: -5, CFG scale: nan, Size: 0x0"},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_metadata_gives_an_empty_or_partial_record_never_an_error(tmp_path, case):
    g = read(png(tmp_path, HOSTILE[case]))
    if g is not None:  # whatever was read is of the right types and in range
        assert isinstance(g.positive, str) and len(g.positive) <= gen_mod.MAX_TEXT
        assert g.steps is None or 1 <= g.steps <= 1000
        assert g.seed is None or g.seed >= -1
        assert g.cfg is None or 0 <= g.cfg <= 100
        assert g.size is None or all(v >= 1 for v in g.size)
    if case.startswith(("huge", "deep", "graph of", "not a", "invokeai")):
        assert g is None


def test_the_manifest_keeps_the_record_and_inspect_prints_it(tmp_path):
    import os
    import subprocess
    import sys

    from daemon import config as config_mod
    from tests.conftest import REPO, run_one, write_config

    cfg = config_mod.load(write_config(tmp_path, "[automask]\nenabled = false\n[outpaint]\nenabled = false\n"
                                                 "[upscale]\nenabled = false\n[deliver]\nenabled = false\n"))
    src = cfg.paths.inbox / "gen.png"
    png(tmp_path, {"parameters": A1111_TEXT}, "made.png").save(src, pnginfo=_info(A1111_TEXT))
    out, manifest = run_one(cfg, src, [])
    src = out.archive / "00-original.png"
    kept = manifest.source.generation
    assert kept == read(Image.open(src)) and kept.loras[0].name == "armor_v2"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "inspect", str(src)], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 0 and "made with a1111" in out.stdout and "armor_v2 0.8" in out.stdout
    assert "ponyDiffusionV6XL_v6StartWithThisOne [2a1b3c4d5e]" in out.stdout
    as_json = subprocess.run([sys.executable, "-m", "daemon.cli", "inspect", "--json", str(src)],
                             capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert json.loads(as_json.stdout)["steps"] == 28
    missing = subprocess.run([sys.executable, "-m", "daemon.cli", "inspect", str(tmp_path / "nope.png")],
                             capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "nope.png: cannot be read" in missing.stderr
    assert "Traceback" not in missing.stderr


def _info(text: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    return info
