"""Offline evaluation of Semantic-Fast-SAM on rosbag2 recordings and datasets, without ROS.

    bag ──► bags.BagInput ──► Sample (RGB image, header stamp, ground truth) ──► core Pipeline
        ──► runner: metrics.ConfusionMatrix + bags.BagOutput (label/instance images, overlay,
            InstanceArray, LabelInfo) ──► report.json / report.md / plots

Modules: `bags` (rosbags in and out), `images` (Image/CompressedImage <-> numpy), `messages`
(rosbags typestore with our msg/ definitions), `datasets` (Cityscapes, ADE20K and plain folders
-> bags), `metrics` (confusion matrix, IoU), `report` (files, merge of shards), `runner` (the
evaluation loop), `cli` (`sfs_eval`), `live` (replay into a running sfs_node: the one module
that imports rclpy, and only when live mode runs).
"""
from sfs_ros.eval.errors import (  # noqa: F401 - the public error types
    BadFrame,
    BagError,
    DatasetError,
    EncodingError,
    EvalError,
    GroundTruthError,
    MergeError,
)
