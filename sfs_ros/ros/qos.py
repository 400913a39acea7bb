"""QoS profiles of the node's topics, in one place so inputs and outputs are easy to compare."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def qos_input(reliability: str, depth: int) -> QoSProfile:
    """Camera subscriptions: `input_reliability` ("reliable" or "best_effort"), keep-last `depth`
    (`queue_size`), volatile, so a late joiner gets no stale frames."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT),
        durability=DurabilityPolicy.VOLATILE,
    )


#: Per-frame outputs: reliable, a short keep-last history, nothing kept for late joiners.
QOS_OUTPUT = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
#: ~/label_info: latched (transient-local), so a subscriber that starts later still gets it.
QOS_LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def offered_reliabilities(publishers_info: Iterable[Any]) -> set[str]:
    """The reliabilities ("reliable", "best_effort") that publishers offer, from rclpy's
    TopicEndpointInfo list (`get_publishers_info_by_topic`), named like `input_reliability`."""
    return {
        "best_effort" if info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        else "reliable"
        for info in publishers_info
    }
