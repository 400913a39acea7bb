"""`sfs segment --depth`: a PLY per frame whose points carry the label and instance images'
values, read back from disk; the PLY writer on its own; bad depth arguments."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sfs_ros.core.geometry import POINT_DTYPE
from sfs_ros.ply import read_ply, write_ply
from sfs_ros.synth.shapes import make_scene
from test_cli import SMALL, sfs

SIZE = 160
FX, CX = 200.0, 79.5


def test_ply_round_trip(tmp_path):
    pts = np.zeros(5, POINT_DTYPE)
    pts["x"], pts["z"], pts["score"] = np.arange(5), 2.0, 0.25
    pts["rgb"] = np.array([0x102030, 0xFF0000, 0x00FF00, 0x0000FF, 0], np.uint32).view(np.float32)
    pts["label"], pts["instance"] = [0, 1, 2, 65535, 7], [1, 2, 3, 0, 9]
    write_ply(tmp_path / "c.ply", pts)
    back = read_ply(tmp_path / "c.ply")
    assert len(back) == 5
    np.testing.assert_array_equal(back["x"], pts["x"])
    np.testing.assert_array_equal(back["label"], pts["label"])
    np.testing.assert_array_equal(back["instance"], pts["instance"])
    np.testing.assert_array_equal(back["score"], pts["score"])
    assert (back["red"][0], back["green"][0], back["blue"][0]) == (0x10, 0x20, 0x30)
    assert (back["red"][1], back["green"][2], back["blue"][3]) == (255, 255, 255)


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    """Two shapes frames and their 16-bit millimetre depth: plane 2 m, objects 1.5 m."""
    root = tmp_path_factory.mktemp("rgbd")
    (root / "rgb").mkdir()
    (root / "depth").mkdir()
    for i in range(2):
        scene = make_scene(3, i, (SIZE, SIZE))
        cv2.imwrite(str(root / "rgb" / f"f{i}.png"), scene.image[:, :, ::-1])
        depth = np.where(scene.instances > 0, 1500, 2000).astype(np.uint16)
        cv2.imwrite(str(root / "depth" / f"f{i}.png"), depth)
    (root / "info.yaml").write_text(
        f"image_width: {SIZE}\nimage_height: {SIZE}\ncamera_matrix:\n  rows: 3\n  cols: 3\n"
        f"  data: [{FX}, 0, {CX}, 0, {FX}, {CX}, 0, 0, 1]\n")
    return root


@pytest.mark.parametrize("how", ["intrinsics", "camera_info"])
def test_segment_with_depth_writes_a_ply_per_frame(rgbd, tmp_path, how):
    out = tmp_path / "out"
    given = (["--intrinsics", str(FX), str(FX), str(CX), str(CX)] if how == "intrinsics"
             else ["--camera-info", str(rgbd / "info.yaml")])
    run = sfs("segment", str(rgbd / "rgb"), "--depth", str(rgbd / "depth"), *given,
              "--vocab", "circle", "square", "--out", str(out), *SMALL)
    assert run.returncode == 0, run.stderr
    for i in range(2):
        pts = read_ply(out / "points" / f"f{i}.ply")
        assert len(pts) == SIZE * SIZE
        u = np.rint(pts["x"] / pts["z"] * FX + CX).astype(int)
        v = np.rint(pts["y"] / pts["z"] * FX + CX).astype(int)
        depth = cv2.imread(str(rgbd / "depth" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_allclose(pts["z"], depth[v, u] / 1000.0, atol=1e-4)
        label = cv2.imread(str(out / "labels" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(out / "instance_ids" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(pts["label"], label[v, u])
        np.testing.assert_array_equal(pts["instance"], inst[v, u])
        record = json.loads((out / "instances" / f"f{i}.json").read_text())
        assert record["instances"]
        for r in record["instances"]:
            assert r["point_count"] > 0 and len(r["centroid_m"]) == 3


@pytest.mark.parametrize("extra, message", [
    (["--intrinsics", "1", "1", "0", "0"], "need --depth"),
    (["--depth", "{depth}"], "needs --intrinsics"),
    (["--depth", "{depth}/f0.png", "--intrinsics", "1", "1", "0", "0"], "1 depth files for 2 frames"),
])
def test_bad_depth_arguments_exit_2_before_models_load(rgbd, tmp_path, extra, message):
    extra = [e.format(depth=rgbd / "depth") for e in extra]
    run = sfs("segment", str(rgbd / "rgb"), *extra, "--out", str(tmp_path / "o"), *SMALL)
    assert run.returncode == 2 and message in run.stderr, run.stderr
