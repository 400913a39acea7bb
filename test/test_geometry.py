"""core/geometry.py against exact answers: a plane at a known depth, a box in front of it, and
the options (stride, voxel, range, labeled-only) checked point by point."""
from __future__ import annotations

import numpy as np
import pytest

from sfs_ros.core.frame import UNLABELED
from sfs_ros.core.geometry import (
    POINT_DTYPE,
    GeometryConfig,
    GeometryError,
    Intrinsics,
    back_project,
    decode_depth,
    instance_statistics,
)

K = Intrinsics(fx=500.0, fy=520.0, cx=31.5, cy=23.25, width=64, height=48)


def _images(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RGB, label and instance images where every pixel's values differ from its neighbours'."""
    v, u = np.mgrid[:h, :w]
    rgb = np.stack([u * 3 % 256, v * 5 % 256, (u + v) % 256], -1).astype(np.uint8)
    label = ((u // 4 + v // 4 * 7) % 9).astype(np.uint16)
    label[label == 8] = UNLABELED
    instance = ((u // 8 + v // 8 * 3) % 6).astype(np.uint16)  # 0 = no mask, masks 1..5
    scores = np.array([0.5, 0.6, 0.0, 0.8, 0.9], np.float32)
    return rgb, label, instance, scores


def _pixels(points: np.ndarray, k: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """The integer pixel (u, v) each point came from, recovered from x/z and y/z."""
    u = np.rint(points["x"] / points["z"] * k.fx + k.cx).astype(int)
    v = np.rint(points["y"] / points["z"] * k.fy + k.cy).astype(int)
    return u, v


def test_plane_at_two_metres_is_exact_and_carries_each_pixels_label_and_instance():
    rgb, label, instance, scores = _images(48, 64)
    depth = np.full((48, 64), 2.0, np.float32)
    geo = back_project(depth, K, rgb, label, instance, scores)
    pts = geo.points
    assert pts.dtype == POINT_DTYPE and pts.size == 48 * 64
    np.testing.assert_allclose(pts["z"], 2.0, atol=1e-4)
    u, v = _pixels(pts, K)
    np.testing.assert_allclose(pts["x"], (u - K.cx) * 2.0 / K.fx, atol=1e-4)
    np.testing.assert_allclose(pts["y"], (v - K.cy) * 2.0 / K.fy, atol=1e-4)
    assert len(set(zip(u.tolist(), v.tolist()))) == 48 * 64  # every pixel once
    np.testing.assert_array_equal(pts["label"], label[v, u])
    np.testing.assert_array_equal(pts["instance"], instance[v, u])
    expect_score = np.r_[0.0, scores][instance[v, u]]
    np.testing.assert_array_equal(pts["score"], expect_score.astype(np.float32))
    packed = pts["rgb"].view(np.uint32)
    colour = rgb[v, u].astype(np.uint32)
    np.testing.assert_array_equal(packed, colour[:, 0] << 16 | colour[:, 1] << 8 | colour[:, 2])


def test_label_image_of_another_size_maps_by_pixel_centres():
    """Depth at half the colour resolution: depth pixel (u, v) reads colour pixel (2u+1, 2v+1)
    (the centre rule of the module doc); with a label image of unique values that is exact."""
    hc, wc = 48, 64
    v, u = np.mgrid[:hc, :wc]
    label = (v * wc + u).astype(np.uint16)
    instance = np.zeros((hc, wc), np.uint16)
    rgb = np.zeros((hc, wc, 3), np.uint8)
    k = Intrinsics(250.0, 260.0, 15.5, 11.5, 32, 24)
    geo = back_project(np.full((24, 32), 1.5, np.float32), k, rgb, label, instance, np.zeros(0))
    du, dv = _pixels(geo.points, k)
    np.testing.assert_array_equal(geo.points["label"], label[2 * dv + 1, 2 * du + 1])


def _box_scene(flying: bool):
    """A plane at 2.0 m and a 40x40 px box face at 1.2 m (mask 1); with `flying`, the ring of
    mask pixels around the face has depths between the two (an edge artefact), and a few face
    pixels have no depth."""
    h, w = 120, 160
    k = Intrinsics(200.0, 200.0, 80.0, 60.0, w, h)
    depth = np.full((h, w), 2.0, np.float32)
    instance = np.zeros((h, w), np.uint16)
    depth[40:80, 60:100] = 1.2
    instance[39:81, 59:101] = 1 if flying else 0
    instance[40:80, 60:100] = 1
    if flying:
        ring = (instance == 1) & (depth == 2.0)
        depth[ring] = np.linspace(1.3, 1.95, int(ring.sum()), dtype=np.float32)
        depth[50, 70] = 0.0
        depth[51, 71] = np.nan
    label = np.where(instance == 1, 3, UNLABELED).astype(np.uint16)
    rgb = np.zeros((h, w, 3), np.uint8)
    return depth, k, rgb, label, instance


@pytest.mark.parametrize("flying", [False, True])
def test_box_in_front_of_the_plane_has_its_centroid_and_extent(flying):
    depth, k, rgb, label, instance = _box_scene(flying)
    geo = back_project(depth, k, rgb, label, instance, np.array([0.9], np.float32))
    # the face spans pixels [60, 100) x [40, 80) at z = 1.2: centre (80, 60) -> (0, 0, 1.2)
    size = 40 * 1.2 / 200.0
    assert np.abs(geo.centroids[0] - [0.0, 0.0, 1.2]).max() < 0.01
    assert np.abs(geo.extents[0] - [size, size, 0.0]).max() < 0.02
    assert geo.counts[0] == 40 * 40 - 2 * flying


def test_min_max_of_the_same_points_would_blow_up_the_box():
    """The control: without the robust statistics the flying ring makes the box 0.7 m deep, so
    the test above can fail."""
    depth, k, rgb, label, instance = _box_scene(True)
    geo = back_project(depth, k, rgb, label, instance, np.array([0.9], np.float32))
    pts = geo.points[geo.points["instance"] == 1]
    assert pts["z"].max() - pts["z"].min() > 0.5


def test_a_mask_without_depth_has_zero_statistics():
    xyz = np.zeros((0, 3), np.float32)
    centroids, extents, counts = instance_statistics(xyz, np.zeros(0, np.uint16), 2)
    assert not centroids.any() and not extents.any() and not counts.any()


def test_16uc1_millimetres_and_32fc1_metres_give_the_same_cloud():
    rgb, label, instance, scores = _images(48, 64)
    mm = (1000 + np.arange(48 * 64) % 700).reshape(48, 64).astype(np.uint16)
    mm[5, 5] = 0
    metres = mm.astype(np.float32) / 1000.0
    metres[5, 5] = np.nan
    a = back_project(decode_depth(mm, 0.001), K, rgb, label, instance, scores)
    b = back_project(decode_depth(metres), K, rgb, label, instance, scores)
    assert a.points.size == b.points.size == 48 * 64 - 1
    for name in ("x", "y", "z"):
        np.testing.assert_allclose(a.points[name], b.points[name], atol=1e-6)
    for name in ("rgb", "label", "instance", "score"):
        np.testing.assert_array_equal(a.points[name], b.points[name])
    with pytest.raises(GeometryError, match="uint16"):
        decode_depth(mm.astype(np.int32))


def test_invalid_depth_gives_no_point():
    rgb, label, instance, scores = _images(48, 64)
    depth = np.full((48, 64), 2.0, np.float32)
    depth[0, :4] = [0.0, np.nan, np.inf, -1.0]
    geo = back_project(depth, K, rgb, label, instance, scores)
    assert geo.points.size == 48 * 64 - 4
    assert np.isfinite(geo.points["z"]).all() and (geo.points["z"] > 0).all()


def test_stride_keeps_every_nth_row_and_column():
    rgb, label, instance, scores = _images(48, 64)
    depth = np.full((48, 64), 2.0, np.float32)
    geo = back_project(depth, K, rgb, label, instance, scores, GeometryConfig(stride=3))
    u, v = _pixels(geo.points, K)
    assert geo.points.size == 16 * 22
    assert (u % 3 == 0).all() and (v % 3 == 0).all()
    np.testing.assert_array_equal(geo.points["label"], label[v, u])


def test_voxel_keeps_one_point_per_occupied_voxel():
    rgb, label, instance, scores = _images(48, 64)
    depth = (1.0 + np.random.default_rng(0).random((48, 64)) * 0.2).astype(np.float32)
    full = back_project(depth, K, rgb, label, instance, scores).points
    thin = back_project(depth, K, rgb, label, instance, scores, GeometryConfig(voxel=0.01)).points

    def voxels(p):
        return np.floor(np.stack([p["x"], p["y"], p["z"]], 1) / 0.01).astype(np.int64)

    assert len(np.unique(voxels(thin), axis=0)) == thin.size  # one point per voxel
    assert thin.size == len(np.unique(voxels(full), axis=0))  # every occupied voxel kept
    assert thin.size < full.size


def test_range_limits_depth_and_labeled_only_keeps_named_pixels():
    rgb, label, instance, scores = _images(48, 64)
    depth = np.tile(np.linspace(0.5, 5.0, 64, dtype=np.float32), (48, 1))
    config = GeometryConfig(min_range=1.0, max_range=3.0)
    pts = back_project(depth, K, rgb, label, instance, scores, config).points
    inside = (depth >= 1.0) & (depth <= 3.0)
    assert pts.size == inside.sum()
    assert pts["z"].min() >= 1.0 and pts["z"].max() <= 3.0
    all_pts = back_project(depth, K, rgb, label, instance, scores)
    named = back_project(depth, K, rgb, label, instance, scores, GeometryConfig(labeled_only=True))
    assert named.points.size == (label != UNLABELED).sum()
    assert (named.points["label"] != UNLABELED).all()
    np.testing.assert_array_equal(named.counts, all_pts.counts)  # statistics use every point


def test_bad_intrinsics_and_sizes_say_why():
    with pytest.raises(GeometryError, match="all zero") as err:
        Intrinsics.from_k([0.0] * 9, 64, 48)
    assert err.value.reason == "k_zero"
    rgb, label, instance, scores = _images(48, 64)
    with pytest.raises(GeometryError) as err:
        back_project(np.ones((24, 32), np.float32), K, rgb, label, instance, scores)
    assert err.value.reason == "depth_size"
    with pytest.raises(Exception, match="below"):
        GeometryConfig(min_range=3.0, max_range=2.0)


def test_a_large_instance_is_measured_from_a_sample_within_the_same_tolerances():
    """40 000 points: medians and percentiles come from an even sample (STATS_SAMPLE)."""
    h, w = 240, 320
    k = Intrinsics(200.0, 200.0, 160.0, 120.0, w, h)
    depth = np.full((h, w), 3.0, np.float32)
    instance = np.zeros((h, w), np.uint16)
    depth[20:220, 60:260], instance[19:221, 59:261] = 1.0, 1  # face + a flying ring
    ring = (instance == 1) & (depth == 3.0)
    depth[ring] = np.linspace(1.1, 2.9, int(ring.sum()), dtype=np.float32)
    geo = back_project(depth, k, np.zeros((h, w, 3), np.uint8),
                       np.zeros((h, w), np.uint16), instance, np.ones(1, np.float32))
    assert np.abs(geo.centroids[0] - [0.0, 0.0, 1.0]).max() < 0.01
    assert np.abs(geo.extents[0] - [1.0, 1.0, 0.0]).max() < 0.02
    assert geo.counts[0] == 200 * 200
