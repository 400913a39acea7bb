"""Core results -> sfs_ros message fields, for any set of message classes.

The node publishes rclpy messages; the evaluator writes rosbags-typestore messages of the same
definitions (msg/*.msg) on machines without a ROS build. Both fill their messages here, so
the two can never disagree on a field. No rclpy import: the classes are passed in.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sfs_ros.core.frame import Result, instance_records


@dataclass(frozen=True)
class MessageClasses:
    """The message classes one side builds with (rclpy's, or a typestore's)."""

    Instance: Any
    InstanceArray: Any
    ClassScore: Any
    RegionOfInterest: Any
    LabelClass: Any
    LabelInfo: Any
    ColorRGBA: Any
    Point: Any
    Vector3: Any


def instance_array(result: Result, header: Any, classes: MessageClasses,
                   mono8_image: Callable[[np.ndarray], Any],
                   indices: Sequence[int] | None = None) -> Any:
    """One Instance per mask: class, score, top-k proposals, box, area, and the mask cropped to
    its box (`mono8_image` turns that (h, w) uint8 crop into the side's sensor_msgs/Image).
    `indices`: only those masks, in that order (a prompt's selection), so no other mask is
    cropped and encoded."""
    records = instance_records(result)
    if indices is not None:
        records = [records[int(i)] for i in indices]
    instances = []
    for r in records:
        x0, y0, x1, y1 = r.box
        instances.append(classes.Instance(
            instance_id=r.instance_id, class_id=r.class_id, class_name=r.class_name, score=r.score,
            proposals=[classes.ClassScore(class_id=c, class_name=n, score=s) for c, n, s in r.proposals],
            box=classes.RegionOfInterest(x_offset=x0, y_offset=y0, height=y1 - y0, width=x1 - x0,
                                         do_rectify=False),
            area=r.area, mask_score=r.mask_score, mask=mono8_image(r.mask_crop(result.masks)),
            track_age=r.track_age, track_hits=r.track_hits, label_smoothed=r.label_smoothed,
            centroid=classes.Point(x=r.centroid[0], y=r.centroid[1], z=r.centroid[2]),
            extent=classes.Vector3(x=r.extent[0], y=r.extent[1], z=r.extent[2]),
            point_count=r.point_count,
        ))
    height, width = result.masks.image_shape  # the label image may not have been computed
    return classes.InstanceArray(header=header, height=height, width=width,
                                 random_weights=bool(result.random_weights),
                                 vocabulary_version=int(result.vocabulary_version),
                                 instances=instances)


def label_info(entries: Iterable[tuple[int, str, Any]], header: Any, classes: MessageClasses, *,
               vocabulary: str, unlabeled_value: int, threshold: float, threshold_kind: str,
               vocabulary_version: int, random_weights: bool) -> Any:
    """What the label image values mean: (class id, name, RGB 0..255) -> LabelClass (RGBA 0..1)."""
    items = [
        classes.LabelClass(
            class_id=int(class_id), name=name,
            color=classes.ColorRGBA(r=float(rgb[0]) / 255.0, g=float(rgb[1]) / 255.0,
                                    b=float(rgb[2]) / 255.0, a=1.0),
        )
        for class_id, name, rgb in entries
    ]
    return classes.LabelInfo(
        header=header, vocabulary=vocabulary, classes=items, unlabeled_value=int(unlabeled_value),
        threshold=float(threshold), threshold_kind=threshold_kind,
        vocabulary_version=int(vocabulary_version), random_weights=bool(random_weights),
    )
