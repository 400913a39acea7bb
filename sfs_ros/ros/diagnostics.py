"""Per-camera counters and the /diagnostics status built from them.

Nothing here holds a node: the node hands over the camera record, the pipeline's stats and a
`NodeFacts` (its name, lifecycle state, device, vocabulary, the `input_reliability` value and two
graph queries), and gets a DiagnosticStatus back. That keeps the status testable without ROS
spinning (test/test_diagnostics.py).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from sfs_ros.core.frame import SfsError
from sfs_ros.core.vocabulary import Vocabulary

if TYPE_CHECKING:  # torch is imported when the node is configured, not when it starts
    from sfs_ros.core.pipeline import PipelineStats
    from sfs_ros.ros.camera import Camera

#: Publishers whose last sequence number a camera remembers (oldest forgotten first).
MAX_TRACKED_PUBLISHERS = 32
#: A publisher on an input topic with no frame for this long is reported (QoS mismatch hint).
NO_FRAME_WARN_S = 5.0


def sequence_gap(last_seq: dict[bytes, int], info: Any) -> int:
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


@dataclasses.dataclass(kw_only=True)
class CameraCounters:
    """What one input topic saw, counted from several threads (the subscription callback, its
    QoS events, the pipeline's label thread) under `lock`, read by the diagnostics timer."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
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
    prev: tuple[float, int, int] | None = None  # (time, received, frames_out) at last report
    #: Depth (ros/rgbd.py): frames that went on without depth, by reason; clouds published.
    depth_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    clouds: int = 0

    def count_frame(self, info: Any = None) -> int:
        """A message reached the callback (`info`: rmw message info); returns its local seq."""
        with self.lock:
            self.received += 1
            self.seq += 1
            self.last_frame = time.monotonic()
            self.skipped += sequence_gap(self.last_pub_seq, info)
            return self.seq

    def count_bad_input(self, exc: BaseException) -> str:
        """A refused image, counted under its reason key; returns the reason for a log line."""
        reason = str(exc) if isinstance(exc, SfsError) else f"{type(exc).__name__}: {exc}"
        key = getattr(exc, "reason", None) or type(exc).__name__
        with self.lock:
            self.bad_inputs += 1
            self.bad_by_reason[key] = self.bad_by_reason.get(key, 0) + 1
            self.last_bad_reason = reason
        return reason

    def count_depth_issue(self, reason: str) -> None:
        """A frame that went on 2D-only (no depth paired, no camera_info, bad depth ...)."""
        with self.lock:
            self.depth_by_reason[reason] = self.depth_by_reason.get(reason, 0) + 1

    def count_incompatible_qos(self) -> None:
        with self.lock:
            self.incompatible_qos += 1

    def set_matched(self, count: int) -> None:
        with self.lock:
            self.matched = count

    def count_lost(self, count: int) -> None:
        with self.lock:
            self.lost += count


@dataclasses.dataclass(frozen=True)
class NodeFacts:
    """What a camera's status says about the node, and the graph queries it needs."""

    name: str  # the node's fully qualified name: statuses are "<name>: <camera>"
    state: str  # lifecycle state label ("active", ...)
    device: str
    vocabulary: Vocabulary | None
    random_weights: bool
    input_reliability: str
    count_publishers: Callable[[str], int]  # topic -> publishers on it
    offered_reliabilities: Callable[[str], set[str]]  # topic -> "reliable"/"best_effort" offered
    warn: Callable[[str], None] = lambda text: None  # a no-frame warning for the log


@dataclasses.dataclass(frozen=True)
class _Snapshot:
    """A camera's counters read at one instant, and its rates since the previous report."""

    received: int
    bad: int
    lost: int
    incompatible: int
    skipped: int
    by_reason: str
    last_bad: str
    matched: int
    last_frame: float | None
    active_since: float | None
    reported_before: bool
    rate_in: float
    rate_out: float
    clouds: int
    depth_issues: str


def _snapshot(cam: CameraCounters, frames_out: int, now: float) -> _Snapshot:
    """Read the counters and remember this report for the next rates."""
    with cam.lock:
        received = cam.received
        prev, cam.prev = cam.prev, (now, received, frames_out)
        snap = dict(
            received=received, bad=cam.bad_inputs, lost=cam.lost, incompatible=cam.incompatible_qos,
            skipped=cam.skipped,
            by_reason=", ".join(f"{k}: {v}" for k, v in sorted(cam.bad_by_reason.items())),
            last_bad=cam.last_bad_reason, matched=cam.matched, last_frame=cam.last_frame,
            active_since=cam.active_since, clouds=cam.clouds,
            depth_issues=", ".join(f"{k}: {v}" for k, v in sorted(cam.depth_by_reason.items())),
        )
    if prev is not None and now > prev[0]:
        rate_in = (received - prev[1]) / (now - prev[0])
        rate_out = (frames_out - prev[2]) / (now - prev[0])
    else:
        rate_in = rate_out = 0.0
    return _Snapshot(**snap, reported_before=prev is not None, rate_in=rate_in, rate_out=rate_out)


def qos_hint(ours: str, offered: Iterable[str]) -> str:
    """Why frames may not arrive although a publisher is on the topic, and what to try."""
    if ours == "reliable" and "best_effort" in set(offered):
        return ("a publisher offers best_effort but input_reliability is reliable (QoS "
                "mismatch): set input_reliability:=best_effort")
    if ours == "best_effort":
        return ("the camera may be idle, or large best_effort frames are lost over UDP: try "
                "input_reliability:=reliable (if the camera publishes reliable) or a Fast "
                "DDS profile with larger socket buffers (config/fastdds_localhost.xml)")
    return "the camera may be idle (QoS matches)"


def _problems(
    snap: _Snapshot, stats: PipelineStats, facts: NodeFacts, topic: str, publishers: int,
    subscribed: bool, now: float,
) -> tuple[bytes, list[str]]:
    """The status level and what is wrong, worst last."""
    level, problems = DiagnosticStatus.OK, []
    if facts.random_weights:
        level = DiagnosticStatus.WARN
        problems.append("random weights: labels are meaningless")
    waiting = None
    if subscribed and publishers and snap.active_since is not None:
        waiting = now - max(snap.last_frame or snap.active_since, snap.active_since)
    if waiting is not None and waiting > NO_FRAME_WARN_S:
        level = DiagnosticStatus.WARN
        hint = qos_hint(facts.input_reliability, facts.offered_reliabilities(topic))
        problems.append(f"{publishers} publisher(s) but no frame for {waiting:.0f} s: {hint}")
        facts.warn(f"{topic}: {publishers} publisher(s) on the topic but no frame for "
                   f"{waiting:.0f} s: {hint}")
    if snap.reported_before and stats.errors > 0 and snap.rate_out == 0 and snap.rate_in > 0:
        level = DiagnosticStatus.ERROR
        problems.append("every frame fails in the pipeline")
    elif snap.bad and snap.received and snap.bad == snap.received:
        level = max(level, DiagnosticStatus.WARN)
        problems.append(f"every input image was refused: {snap.last_bad}")
    return level, problems


def latency_values(stats: PipelineStats) -> list[tuple[str, str]]:
    """p50 and p95 in ms of every stage the pipeline times (`pipeline.STAGES`), "n/a" if none."""
    from sfs_ros.core.pipeline import STAGES

    def ms(stage: str, q: float) -> str:
        value = stats.percentile(stage, q)
        return "n/a" if value != value else f"{value * 1000:.1f}"

    values = []
    for stage in STAGES:
        values.append((f"{stage} latency p50 (ms)", ms(stage, 50)))
        values.append((f"{stage} latency p95 (ms)", ms(stage, 95)))
    return values


def camera_status(
    cam: Camera, stats: PipelineStats, facts: NodeFacts, now: float | None = None
) -> DiagnosticStatus:
    """One camera's DiagnosticStatus: counters, rates since the previous call, latencies, and
    WARN/ERROR with the reason when something is wrong. Rates need two calls (`cam.prev`)."""
    now = time.monotonic() if now is None else now
    snap = _snapshot(cam, stats.frames_out, now)
    subscribed = cam.subscription is not None
    topic = cam.where
    publishers = facts.count_publishers(topic) if subscribed else 0
    level, problems = _problems(snap, stats, facts, topic, publishers, subscribed, now)
    vocabulary = facts.vocabulary
    values = [
        ("state", facts.state),
        ("input topic", topic),
        ("input type", "sensor_msgs/CompressedImage" if cam.compressed else "sensor_msgs/Image"),
        ("input reliability", facts.input_reliability),
        ("output namespace", cam.namespace),
        ("publishers on input", str(publishers)),
        ("publishers matched", "unknown" if snap.matched < 0 else str(snap.matched)),
        ("input rate (Hz)", f"{snap.rate_in:.2f}"),
        ("output rate (Hz)", f"{snap.rate_out:.2f}"),
        ("frames received", str(snap.received)),
        ("frames skipped before the callback", str(snap.skipped)),
        ("frames processed", str(stats.frames_out)),
        ("frames dropped", str(stats.dropped)),
        ("frames stale", str(stats.stale)),
        ("frames out of order", str(stats.out_of_order)),
        ("rewinds (time jumped back, order check restarted)", str(stats.rewinds)),
        ("errors", str(stats.errors)),
        ("bad inputs", str(snap.bad)),
        ("bad inputs by reason", snap.by_reason),
        ("last bad input", snap.last_bad),
        ("messages lost", str(snap.lost)),
        ("incompatible QoS events", str(snap.incompatible)),
        ("point clouds published", str(snap.clouds)),
        ("frames without depth by reason", snap.depth_issues),
        *latency_values(stats),
        ("device", facts.device),
        ("vocabulary", vocabulary.name if vocabulary else "-"),
        ("vocabulary size", str(len(vocabulary)) if vocabulary else "0"),
        ("random weights", str(facts.random_weights).lower()),
    ]
    message = "; ".join(problems) if problems else (
        f"{facts.state}, {snap.rate_out:.1f} Hz out" if facts.state == "active" else facts.state
    )
    return DiagnosticStatus(
        level=level, name=f"{facts.name}: {cam.name}", message=message,
        hardware_id=facts.device, values=[KeyValue(key=k, value=v) for k, v in values],
    )


def node_status(facts: NodeFacts) -> DiagnosticStatus:
    """The one status of a node with no cameras configured (unconfigured, or cleaned up)."""
    return DiagnosticStatus(
        level=DiagnosticStatus.OK, name=f"{facts.name}: node",
        message=f"{facts.state}: no cameras configured", hardware_id=facts.device,
        values=[KeyValue(key="state", value=facts.state)],
    )
