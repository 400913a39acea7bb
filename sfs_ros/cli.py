"""The `sfs` command: semantic segmentation of images, folders and videos without ROS.

    sfs segment photo.jpg --vocab ade20k --out out/
    sfs segment frames/ --vocab cat dog "traffic light" --device cuda:0 --out out/
    sfs segment drive.mp4 --vocab cityscapes --out out/

Writes per frame: labels/<name>.png (uint16 class ids, 65535 = unlabeled), instance_ids/<name>.png
(uint16, 0 = no mask), overlays/<name>.png (RGB overlay), instances/<name>.json; and summary.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from sfs_ros.core.frame import Frame, Result, SfsError, instance_records
from sfs_ros.core.labeler import DEFAULT_TEMPLATES, LABELING_MODES, LabelerConfig
from sfs_ros.core.pipeline import load_models
from sfs_ros.core.segmenter import MASK_RESOLUTIONS, Segmenter, SegmenterConfig
from sfs_ros.core.semantic import SEMANTIC_MODES, SemanticConfig, fixed_vocabulary
from sfs_ros.core.vocabulary import PRESETS, Vocabulary, load_vocabulary

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm"}


# ---------------------------------------------------------------------------- shared options
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and vocabulary options shared by `sfs` and `sfs_eval`."""
    seg, lab, sem = SegmenterConfig(), LabelerConfig(), SemanticConfig()
    g = parser.add_argument_group("models")
    g.add_argument("--vocab", nargs="+", default=None, metavar="CLASS",
                   help=f"a preset ({', '.join(PRESETS)}), a .txt/.tsv file, or class names "
                        "(synonyms as 'name, synonym'); default coco (semantic-*: the checkpoint's)")
    g.add_argument("--device", default=seg.device, help="auto, cpu or cuda:N")
    g.add_argument("--model", default=seg.model, help="FastSAM-s, FastSAM-x or a YOLOv8-seg checkpoint path")
    g.add_argument("--clip-model", default=lab.clip_model, help="open_clip model name")
    g.add_argument("--clip-pretrained", default=lab.pretrained, help="open_clip pretrained tag or checkpoint file")
    g.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES), help="prompt templates with {}")
    g.add_argument("--imgsz", type=int, default=seg.imgsz)
    g.add_argument("--conf", type=float, default=seg.conf)
    g.add_argument("--iou", type=float, default=seg.iou)
    g.add_argument("--max-det", type=int, default=seg.max_det)
    g.add_argument("--min-area", type=int, default=seg.min_area, help="smallest mask kept, in pixels")
    g.add_argument("--no-retina", action="store_true", help="masks from low-resolution prototypes (faster)")
    g.add_argument("--mask-resolution", choices=MASK_RESOLUTIONS, default=seg.mask_resolution,
                   help="full: every mask upsampled to the image; low: masks stay on FastSAM's "
                        "prototype grid (network input / 4), label and instance images upsampled "
                        "once (faster with many masks or large frames, blockier edges); network: "
                        "the same on the network input grid (finer edges, for frames > imgsz)")
    g.add_argument("--half", action="store_true", help="fp16 on CUDA")
    g.add_argument("--threshold", type=float, default=lab.threshold, help="below this a mask stays unlabeled")
    g.add_argument("--topk", type=int, default=lab.topk)
    g.add_argument("--labeling", choices=LABELING_MODES + SEMANTIC_MODES, default=lab.mode,
                   help="crop: SSA-style CLIP mask crops (accurate); dense: one CLIP pass per frame "
                        "(fast, flat in masks); hybrid: dense, crops for unsure masks; "
                        "semantic-vote: a closed-set model votes inside each mask (SSA rule, the "
                        "checkpoint's classes); semantic-hybrid: weak votes fall back to CLIP")
    g.add_argument("--prune-topk", type=int, default=lab.prune_topk,
                   help="score masks only against the frame's top-k classes (0 = off)")
    g.add_argument("--semantic-checkpoint", default=sem.checkpoint,
                   help="semantic-*: Hugging Face semantic-segmentation id or local folder")
    g.add_argument("--min-vote-share", type=float, default=sem.min_vote_share,
                   help="semantic-hybrid: masks whose winning class holds less go to CLIP")
    g.add_argument("--extra-classes", nargs="+", default=[], metavar="CLASS",
                   help="semantic-hybrid: open-vocabulary classes added after the checkpoint's")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--random-weights", action="store_true",
                   help="build the same architectures untrained (outputs are meaningless and marked)")
    w.add_argument("--allow-random-weights", action="store_true",
                   help="if a checkpoint is missing, say so and continue with random weights")


def model_configs(args: argparse.Namespace) -> tuple[SegmenterConfig, LabelerConfig]:
    seg = SegmenterConfig(
        model=args.model, imgsz=args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det,
        retina_masks=not args.no_retina, mask_resolution=args.mask_resolution, half=args.half,
        device=args.device,
        min_area=args.min_area, random_weights=args.random_weights,
    )
    lab = LabelerConfig(
        clip_model=args.clip_model, pretrained=args.clip_pretrained, templates=tuple(args.templates),
        threshold=args.threshold, topk=args.topk, device=args.device, half=args.half,
        mode=args.labeling if args.labeling in LABELING_MODES else "crop", prune_topk=args.prune_topk,
        random_weights=args.random_weights,
    )
    return seg, lab


def load_from_args(args: argparse.Namespace) -> tuple[Segmenter, Any]:
    """Segmenter and labeler (CLIP or semantic, per --labeling) from the command-line options."""
    seg_cfg, lab_cfg = model_configs(args)
    semantic = None
    if args.labeling in SEMANTIC_MODES:
        semantic = SemanticConfig(
            checkpoint=args.semantic_checkpoint, device=args.device, half=args.half,
            min_vote_share=args.min_vote_share, topk=args.topk, random_weights=args.random_weights,
        )
    return load_models(seg_cfg, lab_cfg, args.allow_random_weights, semantic,
                       hybrid=args.labeling == "semantic-hybrid")


def labeler_vocabulary(labeler: Any, args: argparse.Namespace) -> Vocabulary:
    """The checkpoint's classes for semantic labelers (+ --extra-classes), else --vocab."""
    fixed = fixed_vocabulary(labeler, args.extra_classes)
    if fixed is not None:
        if args.vocab:
            raise SfsError(f"--labeling {args.labeling} names the checkpoint's classes: drop --vocab "
                           "(semantic-hybrid takes open-vocabulary additions as --extra-classes)")
        return fixed
    return vocabulary_from_args(args.vocab or ["coco"])


def vocabulary_from_args(values: list[str]) -> Vocabulary:
    """One value may name a preset or a file; anything else is a list of class names."""
    if len(values) == 1 and (values[0] in PRESETS or Path(values[0]).suffix in {".txt", ".tsv"}):
        return load_vocabulary(values[0])
    return load_vocabulary(values)


# ---------------------------------------------------------------------------- inputs
def read_frames(source: Path) -> Iterator[Frame]:
    """RGB frames from an image, a folder of images (sorted) or a video file."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SfsError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        yield from _read_video(source)
        return
    else:
        files = [source]
    for seq, path in enumerate(files):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SfsError(f"cannot decode image {path}")
        yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp=None, frame_id=path.stem,
                    source=str(path), seq=seq)


def _read_video(path: Path) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SfsError(f"cannot open video {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    seq = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            stamp = seq / fps if fps > 0 else None
            yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp=stamp,
                        frame_id=f"{path.stem}_{seq:06d}", source=str(path), seq=seq)
            seq += 1
    finally:
        capture.release()
    if seq == 0:
        raise SfsError(f"no frames could be read from {path}")


def count_frames(source: Path) -> int | None:
    if source.is_dir():
        return sum(1 for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        return n or None
    return 1


# ---------------------------------------------------------------------------- outputs
def instances_json(result: Result) -> dict:
    """Per-instance records of one frame (the InstanceArray message, as JSON)."""
    instances = [{
        "instance_id": r.instance_id, "class_id": r.class_id, "class_name": r.class_name,
        "score": r.score,
        "proposals": [{"class_id": c, "class_name": n, "score": sc} for c, n, sc in r.proposals],
        "box_xyxy": list(r.box), "area": r.area, "mask_score": r.mask_score,
    } for r in instance_records(result)]
    return {
        "frame": result.frame.frame_id,
        "source": result.frame.source,
        "height": int(result.label_image.shape[0]),
        "width": int(result.label_image.shape[1]),
        "vocabulary": result.vocabulary_name,
        "random_weights": result.random_weights,
        "timings_s": result.timings,
        "instances": instances,
    }


def mark_random(overlay: np.ndarray) -> np.ndarray:
    """Stamp an overlay made by untrained models, so no picture of it passes for a result."""
    out = overlay.copy()
    h = max(18, out.shape[0] // 20)
    cv2.rectangle(out, (0, 0), (out.shape[1], h + 8), (200, 0, 0), thickness=-1)
    cv2.putText(out, "RANDOM WEIGHTS - labels meaningless", (4, h), cv2.FONT_HERSHEY_SIMPLEX,
                h / 30.0, (255, 255, 255), max(1, h // 15), cv2.LINE_AA)
    return out


class ResultWriter:
    """Writes each Result as it arrives (called on the pipeline's label thread)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        for sub in ("labels", "instance_ids", "overlays", "instances"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self.masks = 0
        self.random_weights = False
        self.done = threading.Condition()

    def __call__(self, result: Result) -> None:
        name = result.frame.frame_id or f"{result.frame.seq:06d}"
        cv2.imwrite(str(self.out / "labels" / f"{name}.png"), result.label_image)
        cv2.imwrite(str(self.out / "instance_ids" / f"{name}.png"), result.instance_image)
        if result.overlay is not None:
            overlay = mark_random(result.overlay) if result.random_weights else result.overlay
            cv2.imwrite(str(self.out / "overlays" / f"{name}.png"), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        (self.out / "instances" / f"{name}.json").write_text(json.dumps(instances_json(result), indent=1))
        with self.done:
            self.frames += 1
            self.masks += len(result.masks)
            self.random_weights |= result.random_weights
            self.done.notify_all()


# ---------------------------------------------------------------------------- commands
def cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sfs_ros.core.pipeline import Pipeline

    source = Path(args.input)
    if not source.exists():
        raise SfsError(f"input {source} does not exist")
    if args.labeling not in SEMANTIC_MODES:
        vocabulary_from_args(args.vocab or ["coco"])  # a bad vocabulary fails before models load
    frames = read_frames(source)
    segmenter, labeler = load_from_args(args)
    vocabulary = labeler_vocabulary(labeler, args)
    t0 = time.monotonic()
    labeler.set_vocabulary(vocabulary)
    text_s = time.monotonic() - t0
    writer = ResultWriter(Path(args.out))
    errors: list[str] = []
    pipeline = Pipeline(segmenter, labeler, writer, lambda stage, frame, exc: errors.append(
        f"{frame.source or frame.seq}: {stage}: {exc}"), drop=False, queue_size=2)
    progress = tqdm(total=count_frames(source), unit="frame", disable=args.quiet)
    submitted = 0
    t_start = time.monotonic()
    with pipeline:
        last = 0
        for frame in frames:
            pipeline.submit(frame)
            submitted += 1
            progress.update(writer.frames - last)
            last = writer.frames
        pipeline.wait_idle()
        progress.update(writer.frames - last)
    progress.close()
    elapsed = time.monotonic() - t_start
    stats = pipeline.stats
    summary = {
        "frames": writer.frames,
        "failed_frames": stats.errors,
        "masks_per_frame": writer.masks / max(writer.frames, 1),
        "fps": writer.frames / elapsed if elapsed > 0 else 0.0,
        "text_encoding_s": text_s,
        "stage_ms_p50": {s: 1000 * stats.percentile(s, 50) for s in stats.latencies if stats.latencies[s]},
        "random_weights": segmenter.random_weights or labeler.random_weights,
        "vocabulary": vocabulary.name,
        "classes": len(vocabulary),
        "device": str(segmenter.device),
        "segmenter": {**asdict(segmenter.config), "checkpoint": str(segmenter.checkpoint)},
        "labeling": args.labeling,
        "labeler": asdict(labeler.config),
    }
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))
    for line in errors:
        print(f"sfs: frame failed: {line}", file=sys.stderr)
    marker = "  [RANDOM WEIGHTS: labels are meaningless]" if summary["random_weights"] else ""
    print(f"frames {writer.frames}/{submitted}, masks/frame {summary['masks_per_frame']:.1f}, "
          f"FPS {summary['fps']:.2f} on {summary['device']}, "
          f"stages p50 ms {', '.join(f'{k} {v:.0f}' for k, v in summary['stage_ms_p50'].items())}"
          f"{marker}\nwrote {args.out}")
    return 0 if writer.frames == submitted else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment", help="segment an image, a folder of images or a video")
    seg.add_argument("input", help="image file, folder of images, or video file")
    seg.add_argument("--out", default="out/sfs", help="output folder")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(seg)
    seg.set_defaults(func=cmd_segment)
    return parser


def run_command(prog: str, args: argparse.Namespace) -> int:
    """Run a parsed sub-command: our own errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SfsError as exc:
        print(f"{prog}: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run_command("sfs", build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
