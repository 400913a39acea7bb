"""Depth messages without rclpy: stamp pairing, depth and camera_info decoding.

Shared by the node (ros/rgbd.py, rclpy messages) and the evaluator (eval/bags.py, rosbags
messages): both hand in objects with the sensor_msgs field names. Nothing here imports rclpy.

`message_filters` is not on PyPI, so colour and depth are paired here (`StampPairer`): by header
stamp, exactly or nearest within a slop, in bounded buffers that drop the oldest and count what
never paired.
"""
from __future__ import annotations

import collections
from typing import Any, Generic, TypeVar

import numpy as np

from sfs_ros.core.geometry import GeometryError, Intrinsics, decode_depth
from sfs_ros.ros.image_codec import ImageConversionError, strided_pixels

A = TypeVar("A")
B = TypeVar("B")
#: Depth encodings accepted, and their numpy types.
DEPTH_ENCODINGS = {"16UC1": np.uint16, "32FC1": np.float32}
#: Items each side of a pairer holds before the oldest is dropped (and counted).
PAIR_BUFFER = 8
#: Seconds without any depth message after which colour frames go on without waiting.
DEPTH_SILENCE_S = 1.0


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time as integer nanoseconds (exact pairing needs integers)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def sibling_camera_info(topic: str) -> str:
    """The camera_info topic next to an image topic (image_transport's convention)."""
    head, _, _ = topic.rstrip("/").rpartition("/")
    return f"{head}/camera_info" if head else "camera_info"


class StampPairer(Generic[A, B]):
    """Pairs colour items with depth items by stamp (ns): exact or nearest within `slop_ns`.

    Every call returns the colour items that are settled, oldest first, each with its depth
    item or None. A colour item waits (bounded) only while depth is flowing (a depth item came
    within `silence_s` on the caller's clock `now`; inf: always wait, as offline readers do);
    it leaves unpaired
    when a newer colour pairs, when a depth newer than its stamp + slop arrives (depth comes in
    stamp order, so none can match it any more), or when the buffer overflows. Counters:
    `paired`, `unpaired_colour`, `unpaired_depth` (depth dropped from a full buffer),
    `depth_seen`.
    """

    def __init__(self, slop_ns: int, size: int = PAIR_BUFFER, silence_s: float = DEPTH_SILENCE_S) -> None:
        self.slop_ns, self.size, self.silence_s = slop_ns, size, silence_s
        self._colour: collections.deque[tuple[int, A]] = collections.deque()
        self._depth: collections.deque[tuple[int, B]] = collections.deque()
        self._last_depth = float("-inf")  # `now` of the last depth item
        self.paired = self.unpaired_colour = self.unpaired_depth = self.depth_seen = 0

    def _nearest(self, items: collections.deque, stamp: int) -> int | None:
        best = min(range(len(items)), key=lambda i: abs(items[i][0] - stamp), default=None)
        if best is None or abs(items[best][0] - stamp) > self.slop_ns:
            return None
        return best

    def _release_older(self, stamp: float) -> list[tuple[A, B | None]]:
        """Waiting colour items older than `stamp`, unpaired."""
        out = [(item, None) for t, item in self._colour if t < stamp]
        self._colour = collections.deque((t, item) for t, item in self._colour if t >= stamp)
        self.unpaired_colour += len(out)
        return out

    def add_colour(self, stamp: int, item: A, now: float) -> list[tuple[A, B | None]]:
        found = self._nearest(self._depth, stamp)
        if found is not None:
            depth = self._depth[found][1]
            del self._depth[found]
            self.paired += 1
            return [*self._release_older(stamp), (item, depth)]
        if now - self._last_depth > self.silence_s:  # no depth flows: do not wait
            self.unpaired_colour += 1
            return [*self._release_older(stamp), (item, None)]
        self._colour.append((stamp, item))
        if len(self._colour) > self.size:
            self.unpaired_colour += 1
            return [(self._colour.popleft()[1], None)]
        return []

    def add_depth(self, stamp: int, item: B, now: float) -> list[tuple[A, B | None]]:
        self._last_depth = now
        self.depth_seen += 1
        found = self._nearest(self._colour, stamp)
        if found is not None:
            colour_stamp, colour = self._colour[found]
            del self._colour[found]
            self.paired += 1
            return [*self._release_older(colour_stamp), (colour, item)]
        out = self._release_older(stamp - self.slop_ns)
        self._depth.append((stamp, item))
        if len(self._depth) > self.size:
            self._depth.popleft()
            self.unpaired_depth += 1
        return out

    def flush(self) -> list[tuple[A, None]]:
        """Every waiting colour item, unpaired (the end of a recording)."""
        return self._release_older(float("inf"))

    @property
    def waiting(self) -> int:
        return len(self._colour)


def depth_metres(msg: Any, depth_scale: float) -> np.ndarray:
    """(H, W) float32 metres of a sensor_msgs/Image in 16UC1 or 32FC1 (step and byte order
    honoured; short data refused by `strided_pixels`)."""
    dtype = DEPTH_ENCODINGS.get(str(msg.encoding))
    if dtype is None:
        raise GeometryError(f"unsupported depth encoding {msg.encoding!r}: accepted are "
                            f"{', '.join(DEPTH_ENCODINGS)}", "depth_encoding")
    try:
        pixels = strided_pixels(msg, dtype, 1)[:, :, 0]
    except ImageConversionError as exc:
        raise GeometryError(f"depth image: {exc}", "depth_data") from exc
    return decode_depth(pixels.astype(dtype, copy=pixels.dtype != dtype), depth_scale)


def intrinsics_of(info: Any, depth_shape: tuple[int, int], info_topic: str) -> Intrinsics:
    """The depth image's intrinsics from its camera_info; a camera_info for another image size
    is refused (a depth image of another size needs its own camera_info)."""
    height, width = depth_shape
    if (info.width, info.height) not in ((0, 0), (width, height)):
        raise GeometryError(
            f"depth is {width}x{height} but the camera_info on {info_topic} is for "
            f"{info.width}x{info.height}: give the depth image's own camera_info "
            "(camera_info_topics)", "depth_size")
    return Intrinsics.from_k(info.k, width, height)
