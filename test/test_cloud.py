"""ros/cloud.py: the semantic cloud survives PointCloud2 both ways, field by field."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import PointField
from std_msgs.msg import Header

from sfs_ros.core.geometry import POINT_DTYPE
from sfs_ros.ros.cloud import CloudError, from_cloud, to_cloud


def _points(n: int = 50) -> np.ndarray:
    rng = np.random.default_rng(1)
    pts = np.zeros(n, POINT_DTYPE)
    for name in ("x", "y", "z", "score"):
        pts[name] = rng.normal(size=n)
    pts["rgb"] = rng.integers(0, 1 << 24, n).astype(np.uint32).view(np.float32)
    pts["label"] = rng.integers(0, 65536, n)
    pts["instance"] = rng.integers(0, 100, n)
    return pts


def test_round_trip_keeps_every_field_and_the_layout_rviz_reads():
    pts = _points()
    msg = to_cloud(pts, Header(frame_id="cam_depth_optical"))
    fields = {f.name: (f.offset, f.datatype, f.count) for f in msg.fields}
    assert fields == {
        "x": (0, PointField.FLOAT32, 1), "y": (4, PointField.FLOAT32, 1),
        "z": (8, PointField.FLOAT32, 1), "rgb": (12, PointField.FLOAT32, 1),
        "label": (16, PointField.UINT16, 1), "instance": (18, PointField.UINT16, 1),
        "score": (20, PointField.FLOAT32, 1),
    }
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 50, 24, 1200)
    back = from_cloud(msg)
    assert back.dtype.names == POINT_DTYPE.names
    for name in POINT_DTYPE.names:
        np.testing.assert_array_equal(np.ascontiguousarray(back[name]).view(np.uint8),
                                      np.ascontiguousarray(pts[name]).view(np.uint8))


def test_padding_and_row_step_are_skipped():
    """A foreign cloud with 4 bytes of point padding and 8 bytes of row padding, 2 rows."""
    padded = np.dtype(dict(names=["x", "y"], formats=["<f4", "<f4"], offsets=[0, 4], itemsize=12))
    pts = np.zeros(6, padded)
    pts["x"], pts["y"] = np.arange(6), -np.arange(6)
    rows = [pts[:3].tobytes() + b"\0" * 8, pts[3:].tobytes() + b"\0" * 8]
    msg = to_cloud(np.zeros(0, POINT_DTYPE), Header())
    msg.fields = [PointField(name="x", offset=0, datatype=7, count=1),
                  PointField(name="y", offset=4, datatype=7, count=1)]
    msg.height, msg.width, msg.point_step, msg.row_step = 2, 3, 12, 44
    msg.data = b"".join(rows)
    back = from_cloud(msg)
    np.testing.assert_array_equal(back["x"], np.arange(6))
    np.testing.assert_array_equal(back["y"], -np.arange(6))


def test_truncated_data_and_odd_fields_are_refused():
    msg = to_cloud(_points(10), Header())
    msg.data = msg.data[:-1]
    with pytest.raises(CloudError, match="cannot hold"):
        from_cloud(msg)
    with pytest.raises(CloudError, match="structured"):
        to_cloud(np.zeros(3, np.float32), Header())
