"""`sfs segment --depth`: depth images next to the colour frames, and a PLY cloud per frame.

    sfs segment rgb/ --depth depth/ --intrinsics 525 525 319.5 239.5 --out out/
    sfs segment rgb/ --depth depth/ --camera-info depth_camera_info.yaml --out out/

The depth folder is paired with the colour frames by sorted order (the i-th depth file belongs
to the i-th frame); one depth file goes with one image. Depth files: 16-bit PNG/TIFF or uint16
.npy (units of `--depth-scale` metres, default millimetres), float32 TIFF or .npy (metres); 0,
NaN and inf mean no depth. The intrinsics are the depth image's own (fx fy cx cy, its size read
from each file) or a camera_calibration YAML (image_width, image_height, camera_matrix.data). A
depth image of another size than the colour image must be registered to it (README "RGB-D").
Writes points/<name>.ply (sfs_ros/ply.py) per frame and the 3D fields in instances/<name>.json.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from sfs_ros.core.frame import Frame, SfsError
from sfs_ros.core.geometry import Intrinsics, decode_depth

DEPTH_SUFFIXES = {".png", ".tif", ".tiff", ".npy"}


def add_depth_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("depth (a semantic point cloud per frame)")
    group.add_argument("--depth", metavar="DIR|FILE",
                       help="depth images registered to the input frames, paired in sorted order")
    how = group.add_mutually_exclusive_group()
    how.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"),
                     help="pinhole intrinsics of the depth images (pixels)")
    how.add_argument("--camera-info", metavar="YAML",
                     help="camera_calibration YAML of the depth camera (camera_matrix, size)")


@dataclass(frozen=True)
class DepthInput:
    """The depth files and how to read them, checked before any model loads."""

    files: tuple[Path, ...]
    intrinsics: tuple[float, float, float, float] | Intrinsics
    depth_scale: float

    def intrinsics_for(self, shape: tuple[int, int]) -> Intrinsics:
        if isinstance(self.intrinsics, Intrinsics):
            if (self.intrinsics.height, self.intrinsics.width) != shape:
                raise SfsError(f"depth is {shape[1]}x{shape[0]} but the camera_info YAML is for "
                               f"{self.intrinsics.width}x{self.intrinsics.height}")
            return self.intrinsics
        fx, fy, cx, cy = self.intrinsics
        return Intrinsics(fx, fy, cx, cy, shape[1], shape[0])


def depth_input(args: argparse.Namespace, depth_scale: float, frames: int | None) -> DepthInput | None:
    """The --depth arguments checked (files exist, one per frame, intrinsics given), or None."""
    if args.depth is None:
        if args.intrinsics or args.camera_info:
            raise SfsError("--intrinsics and --camera-info need --depth")
        return None
    source = Path(args.depth)
    if not source.exists():
        raise SfsError(f"depth input {source} does not exist")
    files = (tuple(sorted(p for p in source.iterdir() if p.suffix.lower() in DEPTH_SUFFIXES))
             if source.is_dir() else (source,))
    if frames is not None and len(files) != frames:
        raise SfsError(f"{len(files)} depth files for {frames} frames in {source}: give one per frame")
    if args.intrinsics:
        return DepthInput(files, tuple(args.intrinsics), depth_scale)
    if args.camera_info:
        return DepthInput(files, read_camera_info(Path(args.camera_info)), depth_scale)
    raise SfsError("--depth needs --intrinsics FX FY CX CY or --camera-info YAML")


def read_camera_info(path: Path) -> Intrinsics:
    """Intrinsics of a camera_calibration YAML (the format camera_info_manager reads)."""
    import yaml

    try:
        info = yaml.safe_load(path.read_text())
        k = info["camera_matrix"]["data"]
        return Intrinsics.from_k(k, int(info["image_width"]), int(info["image_height"]))
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise SfsError(f"cannot read camera info {path}: {type(exc).__name__}: {exc}") from exc


def read_depth(path: Path, depth_scale: float) -> np.ndarray:
    """(H, W) float32 metres of one depth file."""
    if path.suffix.lower() == ".npy":
        raw = np.load(path, allow_pickle=False)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise SfsError(f"cannot decode depth image {path}")
    try:
        return decode_depth(raw, depth_scale)
    except SfsError as exc:
        raise SfsError(f"{path}: {exc}") from exc


def with_depth(frames: Iterator[Frame], depth: DepthInput | None) -> Iterator[Frame]:
    """The frames, each given its depth image and intrinsics when `depth` is set."""
    if depth is None:
        yield from frames
        return
    files = iter(depth.files)
    for frame in frames:
        path = next(files, None)
        if path is None:
            raise SfsError("more frames than depth files")
        metres = read_depth(path, depth.depth_scale)
        yield replace(frame, depth=metres, intrinsics=depth.intrinsics_for(metres.shape))
