"""Depth + pinhole intrinsics -> a semantic point cloud and per-instance 3D statistics (numpy only).

Conventions (REP 103 optical frame of the depth image): x right, y down, z forward, metres.
A depth pixel (u, v) with depth z back-projects to

    x = (u - cx) * z / fx,    y = (v - cy) * z / fy,    z

with (u, v) the integer pixel index (the sensor_msgs/CameraInfo K convention). Depth values of
0, NaN, +-inf or outside [min_range, max_range] give no point.

Label image -> depth image of another size: the depth image must be registered to the colour
image (same optical axis and field of view, e.g. a driver's "aligned_depth_to_color" output),
possibly at another resolution. Depth pixel (u, v) then takes the label/instance/colour of the
colour pixel whose area holds its centre: u_c = floor((u + 0.5) * W_c / W_d), likewise v_c
(nearest neighbour). The intrinsics are always the depth image's own.

Per-instance statistics are robust against flying pixels (depth that interpolates between the
object and what lies behind it at mask edges): points whose z is further from the instance's
median z than max(4 * 1.4826 * MAD, `Z_TOLERANCE`) are left out, then the box is the 1st..99th
percentile of the rest on each axis, widened by 1 / 0.98 (an evenly sampled side keeps its
length), and the centroid is their mean. Medians and percentiles of
a large instance come from an even sample of `STATS_SAMPLE` points (a sub-millimetre change on
a 640x480 frame; the bench's cost figure relies on it).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sfs_ros.core.frame import UNLABELED, UNLABELED_CLASS, SfsError

#: One point as every output holds it (the PointCloud2 layout, 24 bytes, little endian):
#: rgb is the PCL/RViz packing (0x00RRGGBB reinterpreted as float32), label the label-image class
#: id (65535 = unlabeled), instance the instance-image id (0 = no mask), score the class score of
#: the point's instance (0 when unlabeled or no instance).
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"),
                        ("label", "<u2"), ("instance", "<u2"), ("score", "<f4")])
#: Box percentiles of the inlier points of an instance, per axis; the span between them is
#: divided by the share of points it holds (0.98), so an evenly covered side keeps its length.
BOX_PERCENTILES = (1.0, 99.0)
_BOX_SHARE = (BOX_PERCENTILES[1] - BOX_PERCENTILES[0]) / 100.0
#: Smallest z distance (metres) from the instance's median that is never called a flying pixel.
Z_TOLERANCE = 0.05
#: Order statistics (median, MAD, box percentiles) of an instance use at most about this many of
#: its points, evenly strided in pixel order; counts and centroids use all of them.
STATS_SAMPLE = 2048
_MAD_SIGMA = 1.4826  # MAD -> standard deviation of a normal distribution


class GeometryError(SfsError, ValueError):
    """Depth or intrinsics the geometry cannot use; `reason` is a short key for counters."""

    def __init__(self, message: str, reason: str = "bad_depth") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole model of the depth image (K of its camera_info), for an image of width x height."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (np.isfinite([self.fx, self.fy, self.cx, self.cy]).all() and self.fx > 0 and self.fy > 0):
            raise GeometryError(f"intrinsics need finite fx, fy > 0, got fx={self.fx} fy={self.fy} "
                                f"cx={self.cx} cy={self.cy} (an all-zero K: uncalibrated camera)",
                                "bad_intrinsics")
        if self.width <= 0 or self.height <= 0:
            raise GeometryError(f"intrinsics need an image size, got {self.width}x{self.height}",
                                "bad_intrinsics")

    @classmethod
    def from_k(cls, k: Any, width: int, height: int) -> "Intrinsics":
        """From a row-major 3x3 K (9 numbers, as in sensor_msgs/CameraInfo)."""
        k = np.asarray(k, np.float64).reshape(-1)
        if k.shape != (9,):
            raise GeometryError(f"K must hold 9 numbers, got {k.size}", "bad_intrinsics")
        if not k.any():
            raise GeometryError("K is all zero (uncalibrated camera_info)", "k_zero")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))


@dataclass(frozen=True)
class GeometryConfig:
    """How the cloud is sampled (options cloud_* and depth_scale, core/options.py)."""

    depth_scale: float = 0.001  # metres per 16UC1 unit
    stride: int = 1  # pixel step in both axes
    voxel: float = 0.0  # metres; one point per occupied voxel; 0 = off
    min_range: float = 0.0  # metres of depth (z)
    max_range: float = 20.0
    labeled_only: bool = False

    def __post_init__(self) -> None:
        if self.stride < 1 or self.voxel < 0 or self.depth_scale <= 0:
            raise SfsError(f"bad geometry config: {self}")
        if not 0 <= self.min_range < self.max_range:
            raise SfsError(f"cloud_min_range ({self.min_range}) must be below cloud_max_range "
                           f"({self.max_range})")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "GeometryConfig":
        """From option values (GEOMETRY_OPTIONS names)."""
        return cls(depth_scale=float(values["depth_scale"]), stride=int(values["cloud_stride"]),
                   voxel=float(values["cloud_voxel"]), min_range=float(values["cloud_min_range"]),
                   max_range=float(values["cloud_max_range"]),
                   labeled_only=bool(values["cloud_labeled_only"]))


@dataclass
class Geometry:
    """Result.geometry: the cloud and, per mask i (instance id i + 1), its 3D statistics in the
    depth image's optical frame. A mask with no valid depth has count 0 and zero centroid/extent."""

    points: np.ndarray  # (P,) POINT_DTYPE
    centroids: np.ndarray  # (N, 3) float32 metres
    extents: np.ndarray  # (N, 3) float32 metres, size along x, y, z
    counts: np.ndarray  # (N,) int64 inlier points per mask


def decode_depth(raw: np.ndarray, depth_scale: float = 0.001) -> np.ndarray:
    """(H, W) float32 metres of a 16UC1 (units of `depth_scale` m, 0 = none) or 32FC1 (metres)
    array; anything else is refused with the reason."""
    if raw.ndim != 2:
        raise GeometryError(f"depth must be (H, W), got shape {raw.shape}", "bad_depth_shape")
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) * np.float32(depth_scale)
    if raw.dtype == np.float32:
        return raw
    raise GeometryError(f"depth must be uint16 (16UC1) or float32 (32FC1), got {raw.dtype}",
                        "bad_depth_encoding")


def _colour_index(n_depth: int, n_colour: int, stride: int) -> np.ndarray:
    """Colour-image index of each sampled depth index along one axis (see the module doc)."""
    centres = np.arange(0, n_depth, stride, dtype=np.float64) + 0.5
    return np.minimum((centres * n_colour / n_depth).astype(np.intp), n_colour - 1)


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(P, 3) uint8 -> (P,) float32 holding 0x00RRGGBB (PCL's packing)."""
    rgb = rgb.astype(np.uint32)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)


def _voxel_first(points: np.ndarray, voxel: float) -> np.ndarray:
    """One point per occupied voxel of edge `voxel`: the first in pixel order."""
    keys = np.floor(np.stack([points["x"], points["y"], points["z"]], 1) / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return points[np.sort(first)]


def instance_statistics(xyz: np.ndarray, instance: np.ndarray, n: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroids, extents, counts) of masks 1..n from (P, 3) points and their instance ids
    (0 = none), robust to flying pixels (module doc)."""
    centroids, extents = np.zeros((n, 3), np.float32), np.zeros((n, 3), np.float32)
    counts = np.zeros((n,), np.int64)
    index = np.flatnonzero((instance > 0) & (instance <= n))
    index = index[np.argsort(instance[index], kind="stable")]  # grouped by instance
    ids, xyz = instance[index], xyz.take(index, axis=0)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if ids.size else np.zeros(0, np.intp)
    for start, end in zip(starts, np.r_[starts[1:], ids.size]):
        pts = xyz[start:end]
        z = pts[:, 2]
        sample = z[::max(1, z.size // STATS_SAMPLE)]
        median = np.median(sample)
        tolerance = max(4.0 * _MAD_SIGMA * float(np.median(np.abs(sample - median))), Z_TOLERANCE)
        pts = pts[np.abs(z - median) <= tolerance]
        lo, hi = np.percentile(pts[::max(1, len(pts) // STATS_SAMPLE)].T, BOX_PERCENTILES, axis=1)
        i = int(ids[start]) - 1
        centroids[i], extents[i], counts[i] = pts.mean(axis=0, dtype=np.float64), (hi - lo) / _BOX_SHARE, len(pts)
    return centroids, extents, counts


def back_project(depth: np.ndarray, intrinsics: Intrinsics, image: np.ndarray,
                 label_image: np.ndarray, instance_image: np.ndarray, instance_scores: np.ndarray,
                 config: GeometryConfig = GeometryConfig()) -> Geometry:
    """The cloud and per-instance statistics of one frame.

    depth: (Hd, Wd) float32 metres (`decode_depth`); image, label_image, instance_image: the
    colour frame's RGB and fusion images (Hc, Wc), mapped onto the depth pixels as the module
    doc says; instance_scores: (N,) class score per mask (0 when unlabeled). Statistics use the
    sampled (stride) pixels within range, labeled or not; `labeled_only` and `voxel` thin the
    cloud only.
    """
    if depth.ndim != 2 or depth.shape != (intrinsics.height, intrinsics.width):
        raise GeometryError(
            f"depth is {depth.shape[1::-1] if depth.ndim == 2 else depth.shape} but its "
            f"intrinsics are for {intrinsics.width}x{intrinsics.height}", "depth_size")
    if label_image.shape != instance_image.shape or image.shape[:2] != label_image.shape:
        raise GeometryError(f"image {image.shape[:2]}, label {label_image.shape} and instance "
                            f"{instance_image.shape} images differ in size", "image_size")
    s, (hd, wd), (hc, wc) = config.stride, depth.shape, label_image.shape
    z = depth[::s, ::s]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(z) & (z > 0) & (z >= config.min_range) & (z <= config.max_range)
    rows, cols = _colour_index(hd, hc, s), _colour_index(wd, wc, s)
    zz = z[valid]
    # rays: x / z and y / z of every sampled pixel, selected like z (boolean masks, flat takes)
    ray_x = (np.arange(0, wd, s, dtype=np.float32) - np.float32(intrinsics.cx)) / np.float32(intrinsics.fx)
    ray_y = (np.arange(0, hd, s, dtype=np.float32) - np.float32(intrinsics.cy)) / np.float32(intrinsics.fy)
    xyz = np.empty((zz.size, 3), np.float32)
    xyz[:, 0] = np.broadcast_to(ray_x, z.shape)[valid] * zz
    xyz[:, 1] = np.broadcast_to(ray_y[:, None], z.shape)[valid] * zz
    xyz[:, 2] = zz
    if (hd, wd, s) == (hc, wc, 1):  # same size: the flat index is the depth pixel's own
        colour_at = np.flatnonzero(valid)
    else:  # flat index into the colour images (module doc)
        colour_at = (rows[:, None] * wc + cols[None, :])[valid]
    instance = np.ravel(instance_image).take(colour_at)
    n = len(instance_scores)
    centroids, extents, counts = instance_statistics(xyz, instance, n)
    label = np.ravel(label_image).take(colour_at)
    keep = label != UNLABELED if config.labeled_only else slice(None)
    points = np.empty((int(np.count_nonzero(keep)) if config.labeled_only else zz.size,), POINT_DTYPE)
    points["x"], points["y"], points["z"] = xyz[keep, 0], xyz[keep, 1], xyz[keep, 2]
    points["rgb"] = _pack_rgb(image.reshape(-1, 3).take(colour_at[keep], axis=0))
    points["label"], points["instance"] = label[keep], instance[keep]
    score_of = np.zeros((n + 1,), np.float32)
    score_of[1:] = instance_scores
    points["score"] = score_of[np.minimum(points["instance"], n)]
    if config.voxel > 0 and points.size:
        points = _voxel_first(points, config.voxel)
    return Geometry(points, centroids, extents, counts)


def scores_of(class_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N,) float32 class score per mask, 0 where unlabeled (what each point's `score` holds)."""
    return np.where(np.asarray(class_ids) == UNLABELED_CLASS, 0.0, scores).astype(np.float32)
