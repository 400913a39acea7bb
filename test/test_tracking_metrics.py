"""Tracking metrics against hand-counted examples."""
from __future__ import annotations

import numpy as np
import pytest

from sfs_ros.eval.tracking import LabelFlicker, TrackingScore, overlap_ious


def image(*objects: tuple[int, int, int], size: int = 5) -> np.ndarray:
    """A 20 x 40 instance image with size x size squares: (id, x, y) each."""
    out = np.zeros((20, 40), np.uint16)
    for obj_id, x, y in objects:
        out[y:y + size, x:x + size] = obj_id
    return out


def test_overlap_ious_of_two_images():
    gt = image((1, 0, 0), (2, 20, 0))
    pred = image((7, 0, 0), (9, 21, 0))
    g, p, iou = overlap_ious(gt, pred)
    assert g.tolist() == [1, 2] and p.tolist() == [7, 9]
    assert iou[0].tolist() == [1.0, 0.0] and iou[1, 1] == pytest.approx(20 / 30)


def test_clear_mot_counts_by_hand():
    score = TrackingScore(iou=0.5)
    # frame 0: both objects found as 5 and 6, plus a false mask 8
    score.update(image((1, 0, 0), (2, 20, 0)), image((5, 0, 0), (6, 20, 0), (8, 10, 10)))
    # frame 1: object 2 missed (FN); object 1 still 5
    score.update(image((1, 1, 0), (2, 20, 0)), image((5, 1, 0)))
    # frame 2: object 2 comes back as 7: one ID switch (memory survives the gap)
    score.update(image((1, 2, 0), (2, 20, 0)), image((5, 2, 0), (7, 20, 0)))
    # frame 3: the two ids swap: two switches
    score.update(image((1, 2, 0), (2, 20, 0)), image((7, 2, 0), (5, 20, 0)))
    s = score.summary()
    assert (s["objects"], s["matches"], s["false_positives"], s["false_negatives"], s["id_switches"]) == (8, 7, 1, 1, 3)
    assert s["mota"] == pytest.approx(1 - 5 / 8)


def test_a_poor_overlap_is_no_match():
    score = TrackingScore(iou=0.5)
    score.update(image((1, 0, 0)), image((3, 3, 3)))  # 4 of 46 pixels
    assert (score.matches, score.false_positives, score.false_negatives) == (0, 1, 1)


def test_label_flicker_counts_changes_between_consecutive_sightings():
    f = LabelFlicker()
    f.update(0, {"a": 1, "b": 2})
    f.update(1, {"a": 1, "b": 3})  # b changed
    f.update(2, {"a": 4})  # a changed; b not seen
    f.update(3, {"a": 4, "b": 2})  # b's last sighting is two frames back: not a pair
    assert (f.pairs, f.changes) == (4, 2) and f.rate == 0.5


def test_flicker_of_ground_truth_objects_follows_their_matched_labels():
    score = TrackingScore()
    labels = [{5: 0}, {5: 1}, {6: 1}]  # the object flips label, then its track changes id
    for k in range(3):
        score.update(image((1, k, 0)), image((5 if k < 2 else 6, k, 0)), labels[k])
    assert score.flicker.pairs == 2 and score.flicker.changes == 1 and score.id_switches == 1
