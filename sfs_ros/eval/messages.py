"""ROS messages without rclpy: a rosbags typestore that knows our msg/ definitions.

rosbags parses msg/*.msg itself (`get_types_from_msg`), serialises CDR byte-identical to rclpy
and computes the same RIHS01 type hashes as rosidl, so the evaluator writes bags of
sfs_ros/msg/InstanceArray and LabelInfo on machines where no ROS package is built.

The Result -> message mapping here mirrors `sfs_ros.ros.convert` (the node's side); both
follow the field comments in msg/*.msg.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sfs_ros.core.frame import UNLABELED, Result, instance_records
from sfs_ros.eval.errors import EvalError

MSG_NAMES = ("ClassScore", "Instance", "InstanceArray", "LabelClass", "LabelInfo")
INSTANCES_TYPE = "sfs_ros/msg/InstanceArray"
LABEL_INFO_TYPE = "sfs_ros/msg/LabelInfo"


@dataclass(frozen=True, order=True)
class Stamp:
    """A ROS time (header stamp); ordered, hashable, so it can key the image/label pairing."""

    sec: int
    nanosec: int

    @property
    def ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec

    @classmethod
    def from_ns(cls, ns: int) -> "Stamp":
        return cls(*divmod(int(ns), 1_000_000_000))

    def __str__(self) -> str:
        return f"{self.sec}.{self.nanosec:09d}"


def msg_dir() -> Path:
    """Where msg/*.msg live: the checkout, else the installed package share."""
    candidates = [Path(__file__).resolve().parents[2] / "msg", Path(sys.prefix) / "share" / "sfs_ros" / "msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("sfs_ros")) / "msg")
    except Exception:  # noqa: BLE001 - no ament index is a normal case off-ROS
        pass
    for path in candidates:
        if all((path / f"{name}.msg").is_file() for name in MSG_NAMES):
            return path
    raise EvalError(f"sfs_ros message definitions not found; looked in {', '.join(map(str, candidates))}")


@lru_cache(maxsize=1)
def typestore() -> Any:
    """ROS 2 Kilted standard types plus sfs_ros/msg/*, built once per process."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for name in MSG_NAMES:
        text = (msg_dir() / f"{name}.msg").read_text(encoding="utf-8")
        types.update(get_types_from_msg(text, f"sfs_ros/msg/{name}"))
    store.register(types)
    return store


def _t(name: str) -> Any:
    return typestore().types[name]


def serialize(msg: Any) -> bytes:
    """CDR bytes of a typestore message."""
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def header(stamp: Stamp, frame_id: str) -> Any:
    return _t("std_msgs/msg/Header")(
        stamp=_t("builtin_interfaces/msg/Time")(sec=stamp.sec, nanosec=stamp.nanosec), frame_id=frame_id
    )


def image(hdr: Any, array: np.ndarray, encoding: str) -> Any:
    """sensor_msgs/Image of a (H, W) or (H, W, C) array, little-endian, unpadded rows."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    if array.dtype.itemsize > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    data = array.reshape(-1).view(np.uint8)
    return _t("sensor_msgs/msg/Image")(
        header=hdr, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=data.size // height, data=data,
    )


def compressed_image(hdr: Any, fmt: str, data: bytes) -> Any:
    return _t("sensor_msgs/msg/CompressedImage")(
        header=hdr, format=fmt, data=np.frombuffer(data, np.uint8)
    )


def instances(result: Result, hdr: Any) -> Any:
    """InstanceArray of a Result: one Instance per mask, mask cropped to its box (mono8)."""
    score, roi = _t("sfs_ros/msg/ClassScore"), _t("sensor_msgs/msg/RegionOfInterest")
    items = []
    for r in instance_records(result):
        x0, y0, x1, y1 = r.box
        items.append(_t("sfs_ros/msg/Instance")(
            instance_id=r.instance_id, class_id=r.class_id, class_name=r.class_name, score=r.score,
            proposals=[score(class_id=c, class_name=n, score=s) for c, n, s in r.proposals],
            box=roi(x_offset=x0, y_offset=y0, height=y1 - y0, width=x1 - x0, do_rectify=False),
            area=r.area, mask_score=r.mask_score,
            mask=image(hdr, r.mask_crop(result.masks), "mono8"),
        ))
    height, width = result.label_image.shape
    return _t(INSTANCES_TYPE)(
        header=hdr, height=height, width=width, random_weights=bool(result.random_weights),
        instances=items,
    )


def label_info(result: Result, palette: np.ndarray, threshold: float, hdr: Any) -> Any:
    """LabelInfo: label-image value -> class name -> overlay colour, as the node latches it."""
    color = _t("std_msgs/msg/ColorRGBA")
    classes = [
        _t("sfs_ros/msg/LabelClass")(
            class_id=i, name=name,
            color=color(r=float(rgb[0]) / 255, g=float(rgb[1]) / 255, b=float(rgb[2]) / 255, a=1.0),
        )
        for i, (name, rgb) in enumerate(zip(result.class_names, palette))
    ]
    return _t(LABEL_INFO_TYPE)(
        header=hdr, vocabulary=result.vocabulary_name, classes=classes,
        unlabeled_value=UNLABELED, threshold=float(threshold),
        random_weights=bool(result.random_weights),
    )
