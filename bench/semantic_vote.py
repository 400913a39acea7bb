"""Cost of the semantic-vote mode: the vote itself and the SegFormer branch per input size.

    .venv/bin/python bench/semantic_vote.py [--device cpu] [--masks 50 300] \
        [--sizes 512 768 1024] [--archs b0 b5] [--repeat 2] [--slow 10]

The vote runs on synthetic FastSAM-like masks (ellipses, areas log-uniform over 0.05..20 % of a
640x480 frame) and a synthetic 150-class map; the SegFormer branch runs the real B0/B5
architectures with random weights (same compute as trained ones) on a 640x480 photo, resized
with the short-side policy. Prints markdown tables with the command, machine and versions.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import replace

import cv2
import numpy as np
import skimage.data
import torch

from sfs_ros.core.semantic import SemanticConfig, SemanticVoteLabeler, vote

H, W, K = 480, 640, 150


def median_time(
    fn, repeat: int, warmup: bool = True, slow: float = float("inf")
) -> tuple[float, int]:
    """(median seconds, runs) of up to `repeat` calls after an optional warm-up call; stops
    after the first run when that took longer than `slow` seconds (keeps B5 at 1024 affordable)."""
    if warmup:
        fn()
    samples: list[float] = []
    while len(samples) < repeat and not (samples and samples[0] > slow):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), len(samples)


def synthetic_masks(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, H, W) bool ellipses; areas log-uniform in [0.05 %, 20 %] of the frame."""
    yy, xx = np.mgrid[:H, :W]
    areas = np.exp(rng.uniform(np.log(0.0005), np.log(0.2), n)) * H * W
    aspect = rng.uniform(0.5, 2.0, n)
    a = np.sqrt(areas * aspect / np.pi)  # semi-axis along x
    b = areas / (np.pi * a)
    cx, cy = rng.uniform(0, W, n), rng.uniform(0, H, n)
    out = np.empty((n, H, W), bool)
    for i in range(n):  # data generation only, not timed
        out[i] = ((xx - cx[i]) / a[i]) ** 2 + ((yy - cy[i]) / b[i]) ** 2 <= 1.0
    return out


def per_mask_loop(masks: np.ndarray, semantic: np.ndarray) -> list[int]:
    """The naive reference: one bincount per mask."""
    return [int(np.bincount(semantic[m], minlength=K).argmax()) for m in masks]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--masks", type=int, nargs="+", default=[50, 300])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 768, 1024])
    parser.add_argument("--archs", nargs="+", default=["b0", "b5"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--slow", type=float, default=10.0,
                        help="a forward slower than this many seconds is timed once")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    import transformers

    print(f"`{' '.join([os.path.basename(sys.executable)] + sys.argv)}`\n")
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical cores, torch threads "
          f"{torch.get_num_threads()}, device {args.device}; python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}; load average at start {os.getloadavg()[0]:.1f} "
          "(shared machine)\n")

    rng = np.random.default_rng(0)
    semantic = np.kron(rng.integers(0, K, (H // 16, W // 16)), np.ones((16, 16), int))
    semantic = semantic.astype(np.int32)
    print(f"### vote, {W}x{H}, {K} classes (median of {max(args.repeat, 5)})\n")
    print("| masks | mask pixels | vote() ms | per-mask loop ms |")
    print("|---:|---:|---:|---:|")
    for n in args.masks:
        masks = synthetic_masks(n, rng)
        ids = vote(masks, semantic, K)[0]
        assert ids.tolist() == per_mask_loop(masks, semantic)  # same answer as the reference
        t_vote, _ = median_time(lambda: vote(masks, semantic, K), max(args.repeat, 5))
        t_loop, _ = median_time(lambda: per_mask_loop(masks, semantic), max(args.repeat, 5))
        print(f"| {n} | {int(masks.sum()) / 1e6:.2f} M | {t_vote * 1e3:.1f} | {t_loop * 1e3:.1f} |")

    image = cv2.resize(skimage.data.astronaut(), (W, H), interpolation=cv2.INTER_AREA)
    print(f"\n### SegFormer branch on a {W}x{H} frame, random weights, ADE20K head "
          f"(median of up to {args.repeat} runs, n = runs)\n")
    print("| model | short side | model input | n | forward s | upsample+argmax ms | branch s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for arch in args.archs:
        config = SemanticConfig(device=args.device, random_weights=True, architecture=arch,
                                label_set="ade20k", resize="short_side")
        lab = SemanticVoteLabeler(config)
        for size in args.sizes:
            lab.config = replace(config, input_size=size)
            h, w = lab.input_shape(H, W)
            holder: dict[str, torch.Tensor] = {}

            def forward() -> None:
                holder["logits"] = lab.logits(image)
                if lab.device.type == "cuda":
                    torch.cuda.synchronize(lab.device)

            def upsample() -> None:
                lab.upsample_argmax(holder["logits"], (H, W)).cpu()

            warmup = arch == args.archs[0] and size == args.sizes[0]  # first call of the run
            t_fwd, runs = median_time(forward, args.repeat, warmup=warmup, slow=args.slow)
            t_up, _ = median_time(upsample, args.repeat)
            print(f"| SegFormer-{arch.upper()} | {size} | {w}x{h} | {runs} | {t_fwd:.2f} | "
                  f"{t_up * 1e3:.0f} | {t_fwd + t_up:.2f} |", flush=True)
        del lab


if __name__ == "__main__":
    main()
