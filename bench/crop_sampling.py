"""CLIP crops: roi_align with 2 x 2 points per crop pixel (the old setting) vs adaptive sampling.

    .venv/bin/python bench/crop_sampling.py [--images out/samples] [--max-det 40] [--repeat 3]

On the bundled photos (tools/sample_images.py writes them; run here if the folder is empty),
FastSAM-s masks of each photo are labeled against COCO with both settings. It prints:
* time per frame: make_crops alone and the whole crop-mode label() (median of --repeat);
* label agreement: the share of masks whose class is the same under both settings. With
  random weights (all there is on an offline machine) this only shows how much the crops
  changed, not which setting labels better;
* crop fidelity, independent of weights: mean absolute difference (grey levels, 0-255) between
  the crop make_crops builds for a square window of the photo and cv2.resize(INTER_AREA) of the
  same window (an exact area average), over fixed windows larger than the crop.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import cv2
import numpy as np
import torch

from sfs_ros.core.frame import Masks
from sfs_ros.core.labeler import ADAPTIVE_SAMPLING, Labeler, LabelerConfig
from sfs_ros.core.pipeline import load_models
from sfs_ros.core.segmenter import SegmenterConfig
from sfs_ros.core.vocabulary import load_vocabulary

SETTINGS = {"sampling_ratio=2": 2, "adaptive (-1)": ADAPTIVE_SAMPLING}
ROOT = Path(__file__).resolve().parents[1]
#: Fidelity windows: square sides (px) larger than the 224-px crop, each at the photo's centre
#: and four corners where it fits. Fixed windows, not mask boxes: random-weight masks are
#: mostly small, and the comparison must not depend on weights.
WINDOW_SIDES = (256, 384, 448, 512, 600, 768, 1024, 1344)
#: Window sides by points per crop pixel and axis under adaptive sampling (2 up to 448 px).
BUCKETS = ((225, 448), (449, 672), (673, 896), (897, 1344))
T = TypeVar("T")


def median_seconds(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Median wall time of `repeat` calls after one warm-up call, and the last result."""
    result = fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), result


def large_photos() -> dict[str, np.ndarray]:
    """Larger photos bundled with scikit-image, at native resolution, for windows of the size a
    1080p camera's big masks have: retina 1411 px, hubble 1000x872, gravel tiled 3 x 3 (1536
    px of fine natural texture)."""
    import skimage.data

    gravel = np.tile(skimage.data.gravel()[..., None], (3, 3, 3))
    return {"retina": skimage.data.retina(), "hubble": skimage.data.hubble_deep_field(), "gravel3x3": gravel}


def load_photos(folder: Path) -> dict[str, np.ndarray]:
    """name -> RGB photo; writes the bundled samples first when the folder has none."""
    if not sorted(folder.glob("*.png")):
        subprocess.run([sys.executable, str(ROOT / "tools" / "sample_images.py"), str(folder)], check=True)
    return {p.stem: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(folder.glob("*.png"))}


def fidelity_windows(shape: tuple[int, int]) -> np.ndarray:
    """(x0, y0, side) of the WINDOW_SIDES squares that fit in an image of `shape`."""
    h, w = shape
    windows = [(x0, y0, side) for side in WINDOW_SIDES if side <= min(h, w)
               for x0, y0 in ((0, 0), (w - side, 0), (0, h - side), (w - side, h - side),
                              ((w - side) // 2, (h - side) // 2))]
    return np.array(windows, np.int64).reshape(-1, 3)


def crop_errors(labeler: Labeler, image: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Per window: mean |make_crops - INTER_AREA resize| in grey levels. Each window is given
    as a whole-image mask with that square box, so make_crops returns the raw pixels (weight 1)
    through the same roi_align path the labeler uses."""
    h, w = image.shape[:2]
    errors = []
    for x0, y0, side in windows:
        m = Masks(np.ones((1, h, w), bool), np.array([[x0, y0, x0 + side, y0 + side]], np.int32),
                  np.ones(1, np.float32), np.array([h * w]))
        crop = (labeler.make_crops(image, m)[0] * labeler.std[0] + labeler.mean[0]).permute(1, 2, 0)
        ref = cv2.resize(image[y0 : y0 + side, x0 : x0 + side], labeler.crop_size, interpolation=cv2.INTER_AREA)
        errors.append(float(np.abs(crop.numpy() * 255 - ref.astype(np.float32)).mean()))
    return np.array(errors)


def label_runs(seg, lab: Labeler, photos: dict[str, np.ndarray], repeat: int) -> tuple[dict, dict, np.ndarray]:
    """Per setting: make_crops and label() seconds per photo and the labels of every mask;
    and the side of every crop window (the crops differ only where it exceeds 2 x 224 px)."""
    times = {name: {"crops": [], "label": []} for name in SETTINGS}
    labels = {name: [] for name in SETTINGS}
    windows = []
    for image in photos.values():
        masks = seg.segment(image)
        boxes = lab.crop_boxes(masks.boxes)
        windows.append((boxes[:, 2] - boxes[:, 0]).numpy())
        for name, ratio in SETTINGS.items():
            lab.crop_sampling_ratio = ratio
            times[name]["crops"].append(median_seconds(lambda: lab.make_crops(image, masks), 5 * repeat)[0])
            seconds, out = median_seconds(lambda: lab.label(image, masks), repeat)
            times[name]["label"].append(seconds)
            labels[name].append(out)
    lab.crop_sampling_ratio = ADAPTIVE_SAMPLING
    return times, labels, np.concatenate(windows)


def large_window_crops_ms(lab: Labeler, images: dict[str, np.ndarray], repeat: int) -> dict[str, float]:
    """Per setting: mean make_crops time (ms) for all fidelity windows > 448 px of an image at
    once (each window the box of a whole-image mask): the cost where adaptive samples more."""
    spent = {name: [] for name in SETTINGS}
    for image in images.values():
        windows = fidelity_windows(image.shape[:2])
        windows = windows[windows[:, 2] > 2 * lab.crop_size[0]]
        if not len(windows):
            continue
        h, w = image.shape[:2]
        boxes = np.column_stack([windows[:, :2], windows[:, :2] + windows[:, 2:]]).astype(np.int32)
        masks = Masks(np.ones((len(boxes), h, w), bool), boxes, np.ones(len(boxes), np.float32),
                      np.full(len(boxes), h * w))
        for name, ratio in SETTINGS.items():
            lab.crop_sampling_ratio = ratio
            spent[name].append(1000 * median_seconds(lambda: lab.make_crops(image, masks), repeat)[0] / len(boxes))
    lab.crop_sampling_ratio = ADAPTIVE_SAMPLING
    return {name: statistics.mean(ms) for name, ms in spent.items()}


def fidelity(lab: Labeler, images: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Side of every fidelity window and, per setting, its crop error (crop_errors)."""
    sides, errors = [], {name: [] for name in SETTINGS}
    for image in images.values():
        windows = fidelity_windows(image.shape[:2])
        sides.append(windows[:, 2])
        for name, ratio in SETTINGS.items():
            lab.crop_sampling_ratio = ratio
            errors[name].append(crop_errors(lab, image, windows))
    lab.crop_sampling_ratio = ADAPTIVE_SAMPLING
    return np.concatenate(sides), {name: np.concatenate(e) for name, e in errors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=ROOT / "out" / "samples")
    parser.add_argument("--max-det", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vocab", default="coco")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    seg, lab = load_models(SegmenterConfig(device="cpu", max_det=args.max_det),
                           LabelerConfig(device="cpu", threshold=0.0), fallback_to_random=True)
    lab.set_vocabulary(load_vocabulary(args.vocab))
    photos = load_photos(args.images)
    times, labels, crop_sides = label_runs(seg, lab, photos, args.repeat)
    images = {**photos, **large_photos()}
    sides, errors = fidelity(lab, images)
    large_ms = large_window_crops_ms(lab, images, args.repeat)

    old, new = ([out.class_ids for out in labels[name]] for name in SETTINGS)
    old, new = np.concatenate(old), np.concatenate(new)
    score_change = np.concatenate([np.abs(a.scores - b.scores) for a, b in zip(*labels.values())])
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"torch {torch.__version__}; photos {', '.join(f'{k} {v.shape[1]}x{v.shape[0]}' for k, v in photos.items())}")
    crop = lab.crop_size[0]
    print(f"random weights: segmenter {seg.random_weights}, CLIP {lab.random_weights}; {len(old)} masks, "
          f"{len(crop_sides)} crops; adaptive takes 1 point per crop pixel and axis for "
          f"{np.sum(crop_sides <= crop)} windows <= {crop} px, 2 (as before) for "
          f"{np.sum((crop_sides > crop) & (crop_sides <= 2 * crop))}, more for {np.sum(crop_sides > 2 * crop)}")
    print()
    print("| roi_align sampling | make_crops ms/frame | label() ms/frame | make_crops ms per window > 448 px |")
    print("|---|---:|---:|---:|")
    for name in SETTINGS:
        print(f"| {name} | {1000 * statistics.mean(times[name]['crops']):.0f} | "
              f"{1000 * statistics.mean(times[name]['label']):.0f} | {large_ms[name]:.1f} |")
    print()
    print(f"label agreement (same class, sampling_ratio=2 vs adaptive): {np.mean(old == new):.1%} of {len(old)} masks; "
          f"top-1 probability changed by {score_change.mean():.2e} on average (max {score_change.max():.2e})")
    if lab.random_weights:
        print("NOTE: CLIP runs with random weights: agreement shows how much the crops changed, not which is right.")
    print()
    print("Crop fidelity: mean |make_crops - cv2.resize INTER_AREA| in grey levels (0-255), windows of "
          + ", ".join(f"{k} {v.shape[1]}x{v.shape[0]}" for k, v in images.items()))
    print()
    print("| window side (px) | windows | " + " | ".join(SETTINGS) + " |")
    print("|---|---:|" + "---:|" * len(SETTINGS))
    for low, high in BUCKETS:
        pick = (sides >= low) & (sides <= high)
        if pick.any():
            cells = " | ".join(f"{errors[n][pick].mean():.2f}" for n in SETTINGS)
            print(f"| {low}-{high} | {pick.sum()} | {cells} |")


if __name__ == "__main__":
    main()
