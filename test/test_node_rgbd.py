"""The node with depth over real DDS: three publishers per camera (colour, depth, camera_info),
one camera with compressed colour, the trained shapes models (real masks), and a depth world
with known answers: a plane at 2.0 m and every object at 1.5 m. Checks the cloud and markers
arrive with the input stamp in the depth frame, that arrival order does not matter, and that
missing or bad depth input is counted while the 2D outputs keep coming."""
from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from ros_rig import RELIABLE, Inbox, diagnostics_for, jpeg_image, new_stamp, rgb_image, running_node, wait_until
from sfs_ros.msg import InstanceArray
from sfs_ros.ros.cloud import from_cloud
from sfs_ros.synth import known_answer
from sfs_ros.synth.shapes import make_scene

pytestmark = pytest.mark.skipif(bool(known_answer.missing(semantic=False)),
                                reason="models/shapes not on disk")
NS = "/sfs_rgbd"
NODE = f"{NS}/sfs_node"
SIZE = 320
K = [300.0, 0.0, 159.5, 0.0, 300.0, 159.5, 0.0, 0.0, 1.0]
TOPICS = {  # camera -> colour, depth (its camera_info is the sibling)
    "a": ("/rgbd_a/image", "/rgbd_a/depth/image"),
    "b": ("/rgbd_b/image/compressed", "/rgbd_b/depth/image"),
    "c": ("/rgbd_c/image", "/rgbd_c/depth/image"),
}


def _params() -> dict:
    values = known_answer.options("crop", imgsz=SIZE)
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    values.update(image_topics=[c for c, _ in TOPICS.values()],
                  depth_topics=[d for _, d in TOPICS.values()], sync_slop=0.01)
    return values


class Rig:
    def __init__(self, node, tester):
        self.node, self.tester = node, tester
        self.scene = make_scene(7, 0, (SIZE, SIZE))
        self.pub, self.out = {}, {}
        for cam, (colour, depth) in TOPICS.items():
            colour_type = CompressedImage if colour.endswith("compressed") else Image
            self.pub[cam] = (tester.create_publisher(colour_type, colour, RELIABLE),
                             tester.create_publisher(Image, depth, RELIABLE),
                             tester.create_publisher(CameraInfo, depth.rsplit("/", 1)[0] + "/camera_info",
                                                     RELIABLE))
            for name, msg_type in (("points", PointCloud2), ("markers", MarkerArray),
                                   ("label_image", Image), ("instances", InstanceArray)):
                self.out[cam, name] = Inbox(tester, msg_type, f"{NODE}/rgbd_{cam}/{name}")
        self.diag = Inbox(tester, DiagnosticArray, "/diagnostics")
        for cam in TOPICS:
            for pub in self.pub[cam]:
                wait_until(lambda: pub.get_subscription_count() > 0, 20, f"{pub.topic_name} matched")
            for name in ("points", "markers", "label_image", "instances"):
                inbox = self.out[cam, name]
                wait_until(lambda: inbox.sub.get_publisher_count() > 0, 20, f"{inbox.topic} matched")

    def depth_metres(self) -> np.ndarray:
        return np.where(self.scene.instances > 0, 1.5, 2.0).astype(np.float32)

    def send_colour(self, cam, stamp):
        msg = (jpeg_image(self.scene.image, stamp) if cam == "b"
               else rgb_image(self.scene.image, stamp, frame_id=f"{cam}_colour"))
        self.pub[cam][0].publish(msg)

    def send_depth(self, cam, stamp, encoding="16UC1"):
        metres = self.depth_metres()
        pixels = (np.rint(metres * 1000).astype(np.uint16) if encoding == "16UC1"
                  else metres if encoding == "32FC1" else metres.astype(np.uint8))
        self.pub[cam][1].publish(Image(
            header=Header(stamp=stamp, frame_id=f"{cam}_depth_optical"), height=SIZE, width=SIZE,
            encoding=encoding, step=SIZE * pixels.itemsize, data=pixels.tobytes()))

    def link(self, cam):
        return self.node._cameras["abc".index(cam)].depth

    def send_depth_and_wait(self, cam, stamp, encoding="16UC1"):
        """Depth, taken by the node before anything else is sent (topics are not ordered)."""
        seen = self.link(cam).pairer.depth_seen
        self.send_depth(cam, stamp, encoding)
        wait_until(lambda: self.link(cam).pairer.depth_seen > seen, 10, f"depth on {cam} taken")

    def send_info(self, cam, k=K):
        self.pub[cam][2].publish(CameraInfo(header=Header(frame_id=f"{cam}_depth_optical"),
                                            width=SIZE, height=SIZE, k=list(k)))


@pytest.fixture(scope="module")
def rig():
    with running_node(NS, _params(), "rgbd_tester") as (node, tester):
        yield Rig(node, tester)


def _markers(rig, cam, stamp):
    """The MarkerArray (no header of its own) whose markers carry `stamp`."""
    key = (stamp.sec, stamp.nanosec)
    return rig.out[cam, "markers"].wait_for(
        lambda m: (m.markers[0].header.stamp.sec, m.markers[0].header.stamp.nanosec) == key,
        what="with the input stamp").markers


def _check_cloud(rig, msg, cam):
    assert msg.header.frame_id == f"{cam}_depth_optical"
    pts = from_cloud(msg)
    assert pts.size == SIZE * SIZE  # every pixel has valid depth
    u = np.rint(pts["x"] / pts["z"] * K[0] + K[2]).astype(int)
    v = np.rint(pts["y"] / pts["z"] * K[4] + K[5]).astype(int)
    np.testing.assert_allclose(pts["z"], rig.depth_metres()[v, u], atol=1e-3)
    assert (pts["instance"] > 0).any() and (pts["label"] != 65535).any()


def _depth_then_colour_gives_a_cloud(rig) -> object:
    """Camera a: camera_info, then depth, then colour of one new stamp; the cloud of that stamp
    is checked. Returns the stamp."""
    stamp = new_stamp()
    rig.send_info("a")
    wait_until(lambda: rig.link("a").info is not None, 10, "camera_info taken")
    rig.send_depth_and_wait("a", stamp)
    rig.send_colour("a", stamp)
    _check_cloud(rig, rig.out["a", "points"].with_stamp(stamp), "a")
    return stamp


def test_depth_first_then_colour_gives_cloud_markers_and_3d_instances(rig):
    stamp = _depth_then_colour_gives_a_cloud(rig)
    markers = _markers(rig, "a", stamp)
    assert markers[0].action == Marker.DELETEALL
    boxes = [m for m in markers if m.type == Marker.CUBE]
    assert boxes and all(m.header.frame_id == "a_depth_optical" for m in boxes)
    # objects lie at 1.5 m: their boxes centre there (robust to the plane behind the edges)
    assert all(abs(m.pose.position.z - 1.5) < 0.05 for m in boxes)
    instances = rig.out["a", "instances"].with_stamp(stamp).instances
    assert any(i.point_count > 0 and abs(i.centroid.z - 1.5) < 0.05 for i in instances)


def test_compressed_colour_first_then_32fc1_depth_pairs_within_slop(rig):
    stamp, later = new_stamp(), new_stamp()
    later.sec, later.nanosec = stamp.sec, stamp.nanosec + 5_000_000  # 5 ms later: within slop
    rig.send_info("b")
    wait_until(lambda: rig.link("b").info is not None, 10, "camera_info taken")
    rig.send_depth_and_wait("b", new_stamp(), "32FC1")  # depth flows (this one pairs with nothing)
    rig.send_colour("b", stamp)
    wait_until(lambda: rig.link("b").pairer.waiting == 1, 10, "the colour frame waiting for depth")
    rig.send_depth("b", later, "32FC1")
    _check_cloud(rig, rig.out["b", "points"].with_stamp(stamp), "b")
    _markers(rig, "b", stamp)


def test_missing_or_bad_depth_is_counted_and_2d_outputs_keep_coming(rig):
    # camera c: no camera_info yet -> 2D only, reason no_camera_info
    stamp = new_stamp()
    rig.send_depth_and_wait("c", stamp)
    rig.send_colour("c", stamp)
    rig.out["c", "label_image"].with_stamp(stamp)
    # an all-zero K, then an unsupported depth encoding: each 2D only, each counted
    rig.send_info("c", k=[0.0] * 9)
    wait_until(lambda: rig.link("c").info is not None, 10, "camera_info taken")
    for encoding in ("16UC1", "8UC1"):
        stamp = new_stamp()
        rig.send_depth_and_wait("c", stamp, encoding)
        rig.send_colour("c", stamp)
        rig.out["c", "label_image"].with_stamp(stamp)
    # colour whose depth never comes: released when newer depth arrives, 2D still served
    lonely, newer = new_stamp(), new_stamp()
    rig.send_colour("c", lonely)
    rig.send_depth("c", newer)
    rig.out["c", "label_image"].with_stamp(lonely)
    assert not rig.out["c", "points"].messages  # no cloud from any of them

    def counted(status, values):
        text = values.get("frames without depth by reason", "")
        return all(f"{k}: " in text for k in ("no_camera_info", "k_zero", "depth_encoding",
                                               "depth_unpaired"))

    _, values = diagnostics_for(rig.diag, NODE, "rgbd_c", counted)
    assert values["point clouds published"] == "0"
    _, values = diagnostics_for(rig.diag, NODE, "rgbd_a", lambda s, v: True)
    assert int(values["point clouds published"]) >= 1
    assert values["geometry latency p50 (ms)"] != "n/a"


def test_depth_subscriptions_come_back_after_deactivate_and_activate(rig):
    from rclpy.lifecycle import TransitionCallbackReturn

    assert rig.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert rig.link("a").subscriptions == []
    assert rig.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    for pub in rig.pub["a"]:
        wait_until(lambda: pub.get_subscription_count() > 0, 20, f"{pub.topic_name} matched again")
    _depth_then_colour_gives_a_cloud(rig)
