"""The reference rows of `unet-studio bench`, measured with PyTorch on the same machine.

The network is the one `unet-studio` builds (ml/unet.rs): valid 3x3 convolutions with ReLU,
2x2 max pooling, dropout 0.5 at the end of the contracting path, 2x2 stride-2
up-convolutions, crop-and-concat, a 1x1 head; 1 input channel, 2 classes, batch 1. The training step is a forward pass, the weighted pixel-wise softmax
cross-entropy, the backward pass and an SGD step with momentum 0.99, as in `bench`.

Usage: python3 benches/pytorch_unet.py [--threads 2] [--repeats 5] [--rows lite:572,paper:572]
Prints one JSON object per row (preset, tile_in, tile_out, params, fwd_ms, train_ms,
gflop_fwd, gemm_gflops), with the fp32 GEMM speed that PyTorch reaches in the same run.
`unet-studio bench --pytorch PYTHON` runs this script and sets the rows and threads to its own.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    def __init__(self, base, depth=4, classes=2):
        super().__init__()
        ch = [base << level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            DoubleConv(1 if level == 0 else ch[level - 1], ch[level]) for level in range(depth)
        )
        self.bottom = DoubleConv(ch[depth - 1], ch[depth])
        self.dropout = nn.Dropout(0.5)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(ch[level + 1], ch[level], 2, stride=2)
            for level in reversed(range(depth))
        )
        self.up_blocks = nn.ModuleList(
            DoubleConv(2 * ch[level], ch[level]) for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(ch[0], classes, 1)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.dropout(self.bottom(x))
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = up(x)
            h, w = x.shape[2:]
            sh, sw = skip.shape[2:]
            top, left = (sh - h) // 2, (sw - w) // 2
            x = block(torch.cat([skip[:, :, top:top + h, left:left + w], x], 1))
        return self.head(x)


def forward_gflop(base, tile, depth=4, classes=2):
    """Multiply-adds x 2 of every convolution, as `UNetConfig::forward_flops` counts them."""
    flop, s, cin = 0.0, tile, 1
    for level in range(depth):
        c = base << level
        flop += 2 * 9 * cin * c * (s - 2) ** 2 + 2 * 9 * c * c * (s - 4) ** 2
        s, cin = (s - 4) // 2, c
    c = base << depth
    flop += 2 * 9 * cin * c * (s - 2) ** 2 + 2 * 9 * c * c * (s - 4) ** 2
    s -= 4
    for level in reversed(range(depth)):
        c = base << level
        s *= 2
        flop += 2 * 4 * (2 * c) * c * (s // 2) ** 2  # up-convolution
        flop += 2 * 9 * 2 * c * c * (s - 2) ** 2 + 2 * 9 * c * c * (s - 4) ** 2
        s -= 4
    flop += 2 * base * classes * s * s
    return flop / 1e9, s


def best_ms(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def gemm_gflops(repeats):
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    ms = best_ms(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / ms / 1e6


def row(preset, base, tile, repeats, gemm):
    torch.manual_seed(1)
    net = UNet(base)
    gflop, out = forward_gflop(base, tile)
    x = torch.rand(1, 1, tile, tile)
    labels = torch.randint(0, 2, (1, out, out))
    weights = torch.rand(1, out, out) + 0.5
    net.eval()
    with torch.no_grad():
        assert net(x).shape[2] == out
        fwd = best_ms(lambda: net(x), repeats)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.99)

    def step():
        opt.zero_grad()
        logits = net(x)
        loss = (F.cross_entropy(logits, labels, reduction="none") * weights).sum() / weights.sum()
        loss.backward()
        opt.step()

    train = best_ms(step, repeats)
    return {
        "preset": preset, "tile_in": tile, "tile_out": out, "device": "cpu (PyTorch)",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in net.parameters()),
        "fwd_ms": round(fwd, 1), "train_ms": round(train, 1), "gflop_fwd": round(gflop, 2),
        "gemm_gflops": round(gemm, 1),
        "fwd_ratio": round(gflop / fwd * 1e3 / gemm, 3),
        "train_ratio": round(3 * gflop / train * 1e3 / gemm, 3),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", default="lite:572,paper:572,lite:252")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gemm = gemm_gflops(args.repeats)
    bases = {"lite": 16, "paper": 64}
    for item in args.rows.split(","):
        preset, tile = item.split(":")
        print(json.dumps(row(preset, bases[preset], int(tile), args.repeats, gemm)), flush=True)


if __name__ == "__main__":
    main()
