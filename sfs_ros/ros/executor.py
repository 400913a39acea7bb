"""The executor SfsNode is spun with."""
from __future__ import annotations

from typing import Any

from rclpy.exceptions import InvalidHandle
from rclpy.executors import MultiThreadedExecutor


class SfsExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor that survives subscriptions destroyed while it waits.

    rclpy (Kilted) guards taking from a subscription or service whose handle was destroyed
    meanwhile, but neither taking from a QoS event handler nor adding one to the wait set:
    deactivating the node (which destroys its subscriptions and their event handlers) while the
    executor builds its wait set or waits can raise `InvalidHandle` there, and that ends
    `spin()` for good: a deaf node that still runs (seen in
    test_lifecycle_cycles_leak_no_threads_or_memory). Spin SfsNode with this executor.
    """

    def wait_for_ready_callbacks(self, *args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                return super().wait_for_ready_callbacks(*args, **kwargs)
            except InvalidHandle:
                # an entity was destroyed while the wait set was built: the generator that met
                # it is finished; the next one is built from the entities that still exist
                self._cb_iter = None

    def _take_waitable(self, waitable: Any) -> Any:
        try:
            return super()._take_waitable(waitable)
        except InvalidHandle:
            return None  # destroyed meanwhile: nothing to do (the executor expects None then)
