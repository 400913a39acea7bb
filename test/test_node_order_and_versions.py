"""Issue #12 over real DDS: a camera's frames come out in order, every output names the class map
it used, stale frames are dropped and counted, and outputs nobody subscribes to are not made.

Each test runs its own SfsNode (random weights, 160 px frames) with a test node in one process.
"""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from ros_rig import RELIABLE, Inbox, diagnostics_for, jpeg_image, rgb_image, running_node, wait_until
from sfs_ros.msg import InstanceArray, LabelInfo

SMALL = {"random_weights": True, "device": "cpu", "imgsz": 160, "max_det": 3,
         "vocabulary": ["cup", "table"], "score_threshold": 0.0, "input_reliability": "reliable"}
LATCHED = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def now_stamp(node, offset: float = 0.0) -> Time:
    ns = node.get_clock().now().nanoseconds + int(offset * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def matched(pub, sub_count=1):
    wait_until(lambda: pub.get_subscription_count() >= sub_count, 10, f"{pub.topic_name} matched")


def test_a_burst_of_one_camera_comes_out_in_stamp_order(photo):
    """Defect 2: callbacks of one camera ran in parallel (reentrant group, 4 threads), so an older
    JPEG decoded last could replace a newer one in the queue and output stamps went backwards.
    Now one mutually exclusive group per camera, and the pipeline refuses older frames."""
    big = cv2.resize(photo, (1280, 960))  # decoding takes long enough for callbacks to overlap
    with running_node("/order", dict(SMALL, image_topics=["cam/image/compressed"], queue_size=5),
                      "order_tester") as (node, tester):
        pub = tester.create_publisher(CompressedImage, "/order/cam/image/compressed",
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        labels = Inbox(tester, Image, "/order/sfs_node/label_image")
        matched(pub)
        wait_until(lambda: node.count_subscribers("/order/sfs_node/label_image") >= 1, 10, "inbox")
        messages = [jpeg_image(big, Time(sec=1000 + i)) for i in range(40)]
        for msg in messages:
            pub.publish(msg)
        labels.wait_for(lambda m: m.header.stamp.sec == 1039, 120, "the last frame")
        time.sleep(1.0)
        stamps = [m.header.stamp.sec for m in labels.messages]
        assert stamps == sorted(stamps), f"output stamps went backwards: {stamps}"
        assert len(stamps) == len(set(stamps))


def test_every_output_names_a_published_class_map_during_vocabulary_changes(photo):
    """Defect 6: LabelInfo and every InstanceArray carry the vocabulary version; LabelInfo of a
    new version is published before the first frame that uses it."""
    picture = np.ascontiguousarray(cv2.resize(photo, (160, 120)))
    with running_node("/versions", dict(SMALL, image_topics=["cam/image"]), "versions_tester") as (node, tester):
        pub = tester.create_publisher(Image, "/versions/cam/image", RELIABLE)
        infos = Inbox(tester, LabelInfo, "/versions/sfs_node/label_info", LATCHED)
        instances = Inbox(tester, InstanceArray, "/versions/sfs_node/instances")
        matched(pub)
        wait_until(lambda: node.count_subscribers("/versions/sfs_node/instances") >= 1, 10, "inbox")
        vocabularies = [["cup", "table"], ["dog", "cat", "bird"], ["car"], ["tree", "road"]]
        stop = threading.Event()

        def stream():
            sec = 2000
            while not stop.is_set():
                pub.publish(rgb_image(picture, Time(sec=sec)))
                sec += 1
                time.sleep(0.05)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        try:
            for vocabulary in vocabularies[1:]:
                time.sleep(1.0)
                from rclpy.parameter import Parameter

                node.set_parameters([Parameter("vocabulary", value=vocabulary)])
                assert node.wait_vocabulary(60)
            time.sleep(2.0)
        finally:
            stop.set()
            streamer.join(2)
        wait_until(lambda: len(instances.messages) >= 5, 60, "frames during the changes")
        by_version = {m.vocabulary_version: m for m in infos.messages}
        assert len(by_version) >= len(vocabularies), "a LabelInfo per vocabulary"
        versions = [m.vocabulary_version for m in instances.messages]
        assert versions == sorted(versions), "a frame never goes back to an older class map"
        for msg in instances.messages:
            info = by_version.get(msg.vocabulary_version)
            assert info is not None, f"frame version {msg.vocabulary_version} has no LabelInfo"
            names = {c.name for c in info.classes}
            assert all(i.class_name in names for i in msg.instances), (msg.vocabulary_version, names)
        assert len(set(versions)) >= 2, "frames of more than one vocabulary were seen"


def test_stale_frames_are_dropped_and_latency_is_reported(photo):
    """Defect 7: max_frame_age drops frames older than that (by header stamp, node clock) and
    counts them as stale; camera-to-output latency is reported from the header stamp."""
    picture = np.ascontiguousarray(cv2.resize(photo, (160, 120)))
    with running_node("/stale", dict(SMALL, image_topics=["cam/image"], max_frame_age=2.0),
                      "stale_tester") as (node, tester):
        pub = tester.create_publisher(Image, "/stale/cam/image", RELIABLE)
        labels = Inbox(tester, Image, "/stale/sfs_node/label_image")
        diagnostics = Inbox(tester, DiagnosticArray, "/diagnostics")
        matched(pub)
        wait_until(lambda: node.count_subscribers("/stale/sfs_node/label_image") >= 1, 10, "inbox")
        old = now_stamp(node, -60.0)
        pub.publish(rgb_image(picture, old))
        time.sleep(0.5)
        fresh = now_stamp(node)
        pub.publish(rgb_image(picture, fresh))
        labels.with_stamp(fresh)
        assert not [m for m in labels.messages if m.header.stamp == old]
        _, values = diagnostics_for(diagnostics, "/stale/sfs_node", "cam",
                                    lambda s, v: v.get("frames stale") == "1", timeout=15)
        assert values["camera_to_output latency p50 (ms)"] != "n/a"
        assert float(values["camera_to_output latency p50 (ms)"]) > 0


def test_outputs_nobody_subscribes_to_are_not_computed(photo):
    """Item 9: with only ~/instances subscribed, the label, instance and overlay images are not
    made (no fusion, no overlay); subscribing to the label image turns fusion back on."""
    picture = np.ascontiguousarray(cv2.resize(photo, (160, 120)))
    with running_node("/lazy", dict(SMALL, image_topics=["cam/image"]), "lazy_tester") as (node, tester):
        pub = tester.create_publisher(Image, "/lazy/cam/image", RELIABLE)
        instances = Inbox(tester, InstanceArray, "/lazy/sfs_node/instances")
        matched(pub)
        wait_until(lambda: node.count_subscribers("/lazy/sfs_node/instances") >= 1, 10, "inbox")
        stamp = Time(sec=3000)
        pub.publish(rgb_image(picture, stamp))
        assert instances.with_stamp(stamp).instances
        pipeline = node._cameras[0].pipeline
        assert pipeline.stats.latencies["fuse"] == [], "fusion ran for outputs nobody reads"
        labels = Inbox(tester, Image, "/lazy/sfs_node/label_image")
        wait_until(lambda: node.count_subscribers("/lazy/sfs_node/label_image") >= 1, 10, "inbox")
        stamp = Time(sec=3001)
        pub.publish(rgb_image(picture, stamp))
        labels.with_stamp(stamp)
        assert len(pipeline.stats.latencies["fuse"]) == 1
