"""The CLIP tokenizer, built offline from the BPE merges that the open_clip_torch wheel ships.

A single-file Stable Diffusion checkpoint holds no tokenizer, and none may be
downloaded.  CLIP's own simple tokenizer builds its vocabulary from
``bpe_simple_vocab_16e6.txt.gz``: the 256 byte-level characters, the same with
``</w>``, the first 48,894 merges joined, then ``<|startoftext|>`` and
``<|endoftext|>`` — 49,408 entries.  We do the same and hand the result to
transformers' ``CLIPTokenizer``.  (open_clip itself is not imported: only its
data file is read, so its torchvision dependency is not needed.)
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

MERGES_USED = 49152 - 256 - 2  # 48,894
VOCAB_SIZE = 49408


class TokenizerUnavailable(FileNotFoundError):
    pass


def bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable("the open_clip_torch package is not installed (pip install --no-deps "
                                   "open_clip_torch); it carries the CLIP BPE merges the tokenizer is built from")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map, in CLIP's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


@lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    with gzip.open(bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:MERGES_USED + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE, len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer(max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=max_length,
                         bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                         pad_token="<|endoftext|>")


def write_tokenizer(folder: Path, max_length: int = 77, pad_token: str = "<|endoftext|>") -> Path:
    """vocab.json + merges.txt + configs, loadable with ``CLIPTokenizer.from_pretrained(folder)``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token}))
    return folder
