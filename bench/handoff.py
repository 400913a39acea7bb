"""Cost of the device-resident hand-off (issue #17) against the numpy hand-off, in one run.

    .venv/bin/python bench/handoff.py [--device cpu] [--repeat 5] [--max-det 50]

The segmenter now hands its mask stack over as a torch tensor on its device; before, it was a
numpy array. Both paths are still reachable: the numpy one by holding the same masks as numpy
(`numpy_twin`, what segment() returned before), which the labeler uploads with torch.from_numpy
and fusion paints in its numpy loop. Per mask resolution (low, full) the table gives median ms
of each step both ways and the ratio after / before (< 1: the tensor path is faster):

- post: areas, the min_area filter and boxes (numpy formulas vs on the device),
- label: dense CLIP labeling of the masks (the mask upload is the only difference),
- fuse: label and instance images (numpy painting loop vs masked_fill_ on the device),
- total: segment + label + fuse through `Pipeline.process` (the numpy row: segment() then the
  host copy, as before the change),
- with `--frames N`: the two-thread Pipeline's FPS with Ultralytics' stage timers (each a
  device-wide torch.cuda.synchronize) vs StreamProfile (its own stream only); > 1 on CUDA means
  the segment stage no longer waits for the label stage's stream.

On CPU the copy a CUDA device would save does not exist, so this measures that the CPU got no
slower. On CUDA (`--device cuda --frames 20`) the same table shows what the hand-off saves per
frame and whether the stages' streams now overlap. Random weights (same compute cost). Prints a
markdown table with the machine; times in ms, the FPS rows in frames/s.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any, Callable

import cv2
import numpy as np
import skimage.data
import torch

from sfs_ros.core import stream_profile
from sfs_ros.core.frame import Frame, Masks
from sfs_ros.core.fusion import fuse
from sfs_ros.core.labeler import Labeler, LabelerConfig
from sfs_ros.core.pipeline import Pipeline
from sfs_ros.core.segmenter import Segmenter, SegmenterConfig, boxes_from_masks, large_masks
from sfs_ros.core.vocabulary import load_vocabulary


def numpy_twin(masks: Masks) -> Masks:
    """The same masks held as numpy: segment()'s output before the device-resident hand-off."""
    stack = masks.stack_tensor().cpu().numpy()
    if masks.grid is None:
        return Masks(stack, masks.boxes, masks.scores, masks.areas)
    return Masks.from_low_res(stack, masks.grid, masks.boxes, masks.scores, masks.areas)


def post_numpy(masks: Masks, min_area: int) -> None:
    """Areas, filter and boxes as segment() computed them on the numpy stack."""
    stack = masks.stack_tensor().cpu().numpy()
    grid = masks.grid
    areas = grid.areas(stack) if grid is not None else stack.sum(axis=(1, 2), dtype=np.int64)
    kept = stack[areas >= min_area]
    grid.boxes(kept) if grid is not None else boxes_from_masks(kept)


class NumpyHandOff:
    """A segmenter as it was: segment(), then the stack copied to host as numpy."""

    def __init__(self, inner: Segmenter) -> None:
        self.inner = inner

    def segment(self, image: np.ndarray) -> Masks:
        return numpy_twin(self.inner.segment(image))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def pair(numpy_fn: Callable[[], object], tensor_fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median ms of each after one warm-up call, interleaved so that a machine's load drift
    hits both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    numpy_fn(), tensor_fn()
    for _ in range(repeat):
        for fn, out in zip((numpy_fn, tensor_fn), samples):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples[0])), float(np.median(samples[1]))


def pipeline_fps(seg: Segmenter, labeler: Labeler, image: np.ndarray, frames: int) -> float:
    """Frames per second of the two-thread Pipeline (segment and label overlapping), all kept."""
    pipe = Pipeline(seg, labeler, lambda r: None, drop=False, overlay=False)
    with pipe:
        pipe.submit(Frame(image))  # warm-up
        pipe.wait_idle()
        t0 = time.perf_counter()
        for seq in range(frames):
            pipe.submit(Frame(image, seq=seq))
        pipe.wait_idle()
        return frames / (time.perf_counter() - t0)


def profile_rows(seg: Segmenter, labeler: Labeler, image: np.ndarray, frames: int,
                 repeat: int) -> tuple[float, float]:
    """Two-thread FPS with Ultralytics' own stage timers (a device-wide synchronize each) and
    with StreamProfile (core/stream_profile.py), interleaved. Only CUDA tells them apart."""
    from ultralytics.utils import ops

    stream_timer = stream_profile.install()
    device_timer = stream_timer.__mro__[1]  # Ultralytics' ops.Profile
    fps: tuple[list[float], list[float]] = ([], [])
    try:
        for _ in range(repeat):
            for timer, out in zip((device_timer, stream_timer), fps):
                ops.Profile = timer
                out.append(pipeline_fps(seg, labeler, image, frames))
    finally:
        ops.Profile = stream_timer
    return float(np.median(fps[0])), float(np.median(fps[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-det", type=int, default=50)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--frames", type=int, default=0,
                        help="> 0: also two-thread Pipeline FPS over this many frames, Ultralytics' "
                             "timers vs StreamProfile (what to run on a GPU)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    image = cv2.resize(skimage.data.astronaut(), (640, 480))
    labeler = Labeler(LabelerConfig(random_weights=True, device=args.device, mode="dense", threshold=0.0))
    labeler.set_vocabulary(load_vocabulary("coco"))
    rows = []
    for resolution in ("low", "full"):
        seg = Segmenter(SegmenterConfig(random_weights=True, device=args.device, max_det=args.max_det,
                                        conf=0.0, imgsz=args.imgsz, mask_resolution=resolution))
        masks = seg.segment(image)
        twin = numpy_twin(masks)
        labels = labeler.label(image, masks)
        pipe = Pipeline(seg, labeler, lambda r: None, overlay=False)
        as_before = Pipeline(NumpyHandOff(seg), labeler, lambda r: None, overlay=False)
        steps = {
            "post": (lambda: post_numpy(masks, 100), lambda: large_masks(masks.stack_tensor(), masks.grid, 100)),
            "label": (lambda: labeler.label(image, twin), lambda: labeler.label(image, masks)),
            "fuse": (lambda: fuse(twin, labels), lambda: fuse(masks, labels)),
            "total": (lambda: as_before.process(Frame(image)), lambda: pipe.process(Frame(image))),
        }
        for step, (numpy_fn, tensor_fn) in steps.items():
            before, after = pair(numpy_fn, tensor_fn, args.repeat)
            rows.append((resolution, step, len(masks), before, after))
        if args.frames:
            rows.append((resolution, "pipeline FPS (timers: device sync / stream sync)", len(masks),
                         *profile_rows(seg, labeler, image, args.frames, args.repeat)))
    print(f"`{' '.join(['.venv/bin/python', *sys.argv])}`  ")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, device "
          f"{args.device}, torch {torch.__version__}, imgsz {args.imgsz}, 640x480 frame, "
          f"dense labeling (coco), median of {args.repeat} interleaved runs\n")
    print("| masks | step | N | numpy (before) | tensor (after) | after / before |")
    print("|---|---|---:|---:|---:|---:|")
    for resolution, step, n, before, after in rows:
        print(f"| {resolution} | {step} | {n} | {before:.2f} | {after:.2f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
