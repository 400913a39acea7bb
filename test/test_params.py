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
LAUNCH_ONLY = {"params_file", "namespace", "log_level", "use_rviz", "dds_profile"}


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
        "publish_overlay", "publish_instances",
    }


def test_defaults_agree_with_the_core():
    from sfs_ros.core.labeler import DEFAULT_TEMPLATES, LabelerConfig
    from sfs_ros.core.segmenter import SegmenterConfig
    from sfs_ros.core.vocabulary import PRESETS

    d = params.defaults()
    seg, lab = SegmenterConfig(), LabelerConfig()
    assert tuple(d["prompt_templates"]) == DEFAULT_TEMPLATES == lab.templates
    assert params.PRESETS == PRESETS
    assert (d["model"], d["imgsz"], d["conf"], d["iou"], d["retina_masks"], d["min_mask_area"]) == (
        seg.model, seg.imgsz, seg.conf, seg.iou, seg.retina_masks, seg.min_area)
    from sfs_ros.core.segmenter import MASK_RESOLUTIONS

    assert d["mask_resolution"] == seg.mask_resolution
    assert params.BY_NAME["mask_resolution"].choices == MASK_RESOLUTIONS
    assert (d["clip_model"], d["clip_pretrained"], d["score_threshold"], d["topk"]) == (
        lab.clip_model, lab.pretrained, lab.threshold, lab.topk)
    from sfs_ros.core.labeler import LABELING_MODES
    from sfs_ros.core.semantic import SEMANTIC_MODES, SemanticConfig

    assert d["labeling_mode"] == lab.mode
    assert params.BY_NAME["labeling_mode"].choices == LABELING_MODES + SEMANTIC_MODES
    sem = SemanticConfig()
    assert (d["semantic_checkpoint"], d["min_vote_share"]) == (sem.checkpoint, sem.min_vote_share)


def test_descriptors_carry_description_read_only_and_ranges():
    from rcl_interfaces.msg import ParameterType

    imgsz = params.BY_NAME["imgsz"].descriptor()
    assert imgsz.read_only and imgsz.type == ParameterType.PARAMETER_INTEGER
    assert (imgsz.integer_range[0].from_value, imgsz.integer_range[0].step) == (32, 32)
    vocab = params.BY_NAME["vocabulary"].descriptor()
    assert not vocab.read_only and vocab.type == ParameterType.PARAMETER_STRING_ARRAY
    assert "preset" in vocab.description and "runtime" in vocab.description
    alpha = params.BY_NAME["overlay_alpha"].descriptor()
    assert alpha.floating_point_range[0].to_value == 1.0
    assert "One of: mono16, mono8" in params.BY_NAME["label_encoding"].descriptor().description


@pytest.mark.parametrize(
    "values, words",
    [
        ({"vocabulary": ()}, "vocabulary is empty"),
        ({"vocabulary": ("cup", "")}, "empty class name"),
        ({"vocabulary": ("cup", "Cup")}, "duplicate class name"),
        ({"vocabulary": ("cocoo.tsv",)}, "not found"),
        ({"prompt_templates": ("a photo",)}, "must contain '{}'"),
        ({"prompt_templates": ()}, "prompt_templates is empty"),
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
    assert "did you mean the preset 'coco'" in params.vocabulary_note(["cocoa"])
    assert "ONE custom class 'person'" in params.vocabulary_note(["person"])
    assert params.vocabulary_note(["coco"]) is None
    assert params.vocabulary_note(["cup", "table"]) is None


def test_vocabulary_spec():
    assert params.vocabulary_spec(["coco"]) == "coco"
    assert params.vocabulary_spec(["my/classes.txt"]) == "my/classes.txt"
    assert params.vocabulary_spec(["person"]) == ["person"]
    assert params.vocabulary_spec(["cup, mug", "table"]) == ["cup, mug", "table"]
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
