"""Prompts as A1111 reads them: attention weights, BREAK, and any length in chunks of 75 tokens (SD 1.x/2.x:
``embeddings``; SDXL's two encoders: ``embeddings_xl``).

Syntax (A1111's, which ComfyUI's ``(word:1.2)`` is a subset of): ``(text)`` multiplies the weight of what it
holds by 1.1, ``[text]`` divides it by 1.1, ``(text:1.3)`` multiplies it by 1.3; brackets nest and multiply;
an unclosed bracket still counts to the end; ``\\(`` ``\\)`` ``\\[`` ``\\]`` are the characters themselves;
``BREAK`` ends a chunk.

Encoding, as A1111 does it: the prompt's tokens go into chunks of 75 (a chunk that would cut a phrase goes
back to the last comma within its last 20 tokens), each chunk framed by the start and end tokens and padded
to 77, encoded on its own (the hidden state ``clip_skip`` layers from the end, through the final layer
norm), multiplied token by token by the weights, and brought back to its mean before weighting; the
chunks are joined one after another.  The negative is padded with empty chunks to as many as the prompt
(the pipeline needs the two the same length).

Why not compel (diffusers' choice): it reads another syntax (``word++``, ``(word)1.3``), weights by blending
with a masked prompt, and chunks without A1111's comma backtrack — images made in A1111, Forge or ComfyUI
would be painted with other embeddings than they were made with.  ComfyUI weights by moving a token's
embedding away from the empty prompt's rather than by scaling and restoring the mean: its images are read
with A1111's rule, the one most of their prompts were written for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHUNK = 75
BACKTRACK = 20  # tokens a chunk may give back to end at a comma
_TOKENS = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
BREAK = -1.0  # the weight that marks a BREAK in the parsed list


def parse(text: str) -> list[tuple[str, float]]:
    """(fragment, weight) pairs of a prompt; a BREAK is ``("BREAK", -1)``; neighbours of one weight merged."""
    out: list[list] = []
    rounds: list[int] = []   # where each open "(" started, in ``out``
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in out[start:]:
            item[1] *= factor

    for m in _TOKENS.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):  # an escaped bracket or backslash is itself; a lone backslash is dropped
            out.append([piece[1:], 1.0])
        elif piece == "(":
            rounds.append(len(out))
        elif piece == "[":
            squares.append(len(out))
        elif weight is not None and rounds:
            scale(rounds.pop(), float(weight))
        elif piece == ")" and rounds:
            scale(rounds.pop(), 1.1)
        elif piece == "]" and squares:
            scale(squares.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i:
                    out.append(["BREAK", BREAK])
                out.append([part, 1.0])
    for start in rounds:
        scale(start, 1.1)
    for start in squares:
        scale(start, 1 / 1.1)
    return _merged(out or [["", 1.0]])


def _merged(items: list[list]) -> list[tuple[str, float]]:
    """Neighbouring fragments of one weight as one (a BREAK stays on its own)."""
    merged: list[list] = []
    for item in items:
        if merged and merged[-1][1] == item[1] and item[1] != BREAK:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(t, w) for t, w in merged]


@dataclass
class Chunks:
    """A prompt as chunks of 75 token ids and their weights."""

    tokens: list[list[int]]
    weights: list[list[float]]
    count: int  # the prompt's tokens, BREAKs aside


def chunk(tokenizer, text: str) -> Chunks:
    """The prompt's tokens in chunks of 75 (A1111's rule: a BREAK ends one, a full one goes back to its last
    comma when that is within the last 20 tokens), each padded to 75."""
    pairs = parse(text)
    pieces = [p for p, w in pairs if w != BREAK]
    ids = tokenizer(pieces, add_special_tokens=False, truncation=False).input_ids if pieces else []
    comma = tokenizer(",", add_special_tokens=False).input_ids[-1]
    tokens: list[list[int]] = []
    weights: list[list[float]] = []
    cur_t: list[int] = []
    cur_w: list[float] = []
    last_comma = -1
    count = 0

    def close() -> None:
        nonlocal cur_t, cur_w, last_comma
        tokens.append(cur_t)
        weights.append(cur_w)
        cur_t, cur_w, last_comma = [], [], -1

    pieces_ids = iter(ids)
    for _, weight in pairs:
        if weight == BREAK:
            close()
            continue
        for t in next(pieces_ids):
            count += 1
            if t == comma:
                last_comma = len(cur_t)
            elif len(cur_t) == CHUNK and last_comma != -1 and len(cur_t) - last_comma <= BACKTRACK:
                cut = last_comma + 1
                rest_t, rest_w = cur_t[cut:], cur_w[cut:]
                cur_t, cur_w = cur_t[:cut], cur_w[:cut]
                close()
                cur_t, cur_w = rest_t, rest_w
            if len(cur_t) == CHUNK:
                close()
            cur_t.append(t)
            cur_w.append(weight)
    if cur_t or not tokens:
        close()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for t, w in zip(tokens, weights, strict=True):
        t += [pad] * (CHUNK - len(t))
        w += [1.0] * (CHUNK - len(w))
    return Chunks(tokens, weights, count)


def embeddings(pipe, prompt: str, negative: str, clip_skip: int = 1):
    """(prompt embeddings, negative embeddings, chunks of the prompt) for an SD 1.x/2.x pipeline, the two of
    one length."""
    import torch

    encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
    norm = getattr(encoder, "text_model", encoder).final_layer_norm
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def encode(c: Chunks, n: int):
        parts = []
        for i in range(n):
            t = c.tokens[i] if i < len(c.tokens) else [pad] * CHUNK
            w = c.weights[i] if i < len(c.weights) else [1.0] * CHUNK
            ids = torch.tensor([[bos, *t, eos]], device=encoder.device)
            z = norm(encoder(ids, output_hidden_states=True).hidden_states[-max(1, clip_skip)])
            scale = torch.tensor([1.0, *w, 1.0], device=z.device, dtype=z.dtype)[None, :, None]
            mean = z.mean()
            z = z * scale
            if abs(float(z.mean())) > 1e-6 * float(z.abs().mean()):  # a mean of ~0 (an untrained norm) is kept
                z = z * (mean / z.mean())
            parts.append(z)
        return torch.cat(parts, dim=1).to(encoder.dtype)

    if hasattr(pipe, "maybe_convert_prompt"):  # a textual inversion of several vectors: its tokens spelled out
        prompt, negative = pipe.maybe_convert_prompt(prompt, tokenizer), pipe.maybe_convert_prompt(negative or "",
                                                                                                    tokenizer)
    positive, negative_chunks = chunk(tokenizer, prompt), chunk(tokenizer, negative or "")
    n = max(len(positive.tokens), len(negative_chunks.tokens))
    with torch.inference_mode():
        return encode(positive, n), encode(negative_chunks, n), positive


XL = ("StableDiffusionXLInpaintPipeline", "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
      "StableDiffusionXLControlNetInpaintPipeline")


def embeddings_xl(pipe, prompt: str, negative: str):
    """SDXL's prompt as A1111 encodes it: both text encoders' penultimate hidden states (no final norm), each
    chunk by chunk with the weights applied and its mean kept, joined side by side (768 + 1280); the pooled
    embedding of the second encoder from the first chunk.  (prompt embeds, negative embeds, pooled, negative
    pooled, the prompt's chunks)."""
    import torch

    pairs = [(pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)]

    def spelled(text: str, tokenizer) -> str:  # a textual inversion of several vectors: its tokens spelled out
        return pipe.maybe_convert_prompt(text, tokenizer) if hasattr(pipe, "maybe_convert_prompt") else text
    positive = [chunk(tok, spelled(prompt, tok)) for _, tok in pairs]
    negatives = [chunk(tok, spelled(negative or "", tok)) for _, tok in pairs]
    n = max(len(c.tokens) for c in positive + negatives)

    def encode(encoder, tokenizer, c: Chunks):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        parts, pooled = [], None
        for i in range(n):
            t = c.tokens[i] if i < len(c.tokens) else [pad] * CHUNK
            w = c.weights[i] if i < len(c.weights) else [1.0] * CHUNK
            ids = torch.tensor([[tokenizer.bos_token_id, *t, tokenizer.eos_token_id]], device=encoder.device)
            out = encoder(ids, output_hidden_states=True)
            z = out.hidden_states[-2]
            if pooled is None:
                pooled = out[0]
            scale = torch.tensor([1.0, *w, 1.0], device=z.device, dtype=z.dtype)[None, :, None]
            mean = z.mean()
            z = z * scale
            if abs(float(z.mean())) > 1e-6 * float(z.abs().mean()):
                z = z * (mean / z.mean())
            parts.append(z)
        return torch.cat(parts, dim=1), pooled

    with torch.inference_mode():
        (p1, _), (p2, pooled) = (encode(e, t, c) for (e, t), c in zip(pairs, positive, strict=True))
        (n1, _), (n2, npooled) = (encode(e, t, c) for (e, t), c in zip(pairs, negatives, strict=True))
        dtype = pipe.text_encoder_2.dtype
        return (torch.cat([p1, p2], dim=-1).to(dtype), torch.cat([n1, n2], dim=-1).to(dtype), pooled.to(dtype),
                npooled.to(dtype), positive[1])
