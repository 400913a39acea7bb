"""The `sfs` command: semantic segmentation of images, folders and videos without ROS.

    sfs segment photo.jpg --vocab ade20k --out out/
    sfs segment frames/ --vocab cat dog "traffic light" --device cuda:0 --out out/
    sfs segment drive.mp4 --vocab cityscapes --out out/

Writes per frame: labels/<name>.png (uint16 class ids, 65535 = unlabeled), instance_ids/<name>.png
(uint16, 0 = no mask), overlays/<name>.png (RGB overlay), instances/<name>.json; and summary.json.
With --depth (sfs_ros/cli_depth.py) also points/<name>.ply, the semantic point cloud.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import cv2

from sfs_ros.cli_depth import add_depth_arguments, depth_input, with_depth
from sfs_ros.cli_prompt import add_prompt_command
from sfs_ros.core import options
from sfs_ros.core.backends import command as export
from sfs_ros.core.frame import Frame, Result, SfsError, instance_records
from sfs_ros.core.fusion import mark_random
from sfs_ros.ply import write_ply

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm"}


# ---------------------------------------------------------------------------- inputs
def list_images(source: Path) -> list[tuple[Path, str]]:
    """(file, output name) of every image to read: one file, or a folder's images sorted.

    Raises before any model loads when there is nothing to read. Output names are file stems
    ("a" for a.jpg) unless two images of the folder share a stem (a.jpg and a.png): those keep
    their extension ("a_jpg", "a_png") so neither overwrites the other's outputs.
    """
    if not source.exists():
        raise SfsError(f"input {source} does not exist")
    if not source.is_dir():
        return [(source, source.stem)]
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SfsError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
    stems = collections.Counter(p.stem for p in files)
    return [(p, p.stem if stems[p.stem] == 1 else p.name.replace(".", "_")) for p in files]


def is_video(source: Path) -> bool:
    return source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES


def read_frames(source: Path) -> Iterator[Frame]:
    """RGB frames from an image, a folder of images (sorted) or a video file."""
    if is_video(source):
        yield from _read_video(source)
        return
    for seq, (path, name) in enumerate(list_images(source)):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SfsError(f"cannot decode image {path}")
        yield Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp=None, frame_id=name,
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
                        frame_id=f"{path.stem}_{seq:06d}", source=str(path), seq=seq, time=stamp)
            seq += 1
    finally:
        capture.release()
    if seq == 0:
        raise SfsError(f"no frames could be read from {path}")


def count_frames(source: Path) -> int | None:
    if is_video(source):
        capture = cv2.VideoCapture(str(source))
        n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        return n or None
    return len(list_images(source))


# ---------------------------------------------------------------------------- outputs
def instances_json(result: Result) -> dict:
    """Per-instance records of one frame (the InstanceArray message, as JSON)."""
    instances = [{
        "instance_id": r.instance_id, "class_id": r.class_id, "class_name": r.class_name,
        "score": r.score,
        "proposals": [{"class_id": c, "class_name": n, "score": sc} for c, n, sc in r.proposals],
        "box_xyxy": list(r.box), "area": r.area, "mask_score": r.mask_score,
        "track_age": r.track_age, "track_hits": r.track_hits, "label_smoothed": r.label_smoothed,
        "centroid_m": list(r.centroid), "extent_m": list(r.extent), "point_count": r.point_count,
    } for r in instance_records(result)]
    return {
        "frame": result.frame.frame_id,
        "source": result.frame.source,
        "height": int(result.label_image.shape[0]),
        "width": int(result.label_image.shape[1]),
        "vocabulary": result.vocabulary_name,
        "vocabulary_version": result.vocabulary_version,
        "random_weights": result.random_weights,
        "timings_s": result.timings,
        "instances": instances,
    }


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
        if result.geometry is not None:  # --depth: the semantic cloud (sfs_ros/cli_depth.py)
            (self.out / "points").mkdir(exist_ok=True)
            write_ply(self.out / "points" / f"{name}.ply", result.geometry.points)
        with self.done:
            self.frames += 1
            self.masks += len(result.masks)
            self.random_weights |= result.random_weights
            self.done.notify_all()


# ---------------------------------------------------------------------------- commands
def cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sfs_ros.core.config import build_configs, load_models, vocabulary_for
    from sfs_ros.core.pipeline import Pipeline

    source = Path(args.input)
    values = options.values_from_args(args)  # every option checked before a model loads
    total = count_frames(source)  # no input, no images: say so before a model loads
    depth = depth_input(args, values["depth_scale"], total)  # likewise for --depth
    configs = build_configs(values)
    segmenter, labeler = load_models(configs)
    vocabulary = vocabulary_for(labeler, values)
    t0 = time.monotonic()
    labeler.set_vocabulary(vocabulary)
    text_s = time.monotonic() - t0
    writer = ResultWriter(Path(args.out))
    errors: list[str] = []
    pipeline = Pipeline(segmenter, labeler, writer, lambda stage, frame, exc: errors.append(
        f"{frame.source or frame.seq}: {stage}: {exc}"), drop=False, queue_size=2,
        tracking=configs.tracking, geometry=configs.geometry)  # frames in order: a video's or a folder's, sorted by name
    progress = tqdm(total=total, unit="frame", disable=args.quiet)
    submitted = 0
    t_start = time.monotonic()
    with pipeline:
        last = 0
        for frame in with_depth(read_frames(source), depth):
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
        "segmenter": segmenter.describe(),
        "labeling": values["labeling_mode"],
        "labeler": labeler.describe(),
        "tracking": None if configs.tracking is None else {
            **asdict(configs.tracking),
            "tracks": sum(t.next_id - 1 for t in pipeline.trackers.values())},
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
    options.add_arguments(seg)
    add_depth_arguments(seg)  # --depth, --intrinsics, --camera-info (#15)
    seg.set_defaults(func=cmd_segment)
    add_prompt_command(sub)  # sfs prompt (#16): points, boxes, texts on one image
    export.add_parser(sub)  # sfs export (#17): exported backends built ahead
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
