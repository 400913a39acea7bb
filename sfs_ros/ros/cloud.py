"""numpy structured arrays <-> sensor_msgs/PointCloud2 (sensor_msgs_py is not on PyPI).

A structured array of plain numeric fields maps one-to-one onto a PointCloud2: each field a
PointField at its byte offset, `point_step` the dtype's itemsize, one unorganised row
(height 1). The semantic cloud uses `sfs_ros.core.geometry.POINT_DTYPE` (README, "RGB-D").
sensor_msgs is imported by `to_cloud` only: `cloud_layout` and `from_cloud` are message-free, so
the evaluator's rosbags writer (eval/messages.py) fills the same fields without a ROS build.
"""
from __future__ import annotations

import array
import sys
from typing import Any

import numpy as np
from sfs_ros.core.frame import SfsError

#: sensor_msgs/PointField datatype of each numpy kind (little-endian base types).
DATATYPES: dict[str, int] = {
    "i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "f4": 7, "f8": 8,
}
_DTYPES = {code: kind for kind, code in DATATYPES.items()}


class CloudError(SfsError, ValueError):
    """A PointCloud2 or array that cannot be converted; the message says why."""


def cloud_layout(points: np.ndarray) -> dict[str, Any]:
    """The PointCloud2 fields (other than header and data) of a 1-D structured array."""
    if points.dtype.names is None or points.ndim != 1:
        raise CloudError(f"need a 1-D structured array, got {points.dtype} {points.shape}")
    fields = []
    for name in points.dtype.names:
        dtype, offset = points.dtype.fields[name][:2]
        kind = f"{dtype.kind}{dtype.itemsize}"
        if kind not in DATATYPES or dtype.shape:
            raise CloudError(f"field {name!r} has type {dtype}, which PointCloud2 cannot hold")
        fields.append((name, int(offset), DATATYPES[kind], 1))
    step = points.dtype.itemsize
    return dict(height=1, width=int(points.size), fields=fields, is_bigendian=sys.byteorder == "big",
                point_step=step, row_step=step * int(points.size), is_dense=True)


def to_cloud(points: np.ndarray, header: Any) -> Any:
    """sensor_msgs/PointCloud2 of a 1-D structured array (native byte order), with `header`."""
    from sensor_msgs.msg import PointCloud2, PointField

    layout = cloud_layout(points)
    fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout.pop("fields")]
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(points).tobytes())
    return PointCloud2(header=header, fields=fields, data=data, **layout)


def from_cloud(msg: Any) -> np.ndarray:
    """The points of a PointCloud2 as a 1-D structured array (fields at their offsets; padding
    and row padding skipped). Refuses unknown datatypes, counts other than 1, and short data."""
    names, formats, offsets = [], [], []
    order = ">" if msg.is_bigendian else "<"
    for f in msg.fields:
        if f.datatype not in _DTYPES or f.count != 1:
            raise CloudError(f"field {f.name!r}: datatype {f.datatype} count {f.count} not supported")
        names.append(f.name)
        formats.append(order + _DTYPES[f.datatype])
        offsets.append(f.offset)
    dtype = np.dtype(dict(names=names, formats=formats, offsets=offsets, itemsize=msg.point_step))
    rows, width = int(msg.height), int(msg.width)
    raw = np.frombuffer(bytes(msg.data), np.uint8)
    if msg.row_step < width * msg.point_step or raw.size < rows * msg.row_step:
        raise CloudError(f"{raw.size} bytes cannot hold {rows} rows of {width} points "
                         f"(point_step {msg.point_step}, row_step {msg.row_step})")
    table = raw[:rows * msg.row_step].reshape(rows, msg.row_step)[:, :width * msg.point_step]
    return np.ascontiguousarray(table).view(dtype).reshape(-1)
