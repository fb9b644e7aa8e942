"""Textual inversions: found as A1111 and ComfyUI find them, loaded safely for one repaint, and where they act."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from stages import embeddings
from tests.conftest import DATA
from tests.helpers.hostile import write_hostile


def _embedding(models, name: str, vectors: torch.Tensor, ext: str = ".safetensors"):
    path = models / "embeddings" / f"{name}{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".safetensors":
        save_file({"emb_params": vectors}, str(path))  # A1111's safetensors layout
    else:
        torch.save({"string_to_param": {"*": vectors}, "name": name, "step": 100}, str(path))  # A1111's .pt
    return path


def test_a_word_a1111_style_or_embedding_colon_comfyui_style_and_what_is_missing(tmp_path):
    models = tmp_path / "models"
    easy = _embedding(models, "EasyNegative", torch.zeros(2, 32), ".pt")
    style = _embedding(models, "mystyle", torch.zeros(1, 32))
    w = embeddings.wanted("a fox, embedding:mystyle.safetensors, embedding:gone", "EasyNegative, lowres", models,
                          named=["EasyNegative", "bad-hands-5"])
    assert w.files == (("EasyNegative", easy), ("mystyle", style))
    assert (w.prompt, w.negative) == ("a fox, mystyle, gone", "EasyNegative, lowres")
    assert w.missing == ("gone", "bad-hands-5")
    assert embeddings.wanted("EasyNegativeX and my-mystyle", "", models).files == ()  # whole words only


@pytest.fixture(scope="module")
def engine(tiny_sd):
    from stages.generative import acquire
    from stages.models import ModelKind, Models, ModelSetting

    return acquire(Models(None, tiny_sd.parent), ModelSetting("[inpaint].model", str(tiny_sd), ModelKind.DIFFUSION),
                   None, "cpu")


def test_an_embedding_acts_exactly_where_its_word_stands(engine, tmp_path):
    from stages.diffusion import weighting

    pipe = engine.pipe
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    vectors = torch.randn(2, width, generator=torch.Generator().manual_seed(1))
    path = _embedding(tmp_path, "mystyle", vectors)
    plain, _, _ = weighting.embeddings(pipe, "a red fox mystyle", "")
    (loaded,) = engine.embedding(path)
    pipe.load_textual_inversion(loaded, token="mystyle")
    try:
        converted = pipe.maybe_convert_prompt("a red fox mystyle", pipe.tokenizer)
        ids = pipe.tokenizer(converted, add_special_tokens=False).input_ids
        with torch.inference_mode():
            inputs = pipe.text_encoder.get_input_embeddings()(torch.tensor(ids))
        assert torch.allclose(inputs[-2:], vectors.to(inputs.dtype))  # its two vectors, where the word stood
        with_it, _, _ = weighting.embeddings(pipe, "a red fox mystyle", "")
    finally:
        pipe.unload_textual_inversion()
    # "a red fox" is 3 tokens after the start token: those positions see nothing of it (the encoder is causal)
    assert torch.allclose(with_it[0, :4], plain[0, :4], atol=1e-5)
    assert not torch.allclose(with_it[0, 4:6], plain[0, 4:6])
    assert "mystyle" not in pipe.tokenizer.get_vocab()


def test_an_sdxl_embedding_acts_in_both_encoders_where_its_word_stands_and_leaves_with_the_repaint(tmp_path,
                                                                                                    tiny_sdxl):
    from stages.diffusion import engine as engine_mod
    from stages.diffusion import weighting
    from stages.diffusion.samplers import Sampling
    from stages.generative import acquire
    from stages.models import ModelKind, Models, ModelSetting

    eng = acquire(Models(None, tiny_sdxl.parent),
                  ModelSetting("[inpaint].model", str(tiny_sdxl), ModelKind.DIFFUSION), None, "cpu")
    try:
        pipe = eng.pipe
        g = torch.Generator().manual_seed(2)
        clip_l, clip_g = torch.randn(2, 32, generator=g), torch.randn(2, 48, generator=g)  # the two encoders' widths
        path = tmp_path / "embeddings" / "xlstyle.safetensors"
        path.parent.mkdir()
        save_file({"clip_l": clip_l, "clip_g": clip_g}, str(path))  # the SDXL embedding layout
        vectors = eng.embedding(path)
        assert [v.shape for v in vectors] == [(2, 32), (2, 48)]
        sd1 = _embedding(tmp_path, "sd1style", torch.zeros(1, 32))
        with pytest.raises(ValueError, match="not an SDXL embedding"):
            eng.embedding(sd1)
        plain = weighting.embeddings_xl(pipe, "a red fox xlstyle", "")[0]
        for (encoder, tokenizer), v in zip(eng.text_pairs(), vectors, strict=True):
            pipe.load_textual_inversion(v, token="xlstyle", text_encoder=encoder, tokenizer=tokenizer)
        try:
            for (encoder, tokenizer), v in zip(eng.text_pairs(), (clip_l, clip_g), strict=True):
                ids = tokenizer(pipe.maybe_convert_prompt("a red fox xlstyle", tokenizer),
                                add_special_tokens=False).input_ids
                with torch.inference_mode():
                    inputs = encoder.get_input_embeddings()(torch.tensor(ids))
                assert torch.allclose(inputs[-2:], v.to(inputs.dtype))
            with_it = weighting.embeddings_xl(pipe, "a red fox xlstyle", "")[0]
        finally:
            for encoder, tokenizer in eng.text_pairs():
                pipe.unload_textual_inversion(tokenizer=tokenizer, text_encoder=encoder)
        assert torch.allclose(with_it[0, :4], plain[0, :4], atol=1e-5)  # causal: the words before it see nothing
        assert not torch.allclose(with_it[0, 4:6, :32], plain[0, 4:6, :32])  # the first encoder's half
        assert not torch.allclose(with_it[0, 4:6, 32:], plain[0, 4:6, 32:])  # the second's
        # Through a repaint: it changes the pixels, and leaves nothing behind in either tokenizer.
        image = Image.open(DATA / "astronaut.png").convert("RGB").resize((64, 64))
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        args = dict(steps=2, guidance=5.0, strength=1.0, seed=3)
        before = eng.inpaint(image, mask, "a red fox xlstyle", "", **args)
        used = eng.inpaint(image, mask, "a red fox xlstyle", "", sampling=Sampling(embeddings=(("xlstyle", vectors),)),
                           **args)
        after = eng.inpaint(image, mask, "a red fox xlstyle", "", **args)
        assert list(before.getdata()) != list(used.getdata()) and list(before.getdata()) == list(after.getdata())
        assert "xlstyle" not in pipe.tokenizer.get_vocab() and "xlstyle" not in pipe.tokenizer_2.get_vocab()
    finally:
        engine_mod.unload()


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(engine, tmp_path):
    path = tmp_path / "embeddings" / "evil.pt"
    ran = write_hostile(path, lambda code: {"string_to_param": {"*": code}})
    with pytest.raises(ValueError, match="could not be read safely"):
        engine.embedding(path)
    assert not ran.exists()
    wrong = _embedding(tmp_path, "wide", torch.zeros(1, 999))
    with pytest.raises(ValueError, match="not an embedding for this model"):
        engine.embedding(wrong)


def test_a_repaint_uses_the_embeddings_its_prompt_names_and_says_what_it_lacked(tmp_path, tiny_sd):
    import shutil

    from tests.test_checkpoints import _run

    models = tmp_path / "models"
    shutil.copytree(tiny_sd, models / "diffusers" / "tiny")
    width = 32
    _embedding(models, "mystyle", torch.randn(1, width))
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "an astronaut, mystyle\nNegative prompt: EasyNegative\n"
                                'Steps: 3, Seed: 1, CFG scale: 5, TI hashes: "EasyNegative: c74b4e810b03"')
    src = tmp_path / "astro.png"
    Image.open(DATA / "astronaut.png").save(src, pnginfo=info)
    entry = _run(tmp_path / "run", '[inpaint]\nmodel = "tiny"\nresolution = 64\n', src, models)
    region = entry.details.regions[0]
    assert entry.status == "done" and region.embeddings == ["mystyle"]
    assert region.missing == [f"EasyNegative: not in {models / 'embeddings'}"]
