"""int8 against f32 (OpenVINO) on the known-answer world: agreement and accuracy (#17).

    .venv/bin/python bench/int8.py [--scenes 48] [--modes dense crop]

The trained shapes models (models/shapes/) at 640x480, imgsz 640, low-res masks, generated
calibration (int8_calibration empty: other seeds of the same world plus photos). Per labeling
mode: the f32 masks matched one-to-one to the int8 masks (Hungarian on mask IoU): mean,
median, share >= 0.95 and minimum IoU; the share of f32 masks whose match (IoU >= 0.5) has the
same label; the same with f32 masks for both (CLIP alone); and the known-answer mIoU (12 object
classes) of f32, int8, and each half quantised alone. Speed is bench/backends.py's
openvino-int8 column. Prints one markdown block.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from sfs_ros.eval.agreement import compare
from sfs_ros.synth import known_answer
from sfs_ros.synth.shapes import iter_scenes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=48)
    parser.add_argument("--modes", nargs="+", default=["dense", "hybrid", "crop"])
    args = parser.parse_args()
    scenes = list(iter_scenes(12, args.scenes, size=(480, 640)))
    out = [f"`{' '.join(['.venv/bin/python', *sys.argv])}`", "",
           "| mode | masks | mask IoU mean / median | masks IoU >= 0.95 | min IoU | same labels "
           "(CLIP alone) | mIoU f32 / int8 / int8 FastSAM only / int8 CLIP only |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for mode in args.modes:
        common = dict(backend="openvino", mask_resolution="low")
        f32 = known_answer.load(mode, **common)
        int8 = known_answer.load(mode, int8=True, **common)
        a = compare(f32, int8, (scene.image for scene in scenes))
        miou = [known_answer.objects_miou(known_answer.score(s, lab, scenes))
                for s, lab in (f32, int8, (int8[0], f32[1]), (f32[0], int8[1]))]
        ious = np.array(a.ious)
        out.append(f"| {mode} | {a.masks} | {a.mean_iou:.3f} / {np.median(ious):.3f} | "
                   f"{(ious >= 0.95).mean():.1%} | {ious.min():.2f} | {a.share(a.same_labels):.1%} "
                   f"({a.share(a.same_labels_clip_alone):.1%}) | "
                   + " / ".join(f"{m:.3f}" for m in miou) + " |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
