"""Every parameter of the sfs_ros node: the core options plus the node's own, declared once.

The models, labeling and vocabulary options are `sfs_ros.core.options.CORE_OPTIONS`, shared
with `sfs` and `sfs_eval` (same names, defaults, checks and meaning). This module adds what only
a node has (topics, QoS, queues, frame age, outputs, lifecycle) and turns each option into a ROS
parameter: `descriptor()` gives the `rcl_interfaces/ParameterDescriptor` (description,
read-only flag, range) the node declares it with, so `ros2 param describe` tells users what
they can set. `config/sfs.yaml` mirrors `PARAMS` with comments; a test keeps the two equal
(`render_yaml()` writes the file).

Read-only parameters change the models or the topic graph and are fixed once the node starts;
the [runtime] ones may be changed while it runs
(`ros2 param set /sfs_node vocabulary "['cup', 'table, desk']"`).

This module imports neither rclpy nor torch at import time, so tools and tests can read the
table cheaply.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sfs_ros.core import options
from sfs_ros.core.options import CORE_OPTIONS, Option, Value
from sfs_ros.core.vocabulary import load_vocabulary, vocabulary_spec

#: Largest class id a mono8 label image can hold (255 marks unlabeled pixels).
MONO8_MAX_CLASSES = 255


def _check_topics(topics: Sequence[str]) -> str | None:
    if not topics:
        return "image_topics is empty: give at least one camera topic"
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    for topic in topics:
        try:
            validate_topic_name(topic)
        except InvalidTopicNameException as exc:
            return f"image_topics: {topic!r} is not a valid topic name ({exc})"
    if len(set(topics)) != len(topics):
        return f"image_topics lists a topic twice: {list(topics)}"
    return None


# ---------------------------------------------------------------------- the node's own
_NODE_INPUTS: tuple[Option, ...] = (
    Option("image_topics", ("image",),
           "Camera topics to segment. A name ending in /compressed is read as "
           "sensor_msgs/CompressedImage (jpeg/png), any other as sensor_msgs/Image. Relative "
           "names resolve in the node namespace, so the default can be remapped "
           "(image:=/cam/image_raw).",
           check=_check_topics, cli=False),
    Option("input_reliability", "best_effort",
           "QoS reliability of the camera subscriptions: best_effort (sensor-data QoS, matches "
           "every camera driver) or reliable (needed for large frames over lossy UDP, matches "
           "reliable publishers only).",
           choices=("best_effort", "reliable"), cli=False),
    Option("queue_size", 1,
           "Depth of the input subscriptions and of the pipeline's keep-latest queues; older "
           "frames are dropped (and counted) when the models are slower than the camera.",
           range=(1, 100), cli=False),
    Option("max_frame_age", 0.0,
           "Seconds: a frame whose header stamp is older than this (on the node's clock) when it "
           "reaches a stage is dropped and counted as stale in /diagnostics; 0 = off. Needs "
           "camera and node clocks that agree (use_sim_time when replaying a bag).",
           runtime=True, range=(0.0, 3600.0), cli=False),
)
_NODE_OUTPUTS: tuple[Option, ...] = (
    Option("label_encoding", "mono16",
           "Encoding of ~/label_image: mono16 (unlabeled = 65535) or mono8 (unlabeled = 255, "
           "vocabularies of at most 255 classes).",
           choices=("mono16", "mono8"), cli=False),
    Option("publish_overlay", True,
           "Publish ~/overlay (rgb8 image blended with class colours).", runtime=True, cli=False),
    Option("overlay_alpha", 0.5, "Opacity of the class colours in ~/overlay.",
           runtime=True, range=(0.0, 1.0), cli=False),
    Option("publish_instances", True,
           "Publish ~/instances (sfs_ros/InstanceArray with a mask per instance).",
           runtime=True, cli=False),
    Option("autostart", True,
           "Configure and activate on start-up (sfs_node / python -m sfs_ros.ros.node); false "
           "leaves the node unconfigured for a lifecycle manager. The --[no-]autostart flag "
           "overrides it.",
           cli=False),
)

def _check_optional_topics(topics: Sequence[str]) -> str | None:
    """Topic names that may be empty as a whole (a feature switched off)."""
    return _check_topics(topics) if topics else None


#: Depth inputs of each camera (ros/rgbd.py): topics and stamp pairing.
_NODE_DEPTH: tuple[Option, ...] = (
    Option("depth_topics", (),
           "Depth images (sensor_msgs/Image, 16UC1 or 32FC1) registered to each camera of "
           "image_topics, one per image topic in the same order; empty = no depth, no 3D "
           "outputs. Adds ~/points (PointCloud2) and ~/markers (MarkerArray) per camera.",
           check=_check_optional_topics, cli=False),
    Option("camera_info_topics", (),
           "The depth images' camera_info topics, one per depth topic; empty = the sibling "
           "camera_info of each depth topic (/cam/depth/image_rect_raw -> "
           "/cam/depth/camera_info): back-projection needs the depth image's own K.",
           check=_check_optional_topics, cli=False),
    Option("sync_slop", 0.02,
           "Seconds: a colour frame pairs with the depth image of the same stamp, or of the "
           "nearest stamp within this much; 0 = exact stamps only.",
           range=(0.0, 1.0), cli=False),
)
#: The prompt service and click topics (ros/prompt_service.py).
_NODE_PROMPT: tuple[Option, ...] = (
    Option("prompt_clicks", False,
           "Click to segment: listen for geometry_msgs/PointStamped pixel clicks on "
           "<camera topic>_mouse_left and <overlay>_mouse_left (what rqt_image_view publishes) "
           "and publish the instance under the click in the latest frame on ~/prompt/instances "
           "and a highlight on ~/prompt/overlay. The ~/segment_prompt service is always there.",
           cli=False),
)

#: Every node parameter, in the order of config/sfs.yaml.
PARAMS: tuple[Option, ...] = _NODE_INPUTS + _NODE_DEPTH + CORE_OPTIONS + _NODE_OUTPUTS + _NODE_PROMPT
BY_NAME: Mapping[str, Option] = {p.name: p for p in PARAMS}
RUNTIME: frozenset[str] = frozenset(p.name for p in PARAMS if p.runtime)


def defaults() -> dict[str, Value]:
    """name -> default, arrays as lists (as YAML and rclpy give them back)."""
    return options.defaults(PARAMS)


def validate(values: Mapping[str, Any]) -> str | None:
    """Why this full or partial set of values is refused (first problem), or None.

    Cross-parameter rule: a mono8 label image cannot hold a vocabulary of more than 255 classes
    (`values` must then hold both `vocabulary` and `label_encoding`).
    """
    reason = options.validate(values, BY_NAME)
    if reason:
        return reason
    for name in ("depth_topics", "camera_info_topics"):  # one per camera, or none
        given = values.get(name) or ()
        if given and "image_topics" in values and len(given) != len(values["image_topics"]):
            return (f"{name} lists {len(given)} topics for {len(values['image_topics'])} "
                    "image_topics: give one per image topic, or none")
    if values.get("camera_info_topics") and not values.get("depth_topics", ()):
        return "camera_info_topics needs depth_topics"
    if values.get("label_encoding") == "mono8" and "vocabulary" in values:
        size = len(load_vocabulary(vocabulary_spec(values["vocabulary"])))
        if size > MONO8_MAX_CLASSES:
            return (
                f"the vocabulary has {size} classes but a mono8 label image holds at most "
                f"{MONO8_MAX_CLASSES}: use label_encoding:=mono16"
            )
    return None


def descriptor(option: Option) -> Any:
    """The rcl_interfaces/ParameterDescriptor the node declares `option` with."""
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    types = {
        "bool": ParameterType.PARAMETER_BOOL,
        "integer": ParameterType.PARAMETER_INTEGER,
        "double": ParameterType.PARAMETER_DOUBLE,
        "string": ParameterType.PARAMETER_STRING,
        "string_array": ParameterType.PARAMETER_STRING_ARRAY,
        "double_array": ParameterType.PARAMETER_DOUBLE_ARRAY,
    }
    text = option.help_text() + (" Changeable at runtime." if option.runtime else "")
    desc = ParameterDescriptor(name=option.name, type=types[option.type_name], description=text,
                               read_only=option.read_only)
    # rclpy types a bare [] as a byte array: an option whose default is an empty list is
    # declared with dynamic typing so that a list of strings can be given for it
    desc.dynamic_typing = option.default == ()
    if option.range is not None and option.type_name == "integer":
        desc.integer_range = [IntegerRange(
            from_value=int(option.range[0]), to_value=int(option.range[1]), step=option.step)]
    elif option.range is not None and option.type_name == "double":
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(option.range[0]), to_value=float(option.range[1]), step=0.0)]
    return desc


def render_yaml(node: str = "/**") -> str:
    """config/sfs.yaml: every parameter with its default, its description as a comment."""
    import json
    import textwrap

    lines = [
        "# Parameters of the sfs_ros node (sfs_node). Generated from sfs_ros/ros/params.py and",
        "# sfs_ros/core/options.py (`python -c 'from sfs_ros.ros.params import render_yaml;",
        "# print(render_yaml(), end=\"\")'`); test/test_params.py checks that they match.",
        "# Use: sfs_node --ros-args --params-file config/sfs.yaml, or the launch file's params_file.",
        "# [runtime] marks parameters that `ros2 param set` may change while the node runs.",
        f"{node}:",
        "  ros__parameters:",
    ]
    for p in PARAMS:
        tag = "[runtime] " if p.runtime else ""
        for line in textwrap.wrap(tag + p.help_text(), 92):
            lines.append(f"    # {line}")
        value = list(p.default) if isinstance(p.default, tuple) else p.default
        lines.append(f"    {p.name}: {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"
