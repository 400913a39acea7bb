"""Two worker threads: FastSAM on frame t+1 while CLIP names the masks of frame t.

    submit(frame) -> [in queue] -> segment thread -> [mid queue] -> label thread -> on_result

Both queues are bounded. In live mode (`drop=True`, the default) they keep the latest frames and
count what they drop, so latency never builds up behind a slow stage; in offline mode
(`drop=False`) `submit` blocks instead, so every frame of a bag or folder is processed.
An exception in a stage is logged, counted and reported to `on_error`; the next frame is served.

Live-camera rules (one Pipeline per camera): a frame whose `Frame.time` is older than the newest
one already submitted is refused, so results never go back in time; with `max_age` a frame that
is already too old when it reaches a stage is dropped instead of costing a model call; and every
delivered frame with a time reports its camera-to-output latency.

Each start() begins a new run with its own queues, stop event and in-flight count, which its
threads capture: a thread that outlives stop() (join timeout, an uninterruptible CLIP batch) can
never take a frame of a later run, deliver a result, or change the later run's counts.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection, Deque, Generic, TypeVar

import numpy as np
import torch

from sfs_ros.core import fusion
from sfs_ros.core.device import new_stream, on_stream
from sfs_ros.core.frame import Frame, Labels, Masks, Result, check_rgb_image
from sfs_ros.core.geometry import Geometry, GeometryConfig, back_project, scores_of
from sfs_ros.core.labeler import Labeler, LabelerConfig, LabelingCancelled, TextBank
from sfs_ros.core.segmenter import Segmenter, SegmenterConfig
from sfs_ros.core.semantic import HybridLabeler, SemanticConfig, SemanticVoteLabeler
from sfs_ros.core.tracker import Tracker, TrackerConfig

log = logging.getLogger("sfs_ros.pipeline")
#: A frame this many seconds older than the newest one is a rewind (a bag that loops, a camera
#: that restarts its clock), not a late frame: the order check starts again from it (counted in
#: `stats.rewinds`) and the tracker drops its tracks. Smaller steps back stay out_of_order.
REWIND_S = 3.0
T = TypeVar("T")
#: Latency stages kept by the pipeline; "camera_to_output" is delivery time minus Frame.time
#: on the pipeline's clock (only frames with a time report it).
STAGES = ("segment", "label", "fuse", "geometry", "total", "camera_to_output")
#: Names an `outputs` callable may return; any of them needs the fusion, "overlay" the overlay.
#: "points" (the 3D cloud) is implied by a frame with depth: geometry needs the fusion images.
OUTPUTS = ("label_image", "instance_image", "overlay", "points")


class BoundedQueue(Generic[T]):
    """A small FIFO that either drops its oldest item (keep-latest) or blocks when full."""

    def __init__(self, maxsize: int, drop: bool) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be >= 1")
        self.maxsize, self.drop = maxsize, drop
        self._items: Deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Add `item`; returns False when an older item was dropped to make room."""
        with self._cond:
            if self.drop:
                lost = len(self._items) >= self.maxsize
                if lost:
                    self._items.popleft()
                    self.dropped += 1
            else:
                lost = False
                while len(self._items) >= self.maxsize and not self._closed:
                    self._cond.wait(0.1)
            self._items.append(item)
            self._cond.notify_all()
            return not lost

    def get(self) -> T | None:
        """Next item, or None once the queue is closed."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass
class PipelineStats:
    """Counters and recent per-stage latencies (seconds); a snapshot, safe to read anywhere.

    `frames_in` counts the frames submit() took; once idle, frames_in == frames_out + dropped +
    errors + stale. `dropped` is queue drops only (keep-latest, or frames still queued at stop());
    `stale` frames were older than `max_age` at a stage and are not in `dropped`;
    `out_of_order` frames were refused by submit() and are not in `frames_in`.
    """

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    errors: int = 0
    masks_out: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    stale: int = 0
    out_of_order: int = 0
    rewinds: int = 0  # times the order check started again (REWIND_S), each frame counted in

    def percentile(self, stage: str, q: float) -> float:
        values = self.latencies.get(stage) or [float("nan")]
        return float(np.percentile(values, q))


@dataclass
class _Work:
    frame: Frame
    bank: TextBank
    t_submit: float
    masks: Masks | None = None
    timings: dict[str, float] = field(default_factory=dict)
    track: bool = True  # False: the frame stays out of its source's tracks (process(track=False))


class _Run:
    """One start()..stop() generation: what its two threads may touch, and nothing else.

    After stop() sets `stopped` its queues are closed and its result gate shut; once stop() has
    written its frames off as dropped (`retired`), its late bookkeeping is ignored.
    """

    def __init__(self, queue_size: int, drop: bool) -> None:
        self.inq: BoundedQueue[_Work] = BoundedQueue(queue_size, drop)
        self.mid: BoundedQueue[_Work] = BoundedQueue(queue_size, drop)
        self.stopped = threading.Event()
        #: held while a result is handed to on_result, so stop() can wait for a delivery that
        #: began before it and no delivery begins after it
        self.delivery = threading.RLock()
        self.in_flight = 0  # guarded by the Pipeline's lock
        self.retired = False  # guarded by the Pipeline's lock
        self.threads: list[threading.Thread] = []


ResultCallback = Callable[[Result], None]
ErrorCallback = Callable[[str, Frame, BaseException], None]
OutputsCallback = Callable[[], Collection[str]]


class Pipeline:
    """Owns the two stage threads; the caller owns the Segmenter and Labeler it passes in.

    The order check keeps the newest `Frame.time` for the Pipeline's life, across stop() and
    start(): one Pipeline serves one camera's stream. A frame more than `rewind` seconds older
    than the newest (a looping bag, a restarted clock) starts the order check again instead
    (`stats.rewinds`).
    `tracking` (core/tracker.py): with a TrackerConfig the Pipeline keeps one Tracker per camera,
    `Frame.source` (the node's Pipeline serves one camera; the evaluator's one takes every
    camera of a bag): instance ids become stable track ids and labels are smoothed over frames.
    `set_tracking` changes the config or turns tracking off while running.
    `max_age` (seconds, 0 = off): a frame whose `Frame.time` is older than that on `clock()` at
    submit, before segmenting or before labeling is dropped and counted in `stats.stale`.
    `clock` must be the clock `Frame.time` is on (the node passes its ROS clock).
    `outputs`, called once per frame in the label stage, names the images wanted (see OUTPUTS;
    other names are ignored, None = all): the fusion runs only when one of them is wanted,
    the overlay only when "overlay" is and the `overlay` attribute is True. `max_age`, `clock`,
    `outputs`, `overlay` and `overlay_alpha` may be changed while running.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        labeler: Labeler,
        on_result: ResultCallback,
        on_error: ErrorCallback | None = None,
        *,
        queue_size: int = 1,
        drop: bool = True,
        overlay: bool = True,
        overlay_alpha: float = 0.5,
        history: int = 200,
        max_age: float = 0.0,
        clock: Callable[[], float] = time.time,
        outputs: OutputsCallback | None = None,
        geometry: GeometryConfig = GeometryConfig(),
        tracking: TrackerConfig | None = None,
        rewind: float = REWIND_S,
    ) -> None:
        if not max_age >= 0:
            raise ValueError(f"max_age must be >= 0 seconds, got {max_age}")
        self.segmenter, self.labeler = segmenter, labeler
        self.on_result, self.on_error = on_result, on_error
        self.overlay, self.overlay_alpha = overlay, overlay_alpha
        self.max_age, self.clock, self.outputs = max_age, clock, outputs
        self.geometry = geometry  # how frames with depth become a cloud (core/geometry.py)
        self.tracking = tracking
        self.trackers: dict[str, Tracker] = {}  # Frame.source -> its tracker (label stage only)
        self.rewind = rewind
        self._queue_size, self._drop = queue_size, drop
        self._run: _Run | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # held from the order check to the enqueue, so concurrent submits cannot reorder frames
        self._submit_lock = threading.Lock()
        # one call per model at a time: a run's thread that outlives stop() finishes its call
        # before the next run's thread starts one (the models are not made for two callers)
        self._segment_lock, self._label_lock = threading.Lock(), threading.Lock()
        self._newest: float | None = None  # newest Frame.time submitted
        self._stats = PipelineStats()
        self._latencies = {s: collections.deque(maxlen=history) for s in STAGES}
        #: fusion's own CUDA stream (None on CPU): the default stream would wait for the
        #: segment stage's kernels of the next frame
        self._fuse_stream = new_stream(segmenter.device)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Pipeline":
        """Begin a new run (fresh queues and counts); a no-op while running."""
        if self._run is not None:
            return self
        self.labeler.bank  # fail early, in the caller's thread, when no vocabulary is set
        run = _Run(self._queue_size, self._drop)
        for name, loop in (("sfs-segment", self._segment_loop), ("sfs-label", self._label_loop)):
            run.threads.append(threading.Thread(target=loop, args=(run,), name=name, daemon=True))
        for thread in run.threads:
            thread.start()
        with self._lock:
            self._run = run
        return self

    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def in_flight(self) -> int:
        """Frames of the current run submitted but not yet out, dropped, failed or stale."""
        run = self._run
        return 0 if run is None else run.in_flight

    def stop(self, timeout: float = 2.0) -> bool:
        """End the run; True when both threads joined within `timeout` seconds.

        Frames still queued or mid-stage are counted as dropped and never come out, even from a
        thread that outlives the timeout: it only finishes its current model call.
        """
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return True
        run.stopped.set()
        run.inq.close()
        run.mid.close()
        deadline = time.monotonic() + timeout
        for thread in run.threads:
            if thread is not threading.current_thread():  # stop() from inside on_result
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in run.threads if t.is_alive()]
        if alive:
            log.error("pipeline threads still running after %.1f s: %s", timeout, alive)
        gate_shut = run.delivery.acquire(timeout=max(0.0, deadline - time.monotonic()))
        try:
            if not gate_shut:
                log.error("on_result still running after %.1f s", timeout)
            with self._lock:
                self._stats.dropped += run.in_flight
                run.in_flight, run.retired = 0, True
                self._idle.notify_all()
        finally:
            if gate_shut:
                run.delivery.release()
        return not alive

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_tracking(self, config: TrackerConfig | None) -> None:
        """A new tracker config (running trackers keep their tracks and take it from the next
        frame), or None: tracking off, the tracks dropped. Safe while running without waiting
        for the label stage: both are single reference swaps, read once per frame."""
        if config is None:
            self.trackers = {}
        self.tracking = config

    def _tracker(self, source: str) -> Tracker | None:
        """The camera's tracker with the current config (label lock held), None when off."""
        config = self.tracking
        if config is None:
            return None
        tracker = self.trackers.get(source)
        if tracker is None:
            tracker = self.trackers[source] = Tracker(config)
        tracker.config = config
        return tracker

    # ------------------------------------------------------------------ input
    def submit(self, frame: Frame) -> bool:
        """Queue a frame (RGB checked here, in the caller's thread). False if one was dropped:
        an older queued frame (keep-latest), or this one when it is older than the newest frame
        submitted (`stats.out_of_order`) or than `max_age` (`stats.stale`).

        The vocabulary is bound at submission: a vocabulary change never mixes into a frame.
        """
        check_rgb_image(frame.image)
        with self._submit_lock:
            with self._lock:
                run = self._run
                if run is None:
                    raise RuntimeError("pipeline is not running: call start() first")
                work = _Work(frame, self.labeler.bank, time.monotonic())
                if self._older_than_newest(frame):
                    return False
                self._stats.frames_in += 1
                run.in_flight += 1
            if self._expired(run, work):
                return False
            kept = run.inq.put(work)
        if not kept:
            self._finish(run, dropped=True)
        return kept

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every frame submitted to the current run came out, was dropped or failed."""
        with self._idle:
            run = self._run
            return run is None or self._idle.wait_for(lambda: run.in_flight == 0, timeout)

    def _older_than_newest(self, frame: Frame) -> bool:
        """Order check (caller holds the lock): strictly older than the newest time is refused."""
        if frame.time is None:
            return False
        if self._newest is not None and self._newest - frame.time > self.rewind:
            self._stats.rewinds += 1  # the tracker sees the time go back and resets itself
        elif self._newest is not None and frame.time < self._newest:
            self._stats.out_of_order += 1
            return True
        self._newest = frame.time
        return False

    def _expired(self, run: _Run, work: _Work) -> bool:
        """True (and counted) when the frame is older than `max_age` now."""
        t, max_age = work.frame.time, self.max_age
        if max_age <= 0 or t is None or self.clock() - t <= max_age:
            return False
        self._finish(run, stale=True)
        return True

    # ------------------------------------------------------------------ synchronous use
    def process(self, frame: Frame, track: bool = True) -> Result:
        """Run both stages in the caller's thread (benchmarks, tests, one-off calls).

        Same outputs, vocabulary version and camera-to-output timing as the threaded path, but
        no order or `max_age` check and no stats: the caller asked for this very frame.
        `track=False`: a one-off image (a prompt's) neither joins nor changes any tracks; its
        instance ids are mask indices, its labels this frame's own.
        """
        work = _Work(frame, self.labeler.bank, time.monotonic(), track=track)
        self._run_segment(work)
        result = self._run_label(work, cancelled=lambda: False)
        self._time_to_output(result)
        return result

    # ------------------------------------------------------------------ stages
    def _run_segment(self, work: _Work) -> None:
        with self._segment_lock:
            t0 = time.monotonic()
            work.masks = self.segmenter.segment(work.frame.image)
            work.timings["segment"] = time.monotonic() - t0

    def _run_label(self, work: _Work, cancelled: Callable[[], bool]) -> Result:
        frame, masks, bank = work.frame, work.masks, work.bank
        assert masks is not None
        with self._label_lock:
            t0 = time.monotonic()
            tracker = self._tracker(frame.source) if work.track else None
            plan = None if tracker is None else tracker.plan(masks, version=bank.version, time=frame.time)
            t_plan = time.monotonic()
            todo = masks if plan is None or plan.label_all else masks.subset(plan.to_label)
            labels = self.labeler.label(frame.image, todo, bank, cancelled=cancelled)
            t_label = time.monotonic()
            tracks = None
            if tracker is not None and plan is not None:
                labels, tracks = tracker.commit(plan, labels, len(bank.vocabulary), self.labeler.threshold)
            t1 = time.monotonic()
        timings = dict(work.timings, label=t_label - t_plan)
        if tracks is not None:
            timings["track"] = (t_plan - t0) + (t1 - t_label)
        label_image, instance_image, over = self._images(frame, masks, labels, bank)
        t2 = time.monotonic()
        if label_image is not None:
            timings["fuse"] = t2 - t1
        geometry = self._geometry(frame, labels, label_image, instance_image)
        t3 = time.monotonic()
        if geometry is not None:
            timings["geometry"] = t3 - t2
        if tracks is not None and instance_image is not None:
            # after geometry, which keys its statistics by mask index: the published image (and
            # the cloud's instance field) carry the track ids
            lut = fusion.track_lut(tracks.image_values())
            instance_image = lut[instance_image]
            if geometry is not None:
                geometry.points["instance"] = lut[geometry.points["instance"]]
        timings["total"] = t3 - work.t_submit
        return Result(
            frame=frame,
            masks=masks,
            labels=labels,
            label_image=label_image,
            instance_image=instance_image,
            overlay=over,
            class_names=bank.vocabulary.names,
            vocabulary_name=bank.vocabulary.name,
            random_weights=self.segmenter.random_weights or self.labeler.random_weights,
            vocabulary_version=bank.version,
            timings=timings,
            geometry=geometry,
            tracks=tracks,
        )

    def _geometry(self, frame: Frame, labels: Labels, label_image: np.ndarray | None,
                  instance_image: np.ndarray | None) -> Geometry | None:
        """The cloud and 3D instances of a frame with depth (core/geometry.py), else None."""
        if frame.depth is None or label_image is None or instance_image is None:
            return None
        return back_project(frame.depth, frame.intrinsics, frame.image, label_image, instance_image,
                            scores_of(labels.class_ids, labels.scores), self.geometry)

    def _images(self, frame: Frame, masks: Masks, labels: Labels, bank: TextBank
                ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Label, instance and overlay images, each None when no wanted output needs it."""
        wanted = set(OUTPUTS if self.outputs is None else self.outputs())
        if not self.overlay:
            wanted.discard("overlay")
        if frame.depth is not None:
            wanted.add("points")
        if wanted.isdisjoint(OUTPUTS):
            return None, None, None
        with on_stream(self._fuse_stream):  # device-held masks: painted on the pipeline's stream
            label_image, instance_image = fusion.fuse(masks, labels)
        over = None
        if "overlay" in wanted:
            over = fusion.overlay(frame.image, label_image, instance_image, bank.vocabulary.palette,
                                  self.overlay_alpha)
        return label_image, instance_image, over

    def _time_to_output(self, result: Result) -> None:
        """Camera-to-output latency, on the clock Frame.time is on, into the Result's timings."""
        if result.frame.time is not None:
            result.timings["camera_to_output"] = self.clock() - result.frame.time

    def _segment_loop(self, run: _Run) -> None:
        while (work := run.inq.get()) is not None:
            if self._expired(run, work):
                continue
            try:
                self._run_segment(work)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the stage
                self._fail(run, "segment", work, exc)
                continue
            if not run.mid.put(work):
                self._finish(run, dropped=True)

    def _label_loop(self, run: _Run) -> None:
        while (work := run.mid.get()) is not None:
            if self._expired(run, work):
                continue
            try:
                result = self._run_label(work, cancelled=run.stopped.is_set)
            except LabelingCancelled:
                return  # stop() counts the cancelled frame as dropped
            except Exception as exc:  # noqa: BLE001
                self._fail(run, "label", work, exc)
                continue
            self._deliver(run, result)

    def _deliver(self, run: _Run, result: Result) -> None:
        """Hand a result over unless its run was stopped (stop() then counts it as dropped)."""
        with run.delivery:
            if run.stopped.is_set():
                return
            self._time_to_output(result)
            try:
                self.on_result(result)
            except Exception:  # noqa: BLE001 - a consumer bug must not kill the stage
                log.exception("on_result callback failed")
            self._finish(run, result=result)  # after delivery: wait_idle() means "all delivered"

    # ------------------------------------------------------------------ bookkeeping
    def _fail(self, run: _Run, stage: str, work: _Work, exc: BaseException) -> None:
        log.error("%s stage failed on frame %s: %s: %s", stage, work.frame.seq, type(exc).__name__, exc)
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            # the frame is skipped; hand its cached blocks back so the next frame can fit
            torch.cuda.empty_cache()
        self._finish(run, error=True)
        if self.on_error is not None and not run.stopped.is_set():
            try:
                self.on_error(stage, work.frame, exc)
            except Exception:  # noqa: BLE001
                log.exception("on_error callback failed")

    def _finish(self, run: _Run, result: Result | None = None, dropped: bool = False,
                error: bool = False, stale: bool = False) -> None:
        """Account for one frame of `run`; ignored once stop() wrote the run's frames off."""
        with self._lock:
            if run.retired:
                return
            run.in_flight -= 1
            stats = self._stats
            stats.dropped += dropped
            stats.errors += error
            stats.stale += stale
            if result is not None:
                stats.frames_out += 1
                stats.masks_out += len(result.masks)
                for stage, seconds in result.timings.items():
                    if stage in self._latencies:
                        self._latencies[stage].append(seconds)
            self._idle.notify_all()

    @property
    def stats(self) -> PipelineStats:
        with self._lock:
            return replace(self._stats, latencies={k: list(v) for k, v in self._latencies.items()})


def load_models(
    segmenter_config: SegmenterConfig,
    labeler_config: LabelerConfig,
    fallback_to_random: bool = False,
    semantic_config: SemanticConfig | None = None,
    hybrid: bool = False,
) -> tuple[Segmenter, Any]:
    """Build the segmenter and the labeler; with `fallback_to_random`, a missing checkpoint says
    so and the same architecture is built with random weights (the Result then says so).

    The labeler is CLIP (`labeler_config`, modes crop/dense/hybrid) unless `semantic_config` is
    given: then the semantic-vote labeler, or with `hybrid` the semantic vote backed by CLIP.
    """
    from sfs_ros.core.weights import WeightsMissingError

    def build(cls, cfg):
        try:
            return cls(cfg)
        except WeightsMissingError as exc:
            if not fallback_to_random:
                raise
            log.warning("%s\n-> continuing with RANDOM weights: every output is marked as such", exc)
            return cls(replace(cfg, random_weights=True))

    segmenter = build(Segmenter, segmenter_config)
    if semantic_config is None:
        return segmenter, build(Labeler, labeler_config)
    semantic = build(SemanticVoteLabeler, semantic_config)
    if not hybrid:
        return segmenter, semantic
    return segmenter, HybridLabeler(semantic, build(Labeler, labeler_config))
