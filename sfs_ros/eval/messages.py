"""ROS messages without rclpy: a rosbags typestore that knows our msg/ definitions.

rosbags parses msg/*.msg itself (`get_types_from_msg`), serialises CDR byte-identical to rclpy
and computes the same RIHS01 type hashes as rosidl, so the evaluator writes bags of
sfs_ros/msg/InstanceArray and LabelInfo on machines where no ROS package is built.

The Result -> message fields come from `sfs_ros.ros.message_fields`, the same code the node
uses, with this typestore's classes.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sfs_ros.core.frame import UNLABELED, Result
from sfs_ros.eval.errors import EvalError
from sfs_ros.ros import message_fields
from sfs_ros.ros.message_fields import MessageClasses

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


def point_cloud(hdr: Any, points: np.ndarray) -> Any:
    """sensor_msgs/PointCloud2 of a structured array, laid out as the node's ~/points."""
    from sfs_ros.ros.cloud import cloud_layout

    layout = cloud_layout(points)
    field = _t("sensor_msgs/msg/PointField")
    fields = [field(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout.pop("fields")]
    data = np.frombuffer(np.ascontiguousarray(points).tobytes(), np.uint8)
    return _t("sensor_msgs/msg/PointCloud2")(header=hdr, fields=fields, data=data, **layout)


def compressed_image(hdr: Any, fmt: str, data: bytes) -> Any:
    return _t("sensor_msgs/msg/CompressedImage")(
        header=hdr, format=fmt, data=np.frombuffer(data, np.uint8)
    )


def message_classes() -> MessageClasses:
    """The typestore's classes for `sfs_ros.ros.message_fields`."""
    return MessageClasses(
        Instance=_t("sfs_ros/msg/Instance"), InstanceArray=_t(INSTANCES_TYPE),
        ClassScore=_t("sfs_ros/msg/ClassScore"), RegionOfInterest=_t("sensor_msgs/msg/RegionOfInterest"),
        LabelClass=_t("sfs_ros/msg/LabelClass"), LabelInfo=_t(LABEL_INFO_TYPE),
        ColorRGBA=_t("std_msgs/msg/ColorRGBA"), Point=_t("geometry_msgs/msg/Point"),
        Vector3=_t("geometry_msgs/msg/Vector3"),
    )


def instances(result: Result, hdr: Any) -> Any:
    """InstanceArray of a Result: one Instance per mask, mask cropped to its box (mono8)."""
    return message_fields.instance_array(
        result, hdr, message_classes(), lambda crop: image(hdr, crop, "mono8"))


def label_info(result: Result, palette: np.ndarray, threshold: float, threshold_kind: str,
               hdr: Any) -> Any:
    """LabelInfo: label-image value -> class name -> overlay colour, as the node latches it."""
    return message_fields.label_info(
        ((i, name, rgb) for i, (name, rgb) in enumerate(zip(result.class_names, palette))),
        hdr, message_classes(), vocabulary=result.vocabulary_name, unlabeled_value=UNLABELED,
        threshold=threshold, threshold_kind=threshold_kind,
        vocabulary_version=result.vocabulary_version, random_weights=bool(result.random_weights),
    )
