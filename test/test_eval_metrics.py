"""Scores from the confusion matrix equal a brute-force count over pixels (no numpy tricks)."""
import math

import numpy as np
import pytest

from sfs_ros.core.frame import UNLABELED
from sfs_ros.eval.errors import GroundTruthError
from sfs_ros.eval.images import GT_IGNORE
from sfs_ros.eval.metrics import ConfusionMatrix, check_ground_truth, latency_summary

K = 5  # class 3 never appears in GT; class 4 appears only in predictions


def synthetic_pairs(seed=0, frames=3, shape=(11, 17)):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(frames):
        gt = rng.choice([0, 1, 2, GT_IGNORE], size=shape, p=[0.35, 0.3, 0.2, 0.15]).astype(np.uint16)
        pred = rng.choice([0, 1, 2, 4, UNLABELED], size=shape, p=[0.3, 0.25, 0.2, 0.1, 0.15]).astype(np.uint16)
        pairs.append((gt, pred))
    return pairs


def brute_force(pairs, k):
    """Per-pixel Python loops; the definitions written out in full."""
    tp, fp, fn = [0] * k, [0] * k, [0] * k
    correct = valid = 0
    for gt, pred in pairs:
        for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
            if g == GT_IGNORE:
                continue  # ignore pixels count nowhere, whatever was predicted
            valid += 1
            if p == g:
                tp[g] += 1
                correct += 1
            else:
                fn[g] += 1  # an unlabeled prediction is a miss too
                if p != UNLABELED:
                    fp[p] += 1
    iou = [tp[c] / (tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else None for c in range(k)]
    acc = [tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else None for c in range(k)]
    present = [v for v in iou if v is not None]
    accs = [v for v in acc if v is not None]
    return {
        "iou": iou, "miou": sum(present) / len(present), "pixel_accuracy": correct / valid,
        "mean_accuracy": sum(accs) / len(accs), "valid": valid,
    }


def test_scores_equal_brute_force_with_ignore_absent_and_unlabeled():
    pairs = synthetic_pairs()
    matrix = ConfusionMatrix(K)
    for gt, pred in pairs:
        matrix.update(gt, pred)
    scores, expected = matrix.scores(), brute_force(pairs, K)
    for c in range(K):
        if expected["iou"][c] is None:
            assert math.isnan(scores.iou[c]), c
        else:
            assert scores.iou[c] == pytest.approx(expected["iou"][c], abs=1e-12), c
    assert expected["iou"][3] is None  # absent everywhere: left out of the mean
    assert expected["iou"][4] == 0.0  # predicted but never in GT: a zero that counts
    assert scores.classes_in_mean == 4
    assert scores.miou == pytest.approx(expected["miou"], abs=1e-12)
    assert scores.pixel_accuracy == pytest.approx(expected["pixel_accuracy"], abs=1e-12)
    assert scores.mean_accuracy == pytest.approx(expected["mean_accuracy"], abs=1e-12)
    assert scores.valid_pixels == expected["valid"]
    assert scores.unlabeled_pixels == sum(
        int(((gt != GT_IGNORE) & (pred == UNLABELED)).sum()) for gt, pred in pairs
    )


def test_one_matrix_over_all_frames_not_a_mean_of_frames():
    # frame 1: class 0 perfect on 1 pixel; frame 2: class 0 wrong on 99 pixels
    gt1, pred1 = np.zeros((1, 1), np.uint16), np.zeros((1, 1), np.uint16)
    gt2, pred2 = np.zeros((9, 11), np.uint16), np.ones((9, 11), np.uint16)
    matrix = ConfusionMatrix(2)
    matrix.update(gt1, pred1)
    matrix.update(gt2, pred2)
    assert matrix.scores().pixel_accuracy == pytest.approx(1 / 100)
    assert matrix.scores().iou[0] == pytest.approx(1 / 100)


def test_sum_of_parts_equals_whole():
    pairs = synthetic_pairs(seed=3, frames=4)
    whole, a, b = ConfusionMatrix(K), ConfusionMatrix(K), ConfusionMatrix(K)
    for i, (gt, pred) in enumerate(pairs):
        whole.update(gt, pred)
        (a if i % 2 else b).update(gt, pred)
    assert np.array_equal((a + b).matrix, whole.matrix)


def test_all_ignored_and_perfect_edge_cases():
    matrix = ConfusionMatrix(3)
    matrix.update(np.full((4, 4), GT_IGNORE, np.uint16), np.zeros((4, 4), np.uint16))
    assert matrix.matrix.sum() == 0 and math.isnan(matrix.scores().miou)
    gt = np.array([[0, 1], [2, 2]], np.uint16)
    matrix.update(gt, gt.copy())
    s = matrix.scores()
    assert s.miou == 1.0 and s.pixel_accuracy == 1.0


def test_bad_ground_truth_is_refused():
    matrix = ConfusionMatrix(3)
    with pytest.raises(GroundTruthError, match="class id 3"):
        matrix.update(np.full((2, 2), 3, np.uint16), np.zeros((2, 2), np.uint16))
    with pytest.raises(GroundTruthError, match="differ in size"):
        matrix.update(np.zeros((2, 2), np.uint16), np.zeros((2, 3), np.uint16))
    with pytest.raises(GroundTruthError, match="3x2 but the image is 4x2"):
        check_ground_truth(np.zeros((2, 3), np.uint16), (2, 4), 3, "gt")
    with pytest.raises(GroundTruthError, match="class id 7 .* 3 classes"):
        check_ground_truth(np.full((2, 3), 7, np.uint16), (2, 3), 3, "gt")
    check_ground_truth(np.full((2, 3), GT_IGNORE, np.uint16), (2, 3), 3, "gt")  # all ignore is fine


def test_latency_summary_percentiles():
    s = latency_summary([0.001 * v for v in range(1, 101)])
    assert s["n"] == 100 and s["max_ms"] == pytest.approx(100.0)
    assert s["p50_ms"] == pytest.approx(50.5) and s["p95_ms"] == pytest.approx(95.05)
    assert latency_summary([])["p50_ms"] is None
