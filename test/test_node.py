"""The sfs_ros node over real DDS (loopback profile, per-run domain id from conftest) with the
real FastSAM-s and CLIP ViT-B-32 architectures in random weights.

In-process: one SfsNode (two cameras, one compressed, plus a third camera nobody feeds) and a
test node share one executor for the whole module. The node as a child process:
test_node_process.py; faults and bad input: test_node_faults.py.
"""
from __future__ import annotations

import array
import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ros_rig import (
    RELIABLE,
    Inbox,
    diagnostics_for,
    jpeg_image,
    new_stamp,
    rgb_image,
    running_node,
    wait_until,
)
from sfs_ros.msg import InstanceArray, LabelInfo
from sfs_ros.ros.naming import camera_name, output_namespaces
from sfs_ros.ros.executor import SfsExecutor
from sfs_ros.ros.node import SfsNode

NS = "/sfs_test"
NODE = f"{NS}/sfs_node"
VOCAB = ["cup, mug", "table", "floor"]
MODEL_PARAMS = {  # small and fast: 320 px, 4 masks, 3 classes
    "random_weights": True, "device": "cpu", "imgsz": 320, "max_det": 4, "vocabulary": VOCAB,
    "score_threshold": 0.0,
}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


# ---------------------------------------------------------------------- pure functions
def test_camera_names_and_output_namespaces():
    assert camera_name("/front/image_raw") == "front"
    assert camera_name("/rig/left/image_rect_color/compressed") == "rig/left"
    assert camera_name("image") == "image" and camera_name("cam0/image_raw") == "cam0"
    assert camera_name("/usb_cam/color") == "usb_cam/color"
    assert output_namespaces(["/front/image_raw"]) == ["~"]
    assert output_namespaces(["/a/image_raw", "/b/image/compressed"]) == ["~/a", "~/b"]
    with pytest.raises(Exception, match="both map to camera 'front'"):
        output_namespaces(["/front/image_raw", "/front/image_rect"])


def test_a_string_given_for_a_string_array_becomes_a_list():
    """`-p vocabulary:=coco` and `ros2 param set /sfs_node vocabulary coco` just work."""
    convert_ = SfsNode._string_to_array
    given = convert_(Parameter("vocabulary", Parameter.Type.STRING, "coco"))
    assert (given.type_, given.value) == (Parameter.Type.STRING_ARRAY, ["coco"])
    empty = convert_(Parameter("image_topics", Parameter.Type.BYTE_ARRAY, []))
    assert (empty.type_, list(empty.value)) == (Parameter.Type.STRING_ARRAY, [])
    other = Parameter("model", Parameter.Type.STRING, "FastSAM-x")
    assert convert_(other) is other


# ---------------------------------------------------------------------- in-process fixture
class Harness:
    """The node under test, a test node, their executor, and inboxes for every output."""

    def __init__(self, picture):
        self.picture = picture
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        overrides = dict(MODEL_PARAMS, input_reliability="reliable",
                         image_topics=["cam0/image_raw", "cam1/image/compressed", "cam2/image"])
        self.node = SfsNode(
            namespace=NS, context=self.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
        )
        self.tester = rclpy.create_node("sfs_tester", namespace=NS, context=self.context)
        self.executor = SfsExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.tester)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        t = self.tester
        self.pub_raw = t.create_publisher(Image, f"{NS}/cam0/image_raw", RELIABLE)
        self.pub_jpeg = t.create_publisher(CompressedImage, f"{NS}/cam1/image/compressed", RELIABLE)
        self.out = {}
        for cam in ("cam0", "cam1"):
            for name, msg_type in (("label_image", Image), ("instance_image", Image),
                                   ("overlay", Image), ("instances", InstanceArray)):
                self.out[cam, name] = Inbox(t, msg_type, f"{NODE}/{cam}/{name}")
        self.label_info = Inbox(t, LabelInfo, f"{NODE}/label_info", LATCHED)
        self.diagnostics = Inbox(t, DiagnosticArray, "/diagnostics")

    def start(self):
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        for pub in (self.pub_raw, self.pub_jpeg):
            wait_until(lambda pub=pub: pub.get_subscription_count() >= 1, 10, f"{pub.topic_name} matched")
        for cam in ("cam0", "cam1"):  # and the reader side, or the first samples may be dropped
            wait_until(lambda cam=cam: self.camera(cam).subscription.get_publisher_count() >= 1, 10,
                       f"{cam} subscription matched")
        for inbox in self.out.values():
            wait_until(lambda inbox=inbox: self.tester.count_publishers(inbox.topic) >= 1, 10,
                       f"a publisher on {inbox.topic}")
            cam = self.camera(inbox.topic.split("/")[-2])
            wait_until(lambda cam=cam, name=inbox.topic.split("/")[-1]:
                       cam.publishers[name].get_subscription_count() >= 1, 10, f"{inbox.topic} matched")

    def camera(self, name):
        return next(c for c in self.node._cameras if c.name == name)

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.tester.destroy_node()
        self.context.try_shutdown()
        self.thread.join(2.0)


@pytest.fixture(scope="module")
def ros(photo):
    picture = np.ascontiguousarray(photo[80:320, 120:440])  # 240 x 320
    harness = Harness(picture)
    try:
        harness.start()
        yield harness
    finally:
        harness.close()


# ---------------------------------------------------------------------- in-process tests
def test_image_in_outputs_out_with_the_input_header(ros):
    stamp = new_stamp()
    ros.pub_raw.publish(rgb_image(ros.picture, stamp, frame_id="cam0_optical"))
    h, w = ros.picture.shape[:2]
    label = ros.out["cam0", "label_image"].with_stamp(stamp)
    instance = ros.out["cam0", "instance_image"].with_stamp(stamp)
    overlay = ros.out["cam0", "overlay"].with_stamp(stamp)
    instances = ros.out["cam0", "instances"].with_stamp(stamp)
    for msg, encoding in ((label, "mono16"), (instance, "mono16"), (overlay, "rgb8")):
        assert msg.header.frame_id == "cam0_optical"
        assert (msg.encoding, msg.height, msg.width) == (encoding, h, w)
        assert len(msg.data) == msg.step * msg.height
    assert instances.header.frame_id == "cam0_optical"
    assert (instances.height, instances.width, instances.random_weights) == (h, w, True)
    labels = np.frombuffer(label.data, np.uint16).reshape(h, w)
    ids = np.frombuffer(instance.data, np.uint16).reshape(h, w)
    assert set(np.unique(labels)) <= {0, 1, 2, 65535}
    assert 1 <= len(instances.instances) <= 4
    assert set(np.unique(ids)) - {0} <= {i.instance_id for i in instances.instances}
    names = {v.split(",")[0] for v in VOCAB}
    for inst in instances.instances:
        assert inst.class_name in names  # threshold 0: every mask named
        assert inst.mask.encoding == "mono8" and inst.mask.width == inst.box.width
        assert inst.mask.header.stamp == stamp
    # the latched label info, received although the subscription came after activation
    info = ros.label_info.wait_for(lambda m: True, 10)
    assert [c.name for c in info.classes] == ["cup", "table", "floor"]
    assert info.unlabeled_value == 65535 and info.random_weights


def test_compressed_camera_gets_its_own_outputs(ros):
    stamp = new_stamp()
    ros.pub_jpeg.publish(jpeg_image(ros.picture, stamp))
    label = ros.out["cam1", "label_image"].with_stamp(stamp)
    assert (label.height, label.width, label.header.frame_id) == (240, 320, "cam1_optical")
    ros.out["cam1", "overlay"].with_stamp(stamp)
    assert not [m for m in ros.out["cam0", "label_image"].messages if m.header.stamp == stamp]


def test_bad_images_are_counted_and_the_next_frame_is_answered(ros):
    cam = ros.camera("cam0")
    before = cam.bad_inputs
    depth = Image(header=Header(stamp=new_stamp()), height=4, width=4, encoding="16UC1", step=8,
                  data=array.array("B", bytes(32)))
    truncated = rgb_image(ros.picture, new_stamp())
    truncated.data = truncated.data[:1000]
    ros.pub_raw.publish(depth)  # the input queue keeps the latest message only: one at a time
    wait_until(lambda: cam.bad_inputs >= before + 1, 10, "the depth image counted")
    assert "unsupported encoding '16UC1'" in cam.last_bad_reason
    ros.pub_raw.publish(truncated)
    wait_until(lambda: cam.bad_inputs >= before + 2, 10, "the truncated image counted")
    assert "data holds 1000 bytes" in cam.last_bad_reason
    stamp = new_stamp()
    ros.pub_raw.publish(rgb_image(ros.picture, stamp, encoding="bgr8"))
    ros.out["cam0", "label_image"].with_stamp(stamp)
    assert ros.node._state_machine.current_state[1] == "active"


def test_runtime_vocabulary_change(ros):
    node, inbox = ros.node, ros.label_info
    [result] = node.set_parameters([Parameter("vocabulary", value=["bottle", "desk, table"])])
    assert result.successful, result.reason
    inbox.wait_for(lambda m: [c.name for c in m.classes] == ["bottle", "desk"], 30, "after the change")
    assert node.wait_vocabulary(30)

    # refused with a reason; the old vocabulary stays
    for bad, words in (([], "vocabulary is empty"), (["cup", ""], "empty class name"),
                       (["cup", "CUP"], "duplicate class name")):
        [result] = node.set_parameters([Parameter("vocabulary", Parameter.Type.STRING_ARRAY, bad)])
        assert not result.successful and words in result.reason, result.reason
    # what `ros2 param set /sfs_node vocabulary "[]"` sends: an empty array of no string type
    [result] = node.set_parameters([Parameter("vocabulary", Parameter.Type.BYTE_ARRAY, [])])
    assert not result.successful and "vocabulary is empty" in result.reason
    [result] = node.set_parameters([Parameter("imgsz", value=640)])
    assert not result.successful and "read-only" in result.reason
    assert list(node.get_parameter("vocabulary").value) == ["bottle", "desk, table"]
    assert node._labeler.bank.vocabulary.names == ("bottle", "desk")

    # a frame submitted after the swap is named with the new classes only
    stamp = new_stamp()
    ros.pub_raw.publish(rgb_image(ros.picture, stamp))
    instances = ros.out["cam0", "instances"].with_stamp(stamp)
    assert instances.instances and {i.class_name for i in instances.instances} <= {"bottle", "desk"}

    # prompt templates: re-encoded and swapped the same way; the threshold shows in LabelInfo
    results = node.set_parameters([Parameter("vocabulary", value=VOCAB),
                                   Parameter("prompt_templates", value=["a picture of a {}."])])
    assert all(r.successful for r in results)
    assert node.wait_vocabulary(30)
    inbox.wait_for(lambda m: len(m.classes) == 3, 30)
    assert node._labeler.bank.templates == ("a picture of a {}.",)
    [result] = node.set_parameters([Parameter("prompt_templates", value=["no placeholder"])])
    assert not result.successful and "must contain '{}'" in result.reason
    [result] = node.set_parameters([Parameter("score_threshold", value=0.25)])
    assert result.successful
    inbox.wait_for(lambda m: m.threshold == pytest.approx(0.25), 10, "with the new threshold")
    assert node._labeler.threshold == 0.25
    node.set_parameters([Parameter("score_threshold", value=0.0)])


def test_runtime_output_switches(ros):
    node = ros.node
    results = node.set_parameters([Parameter("publish_overlay", value=False),
                                   Parameter("publish_instances", value=False)])
    assert all(r.successful for r in results)
    try:
        stamp = new_stamp()
        ros.pub_raw.publish(rgb_image(ros.picture, stamp))
        ros.out["cam0", "label_image"].with_stamp(stamp)
        time.sleep(0.5)
        for name in ("overlay", "instances"):
            assert not [m for m in ros.out["cam0", name].messages if m.header.stamp == stamp]
    finally:
        node.set_parameters([Parameter("publish_overlay", value=True),
                             Parameter("publish_instances", value=True)])
    [result] = node.set_parameters([Parameter("overlay_alpha", value=1.5)])
    assert not result.successful


def test_diagnostics_per_camera(ros):
    cam = ros.camera("cam0")
    bad_before = cam.bad_inputs
    ros.pub_raw.publish(Image(header=Header(stamp=new_stamp()), height=2, width=2, encoding="16UC1",
                              step=4, data=array.array("B", bytes(8))))
    wait_until(lambda: cam.bad_inputs > bad_before, 10, "the bad input counted")
    stamp = new_stamp()
    ros.pub_raw.publish(rgb_image(ros.picture, stamp))
    ros.out["cam0", "label_image"].with_stamp(stamp)
    status, values = diagnostics_for(
        ros.diagnostics, NODE, "cam0",
        lambda s, v: int(v["frames processed"]) >= 1 and int(v["bad inputs"]) > bad_before,
    )
    assert values["state"] == "active" and values["input topic"] == f"{NS}/cam0/image_raw"
    assert "16UC1" in values["last bad input"]
    assert values["random weights"] == "true" and status.level >= DiagnosticStatus.WARN
    assert values["vocabulary size"] == "3" and values["device"] == "cpu"
    assert values["publishers on input"] == "1" and values["publishers matched"] == "1"
    assert float(values["total latency p50 (ms)"]) > 0
    assert float(values["segment latency p95 (ms)"]) >= float(values["segment latency p50 (ms)"])
    for key in ("input rate (Hz)", "output rate (Hz)", "frames dropped", "errors"):
        float(values[key])
    _, cam1 = diagnostics_for(ros.diagnostics, NODE, "cam1")
    assert cam1["input type"] == "sensor_msgs/CompressedImage"
    assert cam1["input topic"] == f"{NS}/cam1/image/compressed"


def test_publisher_with_incompatible_qos_is_reported(ros):
    """The node subscribes reliable; a best-effort camera never matches: say so."""
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    quiet = PublisherEventCallbacks(incompatible_qos=lambda event: None)
    pub = ros.tester.create_publisher(Image, f"{NS}/cam2/image", best_effort, event_callbacks=quiet)
    try:
        cam = ros.camera("cam2")
        wait_until(lambda: cam.incompatible_qos >= 1, 10, "an incompatible-QoS event")
        pub.publish(rgb_image(ros.picture, new_stamp()))
        status, values = diagnostics_for(
            ros.diagnostics, NODE, "cam2", lambda s, v: "no frame" in s.message, timeout=15
        )
        assert status.level == DiagnosticStatus.WARN
        assert "input_reliability:=best_effort" in status.message
        assert values["publishers on input"] == "1" and values["frames received"] == "0"
    finally:
        ros.tester.destroy_publisher(pub)


def test_deactivate_and_activate_again(ros):
    node = ros.node
    topic = f"{NS}/cam0/image_raw"
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    wait_until(lambda: ros.tester.count_subscribers(topic) == 0, 10, "the subscription to go")
    assert all(c.pipeline is None for c in node._cameras)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    wait_until(lambda: ros.pub_raw.get_subscription_count() >= 1, 10, "the subscription again")
    # discovery is matched on each side separately: a sample sent before the new reader knows
    # the writer is dropped, so wait for both directions
    wait_until(lambda: ros.camera("cam0").subscription.get_publisher_count() >= 1, 10,
               "the new subscription to see the publisher")
    stamp = new_stamp()
    ros.pub_raw.publish(rgb_image(ros.picture, stamp))
    ros.out["cam0", "label_image"].with_stamp(stamp)


def test_semantic_vote_mode_over_dds(photo):
    """labeling_mode semantic-vote: a real (random) SegFormer-B0 votes inside the masks; its label
    set (Cityscapes) is the LabelInfo, the semantic map fills what masks leave, and vocabulary
    changes are refused with a reason."""
    overrides = dict(MODEL_PARAMS, input_reliability="reliable", image_topics=["sem/image"],
                     labeling_mode="semantic-vote",
                     semantic_checkpoint="nvidia/segformer-b0-finetuned-cityscapes-512-1024")
    with running_node(NS, overrides, "sfs_semantic_tester", node_name="sfs_semantic",
                      threads=3) as (node, tester):
        pub = tester.create_publisher(Image, f"{NS}/sem/image", RELIABLE)
        labels = Inbox(tester, Image, f"{NS}/sfs_semantic/label_image")
        info = Inbox(tester, LabelInfo, f"{NS}/sfs_semantic/label_info", LATCHED)
        wait_until(lambda: pub.get_subscription_count() >= 1, 10, "the node subscribed")
        wait_until(lambda: tester.count_publishers(labels.topic) >= 1, 10, "a label publisher")
        names = [c.name for c in info.wait_for(lambda m: True, 20).classes]
        assert len(names) == 19 and names[:2] == ["road", "sidewalk"]
        picture = np.ascontiguousarray(photo[:120, :160])
        stamp = new_stamp()
        pub.publish(rgb_image(picture, stamp))
        msg = labels.with_stamp(stamp)
        values = np.frombuffer(msg.data, np.uint16).reshape(msg.height, msg.width)
        assert values.max() < 19  # every pixel named: masks by vote, the rest by the semantic map
        [result] = node.set_parameters([Parameter("vocabulary", value=["cup", "table"])])
        assert not result.successful and "checkpoint" in result.reason
