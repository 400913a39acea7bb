"""Overload smoke test: one in-process SfsNode over real DDS (loopback profile from conftest),
random-weight models kept small (imgsz 320, max_det 2, dense labeling, 3 classes), reliable
input QoS, queue_size 1, fed far faster than it can segment: a 60 Hz stream for ~6 s, then a
burst of 1000 frames (every 25th one truncated, so bad inputs are mixed into the load).

Checks, all generous for a loaded 2-core CI box: the node stays active and answers a final
good frame within 15 s (keep-latest: no backlog builds up); every frame the pipeline took is
accounted for (frames_in == frames_out + dropped + errors once idle) and drops were counted;
every message the subscription saw is either submitted or counted as a bad input, and every
frame sent either reached the callback or is counted as skipped before it (the reader's
KEEP_LAST history overwrote it: a gap in the publisher's sequence numbers); the process
RSS after the run is < 300 MB above the RSS after warm-up.
"""
from __future__ import annotations

import array
import threading
import time

import numpy as np
import psutil
import pytest
from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ros_rig import running_node, wait_until
from sfs_ros.ros import convert

NS = "/sfs_overload"
NODE = f"{NS}/sfs_node"
PARAMS = {
    "random_weights": True, "device": "cpu", "imgsz": 320, "max_det": 2,
    "labeling_mode": "dense", "vocabulary": ["cup, mug", "table", "floor"], "score_threshold": 0.0,
    "input_reliability": "reliable", "queue_size": 1, "image_topics": ["cam/image_raw"],
}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
STREAM_HZ, STREAM_S, BURST = 60.0, 6.0, 1000
FINAL_LATENCY_S = 15.0
RSS_GROWTH_MB = 300

pytestmark = pytest.mark.timeout(180)


class Answers:
    """Stamps of the label images received, with the time each arrived."""

    def __init__(self, node, topic):
        self.cond, self.arrived = threading.Condition(), {}
        self.sub = node.create_subscription(Image, topic, self._on_msg, RELIABLE)

    def _on_msg(self, msg):
        with self.cond:
            self.arrived[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
            self.cond.notify_all()

    def wait(self, stamp, timeout):
        key = (stamp.sec, stamp.nanosec)
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.arrived, timeout):
                raise AssertionError(f"no label image stamped {key} within {timeout:.0f} s")
            return self.arrived[key]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.fixture(scope="module")
def rig(photo):
    with running_node(NS, PARAMS, "overload_tester") as (node, tester):
        pub = tester.create_publisher(Image, f"{NS}/cam/image_raw", RELIABLE)
        answers = Answers(tester, f"{NODE}/label_image")
        cam = node._cameras[0]
        wait_until(lambda: pub.get_subscription_count() >= 1, 10, "input matched")
        wait_until(lambda: cam.subscription.get_publisher_count() >= 1, 10, "reader matched")
        wait_until(lambda: cam.publishers["label_image"].get_subscription_count() >= 1, 10,
                   "output matched")
        picture = np.ascontiguousarray(photo[80:320:2, 120:440:2])  # 120 x 160
        yield node, tester, pub, answers, cam, picture


def test_overload_keeps_latest_counts_drops_and_stays_up(rig):
    node, tester, pub, answers, cam, picture = rig
    good = convert.numpy_to_image(picture, "rgb8", Header(frame_id="cam"))
    bad = convert.numpy_to_image(picture, "rgb8", Header(frame_id="cam"))
    bad.data = array.array("B", bytes(good.data[:1000]))  # truncated: refused, counted
    seconds = iter(range(1000, 1_000_000))

    def send(msg):
        msg.header.stamp = Time(sec=next(seconds), nanosec=1)
        pub.publish(msg)
        return msg.header.stamp

    # warm-up: the first frame (lazy allocations, first forward passes), then the baseline RSS
    answers.wait(send(good), 60)
    rss_warm = rss_mb()
    sent, bad_sent = 1, 0

    # 60 Hz for ~6 s
    period, t0, k = 1.0 / STREAM_HZ, time.monotonic(), 0
    while time.monotonic() - t0 < STREAM_S:
        send(good)
        sent, k = sent + 1, k + 1
        time.sleep(max(0.0, t0 + k * period - time.monotonic()))
    # a burst, as fast as the publisher goes, with bad frames mixed in
    for i in range(BURST):
        if i % 25 == 0:
            send(bad)
            bad_sent += 1
        else:
            send(good)
        sent += 1
    assert node._state_machine.current_state[1] == "active"

    # the final good frame is answered promptly: keep-latest queues, no backlog
    t_final = time.monotonic()
    final = send(good)
    sent += 1
    latency = answers.wait(final, FINAL_LATENCY_S) - t_final
    assert latency < FINAL_LATENCY_S

    # quiesce: nothing more arrives, every submitted frame came out, was dropped or failed
    def settled():
        before = cam.received
        time.sleep(0.5)
        return cam.received == before
    wait_until(settled, 20, "the input to go quiet", poll=0)
    pipeline = cam.pipeline
    assert pipeline is not None and pipeline.wait_idle(30)
    stats = pipeline.stats
    with cam.lock:
        received, bad_inputs, skipped = cam.received, cam.bad_inputs, cam.skipped
    assert stats.frames_in == stats.frames_out + stats.dropped + stats.errors, stats
    assert received == stats.frames_in + bad_inputs
    # one reliable publisher whose first frame was received: every frame is accounted for
    assert received + skipped == sent, (received, skipped, sent)
    assert stats.dropped > 0, "overload should have dropped (and counted) frames"
    assert stats.frames_out >= 2 and stats.errors == 0
    # bad frames of the burst may have been overwritten in the reader's history, unseen
    assert bad_inputs <= bad_sent
    assert cam.published == stats.frames_out
    assert node._state_machine.current_state[1] == "active"
    # the diagnostics view (cam.stats()) agrees with the pipeline's counters
    total = cam.stats()
    assert (total.frames_in, total.frames_out, total.dropped) == (
        stats.frames_in, stats.frames_out, stats.dropped)

    # memory: a smoke check for a leak per frame, not a budget
    rss_end = rss_mb()
    assert rss_end - rss_warm < RSS_GROWTH_MB, (rss_warm, rss_end)
    print(f"\noverload: sent {sent} ({bad_sent} bad), received {received}, skipped {skipped}, "
          f"in {stats.frames_in}, "
          f"out {stats.frames_out}, dropped {stats.dropped}, bad {bad_inputs}, "
          f"final latency {latency:.2f} s, RSS {rss_warm:.0f} -> {rss_end:.0f} MB")

    # a lone bad frame is counted, and a good one is still answered afterwards
    send(bad)
    wait_until(lambda: cam.bad_inputs == bad_inputs + 1, 10, "the bad frame counted")
    assert "data holds 1000 bytes" in cam.last_bad_reason
    answers.wait(send(good), FINAL_LATENCY_S)
