"""Camera and output names shared by sfs_node and the evaluator (no rclpy import here).

One camera: outputs under the node's private namespace (`~/label_image`, ...). Several cameras:
`~/<camera>/label_image`, where <camera> is the input topic without a trailing `compressed` and
a trailing image leaf (`/rig/left/image_rect_color/compressed` -> `rig/left`).
"""
from __future__ import annotations

from sfs_ros.core.frame import SfsError

#: Last topic segments that name an image stream rather than a camera.
IMAGE_LEAVES = (
    "image", "image_raw", "image_color", "image_rect", "image_rect_color", "image_mono",
    "image_rect_raw",
)


def camera_name(topic: str) -> str:
    """The camera a topic belongs to: '/front/image_raw/compressed' -> 'front'."""
    parts = [p for p in topic.strip().lstrip("~").split("/") if p]
    if parts and parts[-1] == "compressed":
        parts.pop()
    if len(parts) > 1 and parts[-1] in IMAGE_LEAVES:
        parts.pop()
    return "/".join(parts) or "image"


def output_namespaces(topics: list[str]) -> list[str]:
    """Where each camera's outputs go: '~' for a single camera, '~/<camera>' for several."""
    if len(topics) == 1:
        return ["~"]
    names = [camera_name(t) for t in topics]
    for i, name in enumerate(names):
        if name in names[:i]:
            other = topics[names.index(name)]
            raise SfsError(
                f"image topics {other!r} and {topics[i]!r} both map to camera {name!r} "
                "(outputs ~/<camera>/...): rename or remap one of them"
            )
    return [f"~/{n}" for n in names]
