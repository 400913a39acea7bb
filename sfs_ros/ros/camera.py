"""One input topic of the node: its subscription, pipeline, publishers and counters."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from sfs_ros.ros.diagnostics import CameraCounters

if TYPE_CHECKING:  # torch is imported when the node is configured, not when it starts
    from sfs_ros.core.frame import Result
    from sfs_ros.core.pipeline import Pipeline, PipelineStats
    from sfs_ros.ros.rgbd import DepthLink


def is_compressed(topic: str) -> bool:
    """A topic ending in /compressed carries sensor_msgs/CompressedImage (image_transport's rule)."""
    return topic.rstrip("/").split("/")[-1] == "compressed"


@dataclasses.dataclass(kw_only=True)
class Camera(CameraCounters):
    """One input topic: its subscription, pipeline, publishers and (inherited) counters."""

    topic: str
    namespace: str  # '~' or '~/<camera>'
    name: str
    compressed: bool
    publishers: dict[str, Any] = dataclasses.field(default_factory=dict)
    subscription: Any = None
    #: Mutually exclusive: one frame of this camera converts at a time, so frames reach the
    #: pipeline in arrival order (cameras still run in parallel, each in its own group).
    callback_group: Any = dataclasses.field(default_factory=MutuallyExclusiveCallbackGroup)
    pipeline: Pipeline | None = None
    totals: PipelineStats | None = None  # counters of past activations
    #: The newest Result delivered (its masks and CLIP embeddings serve image-less prompts).
    latest: Result | None = None
    depth: DepthLink | None = None  # depth + camera_info inputs (depth_topics), else None

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
        totals = {f.name: getattr(t, f.name) + getattr(now, f.name)
                  for f in dataclasses.fields(PipelineStats) if f.name != "latencies"}
        return PipelineStats(**totals, latencies=now.latencies)
