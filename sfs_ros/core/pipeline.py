"""Two worker threads: FastSAM on frame t+1 while CLIP names the masks of frame t.

    submit(frame) -> [in queue] -> segment thread -> [mid queue] -> label thread -> on_result

Both queues are bounded. In live mode (`drop=True`, the default) they keep the latest frames and
count what they drop, so latency never builds up behind a slow stage; in offline mode
(`drop=False`) `submit` blocks instead, so every frame of a bag or folder is processed.
An exception in a stage is logged, counted and reported to `on_error`; the next frame is served.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Deque, Generic, TypeVar

import numpy as np
import torch

from sfs_ros.core import fusion
from sfs_ros.core.frame import Frame, Masks, Result, check_rgb_image
from sfs_ros.core.labeler import Labeler, LabelerConfig, LabelingCancelled, TextBank
from sfs_ros.core.segmenter import Segmenter, SegmenterConfig
from sfs_ros.core.semantic import HybridLabeler, SemanticConfig, SemanticVoteLabeler

log = logging.getLogger("sfs_ros.pipeline")
T = TypeVar("T")
STAGES = ("segment", "label", "fuse", "total")


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
    """Counters and recent per-stage latencies (seconds); a snapshot, safe to read anywhere."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    errors: int = 0
    masks_out: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)

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


ResultCallback = Callable[[Result], None]
ErrorCallback = Callable[[str, Frame, BaseException], None]


class Pipeline:
    """Owns the two stage threads; the caller owns the Segmenter and Labeler it passes in."""

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
    ) -> None:
        self.segmenter, self.labeler = segmenter, labeler
        self.on_result, self.on_error = on_result, on_error
        self.overlay, self.overlay_alpha = overlay, overlay_alpha
        self._queue_size, self._drop = queue_size, drop
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stats = PipelineStats()
        self._latencies = {s: collections.deque(maxlen=history) for s in STAGES}
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Pipeline":
        if self._threads:
            return self
        self.labeler.bank  # fail early, in the caller's thread, when no vocabulary is set
        self._stop.clear()
        # fresh queues: a stopped pipeline's queues are closed for good, so it can start again
        self._in: BoundedQueue[_Work] = BoundedQueue(self._queue_size, self._drop)
        self._mid: BoundedQueue[_Work] = BoundedQueue(self._queue_size, self._drop)
        for name, loop in (("sfs-segment", self._segment_loop), ("sfs-label", self._label_loop)):
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop both threads; True when both joined within `timeout` seconds."""
        self._stop.set()
        if not self._threads:
            return True
        self._in.close()
        self._mid.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.error("pipeline threads still running after %.1f s: %s", timeout, alive)
        self._threads = []
        with self._lock:  # frames still queued or cancelled mid-stage never come out
            self._stats.dropped += self._in_flight
            self._in_flight = 0
            self._idle.notify_all()
        return not alive

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ input
    def submit(self, frame: Frame) -> bool:
        """Queue a frame (RGB checked here, in the caller's thread). False if one was dropped.

        The vocabulary is bound at submission: a vocabulary change never mixes into a frame.
        """
        check_rgb_image(frame.image)
        if not self._threads:
            raise RuntimeError("pipeline is not running: call start() first")
        with self._lock:
            self._stats.frames_in += 1
            self._in_flight += 1
        kept = self._in.put(_Work(frame, self.labeler.bank, time.monotonic()))
        if not kept:
            self._finish(dropped=True)
        return kept

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted frame came out, was dropped or failed."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    # ------------------------------------------------------------------ synchronous use
    def process(self, frame: Frame) -> Result:
        """Run both stages in the caller's thread (benchmarks, tests, one-off calls)."""
        work = _Work(frame, self.labeler.bank, time.monotonic())
        self._run_segment(work)
        return self._run_label(work)

    # ------------------------------------------------------------------ stages
    def _run_segment(self, work: _Work) -> None:
        t0 = time.monotonic()
        work.masks = self.segmenter.segment(work.frame.image)
        work.timings["segment"] = time.monotonic() - t0

    def _run_label(self, work: _Work) -> Result:
        frame, masks, bank = work.frame, work.masks, work.bank
        assert masks is not None
        t0 = time.monotonic()
        labels = self.labeler.label(frame.image, masks, bank, cancelled=self._stop.is_set)
        t1 = time.monotonic()
        label_image, instance_image = fusion.fuse(masks, labels)
        palette = bank.vocabulary.palette
        over = None
        if self.overlay:
            over = fusion.overlay(frame.image, label_image, instance_image, palette, self.overlay_alpha)
        t2 = time.monotonic()
        timings = dict(work.timings, label=t1 - t0, fuse=t2 - t1, total=t2 - work.t_submit)
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
            timings=timings,
        )

    def _segment_loop(self) -> None:
        while (work := self._in.get()) is not None:
            try:
                self._run_segment(work)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the stage
                self._fail("segment", work, exc)
                continue
            if not self._mid.put(work):
                self._finish(dropped=True)

    def _label_loop(self) -> None:
        while (work := self._mid.get()) is not None:
            try:
                result = self._run_label(work)
            except LabelingCancelled:
                return  # stop() counts the cancelled frame as dropped
            except Exception as exc:  # noqa: BLE001
                self._fail("label", work, exc)
                continue
            try:
                self.on_result(result)
            except Exception:  # noqa: BLE001 - a consumer bug must not kill the stage
                log.exception("on_result callback failed")
            self._finish(result=result)  # after delivery, so wait_idle() means "all delivered"

    # ------------------------------------------------------------------ bookkeeping
    def _fail(self, stage: str, work: _Work, exc: BaseException) -> None:
        log.error("%s stage failed on frame %s: %s: %s", stage, work.frame.seq, type(exc).__name__, exc)
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            # the frame is skipped; hand its cached blocks back so the next frame can fit
            torch.cuda.empty_cache()
        self._finish(error=True)
        if self.on_error is not None:
            try:
                self.on_error(stage, work.frame, exc)
            except Exception:  # noqa: BLE001
                log.exception("on_error callback failed")

    def _finish(self, result: Result | None = None, dropped: bool = False, error: bool = False) -> None:
        with self._lock:
            self._in_flight -= 1
            stats = self._stats
            stats.dropped += dropped
            stats.errors += error
            if result is not None:
                stats.frames_out += 1
                stats.masks_out += len(result.masks)
                for stage, seconds in result.timings.items():
                    self._latencies[stage].append(seconds)
            self._idle.notify_all()

    @property
    def stats(self) -> PipelineStats:
        with self._lock:
            s = self._stats
            return PipelineStats(
                s.frames_in, s.frames_out, s.dropped, s.errors, s.masks_out,
                {k: list(v) for k, v in self._latencies.items()},
            )


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
