"""rosbag2 in and out with `rosbags` (mcap and sqlite3 storage; no ROS installation needed).

Reading turns a bag into `Sample`s: one camera image (RGB), its header stamp, and the
ground-truth label image with the same header stamp on the paired label topic, if any. Pairing
goes by header stamp, not by arrival order, because recorders interleave topics freely.

Sharding (`shard=(i, n)`) is decided per message from (image topic, header stamp), so an image
and its label always land in the same shard without any shared state, and the shards of one
bag partition its frames exactly: summed, they give the unsharded numbers.

Every way a bag can be unusable ends in one `BagError` naming the bag and the problem; a
single unusable message becomes a Sample with `bad` set, which the runner counts and skips.
"""
from __future__ import annotations

import collections
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from sfs_ros.eval import images
from sfs_ros.eval.errors import BadFrame, BagError, EncodingError, EvalError
from sfs_ros.eval.messages import Stamp, serialize, typestore

#: custom_data keys the converter writes so `run` finds topics and vocabulary by itself.
HINT_IMAGE_TOPIC = "sfs_eval.image_topic"
HINT_GT_TOPIC = "sfs_eval.gt_topic"
HINT_VOCABULARY = "sfs_eval.vocabulary"
HINT_VOCABULARY_KEY = "sfs_eval.vocabulary_key"
HINT_DATASET = "sfs_eval.dataset"
STORAGES = ("mcap", "sqlite3")


@dataclass
class Sample:
    """One camera frame of the bag, with its ground truth when the bag has it."""

    topic: str
    index: int  # position among this topic's messages (all shards counted)
    log_time: int  # bag receive time, ns
    stamp: Stamp  # header stamp (log time when the header could not be read)
    frame_id: str = ""
    image: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    gt: np.ndarray | None = None  # (H, W) uint16, images.GT_IGNORE where it does not count
    gt_topic: str | None = None
    bad: BadFrame | None = None
    msgtype: str = ""
    raw: bytes | None = None  # the serialized image message, when asked for (live replay)
    #: Depth paired by stamp (HINT/`depth_for`), (H, W) float32 metres, its intrinsics and frame.
    depth: np.ndarray | None = None
    intrinsics: Any = None
    depth_frame_id: str = ""


@dataclass
class ReadStats:
    """What the reader saw; the report prints these so no frame disappears unexplained."""

    messages: collections.Counter = field(default_factory=collections.Counter)  # topic -> read
    images_in_shard: int = 0
    gt_in_shard: int = 0
    images_without_gt: int = 0
    gt_without_image: int = 0
    without_depth: collections.Counter = field(default_factory=collections.Counter)  # reason -> images


def shard_of(image_topic: str, stamp: Stamp, count: int) -> int:
    """Stable shard number of a frame: the same on every machine and Python version."""
    if count == 1:
        return 0
    return zlib.crc32(f"{image_topic}|{stamp.sec}|{stamp.nanosec}".encode()) % count


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n)."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise EvalError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise EvalError(f"shard {text!r}: need 0 <= i < n")
    return index, count


class BagInput:
    """An opened input bag with its image (and ground-truth) topics resolved and checked.

    Opening checks everything that can be checked without decoding pixels (bag readable,
    topics present with image types, counts non-zero), so bad input fails before any model
    is loaded.
    """

    def __init__(
        self,
        path: str | Path,
        image_topics: Sequence[str] = (),
        gt_topics: Sequence[str] = (),
        gt_ignore: int | None = None,
        shard: tuple[int, int] = (0, 1),
        max_pending: int = 64,
        depth_scale: float = 0.001,
    ) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        self.gt_ignore, self.shard, self.max_pending = gt_ignore, shard, max_pending
        self.depth_scale = depth_scale
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises many kinds; all mean the same
            raise BagError(f"bag {self.path} cannot be opened (truncated or corrupt?): {_why(exc)}") from exc
        self.stats = ReadStats()
        self.topics: dict[str, tuple[str, int]] = {}
        for conn in self._reader.connections:
            msgtype, count = self.topics.get(conn.topic, (conn.msgtype, 0))
            self.topics[conn.topic] = (msgtype, count + conn.msgcount)
        self.hints = _custom_data(self._reader)
        try:
            self.image_topics, self.gt_for = self._resolve(list(image_topics), list(gt_topics))
            self.depth_for = self._find_depth()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ topics
    def _resolve(self, image_topics: list[str], gt_topics: list[str]) -> tuple[list[str], dict[str, str | None]]:
        listing = self.describe_topics()
        for topic in image_topics + gt_topics:
            if topic not in self.topics:
                raise BagError(f"topic {topic} is not in bag {self.path}; it has: {listing}")
            if self.topics[topic][0] not in images.IMAGE_TYPES:
                raise EncodingError(
                    f"topic {topic} carries {self.topics[topic][0]}, not {' or '.join(images.IMAGE_TYPES)}"
                )
        hint_image, hint_gt = self.hints.get(HINT_IMAGE_TOPIC), self.hints.get(HINT_GT_TOPIC)
        if not image_topics:
            if hint_image in self.topics:
                image_topics = [hint_image]
            else:
                found = [t for t, (m, _) in self.topics.items() if m in images.IMAGE_TYPES
                         and t not in gt_topics and "depth" not in t]
                if len(found) != 1:
                    what = "no image topic" if not found else f"{len(found)} image topics"
                    raise BagError(f"bag {self.path} has {what}; choose with --image-topic (topics: {listing})")
                image_topics = found
        if not gt_topics and hint_gt in self.topics and image_topics == [hint_image]:
            gt_topics = [hint_gt]
        if gt_topics and len(gt_topics) != len(image_topics):
            raise BagError(
                f"{len(image_topics)} image topics but {len(gt_topics)} ground-truth topics: give "
                "one --gt-topic per --image-topic, in the same order"
            )
        if len(set(image_topics)) != len(image_topics) or set(image_topics) & set(gt_topics):
            raise BagError("a topic is given twice, or as both image and ground truth")
        for topic in image_topics:
            if self.topics[topic][1] == 0:
                raise BagError(f"topic {topic} has no messages in bag {self.path}")
        gt_for = {t: (gt_topics[i] if gt_topics else None) for i, t in enumerate(image_topics)}
        return image_topics, gt_for

    def _find_depth(self) -> dict[str, tuple[str, str]]:
        """image topic -> (depth topic, its camera_info topic): when the bag has one camera and
        exactly one sensor_msgs/Image topic named *depth* with a sibling sensor_msgs/CameraInfo
        topic. Else {} (no 3D: ambiguous bags are evaluated in 2D)."""
        from sfs_ros.ros.depth_input import sibling_camera_info

        info_type = "sensor_msgs/msg/CameraInfo"
        found = [t for t, (m, _) in self.topics.items() if m == "sensor_msgs/msg/Image"
                 and "depth" in t and t not in self.image_topics and t not in self.gt_for.values()
                 and self.topics.get(sibling_camera_info(t), ("",))[0] == info_type]
        if len(found) != 1 or len(self.image_topics) != 1:
            return {}
        return {self.image_topics[0]: (found[0], sibling_camera_info(found[0]))}

    def describe_topics(self) -> str:
        return ", ".join(f"{t} [{m}, {n} msgs]" for t, (m, n) in sorted(self.topics.items())) or "no topics"

    @property
    def storage(self) -> str:
        return "sqlite3" if any(self.path.glob("*.db3")) or self.path.suffix == ".db3" else "mcap"

    @property
    def has_gt(self) -> bool:
        return any(self.gt_for.values())

    def expected_images(self) -> int:
        """Images this shard will see, approximately (exact when unsharded): for progress bars."""
        total = sum(self.topics[t][1] for t in self.image_topics)
        return -(-total // self.shard[1])

    # ------------------------------------------------------------------ reading
    def samples(self, keep_raw: bool = False) -> Iterator[Sample]:
        """Frames of this shard in bag order, each paired with its ground truth when present.

        `keep_raw` also keeps each image message's CDR bytes (to publish them unchanged).
        """
        store, (mine, count) = typestore(), self.shard
        image_of = {gt: img for img, gt in self.gt_for.items() if gt}
        wanted = set(self.image_topics) | set(image_of)
        depth = _DepthPairing(self.depth_for, self.depth_scale, self.stats)
        wanted |= set(depth.topics)
        pairs = _Pairing(self.max_pending, self.stats)
        index: collections.Counter = collections.Counter()
        for conn, log_time, raw in self._messages([c for c in self._reader.connections if c.topic in wanted]):
            self.stats.messages[conn.topic] += 1
            msg, bad = _deserialize(store, raw, conn.msgtype)
            stamp = _stamp(msg) if msg is not None else Stamp.from_ns(log_time)
            if conn.topic in depth.topics:  # depth or camera_info: same shard as its image
                if msg is not None and shard_of(depth.topics[conn.topic], stamp, count) == mine:
                    for ready in depth.message(conn.topic, msg, log_time):
                        yield from pairs.image(ready)
            elif conn.topic in self.gt_for:  # a camera image
                sample = Sample(conn.topic, index[conn.topic], log_time, stamp, bad=bad, msgtype=conn.msgtype)
                index[conn.topic] += 1
                if shard_of(conn.topic, stamp, count) != mine:
                    continue
                self.stats.images_in_shard += 1
                if msg is not None:
                    sample.frame_id = str(msg.header.frame_id)
                    sample.image, sample.bad = _decode(images.to_rgb, msg, conn.msgtype)
                if keep_raw:
                    sample.raw = bytes(raw)
                sample.gt_topic = self.gt_for[conn.topic] if bad is None else None
                for ready in depth.image(sample):
                    yield from pairs.image(ready)
            else:  # a ground-truth label image
                if shard_of(image_of[conn.topic], stamp, count) != mine:
                    continue
                self.stats.gt_in_shard += 1
                ids = None
                if msg is not None:
                    ids, bad = _decode(images.to_labels, msg, conn.msgtype, self.gt_ignore)
                yield from pairs.label((image_of[conn.topic], stamp), (ids, bad))
        for ready in depth.flush():
            yield from pairs.image(ready)
        yield from pairs.flush()
        self._check_complete()

    def _messages(self, connections: list[Any]) -> Iterator[tuple[Any, int, bytes]]:
        """The reader's messages; any failure inside the reader becomes one BagError."""
        stream = self._reader.messages(connections=connections)
        while True:
            try:
                item = next(stream)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - any reader failure means a damaged bag
                read = sum(self.stats.messages.values())
                raise BagError(
                    f"bag {self.path} is truncated or corrupt (failed after {read} messages): {_why(exc)}"
                ) from exc
            yield item

    def _check_complete(self) -> None:
        """The bag's own index says how many messages each topic has; fewer read = damage."""
        for topic in set(self.image_topics) | {g for g in self.gt_for.values() if g}:
            expected, read = self.topics[topic][1], self.stats.messages[topic]
            if read < expected:
                raise BagError(
                    f"bag {self.path} ends early: read {read} of {expected} messages on {topic} "
                    "(truncated or corrupt)"
                )

    def close(self) -> None:
        try:
            self._reader.close()
        except Exception:  # noqa: BLE001 - closing a damaged bag may fail again; nothing to save
            pass

    def __enter__(self) -> "BagInput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]


def _custom_data(reader: Any) -> dict[str, str]:
    """The bag's custom_data (metadata.yaml), or {} for a bare storage file."""
    metadata = getattr(reader.storage, "metadata", None)
    custom = getattr(metadata, "custom", None) or {}
    return {str(k): str(v) for k, v in custom.items()}


def _deserialize(store: Any, raw: bytes, msgtype: str) -> tuple[Any, BadFrame | None]:
    try:
        return store.deserialize_cdr(raw, msgtype), None
    except Exception as exc:  # noqa: BLE001 - malformed CDR of one message
        return None, BadFrame("undecodable message", _why(exc))


def _stamp(msg: Any) -> Stamp:
    return Stamp(int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))


def _decode(function: Any, *args: Any) -> tuple[np.ndarray | None, BadFrame | None]:
    try:
        return function(*args), None
    except BadFrame as bad:
        return None, bad


Label = tuple[Optional[np.ndarray], Optional[BadFrame]]


class _Pairing:
    """Matches images and labels by (image topic, header stamp), whichever arrives first.

    Unmatched items wait in bounded buffers (`max_pending` each): an image whose label never
    comes is released unscored, a label whose image never comes is counted, so memory stays
    bounded on long recordings and nothing disappears uncounted.
    """

    def __init__(self, max_pending: int, stats: ReadStats) -> None:
        self.max_pending, self.stats = max_pending, stats
        self.images: collections.OrderedDict[tuple[str, Stamp], list[Sample]] = collections.OrderedDict()
        self.labels: collections.OrderedDict[tuple[str, Stamp], list[Label]] = collections.OrderedDict()

    def image(self, sample: Sample) -> list[Sample]:
        if sample.gt_topic is None:  # no label topic, or no stamp to pair by
            return [sample]
        key = (sample.topic, sample.stamp)
        if key in self.labels:
            return [self._attach(sample, _pop(self.labels, key))]
        self.images.setdefault(key, []).append(sample)
        if sum(len(v) for v in self.images.values()) > self.max_pending:
            return self._unscored(self.images.popitem(last=False)[1])
        return []

    def label(self, key: tuple[str, Stamp], label: Label) -> list[Sample]:
        if key in self.images:
            return [self._attach(_pop(self.images, key), label)]
        self.labels.setdefault(key, []).append(label)
        if len(self.labels) > self.max_pending:
            self.stats.gt_without_image += len(self.labels.popitem(last=False)[1])
        return []

    def flush(self) -> list[Sample]:
        ready = [s for pending in self.images.values() for s in self._unscored(pending)]
        self.stats.gt_without_image += sum(len(v) for v in self.labels.values())
        self.images.clear()
        self.labels.clear()
        return ready

    def _unscored(self, pending: list[Sample]) -> list[Sample]:
        """Images whose label never came: evaluated for speed, not scored, and counted."""
        self.stats.images_without_gt += len(pending)
        for sample in pending:
            sample.gt_topic = None
        return pending

    @staticmethod
    def _attach(sample: Sample, label: Label) -> Sample:
        ids, bad = label
        if bad is not None and sample.bad is None:
            sample.bad = BadFrame(f"bad ground truth ({bad.reason})", bad.detail)
        sample.gt = ids
        return sample


class _DepthPairing:
    """Gives camera images their depth (exact header stamps, ros/depth_input.StampPairer) and
    the latest camera_info's intrinsics; an image that gets none is counted by reason in
    `ReadStats.without_depth` and evaluated in 2D."""

    def __init__(self, depth_for: dict[str, tuple[str, str]], depth_scale: float, stats: ReadStats) -> None:
        from sfs_ros.ros.depth_input import StampPairer

        self.depth_scale, self.stats = depth_scale, stats
        #: depth or camera_info topic -> its image topic
        self.topics = {t: image for image, pair in depth_for.items() for t in pair}
        self.depth_for = depth_for
        # offline: exact stamps, and an image always waits (bounded) for its depth
        self.pairers = {image: StampPairer(0, silence_s=float("inf")) for image in depth_for}
        self.info: dict[str, Any] = {}  # image topic -> latest CameraInfo

    def image(self, sample: Sample) -> list[Sample]:
        pairer = self.pairers.get(sample.topic)
        if pairer is None or sample.bad is not None:
            return [sample]
        return self._attach(pairer.add_colour(sample.stamp.ns, sample, sample.log_time * 1e-9))

    def message(self, topic: str, msg: Any, log_time: int) -> list[Sample]:
        image = self.topics[topic]
        if topic == self.depth_for[image][1]:
            self.info[image] = msg
            return []
        return self._attach(self.pairers[image].add_depth(_stamp(msg).ns, msg, log_time * 1e-9))

    def flush(self) -> list[Sample]:
        return self._attach([p for pairer in self.pairers.values() for p in pairer.flush()])

    def _attach(self, pairs: list[tuple[Sample, Any]]) -> list[Sample]:
        from sfs_ros.core.geometry import GeometryError
        from sfs_ros.ros.depth_input import depth_metres, intrinsics_of

        for sample, msg in pairs:
            info = self.info.get(sample.topic)
            if msg is None or info is None:
                self.stats.without_depth["depth_unpaired" if msg is None else "no_camera_info"] += 1
                continue
            try:
                sample.depth = depth_metres(msg, self.depth_scale)
                sample.intrinsics = intrinsics_of(info, sample.depth.shape, self.depth_for[sample.topic][1])
                sample.depth_frame_id = str(msg.header.frame_id)
            except GeometryError as exc:
                sample.depth = None
                self.stats.without_depth[exc.reason] += 1
        return [sample for sample, _ in pairs]


def _pop(queue: collections.OrderedDict, key: Any) -> Any:
    items = queue[key]
    item = items.pop(0)
    if not items:
        del queue[key]
    return item


# ====================================================================== writing
class BagOutput:
    """A new rosbag2 (default mcap) written with rosbags; refuses to overwrite anything."""

    def __init__(self, path: str | Path, storage: str = "mcap", custom_data: dict[str, str] | None = None) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise EvalError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise EvalError(f"output bag {self.path} exists already; remove it or choose another path")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        for key, value in (custom_data or {}).items():
            self._writer.set_custom_data(key, value)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: collections.Counter = collections.Counter()

    def write(self, topic: str, log_time: int, msg: Any, latched: bool = False) -> None:
        """Serialise `msg` onto `topic` (connection created on first use) at bag time `log_time`."""
        self.write_raw(topic, msg.__msgtype__, log_time, serialize(msg), latched)

    def write_raw(self, topic: str, msgtype: str, log_time: int, data: bytes, latched: bool = False) -> None:
        """Write CDR bytes as they came (e.g. from a raw subscription)."""
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(
                topic, msgtype, typestore=typestore(), offered_qos_profiles=[_qos(latched)]
            )
            self._connections[topic] = conn
        self._writer.write(conn, int(log_time), data)
        self.counts[topic] += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "BagOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _qos(latched: bool) -> Any:
    """Reliable, keep-last; transient-local for latched topics (LabelInfo), as the node offers."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(
        history=QosHistory.KEEP_LAST, depth=1 if latched else 10,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False,
    )


def hints_json(value: Any) -> str:
    """custom_data values are strings; structured hints are stored as JSON."""
    return json.dumps(value, separators=(",", ":"))
