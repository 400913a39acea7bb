"""What depth adds to a 640x480 frame: back-projection + per-instance statistics + PointCloud2
packing at stride 1, against the CPU frame time of the 2D pipeline, in one run.

    .venv/bin/python bench/geometry.py [--repeat 5] [--masks 20] [--mode dense]

The frame time is `Pipeline.process` (FastSAM-s + CLIP, real architectures with random weights
unless weights are on disk: same compute cost) on 640x480, by default in dense labeling, the
cheapest CPU frame (BENCHMARKS.md), so the ratio is the worst case; the geometry runs on
that frame's own label and instance images with a depth plane plus one step per mask. Prints a
markdown table (median ms of `--repeat` calls after a warm-up) and the ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import cv2
import numpy as np
import skimage.data
import torch
from std_msgs.msg import Header

from sfs_ros.core.frame import Frame
from sfs_ros.core.geometry import Intrinsics, back_project, scores_of
from sfs_ros.core.labeler import LabelerConfig
from sfs_ros.core.pipeline import Pipeline, load_models
from sfs_ros.core.segmenter import SegmenterConfig
from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.ros.cloud import to_cloud
from stage_times import timed  # bench/, on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--masks", type=int, default=20, help="FastSAM max_det")
    parser.add_argument("--mode", default="dense", choices=("crop", "dense"), help="CLIP labeling mode")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    image = cv2.resize(skimage.data.astronaut(), (640, 480))
    seg, lab = load_models(SegmenterConfig(device="cpu", max_det=args.masks, conf=0.0),
                           LabelerConfig(device="cpu", mode=args.mode), fallback_to_random=True)
    lab.set_vocabulary(load_vocabulary("coco"))
    pipe = Pipeline(seg, lab, lambda r: None)
    frame_s = timed(lambda: pipe.process(Frame(image)), args.repeat)
    result = pipe.process(Frame(image))
    k = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
    depth = (2.0 - 0.02 * result.instance_image).astype(np.float32)  # a step per mask
    scores = scores_of(result.labels.class_ids, result.labels.scores)

    def project():
        return back_project(depth, k, image, result.label_image, result.instance_image, scores)

    geometry = project()
    project_s = timed(project, args.repeat)
    pack_s = timed(lambda: to_cloud(geometry.points, Header(frame_id="depth")), args.repeat)
    total = project_s + pack_s
    print(f"`{' '.join([os.path.basename(sys.executable), *sys.argv])}` on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {os.getloadavg()[0]:.1f}, {len(result.masks)} masks, "
          f"{geometry.points.size} points\n")
    print("| step | ms |\n|---|---|")
    print(f"| 2D frame (`Pipeline.process`, FastSAM-s + CLIP {args.mode}, 640x480) | {frame_s * 1000:.1f} |")
    print(f"| back-projection + 3D instances (stride 1) | {project_s * 1000:.1f} |")
    print(f"| PointCloud2 packing | {pack_s * 1000:.1f} |")
    print(f"| **depth adds** | **{total * 1000:.1f} ({100 * total / frame_s:.1f} % of the frame)** |")


if __name__ == "__main__":
    main()
