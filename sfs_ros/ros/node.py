"""sfs_node: camera images in, FastSAM masks named by CLIP out (an rclpy lifecycle node).

Run it (the command is sfs_ros/ros/main.py; `python -m sfs_ros.ros.main` works the same):
    sfs_node --ros-args -p random_weights:=true -r image:=/camera/image_raw
    python -m sfs_ros.ros.node --ros-args --params-file config/sfs.yaml -p device:=cpu
By default the node configures and activates itself (parameter `autostart`, or the
`--autostart` / `--no-autostart` flag before `--ros-args`); with autostart off it waits for a
lifecycle manager (`ros2 lifecycle set /sfs_node configure`, then `activate`).

Topics (node `sfs_node`, every name remappable):
    in   <image_topics[i]>        sensor_msgs/Image, or sensor_msgs/CompressedImage when the
                                  name ends in /compressed; QoS from `input_reliability`
    in   <depth_topics[i]>        sensor_msgs/Image 16UC1 (x depth_scale) or 32FC1 metres,
                                  registered to image i; paired by stamp within `sync_slop`
         <camera_info_topics[i]>  sensor_msgs/CameraInfo of the depth image (default: the depth
                                  topic's sibling camera_info); the latest one is used
    out  ~/label_image            class id per pixel, mono16 (unlabeled 65535) or mono8 (255)
         ~/instance_image         mono16, 1-based instance id per pixel (0 = no mask); the id is
                                  Instance.instance_id in ~/instances; with `tracking` the
                                  camera's stable track id, wrapped onto 1..65535 (README)
         ~/overlay                rgb8, the input blended with class colours (publish_overlay)
         ~/instances              sfs_ros/InstanceArray, one mask per instance (publish_instances)
         ~/points                 sensor_msgs/PointCloud2 in the depth image's frame: x y z rgb
                                  label instance score (README "RGB-D"); with depth_topics only
         ~/markers                visualization_msgs/MarkerArray, a box and a text per instance
                                  with depth, DELETEALL first; with depth_topics only
         ~/prompt/instances       sfs_ros/InstanceArray, the instance under a click (prompt_clicks)
         ~/prompt/overlay         rgb8, the latest frame with the clicked instance highlighted
    in   <image>_mouse_left       geometry_msgs/PointStamped pixel clicks (rqt_image_view), on
                                  each camera topic and each ~/overlay (prompt_clicks)
    srv  ~/segment_prompt         sfs_ros/SegmentPrompt: points, boxes, texts on a request's
                                  image or the named camera's latest frame (README "Prompts")
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
from the pipeline's label thread. Each camera's callbacks run in its own mutually exclusive
group (cameras in parallel, one camera's frames in order; the pipeline also refuses a frame
older than one it took, and with `max_frame_age` one that waited too long). One Segmenter and
one Labeler (one model load) serve every camera. A vocabulary change is validated in the
parameter callback and encoded by a worker thread the node owns, which latches the new
LabelInfo (with its `vocabulary_version`) before swapping the new bank in; the Pipeline binds
the bank at submit, so no frame mixes two and every InstanceArray names its version. The label,
instance and overlay images are made only while someone subscribes to them. Diagnostics run
in their own callback group, so they are published while frames are in flight.

This module is the lifecycle and the wiring; the other jobs live next door in sfs_ros/ros/:
    main.py            the sfs_node command: signals, autostart, exit codes
    executor.py        SfsExecutor, the executor to spin this node with
    camera.py          Camera, one input topic (subscription, pipeline, publishers, counters)
    diagnostics.py     per-camera counters and the DiagnosticStatus built from them
    qos.py             QoS profiles of inputs and outputs
    params.py          parameter declarations and validation
    workers.py         LatestWorker, the vocabulary-encoding thread
    logging_bridge.py  the core's Python logging forwarded to the ROS logger
    convert.py         messages <-> numpy / Frame / Result
"""
from __future__ import annotations

import array
import logging
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from sfs_ros.core.frame import SfsError
from sfs_ros.core.geometry import GeometryConfig
from sfs_ros.core.options import TRACKING_OPTIONS
from sfs_ros.core.tracker import tracker_config
from sfs_ros.core.vocabulary import Vocabulary, vocabulary_note
from sfs_ros.msg import InstanceArray, LabelInfo
from sfs_ros.ros import convert, params
from sfs_ros.ros.camera import Camera, is_compressed
from sfs_ros.ros.cloud import to_cloud
from sfs_ros.ros.diagnostics import NodeFacts, camera_status, node_status
from sfs_ros.ros.logging_bridge import RosLogBridge
from sfs_ros.ros.naming import camera_name, output_namespaces
from sfs_ros.ros.qos import QOS_LATCHED, QOS_OUTPUT, offered_reliabilities, qos_input
from sfs_ros.ros.rgbd import DepthLink, depth_inputs, marker_array
from sfs_ros.ros.workers import LatestWorker

#: Parameters whose change reaches each camera's tracker at once (Pipeline.set_tracking).
TRACKING_NAMES = frozenset(o.name for o in TRACKING_OPTIONS)

#: Per-frame outputs of each camera, relative to its output namespace.
OUTPUTS = ("label_image", "instance_image", "overlay", "instances")
DIAGNOSTICS_PERIOD_S = 1.0
BAD_INPUT_LOG_PERIOD_S = 5.0


def _plain(value: Any) -> Any:
    """Parameter value with arrays as tuples (rclpy gives lists, or array.array for numbers)."""
    return tuple(value) if isinstance(value, (list, tuple, array.array)) else value


def _vocabulary_for(labeler: Any, values: dict[str, Any]) -> Vocabulary:
    """core.config.vocabulary_for, imported late: torch loads at configure, not at start-up."""
    from sfs_ros.core.config import vocabulary_for

    return vocabulary_for(labeler, values)


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
                self.declare_parameter(spec.name, spec.default, params.descriptor(spec))
        except Exception:
            # A refused override: leave no half-built node behind for the context to destroy.
            LifecycleNode.destroy_node(self)
            raise
        self.add_pre_set_parameters_callback(self._coerce_string_arrays)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._lock = threading.RLock()  # models, cameras, vocabulary
        self._closing = False
        self._cameras: list[Camera] = []
        self._segmenter: Any = None
        self._labeler: Any = None
        self._vocabulary: Vocabulary | None = None
        self._device = "-"
        self._label_info_pub: Any = None
        self._prompts: Any = None  # ros/prompt_service.PromptService while configured
        self._encoding = "mono16"
        self._publish_overlay = bool(self.get_parameter("publish_overlay").value)
        self._publish_instances = bool(self.get_parameter("publish_instances").value)

        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, callback_group=self._diag_group
        )
        self._vocab_worker = LatestWorker(self._apply_vocabulary, name="sfs-vocabulary")
        # The core logs with Python logging ("sfs_ros.*"): forward it to the ROS logger (and only
        # there, while this node lives, so lines are not printed twice).
        core_log = logging.getLogger("sfs_ros")
        self._log_bridge = RosLogBridge(self.get_logger().get_child("core"))
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
                    cam.pipeline.max_age = float(values["max_frame_age"])
                    if names & TRACKING_NAMES:
                        cam.pipeline.set_tracking(tracker_config(values))
            labeler = self._labeler
            if labeler is not None and "score_threshold" in names:
                labeler.threshold = float(values["score_threshold"])
        if labeler is None:
            return  # unconfigured: on_configure reads the parameters
        if names & {"vocabulary", "prompt_templates"}:
            note = vocabulary_note(values["vocabulary"])
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
        """Worker thread: encode the text embeddings (a new bank and version), latch its
        LabelInfo, then swap the bank in (one reference), all between frames: a frame of the new
        version is never published before the LabelInfo that explains it."""
        vocabulary, templates = job
        labeler = self._labeler
        if labeler is None or self._closing:
            return
        t0 = time.monotonic()
        try:
            bank = labeler.prepare_vocabulary(vocabulary, templates)
        except Exception as exc:  # noqa: BLE001 - keep the old vocabulary, say why
            self.get_logger().error(
                f"vocabulary {vocabulary.name!r} could not be encoded, keeping "
                f"{self._vocabulary.name if self._vocabulary else 'none'}: {type(exc).__name__}: {exc}"
            )
            return
        with self._lock:
            if self._labeler is not labeler:
                return  # cleaned up meanwhile
            self._publish_label_info(bank)
            labeler.use(bank)
            self._vocabulary = vocabulary
        self.get_logger().info(
            f"vocabulary now {vocabulary.name!r} (version {bank.version}): {len(vocabulary)} "
            f"classes ({', '.join(vocabulary.names[:8])}{', ...' if len(vocabulary) > 8 else ''}), "
            f"encoded in {time.monotonic() - t0:.2f} s"
        )

    def wait_vocabulary(self, timeout: float = 30.0) -> bool:
        """Block until pending vocabulary changes are applied (tests, tools)."""
        return self._vocab_worker.wait_idle(timeout)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load both models once, encode the vocabulary, create the publishers."""
        from sfs_ros.core.config import build_configs, load_models
        from sfs_ros.core.options import SEMANTIC_MODES
        from sfs_ros.core.weights import WeightsMissingError

        log = self.get_logger()
        values = self._values()
        try:
            reason = params.validate(values)  # loads the vocabulary: a bad one fails before the models
            if reason:
                raise SfsError(reason)
            topics = list(values["image_topics"])
            namespaces = output_namespaces(topics)
            note = vocabulary_note(values["vocabulary"])
            if note and values["labeling_mode"] not in SEMANTIC_MODES:
                log.warning(note)
            configs = build_configs(values)
            t0 = time.monotonic()
            segmenter, labeler = load_models(configs)
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
                cam = Camera(topic=topic, namespace=namespace, name=camera_name(topic),
                              compressed=is_compressed(topic))
                for name, msg_type in zip(OUTPUTS, (Image, Image, Image, InstanceArray)):
                    cam.publishers[name] = self.create_lifecycle_publisher(
                        msg_type, cam.output(name), QOS_OUTPUT
                    )
                self._cameras.append(cam)
            for cam, inputs in zip(self._cameras, depth_inputs(values)):
                if inputs is not None:
                    self._add_depth(cam, *inputs, values)
            self._label_info_pub = self.create_lifecycle_publisher(
                LabelInfo, "~/label_info", QOS_LATCHED
            )
            from sfs_ros.ros.prompt_service import PromptService

            self._prompts = PromptService(self, self._cameras, lambda: self._labeler,
                                          clicks=bool(values["prompt_clicks"]))
        random_now = segmenter.random_weights or labeler.random_weights
        log.info(
            f"configured: FastSAM {configs.segmenter.model} + {configs.mode} labeling on "
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
        qos = qos_input(values["input_reliability"], values["queue_size"])
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
                        max_age=values["max_frame_age"], clock=self._now,
                        outputs=lambda cam=cam: self._wanted_outputs(cam),
                        tracking=tracker_config(values),  # new tracks on every activate
                        geometry=GeometryConfig.from_values(values),
                    ).start()
                    cam.active_since = time.monotonic()
                    cam.subscription = self._subscribe(cam, qos)
                    self._subscribe_depth(cam, qos)
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

    def _subscribe(self, cam: Camera, qos: QoSProfile) -> Any:
        msg_type = CompressedImage if cam.compressed else Image

        def on_incompatible(event: Any) -> None:
            cam.count_incompatible_qos()
            self.get_logger().warning(
                f"{cam.where}: a publisher offers QoS incompatible with this subscription "
                f"(input_reliability={self.get_parameter('input_reliability').value}); its "
                "frames will not arrive. Most camera drivers publish best_effort: use "
                "input_reliability:=best_effort",
                throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S,
            )

        def on_matched(event: Any) -> None:
            cam.set_matched(int(event.current_count))

        def on_lost(event: Any) -> None:
            cam.count_lost(int(event.total_count_change))

        events = SubscriptionEventCallbacks(
            incompatible_qos=on_incompatible, matched=on_matched, message_lost=on_lost
        )
        try:
            return self.create_subscription(
                msg_type, cam.topic, lambda msg, info: self._on_image(cam, msg, info), qos,
                callback_group=cam.callback_group, event_callbacks=events,
            )
        except Exception:  # noqa: BLE001 - a middleware without these events: plain subscription
            events = SubscriptionEventCallbacks(incompatible_qos=on_incompatible)
            return self.create_subscription(
                msg_type, cam.topic, lambda msg, info: self._on_image(cam, msg, info), qos,
                callback_group=cam.callback_group, event_callbacks=events,
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
                if cam.depth is not None:
                    for sub in cam.depth.subscriptions:
                        self.destroy_subscription(sub)
                    cam.depth.subscriptions = []
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
            if self._prompts is not None:
                self._prompts.destroy()
                self._prompts = None
            self._cameras = []
            device = getattr(self._segmenter, "device", None)
            self._segmenter = self._labeler = None
            self._vocabulary = None
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ data path
    def _on_image(self, cam: Camera, msg: Image | CompressedImage, info: Any = None) -> None:
        """Subscription callback: convert and submit, never wait for the models."""
        seq = cam.count_frame(info)
        pipeline = cam.pipeline
        if pipeline is None:
            return
        try:
            frame = convert.to_frame(msg, source=cam.topic, seq=seq)
        except Exception as exc:  # noqa: BLE001 - a bad message must never reach the executor
            self._bad_input(cam, exc)
            return
        link = cam.depth  # with depth, the frame may wait (bounded) for its depth image
        self._submit(cam, pipeline, [frame] if link is None else link.on_colour(frame, time.monotonic()))

    def _submit(self, cam: Camera, pipeline: Any, frames: list[Any]) -> None:
        for frame in frames:
            try:
                pipeline.submit(frame)  # older: refused, counted
            except RuntimeError as exc:
                if pipeline.running:
                    self._bad_input(cam, exc)
                # else: the pipeline stopped between the check and the submit (deactivating)
            except Exception as exc:  # noqa: BLE001 - a bad frame must never reach the executor
                self._bad_input(cam, exc)

    # ------------------------------------------------------------------ depth (ros/rgbd.py)
    def _add_depth(self, cam: Camera, depth_topic: str, info_topic: str, values: dict[str, Any]) -> None:
        """Configure: one camera's depth link and its ~/points and ~/markers publishers."""
        cam.depth = DepthLink(
            depth_topic, info_topic, float(values["sync_slop"]), float(values["depth_scale"]),
            count=cam.count_depth_issue,
            warn=lambda text: self.get_logger().warning(f"{text}; serving 2D outputs only"))
        for name, msg_type in (("points", PointCloud2), ("markers", MarkerArray)):
            cam.publishers[name] = self.create_lifecycle_publisher(msg_type, cam.output(name), QOS_OUTPUT)

    def _subscribe_depth(self, cam: Camera, qos: QoSProfile) -> None:
        """Activate: subscribe to the camera's depth and camera_info (same callback group as its
        colour images, so the pairing runs one message at a time)."""
        link = cam.depth
        if link is None:
            return
        link.reset()
        link.subscriptions = [
            self.create_subscription(Image, link.depth_topic, lambda msg: self._on_depth(cam, msg),
                                     qos, callback_group=cam.callback_group),
            self.create_subscription(CameraInfo, link.info_topic, link.on_camera_info, qos,
                                     callback_group=cam.callback_group),
        ]

    def _on_depth(self, cam: Camera, msg: Image) -> None:
        link, pipeline = cam.depth, cam.pipeline
        if link is not None and pipeline is not None:
            self._submit(cam, pipeline, link.on_depth(msg, time.monotonic()))

    def _publish_3d(self, cam: Camera, result: Any, header: Header) -> None:
        """~/points and ~/markers in the depth image's frame, stamped like the input."""
        header = Header(stamp=header.stamp, frame_id=cam.depth.frame_id if cam.depth else "")
        pub = cam.publishers.get("points")
        if pub is not None:
            pub.publish(to_cloud(result.geometry.points, header))
            with cam.lock:
                cam.clouds += 1
        pub = cam.publishers.get("markers")
        vocabulary = self._vocabulary
        if pub is not None and vocabulary is not None and pub.get_subscription_count() > 0:
            pub.publish(marker_array(result, header, vocabulary.palette))

    def _bad_input(self, cam: Camera, exc: BaseException) -> None:
        """Count a refused frame and say why, at most once per period per camera."""
        reason = cam.count_bad_input(exc)
        self.get_logger().warning(
            f"{cam.where}: ignoring an image: {reason}", throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S
        )

    def _on_result(self, cam: Camera, result: Any) -> None:
        """Pipeline label thread: publish every output with the input image's header."""
        if self._closing:
            return
        cam.latest = result  # prompts without an image reuse its masks and embeddings
        try:
            header = convert.header_of(result.frame)
            pubs = cam.publishers
            pub = pubs.get("label_image")
            if pub is not None and result.label_image is not None:
                pub.publish(convert.label_image_msg(result.label_image, self._encoding, header))
            pub = pubs.get("instance_image")
            if pub is not None and result.instance_image is not None:
                pub.publish(convert.numpy_to_image(result.instance_image, "mono16", header))
            pub = pubs.get("overlay")
            if pub is not None and self._publish_overlay and result.overlay is not None:
                pub.publish(convert.numpy_to_image(result.overlay, "rgb8", header))
            pub = pubs.get("instances")
            if pub is not None and self._publish_instances and pub.get_subscription_count() > 0:
                pub.publish(convert.result_to_instances(result, header))
            if result.geometry is not None:
                self._publish_3d(cam, result, header)
            with cam.lock:
                cam.published += 1
        except Exception as exc:  # noqa: BLE001 - e.g. the context went down during shutdown
            if not self._closing:
                self.get_logger().error(
                    f"{cam.where}: publishing failed: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S,
                )

    def _on_pipeline_error(self, cam: Camera, stage: str, exc: BaseException) -> None:
        self.get_logger().warning(
            f"{cam.where}: {stage} stage failed on a frame: {type(exc).__name__}: {exc}",
            throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S,
        )

    def _wanted_outputs(self, cam: Camera) -> set[str]:
        """Label thread, per frame: the images someone subscribes to (others are not made)."""
        return {name for name in OUTPUTS  # publish_overlay gates the overlay: pipeline.overlay
                if (pub := cam.publishers.get(name)) is not None and pub.get_subscription_count()}

    def _now(self) -> float:
        """The node's clock in seconds (sim time with use_sim_time): what frame ages use."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish_label_info(self, bank: Any = None) -> None:
        """Latch what the label image values mean for `bank` (default: the current one)."""
        with self._lock:
            pub, labeler = self._label_info_pub, self._labeler
            if pub is None or labeler is None:
                return
            bank = bank or labeler.bank
            msg = convert.vocabulary_to_label_info(
                bank.vocabulary,
                Header(stamp=self.get_clock().now().to_msg()),
                encoding=self._encoding,
                threshold=labeler.threshold,
                threshold_kind=labeler.threshold_kind,
                vocabulary_version=bank.version,
                random_weights=self._segmenter.random_weights or labeler.random_weights,
            )
            pub.publish(msg)  # under the lock: never after a newer vocabulary's LabelInfo

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        """Timer (own callback group): one status per camera (diagnostics.camera_status)."""
        if self._closing:
            return
        out = DiagnosticArray()
        out.header.stamp = self.get_clock().now().to_msg()
        with self._lock:
            cameras = list(self._cameras)
            vocabulary, segmenter, labeler = self._vocabulary, self._segmenter, self._labeler
        facts = NodeFacts(
            name=self.get_fully_qualified_name(),
            state=self._state_machine.current_state[1],
            device=self._device,
            vocabulary=vocabulary,
            random_weights=bool(segmenter is not None
                                and (segmenter.random_weights or labeler.random_weights)),
            input_reliability=str(self.get_parameter("input_reliability").value),
            count_publishers=self.count_publishers,
            offered_reliabilities=lambda topic: offered_reliabilities(
                self.get_publishers_info_by_topic(topic)),
            warn=self._warn_no_frame,
        )
        if not cameras:
            out.status.append(node_status(facts))
        for cam in cameras:
            out.status.append(camera_status(cam, cam.stats(), facts))
        try:
            self._diag_pub.publish(out)
        except Exception:  # noqa: BLE001 - shutting down
            pass

    def _warn_no_frame(self, text: str) -> None:
        """A publisher is on an input topic but no frame comes: say so, at most every 10 s."""
        self.get_logger().warning(text, throttle_duration_sec=10.0)

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


if __name__ == "__main__":  # `python -m sfs_ros.ros.node`, as documented: the sfs_node command
    from sfs_ros.ros.main import main

    sys.exit(main())
