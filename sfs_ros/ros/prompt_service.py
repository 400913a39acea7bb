"""The prompt service `~/segment_prompt` and click-to-segment, over the node's cameras.

A request names a camera and carries points (fg/bg), boxes, texts and optionally an image:
* no image: the camera's latest Result (kept by the node) is reused, masks and CLIP embeddings,
  so the answer costs only the selection (`core.prompt.select`);
* an image: it goes through that camera's pipeline (`Pipeline.process`, which takes the
  pipeline's model locks, so it waits its turn between camera frames) and is then selected.
The service and the click subscriptions run in their own mutually exclusive callback group:
a prompt never holds up a camera's callbacks (the executor has threads for both), and prompts
are answered one at a time. Anything wrong with a request (camera, encoding, points, boxes,
texts, no frame yet) is an answer with success false and the reason; the node keeps serving.

Clicks (`prompt_clicks`): rqt_image_view publishes a geometry_msgs/PointStamped (x = column,
y = row) on `<image>_mouse_left` when one clicks the image it shows; for each camera the node
listens on `<camera topic>_mouse_left` and on `<overlay output>_mouse_left` (clicks on the
camera or on the node's overlay), selects the instance under the click in the latest frame and
publishes it on `~/prompt/instances` (sfs_ros/InstanceArray) and a highlight on
`~/prompt/overlay` (rgb8), with that frame's header (`~/<camera>/prompt/...` with several cameras).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from sfs_ros.core.config import prompt_config
from sfs_ros.core.frame import Result, SfsError
from sfs_ros.core.options import PROMPT_OPTIONS
from sfs_ros.core.prompt import Prompt, Selection, highlight, segment, select
from sfs_ros.msg import InstanceArray
from sfs_ros.ros import convert
from sfs_ros.ros.camera import Camera
from sfs_ros.ros.qos import QOS_OUTPUT
from sfs_ros.srv import SegmentPrompt

#: Click topics: best effort takes clicks from reliable and best-effort publishers alike.
QOS_CLICKS = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
CLICK_LOG_PERIOD_S = 5.0


def prompt_of(request: Any) -> Prompt:
    """The core Prompt of a SegmentPrompt request (boxes: RegionOfInterest -> x1, y1, x2, y2)."""
    threshold = float(request.text_threshold)
    return Prompt(
        points=tuple((float(p.x), float(p.y)) for p in request.points),
        point_labels=tuple(int(v) for v in request.point_labels),
        boxes=tuple((float(b.x_offset), float(b.y_offset), float(b.x_offset + b.width),
                     float(b.y_offset + b.height)) for b in request.boxes),
        texts=tuple(request.texts),
        text_threshold=threshold if threshold > 0 else None,
    )


def selected_instances(selection: Selection, header: Any) -> InstanceArray:
    """The selected instances, best first, as ~/instances describes them (same ids, fields)."""
    return convert.result_to_instances(selection.result, header, selection.indices)


class PromptService:
    """The service and click subscriptions of one configured node (created at configure,
    destroyed at cleanup with the cameras they serve)."""

    def __init__(self, node: Any, cameras: list[Camera], labeler: Callable[[], Any],
                 clicks: bool) -> None:
        self.node, self.cameras, self.labeler = node, cameras, labeler
        self.group = MutuallyExclusiveCallbackGroup()
        self.answered = self.refused = self.fresh = 0  # requests; fresh: with an image
        self._count_lock = threading.Lock()
        self.service = node.create_service(SegmentPrompt, "~/segment_prompt", self._on_request,
                                           callback_group=self.group)
        self.subscriptions: list[Any] = []
        self.publishers: dict[str, tuple[Any, Any]] = {}  # camera name -> (instances, overlay)
        if clicks:
            for cam in cameras:
                self.publishers[cam.name] = (
                    node.create_lifecycle_publisher(InstanceArray, cam.output("prompt/instances"),
                                                    QOS_OUTPUT),
                    node.create_lifecycle_publisher(Image, cam.output("prompt/overlay"), QOS_OUTPUT))
                for topic in (cam.topic, cam.output("overlay")):
                    self.subscriptions.append(node.create_subscription(
                        PointStamped, topic.removesuffix("/compressed") + "_mouse_left",
                        lambda msg, cam=cam: self._on_click(cam, msg), QOS_CLICKS,
                        callback_group=self.group))

    def destroy(self) -> None:
        node = self.node
        node.destroy_service(self.service)
        for sub in self.subscriptions:
            node.destroy_subscription(sub)
        for pubs in self.publishers.values():
            for pub in pubs:
                node.destroy_lifecycle_publisher(pub)
        self.subscriptions, self.publishers = [], {}

    # ------------------------------------------------------------------ requests
    def _config(self) -> Any:
        """The prompt options as set now (they change at runtime)."""
        return prompt_config({o.name: self.node.get_parameter(o.name).value for o in PROMPT_OPTIONS})

    def _camera(self, name: str) -> Camera:
        if not self.cameras:
            raise SfsError("the node has no camera")
        if not name:
            return self.cameras[0]
        for cam in self.cameras:
            if name in (cam.name, cam.topic):
                return cam
        raise SfsError(f"no camera {name!r}: cameras are {', '.join(c.name for c in self.cameras)}")

    def answer(self, request: Any) -> tuple[Selection, Any, str]:
        """(selection, header, where the frame came from) of a request, or SfsError saying why."""
        cam = self._camera(request.camera)
        prompt = prompt_of(request)
        config = self._config()
        if len(request.image.data) == 0:
            result: Result | None = cam.latest
            if result is None:
                raise SfsError(f"no frame of camera {cam.name!r} yet and no image in the request: "
                               "send an image, or wait until the camera's first frame is processed")
            labeler = self.labeler()
            return (select(result, prompt, labeler, config), convert.header_of(result.frame),
                    "the latest frame")
        pipeline = cam.pipeline
        if pipeline is None:
            raise SfsError(f"camera {cam.name!r} is not active: activate the node to segment an image")
        with self._count_lock:
            self.fresh += 1
        # segment() keeps the image out of the camera's tracks (Pipeline.process(track=False))
        frame = convert.to_frame(request.image, source="segment_prompt")
        selection = segment(pipeline, frame, prompt, config)
        return selection, convert.header_of(frame), "the request's image"

    def _on_request(self, request: Any, response: Any) -> Any:
        try:
            selection, header, source = self.answer(request)
        except Exception as exc:  # noqa: BLE001 - every bad request is an answer, never a crash
            response.success = False
            response.message = str(exc) if isinstance(exc, SfsError) else f"{type(exc).__name__}: {exc}"
            with self._count_lock:
                self.refused += 1
            self.node.get_logger().warning(f"segment_prompt refused: {response.message}",
                                           throttle_duration_sec=CLICK_LOG_PERIOD_S)
            return response
        mask = selection.mask.astype(np.uint8) * np.uint8(255)  # all zero when none is selected
        response.success = True
        response.message = (f"{len(selection)} of {len(selection.result.masks)} masks of "
                            f"{source}" + (f" ({', '.join(sorted(set(selection.texts)))})"
                                           if any(selection.texts) else ""))
        response.instances = selected_instances(selection, header)
        response.scores = [float(v) for v in selection.scores]
        response.matched_texts = list(selection.texts)
        response.mask = convert.numpy_to_image(mask, "mono8", header)
        with self._count_lock:
            self.answered += 1
        return response

    # ------------------------------------------------------------------ clicks
    def _on_click(self, cam: Camera, msg: PointStamped) -> None:
        """Select the instance under a click in the camera's latest frame and publish it."""
        result = cam.latest
        if result is None:
            return
        try:
            prompt = Prompt(points=((float(msg.point.x), float(msg.point.y)),), point_labels=(1,))
            selection = select(result, prompt, None, self._config())
            header = convert.header_of(result.frame)
            instances, overlay = self.publishers[cam.name]
            instances.publish(selected_instances(selection, header))
            overlay.publish(convert.numpy_to_image(highlight(selection), "rgb8", header))
        except Exception as exc:  # noqa: BLE001 - a bad click must not reach the executor
            self.node.get_logger().warning(f"{cam.name}: click ignored: {exc}",
                                           throttle_duration_sec=CLICK_LOG_PERIOD_S)
