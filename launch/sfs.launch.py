"""Launch the sfs_ros node (and optionally rviz2).

    ros2 launch sfs_ros sfs.launch.py image_topics:=/camera/image_raw vocabulary:=cityscapes
    ros2 launch sfs_ros sfs.launch.py vocabulary:="['cup, mug', 'table']" device:=cuda:0 use_rviz:=true
    ros2 launch sfs_ros sfs.launch.py random_weights:=true      # no checkpoints needed (demo)
    ros2 launch sfs_ros sfs.launch.py autostart:=false          # launch drives the lifecycle
    ros2 launch sfs_ros sfs.launch.py groups:=config/groups.yaml  # one node per camera group

Parameters come from `params_file` (default: share/sfs_ros/config/sfs.yaml); every other
argument left empty keeps the file's value, a non-empty one overrides it. List arguments
(image_topics, vocabulary) take a YAML list ("['a', 'b']"); image_topics also takes a
comma-separated list, vocabulary a preset name, a .txt/.tsv file, or classes separated by ';'
("cup, mug; table": ',' separates synonyms within a class).

The node is a lifecycle node (launch_ros LifecycleNode). `autostart:=true` (default) leaves the
transitions to the node itself (its `autostart` parameter, from params_file); `autostart:=false`
passes `--no-autostart` and lets this launch file drive them: it emits *configure*, and when
configuring has reached *inactive* it emits *activate* (transition events, visible to
`ros2 lifecycle`). A params file with `autostart: false` under the default keeps the node
unconfigured for an external lifecycle manager.

`launch`, `launch_ros` and `lifecycle_msgs` are imported inside the functions that build the
description only, so this file can be read and its helpers tested where ROS launch is not
installed. Presets and modes come from sfs_ros (one spelling, no copies here).
"""
from __future__ import annotations

import os

from sfs_ros.core.options import LABELING_MODES
from sfs_ros.core.vocabulary import PRESETS
from sfs_ros.core.weights import FASTSAM_MODELS

#: Launch arguments that are node parameters of the same name (see sfs_ros/ros/params.py).
PARAMETER_ARGUMENTS = {
    "image_topics": "Camera topics (YAML list or comma-separated); names ending in /compressed "
                    "are read as sensor_msgs/CompressedImage.",
    "vocabulary": f"Preset ({', '.join(PRESETS)}), .txt/.tsv file, YAML list of classes, or "
                  "classes separated by ';'.",
    "device": "auto, cpu or cuda:N.",
    "model": f"FastSAM checkpoint name ({', '.join(FASTSAM_MODELS)}) or path.",
    "clip_model": "open_clip model name (ViT-B-32, ...).",
    "labeling_mode": f"One of {', '.join(LABELING_MODES)}.",
    "semantic_checkpoint": "semantic-*: Hugging Face SegFormer id or local folder.",
    "random_weights": "true: run untrained models (demo/tests without checkpoints).",
    "backend": "torch, openvino, onnxruntime or tensorrt (exported FastSAM and CLIP image encoder).",
    "clip_device": "Device of the CLIP labeler (empty in params_file: same as device).",
}
#: Launch-only arguments: name -> (default, description).
LAUNCH_ARGUMENTS = {
    "params_file": (None, "Parameter YAML file (default: share/sfs_ros/config/sfs.yaml)."),
    "namespace": ("", "Namespace of the node (and of its relative input topics)."),
    "log_level": ("info", "Logging level of the node (debug, info, warn, error)."),
    "use_rviz": ("false", "Start rviz2 with share/sfs_ros/config/sfs.rviz."),
    "autostart": ("true", "true: the node configures and activates itself (its autostart "
                          "parameter); false: this launch file drives configure, then activate, "
                          "with lifecycle events."),
    "dds_profile": ("", "Fast DDS XML profile for the node (FASTDDS_DEFAULT_PROFILES_FILE), e.g. "
                        "share/sfs_ros/config/fastdds_localhost.xml to keep DDS on loopback with "
                        "large socket buffers; empty keeps the environment."),
    "groups": ("", "One node per camera group, each with its own devices: a YAML file or an "
                   "inline YAML list of mappings {name, image_topics, and any node parameter: "
                   "device, clip_device, backend, ...}; node i is sfs_<name>. Empty: one node, "
                   "sfs_node. The other arguments apply to every group; a group's own keys win."),
}
LIST_PARAMETERS = ("image_topics", "vocabulary")
BOOL_PARAMETERS = ("random_weights",)


def parse_list(name: str, text: str) -> list[str]:
    """A list-valued launch argument as the node parameter's list of strings."""
    import yaml

    text = text.strip()
    if text.startswith("["):
        value = yaml.safe_load(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name}: expected a list of strings, got {text!r}")
        return [v.strip() for v in value]
    separator = ";" if name == "vocabulary" else ","
    return [part.strip() for part in text.split(separator) if part.strip()]


def parse_bool(name: str, text: str) -> bool:
    """A true/false launch argument; anything else is refused naming the argument."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name}: expected true or false, got {text!r}")


def parameter_overrides(arguments: dict[str, str]) -> dict[str, object]:
    """Node parameters from launch arguments; empty arguments are left to the params file."""
    overrides: dict[str, object] = {}
    for name in PARAMETER_ARGUMENTS:
        text = arguments.get(name, "").strip()
        if not text:
            continue
        if name in LIST_PARAMETERS:
            overrides[name] = parse_list(name, text)
        elif name in BOOL_PARAMETERS:
            overrides[name] = parse_bool(name, text)
        else:
            overrides[name] = text
    return overrides


def parse_groups(text: str) -> list[dict[str, object]]:
    """The `groups` argument as [{"name": ..., parameter: value, ...}], checked: each group a
    mapping with a node-name-safe `name` and its own `image_topics`, every other key a node
    parameter with a valid value, no name or topic in two groups (a camera served twice would
    cost its models twice). Empty text: no groups (one node)."""
    import re

    import yaml

    from sfs_ros.ros import params

    text = text.strip()
    if not text:
        return []
    if not text.startswith("["):
        try:
            with open(text, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ValueError(f"groups: {text!r} is neither a YAML list nor a readable file ({exc})") from None
    groups = yaml.safe_load(text)
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise ValueError("groups: expected a non-empty list of mappings {name, image_topics, ...}")
    seen_names: set[str] = set()
    seen_topics: set[str] = set()
    for group in groups:
        name = str(group.get("name", ""))
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or name in seen_names:
            raise ValueError(f"groups: every group needs its own name (letters, digits, _), got {name!r}")
        seen_names.add(name)
        topics = group.get("image_topics")
        group["image_topics"] = topics = parse_list("image_topics", topics) if isinstance(topics, str) else topics
        if not topics or seen_topics & set(topics):
            raise ValueError(f"groups: {name}: image_topics must be given and not shared with another group")
        seen_topics.update(topics)
        for key, value in group.items():
            if key == "name":
                continue
            option = params.BY_NAME.get(key)
            if option is None:
                raise ValueError(f"groups: {name}: {key!r} is not a node parameter")
            reason = option.validate(tuple(value) if isinstance(value, list) else value)
            if reason:
                raise ValueError(f"groups: {name}: {reason}")
    return groups


def _share_dir() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return get_package_share_directory("sfs_ros")
    except (ImportError, LookupError, OSError):  # a source checkout (no ament index)
        return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def node_arguments(arguments: dict[str, str]) -> list[str]:
    """sfs_node's command-line arguments: `--no-autostart` (before --ros-args, where the node
    reads it) when this launch file drives the lifecycle, then the log level."""
    driven = not parse_bool("autostart", arguments.get("autostart", "true"))
    return (["--no-autostart"] if driven else []) + [
        "--ros-args", "--log-level", arguments.get("log_level", "info")]


def lifecycle_actions(node) -> list:
    """configure now; activate once configuring ends in 'inactive' (the ros2/demos lifecycle
    pattern). The handler matches the configuring -> inactive step only, so a later deactivate
    (active -> deactivating -> inactive) is not undone by a re-activate."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def change(transition_id: int):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition_id))

    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[change(Transition.TRANSITION_ACTIVATE)],
    ))
    return [activate_when_configured, change(Transition.TRANSITION_CONFIGURE)]


def _launch_setup(context, *args, **kwargs):
    from launch.actions import ExecuteProcess
    from launch_ros.actions import LifecycleNode

    arguments = {name: value for name, value in context.launch_configurations.items()}
    share = _share_dir()
    params_file = arguments.get("params_file") or os.path.join(share, "config", "sfs.yaml")
    env = {}
    if arguments.get("dds_profile"):
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = arguments["dds_profile"]
    overrides = parameter_overrides(arguments)
    groups = parse_groups(arguments.get("groups", ""))
    nodes = {"sfs_node": overrides} if not groups else {
        f"sfs_{g['name']}": {**overrides, **{k: v for k, v in g.items() if k != "name"}} for g in groups}
    actions = []
    for name, node_overrides in nodes.items():
        node = LifecycleNode(
            package="sfs_ros",
            executable="sfs_node",
            name=name,
            namespace=arguments.get("namespace", ""),
            parameters=[params_file, node_overrides],
            arguments=node_arguments(arguments),
            additional_env=env,
            output="screen",
            emulate_tty=True,
            sigterm_timeout="5",
        )
        actions.append(node)
        if not parse_bool("autostart", arguments.get("autostart", "true")):
            actions += lifecycle_actions(node)
    if parse_bool("use_rviz", arguments.get("use_rviz", "false")):
        actions.append(ExecuteProcess(
            cmd=["rviz2", "-d", os.path.join(share, "config", "sfs.rviz")],
            additional_env=env, output="screen",
        ))
    return actions


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    declared = [
        DeclareLaunchArgument(name, default_value="", description=text + " Empty: params_file.")
        for name, text in PARAMETER_ARGUMENTS.items()
    ]
    default_params = os.path.join(_share_dir(), "config", "sfs.yaml")
    declared += [
        DeclareLaunchArgument(
            name, default_value=default_params if default is None else default, description=text
        )
        for name, (default, text) in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch_setup)])
