"""torch vs each exported backend (#17), one table from one run: FastSAM-s, CLIP, end to end.

    .venv/bin/python bench/backends.py [--backends torch openvino onnxruntime] [--repeat 3]

FastSAM-s and CLIP ViT-B-32 (random weights unless on disk: same compute), 640x480 photos,
max_det 50, conf 0, mask_resolution low, coco vocabulary. Rows: FastSAM `segment()` at imgsz
480 and 640; one dense ClearCLIP pass (dense_size 448 -> 448x608 input); one batch of 8 CLIP
crops; the two-thread Pipeline end to end (dense and crop labeling): frames/s over a run of
frames, and latency p50 of one frame alone through segment + label + fuse (`process`). Each
cell is a median of `--repeat` runs taken in turn across backends (load drift hits all alike),
with the ratio to torch (> 1: faster). Exports go to the normal export cache (first run only;
their time is the last row). Prints one markdown block: command, machine, versions, load, table.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.util import find_spec

import cv2
import numpy as np
import skimage.data
import torch

from sfs_ros.core.backends import installed_backends
from sfs_ros.core.frame import Frame
from sfs_ros.core.labeler import Labeler, LabelerConfig
from sfs_ros.core.pipeline import Pipeline
from sfs_ros.core.segmenter import Segmenter, SegmenterConfig
from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.core.weights import WeightsMissingError


def log(msg: str) -> None:
    print(f"[backends {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def with_weights(make: Callable[..., object], config_type: type, **kw) -> object:
    """The model with weights from disk, else the same architecture with random weights."""
    try:
        return make(config_type(**kw))
    except WeightsMissingError:
        return make(config_type(random_weights=True, **kw))


def seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Models:
    """One backend's models: segmenters at both sizes, dense and crop labelers."""

    def __init__(self, column: str, args: argparse.Namespace, vocabulary) -> None:
        t0 = time.perf_counter()
        backend, _, precision = column.partition("-")  # "openvino-int8": backend openvino, int8
        exported = dict(backend=backend, int8=precision == "int8")
        seg = dict(device="cpu", max_det=50, conf=0.0, mask_resolution="low", **exported)
        self.segmenters = {size: with_weights(Segmenter, SegmenterConfig, imgsz=size, **seg)
                           for size in args.sizes}
        self.labelers = {mode: with_weights(Labeler, LabelerConfig, device="cpu", mode=mode,
                                            **exported) for mode in ("dense", "crop")}
        for labeler in self.labelers.values():
            labeler.set_vocabulary(vocabulary)
        self.load_s = time.perf_counter() - t0
        self.random = any(m.random_weights for m in (*self.segmenters.values(), *self.labelers.values()))


def measure(models: Models, images: list[np.ndarray], args: argparse.Namespace) -> dict[str, float]:
    """One round of every row for one backend (seconds, or frames/s for the fps rows)."""
    row: dict[str, float] = {}
    image = images[0]
    for size, seg in models.segmenters.items():
        seg.segment(image)  # warm-up (first call builds the predictor)
        row[f"segment {size}"] = statistics.median(seconds(lambda: seg.segment(image)) for _ in range(2))
    dense_lab = models.labelers["dense"]
    pixels = dense_lab._resized(image, dense_lab._dense_size(*image.shape[:2]))
    dense_lab.dense(pixels)
    row["clip dense"] = seconds(lambda: dense_lab.dense(pixels))
    masks = models.segmenters[640].segment(image)
    crops = dense_lab.make_crops(image, masks)[:8]
    with torch.inference_mode():
        dense_lab.encode_image(crops)
        row["clip crops x8"] = seconds(lambda: dense_lab.encode_image(crops))
    for mode, count in (("dense", args.frames), ("crop", args.crop_frames)):
        results = []
        pipe = Pipeline(models.segmenters[640], models.labelers[mode], results.append, drop=False,
                        queue_size=2)
        frames = [Frame(images[i % len(images)], seq=i) for i in range(count)]
        pipe.process(frames[0])
        row[f"{mode} latency"] = seconds(lambda: pipe.process(frames[1 % count]))
        with pipe:
            t0 = time.perf_counter()
            for frame in frames:
                pipe.submit(frame)
            assert pipe.wait_idle(1800), "pipeline did not drain"
            row[f"{mode} fps"] = count / (time.perf_counter() - t0)
        assert len(results) == count and pipe.stats.errors == 0, pipe.stats
    return row


ROWS = (  # key, label, unit ("ms": lower is better, "fps": higher is better)
    ("segment 480", "FastSAM-s `segment()` imgsz 480", "ms"),
    ("segment 640", "FastSAM-s `segment()` imgsz 640", "ms"),
    ("clip dense", "CLIP ViT-B-32 dense pass (448x608)", "ms"),
    ("clip crops x8", "CLIP ViT-B-32 crops, batch of 8", "ms"),
    ("dense fps", "**end to end, dense, 640: frames/s**", "fps"),
    ("dense latency", "end to end, dense, 640: latency of one frame", "ms"),
    ("crop fps", "end to end, crop, 640: frames/s", "fps"),
    ("crop latency", "end to end, crop, 640: latency of one frame", "ms"),
    ("load", "load incl. export (first run) / cache hit", "s"),
)


def cell(value: float, unit: str, base: float) -> str:
    text = f"{value:.2f}" if unit == "fps" else f"{value:.1f}" if unit == "s" else f"{1e3 * value:.0f}"
    if unit == "s":
        return text
    ratio = value / base if unit == "fps" else base / value
    return f"{text} ({ratio:.2f}x)"


def versions() -> str:
    import importlib.metadata as md

    names = ("torch", "ultralytics", "open_clip_torch", "onnx", "onnxruntime", "openvino", "nncf")
    found = []
    for name in names:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    int8 = ["openvino-int8"] if "openvino" in installed_backends() and find_spec("nncf") else []
    parser.add_argument("--backends", nargs="+", default=["torch", *installed_backends(), *int8],
                        help="columns: torch, openvino, onnxruntime, tensorrt, openvino-int8")
    parser.add_argument("--sizes", type=int, nargs="+", default=[480, 640])
    parser.add_argument("--frames", type=int, default=8, help="frames per dense pipeline run")
    parser.add_argument("--crop-frames", type=int, default=2, help="frames per crop pipeline run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if 640 not in args.sizes:
        parser.error("--sizes must include 640 (the end-to-end rows run at 640)")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    images = [cv2.resize(getattr(skimage.data, n)(), (640, 480), interpolation=cv2.INTER_AREA)
              for n in ("astronaut", "coffee", "chelsea")]
    vocabulary = load_vocabulary("coco")
    load_before = os.getloadavg()
    models = {}
    for backend in args.backends:
        log(f"loading {backend}")
        models[backend] = Models(backend, args, vocabulary)
    samples: dict[str, dict[str, list[float]]] = {b: {} for b in args.backends}
    for round_ in range(args.repeat):
        for backend in args.backends:
            log(f"round {round_ + 1}/{args.repeat}: {backend}")
            for key, value in measure(models[backend], images, args).items():
                samples[backend].setdefault(key, []).append(value)
    table = {b: {k: statistics.median(v) for k, v in s.items()} for b, s in samples.items()}
    for backend in args.backends:
        table[backend]["load"] = models[backend].load_s
    base = table[args.backends[0]]
    out = [f"`{' '.join(['.venv/bin/python', *sys.argv])}`", "",
           f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
           f"torch threads {torch.get_num_threads()}; {versions()}; load average before / after "
           f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}; "
           f"random weights: {any(m.random for m in models.values())}", "",
           "| row | " + " | ".join(args.backends) + " |", "|---|" + "---:|" * len(args.backends)]
    for key, label, unit in ROWS:
        unit_name = {"ms": "ms", "fps": "frames/s", "s": "s"}[unit]
        out.append(f"| {label} ({unit_name}) | " + " | ".join(
            cell(table[b][key], unit, base[key]) for b in args.backends) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
