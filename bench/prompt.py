"""What a prompt costs (#16), measured in one run with the known-answer models (CPU or GPU).

    FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_localhost.xml ROS_DOMAIN_ID=73 \\
        .venv/bin/python bench/prompt.py [--seconds 15] [--rate 8] [--rounds 2] [--device cpu]

Part 1, core: `Pipeline.process` of a 640x480 shapes frame (segment + label + fuse) against
`prompt.select` on its Result (a point, a box, a text; warm text cache): the cost of a prompt on
the latest frame vs a full frame, as a ratio.
Part 2, the node over DDS: frames stream at --rate Hz (faster than the pipeline: keep-latest
drops the rest) while the output rate on ~/instances is counted, in phases of --seconds: no
prompt, a latest-frame text prompt every second, a fresh-image text prompt every second
(interleaved, --rounds times). Also the service round trips of both kinds.
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
os.environ.setdefault("ROS_DOMAIN_ID", "73")

import rclpy  # noqa: E402
import torch  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sfs_ros.core.frame import Frame  # noqa: E402
from sfs_ros.core.pipeline import Pipeline  # noqa: E402
from sfs_ros.core.prompt import Prompt, select  # noqa: E402
from sfs_ros.msg import InstanceArray  # noqa: E402
from sfs_ros.ros import convert  # noqa: E402
from sfs_ros.srv import SegmentPrompt  # noqa: E402
from sfs_ros.synth import known_answer as ka  # noqa: E402
from sfs_ros.synth.shapes import make_scene  # noqa: E402
from node_overhead import active_node  # noqa: E402  (bench/, on sys.path when run as a script)
from stage_times import timed  # noqa: E402

RELIABLE = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
SCENES = [make_scene(7, i) for i in range(4)]


def median_ms(fn, repeats: int) -> float:
    """Median wall time of fn() in ms over `repeats` calls, after one warm-up call."""
    return 1e3 * timed(fn, repeats)


def core_costs(segmenter, labeler, repeats: int) -> list[tuple[str, float]]:
    """(what, median ms): a full frame, then each kind of prompt on its Result."""
    pipeline = Pipeline(segmenter, labeler, on_result=lambda r: None, overlay=False)
    frame = Frame(SCENES[1].image)
    full = median_ms(lambda: pipeline.process(frame), repeats)
    result = pipeline.process(frame)
    box = tuple(float(v) for v in result.masks.boxes[0])
    centre = SCENES[1].objects[0].center
    prompts = {
        "point": Prompt(points=(centre,), point_labels=(1,)),
        "box": Prompt(boxes=(box,)),
        "text": Prompt(texts=("red circle",)),
        "text + box": Prompt(texts=("red circle",), boxes=(box,)),
    }
    rows = [("full frame (Pipeline.process)", full)]
    for name, prompt in prompts.items():
        rows.append((f"{name} prompt on its Result (select)",
                     median_ms(lambda p=prompt: select(result, p, labeler), repeats * 5)))
    return rows


class Stream:
    """Publishes shapes frames at `rate` Hz with rising stamps until stopped."""

    def __init__(self, publisher, rate: float) -> None:
        self.publisher, self.period = publisher, 1.0 / rate
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sec = 1000
        while not self.stop.is_set():
            scene = SCENES[sec % len(SCENES)]
            self.publisher.publish(convert.numpy_to_image(scene.image, "rgb8", Header(stamp=Time(sec=sec))))
            sec += 1
            time.sleep(self.period)


def call(client, request) -> float:
    """Round trip of one service call in seconds (raises when it fails)."""
    t0 = time.perf_counter()
    future = client.call_async(request)
    while not future.done():
        time.sleep(0.002)
    answer = future.result()
    if not answer.success:
        raise RuntimeError(answer.message)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=8.0, help="camera frames per second")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10, help="core timing repeats")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    rclpy.init()
    values = ka.options("crop", device=args.device)
    node, tester, executor = active_node([
        Parameter(k, value=list(v) if isinstance(v, tuple) else v) for k, v in values.items()
    ] + [Parameter("input_reliability", value="reliable")], "prompt_bench")

    rows = core_costs(node._segmenter, node._labeler, args.repeats)

    arrivals: list[float] = []
    tester.create_subscription(InstanceArray, "sfs_node/instances",
                               lambda msg: arrivals.append(time.monotonic()), RELIABLE)
    camera = tester.create_publisher(Image, "image", RELIABLE)
    client = tester.create_client(SegmentPrompt, "sfs_node/segment_prompt")
    assert client.wait_for_service(timeout_sec=20)
    while camera.get_subscription_count() < 1 or node.count_subscribers("sfs_node/instances") < 1:
        time.sleep(0.05)
    latest = SegmentPrompt.Request(texts=["red circle"])
    fresh = SegmentPrompt.Request(texts=["red circle"], image=convert.numpy_to_image(
        SCENES[2].image, "rgb8", Header(stamp=Time(sec=1))))
    stream = Stream(camera, args.rate)
    time.sleep(3.0)  # warm-up: first frames, first text encodings
    call(client, latest)
    call(client, fresh)
    rates: dict[str, list[float]] = {"none": [], "latest": [], "fresh": []}
    trips: dict[str, list[float]] = {"latest": [], "fresh": []}
    for _ in range(args.rounds):
        for phase in rates:
            start = time.monotonic()
            end = start + args.seconds
            while time.monotonic() < end:
                tick = time.monotonic()
                if phase != "none":
                    trips[phase].append(call(client, latest if phase == "latest" else fresh))
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            rates[phase].append(sum(start <= t < end for t in arrivals) / args.seconds)
    stream.stop.set()
    stream.thread.join(2.0)
    executor.shutdown(timeout_sec=2)
    node.destroy_node()
    rclpy.try_shutdown()

    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, device {args.device}, torch "
          f"{torch.__version__}; known-answer models, crop labeling, 640x480 shapes frames\n")
    full = rows[0][1]
    print("| core | median ms | / full frame |")
    print("|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms / full:.2g} |")
    none = statistics.mean(rates["none"])
    print(f"\n| node, camera at {args.rate:g} Hz | ~/instances per s (each phase) | / no prompt "
          "| service round trip median ms |")
    print("|---|---|---|---|")
    for phase, label in (("none", "no prompt"), ("latest", "latest-frame text prompt every 1 s"),
                         ("fresh", "fresh-image text prompt every 1 s")):
        trip = f"{1e3 * statistics.median(trips[phase]):.0f}" if phase in trips else "-"
        each = ", ".join(f"{r:.2f}" for r in rates[phase])
        print(f"| {label} | {each} | {statistics.mean(rates[phase]) / none:.2f} | {trip} |")
    ratio = statistics.median(trips["latest"]) / statistics.median(trips["fresh"])
    print(f"\nlatest-frame / fresh-image round trip: {ratio:.3f}")


if __name__ == "__main__":
    main()
