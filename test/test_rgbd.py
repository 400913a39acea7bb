"""ros/rgbd.py without a node: stamp pairing, depth decoding with reasons, camera_info checks,
the DepthLink that turns colour + depth into Frames, and the marker builder."""
from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from sfs_ros.core.frame import Frame, Labels, Masks, Result
from sfs_ros.core.geometry import Geometry, GeometryError
from sfs_ros.ros.depth_input import (
    PAIR_BUFFER,
    StampPairer,
    depth_metres,
    intrinsics_of,
    sibling_camera_info,
)
from sfs_ros.ros.rgbd import DepthLink, marker_array

MS = 1_000_000


def test_exact_stamps_pair_whichever_comes_first():
    p = StampPairer(slop_ns=0)
    assert p.add_depth(100 * MS, "d1", now=0.0) == []
    assert p.add_colour(100 * MS, "c1", now=0.0) == [("c1", "d1")]
    assert p.add_colour(133 * MS, "c2", now=0.0) == []  # depth flows: c2 waits
    assert p.add_depth(133 * MS, "d2", now=0.0) == [("c2", "d2")]
    assert (p.paired, p.unpaired_colour, p.unpaired_depth) == (2, 0, 0)


def test_nearest_within_slop_and_nothing_beyond_it():
    p = StampPairer(slop_ns=10 * MS)
    p.add_depth(100 * MS, "d100", now=0.0)
    p.add_depth(108 * MS, "d108", now=0.0)
    assert p.add_colour(106 * MS, "c", now=0.0) == [("c", "d108")]  # nearest, not first
    assert p.add_colour(200 * MS, "far", now=0.0) == []  # waits: nothing within 10 ms
    # a depth newer than 200 + 10 ms settles "far" unpaired (depth comes in stamp order)
    assert p.add_depth(211 * MS, "d211", now=0.0) == [("far", None)]
    assert p.unpaired_colour == 1


def test_out_of_order_colour_and_depth_still_pair_and_come_out_in_stamp_order():
    p = StampPairer(slop_ns=0)
    p.add_depth(0, "d0", now=0.0)  # depth is flowing
    assert p.add_colour(0, "c0", now=0.0) == [("c0", "d0")]
    assert p.add_colour(300 * MS, "c3", now=0.0) == []
    assert p.add_colour(200 * MS, "c2", now=0.0) == []  # colour out of order
    assert p.add_depth(300 * MS, "d3", now=0.0) == [("c2", None), ("c3", "d3")]
    assert p.add_colour(500 * MS, "c5", now=0.0) == []
    # depth out of order: d6 before d5 settles c5 unpaired (depth is taken to come in stamp
    # order), and d5 then waits for a colour of its own
    assert p.add_depth(600 * MS, "d6", now=0.0) == [("c5", None)]
    assert p.add_depth(500 * MS, "d5", now=0.0) == []
    assert p.add_colour(500 * MS, "c5 again", now=0.0) == [("c5 again", "d5")]


def test_stamps_that_never_pair_are_counted_and_buffers_stay_bounded():
    p = StampPairer(slop_ns=MS)
    out = []
    for i in range(30):  # depth stamps 1000 s behind the colour stamps
        out += p.add_depth(i * 1000 * MS, f"d{i}", now=float(i))
        out += p.add_colour((1000 + i) * 1000 * MS, f"c{i}", now=float(i))
        assert p.waiting <= PAIR_BUFFER and len(p._depth) <= PAIR_BUFFER
    assert [c for c, d in out] == [f"c{i}" for i in range(30 - PAIR_BUFFER)]  # oldest first
    assert all(d is None for _, d in out)
    assert p.paired == 0 and p.unpaired_colour == 30 - PAIR_BUFFER
    assert p.unpaired_depth == 30 - PAIR_BUFFER
    ahead = StampPairer(slop_ns=MS)  # depth stamps 1000 s ahead: a colour leaves at the next depth
    ahead.add_depth(1000 * 1000 * MS, "d0", now=0.0)
    assert ahead.add_colour(0, "c0", now=0.0) == []
    assert ahead.add_depth(1001 * 1000 * MS, "d1", now=0.0) == [("c0", None)]


def test_colour_does_not_wait_when_no_depth_flows():
    p = StampPairer(slop_ns=0, silence_s=1.0)
    assert p.add_colour(0, "c0", now=0.0) == [("c0", None)]  # never any depth
    p.add_depth(5 * MS, "d", now=10.0)
    assert p.add_colour(10 * MS, "c1", now=10.5) == []  # depth flowing: waits
    assert p.add_colour(20 * MS, "c2", now=12.0) == [("c1", None), ("c2", None)]  # silent again
    assert p.add_colour(30 * MS, "c3", now=12.0) == [("c3", None)]
    p.add_depth(35 * MS, "d", now=12.0)
    assert p.add_colour(40 * MS, "c4", now=12.0) == []
    assert p.flush() == [("c4", None)] and p.waiting == 0  # the end of a recording


def _depth_msg(pixels: np.ndarray, encoding: str, stamp=Time(sec=5), frame_id="depth_optical") -> Image:
    return Image(header=Header(stamp=stamp, frame_id=frame_id), height=pixels.shape[0],
                 width=pixels.shape[1], encoding=encoding, is_bigendian=False,
                 step=pixels.shape[1] * pixels.itemsize, data=pixels.tobytes())


def test_depth_decoding_accepts_16uc1_and_32fc1_and_says_why_otherwise():
    mm = np.array([[0, 1000], [2500, 65535]], np.uint16)
    np.testing.assert_allclose(depth_metres(_depth_msg(mm, "16UC1"), 0.001),
                               [[0, 1.0], [2.5, 65.535]], rtol=1e-6)
    np.testing.assert_allclose(depth_metres(_depth_msg(mm, "16UC1"), 0.0001), [[0, 0.1], [0.25, 6.5535]],
                               rtol=1e-6)
    m = np.array([[1.5, np.nan]], np.float32)
    assert depth_metres(_depth_msg(m, "32FC1"), 0.001)[0, 0] == np.float32(1.5)
    big = _depth_msg(mm.astype(">u2"), "16UC1")
    big.is_bigendian = True
    np.testing.assert_allclose(depth_metres(big, 0.001), [[0, 1.0], [2.5, 65.535]], rtol=1e-6)
    with pytest.raises(GeometryError, match="accepted are 16UC1, 32FC1") as err:
        depth_metres(_depth_msg(mm.astype(np.uint8), "mono8"), 0.001)
    assert err.value.reason == "depth_encoding"
    short = _depth_msg(mm, "16UC1")
    short.data = short.data[:-2]
    with pytest.raises(GeometryError, match="bytes") as err:
        depth_metres(short, 0.001)
    assert err.value.reason == "depth_data"


def _info(width=4, height=2, k=(100.0, 0, 2.0, 0, 100.0, 1.0, 0, 0, 1)) -> CameraInfo:
    return CameraInfo(width=width, height=height, k=list(k))


def test_camera_info_of_another_size_or_all_zero_is_refused():
    assert intrinsics_of(_info(), (2, 4), "/d/camera_info").fx == 100.0
    with pytest.raises(GeometryError, match="own camera_info") as err:
        intrinsics_of(_info(8, 4), (2, 4), "/d/camera_info")
    assert err.value.reason == "depth_size"
    with pytest.raises(GeometryError, match="all zero"):
        intrinsics_of(_info(k=[0.0] * 9), (2, 4), "/d/camera_info")
    assert sibling_camera_info("/cam/depth/image_rect_raw") == "/cam/depth/camera_info"
    assert sibling_camera_info("depth") == "camera_info"


def _frame(sec: int) -> Frame:
    return Frame(image=np.zeros((2, 4, 3), np.uint8), stamp=Time(sec=sec), time=float(sec))


def test_depth_link_attaches_depth_or_reports_why_not():
    reports, counted = [], []
    link = DepthLink("/d/image", "/d/camera_info", 0.0, 0.001, counted.append, reports.append)
    depth = _depth_msg(np.full((2, 4), 2000, np.uint16), "16UC1", Time(sec=1))
    assert link.on_depth(depth, now=0.0) == []
    frames = link.on_colour(_frame(1), now=0.0)
    assert len(frames) == 1 and frames[0].depth is None
    assert reports == ["no camera_info on /d/camera_info"] and counted == ["no_camera_info"]
    link.on_camera_info(_info())
    link.on_depth(_depth_msg(np.full((2, 4), 2000, np.uint16), "16UC1", Time(sec=2)), now=0.0)
    (frame,) = link.on_colour(_frame(2), now=0.0)
    np.testing.assert_allclose(frame.depth, 2.0)
    assert frame.intrinsics.cx == 2.0 and link.frame_id == "depth_optical"
    link.on_depth(_depth_msg(np.zeros((2, 4), np.uint8), "8UC1", Time(sec=3)), now=0.0)
    (frame,) = link.on_colour(_frame(3), now=0.0)
    assert frame.depth is None and counted[-1] == "depth_encoding" and "16UC1" in reports[-1]
    link.on_colour(_frame(4), now=0.0)  # no depth for it: counted, same reason not re-warned
    link.info = None
    link.on_depth(_depth_msg(np.full((2, 4), 2000, np.uint16), "16UC1", Time(sec=5)), now=0.0)
    link.on_colour(_frame(5), now=0.0)
    assert counted[-2:] == ["depth_unpaired", "no_camera_info"]
    assert reports.count("no camera_info on /d/camera_info") == 1  # once per 5 s


def test_markers_replace_the_last_frame_and_follow_the_overlay_colours():
    masks = Masks(np.ones((2, 2, 4), bool), np.array([[0, 0, 4, 2]] * 2, np.int32),
                  np.ones(2, np.float32), np.full(2, 8, np.int64))
    labels = Labels(np.array([1, -1], np.int32), np.array([0.7, 0.0], np.float32),
                    np.zeros((2, 1), np.int32), np.zeros((2, 1), np.float32))
    geometry = Geometry(np.zeros(0), np.array([[0.1, 0.2, 1.5], [0, 0, 0]], np.float32),
                        np.array([[0.3, 0.2, 0.0], [0, 0, 0]], np.float32), np.array([50, 0]))
    result = Result(frame=_frame(1), masks=masks, labels=labels, label_image=None,
                    instance_image=None, overlay=None, class_names=("cup", "box"),
                    vocabulary_name="t", random_weights=False, geometry=geometry)
    palette = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    out = marker_array(result, Header(frame_id="depth_optical"), palette).markers
    assert out[0].action == Marker.DELETEALL
    assert [m.type for m in out[1:]] == [Marker.CUBE, Marker.TEXT_VIEW_FACING]  # mask 2: no depth
    box, text = out[1:]
    assert (box.pose.position.x, box.pose.position.z) == pytest.approx((0.1, 1.5))
    assert (box.scale.x, box.scale.y, box.scale.z) == pytest.approx((0.3, 0.2, 0.01))
    assert (box.color.r, box.color.g) == (0.0, 1.0)  # class 1's palette colour
    assert text.text == "box 0.70"


def test_rviz_config_shows_the_cloud_and_the_boxes():
    import pathlib

    import yaml

    config = yaml.safe_load((pathlib.Path(__file__).parents[1] / "config" / "sfs.rviz").read_text())
    displays = {d["Class"]: d for d in config["Visualization Manager"]["Displays"]}
    cloud = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "/sfs_node/points" and cloud["Color Transformer"] == "RGB8"
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/sfs_node/markers"
