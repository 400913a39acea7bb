"""Tracking metrics: CLEAR-MOT style counts (matches, FP, FN, ID switches, MOTA) and label flicker.

Written here rather than taken from a package: py-motmetrics (PyPI `motmetrics`) computes the
same counts but pulls in pandas and wants its own accumulator types, and TrackEval is not
published on PyPI; the counts below are a few lines each and tested against hand examples
(test/test_tracking_metrics.py).

Per frame, ground-truth objects and predicted instances (both as instance-id images, 0 =
nothing) are matched one-to-one by pixel IoU >= `iou` (an assignment, `linear_sum_assignment`).
* FN: a ground-truth object with no match; FP: a predicted instance with no match;
* ID switch: a ground-truth object matched to another predicted id than at its previous match
  (CLEAR MOT's definition: a gap in between does not clear the memory);
* MOTA = 1 - (FN + FP + IDSW) / ground-truth objects;
* label flicker: over consecutive frames in which the same object is seen, the share whose
  label differs from its previous frame's (per ground-truth object when there is ground truth,
  per predicted track id otherwise: `LabelFlicker`).
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


class LabelFlicker:
    """Label changes between consecutive sightings of the same object (any hashable key)."""

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[int, int]] = {}  # key -> (frame, label)
        self.pairs = 0
        self.changes = 0

    def update(self, frame: int, labels: Mapping[Hashable, int]) -> None:
        """`labels`: object -> its label in frame `frame` (frames counted by the caller)."""
        for key, label in labels.items():
            last = self._last.get(key)
            if last is not None and last[0] == frame - 1:
                self.pairs += 1
                self.changes += int(last[1] != label)
            self._last[key] = (frame, int(label))

    @property
    def rate(self) -> float:
        """Share of consecutive sightings whose label changed (0 when there were none)."""
        return self.changes / self.pairs if self.pairs else 0.0


def overlap_ious(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gt ids, predicted ids, IoU matrix) of two instance images (0 = nothing), from one joint
    histogram of the id pairs."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    g, p = gt.astype(np.int64).ravel(), pred.astype(np.int64).ravel()
    gt_ids, g_idx = np.unique(g, return_inverse=True)
    pred_ids, p_idx = np.unique(p, return_inverse=True)
    joint = np.bincount(g_idx * len(pred_ids) + p_idx, minlength=len(gt_ids) * len(pred_ids))
    joint = joint.reshape(len(gt_ids), len(pred_ids))
    keep_g, keep_p = gt_ids != 0, pred_ids != 0
    inter = joint[keep_g][:, keep_p].astype(np.float64)
    union = joint[keep_g].sum(axis=1)[:, None] + joint[:, keep_p].sum(axis=0)[None, :] - inter
    return gt_ids[keep_g], pred_ids[keep_p], np.where(union > 0, inter / np.maximum(union, 1), 0.0)


@dataclass
class TrackingScore:
    """Accumulates CLEAR-MOT counts and label flicker over one camera's frames, in order."""

    iou: float = 0.5
    frames: int = 0
    objects: int = 0  # ground-truth objects summed over frames
    matches: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    id_switches: int = 0
    flicker: LabelFlicker = field(default_factory=LabelFlicker)
    _last_match: dict[int, int] = field(default_factory=dict)  # gt id -> predicted id

    def update(self, gt: np.ndarray, pred: np.ndarray, pred_labels: Mapping[int, int] | None = None) -> None:
        """One frame: instance images of ground truth and prediction; `pred_labels` (predicted
        id -> class) feeds the flicker of the ground-truth objects they match."""
        gt_ids, pred_ids, iou = overlap_ious(gt, pred)
        pairs: list[tuple[int, int]] = []
        if iou.size:
            rows, cols = linear_sum_assignment(-iou)
            pairs = [(int(gt_ids[r]), int(pred_ids[c])) for r, c in zip(rows, cols) if iou[r, c] >= self.iou]
        self.objects += len(gt_ids)
        self.matches += len(pairs)
        self.false_negatives += len(gt_ids) - len(pairs)
        self.false_positives += len(pred_ids) - len(pairs)
        for g, p in pairs:
            last = self._last_match.get(g)
            self.id_switches += int(last is not None and last != p)
            self._last_match[g] = p
        if pred_labels is not None:
            self.flicker.update(self.frames, {g: pred_labels.get(p, -1) for g, p in pairs})
        self.frames += 1

    @property
    def mota(self) -> float:
        if not self.objects:
            return 0.0
        return 1.0 - (self.false_negatives + self.false_positives + self.id_switches) / self.objects

    def summary(self) -> dict:
        return {
            "frames": self.frames, "objects": self.objects, "matches": self.matches,
            "false_positives": self.false_positives, "false_negatives": self.false_negatives,
            "id_switches": self.id_switches, "mota": round(self.mota, 4),
            "label_flicker": round(self.flicker.rate, 4), "label_pairs": self.flicker.pairs,
            "match_iou": self.iou,
        }
