"""Live mode: replay a bag into a running sfs_node over DDS and score what it publishes.

Direct mode measures the models; live mode measures the system a robot runs: DDS transport both
ways, the node's conversions, its keep-latest queues and therefore its drops at a given input
rate. The image messages are published byte for byte as recorded (rclpy publishes raw CDR), at
the recorded timing or at `rate` Hz, and every output of the node is matched back to its input
frame by header stamp: a label image scores against that frame's ground truth, and everything
is written to the output bag at the input's bag time, so the output bag lines up with the input.

This is the only module of `sfs_ros.eval` that imports rclpy (inside `run_live`).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sfs_ros.core.frame import UNLABELED
from sfs_ros.core.vocabulary import Vocabulary
from sfs_ros.eval import images, messages, report as reports
from sfs_ros.eval.bags import BagInput, BagOutput
from sfs_ros.eval.errors import EvalError, GroundTruthError
from sfs_ros.eval.metrics import ConfusionMatrix, check_ground_truth
from sfs_ros.eval.runner import OUTPUT_BAG, output_namespaces, report_inputs

log = logging.getLogger("sfs_ros.eval.live")
#: per-frame outputs of the node under each camera namespace -> message type
OUTPUTS = {
    "label_image": "sensor_msgs/msg/Image",
    "instance_image": "sensor_msgs/msg/Image",
    "overlay": "sensor_msgs/msg/Image",
    "instances": "sfs_ros/msg/InstanceArray",
}


@dataclass(frozen=True)
class LiveOptions:
    out_dir: Path
    node: str = "/sfs_node"  # full name of the running node; its outputs are <node>/label_image...
    rate: float | None = None  # Hz; None replays the recorded timing
    wait_s: float = 60.0  # for the node to appear (discovery, model loading)
    tail_s: float = 10.0  # after the last frame, how long the node may take to answer it
    write_bag: bool = True
    progress: bool = True
    max_frames: int | None = None


@dataclass
class _Sent:
    """A published frame waiting for the node's answer."""

    sample: Any
    published: float  # time.monotonic() at publish


@dataclass
class _State:
    """Shared between the replay (main thread) and the subscription callbacks (executor)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict = field(default_factory=dict)  # (topic, stamp) -> _Sent
    log_times: dict = field(default_factory=dict)  # (topic, stamp) -> input bag time
    masks: dict = field(default_factory=dict)  # (topic, stamp) -> instances in the answer
    records: dict = field(default_factory=dict)  # (topic, stamp) -> per-frame report entry
    seen: dict = field(default_factory=dict)  # (topic, stamp) -> output names received
    label_info: Any = None
    label_info_raw: bytes | None = None
    answered: int = 0
    unmatched: int = 0
    t_last: float | None = None
    fatal: BaseException | None = None
    bag: BagOutput | None = None  # opened once the node is there, so a failed start leaves none


def run_live(source: BagInput, vocabulary: Vocabulary, options: LiveOptions) -> dict:
    """Replay `source` into the node named `options.node`; returns the report dict."""
    try:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CompressedImage, Image

        from sfs_ros.msg import InstanceArray, LabelInfo
    except ImportError as exc:
        raise EvalError(f"live mode needs rclpy, sensor_msgs and the built sfs_ros messages ({exc}); "
                        "direct mode needs none of them") from None

    node_name = "/" + options.node.strip("/")
    namespaces = output_namespaces(source.image_topics, node_name)
    camera_of = {ns: topic for topic, ns in namespaces.items()}
    state = _State()
    matrix = ConfusionMatrix(len(vocabulary)) if source.has_gt else None
    report = reports.new_report(False, "live", report_inputs(source), {}, source.shard)
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    store = messages.typestore()

    def on_output(ns: str, name: str, raw: bytes) -> None:
        try:
            msgtype = OUTPUTS[name]
            msg = store.deserialize_cdr(raw, msgtype)
            stamp = messages.Stamp(int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))
            key = (camera_of[ns], stamp)
            now = time.monotonic()
            with state.lock:
                state.seen.setdefault(key, set()).add(name)
                log_time = state.log_times.get(key)
                if name == "instances":
                    state.masks[key] = len(msg.instances)
                sent = state.sent.pop(key, None) if name == "label_image" else None
                if name == "label_image" and sent is None:
                    state.unmatched += 1
            if state.bag is not None:  # at the input's bag time; an unknown stamp at arrival time
                state.bag.write_raw(f"{ns}/{name}", msgtype, time.time_ns() if log_time is None else log_time, raw)
            if sent is not None:
                _score(sent, msg, now)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            state.fatal = state.fatal or exc

    def _score(sent: _Sent, label_msg: Any, now: float) -> None:
        sample = sent.sample
        pred = _prediction(label_msg)
        scored = sample.gt is not None and matrix is not None
        if scored:
            check_ground_truth(sample.gt, pred.shape, len(vocabulary), f"{sample.gt_topic} @ {sample.stamp}")
            matrix.update(sample.gt, pred)
        record = {
            "topic": sample.topic, "stamp": str(sample.stamp), "log_time": sample.log_time,
            "masks": 0, "scored": scored, "ms": {"end_to_end": round((now - sent.published) * 1000.0, 3)},
        }
        with state.lock:
            state.answered += 1
            state.t_last = now
            state.records[(sample.topic, sample.stamp)] = record

    def on_label_info(raw: bytes) -> None:
        state.label_info = store.deserialize_cdr(raw, "sfs_ros/msg/LabelInfo")
        state.label_info_raw = raw

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("sfs_eval_live", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="sfs-eval-live", daemon=True)
    try:
        publishers = {
            topic: node.create_publisher(
                CompressedImage if source.topics[topic][0] == images.COMPRESSED_TYPE else Image, topic, reliable)
            for topic in source.image_topics
        }
        for ns in namespaces.values():
            for name in OUTPUTS:
                node.create_subscription(Image if name != "instances" else InstanceArray, f"{ns}/{name}",
                                         lambda raw, ns=ns, name=name: on_output(ns, name, raw), reliable, raw=True)
        node.create_subscription(LabelInfo, f"{node_name}/label_info", on_label_info, latched, raw=True)
        spinner.start()
        _wait_for_node(node, publishers, namespaces, state, node_name, options.wait_s)
        random_weights = _check_label_info(state.label_info, vocabulary, source.has_gt)
        if options.write_bag:
            Path(options.out_dir).mkdir(parents=True, exist_ok=True)
            state.bag = BagOutput(Path(options.out_dir) / OUTPUT_BAG, custom_data={
                "sfs_eval.mode": "live", "sfs_eval.node": node_name,
                "sfs_eval.random_weights": str(random_weights).lower()})
        report["random_weights"] = random_weights
        report["warning"] = reports.RANDOM_BANNER.replace("**", "") if random_weights else None
        t_first, skipped = _replay(source, publishers, state, report, options)
        _wait_for_answers(node, namespaces, state, options.tail_s)
        if state.fatal is not None:
            raise state.fatal
    finally:
        executor.shutdown(timeout_sec=2)
        node.destroy_node()
        context.try_shutdown()
        spinner.join(2)
        bag, state.bag = state.bag, None  # the executor is down: no callback writes any more
        if bag is not None:
            if state.label_info_raw is not None:
                first = min(state.log_times.values(), default=0)
                bag.write_raw(f"{node_name}/label_info", "sfs_ros/msg/LabelInfo", first, state.label_info_raw,
                              latched=True)
            bag.close()
    for key, record in state.records.items():
        record["masks"] = state.masks.get(key, 0)  # instances may arrive before or after labels
        report["per_frame"].append(record)
    published = len(state.log_times)
    report["settings"] = {
        "node": node_name, "rate_hz": options.rate, "tail_s": options.tail_s,
        "vocabulary": vocabulary.name, "vocabulary_key": vocabulary.key, "class_names": list(vocabulary.names),
        "gt_ignore": source.gt_ignore, "threshold": float(state.label_info.threshold),
    }
    report["frames"] = {
        "images_in_shard": source.stats.images_in_shard, "published": published,
        "processed": state.answered, "scored": sum(1 for f in report["per_frame"] if f["scored"]),
        "without_gt": sum(1 for f in report["per_frame"] if not f["scored"]),
        "gt_without_image": source.stats.gt_without_image, "skipped": skipped,
        "pipeline_errors": 0, "dropped": published - state.answered,
        "unmatched_outputs": state.unmatched, "limited_to": options.max_frames,
    }
    if bag is not None:
        report["output_bags"].append({"path": str(bag.path), "topics": dict(sorted(bag.counts.items()))})
    wall = (state.t_last - t_first) if state.t_last is not None else 0.0
    reports.finish(report, matrix, wall)
    report["timing"]["note"] = (
        "live: frames_per_s = answered frames / (last answer - first publish), bounded by the replay "
        "rate; end_to_end = publish -> label image received; dropped = published, never answered"
    )
    return report


def _prediction(msg: Any) -> np.ndarray:
    """The node's label image as uint16 with UNLABELED, whichever encoding it publishes."""
    if msg.encoding == "mono8":
        ids = images.pixels(msg, np.uint8, 1)[:, :, 0]
        return np.where(ids == 255, UNLABELED, ids).astype(np.uint16)
    if msg.encoding == "mono16":
        return images.pixels(msg, np.uint16, 1)[:, :, 0].astype(np.uint16)
    raise EvalError(f"the node publishes label images in {msg.encoding!r}; expected mono8 or mono16")


def _wait_for_node(node: Any, publishers: dict, namespaces: dict, state: _State, name: str, wait_s: float) -> None:
    """Until the node subscribes to every camera topic, publishes labels and latched its LabelInfo."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        ready = (all(p.get_subscription_count() > 0 for p in publishers.values())
                 and all(node.count_publishers(f"{ns}/label_image") > 0 for ns in namespaces.values())
                 and state.label_info is not None)
        if ready:
            time.sleep(0.5)  # let the remaining endpoints (overlay, instances) match too
            return
        time.sleep(0.1)
    missing = [t for t, p in publishers.items() if p.get_subscription_count() == 0]
    raise EvalError(
        f"no running sfs_node {name} answered within {wait_s:.0f} s "
        f"({'nobody subscribes to ' + ', '.join(missing) if missing else 'no label_info/label_image from it'}); "
        f"start it first, e.g. `sfs_node --ros-args -r __node:={name.rsplit('/', 1)[-1]} "
        f"-p image_topics:=[{', '.join(publishers)}] -p input_reliability:=reliable`"
    )


def _wait_for_answers(node: Any, namespaces: dict, state: _State, tail_s: float) -> None:
    """Until every frame got its label image and every answered frame all the outputs the node
    publishes (they travel on separate topics), or `tail_s` passes; the rest count as dropped."""
    deadline = time.monotonic() + tail_s
    while time.monotonic() < deadline and state.fatal is None:
        with state.lock:
            done = not state.sent and all(
                {n for n in OUTPUTS if node.count_publishers(f"{namespaces[key[0]]}/{n}") > 0} <= state.seen[key]
                for key in state.records
            )
        if done:
            return
        time.sleep(0.05)


def _check_label_info(info: Any, vocabulary: Vocabulary, has_gt: bool) -> bool:
    """The node's classes must be the ground truth's classes; returns its random_weights flag."""
    names = [c.name for c in info.classes]
    if has_gt and names != list(vocabulary.names):
        raise GroundTruthError(
            f"the node labels with {len(names)} classes ({info.vocabulary}: {', '.join(names[:5])}...) but the "
            f"ground truth holds ids of {vocabulary.name!r} ({len(vocabulary)} classes): set the node's "
            "vocabulary parameter to the same list"
        )
    return bool(info.random_weights)


def _replay(source: BagInput, publishers: dict, state: _State, report: dict,
            options: LiveOptions) -> tuple[float, dict[str, int]]:
    """Publish the frames at their recorded timing (or `rate`).

    Returns the first publish time and the skipped-frame counts. Frames unanswered for longer
    than `tail_s` are forgotten (they count as dropped) so long replays keep memory bounded.
    """
    from tqdm import tqdm

    progress = tqdm(total=source.expected_images(), unit="frame", desc="sfs_eval live",
                    disable=not options.progress, dynamic_ncols=True)
    skipped: dict[str, int] = {}
    t_first, log_first, count = None, None, 0
    try:
        for sample in source.samples(keep_raw=True):
            if options.max_frames is not None and count >= options.max_frames:
                break
            if state.fatal is not None:
                raise state.fatal
            if sample.bad is not None:
                skipped[sample.bad.reason] = skipped.get(sample.bad.reason, 0) + 1
                report["skipped_frames"].append({"topic": sample.topic, "stamp": str(sample.stamp),
                                                 "log_time": sample.log_time, "reason": sample.bad.reason,
                                                 "detail": sample.bad.detail})
                continue
            now = time.monotonic()
            if t_first is None:
                t_first, log_first = now, sample.log_time
            offset = count / options.rate if options.rate else (sample.log_time - log_first) / 1e9
            time.sleep(max(0.0, t_first + offset - now))
            key = (sample.topic, sample.stamp)
            sample.image = None  # the node decodes its own copy; keep only what scoring needs
            with state.lock:
                stale = [k for k, v in state.sent.items() if now - v.published > options.tail_s]
                for k in stale:
                    del state.sent[k]
                state.log_times[key] = sample.log_time
                state.sent[key] = _Sent(sample, time.monotonic())
            publishers[sample.topic].publish(sample.raw)
            sample.raw = None
            count += 1
            progress.update(1)
    finally:
        progress.close()
    return (t_first if t_first is not None else time.monotonic()), skipped
