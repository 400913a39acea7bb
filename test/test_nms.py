"""core/nms.py: NMS stopped early gives exactly Ultralytics' NMS, with far fewer boxes to sort.

Compared against Ultralytics' own `non_max_suppression` on raw detection tensors built to be
hard (dense clusters of near-duplicate boxes, so many candidates are suppressed and the top-k
window must grow), and end to end through the Segmenter with random weights (all 2,100 anchors
of a 320x320 input above conf, the case the prefilter exists for).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.utils.nms import non_max_suppression

from sfs_ros.core.nms import prefiltered, top_candidates
from sfs_ros.core.segmenter import Segmenter, SegmenterConfig


def _detections(anchors: int, clusters: int, extra: int = 3, seed: int = 0) -> torch.Tensor:
    """(1, 4 + 1 + extra, anchors) raw output: xywh boxes jittered around `clusters` centres
    (few clusters: most boxes are duplicates NMS removes), scores in (0, 1), extra channels."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(clusters, 2, generator=g) * 600 + 20
    size = torch.rand(clusters, 2, generator=g) * 80 + 10
    pick = torch.randint(0, clusters, (anchors,), generator=g)
    xy = centre[pick] + torch.randn(anchors, 2, generator=g) * 2
    wh = size[pick] * (1 + 0.05 * torch.randn(anchors, 2, generator=g))
    scores = torch.rand(anchors, 1, generator=g)
    coeffs = torch.randn(anchors, extra, generator=g)
    return torch.cat([xy, wh, scores, coeffs], 1).T[None].contiguous()


@pytest.mark.parametrize("clusters", [3, 40, 400])
@pytest.mark.parametrize("iou", [0.5, 0.7, 0.9])
@pytest.mark.parametrize("max_det", [5, 50, 300])
@pytest.mark.parametrize("ties", [False, True])
def test_same_result_as_ultralytics_nms(clusters, iou, max_det, ties):
    det = _detections(6300, clusters, seed=clusters + int(iou * 10) + max_det)
    if ties:  # random weights: every score exactly 0.5
        det[0, 4] = 0.5
    conf = 0.25
    full = non_max_suppression(det.clone(), conf, iou, max_det=max_det, nc=1)[0]
    reduced = top_candidates(det.clone(), conf, iou, max_det)
    assert reduced.shape[2] == max(2 * max_det, 8)  # NMS sorts this many, not 6300
    fast = non_max_suppression(reduced, conf, iou, max_det=max_det, nc=1)[0]
    torch.testing.assert_close(fast, full, rtol=0, atol=0)


def test_few_candidates_and_multi_class_pass_through():
    det = _detections(60, 10)
    det[0, 4, :] = torch.linspace(0.0, 0.5, 60)  # 29 above conf 0.25, under 2 x max_det
    kept = top_candidates(det, 0.25, 0.7, 50)
    assert kept.shape[2] == 100 and int((kept[0, 4] > 0).sum()) == int((det[0, 4] > 0.25).sum())
    preds = [det, torch.zeros(1, 3, 4, 4)]
    assert prefiltered(preds, 0.25, 0.7, 5, classes=2) is preds  # class-aware NMS: untouched
    torch_layout = prefiltered([(det, "aux"), "rest"], 0.25, 0.7, 5, classes=1)
    assert torch_layout[0][1:] == ("aux",) and torch_layout[1:] == ["rest"]
    assert torch_layout[0][0].shape[2] == 10


@pytest.mark.parametrize("resolution", ["low", "full"])
def test_segmenter_masks_unchanged(resolution):
    from ultralytics.models.fastsam import FastSAMPredictor

    config = SegmenterConfig(random_weights=True, device="cpu", imgsz=320, max_det=30, conf=0.4,
                             mask_resolution=resolution)
    fast = Segmenter(config)
    plain = Segmenter(config)
    if resolution == "full":
        plain.predictor = FastSAMPredictor
    else:  # the grid predictor's own class, without the prefilter ahead of it
        grid = fast.predictor
        plain.predictor = type("PlainGrid", (FastSAMPredictor,),
                               {"construct_result": grid.construct_result})
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    want, got = plain.segment(image), fast.segment(image)
    assert len(want) == 30  # random weights: every anchor is a candidate, NMS keeps max_det
    np.testing.assert_array_equal(got.boxes, want.boxes)
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.masks, want.masks)
