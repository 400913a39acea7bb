"""Semantic-segmentation scores from one confusion matrix accumulated over all frames.

Convention (the cityscapesScripts / mmsegmentation one, stated in every report):
- pixels whose ground truth is "ignore" do not count anywhere;
- one K x (K+1) matrix of pixel counts over the whole set (not a mean of per-frame scores):
  rows are ground-truth classes, columns predicted classes, and the extra last column counts
  valid pixels the pipeline left unlabeled (65535) - they are wrong predictions, never ignored;
- IoU_c = TP_c / (GT_c + Pred_c - TP_c); a class with an empty union (absent from the ground
  truth and never predicted on a valid pixel) has no IoU and is left out of the mean;
- mIoU = mean IoU over the remaining classes; pixel accuracy = sum TP / valid pixels;
  mean accuracy = mean over classes present in the ground truth of TP_c / GT_c.

The matrix is a sum, so shards add up exactly to the unsharded result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from sfs_ros.core.frame import UNLABELED
from sfs_ros.eval.errors import EvalError, GroundTruthError
from sfs_ros.eval.images import GT_IGNORE

CONVENTION = (
    "one confusion matrix summed over all frames; ground-truth ignore pixels excluded; "
    "unlabeled predictions (65535) on valid pixels count as wrong; IoU_c = TP/(TP+FP+FN); "
    "mIoU = mean over classes present in the ground truth or the prediction (union > 0), "
    "the cityscapesScripts/mmsegmentation convention; pixel accuracy = TP/valid pixels"
)


def check_ground_truth(gt: np.ndarray, shape: tuple[int, int], num_classes: int, where: str) -> None:
    """Raise GroundTruthError unless `gt` is an (H, W) id image for `num_classes` classes.

    A size mismatch or an id outside the vocabulary means the labels belong to other images
    or another class list; scoring them anyway would print a plausible, wrong number.
    """
    if gt.shape != tuple(shape):
        raise GroundTruthError(
            f"{where}: ground truth is {gt.shape[1]}x{gt.shape[0]} but the image is "
            f"{shape[1]}x{shape[0]} (width x height)"
        )
    valid = gt != GT_IGNORE
    if valid.any():
        top = int(gt[valid].max())
        if top >= num_classes:
            raise GroundTruthError(
                f"{where}: ground-truth class id {top} but the vocabulary has {num_classes} classes "
                f"(ids 0..{num_classes - 1}); wrong --vocab, or raw dataset ids not mapped "
                "(convert Cityscapes/ADE20K folders with `sfs_eval convert`)"
            )


class ConfusionMatrix:
    """K x (K+1) pixel counts: rows ground truth, columns prediction, last column unlabeled."""

    def __init__(self, num_classes: int, matrix: np.ndarray | None = None) -> None:
        if num_classes < 1:
            raise EvalError("a confusion matrix needs at least one class")
        self.num_classes = num_classes
        shape = (num_classes, num_classes + 1)
        self.matrix = np.zeros(shape, np.int64) if matrix is None else np.asarray(matrix, np.int64)
        if self.matrix.shape != shape:
            raise EvalError(f"confusion matrix must be {shape}, got {self.matrix.shape}")

    def update(self, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Add one frame; returns that frame's own matrix (for per-frame numbers)."""
        k = self.num_classes
        if gt.shape != pred.shape:
            raise GroundTruthError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
        valid = gt != GT_IGNORE
        truth = gt[valid].astype(np.int64)
        guess = pred[valid].astype(np.int64)
        if truth.size and truth.max() >= k:
            raise GroundTruthError(f"ground-truth class id {truth.max()} >= {k} classes")
        guess[guess == UNLABELED] = k
        if guess.size and guess.max() > k:
            raise EvalError(f"predicted class id {guess.max()} >= {k} classes")
        frame = np.bincount(truth * (k + 1) + guess, minlength=k * (k + 1)).reshape(k, k + 1)
        self.matrix += frame
        return frame

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if other.num_classes != self.num_classes:
            raise EvalError(f"cannot add {self.num_classes}- and {other.num_classes}-class matrices")
        return ConfusionMatrix(self.num_classes, self.matrix + other.matrix)

    def scores(self) -> "Scores":
        return Scores.from_matrix(self.matrix)


@dataclass(frozen=True)
class Scores:
    """Numbers derived from a confusion matrix; NaN marks a class without a defined value."""

    iou: np.ndarray  # (K,) NaN where the union is empty
    accuracy: np.ndarray  # (K,) NaN where the class is absent from the ground truth
    gt_pixels: np.ndarray  # (K,)
    pred_pixels: np.ndarray  # (K,) predicted on valid pixels
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    valid_pixels: int
    unlabeled_pixels: int  # valid pixels predicted unlabeled
    classes_in_mean: int

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "Scores":
        matrix = np.asarray(matrix, np.int64)
        k = matrix.shape[0]
        tp = np.diag(matrix[:, :k]).astype(np.float64)
        gt = matrix.sum(axis=1)
        pred = matrix[:, :k].sum(axis=0)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = int(matrix.sum())
        present = ~np.isnan(iou)
        return cls(
            iou=iou,
            accuracy=acc,
            gt_pixels=gt,
            pred_pixels=pred,
            miou=float(iou[present].mean()) if present.any() else float("nan"),
            pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
            mean_accuracy=float(np.nanmean(acc)) if (gt > 0).any() else float("nan"),
            valid_pixels=total,
            unlabeled_pixels=int(matrix[:, k].sum()),
            classes_in_mean=int(present.sum()),
        )


def latency_summary(seconds: Sequence[float] | Iterable[float]) -> dict[str, float | int]:
    """n, mean, p50, p95 and max of a list of durations, in milliseconds."""
    values = np.asarray(list(seconds), np.float64) * 1000.0
    if values.size == 0:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None, "max_ms": None}
    return {
        "n": int(values.size),
        "mean_ms": round(float(values.mean()), 3),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p95_ms": round(float(np.percentile(values, 95)), 3),
        "max_ms": round(float(values.max()), 3),
    }
