"""Test helpers: an SfsNode and a test node spinning in their own rclpy context; polling waits."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from sfs_ros.ros.node import SfsNode


def wait_until(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def running_node(namespace: str, overrides: dict[str, Any], tester_name: str,
                 node_name: str = "sfs_node", threads: int = 4) -> Iterator[tuple[SfsNode, Any]]:
    """Yield (node, tester), the node configured and active; everything is torn down after."""
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = SfsNode(node_name=node_name, namespace=namespace, context=context,
                   parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    tester = rclpy.create_node(tester_name, namespace=namespace, context=context)
    executor = MultiThreadedExecutor(num_threads=threads, context=context)
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
