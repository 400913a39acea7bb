"""Faults against one running SfsNode over real DDS (loopback profile from conftest).

Bad input matrix: every refused Image/CompressedImage shape is counted with its reason, logged
once per period, and the next good frame is answered; every accepted encoding is answered.
Faults: an exception or CUDA out-of-memory inside a stage, an output subscriber that goes away
and comes back, a camera publisher that restarts. Last, 20 lifecycle cycles without leaking
threads or memory. Models: real FastSAM-s and CLIP ViT-B-32 architectures, random weights,
kept small (imgsz 160, 3 masks, dense labeling, 3 classes).
"""
from __future__ import annotations

import array
import threading
import time

import cv2
import numpy as np
import psutil
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ros_rig import RELIABLE, Inbox, diagnostics_for, new_stamp, running_node, wait_until
from sfs_ros.ros.diagnostics import MAX_TRACKED_PUBLISHERS, sequence_gap as _sequence_gap
from sfs_ros.ros.node import BAD_INPUT_LOG_PERIOD_S

NS = "/sfs_faults"
NODE = f"{NS}/sfs_node"
RAW, JPEG = f"{NS}/raw/image_raw", f"{NS}/jpeg/image/compressed"
PARAMS = {
    "random_weights": True, "device": "cpu", "imgsz": 160, "max_det": 3,
    "labeling_mode": "dense", "vocabulary": ["cup, mug", "table", "floor"], "score_threshold": 0.0,
    "input_reliability": "reliable", "image_topics": ["raw/image_raw", "jpeg/image/compressed"],
}
H, W = 96, 128
LIFECYCLE_CYCLES = 20
RSS_GROWTH_MB = 200

pytestmark = pytest.mark.timeout(600)


# ---------------------------------------------------------------------- pure function
def gid(n: int) -> dict:
    return {"implementation_identifier": "rmw_fastrtps_cpp", "data": bytes([n]) * 16}


def test_sequence_gap_counts_frames_that_never_reached_the_callback():
    seen: dict[bytes, int] = {}

    def gap(publisher, number):
        return _sequence_gap(seen, {"publisher_gid": gid(publisher), "publication_sequence_number": number})

    assert gap(1, 5) == 0  # first frame of a publisher: what came before is not ours to count
    assert gap(1, 6) == 0 and gap(1, 10) == 3  # 7, 8, 9 overwritten
    assert gap(2, 1) == 0 and gap(2, 3) == 1  # publishers are counted apart
    assert gap(1, 11) == 0
    assert gap(1, 2) == 0 and gap(1, 4) == 1  # numbers went back (a new count), then a gap
    assert _sequence_gap(seen, None) == 0  # a middleware without message info
    assert _sequence_gap(seen, {"publisher_gid": gid(3), "publication_sequence_number": None}) == 0
    for n in range(10, 10 + 3 * MAX_TRACKED_PUBLISHERS):  # bounded memory
        gap(n, 1)
    assert len(seen) == MAX_TRACKED_PUBLISHERS


# ---------------------------------------------------------------------- the running node
class Rig:
    def __init__(self, node, tester, picture):
        self.node, self.tester, self.picture = node, tester, picture
        self.raw_pub = tester.create_publisher(Image, RAW, RELIABLE)
        self.jpeg_pub = tester.create_publisher(CompressedImage, JPEG, RELIABLE)
        self.answers = {"raw": Inbox(tester, Image, f"{NODE}/raw/label_image"),
                        "jpeg": Inbox(tester, Image, f"{NODE}/jpeg/label_image")}
        self.diagnostics = Inbox(tester, DiagnosticArray, "/diagnostics")
        rosout_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.rosout = Inbox(tester, Log, "/rosout", rosout_qos)

    def camera(self, name):
        return next(c for c in self.node._cameras if c.name == name)

    def wait_matched(self):
        for name, pub in (("raw", self.raw_pub), ("jpeg", self.jpeg_pub)):
            cam = self.camera(name)
            wait_until(lambda pub=pub: pub.get_subscription_count() >= 1, 10, f"{name} input matched")
            wait_until(lambda cam=cam: cam.subscription.get_publisher_count() >= 1, 10,
                       f"{name} reader matched")
            wait_until(lambda cam=cam: cam.publishers["label_image"].get_subscription_count() >= 1,
                       10, f"{name} output matched")

    def publish(self, camera: str, msg):
        msg.header.stamp = new_stamp()
        (self.raw_pub if camera == "raw" else self.jpeg_pub).publish(msg)
        return msg.header.stamp

    def answered(self, camera: str, msg):
        """Publish a frame and wait for its label image."""
        return self.answers[camera].with_stamp(self.publish(camera, msg))

    def good(self, camera: str):
        return raw(self.picture) if camera == "raw" else compressed(self.picture, ".jpg", "jpeg")

    def refused(self, camera: str, msg, words: str):
        """Publish a bad frame: counted with its reason, then a good frame is still answered."""
        cam = self.camera(camera)
        before = cam.bad_inputs
        self.publish(camera, msg)
        wait_until(lambda: cam.bad_inputs == before + 1, 20, f"the bad frame counted ({words})")
        assert words in cam.last_bad_reason, cam.last_bad_reason
        self.answered(camera, self.good(camera))
        assert cam.bad_inputs == before + 1


def raw(pixels: np.ndarray, encoding: str = "rgb8", **fields) -> Image:
    """An Image of `pixels` (RGB) in `encoding`; `fields` overwrite height/width/step/data."""
    if encoding in ("bgr8", "bgra8"):
        pixels = pixels[:, :, ::-1]
    if encoding in ("rgba8", "bgra8"):
        pixels = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    if encoding == "mono8":
        pixels = pixels[:, :, 1]
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    msg = Image(header=Header(frame_id="cam"), height=h, width=w, encoding=encoding,
                step=pixels.strides[0], data=array.array("B", pixels.tobytes()))
    for name, value in fields.items():
        setattr(msg, name, array.array("B", value) if name == "data" else value)
    return msg


def compressed(pixels: np.ndarray, ext: str, fmt: str) -> CompressedImage:
    ok, data = cv2.imencode(ext, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=Header(frame_id="cam"), format=fmt, data=array.array("B", data.tobytes()))


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring width x height (CRC not checked before size)."""
    import struct
    import zlib

    body = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + body
            + struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF))


@pytest.fixture(scope="module")
def rig(photo):
    picture = np.ascontiguousarray(cv2.resize(photo, (W, H), interpolation=cv2.INTER_AREA))
    with running_node(NS, PARAMS, "faults_tester") as (node, tester):
        rig = Rig(node, tester, picture)
        rig.wait_matched()
        rig.answered("raw", raw(picture))  # warm-up
        yield rig


row = W * 3
RAW_REFUSED = {
    "16UC1 depth": (dict(encoding="16UC1", step=W * 2, data=bytes(W * 2 * H)), "unsupported encoding '16UC1'"),
    "32FC1 depth": (dict(encoding="32FC1", step=W * 4, data=bytes(W * 4 * H)), "unsupported encoding '32FC1'"),
    "yuv422": (dict(encoding="yuv422", step=W * 2, data=bytes(W * 2 * H)), "unsupported encoding 'yuv422'"),
    "bayer_rggb8": (dict(encoding="bayer_rggb8", step=W, data=bytes(W * H)), "unsupported encoding"),
    "unknown encoding": (dict(encoding="rgb9"), "unsupported encoding 'rgb9'"),
    "empty encoding": (dict(encoding=""), "unsupported encoding ''"),
    "step smaller than a row": (dict(step=row - 1), "step"),
    "step larger, data not": (dict(step=row + 64), "data holds"),
    "data shorter than step x height": (dict(data=bytes(row * H - 1)), "data holds"),
    "no data": (dict(data=b""), "data holds"),
    "zero width": (dict(width=0, step=0, data=b""), "empty image"),
    "zero height": (dict(height=0, data=b""), "empty image"),
    "100000 x 1": (dict(width=100_000, height=1, step=300_000, data=bytes(300_000)), "absurd size"),
    "1 x 100000": (dict(width=1, height=100_000, step=3, data=bytes(300_000)), "absurd size"),
    "30000 x 30000, tiny data": (dict(width=30_000, height=30_000, step=90_000, data=bytes(10)),
                                 "absurd size"),
}
COMPRESSED_REFUSED = {
    "empty jpeg": ("jpeg", b"", "empty compressed image"),
    "corrupt jpeg": ("jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2, "could not decode"),
    "random bytes as png": ("png", bytes(range(255, -1, -1)) * 4, "could not decode"),
    "png header only": ("png", png_header(W, H), "could not decode"),
    "png declaring 100000 x 100000": ("png", png_header(100_000, 100_000), "absurd size"),
    "unknown format h264": ("h264", b"\x00\x00\x00\x01\x67\x42", "unsupported format 'h264'"),
    "compressedDepth": ("16UC1; compressedDepth png", png_header(W, H), "compressed depth image"),
}


@pytest.mark.parametrize("case", list(RAW_REFUSED))
def test_refused_image_is_counted_and_the_next_frame_answered(rig, case):
    fields, words = RAW_REFUSED[case]
    rig.refused("raw", raw(rig.picture, **fields), words)


@pytest.mark.parametrize("case", list(COMPRESSED_REFUSED))
def test_refused_compressed_image_is_counted_and_the_next_frame_answered(rig, case):
    fmt, data, words = COMPRESSED_REFUSED[case]
    msg = CompressedImage(header=Header(frame_id="cam"), format=fmt, data=array.array("B", data))
    if case == "corrupt jpeg":  # a real JPEG with its entropy-coded data overwritten
        good = compressed(rig.picture, ".jpg", "jpeg").data
        msg.data = array.array("B", bytes(good[:200]) + bytes(len(good) - 200))
        words = ""  # libjpeg may decode grey garbage or give up: either way no exception escapes
        cam = rig.camera("jpeg")
        before = (cam.bad_inputs, cam.stats().frames_in)
        rig.publish("jpeg", msg)
        wait_until(lambda: (cam.bad_inputs, cam.stats().frames_in) != before, 20, "the frame taken")
        rig.answered("jpeg", rig.good("jpeg"))
        return
    rig.refused("jpeg", msg, words)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "rgb8 padded"])
def test_accepted_encoding_is_answered_at_full_size(rig, encoding):
    msg = raw(rig.picture, encoding.split()[0])
    if encoding.endswith("padded"):  # 13 bytes of padding per row, as some drivers align rows
        padded = np.zeros((H, row + 13), np.uint8)
        padded[:, :row] = rig.picture.reshape(H, row)
        msg.step, msg.data = row + 13, array.array("B", padded.tobytes())
    label = rig.answered("raw", msg)
    assert (label.height, label.width, label.encoding) == (H, W, "mono16")


@pytest.mark.parametrize("fmt, ext", [("jpeg", ".jpg"), ("png", ".png"),
                                      ("rgb8; jpeg compressed bgr8", ".jpg"), ("", ".png")])
def test_accepted_compressed_format_is_answered(rig, fmt, ext):
    label = rig.answered("jpeg", compressed(rig.picture, ext, fmt))
    assert (label.height, label.width) == (H, W)


def test_bad_inputs_are_logged_once_per_period_and_counted_by_reason(rig):
    cam = rig.camera("raw")
    time.sleep(BAD_INPUT_LOG_PERIOD_S + 0.5)  # let the previous throttle window close
    start = len(rig.rosout.messages)
    before = cam.bad_inputs
    t0 = time.monotonic()
    for k in range(5):
        rig.publish("raw", raw(rig.picture, encoding="16UC1", step=W * 2, data=bytes(W * 2 * H)))
        wait_until(lambda k=k: cam.bad_inputs == before + k + 1, 10, "the bad frame counted")
    assert time.monotonic() - t0 < BAD_INPUT_LOG_PERIOD_S, "too slow to test the throttle"
    rig.answered("raw", raw(rig.picture))  # the log line has certainly been sent by now
    lines = [m for m in rig.rosout.messages[start:]
             if m.name.endswith("sfs_node") and "ignoring an image" in m.msg]
    assert len(lines) == 1, [m.msg for m in lines]
    assert "unsupported encoding '16UC1'" in lines[0].msg and lines[0].level == Log.WARN
    status, values = diagnostics_for(
        rig.diagnostics, NODE, "raw", lambda s, v: int(v["bad inputs"]) == cam.bad_inputs)
    by_reason = dict(item.split(": ") for item in values["bad inputs by reason"].split(", "))
    assert int(by_reason["unsupported encoding"]) >= 5 + 5  # 5 here, 5 in the matrix
    assert sum(map(int, by_reason.values())) == cam.bad_inputs
    assert values["state"] == "active"


# ---------------------------------------------------------------------- parameters at runtime
RUNTIME_REFUSED = [  # (name, type, value, words in the reason)
    ("vocabulary", "STRING_ARRAY", [], "vocabulary is empty"),
    ("vocabulary", "STRING_ARRAY", ["cup", "table", "CUP"], "duplicate class name"),
    ("vocabulary", "STRING_ARRAY", ["missing/classes.txt"], "not found"),
    ("prompt_templates", "STRING_ARRAY", ["a photo of {0.__class__}"], "must contain '{}'"),
    ("prompt_templates", "STRING_ARRAY", ["{} {!r}"], "must contain '{}'"),
    ("score_threshold", "DOUBLE", 1.5, ""),
    ("score_threshold", "STRING", "high", ""),
    ("overlay_alpha", "DOUBLE", -0.1, ""),
    ("imgsz", "INTEGER", 100, "read-only"),
    ("conf", "DOUBLE", 2.0, "read-only"),
    ("iou", "DOUBLE", -1.0, "read-only"),
    ("device", "STRING", "cuda:7", "read-only"),
    ("model", "STRING", "FastSAM-q", "read-only"),
]


def test_bad_runtime_parameters_are_refused_over_the_service_and_old_values_kept(rig):
    """What `ros2 param set` does: the parameter services of the running node, from another node."""
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.parameter import Parameter

    def call(service, suffix, request):
        client = rig.tester.create_client(service, f"{NODE}/{suffix}")
        try:
            assert client.wait_for_service(timeout_sec=10)
            future = client.call_async(request)
            wait_until(future.done, 10, f"the {suffix} answer")
            return future.result()
        finally:
            rig.tester.destroy_client(client)

    names = sorted({name for name, *_ in RUNTIME_REFUSED})
    before = call(GetParameters, "get_parameters", GetParameters.Request(names=names)).values
    for name, type_name, value, words in RUNTIME_REFUSED:
        parameter = Parameter(name, getattr(Parameter.Type, type_name), value)
        [result] = call(SetParameters, "set_parameters", SetParameters.Request(
            parameters=[parameter.to_parameter_msg()])).results
        assert not result.successful, (name, value)
        assert result.reason and words in result.reason, (name, value, result.reason)
    after = call(GetParameters, "get_parameters", GetParameters.Request(names=names)).values
    assert after == before
    assert rig.node._labeler.bank.vocabulary.names == ("cup", "table", "floor")
    rig.answered("raw", raw(rig.picture))


# ---------------------------------------------------------------------- faults inside stages
@pytest.mark.parametrize("stage, error", [
    ("segment", RuntimeError("injected segmenter fault")),
    ("label", ValueError("injected labeler fault")),
    ("segment", torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")),
])
def test_a_stage_failing_for_one_frame_is_counted_and_the_next_is_answered(rig, stage, error):
    """A test-only fault: the stage's method raises once (set on the model instance the
    pipeline calls), then behaves again."""
    cam = rig.camera("raw")
    model = rig.node._segmenter if stage == "segment" else rig.node._labeler
    original = getattr(model, stage)
    calls = []

    def fail_once(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise error
        return original(*args, **kwargs)

    errors = cam.stats().errors
    setattr(model, stage, fail_once)
    try:
        stamp = rig.publish("raw", raw(rig.picture))
        wait_until(lambda: cam.stats().errors == errors + 1, 20, "the failed frame counted")
        assert not [m for m in rig.answers["raw"].messages if m.header.stamp == stamp]
        rig.answered("raw", raw(rig.picture))
    finally:
        delattr(model, stage)  # back to the class's method
    assert rig.node._state_machine.current_state[1] == "active"
    _, values = diagnostics_for(rig.diagnostics, NODE, "raw",
                                lambda s, v: int(v["errors"]) == errors + 1)


# ---------------------------------------------------------------------- graph changes
def test_output_subscriber_goes_away_and_comes_back(rig):
    cam = rig.camera("raw")
    topic = f"{NODE}/raw/label_image"
    rig.tester.destroy_subscription(rig.answers["raw"].sub)
    wait_until(lambda: cam.publishers["label_image"].get_subscription_count() == 0, 10,
               "the subscriber gone")
    published = cam.published
    rig.publish("raw", raw(rig.picture))  # answered to nobody: published all the same
    wait_until(lambda: cam.published == published + 1, 20, "a result published to nobody")
    rig.answers["raw"] = Inbox(rig.tester, Image, topic)
    wait_until(lambda: cam.publishers["label_image"].get_subscription_count() == 1, 10,
               "the subscriber back")
    rig.answered("raw", raw(rig.picture))


def test_camera_publisher_restarts(rig):
    cam = rig.camera("raw")
    rig.tester.destroy_publisher(rig.raw_pub)
    wait_until(lambda: cam.subscription.get_publisher_count() == 0, 10, "the camera gone")
    skipped = cam.skipped
    rig.raw_pub = rig.tester.create_publisher(Image, RAW, RELIABLE)  # a new writer: new gid, seq 1
    rig.wait_matched()
    for _ in range(2):
        rig.answered("raw", raw(rig.picture))
    assert cam.skipped == skipped, "a restarted camera is not a gap"
    _, values = diagnostics_for(rig.diagnostics, NODE, "raw",
                                lambda s, v: v["publishers on input"] == "1")
    assert values["state"] == "active"


# ---------------------------------------------------------------------- lifecycle (last)
def sfs_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("sfs-"))


def test_lifecycle_cycles_leak_no_threads_or_memory(rig):
    """configure/activate/deactivate/cleanup 20 times: the same threads after every cycle, RSS
    flat after the first few (allocator warm-up), and the node answers at the end."""
    node, process = rig.node, psutil.Process()
    active_threads = sfs_threads()
    assert any(name.startswith("sfs-segment") for name in active_threads), active_threads
    rss = []
    for cycle in range(LIFECYCLE_CYCLES):
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node._segmenter is None and node._labeler is None and not node._cameras
        assert not any(t.startswith(("sfs-segment", "sfs-label")) for t in sfs_threads())
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert sfs_threads() == active_threads, f"cycle {cycle}"
        rss.append(process.memory_info().rss / 2**20)
    print(f"\nlifecycle: RSS after each cycle (MB): {', '.join(f'{r:.0f}' for r in rss)}")
    assert max(rss[3:]) - rss[3] < RSS_GROWTH_MB, rss
    rig.wait_matched()
    rig.answered("raw", raw(rig.picture))
    rig.answered("jpeg", rig.good("jpeg"))
