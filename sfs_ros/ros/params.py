"""Every parameter of the sfs_ros node, declared once, here.

`PARAMS` is the single table: name, default (whose Python type is the ROS parameter type),
description, whether it is read-only after start-up, and its validation (choices, an inclusive
range, or a check function). The node declares its parameters from this table (with a
`rcl_interfaces/ParameterDescriptor` carrying the description, read-only flag and range, so
`ros2 param describe` tells users what they can set), validates runtime changes with it, and
`config/sfs.yaml` mirrors it with comments; a test keeps the two equal (`render_yaml()` writes
the file).

Read-only parameters change the models or the topic graph and are fixed once the node starts;
`vocabulary`, `prompt_templates`, `score_threshold`, `overlay_alpha` and `publish_*` may be
changed at runtime (`ros2 param set /sfs_node vocabulary "['cup', 'table, desk']"`).

This module imports neither rclpy nor torch at import time, so tools and tests can read the
table cheaply.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Value = bool | int | float | str | tuple[str, ...]

#: open_clip prompts; the same two templates as `sfs_ros.core.labeler.DEFAULT_TEMPLATES`
#: (a test keeps them equal; duplicated so that this table does not import torch).
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a photo of the {} in the scene.")
#: labeler.LABELING_MODES + semantic.SEMANTIC_MODES (literal here too: no torch import at start-up)
LABELING_CHOICES = ("crop", "dense", "hybrid", "semantic-vote", "semantic-hybrid")
#: Vocabulary presets shipped in config/vocabularies (`sfs_ros.core.vocabulary.PRESETS`).
PRESETS: tuple[str, ...] = ("cityscapes", "ade20k", "ade20k_full", "coco")
#: Largest class id a mono8 label image can hold (255 marks unlabeled pixels).
MONO8_MAX_CLASSES = 255


@dataclass(frozen=True)
class Param:
    """One node parameter. `check(value)` returns the reason a value is refused, or None."""

    name: str
    default: Value
    description: str
    read_only: bool = True
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None  # inclusive; for int and float parameters
    step: int = 0  # integer parameters: valid values are range[0] + k * step
    check: Callable[[Any], str | None] | None = None

    @property
    def type_name(self) -> str:
        """'bool', 'integer', 'double', 'string' or 'string_array' (the ROS parameter type)."""
        return _type_name(self.default)

    def validate(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this parameter, or None when it is."""
        if _type_name(value) != self.type_name:
            return f"{self.name} must be of type {self.type_name}, got {type(value).__name__}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.range is not None:
            low, high = self.range
            if not low <= value <= high:
                return f"{self.name} must lie in [{low}, {high}], got {value}"
            if self.step and (value - low) % self.step:
                return f"{self.name} must be {low} plus a multiple of {self.step}, got {value}"
        if self.check is not None:
            return self.check(value)
        return None

    def descriptor(self) -> Any:
        """The rcl_interfaces/ParameterDescriptor the node declares this parameter with."""
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
        }
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        if not self.read_only:
            text += " Changeable at runtime."
        descriptor = ParameterDescriptor(
            name=self.name,
            type=types[self.type_name],
            description=text,
            read_only=self.read_only,
        )
        if self.range is not None and self.type_name == "integer":
            descriptor.integer_range = [
                IntegerRange(
                    from_value=int(self.range[0]), to_value=int(self.range[1]), step=self.step
                )
            ]
        elif self.range is not None and self.type_name == "double":
            descriptor.floating_point_range = [
                FloatingPointRange(
                    from_value=float(self.range[0]), to_value=float(self.range[1]), step=0.0
                )
            ]
        return descriptor


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "string_array"
    return type(value).__name__


# ---------------------------------------------------------------------- checks of single values
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


def vocabulary_spec(entries: Sequence[str]) -> str | list[str]:
    """What `vocabulary` means for `sfs_ros.core.vocabulary.load_vocabulary`.

    One entry that is a preset name (coco, ade20k, ...) or a .txt/.tsv file is that vocabulary;
    anything else is a list of classes, each "name" or "name, synonym, ...".
    """
    if len(entries) == 1 and (entries[0] in PRESETS or entries[0].endswith((".txt", ".tsv"))):
        return entries[0]
    return list(entries)


def vocabulary_note(entries: Sequence[str]) -> str | None:
    """A warning worth logging for an accepted vocabulary: one entry that is not a preset is a
    one-class vocabulary, which is what a misspelt preset name ("cocoa") also gives."""
    import difflib

    spec = vocabulary_spec(entries)
    if not isinstance(spec, list) or len(spec) != 1:
        return None
    close = difflib.get_close_matches(spec[0], PRESETS, n=1, cutoff=0.7)
    hint = f"; did you mean the preset {close[0]!r}?" if close else ""
    return f"vocabulary {list(entries)!r} is ONE custom class {spec[0].split(',')[0].strip()!r}{hint}"


def _check_vocabulary(entries: Sequence[str]) -> str | None:
    from sfs_ros.core.vocabulary import VocabularyError, load_vocabulary

    if not entries:
        return "vocabulary is empty: give a preset name (coco, ...) or a list of classes"
    try:
        load_vocabulary(vocabulary_spec(entries))
    except VocabularyError as exc:
        return f"vocabulary refused: {exc}"
    return None


def _check_templates(templates: Sequence[str]) -> str | None:
    if not templates:
        return "prompt_templates is empty: give at least one template such as 'a photo of a {}.'"
    import string

    for template in templates:
        try:  # exactly one replacement field, and a bare one: no name, attribute, spec, conversion
            fields = [f for f in string.Formatter().parse(template) if f[1] is not None]
            ok = len(fields) == 1 and fields[0][1:] == ("", "", None)
        except ValueError:  # unbalanced braces
            ok = False
        if not ok:
            return f"prompt template {template!r} must contain '{{}}' exactly once and no other braces"
    return None


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _check_device(device: str) -> str | None:
    if not _DEVICE.match(device.strip().lower()):
        return f"device must be auto, cpu, cuda or cuda:N, got {device!r}"
    return None


def _not_empty(name: str) -> Callable[[str], str | None]:
    return lambda value: None if value.strip() else f"{name} must not be empty"


# ---------------------------------------------------------------------- the table
PARAMS: tuple[Param, ...] = (
    # --- inputs
    Param("image_topics", ("image",),
          "Camera topics to segment. A name ending in /compressed is read as "
          "sensor_msgs/CompressedImage (jpeg/png), any other as sensor_msgs/Image. Relative "
          "names resolve in the node namespace, so the default can be remapped (image:=/cam/image_raw).",
          check=_check_topics),
    Param("input_reliability", "best_effort",
          "QoS reliability of the camera subscriptions: best_effort (sensor-data QoS, matches every "
          "camera driver) or reliable (needed for large frames over lossy UDP, matches reliable "
          "publishers only).",
          choices=("best_effort", "reliable")),
    Param("queue_size", 1,
          "Depth of the input subscriptions and of the pipeline's keep-latest queues; older frames "
          "are dropped (and counted) when the models are slower than the camera.",
          range=(1, 100)),
    # --- vocabulary (runtime)
    Param("vocabulary", ("coco",),
          "Classes to name the masks with: one preset name (cityscapes, ade20k, ade20k_full, coco) "
          "or a .txt/.tsv file, or a list of classes, each 'name' or 'name, synonym, ...'. "
          "A new value is encoded off the executor and swapped in between frames. "
          "semantic-vote: the checkpoint's classes (this is ignored); semantic-hybrid: a list here "
          "adds open-vocabulary classes after the checkpoint's.",
          read_only=False, check=_check_vocabulary),
    Param("prompt_templates", DEFAULT_TEMPLATES,
          "CLIP prompt templates, each with one '{}' for the class name; the text embedding of a "
          "class averages all templates x synonyms.",
          read_only=False, check=_check_templates),
    Param("score_threshold", 0.1,
          "Below this a mask stays unlabeled: the CLIP class probability (crop, dense, hybrid and "
          "the CLIP fallback of semantic-hybrid) or the winning vote share (semantic-vote).",
          read_only=False, range=(0.0, 1.0)),
    Param("topk", 3, "Class proposals reported per instance (winner included).", range=(1, 100)),
    Param("labeling_mode", "crop",
          "How CLIP names masks: crop (every mask cropped and encoded; accuracy first, cost grows "
          "with masks), dense (one ClearCLIP pass per frame, mask-average-pooled; cost nearly "
          "flat), hybrid (dense, then low-margin masks re-scored with crops), semantic-vote (a "
          "closed-set SegFormer votes inside each mask, the SSA rule; the checkpoint's classes), "
          "semantic-hybrid (semantic-vote; masks with a weak vote named by CLIP).",
          choices=LABELING_CHOICES),
    Param("semantic_checkpoint", "nvidia/segformer-b0-finetuned-ade-512-512",
          "semantic-*: Hugging Face semantic-segmentation model id (in the HF cache or "
          "$SFS_WEIGHTS_DIR/<id>/) or a local folder.",
          check=_not_empty("semantic_checkpoint")),
    Param("min_vote_share", 0.5,
          "semantic-hybrid: masks whose winning class holds less than this share of their pixels "
          "are named by CLIP instead.", range=(0.0, 1.0)),
    # --- models (read-only)
    Param("model", "FastSAM-s",
          "FastSAM checkpoint: FastSAM-s, FastSAM-x (looked up in $SFS_WEIGHTS_DIR) or a path to "
          "a YOLOv8-seg .pt file.",
          check=_not_empty("model")),
    Param("clip_model", "ViT-B-32", "open_clip model name of the labeler.",
          check=_not_empty("clip_model")),
    Param("clip_pretrained", "openai",
          "open_clip pretrained tag (found in the Hugging Face cache) or a local checkpoint file.",
          check=_not_empty("clip_pretrained")),
    Param("device", "auto", "Torch device: auto (cuda:0 when available, else cpu), cpu, cuda:N.",
          check=_check_device),
    Param("half", False, "fp16 inference (CUDA only; ignored on cpu)."),
    Param("imgsz", 640, "FastSAM input size in pixels (a multiple of 32).",
          range=(32, 4096), step=32),
    Param("conf", 0.4, "FastSAM mask confidence threshold.", range=(0.0, 1.0)),
    Param("iou", 0.9, "FastSAM non-maximum-suppression IoU threshold.", range=(0.0, 1.0)),
    Param("max_det", 100, "Most masks per frame.", range=(1, 10000)),
    Param("min_mask_area", 100, "Masks with fewer pixels are dropped.", range=(1, 1 << 30)),
    Param("retina_masks", True,
          "Masks from full-resolution prototypes (sharper edges, slower)."),
    Param("mask_resolution", "full",
          "full: every mask upsampled to the image by FastSAM (sharpest edges); low: masks stay on "
          "FastSAM's prototype grid (network input / 4), the label and instance images are "
          "painted there and upsampled once, full-size masks are built only where needed "
          "(fastest; edges move by up to half a cell); network: the same on the network-input "
          "grid (for frames larger than imgsz). BENCHMARKS.md: speed and agreement.",
          choices=("full", "low", "network")),
    Param("random_weights", False,
          "Run both models with random (untrained) weights: for tests and demos without "
          "checkpoints. Labels are meaningless; every output says random_weights."),
    Param("allow_random_fallback", False,
          "When a checkpoint is missing, log it plainly and run that model with random weights "
          "(outputs marked random_weights) instead of failing to configure."),
    # --- outputs
    Param("label_encoding", "mono16",
          "Encoding of ~/label_image: mono16 (unlabeled = 65535) or mono8 (unlabeled = 255, "
          "vocabularies of at most 255 classes).",
          choices=("mono16", "mono8")),
    Param("publish_overlay", True,
          "Publish ~/overlay (rgb8 image blended with class colours).",
          read_only=False),
    Param("overlay_alpha", 0.5, "Opacity of the class colours in ~/overlay.",
          read_only=False, range=(0.0, 1.0)),
    Param("publish_instances", True,
          "Publish ~/instances (sfs_ros/InstanceArray with a mask per instance).",
          read_only=False),
    # --- lifecycle
    Param("autostart", True,
          "Configure and activate on start-up (sfs_node / python -m sfs_ros.ros.node); false leaves "
          "the node unconfigured for a lifecycle manager. The --[no-]autostart flag overrides it."),
)

BY_NAME: Mapping[str, Param] = {p.name: p for p in PARAMS}
RUNTIME: frozenset[str] = frozenset(p.name for p in PARAMS if not p.read_only)


def defaults() -> dict[str, Value]:
    """name -> default, arrays as lists (as YAML and rclpy give them back)."""
    return {p.name: list(p.default) if isinstance(p.default, tuple) else p.default for p in PARAMS}


def validate(values: Mapping[str, Any]) -> str | None:
    """Why this full or partial set of values is refused (first problem), or None.

    Cross-parameter rule: a mono8 label image cannot hold a vocabulary of more than 255 classes
    (`values` must then hold both `vocabulary` and `label_encoding`).
    """
    for name, value in values.items():
        if name not in BY_NAME:
            continue  # not ours (e.g. use_sim_time)
        reason = BY_NAME[name].validate(value)
        if reason:
            return reason
    if values.get("label_encoding") == "mono8" and "vocabulary" in values:
        from sfs_ros.core.vocabulary import load_vocabulary

        size = len(load_vocabulary(vocabulary_spec(values["vocabulary"])))
        if size > MONO8_MAX_CLASSES:
            return (
                f"the vocabulary has {size} classes but a mono8 label image holds at most "
                f"{MONO8_MAX_CLASSES}: use label_encoding:=mono16"
            )
    return None


def render_yaml(node: str = "/**") -> str:
    """config/sfs.yaml: every parameter with its default, its description as a comment."""
    import json
    import textwrap

    lines = [
        "# Parameters of the sfs_ros node (sfs_node). Generated from sfs_ros/ros/params.py",
        "# (`python -c 'from sfs_ros.ros.params import render_yaml; print(render_yaml(), end=\"\")'`);",
        "# test/test_params.py checks that names and defaults match that table.",
        "# Use: sfs_node --ros-args --params-file config/sfs.yaml, or the launch file's params_file.",
        "# [runtime] marks parameters that `ros2 param set` may change while the node runs.",
        f"{node}:",
        "  ros__parameters:",
    ]
    for p in PARAMS:
        text = p.description + (f" One of: {', '.join(p.choices)}." if p.choices else "")
        text = text.replace("", "")
        tag = "[runtime] " if not p.read_only else ""
        for line in textwrap.wrap(tag + text, 92):
            lines.append(f"    # {line}")
        value = list(p.default) if isinstance(p.default, tuple) else p.default
        lines.append(f"    {p.name}: {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"
