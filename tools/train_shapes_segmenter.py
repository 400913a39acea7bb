#!/usr/bin/env python3
"""Train the shapes-world segmenter: the FastSAM recipe at test-world scale (issue #13).

FastSAM is a YOLOv8-seg network trained class-agnostic (one class, "object") on instance
polygons. This script does the same on the known-answer shapes world: Ultralytics' own
`yolov8n-seg.yaml` (random init, nc=1), trained with Ultralytics on the generator's YOLO dataset
(`sfs_ros.synth.writers.write_yolo`: one visible-region polygon per object), then copies the
final weights (Ultralytics strips the optimizer and stores fp16) to models/shapes/ and checks
that they load through the project's safe loader as trained (not random) weights.

It is a TEST WORLD model: it lets the tests check labels end to end; it is no replacement for
FastSAM. Seeds: training frames come from world seed 1, validation frames from seed 2; seed 7
is held out for the accuracy number (tools/shapes_segmenter_accuracy.py), run at the end.

Pixel scale: the training frames are generated at 320x320 (the world allows other sizes; objects
keep their 24-160 px) and trained at imgsz 320 without downscaling, so the CPU pays for 320x320
inputs while the network learns objects at their real pixel size. Inference on 640x480 frames
then runs at imgsz 640 (the node's default), where the mask prototypes lie on a 4 px grid of
the frame. Training on 640x480 frames shrunk to imgsz 320 (inference at 320, 8 px prototype
cells) matched only 0.74 of the held-out objects at IoU >= 0.8: the small ones' edges were too
coarse.

CPU only, one thread, offline (YOLO_OFFLINE, plots off: Ultralytics would fetch a font),
deterministic (seed 0). The defaults are the ones that produced the committed file:

    .venv/bin/python tools/train_shapes_segmenter.py
"""
from __future__ import annotations

import os

# Before Ultralytics is imported: no network (downloads, telemetry, pip), one CPU thread.
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from sfs_ros.synth.shapes import parse_size  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 2, 7
ARCHITECTURE = "yolov8n-seg.yaml"  # Ultralytics' own config; nc comes from the data (1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train-frames", type=int, default=400, help=f"frames of seed {TRAIN_SEED}")
    parser.add_argument("--val-frames", type=int, default=20, help=f"frames of seed {VAL_SEED}")
    parser.add_argument("--frame-size", type=parse_size, default=(320, 320), metavar="WxH",
                        help="size of the generated training frames (objects keep their pixel size)")
    parser.add_argument("--imgsz", type=int, default=320, help="training size")
    parser.add_argument("--eval-imgsz", type=int, default=640,
                        help="inference size for 640x480 frames that keeps the training pixel scale")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr0", type=float, default=0.002, help="AdamW learning rate")
    parser.add_argument("--mosaic", type=float, default=1.0, help="mosaic probability")
    parser.add_argument("--warmup-epochs", type=float, default=1.0, help="(at least 100 steps)")
    parser.add_argument("--close-mosaic", type=int, default=2, help="last epochs without mosaic")
    parser.add_argument("--scale", type=float, default=0.25, help="random scale gain (+-)")
    parser.add_argument("--time", type=float, default=None,
                        help="hours: Ultralytics fits the epochs into this time instead (not reproducible)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "build" / "shapes_yolo")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "build" / "shapes_segmenter")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "shapes" / "fastsam-shapes.pt")
    parser.add_argument("--test-frames", type=int, default=100,
                        help=f"held-out frames of seed {TEST_SEED} scored at the end (0: skip)")
    return parser


def write_dataset(folder: Path, train_frames: int, val_frames: int, size: tuple[int, int]) -> Path:
    """The YOLO-seg dataset: train from seed TRAIN_SEED, val from seed VAL_SEED; returns data.yaml.

    write_yolo draws both splits from one seed, so it runs once per seed and this data.yaml
    (class 0 "object", as the writer's) names both splits."""
    from sfs_ros.synth.writers import write_yolo

    if folder.exists():
        shutil.rmtree(folder)  # stale frames of another size would join the training set
    write_yolo(folder, TRAIN_SEED, train_frames, 0, size)
    write_yolo(folder, VAL_SEED, 0, val_frames, size)
    data = folder / "data.yaml"
    data.write_text(
        f"# shapes world: train = seed {TRAIN_SEED} frames 0..{train_frames - 1}, "
        f"val = seed {VAL_SEED} frames 0..{val_frames - 1}; class-agnostic (the FastSAM recipe)\n"
        f"path: {folder.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: object\n",
        encoding="utf-8")
    return data


def train(args: argparse.Namespace, data: Path) -> Path:
    """Ultralytics training from random init; returns the final (stripped, fp16) checkpoint."""
    from ultralytics import YOLO

    model = YOLO(ARCHITECTURE, task="segment")
    model.train(
        data=str(data), imgsz=args.imgsz, epochs=args.epochs, batch=args.batch,
        # one optimizer step per batch: Ultralytics would otherwise accumulate to nbs=64 images,
        # leaving a few dozen steps for a run of this size
        nbs=args.batch, optimizer="AdamW", lr0=args.lr0, warmup_epochs=args.warmup_epochs,
        mosaic=args.mosaic, close_mosaic=args.close_mosaic, scale=args.scale,
        time=args.time, device="cpu", workers=0, seed=0, deterministic=True, pretrained=False,
        amp=False, plots=False, val=True, project=str(args.runs_dir), name="train",
        exist_ok=True, verbose=False,
    )
    return Path(model.trainer.last)


def check_loads(path: Path, imgsz: int) -> None:
    """The committed file must load through the project's safe loader as trained weights."""
    from sfs_ros.core.segmenter import Segmenter, SegmenterConfig

    segmenter = Segmenter(SegmenterConfig(model=str(path), imgsz=imgsz, device="cpu"))
    if segmenter.random_weights:
        raise SystemExit(f"{path} is reported as random weights")
    names = segmenter.model.model.names
    if names != {0: "object"}:
        raise SystemExit(f"{path} has class names {names}, expected {{0: 'object'}}")


def held_out_accuracy(path: Path, imgsz: int, frames: int) -> dict:
    """tools/shapes_segmenter_accuracy.py's numbers on the held-out seed (FastSAM defaults)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from shapes_segmenter_accuracy import evaluate

    from sfs_ros.core.segmenter import Segmenter, SegmenterConfig
    from sfs_ros.synth.shapes import iter_scenes

    segmenter = Segmenter(SegmenterConfig(model=str(path), imgsz=imgsz, conf=0.4, iou=0.9, device="cpu"))
    result = asdict(evaluate(segmenter, iter_scenes(TEST_SEED, frames)))
    return {"seed": TEST_SEED, "frames": frames, "imgsz": imgsz, "conf": 0.4, "iou": 0.9, **result}


def versions() -> dict:
    import ultralytics

    return {"python": platform.python_version(), "torch": torch.__version__,
            "ultralytics": ultralytics.__version__}


def write_manifest(args: argparse.Namespace, seconds: dict, metrics: dict | None) -> Path:
    """models/shapes/<name>.json: what the file is and how it was made."""
    path = args.out.with_suffix(".json")
    command = "python tools/train_shapes_segmenter.py " + " ".join(sys.argv[1:])
    manifest = {
        "what": ("Test-world segmenter: a class-agnostic YOLOv8n-seg (nc=1, names {0: object}) trained "
                 "from random init on the synthetic shapes world (sfs_ros.synth.shapes) with the FastSAM "
                 "recipe. A TEST WORLD model so the tests can check labels end to end; not a "
                 "replacement for FastSAM."),
        "file": str(args.out.relative_to(ROOT)) if args.out.is_relative_to(ROOT) else str(args.out),
        "file_bytes": args.out.stat().st_size,
        "load_with": {"model": f"models/shapes/{args.out.name}", "imgsz": args.eval_imgsz, "conf": 0.4,
                      "iou": 0.9, "cli": f"--model models/shapes/{args.out.name} --imgsz {args.eval_imgsz}"},
        "command": command.strip(),
        "architecture": ARCHITECTURE,
        "data": {"generator": "sfs_ros.synth.writers.write_yolo (visible-region polygons)",
                 "train": {"seed": TRAIN_SEED, "frames": args.train_frames},
                 "val": {"seed": VAL_SEED, "frames": args.val_frames},
                 "frame_size": "{1}x{0}".format(*args.frame_size)},
        "training": {"imgsz": args.imgsz, "epochs": args.epochs, "batch": args.batch, "nbs": args.batch,
                     "optimizer": "AdamW", "lr0": args.lr0,
                     "warmup_epochs": args.warmup_epochs, "mosaic": args.mosaic,
                     "close_mosaic": args.close_mosaic, "scale": args.scale, "time_hours": args.time,
                     "seed": 0, "deterministic": True, "device": "cpu", "torch_threads": 1},
        "wall_seconds": seconds,
        "held_out": metrics,
        "versions": versions(),
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    print(f"[1/4] dataset: {args.train_frames} train (seed {TRAIN_SEED}) + {args.val_frames} val "
          f"(seed {VAL_SEED}) frames -> {args.data_dir}", flush=True)
    data = write_dataset(args.data_dir, args.train_frames, args.val_frames, args.frame_size)
    data_done = time.perf_counter()
    print(f"[2/4] training {ARCHITECTURE} nc=1 at imgsz {args.imgsz} for {args.epochs} epochs "
          f"(dataset took {data_done - started:.0f} s)", flush=True)
    last = train(args, data)
    train_done = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(last, args.out)
    print(f"[3/4] {last} -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); "
          f"training took {train_done - data_done:.0f} s", flush=True)
    check_loads(args.out, args.eval_imgsz)
    metrics = None
    if args.test_frames:
        print(f"[4/4] scoring {args.test_frames} held-out frames of seed {TEST_SEED}", flush=True)
        metrics = held_out_accuracy(args.out, args.eval_imgsz, args.test_frames)
        print(f"      objects matched at IoU>=0.8: {metrics['recall']:.3f}, mean IoU "
              f"{metrics['mean_matched_iou']:.3f}, false positives/frame "
              f"{metrics['false_positives_per_frame']:.2f}", flush=True)
    seconds = {"dataset": round(data_done - started, 1), "training": round(train_done - data_done, 1),
               "total": round(time.perf_counter() - started, 1)}
    manifest = write_manifest(args, seconds, metrics)
    print(f"done in {seconds['total']:.0f} s (training {seconds['training']:.0f} s); manifest {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
