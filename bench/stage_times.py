"""Per-stage cost of one 640x480 frame through the core pipeline (real architectures).

    .venv/bin/python bench/stage_times.py [--device cpu] [--masks 10 50] [--repeat 3]

Random weights unless weights are on disk (same compute cost). Prints one markdown table with
the command, machine and versions; ratios within one run are what to compare across machines.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import cv2
import skimage.data
import torch

from sfs_ros.core import fusion
from sfs_ros.core.frame import Frame
from sfs_ros.core.labeler import LabelerConfig
from sfs_ros.core.pipeline import Pipeline, load_models
from sfs_ros.core.segmenter import SegmenterConfig
from sfs_ros.core.vocabulary import load_vocabulary


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--masks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vocab", default="coco")
    parser.add_argument("--modes", nargs="+", default=["crop", "dense"], help="CLIP labeling modes")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1)) if args.device == "cpu" else None

    image = cv2.resize(skimage.data.astronaut(), (640, 480))
    rows = []
    for mode, n in [(m, n) for m in args.modes for n in args.masks]:
        seg, lab = load_models(SegmenterConfig(device=args.device, max_det=n, conf=0.0),
                               LabelerConfig(device=args.device, mode=mode), fallback_to_random=True)
        t0 = time.perf_counter()
        lab.set_vocabulary(load_vocabulary(args.vocab))
        text_s = time.perf_counter() - t0
        masks = seg.segment(image)
        labels = lab.label(image, masks)
        pipe = Pipeline(seg, lab, lambda r: None)
        frame = Frame(image)
        rows.append({
            "mode": mode,
            "masks": len(masks),
            "segment": timed(lambda: seg.segment(image), args.repeat),
            "label": timed(lambda: lab.label(image, masks), args.repeat),
            "fuse": timed(lambda: fusion.overlay(image, *fusion.fuse(masks, labels), lab.bank.vocabulary.palette), args.repeat),
            "process": timed(lambda: pipe.process(frame), args.repeat),
            "text": text_s,
            "random": seg.random_weights or lab.random_weights,
        })

    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, device {args.device}, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, python {platform.python_version()}")
    print(f"vocabulary: {args.vocab}; scales {LabelerConfig().scales}; random weights: {rows[0]['random']}\n")
    print("| labeling | masks | segment ms | label ms | label ms/mask | fuse+overlay ms | frame ms (sync) | label share | text encode s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['masks']} | {1e3 * r['segment']:.0f} | {1e3 * r['label']:.0f} | "
              f"{1e3 * r['label'] / max(r['masks'], 1):.1f} | {1e3 * r['fuse']:.1f} | "
              f"{1e3 * r['process']:.0f} | {r['label'] / r['process']:.0%} | {r['text']:.1f} |")


if __name__ == "__main__":
    main()
