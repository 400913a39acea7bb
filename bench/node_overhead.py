"""Latency the ROS node adds over bare pipeline calls, measured in one run (CPU or GPU).

    FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_localhost.xml ROS_DOMAIN_ID=87 \\
        .venv/bin/python bench/node_overhead.py [--frames 8] [--max-det 10] [--labeling crop]

Bare: `Pipeline.process(frame)` on the node's own models. Node: a 640x480 rgb8 Image published
over DDS (loopback, reliable) to sfs_node in this process, one frame at a time (no queueing),
timed until its label image comes back. Random weights unless weights are on disk.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_localhost.xml"))
os.environ.setdefault("ROS_DOMAIN_ID", "87")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sfs_ros.core.frame import Frame  # noqa: E402
from sfs_ros.core.pipeline import Pipeline  # noqa: E402
from sfs_ros.ros import convert  # noqa: E402
from sfs_ros.ros.executor import SfsExecutor  # noqa: E402
from sfs_ros.ros.node import SfsNode  # noqa: E402


def active_node(overrides: list[Parameter], tester_name: str) -> tuple[SfsNode, object, SfsExecutor]:
    """An SfsNode with these parameters, configured and active, and a plain tester node, both
    spun by one executor thread (call rclpy.init() first; the caller shuts the executor down
    and destroys the node)."""
    node = SfsNode(parameter_overrides=overrides)
    tester = rclpy.create_node(tester_name)
    executor = SfsExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(tester)
    threading.Thread(target=executor.spin, daemon=True).start()
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return node, tester, executor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-det", type=int, default=10)
    parser.add_argument("--labeling", default="crop")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    rclpy.init()
    node, tester, executor = active_node([
        Parameter("allow_random_fallback", value=True), Parameter("device", value=args.device),
        Parameter("max_det", value=args.max_det), Parameter("conf", value=0.0),
        Parameter("labeling_mode", value=args.labeling), Parameter("vocabulary", value=["cityscapes"]),
        Parameter("input_reliability", value="reliable"), Parameter("image_topics", value=["image"]),
    ], "bench_tester")

    image = cv2.resize(skimage.data.astronaut(), (640, 480))
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    arrived: dict[int, float] = {}
    done = threading.Condition()

    def on_label(msg: Image) -> None:
        with done:
            arrived[msg.header.stamp.sec] = time.perf_counter()
            done.notify_all()

    pub = tester.create_publisher(Image, "image", reliable)
    tester.create_subscription(Image, "sfs_node/label_image", on_label, reliable)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (pub.get_subscription_count() < 1
                                           or node._cameras[0].subscription.get_publisher_count() < 1):
        time.sleep(0.05)

    bare_pipe = Pipeline(node._segmenter, node._labeler, lambda r: None)
    bare, through_node = [], []
    for i in range(args.frames + 1):  # frame 0 warms both paths up
        t0 = time.perf_counter()
        bare_pipe.process(Frame(image))
        bare.append(time.perf_counter() - t0)
        msg = convert.numpy_to_image(image, "rgb8", Header(frame_id="bench"))
        msg.header.stamp.sec = 1000 + i
        t0 = time.perf_counter()
        pub.publish(msg)
        with done:
            assert done.wait_for(lambda: 1000 + i in arrived, 120), "no label image came back"
        through_node.append(arrived[1000 + i] - t0)
    bare, through_node = bare[1:], through_node[1:]
    random = node._segmenter.random_weights or node._labeler.random_weights
    executor.shutdown(timeout_sec=2)
    node.destroy_node()
    rclpy.try_shutdown()

    b, n = statistics.median(bare), statistics.median(through_node)
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, device {args.device}, torch "
          f"{torch.__version__}, {args.frames} frames 640x480 rgb8, labeling {args.labeling}, "
          f"max_det {args.max_det}, random weights: {random}\n")
    print("| path | median ms | p95 ms |")
    print("|---|---|---|")
    print(f"| bare Pipeline.process | {1e3 * b:.0f} | {1e3 * float(np.percentile(bare, 95)):.0f} |")
    print(f"| sfs_node over DDS (publish -> label image) | {1e3 * n:.0f} | "
          f"{1e3 * float(np.percentile(through_node, 95)):.0f} |")
    print(f"| **node / bare** | **{n / b:.2f}x** | added {1e3 * (n - b):.0f} ms |")


if __name__ == "__main__":
    main()
