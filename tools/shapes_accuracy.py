#!/usr/bin/env python3
"""ACCURACY.md: the pipeline scored end to end on the known-answer world (issue #13).

On `--frames` frames of the held-out seed 7, written as JPEG in a bag (so the CompressedImage
path runs too), with the models trained on the shapes world (sfs_ros/synth/known_answer.py):
1. segmenter: share of ground-truth objects matched by one mask at IoU >= 0.8;
2. `sfs_eval run` in every labeling mode: mIoU over the 12 object classes (background pixels
   ignored) and over all 13 (background counted; unlabeled pixels count as misses);
3. the same bag through a running sfs_node (`sfs_eval run --mode live`), crop mode;
4. `sfs segment` on the bag's own JPEG files: label PNGs against the evaluator's predictions;
5. sensitivity: BGR fed where RGB is expected, class ids shifted by one, letterbox padding
   ignored (on the first 20 frames, through the core).

    .venv/bin/python tools/shapes_accuracy.py --out out/accuracy --markdown ACCURACY.md
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from sfs_ros.core.options import LABELING_MODES  # noqa: E402
from sfs_ros.synth import known_answer as ka  # noqa: E402

PY = sys.executable
SEED = 7
IMAGE_TOPIC = "/camera/image/compressed"


def sh(*args: str, env: dict | None = None) -> float:
    """Run a command, fail loudly, return its wall time."""
    t0 = time.monotonic()
    done = subprocess.run(list(args), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.monotonic() - t0


def report_scores(path: Path) -> dict:
    report = json.loads((path / "report.json").read_text())
    matrix = np.array(report["confusion_matrix"]["data"])
    return {"objects": ka.objects_miou(matrix), "all": ka.all_miou(matrix),
            "unlabeled": report["metrics"]["unlabeled_prediction_pixels"] / report["metrics"]["valid_pixels"],
            "fps": report["timing"]["frames_per_s"], "random": report["random_weights"]}


def run_modes(bag: Path, out: Path, modes: list[str]) -> dict:
    scores = {}
    for mode in modes:
        if (out / mode / "report.json").exists():  # a finished run is reused (remove it to redo)
            scores[mode] = report_scores(out / mode)
            continue
        flags = ka.flags(ka.options(mode))
        keep_bag = [] if mode == "crop" else ["--no-bag"]
        sh(PY, "-m", "sfs_ros.eval", "run", str(bag), "--out", str(out / mode), "--no-plots",
           "--quiet", *keep_bag, *flags)
        scores[mode] = report_scores(out / mode)
        print(f"{mode}: {scores[mode]}", flush=True)
    return scores


def run_live(bag: Path, out: Path) -> dict:
    """Start sfs_node with the crop settings (own domain, loopback profile), replay the bag."""
    if (out / "live" / "report.json").exists():  # reused, like the modes
        return report_scores(out / "live")
    env = dict(os.environ, ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", "57"),
               FASTDDS_DEFAULT_PROFILES_FILE=str(ROOT / "config" / "fastdds_localhost.xml"))
    params = []
    for name, value in ka.options("crop").items():
        text = json.dumps(list(value)) if isinstance(value, tuple) else json.dumps(value) \
            if not isinstance(value, str) else value
        params += ["-p", f"{name}:={text}"]
    node = subprocess.Popen([PY, "-m", "sfs_ros.ros.main", "--ros-args", *params,
                             "-p", f"image_topics:=[{IMAGE_TOPIC}]",
                             "-p", "input_reliability:=reliable", "-p", "queue_size:=100"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sh(PY, "-m", "sfs_ros.eval", "run", str(bag), "--mode", "live", "--node", "/sfs_node",
           "--rate", "2", "--vocab", "shapes", "--out", str(out / "live"), "--no-plots", "--quiet",
           "--wait", "120", "--tail", "60", env=env)
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(30)
    return report_scores(out / "live")


def cli_agreement(bag: Path, out: Path) -> float:
    """sfs segment on the bag's own JPEG bytes vs the evaluator's label images (crop)."""
    from rosbags.highlevel import AnyReader

    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    predicted = {}
    with AnyReader([bag]) as reader:
        for conn, _, raw in reader.messages([c for c in reader.connections if c.topic.endswith("compressed")]):
            msg = reader.deserialize(raw, conn.msgtype)
            (frames / f"{msg.header.stamp.sec:06d}_{msg.header.stamp.nanosec:09d}.jpg").write_bytes(bytes(msg.data))
    with AnyReader([out / "crop" / "bag"]) as reader:
        conns = [c for c in reader.connections if c.topic.endswith("label_image")]
        for conn, _, raw in reader.messages(conns):
            msg = reader.deserialize(raw, conn.msgtype)
            key = f"{msg.header.stamp.sec:06d}_{msg.header.stamp.nanosec:09d}"
            predicted[key] = np.frombuffer(bytes(msg.data), np.uint16).reshape(msg.height, msg.width)
    if not (out / "sfs" / "summary.json").exists():
        sh(PY, "-m", "sfs_ros.cli", "segment", str(frames), "--out", str(out / "sfs"), "--quiet",
           *ka.flags(ka.options("crop")))
    equal = [np.mean(cv2.imread(str(out / "sfs" / "labels" / f"{k}.png"), cv2.IMREAD_UNCHANGED) == v)
             for k, v in predicted.items()]
    return float(np.mean(equal)), len(equal)


def sensitivity(frames: int) -> dict:
    from sfs_ros.synth.shapes import make_scene

    scenes = [make_scene(SEED, k) for k in range(frames)]
    segmenter, labeler = ka.load("crop")
    out = {"right (full masks, imgsz 640)": ka.objects_miou(ka.score(segmenter, labeler, scenes)),
           "BGR fed as RGB": ka.objects_miou(ka.score(segmenter, labeler, scenes, image=ka.bgr)),
           "class ids shifted by one": ka.objects_miou(
               ka.score(segmenter, labeler, scenes, prediction=ka.shift_ids))}
    # low masks at imgsz 320: the letterbox resizes 640x480 frames by 0.5 there
    segmenter, labeler = ka.load("crop", mask_resolution="low", imgsz=320)
    out["right (low masks, imgsz 320)"] = ka.objects_miou(ka.score(segmenter, labeler, scenes))
    with ka.broken_letterbox():
        out["letterbox gain and padding ignored (low masks, imgsz 320)"] = ka.objects_miou(
            ka.score(segmenter, labeler, scenes))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/accuracy")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--modes", nargs="+", default=list(LABELING_MODES))
    parser.add_argument("--sensitivity-frames", type=int, default=20)
    parser.add_argument("--no-live", action="store_true")
    parser.add_argument("--no-cli", action="store_true")
    parser.add_argument("--markdown", default=None, help="write the tables to this file")
    args = parser.parse_args()
    out = Path(args.out)
    bag = out / "bag"
    if not bag.exists():
        # a topic ending in /compressed: what sfs_node reads as CompressedImage (live mode)
        sh(PY, "-m", "sfs_ros.eval", "convert", "shapes", "--frames", str(args.frames), "--seed",
           str(SEED), "--out", str(bag), "--image-topic", IMAGE_TOPIC, "--quiet")
    from shapes_segmenter_accuracy import GOAL as SEG_GOAL, evaluate as segmenter_accuracy  # noqa: E402

    from sfs_ros.core.segmenter import Segmenter, SegmenterConfig
    from sfs_ros.synth.shapes import iter_scenes

    values = ka.options("crop")
    segmenter = Segmenter(SegmenterConfig(model=values["model"], imgsz=values["imgsz"], device="cpu"))
    seg = segmenter_accuracy(segmenter, iter_scenes(SEED, args.frames))
    print(f"segmenter: {seg}", flush=True)
    modes = run_modes(bag, out, args.modes)
    live = None if args.no_live or "crop" not in modes else run_live(bag, out)
    agreement, compared = cli_agreement(bag, out) if "crop" in modes and not args.no_cli else (None, 0)
    sens = sensitivity(args.sensitivity_frames) if args.sensitivity_frames else {}
    print(json.dumps({"segmenter": str(seg), "modes": modes, "live": live, "cli": agreement,
                      "sensitivity": sens}, indent=1, default=str))
    if args.markdown:
        Path(args.markdown).write_text(markdown(args, seg, modes, live, agreement, compared, sens, SEG_GOAL))
    return 0


def markdown(args, seg, modes, live, agreement, compared, sens, seg_goal) -> str:
    goals = {"crop": 0.85, "semantic-vote": 0.85}
    lines = [
        "# Accuracy on the known-answer world",
        "",
        "The models in `models/shapes/` were trained here on the synthetic shapes world",
        "(`sfs_ros/synth/shapes.py`; 12 object classes + background). They are a test world, not a",
        "replacement for FastSAM, CLIP or a real SegFormer: they let the project check that labels are",
        "*right* end to end (colour order, letterbox geometry, activations, class ids), which random",
        "weights cannot. Numbers on the CPU of this 2-core machine.",
        "",
        f"Command: `.venv/bin/python tools/shapes_accuracy.py --frames {args.frames} --markdown ACCURACY.md`",
        f"({args.frames} frames of seed {SEED}, never used in training; images stored as JPEG in the",
        "bag, so the CompressedImage path runs).",
        "",
        "## Segmenter",
        "",
        "Share of ground-truth objects matched by one predicted mask with IoU >= 0.8 (one-to-one,",
        f"Hungarian): **{seg.recall:.3f}** (goal >= {seg_goal}); mean IoU of matched objects",
        f"{seg.mean_matched_iou:.3f}; false-positive masks per frame {seg.false_positives_per_frame:.2f}.",
        "",
        "## Labeling modes (`sfs_eval run`)",
        "",
        "Objects: mIoU over the 12 object classes, background pixels ignored. All: mIoU over 13",
        "classes with background counted. Unlabeled pixels (no mask, or a score under the threshold)",
        "count as misses in both (their share of counted pixels is given).",
        "",
        "| mode | mIoU objects | goal | mIoU all 13 | unlabeled share | frames/s |",
        "|---|---|---|---|---|---|",
    ]
    for mode, s in modes.items():
        goal = goals.get(mode)
        met = "" if goal is None else (f">= {goal} " + ("met" if s["objects"] >= goal else "**missed**"))
        lines.append(f"| {mode} | {s['objects']:.3f} | {met or '-'} | {s['all']:.3f} | "
                     f"{s['unlabeled']:.3f} | {s['fps']} |")
    lines += ["", "## The ROS path and the CLI", ""]
    if live is not None:
        delta = live["objects"] - modes["crop"]["objects"]
        lines.append(f"- `sfs_eval run --mode live` through a running sfs_node (crop, rate 2 Hz): mIoU "
                     f"objects **{live['objects']:.3f}** vs direct {modes['crop']['objects']:.3f} "
                     f"(difference {delta:+.3f}; goal within 0.02).")
    if agreement is not None:
        lines.append(f"- `sfs segment` on the bag's own JPEG files ({compared} frames): label PNGs equal "
                     f"the evaluator's label images on **{100 * agreement:.2f}%** of pixels.")
    lines += ["", f"## Sensitivity (first {args.sensitivity_frames} frames, crop, through the core)", "",
              "Each injected bug must drop mIoU far below the goal; test/test_known_answer.py asserts it.", "",
              "| case | mIoU objects |", "|---|---|"]
    lines += [f"| {case} | {value:.3f} |" for case, value in sens.items()]
    lines += ["", "## The models", "", "| model | file | size | training wall time | command |",
              "|---|---|---|---|---|"]
    for name, path, command in MODELS:
        manifest = json.loads((ka.MODELS_DIR / f"{name}.json").read_text())
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        lines.append(f"| {name} | `{path.relative_to(ROOT)}` | {size / 2**20:.1f} MiB | "
                     f"{training_seconds(manifest):.0f} s | `{command}` |")
    lines += ["", "Training times were measured with the two cores shared by the three trainings "
              "(each script uses one thread); each manifest (`models/shapes/*.json`) records seeds, "
              "data, settings, versions and its own held-out metrics.", "", WHY_MISSED]
    return "\n".join(lines) + "\n"


MODELS = (
    ("fastsam-shapes", ka.SEGMENTER, ".venv/bin/python tools/train_shapes_segmenter.py"),
    ("clip-shapes", ka.CLIP_WEIGHTS, ".venv/bin/python tools/train_shapes_clip.py"),
    ("segformer-shapes", ka.SEGFORMER, ".venv/bin/python tools/train_shapes_segformer.py"),
)


def training_seconds(manifest: dict) -> float:
    """The training wall time, whatever key the manifest keeps it under."""
    for key in ("wall_time_s", "training_wall_time_s"):
        if key in manifest:
            return float(manifest[key])
    return float(manifest["wall_seconds"]["training"])


WHY_MISSED = """## Goals missed, and why

- **crop (0.835 vs 0.85):** the segmenter matches 0.91 of objects at IoU >= 0.8 and the CLIP
  head names 0.965 of ground-truth masks right (its manifest: the confusions are between
  shapes of one colour). On predicted masks (25 frames) 8.5% of object pixels get another
  object's class and 2.5% stay unlabeled. Both models were trained for 12-17 minutes on shared
  CPU cores; longer training is the fix, not a change to the pipeline.
- **semantic-vote (0.746 vs 0.85):** the SegFormer sees 640x480 frames squashed to 160x160, so
  the smallest shapes (24 px) are 6 px wide for it: alone it reaches 0.74 per pixel (its
  manifest), and voting inside the ground-truth masks gave 0.76 in a one-off check. A larger
  input needs more training than the ~20-minute budget allowed here.
- **dense and hybrid** have no goal: the CLIP head was trained on crops only (a dense term was
  tried and plateaued), so dense features are not aligned; hybrid re-scores only the masks
  whose dense scores are unsure. The numbers are what an untrained dense path gives.
- "unlabeled share" is the share of all scored pixels left unlabeled; in the CLIP modes that is
  mostly background no mask covers (background is 93% of the pixels), in the semantic modes the
  SegFormer labels every pixel."""


if __name__ == "__main__":
    sys.exit(main())
