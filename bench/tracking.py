"""Tracking on a known-answer video, its cost at 100 masks, and relabel_every on a static scene.

    .venv/bin/python bench/tracking.py [--frames 40] [--seeds 1 2 3] [--speeds 2-12 10-24]
        [--parts sequence cost relabel]

* sequence: the moving shapes world (sfs_ros/synth/motion.py: constant velocity, bounces,
  crossings, occlusions, stable ground-truth ids) through the trained shapes models (crop mode).
  Each frame is segmented and labeled ONCE; the same masks and labels then go through every
  variant (no tracking, tracking without smoothing or without motion, the defaults), so the
  rows differ only by the tracker. CLEAR-MOT counts and label flicker from sfs_ros.eval.tracking.
* cost: tracker plan + commit on 100 masks per frame (full and low-res masks) against one CPU
  frame of the default models (FastSAM-s segment + CLIP ViT-B-32 label of the same 100 masks,
  random weights: same compute), all timed in this run.
* relabel: a static shapes scene through Pipeline.process with relabel_every 1 and 5: labeler
  time and masks sent to CLIP, and whether the labels stay the same.

Prints markdown tables (BENCHMARKS.md, "Tracking").
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from sfs_ros.core import fusion
from sfs_ros.core.frame import Frame, Labels, Masks
from sfs_ros.core.tracker import Tracker, TrackerConfig
from scipy.optimize import linear_sum_assignment

from sfs_ros.eval.tracking import TrackingScore, overlap_ious
from sfs_ros.synth import known_answer
from sfs_ros.synth.motion import make_sequence
from stage_times import timed  # bench/, on sys.path when run as a script

VARIANTS: dict[str, TrackerConfig | None] = {
    "no tracking (mask index, raw labels)": None,
    "tracking, no smoothing, IoU only (no motion model, no centre pass)":
        TrackerConfig(label_smoothing=0.0, motion=False, centre_gate=0.0),
    "tracking, no smoothing, no centre pass": TrackerConfig(label_smoothing=0.0, centre_gate=0.0),
    "tracking, no smoothing, no motion model": TrackerConfig(label_smoothing=0.0, motion=False),
    "tracking, no smoothing": TrackerConfig(label_smoothing=0.0),
    "tracking + smoothing (defaults)": TrackerConfig(),
    "tracking + smoothing 0.85": TrackerConfig(label_smoothing=0.85),
}


def rows_of(labels: Labels, index: np.ndarray) -> Labels:
    """The labels of the masks `index` (what the labeler would say about that subset)."""
    return Labels(labels.class_ids[index], labels.scores[index], labels.topk_ids[index],
                  labels.topk_scores[index])


def track(tracker: Tracker | None, masks: Masks, labels: Labels, classes: int, threshold: float
          ) -> tuple[np.ndarray, dict[int, int]]:
    """(instance image with the variant's ids, id -> the variant's class) of one frame."""
    _, index_image = fusion.fuse(masks, labels)
    if tracker is None:
        return index_image, {i + 1: int(c) for i, c in enumerate(labels.class_ids)}
    plan = tracker.plan(masks)
    smoothed, tracks = tracker.commit(plan, rows_of(labels, plan.to_label), classes, threshold)
    values = tracks.image_values()
    return fusion.track_lut(values)[index_image], dict(zip(values.tolist(), smoothed.class_ids.tolist()))


def part_sequence(args: argparse.Namespace) -> None:
    segmenter, labeler = known_answer.load("crop", mask_resolution="low")
    for speed in args.speeds:
        low, high = (float(v) for v in speed.split("-"))
        _sequence_table(args, segmenter, labeler, (low, high))


def _sequence_table(args: argparse.Namespace, segmenter, labeler, speed: tuple[float, float]) -> None:
    classes, threshold = len(labeler.bank.vocabulary), labeler.threshold
    scores: dict[str, list[TrackingScore]] = {name: [] for name in VARIANTS}
    right = dict.fromkeys(VARIANTS, 0)
    t0 = time.perf_counter()
    for seed in args.seeds:  # each sequence its own trackers and scores: other objects
        trackers = {name: None if cfg is None else Tracker(cfg) for name, cfg in VARIANTS.items()}
        for name in VARIANTS:
            scores[name].append(TrackingScore())
        for frame in make_sequence(seed, speed=speed).frames(args.frames):
            masks = segmenter.segment(frame.image)
            labels = labeler.label(frame.image, masks)
            for name, tracker in trackers.items():
                ids_image, per_id = track(tracker, masks, labels, classes, threshold)
                scores[name][-1].update(frame.instances, ids_image, per_id)
                right[name] += _right(frame, ids_image, per_id)
    wall = time.perf_counter() - t0
    print(f"\n### Known-answer video: {len(args.seeds)} sequences x {args.frames} frames, 640x480, "
          f"8 objects at {speed[0]:g}-{speed[1]:g} px/frame (seeds {' '.join(map(str, args.seeds))}; {wall:.0f} s)\n")
    print("| variant | ID switches | FP | FN | MOTA | label flicker | objects labeled right |")
    print("|---|---|---|---|---|---|---|")
    for name, per_seed in scores.items():
        total = {k: sum(s.summary()[k] for s in per_seed) for k in
                 ("id_switches", "false_positives", "false_negatives", "objects", "matches")}
        changes, pairs = sum(s.flicker.changes for s in per_seed), sum(s.flicker.pairs for s in per_seed)
        mota = 1 - (total["false_negatives"] + total["false_positives"] + total["id_switches"]) / total["objects"]
        print(f"| {name} | {total['id_switches']} | {total['false_positives']} | {total['false_negatives']} "
              f"| {mota:.3f} | {100 * changes / max(pairs, 1):.2f} % ({changes}/{pairs}) "
              f"| {100 * right[name] / max(total['matches'], 1):.1f} % |")


def _right(frame, ids_image: np.ndarray, per_id: dict[int, int]) -> int:
    """Ground-truth objects whose best-overlapping prediction (IoU >= 0.5) has their class."""
    gt_ids, pred_ids, iou = overlap_ious(frame.instances, ids_image)
    if not iou.size:
        return 0
    rows, cols = linear_sum_assignment(-iou)
    return sum(1 for r, c in zip(rows, cols) if iou[r, c] >= 0.5
               and per_id.get(int(pred_ids[c])) == frame.classes.get(int(gt_ids[r])))


def part_cost(args: argparse.Namespace) -> None:
    from sfs_ros.core.labeler import LabelerConfig
    from sfs_ros.core.pipeline import load_models
    from sfs_ros.core.segmenter import SegmenterConfig
    from sfs_ros.core.vocabulary import load_vocabulary

    image = make_sequence(1).frame(0).image
    rows = []
    for resolution in ("full", "low"):
        seg, lab = load_models(SegmenterConfig(device="cpu", max_det=100, conf=0.0, mask_resolution=resolution),
                               LabelerConfig(device="cpu", mode="crop"), fallback_to_random=True)
        lab.set_vocabulary(load_vocabulary("coco"))
        masks = seg.segment(image)
        t_seg = timed(lambda: seg.segment(image), 2)
        t_label = timed(lambda: lab.label(image, masks), 1)
        labels = lab.label(image, masks)
        classes = len(lab.bank.vocabulary)
        tracker = Tracker(TrackerConfig())

        def step() -> None:
            plan = tracker.plan(masks)
            tracker.commit(plan, rows_of(labels, plan.to_label), classes, lab.threshold)

        t_track = timed(step, 20)
        frame = t_seg + t_label
        rows.append((resolution, len(masks), t_track, t_seg, t_label, frame))
    print("\n### Cost of tracking + smoothing at 100 masks per frame (FastSAM-s imgsz 640, crop "
          "labeling with ViT-B-32, coco, random weights, CPU)\n")
    print("| masks | n | track ms | segment ms | label ms | track / (segment + label) | track / segment |")
    print("|---|---|---|---|---|---|---|")
    for resolution, n, t_track, t_seg, t_label, frame in rows:
        print(f"| {resolution} | {n} | {1000 * t_track:.1f} | {1000 * t_seg:.0f} | {1000 * t_label:.0f} "
              f"| {100 * t_track / frame:.2f} % | {100 * t_track / t_seg:.2f} % |")


def part_relabel(args: argparse.Namespace) -> None:
    from sfs_ros.core.pipeline import Pipeline

    segmenter, labeler = known_answer.load("crop", mask_resolution="low")
    scene = make_sequence(5, objects=10, static=True)
    out = {}
    Pipeline(segmenter, labeler, lambda r: None).process(Frame(scene.frame(0).image))  # warm-up
    for every in (1, 5):
        counted = []
        original = labeler.label

        def counting(image, masks, *a, **k):
            counted.append(len(masks))
            return original(image, masks, *a, **k)

        labeler.label = counting
        pipe = Pipeline(segmenter, labeler, lambda r: None, tracking=TrackerConfig(relabel_every=every))
        results = [pipe.process(Frame(scene.frame(k).image, source="cam")) for k in range(args.frames)]
        del labeler.label
        label_s = sum(r.timings["label"] for r in results)
        classes = [r.labels.class_ids.tolist() for r in results]
        out[every] = (label_s, sum(counted), classes)
    same = sum(a == b for a, b in zip(out[1][2], out[5][2]))
    print(f"\n### relabel_every on a static scene (10 objects, {args.frames} frames, trained shapes "
          "models, crop mode, low-res masks)\n")
    print("| relabel_every | masks sent to CLIP | label stage s | frames with the same labels as 1 |")
    print("|---|---|---|---|")
    for every, (label_s, counted, _) in out.items():
        print(f"| {every} | {counted} | {label_s:.2f} | {same if every != 1 else args.frames}/{args.frames} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--speeds", nargs="+", default=["2-12", "10-24"],
                        help="object speed ranges, pixels per frame (one table each)")
    parser.add_argument("--parts", nargs="+", default=["sequence", "cost", "relabel"],
                        choices=["sequence", "cost", "relabel"])
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"`{' '.join(['.venv/bin/python', 'bench/tracking.py', *sys.argv[1:]])}` on "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    for part in args.parts:
        {"sequence": part_sequence, "cost": part_cost, "relabel": part_relabel}[part](args)


if __name__ == "__main__":
    main()
