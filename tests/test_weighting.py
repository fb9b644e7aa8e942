"""Prompts as A1111 reads them: attention syntax, BREAK, chunks of 75 tokens, the embeddings they make."""

from __future__ import annotations

import pytest

from stages.diffusion import weighting


@pytest.mark.parametrize("text, expected", [  # A1111's own examples of its prompt parser
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1),
      ("sky", 1.4641), (".", 1.1)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("(detailed face:1.3), [blurry]", [("detailed face", 1.3), (", ", 1.0), ("blurry", 1 / 1.1)]),
])
def test_attention_syntax_gives_a1111s_weights(text, expected):
    got = weighting.parse(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


@pytest.fixture(scope="module")
def pipe(tiny_sd):
    import diffusers
    import torch

    pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(tiny_sd)
    with torch.no_grad():  # a trained encoder's final norm has a bias: its embeddings' mean is not 0
        pipe.text_encoder.final_layer_norm.bias += 0.1
    return pipe


def test_long_prompts_go_into_chunks_of_75_back_to_the_last_comma_and_break_ends_one(pipe):
    tok = pipe.tokenizer
    words = ", ".join(f"word{i}" for i in range(60))  # well past 75 tokens
    chunks = weighting.chunk(tok, words)
    assert len(chunks.tokens) >= 2 and all(len(t) == 75 for t in chunks.tokens)
    comma = tok(",", add_special_tokens=False).input_ids[-1]
    first = [t for t in chunks.tokens[0] if t != tok.pad_token_id]
    assert first[-1] == comma  # the first chunk ends at a comma, not inside a word
    assert chunks.count == len(tok(words, add_special_tokens=False).input_ids)
    broken = weighting.chunk(tok, "a red fox BREAK in snow")
    assert len(broken.tokens) == 2 and broken.tokens[1][0] == tok("in", add_special_tokens=False).input_ids[0]


def test_a_plain_prompt_embeds_as_the_pipeline_itself_does(pipe):
    import torch

    ours, negative, _ = weighting.embeddings(pipe, "a red fox in snow", "blurry")
    own, own_negative = pipe.encode_prompt("a red fox in snow", "cpu", 1, True, "blurry")
    assert ours.shape == own.shape == (1, 77, own.shape[-1])
    assert torch.allclose(ours, own, atol=1e-5) and torch.allclose(negative, own_negative, atol=1e-5)


def test_weights_scale_the_tokens_they_cover_and_the_mean_is_kept(pipe):
    import torch

    plain, _, _ = weighting.embeddings(pipe, "a fox in snow", "")
    weighted, _, _ = weighting.embeddings(pipe, "a (fox:1.5) in snow", "")
    ids = pipe.tokenizer("a fox in snow", add_special_tokens=False).input_ids
    fox = 1 + ids.index(pipe.tokenizer("fox", add_special_tokens=False).input_ids[0])  # after the start token
    scale = torch.ones(77)
    scale[fox] = 1.5
    expected = plain * scale[None, :, None]
    expected = expected * (plain.mean() / expected.mean())  # A1111 brings the chunk back to its mean
    assert torch.allclose(weighted, expected, atol=1e-5) and not torch.allclose(weighted, plain)


def test_a_long_prompt_is_encoded_chunk_by_chunk_and_the_negative_padded_to_its_length(pipe):
    import torch

    words = ", ".join(f"word{i}" for i in range(60))
    positive, negative, chunks = weighting.embeddings(pipe, words, "blurry")
    n = len(chunks.tokens)
    assert positive.shape[1] == negative.shape[1] == 77 * n
    tok, enc = pipe.tokenizer, pipe.text_encoder
    with torch.inference_mode():
        second = enc(torch.tensor([[tok.bos_token_id, *chunks.tokens[1], tok.eos_token_id]])).last_hidden_state
    assert torch.allclose(positive[:, 77:154], second, atol=1e-5)  # each chunk encoded on its own


def test_clip_skip_reads_the_layer_a1111_reads(pipe):
    import torch

    one, _, _ = weighting.embeddings(pipe, "a red fox", "", 1)
    two, _, _ = weighting.embeddings(pipe, "a red fox", "", 2)
    ids = pipe.tokenizer("a red fox", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = pipe.text_encoder(ids, output_hidden_states=True)
        expected = pipe.text_encoder.final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(two, expected, atol=1e-5) and not torch.allclose(two, one)


@pytest.fixture(scope="module")
def xl(tiny_sdxl):
    import diffusers

    return diffusers.StableDiffusionXLInpaintPipeline.from_pretrained(tiny_sdxl)


def test_sdxl_plain_prompts_embed_as_the_pipeline_itself_does(xl):
    import torch

    ours, negative, pooled, negative_pooled, _ = weighting.embeddings_xl(xl, "a red fox in snow", "blurry")
    own, own_negative, own_pooled, own_negative_pooled = xl.encode_prompt(
        "a red fox in snow", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt="blurry")
    assert ours.shape == own.shape and torch.allclose(ours, own, atol=1e-5)
    assert torch.allclose(negative, own_negative, atol=1e-5)
    assert torch.allclose(pooled, own_pooled, atol=1e-5) and torch.allclose(negative_pooled, own_negative_pooled,
                                                                             atol=1e-5)


def test_sdxl_long_prompts_are_chunked_not_cut(xl):
    words = ", ".join(f"word{i}" for i in range(60))
    ours, negative, pooled, _, chunks = weighting.embeddings_xl(xl, words, "")
    assert len(chunks.tokens) >= 2 and ours.shape[1] == negative.shape[1] == 77 * len(chunks.tokens)
    import torch

    tok = xl.tokenizer_2
    with torch.inference_mode():
        first = xl.text_encoder_2(torch.tensor([[tok.bos_token_id, *chunks.tokens[0], tok.eos_token_id]]))[0]
    assert torch.allclose(pooled, first, atol=1e-5)  # the pooled embedding is the first chunk's
