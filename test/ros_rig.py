"""Test helpers: an SfsNode and a test node spinning in their own rclpy context; polling waits;
inboxes for outputs; test images."""
from __future__ import annotations

import array
import contextlib
import threading
import time
from typing import Any, Iterator

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from sfs_ros.ros import convert
from sfs_ros.ros.executor import SfsExecutor
from sfs_ros.ros.node import SfsNode

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
FRAME_TIMEOUT = 40.0  # one frame takes ~1.5 s on 2 CPU cores; generous for loaded machines


def wait_until(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class SpinningTester:
    """A plain test node in its own context, spun by its own executor thread; close() ends it."""

    def __init__(self, name: str, namespace: str = "") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, namespace=namespace, context=self.context)
        self.executor = SfsExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.spinner.join(2.0)


@contextlib.contextmanager
def running_node(namespace: str, overrides: dict[str, Any], tester_name: str,
                 node_name: str = "sfs_node", threads: int = 4) -> Iterator[tuple[SfsNode, Any]]:
    """Yield (node, tester), the node configured and active; everything is torn down after."""
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = SfsNode(node_name=node_name, namespace=namespace, context=context,
                   parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    tester = rclpy.create_node(tester_name, namespace=namespace, context=context)
    executor = SfsExecutor(num_threads=threads, context=context)
    executor.add_node(node)
    executor.add_node(tester)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        yield node, tester
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        tester.destroy_node()
        context.try_shutdown()
        spinner.join(2.0)


class Inbox:
    """Messages received on one topic, with waiting by predicate."""

    def __init__(self, node, msg_type, topic, qos=RELIABLE):
        self.topic, self.messages, self._cond = topic, [], threading.Condition()
        self.sub = node.create_subscription(msg_type, topic, self._on_msg, qos)

    def _on_msg(self, msg):
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout=FRAME_TIMEOUT, what=""):
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((m for m in self.messages if predicate(m)), None), timeout
            )
        if not found:
            raise AssertionError(f"no message on {self.topic} {what} within {timeout:.0f} s")
        return found

    def with_stamp(self, stamp, timeout=FRAME_TIMEOUT):
        return self.wait_for(
            lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == (stamp.sec, stamp.nanosec),
            timeout, f"stamped {stamp.sec}.{stamp.nanosec:09d}",
        )


def rgb_image(pixels, stamp, frame_id="cam_optical", encoding="rgb8"):
    if encoding == "bgr8":
        pixels = pixels[:, :, ::-1]
    msg = convert.numpy_to_image(np.ascontiguousarray(pixels), "rgb8", Header(stamp=stamp, frame_id=frame_id))
    msg.encoding = encoding
    return msg


def jpeg_image(pixels, stamp, frame_id="cam1_optical"):
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=Header(stamp=stamp, frame_id=frame_id), format="jpeg",
                           data=array.array("B", data.tobytes()))


_stamps = iter(range(100, 10_000))


def new_stamp():
    return Time(sec=next(_stamps), nanosec=123_456_789)


def diagnostics_for(inbox: Inbox, node_name: str, camera: str, predicate=lambda s, v: True,
                    timeout=10.0):
    """The first /diagnostics status of `<node>: <camera>` (received from now on) that matches."""
    start = len(inbox.messages)
    found = {}

    def match(msg):
        if inbox.messages.index(msg) < start:
            return False
        for status in msg.status:
            if status.name == f"{node_name}: {camera}":
                values = {kv.key: kv.value for kv in status.values}
                if predicate(status, values):
                    found["status"], found["values"] = status, values
                    return True
        return False

    inbox.wait_for(match, timeout, f"with a matching status for {camera}")
    return found["status"], found["values"]
