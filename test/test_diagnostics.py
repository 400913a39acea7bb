"""sfs_ros/ros/diagnostics.py on its own: counters and DiagnosticStatus without a node or a spin.

The camera record, its counters and the status builder are the node's real ones; the node's
side is a NodeFacts with plain values, and the refused images are real messages refused by the
real converter.
"""
from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image

from sfs_ros.core import pipeline
from sfs_ros.core.pipeline import PipelineStats
from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.ros import convert
from sfs_ros.ros.camera import Camera
from sfs_ros.ros.diagnostics import (
    MAX_TRACKED_PUBLISHERS,
    NO_FRAME_WARN_S,
    NodeFacts,
    camera_status,
    node_status,
    qos_hint,
    sequence_gap,
)


def info(publisher: int, number: int) -> dict:
    """rmw message info as rclpy hands it to a subscription callback."""
    return {"publisher_gid": {"data": bytes([publisher] * 16)}, "publication_sequence_number": number}


def facts(**changes) -> NodeFacts:
    values = dict(
        name="/sfs_node", state="active", device="cpu", vocabulary=load_vocabulary(["cup", "desk"]),
        random_weights=False, input_reliability="reliable",
        count_publishers=lambda topic: 0, offered_reliabilities=lambda topic: set(),
    )
    values.update(changes)
    return NodeFacts(**values)


def camera() -> Camera:
    return Camera(topic="/front/image_raw", namespace="~/front", name="front", compressed=False)


def values_of(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def refuse(cam: Camera, msg: Image) -> str:
    """Convert `msg` as the node's callback does; count the refusal, return its reason."""
    cam.count_frame()
    with pytest.raises(convert.ImageConversionError) as refused:
        convert.to_frame(msg, source=cam.topic)
    return cam.count_bad_input(refused.value)


def depth_image() -> Image:
    return Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(8))


def short_image() -> Image:
    return Image(height=10, width=10, encoding="rgb8", step=30, data=bytes(100))


def test_sequence_gap_counts_missing_numbers_per_publisher():
    seen: dict[bytes, int] = {}
    assert [sequence_gap(seen, info(1, n)) for n in (1, 2, 5, 9)] == [0, 0, 2, 3]
    assert sequence_gap(seen, info(2, 40)) == 0  # a new publisher starts its own count
    assert sequence_gap(seen, info(1, 3)) == 0  # backwards: a restarted publisher, no gap
    assert sequence_gap(seen, info(1, 5)) == 1
    assert sequence_gap(seen, None) == 0 and sequence_gap(seen, {"publisher_gid": None}) == 0
    for publisher in range(3, 3 + 2 * MAX_TRACKED_PUBLISHERS):
        sequence_gap(seen, info(publisher % 256, 1))
    assert len(seen) == MAX_TRACKED_PUBLISHERS


def test_counters_feed_the_status():
    cam = camera()
    assert [cam.count_frame(info(7, n)) for n in (1, 2, 6)] == [1, 2, 3]  # local seq
    reason = refuse(cam, depth_image())
    assert "unsupported encoding '16UC1'" in reason
    cam.count_incompatible_qos()
    cam.count_lost(4)
    cam.set_matched(2)
    status = camera_status(cam, PipelineStats(frames_in=3, frames_out=2, dropped=1), facts(), now=100.0)
    v = values_of(status)
    assert (v["frames received"], v["frames skipped before the callback"], v["bad inputs"]) == ("4", "3", "1")
    assert v["bad inputs by reason"] == "unsupported encoding: 1" and v["last bad input"] == reason
    assert (v["messages lost"], v["incompatible QoS events"], v["publishers matched"]) == ("4", "1", "2")
    assert (v["frames processed"], v["frames dropped"]) == ("2", "1")
    assert (v["vocabulary"], v["vocabulary size"], v["device"]) == ("custom", "2", "cpu")
    assert status.name == "/sfs_node: front" and status.level == DiagnosticStatus.OK
    assert status.message == "active, 0.0 Hz out"


def test_every_input_refused_is_a_warning_with_the_last_reason():
    cam = camera()
    refuse(cam, depth_image())
    last = refuse(cam, short_image())
    status = camera_status(cam, PipelineStats(), facts(), now=10.0)
    assert status.level == DiagnosticStatus.WARN
    assert status.message == f"every input image was refused: {last}"
    assert values_of(status)["bad inputs by reason"] == "short data: 1, unsupported encoding: 1"
    cam.count_frame()  # one image got through: no longer every one
    assert camera_status(cam, PipelineStats(), facts(), now=11.0).level == DiagnosticStatus.OK


def test_rates_come_from_two_reports_and_all_failing_frames_are_an_error():
    cam = camera()
    camera_status(cam, PipelineStats(), facts(), now=10.0)
    for _ in range(6):
        cam.count_frame()
    status = camera_status(cam, PipelineStats(frames_in=6, errors=6), facts(), now=12.0)
    v = values_of(status)
    assert (v["input rate (Hz)"], v["output rate (Hz)"]) == ("3.00", "0.00")
    assert status.level == DiagnosticStatus.ERROR and status.message == "every frame fails in the pipeline"


def test_latencies_follow_the_pipeline_stages(monkeypatch):
    """A stage added to pipeline.STAGES shows up without touching the diagnostics."""
    monkeypatch.setattr(pipeline, "STAGES", (*pipeline.STAGES, "new_stage"))
    stats = PipelineStats(latencies={"segment": [0.010, 0.030], "new_stage": [0.002]})
    v = values_of(camera_status(camera(), stats, facts(), now=1.0))
    for stage in pipeline.STAGES:
        assert f"{stage} latency p50 (ms)" in v and f"{stage} latency p95 (ms)" in v
    assert (v["segment latency p50 (ms)"], v["new_stage latency p95 (ms)"]) == ("20.0", "2.0")
    assert v["label latency p50 (ms)"] == "n/a"


class Subscription:
    """What the status reads of an rclpy subscription: its resolved topic name."""

    topic_name = "/front/image_raw"


def test_a_publisher_without_frames_warns_with_the_qos_hint():
    cam = camera()
    cam.subscription, cam.active_since = Subscription(), 100.0
    warned: list[str] = []
    node = facts(count_publishers=lambda topic: 1, offered_reliabilities=lambda topic: {"best_effort"},
                 warn=warned.append)
    quiet = camera_status(cam, PipelineStats(), node, now=100.0 + NO_FRAME_WARN_S - 1)
    assert quiet.level == DiagnosticStatus.OK and warned == []
    status = camera_status(cam, PipelineStats(), node, now=100.0 + NO_FRAME_WARN_S + 1)
    assert status.level == DiagnosticStatus.WARN
    assert status.message.startswith("1 publisher(s) but no frame for 6 s: a publisher offers best_effort")
    assert len(warned) == 1 and warned[0].startswith("/front/image_raw: 1 publisher(s) on the topic")
    assert values_of(status)["publishers on input"] == "1"


def test_qos_hint_names_the_fix():
    assert "set input_reliability:=best_effort" in qos_hint("reliable", {"best_effort", "reliable"})
    assert "QoS matches" in qos_hint("reliable", {"reliable"})
    assert "input_reliability:=reliable" in qos_hint("best_effort", {"reliable"})


def test_random_weights_warn_and_a_node_without_cameras_is_ok():
    status = camera_status(camera(), PipelineStats(), facts(random_weights=True, state="inactive"), now=1.0)
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "random weights: labels are meaningless"
    assert values_of(status)["random weights"] == "true"
    alone = node_status(facts(state="unconfigured", vocabulary=None))
    assert (alone.name, alone.level, alone.message) == (
        "/sfs_node: node", DiagnosticStatus.OK, "unconfigured: no cameras configured")


def test_the_executor_survives_an_entity_destroyed_while_the_wait_set_is_built():
    """rclpy raises InvalidHandle from add_to_wait_set when a QoS event handler is destroyed
    (deactivate) while the executor builds its wait set; plain rclpy ends spin() there for good,
    leaving a deaf node. A waitable that fails that way once must not stop the timers."""
    import threading

    import rclpy
    from rclpy.exceptions import InvalidHandle
    from rclpy.signals import SignalHandlerOptions
    from rclpy.waitable import Waitable

    from sfs_ros.ros.executor import SfsExecutor

    class DestroyedOnce(Waitable):
        def __init__(self, callback_group):
            super().__init__(callback_group)
            self.failed = 0

        def add_to_wait_set(self, wait_set):
            if not self.failed:
                self.failed += 1
                raise InvalidHandle("destroyed meanwhile")

        def __enter__(self):
            return None

        def __exit__(self, *exc):
            return None

        def is_ready(self, wait_set):
            return False

        def get_num_entities(self):
            return rclpy.waitable.NumberOfEntities()

        def take_data(self):
            return None

        async def execute(self, taken_data):
            return None

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("executor_probe", context=context)
    ticks = threading.Semaphore(0)
    node.create_timer(0.02, ticks.release)
    waitable = DestroyedOnce(node.default_callback_group)
    node.add_waitable(waitable)
    executor = SfsExecutor(num_threads=2, context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        for _ in range(5):
            assert ticks.acquire(timeout=5), "spin() ended: the timer stopped ticking"
        assert waitable.failed == 1 and spinner.is_alive()
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        context.try_shutdown()
        spinner.join(2.0)
