"""sfs_node: camera images in, FastSAM masks named by CLIP out (an rclpy lifecycle node).

Run it:
    sfs_node --ros-args -p random_weights:=true -r image:=/camera/image_raw
    python -m sfs_ros.ros.node --ros-args --params-file config/sfs.yaml -p device:=cpu
By default the node configures and activates itself (parameter `autostart`, or the
`--autostart` / `--no-autostart` flag before `--ros-args`); with autostart off it waits for a
lifecycle manager (`ros2 lifecycle set /sfs_node configure`, then `activate`).

Topics (node `sfs_node`, every name remappable):
    in   <image_topics[i]>        sensor_msgs/Image, or sensor_msgs/CompressedImage when the
                                  name ends in /compressed; QoS from `input_reliability`
    out  ~/label_image            class id per pixel, mono16 (unlabeled 65535) or mono8 (255)
         ~/instance_image         mono16, 1-based instance id per pixel (0 = no mask); the id is
                                  Instance.instance_id in ~/instances
         ~/overlay                rgb8, the input blended with class colours (publish_overlay)
         ~/instances              sfs_ros/InstanceArray, one mask per instance (publish_instances)
         ~/label_info             sfs_ros/LabelInfo, transient-local (latched); republished when
                                  the vocabulary or score threshold changes. One for all cameras.
         /diagnostics             diagnostic_msgs/DiagnosticArray, 1 Hz, one status per camera
                                  named "<node's full name>: <camera>" ("/sfs_node: image"):
                                  rates, drops, errors, bad inputs (by reason), frames
                                  skipped before the callback (publisher sequence gaps: the
                                  input history overwrote them), latency p50/p95 per stage,
                                  device, vocabulary, random weights; WARN when a publisher is on
                                  an input topic but no frame came for 5 s (QoS hint included)
Every per-frame output carries the header (stamp, frame_id) of the input image it came from.

With one camera the per-frame outputs sit directly under the node (`~/label_image`). With
several, each camera gets its own sub-namespace `~/<camera>/label_image`, where <camera> is the
input topic without its leading '/', a trailing '/compressed' and a trailing image leaf
(image, image_raw, image_color, image_rect, image_rect_color, image_mono, image_rect_raw):
    /front/image_raw                  -> ~/front/label_image, ~/front/overlay, ...
    /rig/left/image_rect_color/compressed -> ~/rig/left/label_image, ...
Two topics that give the same camera name are refused at configure time.

Threads: subscription callbacks only convert the message (zero-copy where possible) and submit
it to that camera's Pipeline (two stage threads, keep-latest queues); results are published
from the pipeline's label thread. One Segmenter and one Labeler (one model load) serve every
camera. A vocabulary change is validated in the parameter callback and encoded by a worker
thread the node owns; the Pipeline binds the vocabulary at submit, so no frame mixes two.
Diagnostics run in their own callback group, so they are published while frames are in flight.
"""
from __future__ import annotations

import argparse
import array
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.exceptions import InvalidHandle
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sfs_ros.core.frame import SfsError
from sfs_ros.core.vocabulary import Vocabulary, load_vocabulary
from sfs_ros.msg import InstanceArray, LabelInfo
from sfs_ros.ros import convert, params
from sfs_ros.ros.naming import camera_name, output_namespaces

if TYPE_CHECKING:  # torch is imported when the node is configured, not when it starts
    from sfs_ros.core.pipeline import Pipeline, PipelineStats

#: Per-frame outputs of each camera, relative to its output namespace.
OUTPUTS = ("label_image", "instance_image", "overlay", "instances")
#: A publisher on an input topic with no frame for this long is reported (QoS mismatch hint).
NO_FRAME_WARN_S = 5.0
DIAGNOSTICS_PERIOD_S = 1.0
BAD_INPUT_LOG_PERIOD_S = 5.0


def _vocabulary_for(labeler: Any, values: dict[str, Any]) -> Vocabulary:
    """The `vocabulary` parameter, or what a semantic labeler dictates: the checkpoint's classes
    (semantic-vote), plus a custom list given here as open-vocabulary extras (semantic-hybrid)."""
    from sfs_ros.core.semantic import fixed_vocabulary

    spec = params.vocabulary_spec(values["vocabulary"])
    extras = spec if values["labeling_mode"] == "semantic-hybrid" and isinstance(spec, list) else ()
    fixed = fixed_vocabulary(labeler, extras)
    return fixed if fixed is not None else load_vocabulary(spec)


def _set_threshold(labeler: Any, value: float) -> None:
    """score_threshold: CLIP's probability cut, also for the CLIP fallback of semantic-hybrid
    (whose own `threshold` is min_vote_share, a read-only parameter)."""
    getattr(labeler, "clip", labeler).threshold = value


#: Publishers whose last sequence number a camera remembers (oldest forgotten first).
MAX_TRACKED_PUBLISHERS = 32


def _sequence_gap(last_seq: dict[bytes, int], info: Any) -> int:
    """Frames of this message's publisher that never reached the callback since its last one.

    The subscription's KEEP_LAST(queue_size) history silently replaces samples the executor has
    not taken yet (and best-effort transport may lose some): neither shows up as a DDS event.
    The rmw message info carries the publisher's gid and its own sequence number, so a jump in
    that number counts exactly those frames. A publisher seen for the first time, or one whose
    numbers went backwards, starts a new count.
    """
    if not isinstance(info, dict):
        return 0
    gid, number = info.get("publisher_gid"), info.get("publication_sequence_number")
    if not isinstance(gid, dict) or not isinstance(number, int) or number <= 0:
        return 0  # the middleware does not say
    key = bytes(gid.get("data", b""))
    previous = last_seq.pop(key, None)  # re-inserted last: the dict stays in recency order
    last_seq[key] = number
    while len(last_seq) > MAX_TRACKED_PUBLISHERS:
        del last_seq[next(iter(last_seq))]
    if previous is None or number <= previous:
        return 0
    return number - previous - 1


def is_compressed(topic: str) -> bool:
    return topic.rstrip("/").split("/")[-1] == "compressed"


# ---------------------------------------------------------------------- helpers
def _plain(value: Any) -> Any:
    """Parameter value with arrays as tuples of str (rclpy gives lists or array.array)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


@dataclasses.dataclass
class _Camera:
    """One input topic: its subscription, pipeline, publishers and counters."""

    topic: str
    namespace: str  # '~' or '~/<camera>'
    name: str
    compressed: bool
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    publishers: dict[str, Any] = dataclasses.field(default_factory=dict)
    subscription: Any = None
    pipeline: Pipeline | None = None
    received: int = 0
    bad_inputs: int = 0
    bad_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    last_bad_reason: str = ""
    published: int = 0
    incompatible_qos: int = 0
    lost: int = 0
    skipped: int = 0  # frames that never reached the callback: gaps in publisher sequence numbers
    last_pub_seq: dict[bytes, int] = dataclasses.field(default_factory=dict)  # publisher gid -> seq
    matched: int = -1  # publishers matched (event), -1 when the middleware does not say
    seq: int = 0
    last_frame: float | None = None  # time.monotonic() of the last message
    active_since: float | None = None
    totals: PipelineStats | None = None  # counters of past activations
    prev: tuple[float, int, int] | None = None  # (time, received, frames_out) at last report

    def output(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    @property
    def where(self) -> str:
        """The input topic for log lines: fully resolved while subscribed."""
        sub = self.subscription
        return sub.topic_name if sub is not None else self.topic

    def stats(self) -> PipelineStats:
        """Counters over every activation, latencies of the current one."""
        from sfs_ros.core.pipeline import PipelineStats

        pipeline = self.pipeline
        now = pipeline.stats if pipeline is not None else PipelineStats()
        t = self.totals or PipelineStats()
        return PipelineStats(
            t.frames_in + now.frames_in, t.frames_out + now.frames_out,
            t.dropped + now.dropped, t.errors + now.errors, t.masks_out + now.masks_out,
            now.latencies,
        )


class _LatestWorker:
    """A thread owned by the node that runs the latest submitted job (older ones are skipped)."""

    def __init__(self, run: Callable[[Any], None], name: str) -> None:
        self._run = run
        self._cond = threading.Condition()
        self._job: Any = None
        self._pending = False
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Any) -> None:
        with self._cond:
            self._job, self._pending = job, True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not (self._pending or self._busy), timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                job, self._job, self._pending, self._busy = self._job, None, False, True
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Stop taking jobs; True when the thread ended within `timeout` s (a job runs to its end)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()


class _RosLogBridge(logging.Handler):
    """Forwards the core's Python log records (`sfs_ros.*`) to the node's ROS logger.

    Exceptions are summarised on one line (type and message); the traceback follows only when
    the logger is at debug level (`--ros-args --log-level sfs_node.core:=debug`).
    """

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" ({type(exc).__name__}: {exc})"
                self._ros.debug("".join(traceback.format_exception(*record.exc_info)))
            if record.levelno >= logging.ERROR:
                self._ros.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(text)
            else:
                self._ros.info(text)
        except Exception:  # noqa: BLE001 - logging must never raise (e.g. after rclpy shutdown)
            pass


def _qos_input(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.VOLATILE,
    )


QOS_OUTPUT = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
QOS_LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


class SfsExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor that survives subscriptions destroyed while it waits.

    rclpy (Kilted) guards taking from a subscription or service whose handle was destroyed
    meanwhile, but not taking from a QoS event handler: deactivating the node (which destroys
    its subscriptions and their event handlers) while the executor waits can raise
    `InvalidHandle` there, and that ends `spin()` for good: a deaf node that still runs (seen in
    test_lifecycle_cycles_leak_no_threads_or_memory). Spin SfsNode with this executor.
    """

    def _take_waitable(self, waitable: Any) -> Any:
        try:
            return super()._take_waitable(waitable)
        except InvalidHandle:
            return None  # destroyed meanwhile: nothing to do (the executor expects None then)


# ---------------------------------------------------------------------- the node
class SfsNode(LifecycleNode):
    """Semantic-Fast-SAM lifecycle node; see the module docstring for topics and threads."""

    def __init__(self, node_name: str = "sfs_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        # `-p vocabulary:=coco` (or `vocabulary: coco` in a params file) gives a string where a
        # string array is declared: read it as a one-element list instead of refusing to start.
        # An empty YAML list (`vocabulary: []`) arrives with no type at all: an empty array too.
        # Overrides (params file, -p) are validated here with the same rules as runtime changes,
        # so a bad value stops the node with the reason before anything loads.
        try:
            overrides = getattr(self, "_parameter_overrides", {})
            given_values = params.defaults()
            for name, given in list(overrides.items()):
                given = overrides[name] = self._string_to_array(given)
                if name in params.BY_NAME:
                    given_values[name] = _plain(given.value)
            reason = params.validate(given_values)
            if reason:
                raise SfsError(f"parameter refused at start-up: {reason}")
            for spec in params.PARAMS:
                self.declare_parameter(spec.name, spec.default, spec.descriptor())
        except Exception:
            # A refused override: leave no half-built node behind for the context to destroy.
            LifecycleNode.destroy_node(self)
            raise
        self.add_pre_set_parameters_callback(self._coerce_string_arrays)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._lock = threading.RLock()  # models, cameras, vocabulary
        self._closing = False
        self._cameras: list[_Camera] = []
        self._segmenter: Any = None
        self._labeler: Any = None
        self._vocabulary: Vocabulary | None = None
        self._device = "-"
        self._label_info_pub: Any = None
        self._encoding = "mono16"
        self._publish_overlay = bool(self.get_parameter("publish_overlay").value)
        self._publish_instances = bool(self.get_parameter("publish_instances").value)

        self._io_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, callback_group=self._diag_group
        )
        self._vocab_worker = _LatestWorker(self._apply_vocabulary, name="sfs-vocabulary")
        # The core logs with Python logging ("sfs_ros.*"): forward it to the ROS logger (and only
        # there, while this node lives, so lines are not printed twice).
        core_log = logging.getLogger("sfs_ros")
        self._log_bridge = _RosLogBridge(self.get_logger().get_child("core"))
        self._log_propagate = core_log.propagate
        core_log.addHandler(self._log_bridge)
        core_log.propagate = False

    # ------------------------------------------------------------------ parameters
    def _values(self) -> dict[str, Any]:
        return {spec.name: _plain(self.get_parameter(spec.name).value) for spec in params.PARAMS}

    @staticmethod
    def _string_to_array(given: Parameter) -> Parameter:
        """A string (`vocabulary:=coco`) or an empty array of no particular type (`"[]"`, or
        `[]` in a params file, which has no type at all) given for a string-array parameter, as
        that string array; anything else unchanged."""
        spec = params.BY_NAME.get(given.name)
        if spec is None or spec.type_name != "string_array":
            return given
        if given.type_ == Parameter.Type.STRING:
            return Parameter(given.name, Parameter.Type.STRING_ARRAY, [given.value])
        empty = given.type_ == Parameter.Type.NOT_SET or (
            isinstance(given.value, (list, tuple, array.array, bytes)) and len(given.value) == 0)
        if given.type_ != Parameter.Type.STRING_ARRAY and empty:
            return Parameter(given.name, Parameter.Type.STRING_ARRAY, [])
        return given

    def _coerce_string_arrays(self, changes: list[Parameter]) -> list[Parameter]:
        """Pre-set callback: `ros2 param set /sfs_node vocabulary coco` and `... "[]"` reach
        validation as string arrays (which then accepts or explains) instead of a type error."""
        return [self._string_to_array(p) for p in changes]

    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        """Validate changes (types, ranges and read-only were checked by rclpy from the
        descriptors); a refused change keeps the old value and says why."""
        new = {p.name: _plain(p.value) for p in changes if p.name in params.BY_NAME}
        if "vocabulary" in new:  # cross check: mono8 holds at most 255 classes
            new.setdefault("label_encoding", self.get_parameter("label_encoding").value)
        reason = params.validate(new)
        if "vocabulary" in new and self.get_parameter("labeling_mode").value == "semantic-vote":
            reason = "labeling_mode semantic-vote names masks with the checkpoint's own classes"
        if reason:
            self.get_logger().warning(f"parameter change refused: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, changes: list[Parameter]) -> None:
        """Apply accepted runtime changes (cheap ones here, text encoding on the worker)."""
        names = {p.name for p in changes}
        values = self._values()
        self._publish_overlay = bool(values["publish_overlay"])
        self._publish_instances = bool(values["publish_instances"])
        with self._lock:
            for cam in self._cameras:
                if cam.pipeline is not None:
                    cam.pipeline.overlay = self._publish_overlay
                    cam.pipeline.overlay_alpha = float(values["overlay_alpha"])
            labeler = self._labeler
            if labeler is not None and "score_threshold" in names:
                _set_threshold(labeler, float(values["score_threshold"]))
        if labeler is None:
            return  # unconfigured: on_configure reads the parameters
        if names & {"vocabulary", "prompt_templates"}:
            note = params.vocabulary_note(values["vocabulary"])
            if note:
                self.get_logger().warning(note)
            vocabulary = _vocabulary_for(labeler, values)
            self.get_logger().info(
                f"encoding vocabulary {vocabulary.name!r} ({len(vocabulary)} classes) in the "
                "background; frames keep the current one until it is ready"
            )
            self._vocab_worker.submit((vocabulary, tuple(values["prompt_templates"])))
        elif "score_threshold" in names:
            self._publish_label_info()

    def _apply_vocabulary(self, job: tuple[Vocabulary, tuple[str, ...]]) -> None:
        """Worker thread: encode the text embeddings, then swap them in (one reference)."""
        vocabulary, templates = job
        labeler = self._labeler
        if labeler is None or self._closing:
            return
        t0 = time.monotonic()
        try:  # encodes, then swaps the bank in one assignment
            labeler.set_vocabulary(vocabulary, templates)
        except Exception as exc:  # noqa: BLE001 - keep the old vocabulary, say why
            self.get_logger().error(
                f"vocabulary {vocabulary.name!r} could not be encoded, keeping "
                f"{self._vocabulary.name if self._vocabulary else 'none'}: {type(exc).__name__}: {exc}"
            )
            return
        with self._lock:
            if self._labeler is not labeler:
                return  # cleaned up meanwhile
            self._vocabulary = vocabulary
        self.get_logger().info(
            f"vocabulary now {vocabulary.name!r}: {len(vocabulary)} classes "
            f"({', '.join(vocabulary.names[:8])}{', ...' if len(vocabulary) > 8 else ''}), "
            f"encoded in {time.monotonic() - t0:.2f} s"
        )
        self._publish_label_info()

    def wait_vocabulary(self, timeout: float = 30.0) -> bool:
        """Block until pending vocabulary changes are applied (tests, tools)."""
        return self._vocab_worker.wait_idle(timeout)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load both models once, encode the vocabulary, create the publishers."""
        from sfs_ros.core.labeler import LabelerConfig
        from sfs_ros.core.pipeline import load_models
        from sfs_ros.core.segmenter import SegmenterConfig
        from sfs_ros.core.semantic import SEMANTIC_MODES, SemanticConfig
        from sfs_ros.core.weights import WeightsMissingError

        log = self.get_logger()
        values = self._values()
        try:
            reason = params.validate(values)  # loads the vocabulary: a bad one fails before the models
            if reason:
                raise SfsError(reason)
            topics = list(values["image_topics"])
            namespaces = output_namespaces(topics)
            semantic_mode = values["labeling_mode"] in SEMANTIC_MODES
            note = params.vocabulary_note(values["vocabulary"])
            if note and not semantic_mode:
                log.warning(note)
            random = bool(values["random_weights"])
            seg_config = SegmenterConfig(
                model=values["model"], imgsz=values["imgsz"], conf=values["conf"],
                iou=values["iou"], max_det=values["max_det"], retina_masks=values["retina_masks"],
                mask_resolution=values["mask_resolution"],
                half=values["half"], device=values["device"], min_area=values["min_mask_area"],
                random_weights=random,
            )
            lab_config = LabelerConfig(
                clip_model=values["clip_model"], pretrained=values["clip_pretrained"],
                templates=tuple(values["prompt_templates"]), threshold=values["score_threshold"],
                topk=values["topk"], device=values["device"], half=values["half"],
                mode=values["labeling_mode"] if not semantic_mode else "crop",
                random_weights=random,
            )
            sem_config = None if not semantic_mode else SemanticConfig(
                checkpoint=values["semantic_checkpoint"], device=values["device"],
                half=values["half"], topk=values["topk"], random_weights=random,
                min_vote_share=values["min_vote_share"],
                threshold=values["score_threshold"] if values["labeling_mode"] == "semantic-vote" else 0.0,
            )
            t0 = time.monotonic()
            segmenter, labeler = load_models(
                seg_config, lab_config, bool(values["allow_random_fallback"]), sem_config,
                hybrid=values["labeling_mode"] == "semantic-hybrid",
            )
            t1 = time.monotonic()
            vocabulary = _vocabulary_for(labeler, values)
            labeler.set_vocabulary(vocabulary)
            t2 = time.monotonic()
        except WeightsMissingError as exc:
            log.error(
                f"configure failed: {exc} (node parameters: random_weights:=true runs untrained "
                "models; allow_random_fallback:=true does so only for missing checkpoints)"
            )
            return TransitionCallbackReturn.FAILURE
        except SfsError as exc:
            log.error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - a lifecycle callback must answer, not raise
            log.error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE

        with self._lock:
            self._segmenter, self._labeler, self._vocabulary = segmenter, labeler, vocabulary
            self._device = str(segmenter.device)
            self._encoding = values["label_encoding"]
            self._cameras = []
            for topic, namespace in zip(topics, namespaces):
                cam = _Camera(topic=topic, namespace=namespace, name=camera_name(topic),
                              compressed=is_compressed(topic))
                for name, msg_type in zip(OUTPUTS, (Image, Image, Image, InstanceArray)):
                    cam.publishers[name] = self.create_lifecycle_publisher(
                        msg_type, cam.output(name), QOS_OUTPUT
                    )
                self._cameras.append(cam)
            self._label_info_pub = self.create_lifecycle_publisher(
                LabelInfo, "~/label_info", QOS_LATCHED
            )
        random_now = segmenter.random_weights or labeler.random_weights
        log.info(
            f"configured: FastSAM {seg_config.model} + CLIP {lab_config.clip_model} on "
            f"{self._device} (loaded in {t1 - t0:.1f} s), vocabulary {vocabulary.name!r} with "
            f"{len(vocabulary)} classes (encoded in {t2 - t1:.1f} s), cameras: "
            + ", ".join(f"{c.topic} -> {c.namespace}/" for c in self._cameras)
        )
        if random_now:
            which = [n for n, m in (("FastSAM", segmenter), ("CLIP", labeler)) if m.random_weights]
            log.warning(
                f"{' and '.join(which)} run with RANDOM weights: masks/labels are meaningless; "
                "every output is marked random_weights=true"
            )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start one pipeline per camera, then subscribe; latch the label info."""
        from sfs_ros.core.pipeline import Pipeline

        ret = super().on_activate(state)  # enables the lifecycle publishers
        values = self._values()
        qos = _qos_input(values["input_reliability"], values["queue_size"])
        try:
            with self._lock:
                for cam in self._cameras:
                    cam.pipeline = Pipeline(
                        self._segmenter, self._labeler,
                        on_result=lambda result, cam=cam: self._on_result(cam, result),
                        on_error=lambda stage, frame, exc, cam=cam: self._on_pipeline_error(
                            cam, stage, exc),
                        queue_size=values["queue_size"], drop=True,
                        overlay=self._publish_overlay, overlay_alpha=values["overlay_alpha"],
                    ).start()
                    cam.active_since = time.monotonic()
                    cam.subscription = self._subscribe(cam, qos)
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            self._stop_cameras()
            return TransitionCallbackReturn.FAILURE
        self._publish_label_info()
        self.get_logger().info(
            f"active: listening on {', '.join(c.subscription.topic_name for c in self._cameras)} "
            f"({values['input_reliability']})"
        )
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_cameras()
        self.get_logger().info("inactive: subscriptions removed, pipelines stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: models released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_cameras()
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_cameras()
        self._release()
        return super().on_error(state)

    def _subscribe(self, cam: _Camera, qos: QoSProfile) -> Any:
        msg_type = CompressedImage if cam.compressed else Image

        def on_incompatible(event: Any) -> None:
            with cam.lock:
                cam.incompatible_qos += 1
            self.get_logger().warning(
                f"{cam.where}: a publisher offers QoS incompatible with this subscription "
                f"(input_reliability={self.get_parameter('input_reliability').value}); its "
                "frames will not arrive. Most camera drivers publish best_effort: use "
                "input_reliability:=best_effort",
                throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S,
            )

        def on_matched(event: Any) -> None:
            with cam.lock:
                cam.matched = int(event.current_count)

        def on_lost(event: Any) -> None:
            with cam.lock:
                cam.lost += int(event.total_count_change)

        events = SubscriptionEventCallbacks(
            incompatible_qos=on_incompatible, matched=on_matched, message_lost=on_lost
        )
        try:
            return self.create_subscription(
                msg_type, cam.topic, lambda msg, info: self._on_image(cam, msg, info), qos,
                callback_group=self._io_group, event_callbacks=events,
            )
        except Exception:  # noqa: BLE001 - a middleware without these events: plain subscription
            events = SubscriptionEventCallbacks(incompatible_qos=on_incompatible)
            return self.create_subscription(
                msg_type, cam.topic, lambda msg, info: self._on_image(cam, msg, info), qos,
                callback_group=self._io_group, event_callbacks=events,
            )

    def _stop_cameras(self, timeout: float = 2.0) -> None:
        """Unsubscribe, then stop every pipeline in parallel (each joins its two threads; a CLIP
        batch in progress is not interruptible, so a thread may outlive `timeout`)."""
        with self._lock:
            cameras = list(self._cameras)
            for cam in cameras:
                if cam.subscription is not None:
                    self.destroy_subscription(cam.subscription)
                    cam.subscription = None
            pipelines = [(cam, cam.pipeline) for cam in cameras if cam.pipeline is not None]
        stoppers = [threading.Thread(target=p.stop, args=(timeout,), daemon=True) for _, p in pipelines]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(timeout + 0.5)
        with self._lock:
            for cam, pipeline in pipelines:
                cam.totals = cam.stats()
                cam.totals.latencies = {}
                cam.pipeline = None
                cam.active_since = None

    def _release(self) -> None:
        with self._lock:
            for cam in self._cameras:
                for pub in cam.publishers.values():
                    self.destroy_lifecycle_publisher(pub)
                cam.publishers.clear()
            if self._label_info_pub is not None:
                self.destroy_lifecycle_publisher(self._label_info_pub)
                self._label_info_pub = None
            self._cameras = []
            device = getattr(self._segmenter, "device", None)
            self._segmenter = self._labeler = None
            self._vocabulary = None
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ data path
    def _on_image(self, cam: _Camera, msg: Image | CompressedImage, info: Any = None) -> None:
        """Subscription callback: convert and submit, never wait for the models."""
        with cam.lock:
            cam.received += 1
            cam.seq += 1
            cam.last_frame = time.monotonic()
            seq = cam.seq
            cam.skipped += _sequence_gap(cam.last_pub_seq, info)
        pipeline = cam.pipeline
        if pipeline is None:
            return
        try:
            pipeline.submit(convert.to_frame(msg, source=cam.topic, seq=seq))
        except RuntimeError as exc:
            if pipeline.running:
                self._bad_input(cam, exc)
            # else: the pipeline stopped between the check and the submit (deactivating)
        except Exception as exc:  # noqa: BLE001 - a bad message must never reach the executor
            self._bad_input(cam, exc)

    def _bad_input(self, cam: _Camera, exc: BaseException) -> None:
        """Count a refused frame and say why, at most once per period per camera."""
        reason = str(exc) if isinstance(exc, SfsError) else f"{type(exc).__name__}: {exc}"
        key = getattr(exc, "reason", None) or type(exc).__name__
        with cam.lock:
            cam.bad_inputs += 1
            cam.bad_by_reason[key] = cam.bad_by_reason.get(key, 0) + 1
            cam.last_bad_reason = reason
        self.get_logger().warning(
            f"{cam.where}: ignoring an image: {reason}", throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S
        )

    def _on_result(self, cam: _Camera, result: Any) -> None:
        """Pipeline label thread: publish every output with the input image's header."""
        if self._closing:
            return
        try:
            header = convert.header_of(result.frame)
            pubs = cam.publishers
            pub = pubs.get("label_image")
            if pub is not None:
                pub.publish(convert.label_image_msg(result.label_image, self._encoding, header))
            pub = pubs.get("instance_image")
            if pub is not None:
                pub.publish(convert.numpy_to_image(result.instance_image, "mono16", header))
            pub = pubs.get("overlay")
            if pub is not None and self._publish_overlay and result.overlay is not None:
                pub.publish(convert.numpy_to_image(result.overlay, "rgb8", header))
            pub = pubs.get("instances")
            if pub is not None and self._publish_instances and pub.get_subscription_count() > 0:
                pub.publish(convert.result_to_instances(result, header))
            with cam.lock:
                cam.published += 1
        except Exception as exc:  # noqa: BLE001 - e.g. the context went down during shutdown
            if not self._closing:
                self.get_logger().error(
                    f"{cam.where}: publishing failed: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S,
                )

    def _on_pipeline_error(self, cam: _Camera, stage: str, exc: BaseException) -> None:
        self.get_logger().warning(
            f"{cam.where}: {stage} stage failed on a frame: {type(exc).__name__}: {exc}",
            throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S,
        )

    def _publish_label_info(self) -> None:
        with self._lock:
            pub, vocabulary, labeler = self._label_info_pub, self._vocabulary, self._labeler
            if pub is None or vocabulary is None or labeler is None:
                return
            msg = convert.vocabulary_to_label_info(
                vocabulary,
                Header(stamp=self.get_clock().now().to_msg()),
                encoding=self._encoding,
                threshold=getattr(labeler, "clip", labeler).threshold,
                random_weights=self._segmenter.random_weights or labeler.random_weights,
            )
        pub.publish(msg)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        if self._closing:
            return
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        state = self._state_machine.current_state[1]
        with self._lock:
            cameras = list(self._cameras)
            vocabulary, segmenter, labeler = self._vocabulary, self._segmenter, self._labeler
        if not cameras:
            array.status.append(DiagnosticStatus(
                level=DiagnosticStatus.OK, name=f"{self.get_fully_qualified_name()}: node",
                message=f"{state}: no cameras configured", hardware_id=self._device,
                values=[KeyValue(key="state", value=state)],
            ))
        random = bool(segmenter is not None and (segmenter.random_weights or labeler.random_weights))
        for cam in cameras:
            array.status.append(self._camera_status(cam, state, vocabulary, random))
        try:
            self._diag_pub.publish(array)
        except Exception:  # noqa: BLE001 - shutting down
            pass

    def _camera_status(
        self, cam: _Camera, state: str, vocabulary: Vocabulary | None, random: bool
    ) -> DiagnosticStatus:
        now = time.monotonic()
        stats = cam.stats()
        with cam.lock:
            received, bad, lost, incompatible = cam.received, cam.bad_inputs, cam.lost, cam.incompatible_qos
            skipped = cam.skipped
            by_reason = ", ".join(f"{k}: {v}" for k, v in sorted(cam.bad_by_reason.items()))
            matched, last_frame, active_since = cam.matched, cam.last_frame, cam.active_since
            prev, cam.prev = cam.prev, (now, received, stats.frames_out)
            last_bad = cam.last_bad_reason
        if prev is not None and now > prev[0]:
            rate_in = (received - prev[1]) / (now - prev[0])
            rate_out = (stats.frames_out - prev[2]) / (now - prev[0])
        else:
            rate_in = rate_out = 0.0
        sub = cam.subscription
        topic = sub.topic_name if sub is not None else cam.topic
        level, problems = DiagnosticStatus.OK, []
        if random:
            level = DiagnosticStatus.WARN
            problems.append("random weights: labels are meaningless")
        publishers = self.count_publishers(topic) if sub is not None else 0
        waiting = None
        if sub is not None and publishers and active_since is not None:
            waiting = now - max(last_frame or active_since, active_since)
        if waiting is not None and waiting > NO_FRAME_WARN_S:
            level = DiagnosticStatus.WARN
            hint = self._qos_hint(topic)
            problems.append(f"{publishers} publisher(s) but no frame for {waiting:.0f} s: {hint}")
            self.get_logger().warning(
                f"{topic}: {publishers} publisher(s) on the topic but no frame for "
                f"{waiting:.0f} s: {hint}", throttle_duration_sec=10.0,
            )
        if prev is not None and stats.errors > 0 and rate_out == 0 and rate_in > 0:
            level = DiagnosticStatus.ERROR
            problems.append("every frame fails in the pipeline")
        elif bad and received and bad == received:
            level = max(level, DiagnosticStatus.WARN)
            problems.append(f"every input image was refused: {last_bad}")

        def ms(stage: str, q: float) -> str:
            value = stats.percentile(stage, q)
            return "n/a" if value != value else f"{value * 1000:.1f}"

        values = [
            ("state", state),
            ("input topic", topic),
            ("input type", "sensor_msgs/CompressedImage" if cam.compressed else "sensor_msgs/Image"),
            ("input reliability", str(self.get_parameter("input_reliability").value)),
            ("output namespace", cam.namespace),
            ("publishers on input", str(publishers)),
            ("publishers matched", "unknown" if matched < 0 else str(matched)),
            ("input rate (Hz)", f"{rate_in:.2f}"),
            ("output rate (Hz)", f"{rate_out:.2f}"),
            ("frames received", str(received)),
            ("frames skipped before the callback", str(skipped)),
            ("frames processed", str(stats.frames_out)),
            ("frames dropped", str(stats.dropped)),
            ("errors", str(stats.errors)),
            ("bad inputs", str(bad)),
            ("bad inputs by reason", by_reason),
            ("last bad input", last_bad),
            ("messages lost", str(lost)),
            ("incompatible QoS events", str(incompatible)),
        ]
        from sfs_ros.core.pipeline import STAGES

        for stage in STAGES:
            values.append((f"{stage} latency p50 (ms)", ms(stage, 50)))
            values.append((f"{stage} latency p95 (ms)", ms(stage, 95)))
        values += [
            ("device", self._device),
            ("vocabulary", vocabulary.name if vocabulary else "-"),
            ("vocabulary size", str(len(vocabulary)) if vocabulary else "0"),
            ("random weights", str(random).lower()),
        ]
        message = "; ".join(problems) if problems else (
            f"{state}, {rate_out:.1f} Hz out" if state == "active" else state
        )
        return DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: {cam.name}", message=message,
            hardware_id=self._device, values=[KeyValue(key=k, value=v) for k, v in values],
        )

    def _qos_hint(self, topic: str) -> str:
        ours = self.get_parameter("input_reliability").value
        offered = {
            "best_effort" if info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
            else "reliable"
            for info in self.get_publishers_info_by_topic(topic)
        }
        if ours == "reliable" and "best_effort" in offered:
            return ("a publisher offers best_effort but input_reliability is reliable (QoS "
                    "mismatch): set input_reliability:=best_effort")
        if ours == "best_effort":
            return ("the camera may be idle, or large best_effort frames are lost over UDP: try "
                    "input_reliability:=reliable (if the camera publishes reliable) or a Fast "
                    "DDS profile with larger socket buffers (config/fastdds_localhost.xml)")
        return "the camera may be idle (QoS matches)"

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout: float = 1.0) -> None:
        """Stop pipelines and the vocabulary worker, release the models (idempotent).

        Waits about `timeout` s in all (pipelines and the vocabulary worker stop in parallel);
        threads still busy in a model call after that are daemons that publish nothing more
        (`_closing`) and end with the process."""
        if self._closing:
            return
        self._closing = True
        deadline = time.monotonic() + timeout  # one budget for all: they stop in parallel
        self._vocab_worker.close(0.0)  # takes no new job; one being encoded is waited for below
        self._stop_cameras(timeout)
        if not self._vocab_worker.close(max(0.0, deadline - time.monotonic())):
            # its result is dropped: _apply_vocabulary swaps nothing into a released labeler
            self.get_logger().warning("the vocabulary worker is still encoding; not waiting for it")
        self._release()

    def destroy_node(self) -> None:
        self.close()
        core_log = logging.getLogger("sfs_ros")
        core_log.removeHandler(self._log_bridge)
        core_log.propagate = self._log_propagate
        super().destroy_node()


# ---------------------------------------------------------------------- entry point
def main(args: list[str] | None = None) -> int:
    """`sfs_node` / `python -m sfs_ros.ros.node`: spin until SIGINT/SIGTERM, then exit 0.

    Exit codes: 0 after a signal, 1 when autostart's configure/activate failed, 2 for parameter
    overrides the node refuses at start-up. With `args=None` (the real command line) the process
    ends with os._exit once everything is closed and flushed: the Python interpreter's own
    teardown of torch and ultralytics takes 1-2 s on small CPUs and owns nothing of ours. Pass
    `args` to get the code returned instead.
    """
    fast_exit = args is None
    code = _run(list(sys.argv if args is None else args), fast_exit)
    if fast_exit:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(argv: list[str], fast_exit: bool) -> int:
    parser = argparse.ArgumentParser(
        prog="sfs_node", description="Semantic-Fast-SAM ROS 2 node (parameters: --ros-args -p ...)"
    )
    parser.add_argument(
        "--autostart", action=argparse.BooleanOptionalAction, default=None,
        help="configure and activate on start-up (default: the autostart parameter, true)",
    )
    opts = parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():  # second signal: stop waiting for anything
            signal.signal(signum, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        node = SfsNode()
    except SfsError as exc:  # a refused params file or -p override: say which, no traceback
        print(f"sfs_node: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    except Exception as exc:  # noqa: BLE001 - rclpy refused an override (type, read-only, ...)
        print(f"sfs_node: {type(exc).__name__}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    log = node.get_logger()
    executor = SfsExecutor(num_threads=4)
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    spinner = threading.Thread(target=spin, name="sfs-executor", daemon=True)
    spinner.start()  # diagnostics and lifecycle services answer while the models load

    failed = threading.Event()

    def autostart() -> None:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            log.error("autostart: configure failed (see above)")
            failed.set()
        elif not stop.is_set() and node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            log.error("autostart: activate failed (see above)")
            failed.set()
        if failed.is_set():
            stop.set()

    starter = None
    use_autostart = opts.autostart if opts.autostart is not None else node.get_parameter("autostart").value
    if use_autostart:
        starter = threading.Thread(target=autostart, name="sfs-autostart", daemon=True)
        starter.start()
    else:
        log.info("autostart off: waiting for lifecycle transitions (configure, activate)")

    while not stop.wait(0.2) and rclpy.ok():
        pass
    code = 1 if failed.is_set() else 0
    if starter is not None and starter.is_alive():
        if fast_exit:
            # Loading models or encoding text cannot be interrupted, and nothing of ours runs yet
            # besides it: leave now rather than after the load.
            log.info("shutting down during start-up (models still loading): not waiting for them")
            _exit_now(0)
        starter.join()
    log.info("shutting down")
    t0 = time.monotonic()
    node.close()
    executor.shutdown(timeout_sec=1.0)
    spinner.join(1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    if code == 0:
        print(f"sfs_node: stopped in {time.monotonic() - t0:.2f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
