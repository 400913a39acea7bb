"""FastSAM's NMS, stopped as soon as its answer is known (the same masks, less work).

Ultralytics runs greedy NMS over every candidate above `conf` (up to 6,300 anchors at 640x480;
all of them with random weights, whose scores sit near 0.5) and then keeps the first `max_det`
survivors: ~60 ms per frame on a 2-core CPU, as much as the int8 network itself. Greedy NMS
decides a box only by the higher-scoring boxes, so the survivors among the top k candidates
are exactly the full run's survivors down to that score: once those number `max_det`, the rest
cannot change the answer. `top_candidates` runs NMS on the top 2 x max_det candidates (growing
4x while too few survive) and hands Ultralytics only the `max_det` survivors, whose own NMS then
keeps them all (they overlap each other at most `iou`) in the same order. Equal scores (random
weights give exact ties) keep anchor order, as torchvision's stable sort does, so even ties
resolve alike; test_nms.py checks both against Ultralytics' NMS.

Single-class models only (FastSAM is class-agnostic, nc=1): class-aware NMS offsets boxes per
class, and multi-class checkpoints pass through unchanged.
"""
from __future__ import annotations

from typing import Any

import torch


def top_candidates(det: torch.Tensor, conf: float, iou: float, max_det: int) -> torch.Tensor:
    """(B, 4 + 1 + extra, A) raw detections -> the same with only the anchors Ultralytics' NMS
    would return (per image; images padded to one width with zero-score anchors)."""
    import torchvision
    from ultralytics.utils.ops import xywh2xyxy

    kept = []
    for image in det:
        scores = image[4]
        candidates = (scores > conf).nonzero().squeeze(1)
        if len(candidates) <= 2 * max_det:  # little to save: all candidates, as Ultralytics
            kept.append(image[:, candidates])
            continue
        # stable, as torchvision sorts: equal scores keep anchor order, so ties resolve alike
        order = candidates[scores[candidates].argsort(descending=True, stable=True)]
        k = 2 * max_det
        while True:
            top = order[:k]
            boxes = xywh2xyxy(image[:4, top].T.float())
            survivors = torchvision.ops.nms(boxes, scores[top].float(), iou)
            if len(survivors) >= max_det or k >= len(order):
                kept.append(image[:, top[survivors[:max_det]]])
                break
            k *= 4
    # padded with score-0 anchors (never above conf) to one width per batch, and never to 6:
    # Ultralytics reads a last axis of 6 as an end-to-end model's (B, N, 6) output
    width = max(*(k.shape[1] for k in kept), 2 * max_det, 8)
    out = det.new_zeros(det.shape[0], det.shape[1], width)
    for i, k in enumerate(kept):
        out[i, :, : k.shape[1]] = k
    return out


def prefiltered(preds: Any, conf: float, iou: float, max_det: int, classes: int) -> Any:
    """A segmentation predictor's raw `preds` with `top_candidates` applied to the detection
    tensor; unchanged for multi-class models. Layouts: torch [(det, proto), ...], exported
    [det, proto] (SegmentationPredictor.postprocess reads both)."""
    if classes != 1:
        return preds
    first = preds[0]
    if isinstance(first, tuple):
        return [(top_candidates(first[0], conf, iou, max_det), *first[1:]), *preds[1:]]
    return [top_candidates(first, conf, iou, max_det), *preds[1:]]


_PREDICTORS: list[type] = []


def prefiltering_predictor() -> type:
    """FastSAMPredictor with `prefiltered` ahead of its postprocess (NMS): the base of every
    predictor the Segmenter runs."""
    if not _PREDICTORS:
        from ultralytics.models.fastsam import FastSAMPredictor

        class PrefilteringFastSAMPredictor(FastSAMPredictor):
            def postprocess(self, preds, *args, **kwargs):  # type: ignore[no-untyped-def]
                a = self.args
                preds = prefiltered(preds, a.conf, a.iou, a.max_det, len(self.model.names))
                return super().postprocess(preds, *args, **kwargs)

        _PREDICTORS.append(PrefilteringFastSAMPredictor)
    return _PREDICTORS[0]
