"""Depth inputs of one camera in the node, and RViz markers.

Colour and depth pair by header stamp, exactly or nearest within `sync_slop` seconds
(`depth_input.StampPairer`, bounded, counted). camera_info is not paired by stamp: a calibration does not change
from frame to frame, so the latest one received for the depth topic is used (drivers that
stamp it with every frame work the same). The default camera_info topic is the DEPTH image's
sibling (`/cam/depth/image_rect_raw` -> `/cam/depth/camera_info`): back-projection needs the
depth image's own K, which for depth registered to colour ("aligned_depth_to_color") is the
colour camera's K at the depth image's size.

A colour frame never waits for depth that does not come: when no depth has arrived for
`DEPTH_SILENCE_S`, or its depth fails to decode, it goes on as a 2D frame and the reason is
counted (`DepthLink.report`), so the node keeps serving its 2D outputs.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from sfs_ros.core.frame import Frame, Result, instance_records
from sfs_ros.core.geometry import GeometryError
from sfs_ros.ros.depth_input import (
    StampPairer,
    depth_metres,
    intrinsics_of,
    sibling_camera_info,
    stamp_ns,
)

#: RGBA of instances without a class (the overlay leaves them uncoloured).
UNLABELED_RGBA = (0.8, 0.8, 0.8, 0.5)


def depth_inputs(values: dict[str, Any]) -> list[tuple[str, str] | None]:
    """Per image topic: (depth topic, camera_info topic), or None when depth is off
    (node parameters depth_topics and camera_info_topics, checked by params.validate)."""
    depth = list(values["depth_topics"])
    if not depth:
        return [None] * len(values["image_topics"])
    infos = list(values["camera_info_topics"]) or [sibling_camera_info(t) for t in depth]
    return list(zip(depth, infos))


@dataclasses.dataclass
class DepthLink:
    """One camera's depth inputs: what its callbacks feed in and the Frames that come out.

    Every frame that goes on without depth is passed to `count(reason)` (a short key, counted
    in /diagnostics) and its sentence to `warn(text)` at most once per `warn_period` seconds
    per reason ("no camera_info on /cam/depth/camera_info").
    """

    depth_topic: str
    info_topic: str
    slop_s: float
    depth_scale: float
    count: Callable[[str], None]
    warn: Callable[[str], None]
    warn_period: float = 5.0
    info: Any = None  # latest sensor_msgs/CameraInfo
    frame_id: str = ""  # the depth image's frame_id: the frame of the cloud and the markers
    subscriptions: list = dataclasses.field(default_factory=list)
    _warned: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget frames waiting for a partner (a new activation starts a new stream)."""
        self.pairer: StampPairer = StampPairer(int(round(self.slop_s * 1e9)))

    def report(self, reason: str, text: str) -> None:
        self.count(reason)
        now = time.monotonic()
        if now - self._warned.get(reason, -self.warn_period) >= self.warn_period:
            self._warned[reason] = now
            self.warn(text)

    def on_camera_info(self, msg: Any) -> None:
        self.info = msg

    def on_colour(self, frame: Frame, now: float) -> list[Frame]:
        return self._settle(self.pairer.add_colour(stamp_ns(frame.stamp), frame, now))

    def on_depth(self, msg: Any, now: float) -> list[Frame]:
        return self._settle(self.pairer.add_depth(stamp_ns(msg.header.stamp), msg, now))

    def _settle(self, pairs: list[tuple[Frame, Any]]) -> list[Frame]:
        out = []
        for frame, depth in pairs:
            if depth is None:
                self.report("depth_unpaired", f"no depth on {self.depth_topic} within the "
                            f"sync_slop of the frame stamped {frame.time:.3f}")
            else:
                self._attach(frame, depth)
            out.append(frame)
        return out

    def _attach(self, frame: Frame, msg: Any) -> None:
        """Give `frame` its depth and intrinsics, or say why not (it then stays 2D)."""
        if self.info is None:
            self.report("no_camera_info", f"no camera_info on {self.info_topic}")
            return
        try:
            depth = depth_metres(msg, self.depth_scale)
            intrinsics = intrinsics_of(self.info, depth.shape, self.info_topic)
        except GeometryError as exc:
            self.report(exc.reason, f"{self.depth_topic}: {exc}")
            return
        frame.depth, frame.intrinsics = depth, intrinsics
        self.frame_id = str(msg.header.frame_id)


def marker_array(result: Result, header: Any, palette: np.ndarray) -> MarkerArray:
    """A box (CUBE at the centroid, scaled to the extent) and a text label per instance with
    depth, coloured like the overlay (class palette; grey when unlabeled), after a DELETEALL so
    the markers of the previous frame vanish."""
    markers = [Marker(header=header, ns="sfs", action=Marker.DELETEALL)]
    for r in instance_records(result):
        if r.point_count == 0:
            continue
        if 0 <= r.class_id < len(palette):
            red, green, blue = (float(c) / 255.0 for c in palette[r.class_id])
            colour = ColorRGBA(r=red, g=green, b=blue, a=0.5)
        else:
            colour = ColorRGBA(r=UNLABELED_RGBA[0], g=UNLABELED_RGBA[1], b=UNLABELED_RGBA[2],
                               a=UNLABELED_RGBA[3])
        x, y, z = r.centroid
        size = Vector3(x=max(r.extent[0], 0.01), y=max(r.extent[1], 0.01), z=max(r.extent[2], 0.01))
        box = Marker(header=header, ns="sfs", id=2 * r.instance_id, type=Marker.CUBE,
                             action=Marker.ADD, scale=size, color=colour,
                             pose=Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(w=1.0)))
        name = f"{r.class_name} {r.score:.2f}" if r.class_name else f"#{r.instance_id}"
        text = Marker(header=header, ns="sfs", id=2 * r.instance_id + 1,
                              type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                              text=name, scale=Vector3(z=0.05),
                              color=ColorRGBA(r=colour.r, g=colour.g, b=colour.b, a=1.0),
                              pose=Pose(position=Point(x=x, y=y - r.extent[1] / 2 - 0.03, z=z),
                                        orientation=Quaternion(w=1.0)))
        markers += [box, text]
    return MarkerArray(markers=markers)
