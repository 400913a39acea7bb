"""How far a changed model (int8, another runtime) agrees with a reference on the same frames.

No ground truth needed: the reference's masks are matched one-to-one to the other's (an
assignment on mask IoU), and each reference mask counts as agreeing on its label when its match
overlaps it (IoU >= 0.5) and carries the same class. Used by test_int8.py (the issue's bar for
shipping int8) and bench/int8.py.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from sfs_ros.core.tracker import mask_iou

#: A match must overlap at least this much for its label to count as the same object's.
LABEL_IOU = 0.5


def match_masks(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per reference mask ((N, H, W) bool): the index of its one-to-one match among `other`'s
    (-1: none) and their IoU (0 when unmatched)."""
    a = reference.reshape(len(reference), -1).astype(np.float32)
    b = other.reshape(len(other), -1).astype(np.float32)
    match, best = np.full(len(a), -1), np.zeros(len(a))
    if len(a) and len(b):
        iou = mask_iou(a, b)
        rows, cols = linear_sum_assignment(-iou)
        match[rows], best[rows] = cols, iou[rows, cols]
    return match, best


@dataclass
class Agreement:
    """Accumulated over frames: every reference mask's matched IoU and label agreement."""

    ious: list[float] = field(default_factory=list)
    same_labels: int = 0
    same_labels_clip_alone: int = 0  # the other labeler on the reference's masks

    @property
    def masks(self) -> int:
        return len(self.ious)

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else 0.0

    def share(self, count: int) -> float:
        return count / self.masks if self.masks else 0.0

    def update(self, image: np.ndarray, reference: tuple[Any, Any], other: tuple[Any, Any]) -> None:
        """One RGB frame through both (segmenter, labeler) pairs."""
        (seg, lab), (seg2, lab2) = reference, other
        want, got = seg.segment(image), seg2.segment(image)
        match, iou = match_masks(_stack(want), _stack(got))
        ids = lab.label(image, want).class_ids
        ids2 = lab2.label(image, got).class_ids
        self.same_labels += sum(int(j >= 0 and iou[i] >= LABEL_IOU and ids2[j] == ids[i])
                                for i, j in enumerate(match))
        self.same_labels_clip_alone += int((lab2.label(image, want).class_ids == ids).sum())
        self.ious += iou.tolist()


def _stack(masks: Any) -> np.ndarray:
    """The masks on their own grid (low-res when held so; both sides use the same settings)."""
    return masks.low_res if masks.low_res is not None else masks.masks


def compare(reference: tuple[Any, Any], other: tuple[Any, Any],
            images: Iterable[np.ndarray]) -> Agreement:
    """The agreement of `other` with `reference` ((segmenter, labeler) pairs) over `images`."""
    out = Agreement()
    for image in images:
        out.update(image, reference, other)
    return out
