"""One config path: option values (node parameters or command-line flags) -> core configs.

The node, `sfs` and `sfs_eval` all hold their settings as one {option name: value} mapping
(names and checks from `sfs_ros.core.options`) and build their models here, so the three can no
longer drift apart: what a flag does is what the parameter of the same name does.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sfs_ros.core.frame import SfsError
from sfs_ros.core.geometry import GeometryConfig
from sfs_ros.core.labeler import LabelerConfig
from sfs_ros.core.options import CLIP_MODES, SEMANTIC_MODES, THRESHOLD_KINDS, validate
from sfs_ros.core.prompt import PromptConfig
from sfs_ros.core.segmenter import SegmenterConfig
from sfs_ros.core.semantic import SemanticConfig
from sfs_ros.core.tracker import TrackerConfig, tracker_config
from sfs_ros.core.vocabulary import Vocabulary, load_vocabulary, vocabulary_spec


@dataclass(frozen=True)
class ModelConfigs:
    """Everything `load_models` needs, built from one set of option values."""

    segmenter: SegmenterConfig
    labeler: LabelerConfig  # CLIP; in semantic-hybrid the fallback for weak votes
    semantic: SemanticConfig | None  # None in the CLIP modes
    mode: str  # labeling_mode
    fallback_to_random: bool  # allow_random_fallback
    geometry: GeometryConfig = GeometryConfig()  # depth -> cloud (depth_scale, cloud_*)
    prompt: PromptConfig = PromptConfig()  # prompt_* (core/prompt.py)
    tracking: TrackerConfig | None = None  # None: tracking off (TRACKING_OPTIONS)

    @property
    def hybrid(self) -> bool:
        return self.mode == "semantic-hybrid"

    @property
    def threshold_kind(self) -> str:
        return THRESHOLD_KINDS[self.mode]


def build_configs(values: Mapping[str, Any]) -> ModelConfigs:
    """The core configs of these option values (a complete set: every CORE_OPTIONS name).

    score_threshold goes where its mode gives it meaning (options.THRESHOLD_KINDS): the CLIP
    labeler's probability cut, or in semantic-vote the vote-share cut of the SegFormer vote.
    """
    reason = validate(values)
    if reason:
        raise SfsError(reason)
    mode = values["labeling_mode"]
    random = bool(values["random_weights"])
    # per-model devices (BACKEND_OPTIONS): empty means the same as `device`
    clip_device = values["clip_device"].strip() or values["device"]
    semantic_device = values["semantic_device"].strip() or values["device"]
    backend = dict(backend=values["backend"], export_missing=bool(values["export_missing"]),
                   int8=bool(values["int8"]), int8_calibration=values["int8_calibration"])
    segmenter = SegmenterConfig(
        model=values["model"], imgsz=values["imgsz"], conf=values["conf"], iou=values["iou"],
        max_det=values["max_det"], retina_masks=values["retina_masks"],
        mask_resolution=values["mask_resolution"], half=values["half"], device=values["device"],
        min_area=values["min_mask_area"], random_weights=random, **backend,
    )
    labeler = LabelerConfig(
        clip_model=values["clip_model"], pretrained=values["clip_pretrained"],
        quick_gelu=values["clip_quick_gelu"],
        templates=tuple(values["prompt_templates"]), threshold=values["score_threshold"],
        topk=values["topk"], device=clip_device, half=values["half"],
        mode=mode if mode in CLIP_MODES else "crop", prune_topk=values["prune_topk"],
        dense_size=values["dense_size"], hybrid_margin=values["hybrid_margin"],
        scales=tuple(float(s) for s in values["crop_scales"]),
        background_blend=values["crop_background_blend"], random_weights=random, **backend,
    )
    semantic = None
    if mode in SEMANTIC_MODES:
        semantic = SemanticConfig(
            checkpoint=values["semantic_checkpoint"], device=semantic_device, half=values["half"],
            topk=values["topk"], random_weights=random, min_vote_share=values["min_vote_share"],
            threshold=values["score_threshold"] if mode == "semantic-vote" else 0.0,
        )
    return ModelConfigs(segmenter, labeler, semantic, mode, bool(values["allow_random_fallback"]),
                        geometry=GeometryConfig.from_values(values),
                        tracking=tracker_config(values), prompt=prompt_config(values))


def load_models(configs: ModelConfigs) -> tuple[Any, Any]:
    """(Segmenter, labeler) of `configs`: CLIP, the semantic vote, or the vote backed by CLIP."""
    from sfs_ros.core.pipeline import load_models as load

    return load(configs.segmenter, configs.labeler, configs.fallback_to_random, configs.semantic,
                hybrid=configs.hybrid)


def vocabulary_for(labeler: Any, values: Mapping[str, Any]) -> Vocabulary:
    """The vocabulary the labeler names masks with, by one rule for every entry point:
    the `vocabulary` option; semantic-vote: the checkpoint's classes (the option is ignored);
    semantic-hybrid: the checkpoint's classes, then a *list* given as `vocabulary` as
    open-vocabulary extras (a preset name adds nothing)."""
    spec = vocabulary_spec(values["vocabulary"])
    extras = tuple(spec) if values["labeling_mode"] == "semantic-hybrid" and isinstance(spec, list) else ()
    fixed = labeler.fixed_vocabulary(extras)
    return fixed if fixed is not None else load_vocabulary(spec)


def prompt_config(values: Mapping[str, Any]) -> PromptConfig:
    """How prompts are answered (options PROMPT_OPTIONS); read per request by the node, so the
    runtime parameters take effect at once."""
    return PromptConfig(text_threshold=float(values["prompt_text_threshold"]),
                        negatives=tuple(values["prompt_negatives"]),
                        point_select=values["prompt_point_select"],
                        box_inside=float(values["prompt_box_inside"]))
