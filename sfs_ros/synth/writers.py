"""Files from the shapes world: a plain folder of images and labels, and a YOLO-seg dataset.

The folder layout (`images/`, `labels/` with uint8 class ids, `instances/` with uint16 ids) is
also what `sfs_eval convert folder DIR --vocab shapes` reads. The YOLO dataset is the FastSAM
recipe: one class-agnostic class 0 "object", one normalised polygon per visible object.
Frame names are `s<seed>_<index>`, so folders of different seeds can be merged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from sfs_ros.synth.shapes import DEFAULT_SIZE, Scene, iter_scenes

JPEG_QUALITY = 95


def frame_stem(seed: int, index: int) -> str:
    return f"s{seed}_{index:06d}"


def encode_image(rgb: np.ndarray, jpeg: bool, quality: int = JPEG_QUALITY) -> bytes:
    """PNG (lossless) or JPEG bytes of an RGB image."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if jpeg else []
    ok, data = cv2.imencode(".jpg" if jpeg else ".png", rgb[:, :, ::-1], params)
    if not ok:
        raise RuntimeError("OpenCV could not encode the image")
    return data.tobytes()


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cannot write {path}")


def _progress(scenes: Iterable[Scene], total: int, show: bool, desc: str) -> Iterator[Scene]:
    if not show:
        return iter(scenes)
    from tqdm import tqdm

    return iter(tqdm(scenes, total=total, unit="frame", desc=desc))


def write_folder(out: str | Path, seed: int, frames: int, size: tuple[int, int] = DEFAULT_SIZE,
                 start: int = 0, jpeg: bool = False, progress: bool = False) -> int:
    """out/images/<stem>.png|.jpg, out/labels/<stem>.png (uint8), out/instances/<stem>.png (uint16)."""
    out = Path(out)
    folders = {name: out / name for name in ("images", "labels", "instances")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    suffix = ".jpg" if jpeg else ".png"
    scenes = _progress(iter_scenes(seed, frames, start, size), frames, progress, "folder")
    for scene in scenes:
        stem = frame_stem(seed, scene.index)
        (folders["images"] / f"{stem}{suffix}").write_bytes(encode_image(scene.image, jpeg))
        _write_png(folders["labels"] / f"{stem}.png", scene.labels)
        _write_png(folders["instances"] / f"{stem}.png", scene.instances)
    return frames


def yolo_lines(scene: Scene) -> list[str]:
    """One `0 x1 y1 x2 y2 ...` line per object (normalised visible polygon; class 0 = object)."""
    height, width = scene.labels.shape
    lines = []
    for obj in scene.objects:
        if len(obj.polygon) < 3:  # no area left to outline (never happens with the spec's rules)
            continue
        xy = obj.polygon.astype(np.float64) / (width, height)
        lines.append("0 " + " ".join(f"{v:.6f}" for v in xy.reshape(-1)))
    return lines


def write_yolo(out: str | Path, seed: int, train_frames: int, val_frames: int,
               size: tuple[int, int] = DEFAULT_SIZE, progress: bool = False) -> int:
    """An Ultralytics segmentation dataset: train = frames 0..N-1, val = frames N..N+M-1 of `seed`.

    Writes out/images/{train,val}/*.jpg, out/labels/{train,val}/*.txt and out/data.yaml."""
    out = Path(out).resolve()
    splits = {"train": (0, train_frames), "val": (train_frames, val_frames)}
    for split, (start, count) in splits.items():
        images, labels = out / "images" / split, out / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for scene in _progress(iter_scenes(seed, count, start, size), count, progress, split):
            stem = frame_stem(seed, scene.index)
            (images / f"{stem}.jpg").write_bytes(encode_image(scene.image, jpeg=True))
            (labels / f"{stem}.txt").write_text("\n".join(yolo_lines(scene)) + "\n", encoding="utf-8")
    (out / "data.yaml").write_text(
        f"# shapes world, seed {seed}: class-agnostic instance polygons (the FastSAM recipe)\n"
        f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n  0: object\n",
        encoding="utf-8",
    )
    return train_frames + val_frames
