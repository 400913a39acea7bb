"""The shapes that cross every boundary: a Frame goes into the pipeline, a Result comes out.

The node, the evaluator and the CLI all build the same `Frame` and read the same `Result`, so
none of them needs to know how the stages inside work.

Colour-order contract: `Frame.image` is always RGB (H x W x 3, uint8, C-contiguous or not).
Converting from ROS encodings (bgr8, rgba8, mono8 ...) or OpenCV's BGR happens at the edge,
once, in the code that builds the Frame; the core never guesses. (A known SSA bug fed OpenCV's
BGR arrays to a model trained on RGB; labels then silently degrade.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Label-image value of pixels no named mask covers (mono16). The mono8 variant uses 255.
UNLABELED = 65535
UNLABELED_MONO8 = 255
#: `Labels.class_ids` value of a mask whose best score stayed under the threshold.
UNLABELED_CLASS = -1


class SfsError(Exception):
    """Base of every error the core raises on purpose (bad input, missing weights, bad config)."""


class InvalidImageError(SfsError, ValueError):
    """An input image the core cannot use: empty, wrong dtype, wrong number of channels."""


def check_rgb_image(image: Any) -> np.ndarray:
    """Return `image` if it is a usable RGB frame, else raise InvalidImageError saying why."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f"image must be H x W x 3 (RGB), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image is empty: shape {image.shape}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"image must be uint8, got {image.dtype}")
    return image


@dataclass
class Frame:
    """One camera image plus the caller's bookkeeping, carried through untouched.

    `stamp` is opaque to the core (a ROS Time message, a float, a bag timestamp): it comes back
    in the Result so the caller can stamp its outputs like the input.
    """

    image: np.ndarray
    stamp: Any = None
    frame_id: str = ""
    source: str = ""
    seq: int = 0


@dataclass
class Masks:
    """FastSAM output for one frame, at input resolution.

    boxes are xyxy pixel coordinates recomputed from the masks themselves (inclusive min,
    exclusive max), so they always agree with the mask even after retina upsampling.
    """

    masks: np.ndarray  # (N, H, W) bool
    boxes: np.ndarray  # (N, 4) int32 x0, y0, x1, y1
    scores: np.ndarray  # (N,) float32
    areas: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def subset(self, index: np.ndarray) -> "Masks":
        """The masks picked by an index array (or boolean mask), in that order."""
        return Masks(self.masks[index], self.boxes[index], self.scores[index], self.areas[index])

    @classmethod
    def empty(cls, height: int, width: int) -> "Masks":
        return cls(
            masks=np.zeros((0, height, width), bool),
            boxes=np.zeros((0, 4), np.int32),
            scores=np.zeros((0,), np.float32),
            areas=np.zeros((0,), np.int64),
        )


@dataclass
class Labels:
    """What the labeler says about each mask of a frame.

    class_ids is UNLABELED_CLASS where the best score stayed below the threshold; topk_ids and
    topk_scores list the best classes first (winner included) whatever the threshold said.
    `background`, when a labeler sets it (the semantic-vote mode), is the class of every pixel
    before masks are painted: pixels no labeled mask covers keep it instead of UNLABELED.
    """

    class_ids: np.ndarray  # (N,) int32
    scores: np.ndarray  # (N,) float32
    topk_ids: np.ndarray  # (N, K) int32
    topk_scores: np.ndarray  # (N, K) float32
    background: np.ndarray | None = None  # (H, W) uint16 class map, or None

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @classmethod
    def empty(cls, k: int = 0) -> "Labels":
        return cls(
            class_ids=np.zeros((0,), np.int32),
            scores=np.zeros((0,), np.float32),
            topk_ids=np.zeros((0, k), np.int32),
            topk_scores=np.zeros((0, k), np.float32),
        )


@dataclass
class Result:
    """Everything the pipeline made of one Frame.

    label_image holds class ids (UNLABELED where no named mask covers the pixel),
    instance_image holds 1-based mask indices (0 = no mask), overlay is RGB for viewers.
    `random_weights` is True when any model ran untrained: the labels are then meaningless and
    every output built from this Result must say so.
    """

    frame: Frame
    masks: Masks
    labels: Labels
    label_image: np.ndarray  # (H, W) uint16
    instance_image: np.ndarray  # (H, W) uint16
    overlay: np.ndarray | None  # (H, W, 3) uint8 RGB
    class_names: tuple[str, ...]
    vocabulary_name: str
    random_weights: bool
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


@dataclass
class InstanceRecord:
    """One mask of a Result as every output describes it (message, bag, JSON)."""

    instance_id: int  # 1-based: the mask's value in the instance image
    class_id: int  # UNLABELED_CLASS when unlabeled
    class_name: str  # "" when unlabeled
    score: float  # 0 when unlabeled
    proposals: list[tuple[int, str, float]]  # (class id, name, score), best first
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    area: int
    mask_score: float

    def mask_crop(self, masks: Masks) -> np.ndarray:
        """The mask inside its box as mono8 (255 inside, 0 outside)."""
        x0, y0, x1, y1 = self.box
        return masks.masks[self.instance_id - 1, y0:y1, x0:x1].astype(np.uint8) * np.uint8(255)


def instance_records(result: Result) -> list[InstanceRecord]:
    """Per-instance view of a Result, so the node, the evaluator and the CLI describe each mask
    the same way."""
    masks, labels, names = result.masks, result.labels, result.class_names
    records = []
    for i in range(len(masks)):
        class_id = int(labels.class_ids[i])
        labeled = class_id != UNLABELED_CLASS
        records.append(InstanceRecord(
            instance_id=i + 1,
            class_id=class_id,
            class_name=names[class_id] if labeled else "",
            score=float(labels.scores[i]) if labeled else 0.0,
            proposals=[(int(c), names[int(c)], float(s)) for c, s in zip(labels.topk_ids[i], labels.topk_scores[i])],
            box=tuple(int(v) for v in masks.boxes[i]),
            area=int(masks.areas[i]),
            mask_score=float(masks.scores[i]),
        ))
    return records
