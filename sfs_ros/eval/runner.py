"""Direct mode: every frame of a bag through the core pipeline, scored and written back out.

The core `Pipeline` runs with `drop=False`, so both stages overlap (FastSAM on frame t+1 while
CLIP names frame t) and `submit` blocks instead of dropping: every frame is evaluated. Each
Frame carries its header stamp as `stamp` and, as `Frame.tag`, a `Tagged` (the bag Sample and
its read time), so each Result comes back with its own ground truth; `Frame.time` stays None
(see `frame_of`).

Results arrive on the pipeline's label thread. The pipeline logs and swallows exceptions from
result callbacks (a viewer bug must not stop a robot), which for an evaluator would turn an
error into a silently missing frame; so the callback here records the first exception and the
main thread re-raises it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfs_ros.core.frame import Frame, Result, SfsError
from sfs_ros.core.fusion import mark_random
from sfs_ros.core.geometry import GeometryConfig
from sfs_ros.core.labeler import Labeler
from sfs_ros.core.pipeline import Pipeline
from sfs_ros.core.segmenter import Segmenter
from sfs_ros.core.tracker import TrackerConfig
from sfs_ros.core.vocabulary import Vocabulary
from sfs_ros.eval import bags, messages, report as reports
from sfs_ros.eval.bags import BagInput, BagOutput, Sample
from sfs_ros.eval.errors import EvalError, GroundTruthError
from sfs_ros.eval.metrics import ConfusionMatrix, check_ground_truth
from sfs_ros.eval.tracking import LabelFlicker
from sfs_ros.ros import naming

log = logging.getLogger("sfs_ros.eval")
OUTPUT_BAG = "bag"


@dataclass(frozen=True)
class Tagged:
    """The evaluator's bookkeeping for one frame, carried through the pipeline as `Frame.tag`."""

    sample: Sample  # the bag sample: its ground truth, topic, stamps and bag time
    read_s: float  # seconds spent reading and decoding it from the bag


@dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to what to run (models and vocabulary come ready-made)."""

    out_dir: Path
    write_bag: bool = True
    out_prefix: str = "/sfs_node"  # the node's name: outputs land where the node publishes them
    storage: str = "mcap"
    strict: bool = False  # a skipped frame stops the run
    warmup: int = 1  # untimed passes over the first frame (lazy initialisation, allocator)
    progress: bool = True
    max_frames: int | None = None


def output_namespaces(image_topics: list[str], prefix: str) -> dict[str, str]:
    """Output namespace per input topic, as sfs_node names them under its node name `prefix`:
    `prefix/label_image` for one camera, `prefix/<camera>/label_image` for several."""
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    try:
        private = naming.output_namespaces(list(image_topics))
    except SfsError as exc:
        raise EvalError(str(exc)) from exc
    return {t: prefix + ns[1:] for t, ns in zip(image_topics, private)}


def check_vocabulary(source: BagInput, vocabulary: Vocabulary) -> None:
    """Ground truth written by `sfs_eval convert` carries its vocabulary; another one is refused."""
    key = source.hints.get(bags.HINT_VOCABULARY_KEY)
    if source.has_gt and key and key != vocabulary.key:
        raise GroundTruthError(
            f"the ground truth in {source.path} holds ids of vocabulary "
            f"{source.hints.get(bags.HINT_VOCABULARY, '?')!r}, but the run uses {vocabulary.name!r} "
            f"({len(vocabulary)} classes): ids would be compared with other classes"
        )


class _Run:
    """State of one evaluation; the public entry point is `evaluate`."""

    def __init__(self, source: BagInput, vocabulary: Vocabulary, threshold: tuple[float, str],
                 options: RunOptions, report: dict) -> None:
        self.source, self.vocabulary = source, vocabulary
        # (score_threshold, what it cuts): the labeler's, as the node's LabelInfo reports them
        self.threshold, self.options, self.report = threshold, options, report
        self.pipeline: Pipeline | None = None  # set by evaluate(); its callbacks are ours
        self.matrix = ConfusionMatrix(len(vocabulary)) if source.has_gt else None
        self.namespaces = output_namespaces(source.image_topics, options.out_prefix)
        self.label_info_topic = ("/" + options.out_prefix.strip("/")).rstrip("/") + "/label_info"
        self.bag: BagOutput | None = None
        self.lock = threading.Lock()
        self.fatal: BaseException | None = None
        self.skips: dict[str, int] = {}
        self.scored = 0
        self.latched = False
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.progress: Any = None
        self.flicker: dict[str, LabelFlicker] = {}  # topic -> label changes of its tracks

    # ------------------------------------------------------------------ main thread
    def run(self) -> None:
        from tqdm import tqdm

        assert self.pipeline is not None
        total = self.source.expected_images()
        if self.options.max_frames:
            total = min(total, self.options.max_frames)
        self.progress = tqdm(total=total, unit="frame", desc="sfs_eval", disable=not self.options.progress,
                             dynamic_ncols=True, leave=True)
        submitted = 0
        try:
            samples = self.source.samples()
            while self.options.max_frames is None or submitted < self.options.max_frames:
                t0 = time.monotonic()
                sample = next(samples, None)
                if sample is None:
                    break
                read_s = time.monotonic() - t0
                self._raise_fatal()
                if sample.bad is not None:
                    self._skip(sample, sample.bad.reason, sample.bad.detail)
                    continue
                assert sample.image is not None
                if sample.gt is not None:
                    check_ground_truth(sample.gt, sample.image.shape[:2], len(self.vocabulary),
                                       f"{sample.gt_topic} @ {sample.stamp}")
                if submitted == 0:
                    self._warm_up(sample)
                    self.t_first = time.monotonic()
                self.pipeline.submit(frame_of(sample, read_s))
                submitted += 1
            self.pipeline.wait_idle()
            self._raise_fatal()
        finally:
            self.progress.close()

    def _warm_up(self, sample: Sample) -> None:
        for _ in range(self.options.warmup):
            self.pipeline.process(Frame(sample.image))

    def _skip(self, sample: Sample, reason: str, detail: str) -> None:
        where = f"{sample.topic} @ {sample.stamp}"
        if self.options.strict:
            raise EvalError(f"{where}: {reason} {detail} (--strict)")
        log.warning("skipping %s: %s %s", where, reason, detail)
        with self.lock:
            self.skips[reason] = self.skips.get(reason, 0) + 1
            self.report["skipped_frames"].append(
                {"topic": sample.topic, "stamp": str(sample.stamp), "log_time": sample.log_time,
                 "reason": reason, "detail": detail}
            )
        self.progress.update(1)

    def _raise_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    # ------------------------------------------------------------------ label thread
    def on_result(self, result: Result) -> None:
        try:
            self._consume(result)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, never lost
            if self.fatal is None:
                self.fatal = exc

    def on_error(self, stage: str, frame: Frame, exc: BaseException) -> None:
        sample = frame.tag.sample
        try:
            self._skip(sample, f"{stage} stage failed", f"{type(exc).__name__}: {exc}")
        except EvalError as fatal:
            self.fatal = self.fatal or fatal

    def _consume(self, result: Result) -> None:
        t0 = time.monotonic()
        tagged: Tagged = result.frame.tag
        sample = tagged.sample
        scored = sample.gt is not None and self.matrix is not None
        if scored:
            self.matrix.update(sample.gt, result.label_image)
            self.scored += 1
        if self.bag is not None:
            self._write(sample, result)
        if result.tracks is not None:  # bag frames of a topic, in order: index = its frame count
            flicker = self.flicker.setdefault(sample.topic, LabelFlicker())
            flicker.update(sample.index, dict(zip(result.tracks.ids.tolist(), result.labels.class_ids.tolist())))
        t1 = time.monotonic()
        self.t_last = t1
        timings = dict(result.timings, read=tagged.read_s, write=t1 - t0)
        timings["compute"] = sum(result.timings.get(s, 0.0) for s in ("segment", "label", "fuse"))
        self.report["per_frame"].append({
            "topic": sample.topic, "stamp": str(sample.stamp), "log_time": sample.log_time,
            "masks": len(result.masks), "scored": scored,
            "ms": {k: round(v * 1000.0, 3) for k, v in sorted(timings.items())},
        })
        self.progress.update(1)

    def _write(self, sample: Sample, result: Result) -> None:
        assert self.bag is not None
        ns = self.namespaces[sample.topic]
        hdr = messages.header(sample.stamp, sample.frame_id)
        t = sample.log_time
        if not self.latched:  # latched and one for all cameras, as the node publishes it
            info = messages.label_info(result, self.vocabulary.palette, *self.threshold, hdr)
            self.bag.write(self.label_info_topic, t, info, latched=True)
            self.latched = True
        self.bag.write(f"{ns}/label_image", t, messages.image(hdr, result.label_image, "mono16"))
        self.bag.write(f"{ns}/instance_image", t, messages.image(hdr, result.instance_image, "mono16"))
        if result.overlay is not None:
            # Pictures travel without their metadata: untrained overlays carry a banner.
            over = mark_random(result.overlay) if result.random_weights else result.overlay
            self.bag.write(f"{ns}/overlay", t, messages.image(hdr, over, "rgb8"))
        self.bag.write(f"{ns}/instances", t, messages.instances(result, hdr))
        if result.geometry is not None:  # the bag had depth + camera_info: ~/points, as the node
            depth_hdr = messages.header(sample.stamp, sample.depth_frame_id)
            self.bag.write(f"{ns}/points", t, messages.point_cloud(depth_hdr, result.geometry.points))


def frame_of(sample: Sample, read_s: float) -> Frame:
    """The pipeline's Frame of a decoded bag sample: the header stamp as `stamp` (as the node
    sets it), the sample and its read time as `tag`.

    `time` stays None on purpose. The core's time rules are live-camera rules for one Pipeline
    per camera: a frame older than the newest one submitted is refused. Here one Pipeline takes
    every camera of the bag, and pairing releases an image whose label never came after later
    ones, so frames arrive out of stamp order and would be refused: the run would stop on its
    frame accounting. `max_age` is off (offline, nothing is late) and a camera-to-output latency
    would compare a recorded stamp with today's clock.
    """
    assert sample.image is not None
    return Frame(sample.image, stamp=sample.stamp, frame_id=sample.frame_id, source=sample.topic,
                 seq=sample.index, tag=Tagged(sample, read_s), depth=sample.depth,
                 intrinsics=sample.intrinsics)


def report_inputs(source: BagInput) -> dict:
    """What was evaluated; `fingerprint` (message count per topic) lets merge refuse other bags."""
    return {
        "bag": str(source.path), "storage": source.storage,
        "image_topics": source.image_topics, "gt_topics": [source.gt_for[t] for t in source.image_topics],
        "fingerprint": {t: n for t, (_, n) in sorted(source.topics.items())},
        "dataset": source.hints.get(bags.HINT_DATASET),
    }


def evaluate(
    source: BagInput,
    segmenter: Segmenter,
    labeler: Labeler,
    options: RunOptions,
    settings: dict | None = None,
    tracking: TrackerConfig | None = None,
    geometry: GeometryConfig = GeometryConfig(),
) -> dict:
    """Run every frame of `source` (its shard) through the pipeline; returns the report dict.

    The labeler's current vocabulary is the one scored against. Writes the output bag (when
    asked) but not the report files: the caller decides where those go (`report.write`).
    With `tracking` each topic has its own tracker, and the report's `tracking` section gives
    the label flicker of the predicted tracks (bags carry no instance ground truth yet, so ID
    switches are measured on the moving shapes world: bench/tracking.py).
    """
    vocabulary = labeler.bank.vocabulary
    check_vocabulary(source, vocabulary)
    random_weights = segmenter.random_weights or labeler.random_weights
    settings = dict(settings or {})
    settings.update(
        vocabulary=vocabulary.name, vocabulary_key=vocabulary.key, class_names=list(vocabulary.names),
        gt_ignore=source.gt_ignore, warmup=options.warmup, strict=options.strict,
        max_frames=options.max_frames,
    )
    report = reports.new_report(random_weights, "direct", report_inputs(source), settings, source.shard)
    out_dir = Path(options.out_dir)
    run = _Run(source, vocabulary, (labeler.threshold, labeler.threshold_kind), options, report)
    run.pipeline = pipeline = Pipeline(segmenter, labeler, run.on_result, run.on_error, drop=False,
                                       overlay=options.write_bag, tracking=tracking,
                                       geometry=geometry)
    if options.write_bag:
        out_dir.mkdir(parents=True, exist_ok=True)
        custom = {"sfs_eval.random_weights": str(random_weights).lower(), "sfs_eval.source_bag": str(source.path),
                  "sfs_eval.vocabulary": vocabulary.name}
        run.bag = BagOutput(out_dir / OUTPUT_BAG, options.storage, custom)
    try:
        with pipeline:
            run.run()
    finally:
        if run.bag is not None:
            run.bag.close()
    stats = pipeline.stats
    report["frames"] = {
        "images_in_shard": source.stats.images_in_shard,
        "processed": stats.frames_out,
        "scored": run.scored,
        "without_gt": sum(1 for f in report["per_frame"] if not f["scored"]),
        "gt_without_image": source.stats.gt_without_image,
        "without_depth": dict(sorted(source.stats.without_depth.items())),
        "skipped": dict(sorted(run.skips.items())),
        "pipeline_errors": stats.errors,
        "dropped": stats.dropped,
        "limited_to": options.max_frames,
    }
    _check_accounting(report["frames"])
    if tracking is not None:
        report["tracking"] = reports.tracking_section(
            sum(t.next_id - 1 for key, t in pipeline.trackers.items() if key),  # "": warm-up
            sum(f.changes for f in run.flicker.values()), sum(f.pairs for f in run.flicker.values()))
    if run.bag is not None:
        report["output_bags"].append({"path": str(run.bag.path), "topics": dict(sorted(run.bag.counts.items()))})
    wall = (run.t_last - run.t_first) if run.t_first is not None and run.t_last is not None else 0.0
    return reports.finish(report, run.matrix, wall)


def _check_accounting(frames: dict) -> None:
    """Every image of the shard was processed or skipped, none dropped: else stop, loudly."""
    skipped = sum(frames["skipped"].values())
    done = frames["processed"] + skipped
    if frames["dropped"] or (frames["limited_to"] is None and done != frames["images_in_shard"]):
        raise EvalError(
            f"frame accounting does not add up: {frames['images_in_shard']} images read, "
            f"{frames['processed']} processed, {skipped} skipped, {frames['dropped']} dropped"
        )
