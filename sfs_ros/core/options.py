"""Every option of sfs_ros, declared once, here: the models, the labeling and the vocabulary.

`CORE_OPTIONS` is the single table the three entry points share:
* the node declares each as a ROS parameter (`sfs_ros.ros.params` adds the node-only ones:
  topics, QoS, outputs, lifecycle) with its description, range and choices;
* `sfs` and `sfs_eval` generate their command-line flags from it (`add_arguments`), the flag
  being the name with dashes unless an option keeps an older, shorter flag (`--vocab`);
* `sfs_ros.core.config.build_configs(values)` turns one {name: value} mapping, from either
  side, into the core's config dataclasses.
So an option added here is reachable from the node, the CLI and the evaluator at once, with
the same default, the same validation and the same meaning.

Nothing here imports torch or rclpy: tools, tests and the launch file read the table cheaply.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sfs_ros.core.prompt import POINT_SELECT, PromptConfig
from sfs_ros.core.vocabulary import (
    DEFAULT_TEMPLATES,
    PRESETS,
    VocabularyError,
    load_vocabulary,
    template_problem,
    vocabulary_spec,
)

#: CLIP labeling modes (`core/labeler.py`).
CLIP_MODES: tuple[str, ...] = ("crop", "dense", "hybrid")
#: Closed-set modes (`core/semantic.py`): a SegFormer votes inside each mask.
SEMANTIC_MODES: tuple[str, ...] = ("semantic-vote", "semantic-hybrid")
#: Every labeling mode, in the order the help texts list them.
LABELING_MODES: tuple[str, ...] = CLIP_MODES + SEMANTIC_MODES
#: Where FastSAM's masks live (`core/segmenter.py`): the image, the prototype grid, the network grid.
MASK_RESOLUTIONS: tuple[str, ...] = ("full", "low", "network")
#: clip_quick_gelu values: auto decides from the pretrained tag / model name (core/weights.py).
QUICK_GELU_CHOICES: tuple[str, ...] = ("auto", "true", "false")
#: Inference backends (core/backends/): torch runs the models as loaded; the others run exported
#: copies (FastSAM and the CLIP image encoder) built once into the export cache.
BACKENDS: tuple[str, ...] = ("torch", "openvino", "onnxruntime", "tensorrt")

#: What `score_threshold` means in each labeling mode: one meaning per mode, the same in the
#: node, `sfs` and `sfs_eval`, and reported in LabelInfo.threshold_kind.
THRESHOLD_KINDS: Mapping[str, str] = {
    "crop": "clip_probability",
    "dense": "clip_probability",
    "hybrid": "clip_probability",
    "semantic-vote": "vote_share",
    "semantic-hybrid": "clip_probability",
}

Value = bool | int | float | str | tuple[str, ...] | tuple[float, ...]
#: Defaults of the prompt options: those of the core's PromptConfig.
PROMPT_DEFAULTS = PromptConfig()


@dataclass(frozen=True)
class Option:
    """One option. `check(value)` returns the reason a value is refused, or None.

    `runtime`: the node may change it while running (`ros2 param set`); `flag`: the
    command-line flag when it is not `--<name-with-dashes>`; `cli`: whether `sfs`/`sfs_eval`
    offer it (node-only options such as topics do not make sense there).
    """

    name: str
    default: Value
    description: str
    runtime: bool = False
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None  # inclusive; for int and float options
    step: int = 0  # integer options: valid values are range[0] + k * step
    check: Callable[[Any], str | None] | None = None
    flag: str = ""
    cli: bool = True

    @property
    def read_only(self) -> bool:
        return not self.runtime

    @property
    def type_name(self) -> str:
        """'bool', 'integer', 'double', 'string', 'string_array' or 'double_array' (ROS types)."""
        return type_name(self.default)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def validate(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this option, or None when it is."""
        kind = type_name(value)
        if self.type_name == "double_array" and isinstance(value, (list, tuple)) and (
                not value or kind == "integer_array"):
            value, kind = tuple(float(v) for v in value), "double_array"  # [] or a YAML [1, 2]
        if kind != self.type_name:
            return f"{self.name} must be of type {self.type_name}, got {type(value).__name__}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.range is not None:
            low, high = self.range
            for item in value if isinstance(value, (list, tuple)) else (value,):
                if not low <= item <= high:
                    return f"{self.name} must lie in [{low}, {high}], got {item}"
                if self.step and (item - low) % self.step:
                    return f"{self.name} must be {low} plus a multiple of {self.step}, got {item}"
        if self.check is not None:
            return self.check(value)
        return None

    def help_text(self) -> str:
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        return text


def type_name(value: Any) -> str:
    """The ROS parameter type name of a Python value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return "string_array"
        if all(isinstance(v, float) for v in value):
            return "double_array"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "integer_array"
    return type(value).__name__


# ---------------------------------------------------------------------- checks of single values
def check_vocabulary(entries: Sequence[str]) -> str | None:
    if not entries:
        return "vocabulary is empty: give a preset name (coco, ...) or a list of classes"
    try:
        load_vocabulary(vocabulary_spec(entries))
    except VocabularyError as exc:
        return f"vocabulary refused: {exc}"
    return None


def check_templates(templates: Sequence[str]) -> str | None:
    problem = template_problem(templates)
    return f"prompt_templates: {problem}" if problem else None


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str | None:
    if not _DEVICE.match(device.strip().lower()):
        return f"device must be auto, cpu, cuda or cuda:N, got {device!r}"
    return None


def not_empty(name: str) -> Callable[[str], str | None]:
    return lambda value: None if value.strip() else f"{name} must not be empty"


def _scales(value: tuple[float, ...]) -> str | None:
    return None if value else "crop_scales must hold at least one scale"


def _negatives(value: tuple[str, ...]) -> str | None:
    return "prompt_negatives must not hold an empty text" if any(not v.strip() for v in value) else None


# ---------------------------------------------------------------------- the table
# Each feature keeps its options in its own tuple (tracking, depth, prompts, backends), joined
# into CORE_OPTIONS below in the order of config/sfs.yaml.

#: Tracking (core/tracker.py): stable instance ids and temporal labels.
TRACKING_OPTIONS: tuple[Option, ...] = (
    Option("tracking", True,
           "Track masks over frames (one tracker per camera): instance ids become stable track "
           "ids (never reused within a run; the uint16 instance image wraps them onto 1..65535) "
           "and labels are smoothed over frames. Off: ids are mask indices, labels per frame.",
           runtime=True),
    Option("track_iou", 0.3,
           "Least mask IoU between a mask and a track's predicted mask for them to match.",
           runtime=True, range=(0.01, 1.0)),
    Option("min_hits", 2,
           "Matched frames in a row before a track is confirmed; a tentative track that misses "
           "one frame is deleted (its id is not given again).", runtime=True, range=(1, 1000)),
    Option("max_age", 15,
           "Frames a confirmed track may go unseen (occlusion, a missed mask) before it is "
           "deleted.", runtime=True, range=(0, 100000)),
    Option("label_smoothing", 0.7,
           "Weight of a track's past class evidence in its moving average of class scores (0 = "
           "each frame's own label; 0.7: a confident change wins in two frames).",
           runtime=True, range=(0.0, 0.99)),
    Option("relabel_every", 1,
           "Confirmed tracks with a confident smoothed label are labeled every N frames and keep "
           "their label between (1 = every mask every frame; N > 1 saves labeler work on static "
           "scenes).", runtime=True, range=(1, 1000)),
)
#: Depth (core/geometry.py): back-projection, the semantic point cloud, 3D instances.
GEOMETRY_OPTIONS: tuple[Option, ...] = (
    Option("depth_scale", 0.001,
           "Metres per unit of a 16UC1 depth image (0.001: millimetres); 32FC1 depth is metres.",
           range=(1e-6, 1.0)),
    Option("cloud_stride", 1,
           "Pixel step of the point cloud in both axes (2 keeps every other row and column).",
           range=(1, 64)),
    Option("cloud_voxel", 0.0,
           "Voxel edge in metres: the cloud keeps one point per occupied voxel (0 = off).",
           range=(0.0, 10.0)),
    Option("cloud_min_range", 0.0,
           "Depth (z, metres) below which a pixel gives no point.", range=(0.0, 1000.0)),
    Option("cloud_max_range", 20.0,
           "Depth (z, metres) above which a pixel gives no point.", range=(0.001, 1000.0)),
    Option("cloud_labeled_only", False,
           "Keep only points whose label-image pixel names a class in the cloud (3D instance "
           "statistics still use every point)."),
)
#: Prompted segmentation (core/prompt.py): the service, the clicks and `sfs prompt`.
PROMPT_OPTIONS: tuple[Option, ...] = (
    Option("prompt_text_threshold", PROMPT_DEFAULTS.text_threshold,
           "Text prompts: a mask matches a text when the text's CLIP probability against the "
           "negatives (the vocabulary plus prompt_negatives) is the highest and at least this. "
           "A request's own text_threshold (> 0) overrides it.",
           runtime=True, range=(0.0, 1.0)),
    Option("prompt_negatives", PROMPT_DEFAULTS.negatives,
           "Text prompts: generic prompts every text competes with besides the vocabulary, so a "
           "text does not match every mask.",
           runtime=True, check=_negatives),
    Option("prompt_point_select", PROMPT_DEFAULTS.point_select,
           "Point prompts: which of the masks holding a foreground point it selects (nested "
           "masks): the smallest (a cup, not the table under it), the largest, or all.",
           runtime=True, choices=POINT_SELECT),
    Option("prompt_box_inside", PROMPT_DEFAULTS.box_inside,
           "Box prompts with a text or foreground points: the share of a mask's pixels that "
           "must lie inside a box (a box alone selects the mask of highest IoU with it).",
           runtime=True, range=(0.01, 1.0)),
)
#: Inference backends and per-model devices (core/backends/).
def int8_problem(backend: str, int8: bool) -> str | None:
    """Why `int8` cannot go with `backend` (only openvino's graphs are quantised), or None."""
    if int8 and backend != "openvino":
        return f"int8 needs backend openvino (NNCF quantises its CPU graphs), got backend {backend}"
    return None


BACKEND_OPTIONS: tuple[Option, ...] = (
    Option("backend", "torch",
           "Inference backend of FastSAM and the CLIP image encoder (the text encoder and the "
           "SegFormer stay on torch): torch, openvino (CPU), onnxruntime (CPU; CUDA provider on "
           "cuda devices), tensorrt (CUDA + tensorrt only). Exported models are cached per model, "
           "weights, input size and backend; `sfs export` builds them ahead.",
           choices=BACKENDS),
    Option("export_missing", True,
           "backend other than torch: export a model missing from the cache when loading (tens "
           "of seconds, once) instead of failing with the `sfs export` command to run."),
    Option("int8", False,
           "backend openvino: run FastSAM and the dense CLIP graph as int8 (the crop encoder stays "
           "f32), quantised once by NNCF post-training quantisation at export (cached like the "
           "exports) on int8_calibration. 2-3x faster than f32 on CPUs with VNNI; agreement with "
           "f32 in BENCHMARKS.md. Other backends refuse it."),
    Option("int8_calibration", "",
           "int8: folder of images to calibrate on (up to 32; your camera's frames are best). "
           "Empty: generated frames (the shapes world) and photos bundled with scikit-image."),
    Option("clip_device", "",
           "Torch device of the CLIP labeler (empty: the same as device).",
           check=lambda v: check_device(v) if v.strip() else None),
    Option("semantic_device", "",
           "Torch device of the SegFormer in the semantic-* modes (empty: the same as device).",
           check=lambda v: check_device(v) if v.strip() else None),
)

_LABELING_AND_MODELS: tuple[Option, ...] = (
    # --- vocabulary and labeling
    Option("vocabulary", ("coco",),
           "Classes to name the masks with: one preset name (" + ", ".join(PRESETS) + ") or a "
           ".txt/.tsv file, or a list of classes, each 'name' or 'name, synonym, ...'. "
           "semantic-vote: the checkpoint's classes (this is ignored); semantic-hybrid: a list "
           "here adds open-vocabulary classes after the checkpoint's.",
           runtime=True, check=check_vocabulary, flag="--vocab"),
    Option("prompt_templates", DEFAULT_TEMPLATES,
           "CLIP prompt templates, each with one '{}' for the class name; the text embedding of "
           "a class averages all templates x synonyms.",
           runtime=True, check=check_templates, flag="--templates"),
    Option("score_threshold", 0.1,
           "Below this a mask stays unlabeled. Its meaning depends on the labeling mode (LabelInfo "
           "says which): crop, dense, hybrid and semantic-hybrid: the CLIP class probability "
           "(semantic-hybrid: of the masks CLIP names, those with a weak vote); semantic-vote: "
           "the winning class's share of the mask's pixels.",
           runtime=True, range=(0.0, 1.0), flag="--threshold"),
    Option("topk", 3, "Class proposals reported per instance (winner included).", range=(1, 100)),
    Option("labeling_mode", "crop",
           "How masks are named: crop (every mask cropped and encoded by CLIP; accuracy first, "
           "cost grows with masks), dense (one ClearCLIP pass per frame, mask-average-pooled; "
           "cost nearly flat), hybrid (dense, then low-margin masks re-scored with crops), "
           "semantic-vote (a closed-set SegFormer votes inside each mask, the SSA rule; the "
           "checkpoint's classes), semantic-hybrid (semantic-vote; masks with a weak vote named "
           "by CLIP).",
           choices=LABELING_MODES, flag="--labeling"),
    Option("prune_topk", 0,
           "CLIP modes: score masks only against the frame's top-k classes by a whole-image CLIP "
           "score, plus recent winners (0 = off; pays off for large vocabularies).",
           range=(0, 65534)),
    Option("dense_size", 448, "dense, hybrid: short side of the dense CLIP input in pixels.",
           range=(32, 4096)),
    Option("hybrid_margin", 0.1,
           "hybrid: masks whose top-1 minus top-2 class probability is below this are re-scored "
           "with crops.", range=(0.0, 1.0)),
    Option("crop_scales", (1.0, 1.5),
           "crop, hybrid: context scales of the square crop around each mask's box (crop side = "
           "longest box side x scale); probabilities are averaged over scales.",
           range=(0.1, 10.0), check=_scales),
    Option("crop_background_blend", 0.8,
           "crop, hybrid: how far pixels outside the mask fade to grey (1 = fully grey).",
           range=(0.0, 1.0)),
    Option("semantic_checkpoint", "nvidia/segformer-b0-finetuned-ade-512-512",
           "semantic-*: Hugging Face semantic-segmentation model id (in the HF cache or "
           "$SFS_WEIGHTS_DIR/<id>/) or a local folder.",
           check=not_empty("semantic_checkpoint")),
    Option("min_vote_share", 0.5,
           "semantic-hybrid: masks whose winning class holds less than this share of their "
           "pixels are named by CLIP instead.", range=(0.0, 1.0)),
    # --- models
    Option("model", "FastSAM-s",
           "FastSAM checkpoint: FastSAM-s, FastSAM-x (looked up in $SFS_WEIGHTS_DIR) or a path to "
           "a YOLOv8-seg .pt file.",
           check=not_empty("model")),
    Option("clip_model", "ViT-B-32", "open_clip model name of the labeler.",
           check=not_empty("clip_model")),
    Option("clip_pretrained", "openai",
           "open_clip pretrained tag (found in the Hugging Face cache) or a local checkpoint file.",
           check=not_empty("clip_pretrained")),
    Option("clip_quick_gelu", "auto",
           "CLIP activation: QuickGELU (what OpenAI's weights were trained with) or GELU. auto: "
           "the pretrained tag says, or for a checkpoint file the model name / file; true or "
           "false force it (set true for OpenAI weights given as a file). The log says which.",
           choices=QUICK_GELU_CHOICES),
    Option("device", "auto", "Torch device: auto (cuda:0 when available, else cpu), cpu, cuda:N.",
           check=check_device),
    Option("half", False, "fp16 inference (CUDA only; ignored on cpu)."),
    Option("imgsz", 640, "FastSAM input size in pixels (a multiple of 32).",
           range=(32, 4096), step=32),
    Option("conf", 0.4, "FastSAM mask confidence threshold.", range=(0.0, 1.0)),
    Option("iou", 0.9, "FastSAM non-maximum-suppression IoU threshold.", range=(0.0, 1.0)),
    Option("max_det", 100, "Most masks per frame.", range=(1, 10000)),
    Option("min_mask_area", 100, "Masks with fewer pixels are dropped.", range=(1, 1 << 30),
           flag="--min-area"),
    Option("retina_masks", True,
           "Masks from full-resolution prototypes (sharper edges, slower; mask_resolution full)."),
    Option("mask_resolution", "full",
           "full: every mask upsampled to the image by FastSAM (sharpest edges); low: masks stay "
           "on FastSAM's prototype grid (network input / 4), the label and instance images are "
           "painted there and upsampled once, full-size masks are built only where needed "
           "(fastest; edges move by up to half a cell); network: the same on the network-input "
           "grid (for frames larger than imgsz). BENCHMARKS.md: speed and agreement.",
           choices=MASK_RESOLUTIONS),
    Option("random_weights", False,
           "Run both models with random (untrained) weights: for tests and demos without "
           "checkpoints. Labels are meaningless; every output says random_weights."),
    Option("allow_random_fallback", False,
           "When a checkpoint is missing, log it plainly and run that model with random weights "
           "(outputs marked random_weights) instead of failing.",
           flag="--allow-random-weights"),
)

CORE_OPTIONS: tuple[Option, ...] = (
    _LABELING_AND_MODELS + BACKEND_OPTIONS + TRACKING_OPTIONS + GEOMETRY_OPTIONS + PROMPT_OPTIONS
)

CORE_BY_NAME: Mapping[str, Option] = {o.name: o for o in CORE_OPTIONS}


def validate(values: Mapping[str, Any], table: Mapping[str, Option] = CORE_BY_NAME) -> str | None:
    """Why this full or partial set of values is refused (first problem), or None. Names not in
    `table` are ignored (e.g. use_sim_time)."""
    for name, value in values.items():
        option = table.get(name)
        if option is not None:
            reason = option.validate(value)
            if reason:
                return reason
    return None


def defaults(table: Sequence[Option] = CORE_OPTIONS) -> dict[str, Value]:
    """name -> default, arrays as lists (as YAML and rclpy give them back)."""
    return {o.name: list(o.default) if isinstance(o.default, tuple) else o.default for o in table}


# ---------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser, table: Sequence[Option] = CORE_OPTIONS) -> None:
    """One flag per option (dest = the option's name), defaults and help from the table.

    Booleans become --x / --no-x; arrays take one or more values; `vocabulary` defaults to None
    on the command line so a command can tell "not given" apart (sfs_eval reads the bag's
    vocabulary then). Values are checked by `values_from_args`, with the node's messages.
    """
    group = parser.add_argument_group("models and labeling (node parameters of the same name)")
    for option in table:
        if not option.cli:
            continue
        kwargs: dict[str, Any] = dict(dest=option.name, help=option.help_text().replace("%", "%%"))
        kind = option.type_name
        if kind == "bool":
            kwargs.update(action=argparse.BooleanOptionalAction, default=option.default)
        elif kind in ("string_array", "double_array"):
            kwargs.update(nargs="+", type=float if kind == "double_array" else str,
                          default=None if option.name == "vocabulary" else list(option.default))
            kwargs["metavar"] = "CLASS" if option.name == "vocabulary" else option.name.upper()
        else:
            kwargs.update(type={"integer": int, "double": float, "string": str}[kind],
                          default=option.default)
            if option.choices:
                kwargs["choices"] = option.choices
        group.add_argument(option.cli_flag, **kwargs)


def values_from_args(args: argparse.Namespace, table: Sequence[Option] = CORE_OPTIONS) -> dict[str, Any]:
    """{name: value} of the parsed flags, arrays as tuples, validated like node parameters
    (raises OptionError with the reason)."""
    values: dict[str, Any] = {}
    for option in table:
        if not option.cli or not hasattr(args, option.name):
            continue
        value = getattr(args, option.name)
        if value is None and option.name == "vocabulary":
            value = option.default
        values[option.name] = tuple(value) if isinstance(value, list) else value
    reason = validate(values)
    if reason:
        raise OptionError(reason)
    return values


class OptionError(VocabularyError):
    """An option value that every entry point refuses; the message says which and why."""
