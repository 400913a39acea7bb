"""The parameter table (sfs_ros/ros/params.py) against config/sfs.yaml, the core defaults, the
launch file's arguments, and the validation users see when they set a bad value."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from sfs_ros.ros import params

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "sfs.launch.py"
#: Launch arguments that are not node parameters, and why.
LAUNCH_ONLY = {"params_file", "namespace", "log_level", "use_rviz", "dds_profile", "groups"}


def yaml_parameters() -> dict:
    data = yaml.safe_load((ROOT / "config" / "sfs.yaml").read_text())
    assert list(data) == ["/**"], "config/sfs.yaml should apply to any node name (/**)"
    return data["/**"]["ros__parameters"]


def test_yaml_matches_the_table():
    from_yaml = yaml_parameters()
    assert list(from_yaml) == [p.name for p in params.PARAMS], "same names, same order"
    assert from_yaml == params.defaults()
    for name, value in from_yaml.items():  # same types: YAML 1 would be an int, not a double
        assert params.BY_NAME[name].validate(tuple(value) if isinstance(value, list) else value) is None


def test_yaml_is_what_render_yaml_writes():
    assert (ROOT / "config" / "sfs.yaml").read_text() == params.render_yaml(), (
        "regenerate config/sfs.yaml with sfs_ros.ros.params.render_yaml()"
    )


def test_every_parameter_has_a_description_and_a_valid_default():
    for p in params.PARAMS:
        assert len(p.description) > 15, p.name
        assert p.validate(p.default) is None, p.name


def test_runtime_parameters_are_the_documented_ones():
    assert params.RUNTIME == {
        "vocabulary", "prompt_templates", "score_threshold", "overlay_alpha",
        "publish_overlay", "publish_instances", "max_frame_age",
        "tracking", "track_iou", "min_hits", "max_age", "label_smoothing", "relabel_every",
        "prompt_text_threshold", "prompt_negatives", "prompt_point_select", "prompt_box_inside",
    }


def _tuples(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def test_table_defaults_are_the_core_defaults():
    """The node's defaults, built through the one config path, are the core dataclasses'
    own defaults: a user of the Python core gets what a node user gets."""
    from sfs_ros.core.config import build_configs
    from sfs_ros.core.labeler import LabelerConfig
    from sfs_ros.core.segmenter import SegmenterConfig
    from sfs_ros.core.semantic import SemanticConfig

    configs = build_configs(_tuples(params.defaults()))
    assert configs.segmenter == SegmenterConfig()
    assert configs.labeler == LabelerConfig()
    assert configs.semantic is None and configs.mode == "crop"
    from sfs_ros.core.tracker import TrackerConfig
    assert configs.tracking == TrackerConfig()  # tracking on by default
    semantic = build_configs(_tuples({**params.defaults(), "labeling_mode": "semantic-hybrid"}))
    assert semantic.semantic == SemanticConfig()


def _other_value(option):
    """A valid value of `option` that is not its default."""
    value = option.default
    if option.choices:
        return next(c for c in option.choices if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + (option.step or 1)
    if isinstance(value, float):
        return round(value / 2 + 0.07, 3)
    if option.name == "vocabulary":
        return ("cup", "table, desk")
    if option.name == "prompt_templates":
        return ("a picture of a {}.",)
    if option.name == "crop_scales":
        return (1.0, 2.0)
    if option.name == "prompt_negatives":
        return ("sky", "ground")
    return {"device": "cpu", "clip_device": "cpu", "semantic_device": "cpu"}.get(option.name, value + ".other")


@pytest.mark.parametrize("option", [o for o in params.PARAMS if o.cli], ids=lambda o: o.name)
def test_every_core_option_reaches_the_core_from_the_node_and_both_commands(option):
    """One config path: each core option is a node parameter AND a flag of `sfs` and
    `sfs_eval`, and a non-default value given either way changes the same core config."""
    from sfs_ros.cli import build_parser as sfs_parser
    from sfs_ros.core import options
    from sfs_ros.core.config import build_configs
    from sfs_ros.eval.cli import build_parser as eval_parser

    assert option.name in params.BY_NAME
    value = _other_value(option)
    assert option.validate(value) is None, value
    flag_value = [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    if isinstance(value, bool):
        argv = [option.cli_flag if value else "--no-" + option.cli_flag[2:]]
    else:
        argv = [option.cli_flag, *flag_value]
    base = _tuples(options.defaults())
    if option.name in ("semantic_checkpoint", "min_vote_share", "semantic_device"):  # semantic-* only
        base["labeling_mode"] = "semantic-hybrid"
        argv += ["--labeling", "semantic-hybrid"]
    from_node = build_configs({**base, option.name: value})
    for argv0 in (["segment", "in.png"], ["run", "bag", "--out", "o"]):
        parser = sfs_parser() if argv0[0] == "segment" else eval_parser()
        args = parser.parse_args([*argv0, *argv])
        from_cli = build_configs(options.values_from_args(args))
        assert from_cli == from_node
    if option.name != "vocabulary":  # the vocabulary reaches the labeler, not a config
        assert from_node != build_configs(base), f"{option.name} changes nothing the core is built with"


def test_descriptors_carry_description_read_only_and_ranges():
    from rcl_interfaces.msg import ParameterType

    imgsz = params.descriptor(params.BY_NAME["imgsz"])
    assert imgsz.read_only and imgsz.type == ParameterType.PARAMETER_INTEGER
    assert (imgsz.integer_range[0].from_value, imgsz.integer_range[0].step) == (32, 32)
    vocab = params.descriptor(params.BY_NAME["vocabulary"])
    assert not vocab.read_only and vocab.type == ParameterType.PARAMETER_STRING_ARRAY
    assert "preset" in vocab.description and "runtime" in vocab.description
    alpha = params.descriptor(params.BY_NAME["overlay_alpha"])
    assert alpha.floating_point_range[0].to_value == 1.0
    assert "One of: mono16, mono8" in params.descriptor(params.BY_NAME["label_encoding"]).description
    scales = params.descriptor(params.BY_NAME["crop_scales"])
    assert scales.type == ParameterType.PARAMETER_DOUBLE_ARRAY


@pytest.mark.parametrize(
    "values, words",
    [
        ({"vocabulary": ()}, "vocabulary is empty"),
        ({"vocabulary": ("cup", "")}, "empty class name"),
        ({"vocabulary": ("cup", "Cup")}, "duplicate class name"),
        ({"vocabulary": ("cocoo.tsv",)}, "not found"),
        ({"prompt_templates": ("a photo",)}, "must contain '{}'"),
        ({"prompt_templates": ("{} {}",)}, "must contain '{}' exactly once"),
        ({"prompt_templates": ()}, "at least one prompt template"),
        ({"crop_scales": ()}, "crop_scales must hold"),
        ({"crop_scales": (1.0, 0.0)}, r"crop_scales must lie in"),
        ({"image_topics": ()}, "image_topics is empty"),
        ({"image_topics": ("bad topic",)}, "not a valid topic name"),
        ({"image_topics": ("a", "a")}, "twice"),
        ({"imgsz": 100}, "multiple of 32"),
        ({"conf": 1.5}, r"\[0.0, 1.0\]"),
        ({"label_encoding": "mono32"}, "one of mono16, mono8"),
        ({"device": "gpu"}, "device must be"),
        ({"score_threshold": "high"}, "type double"),
        ({"vocabulary": ("ade20k_full",), "label_encoding": "mono8"}, "label_encoding:=mono16"),
    ],
)
def test_validation_says_why(values, words):
    reason = params.validate(values)
    assert reason is not None
    import re

    assert re.search(words, reason), reason


def test_vocabulary_note_flags_one_class_vocabularies():
    from sfs_ros.core.vocabulary import vocabulary_note

    assert "did you mean the preset 'coco'" in vocabulary_note(["cocoa"])
    assert "ONE custom class 'person'" in vocabulary_note(["person"])
    assert vocabulary_note(["coco"]) is None
    assert vocabulary_note(["cup", "table"]) is None


def test_vocabulary_spec():
    from sfs_ros.core.vocabulary import vocabulary_spec

    assert vocabulary_spec(["coco"]) == "coco"
    assert vocabulary_spec(["my/classes.txt"]) == "my/classes.txt"
    assert vocabulary_spec(["person"]) == ["person"]
    assert vocabulary_spec(["cup, mug", "table"]) == ["cup, mug", "table"]
    assert params.validate({"vocabulary": ("coco",), "label_encoding": "mono8"}) is None


# ---------------------------------------------------------------------- launch arguments
def launch_arguments() -> list[str]:
    """Names of every DeclareLaunchArgument in launch/sfs.launch.py, read with `ast` (the
    launch package is not installable here): the two argument tables of the file."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    tables = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("PARAMETER_ARGUMENTS", "LAUNCH_ARGUMENTS"):
                tables[node.targets[0].id] = [k.value for k in node.value.keys]
    assert set(tables) == {"PARAMETER_ARGUMENTS", "LAUNCH_ARGUMENTS"}
    source = LAUNCH_FILE.read_text()
    assert "DeclareLaunchArgument(name" in source  # both tables are declared in a loop
    return tables["PARAMETER_ARGUMENTS"] + tables["LAUNCH_ARGUMENTS"]


def test_every_launch_argument_maps_to_a_parameter():
    names = launch_arguments()
    for required in ("vocabulary", "device", "image_topics", "params_file", "namespace", "model",
                     "clip_model", "log_level", "use_rviz"):
        assert required in names
    unmapped = [n for n in names if n not in params.BY_NAME and n not in LAUNCH_ONLY]
    assert not unmapped, f"launch arguments that are no node parameter: {unmapped}"
