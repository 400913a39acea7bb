"""The models trained here on the shapes world, as option values every entry point takes.

`models/shapes/` holds a class-agnostic YOLOv8-seg (the FastSAM recipe), a small open_clip
model and a small SegFormer, all trained on `sfs_ros.synth.shapes` (commands and provenance in
`models/shapes/*.json`). They are a test world, not a replacement for FastSAM, CLIP or a real
SegFormer: they exist so tests and ACCURACY.md can check that labels are RIGHT (colour order,
letterbox geometry, activations, class ids), which random weights cannot.

`options(mode)` gives the option values (names of `sfs_ros.core.options`) that load them through
the project's normal loading code: node parameters, `sfs`/`sfs_eval` flags (`flags()`), or
`core.config.build_configs`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sfs_ros.core import options as core_options
from sfs_ros.synth.shapes import BACKGROUND

#: Where the trained files live in a checkout.
MODELS_DIR = Path(__file__).resolve().parents[2] / "models" / "shapes"
SEGMENTER = MODELS_DIR / "fastsam-shapes.pt"
CLIP_MODEL = "sfs-shapes-clip"
CLIP_WEIGHTS = MODELS_DIR / "clip-shapes.pt"
SEGFORMER = MODELS_DIR / "segformer-shapes-160-160"
#: FastSAM input size for 640x480 frames: the segmenter was trained on 320x320 frames at
#: imgsz 320, so at 640 the objects keep the pixel size they were trained at (the node default).
IMGSZ = 640
#: Short side of the dense CLIP pass (the CLIP head was trained on crops only: ACCURACY.md).
DENSE_SIZE = 224
#: FastSAM's NMS IoU for this world: 0.7 drops most duplicate masks (2.4 -> 0.6 per frame) for
#: one point of segmenter recall, and names objects better (ACCURACY.md).
NMS_IOU = 0.7
OBJECT_CLASSES = tuple(range(BACKGROUND))  # 0..11


def missing(semantic: bool = True) -> list[str]:
    """The trained files not on disk (a checkout without models/shapes); `semantic=False`
    leaves out the SegFormer, which only the semantic-* modes need."""
    paths = (SEGMENTER, CLIP_WEIGHTS) + ((SEGFORMER / "config.json",) if semantic else ())
    return [str(p) for p in paths if not p.exists()]


def options(mode: str = "crop", **overrides: Any) -> dict[str, Any]:
    """A complete set of option values that runs `mode` with the trained shapes models."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in core_options.defaults().items()}
    values.update(
        vocabulary=("shapes",), labeling_mode=mode, model=str(SEGMENTER), imgsz=IMGSZ,
        clip_model=CLIP_MODEL, clip_pretrained=str(CLIP_WEIGHTS), semantic_checkpoint=str(SEGFORMER),
        dense_size=DENSE_SIZE, iou=NMS_IOU, device="cpu",
        tracking=False,  # its frames are independent scenes (synth/motion.py: a sequence)
    )
    values.update(overrides)
    return values


def flags(values: Mapping[str, Any]) -> list[str]:
    """`sfs`/`sfs_eval` flags for the values that differ from the defaults."""
    defaults = {k: tuple(v) if isinstance(v, list) else v for k, v in core_options.defaults().items()}
    out: list[str] = []
    for option in core_options.CORE_OPTIONS:
        value = values.get(option.name, defaults[option.name])
        if value == defaults[option.name]:
            continue
        if isinstance(value, bool):
            out.append(option.cli_flag if value else "--no-" + option.cli_flag[2:])
        elif isinstance(value, tuple):
            out += [option.cli_flag, *map(str, value)]
        else:
            out += [option.cli_flag, str(value)]
    return out


def class_miou(matrix: np.ndarray, classes: Sequence[int], ignore_gt: Sequence[int] = ()) -> float:
    """Mean IoU over `classes` from a K x (K+1) confusion matrix (rows ground truth, columns
    prediction, last column unlabeled predictions), with ground-truth rows `ignore_gt` left out
    (their pixels count nowhere). Unlabeled predictions on counted pixels are misses."""
    m = np.asarray(matrix, dtype=np.float64).copy()
    m[list(ignore_gt)] = 0
    ious = []
    for c in classes:
        tp, gt, pred = m[c, c], m[c].sum(), m[:, c].sum()
        union = gt + pred - tp
        if union > 0:
            ious.append(tp / union)
    return float(np.mean(ious)) if ious else float("nan")


def score(segmenter: Any, labeler: Any, scenes: Sequence[Any], *,
          image: Any = None, prediction: Any = None, **pipeline_options: Any) -> np.ndarray:
    """The 13 x 14 confusion matrix of the core pipeline on `scenes` (synth.shapes.Scene).

    `image(rgb) -> array` changes what the pipeline is fed and `prediction(label_image) ->
    array` what is scored: the sensitivity checks feed BGR or shift class ids with them, to show
    that a real colour-order or id bug cannot pass the known-answer tests.
    """
    from sfs_ros.core.frame import Frame
    from sfs_ros.core.pipeline import Pipeline
    from sfs_ros.eval.metrics import ConfusionMatrix

    pipeline = Pipeline(segmenter, labeler, on_result=lambda result: None, overlay=False,
                        **pipeline_options)
    matrix = ConfusionMatrix(BACKGROUND + 1)
    for scene in scenes:
        rgb = scene.image if image is None else image(scene.image)
        result = pipeline.process(Frame(np.ascontiguousarray(rgb)))
        labels = result.label_image if prediction is None else prediction(result.label_image)
        matrix.update(scene.labels.astype(np.uint16), labels)
    return matrix.matrix


def objects_miou(matrix: np.ndarray) -> float:
    """mIoU over the 12 object classes, background pixels ignored (ACCURACY.md's headline)."""
    return class_miou(matrix, OBJECT_CLASSES, ignore_gt=(BACKGROUND,))


def all_miou(matrix: np.ndarray) -> float:
    """mIoU over all 13 classes, background counted (unlabeled predictions are misses)."""
    return class_miou(matrix, range(BACKGROUND + 1))


def load(mode: str = "crop", **overrides: Any) -> tuple[Any, Any]:
    """(segmenter, labeler) of `options(mode, **overrides)`, the labeler's vocabulary set."""
    from sfs_ros.core.config import build_configs, load_models, vocabulary_for

    values = options(mode, **overrides)
    segmenter, labeler = load_models(build_configs(values))
    labeler.set_vocabulary(vocabulary_for(labeler, values))
    return segmenter, labeler


# ---------------------------------------------------------------------- injected bugs
# What the sensitivity checks (tests and ACCURACY.md) feed the pipeline to show that a real bug
# of each kind cannot pass the known answers.
def bgr(rgb: np.ndarray) -> np.ndarray:
    """The colour-order slip: BGR handed over where RGB is expected."""
    return rgb[:, :, ::-1]


def shift_ids(labels: np.ndarray) -> np.ndarray:
    """The class-id slip: every labelled pixel's id moved up by one (wrapping), unlabeled kept."""
    from sfs_ros.core.frame import UNLABELED

    shifted = (labels.astype(np.int64) + 1) % (BACKGROUND + 1)
    return np.where(labels == UNLABELED, labels, shifted).astype(np.uint16)


@contextlib.contextmanager
def broken_letterbox() -> Iterator[None]:
    """The geometry slip: low-res masks mapped back from the network input without the
    letterbox's resize gain and padding (visible where frames are resized, e.g. 640x480 at
    imgsz 320; at imgsz 640 they are not letterboxed at all). Restored on exit."""
    from sfs_ros.core.frame import MaskGrid

    original = MaskGrid.__dict__["letterbox"]

    def broken(cls: type, image_shape: tuple[int, int], net_shape: tuple[int, int],
               mask_shape: tuple[int, int]) -> MaskGrid:
        (net_h, net_w), (h, w) = net_shape, mask_shape
        return replace(original.__func__(cls, image_shape, net_shape, mask_shape),
                       scale=(h / net_h, w / net_w), offset=(0.0, 0.0))

    MaskGrid.letterbox = classmethod(broken)
    try:
        yield
    finally:
        MaskGrid.letterbox = original


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sfs_ros.synth.known_answer [MODE]`: print the `sfs`/`sfs_eval` flags that run
    MODE (default crop) with the trained shapes models (used by `make demo`)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    mode = args[0] if args else "crop"
    if absent := missing(semantic=mode.startswith("semantic")):
        print(f"trained models missing: {', '.join(absent)}", file=sys.stderr)
        return 2
    print(" ".join(flags(options(mode))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
