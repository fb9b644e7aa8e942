"""Why the CPU upscaler is where it is: the convolution paths tried for x4plus's residual dense block.

    PYTHONPATH=. python docs/decisions/conv_paths.py [--size 256] [--threads 2]

x4plus spends 92% of its arithmetic in 345 3×3 convolutions at input resolution, inside 69 residual
dense blocks (5 convolutions each, inputs concatenated DenseNet-style).  ncnn runs them as Winograd
convolutions; torch (oneDNN) runs them directly.  This benchmark times one block both ways:

* torch's direct convolution, NCHW and channels_last;
* a Winograd F(4×4, 3×3) convolution composed of torch operations (tile transforms as small matrix
  products, the 36 element-wise products as one batched GEMM per convolution, each input tile
  transformed once and shared by every later convolution of the block);
* the GEMM throughput torch reaches at the shapes that Winograd produces;
* ncnn on the whole x4plus model with and without its Winograd kernels.

It writes ``bench/out/conv_paths.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"

# Winograd F(4, 3) on the points 0, ±1, ±2 (Lavin & Gray): Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A.
BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float32)
G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float32)
AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                  dtype=torch.float32)
KB, KA = torch.kron(BT, BT), torch.kron(AT, AT)  # vec(Bᵀ d B) = KB vec(d); vec(Aᵀ m A) = KA vec(m)
IN_CH, OUT_CH = [64, 96, 128, 160, 192], [32, 32, 32, 32, 64]
MACS_PER_PX = 9 * sum(i * o for i, o in zip(IN_CH, OUT_CH, strict=True))  # one block, direct


def winograd_filters(w: torch.Tensor) -> torch.Tensor:
    """[Cout, Cin, 3, 3] → [36, Cin, Cout]."""
    u = torch.einsum("ij,ocjk,lk->ilco", G, w, G)
    return u.reshape(36, w.shape[1], w.shape[0]).contiguous()


def transform_in(x: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """[H, W, C] → [36, tiles, C]: overlapping 6×6 tiles at stride 4, zero padding 1."""
    h, w, _ = x.shape
    xp = F.pad(x, (0, 0, 1, 4 * nw + 1 - w, 1, 4 * nh + 1 - h))
    tiles = xp.unfold(0, 6, 4).unfold(1, 6, 4).permute(3, 4, 0, 1, 2).reshape(36, -1)
    return (KB @ tiles).view(36, nh * nw, x.shape[2])


def transform_out(m: torch.Tensor, nh: int, nw: int, h: int, w: int, bias: torch.Tensor) -> torch.Tensor:
    c = m.shape[2]
    y = (KA @ m.reshape(36, -1)).view(4, 4, nh, nw, c).permute(2, 0, 3, 1, 4).reshape(4 * nh, 4 * nw, c)
    return y[:h, :w] + bias


def block_direct(x, ws, bs):
    feats = [x]
    for i in range(5):
        y = F.conv2d(torch.cat(feats, 1), ws[i], bs[i], padding=1)
        feats.append(F.leaky_relu(y, 0.2) if i < 4 else y)
    return feats[-1] * 0.2 + x


def block_winograd(x, us, bs):
    h, w, _ = x.shape
    nh, nw = (h + 3) // 4, (w + 3) // 4
    transformed = [transform_in(x, nh, nw)]
    for i in range(5):
        m, offset = None, 0
        for v in transformed:
            part = torch.bmm(v, us[i][:, offset:offset + v.shape[2]])
            m = part if m is None else m.add_(part)
            offset += v.shape[2]
        y = transform_out(m, nh, nw, h, w, bs[i])
        if i < 4:
            y = F.leaky_relu(y, 0.2)
            transformed.append(transform_in(y, nh, nw))
    return y * 0.2 + x


def best_of(fn, runs: int = 3) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def ncnn_seconds(size: int, threads: int, winograd: bool) -> float | None:
    try:
        import ncnn
    except ImportError:
        return None
    from stages.esrgan.load import BUILTINS, package_dir

    stem, folder = BUILTINS["x4plus"].ncnn_stem, package_dir()
    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_winograd_convolution = winograd
    net.load_param(str(folder / f"{stem}.param"))
    net.load_model(str(folder / f"{stem}.bin"))
    image = np.random.default_rng(0).random((3, size, size), dtype=np.float32)

    def once():
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(image))
        ex.extract("output")

    return best_of(once, runs=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = args.size
    ws = [torch.randn(o, i, 3, 3) * 0.05 for i, o in zip(IN_CH, OUT_CH, strict=True)]
    bs = [torch.randn(o) * 0.01 for o in OUT_CH]
    us = [winograd_filters(w) for w in ws]
    x = torch.randn(1, 64, s, s)
    xh = x[0].permute(1, 2, 0).contiguous()
    flop = 2 * MACS_PER_PX * s * s
    rows = []
    with torch.inference_mode():
        diff = (block_winograd(xh, us, bs).permute(2, 0, 1) - block_direct(x, ws, bs)[0]).abs().max().item()
        for name, fn in [("torch direct, NCHW", lambda: block_direct(x, ws, bs)),
                         ("torch direct, channels_last",
                          lambda: block_direct(x.contiguous(memory_format=torch.channels_last), ws, bs)),
                         ("Winograd F(4,3) from torch ops", lambda: block_winograd(xh, us, bs))]:
            t = best_of(fn)
            rows.append((name, t, flop / t / 1e9))
        tiles = ((s + 3) // 4) ** 2
        gemms = []
        for k, n in [(64, 32), (192, 64)]:
            a, b = torch.randn(36, tiles, k), torch.randn(36, k, n)
            t = best_of(lambda a=a, b=b: torch.bmm(a, b))
            gemms.append((k, n, 2 * 36 * tiles * k * n / t / 1e9))
        big = torch.randn(2048, 2048)
        t = best_of(lambda: big @ big)
        peak = 2 * 2048 ** 3 / t / 1e9
    nc = {w: ncnn_seconds(s, args.threads, w) for w in (True, False)}

    lines = [f"# Convolution paths for one x4plus residual dense block, {s}² input, {args.threads} threads", "",
             "Effective GFLOP/s = the direct convolution's arithmetic (2 × MACs) / seconds, so paths that do "
             "less arithmetic can exceed the machine's peak.", "",
             "| path | ms per block | effective GFLOP/s |", "|---|---|---|"]
    lines += [f"| {name} | {t * 1000:.0f} | {g:.0f} |" for name, t, g in rows]
    lines += ["", f"Winograd vs direct, max abs difference: {diff:.1e} (fp32).", "",
              f"GEMM throughput in torch: {peak:.0f} GFLOP/s on 2048² square matrices; at the Winograd "
              f"shapes (36 batched products of {tiles} tiles):", ""]
    lines += [f"- K={k}, N={n}: {g:.0f} GFLOP/s" for k, n, g in gemms]
    if nc[True] is not None:
        lines += ["", f"ncnn, whole x4plus at {s}²: {nc[True]:.2f} s with its Winograd kernels, "
                      f"{nc[False]:.2f} s without ({nc[False] / nc[True]:.1f}× slower)."]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "conv_paths.md").write_text(text)


if __name__ == "__main__":
    main()
