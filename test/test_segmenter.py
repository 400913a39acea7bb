"""Segmenter: real Ultralytics FastSAM-s architecture with random weights (see conftest)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sfs_ros.core.frame import InvalidImageError, SfsError
from sfs_ros.core.segmenter import (RANDOM_MARKER, Segmenter, SegmenterConfig, boxes_from_masks,
                                     low_res_predictor)
from sfs_ros.core.weights import WeightsMissingError


def test_masks_at_input_resolution_with_boxes_from_masks(segmenter, photo):
    masks = segmenter.segment(photo)
    n = len(masks)
    assert 0 < n <= segmenter.config.max_det
    assert masks.masks.shape == (n, *photo.shape[:2]) and masks.masks.dtype == bool
    assert masks.scores.shape == (n,) and masks.areas.shape == (n,)
    np.testing.assert_array_equal(masks.areas, masks.masks.sum(axis=(1, 2)))
    assert (masks.areas >= segmenter.config.min_area).all()
    for mask, (x0, y0, x1, y1) in zip(masks.masks, masks.boxes):
        ys, xs = np.nonzero(mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_rgb_input_is_flipped_to_bgr_for_ultralytics(segmenter, photo):
    """The colour contract: segment(RGB) == Ultralytics on the BGR array it expects."""
    ours = segmenter.segment(photo)
    cfg = segmenter.config
    direct = segmenter.model.predict(
        np.ascontiguousarray(photo[:, :, ::-1]), device="cpu", imgsz=cfg.imgsz, conf=cfg.conf,
        iou=cfg.iou, max_det=cfg.max_det, retina_masks=True, verbose=False,
    )[0]
    direct_masks = direct.masks.data.numpy() > 0.5
    keep = direct_masks.sum(axis=(1, 2)) >= cfg.min_area
    np.testing.assert_array_equal(ours.masks, direct_masks[keep])


def test_low_resolution_masks_are_scaled_to_the_input(photo):
    seg = Segmenter(SegmenterConfig(random_weights=True, device="cpu", max_det=4, imgsz=320,
                                    retina_masks=False))
    masks = seg.segment(photo)
    assert len(masks) > 0 and masks.masks.shape[1:] == photo.shape[:2]


def test_boxes_from_masks_hand_made():
    m = np.zeros((2, 5, 7), bool)
    m[0, 1:3, 2:6] = True
    m[1, 4, 0] = True
    np.testing.assert_array_equal(boxes_from_masks(m), [[2, 1, 6, 3], [0, 4, 1, 5]])
    assert boxes_from_masks(np.zeros((0, 5, 7), bool)).shape == (0, 4)


@pytest.mark.parametrize("bad", [
    np.zeros((0, 10, 3), np.uint8),
    np.zeros((10, 10), np.uint8),
    np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.float32),
    [[1, 2, 3]],
])
def test_bad_images_raise_invalid_image_error(segmenter, bad):
    with pytest.raises(InvalidImageError):
        segmenter.segment(bad)


def test_missing_checkpoint_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("SFS_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsMissingError) as err:
        Segmenter(SegmenterConfig(model="FastSAM-x", device="cpu"))
    text = str(err.value)
    assert "FastSAM-x.pt" in text and str(tmp_path) in text and "--random-weights" in text
    with pytest.raises(WeightsMissingError, match="neither a known name"):
        Segmenter(SegmenterConfig(model=str(tmp_path / "nope.pt"), device="cpu"))


def unmarked_copy(checkpoint: Path, target: Path) -> Path:
    """`checkpoint` saved again without the random-weights marker: a stand-in for a trained file."""
    from ultralytics.nn.tasks import torch_safe_load

    ckpt, _ = torch_safe_load(str(checkpoint), safe_only=True)
    assert ckpt.pop(RANDOM_MARKER) is True  # the marker is plain data the safe loader reads
    torch.save(ckpt, target)
    return target


def test_checkpoint_in_weights_dir_is_loaded(tmp_path, monkeypatch, segmenter, photo):
    """A file put where the error message says is picked up by name (here the random-weight
    checkpoint without its marker, standing in for the real FastSAM-s.pt)."""
    unmarked_copy(segmenter.checkpoint, tmp_path / "FastSAM-s.pt")
    monkeypatch.setenv("SFS_WEIGHTS_DIR", str(tmp_path))
    seg = Segmenter(SegmenterConfig(device="cpu", max_det=6, imgsz=320))
    assert seg.checkpoint == tmp_path / "FastSAM-s.pt" and not seg.random_weights
    np.testing.assert_array_equal(seg.segment(photo).masks, segmenter.segment(photo).masks)


def test_random_checkpoint_passed_by_path_still_reports_random_weights(tmp_path, segmenter):
    """random_weights follows the checkpoint, not only the flag: a random-init file given as
    model=<path> (or copied to FastSAM-s.pt) must keep every output marked."""
    copy = tmp_path / "FastSAM-s.pt"
    copy.write_bytes(segmenter.checkpoint.read_bytes())
    for model in (str(segmenter.checkpoint), str(copy)):
        seg = Segmenter(SegmenterConfig(model=model, device="cpu", max_det=6, imgsz=320))
        assert not seg.config.random_weights and seg.random_weights, model


@pytest.mark.parametrize("field,value", [("imgsz", 100), ("conf", 1.5), ("iou", -0.1),
                                         ("max_det", 0), ("device", "tpu:0"),
                                         ("device", "cuda:7")])
def test_bad_config_is_rejected(field, value):
    from sfs_ros.core.frame import SfsError

    with pytest.raises(SfsError):
        Segmenter(SegmenterConfig(random_weights=True, **{field: value}))


def test_torch_thread_count_survives_segmentation(segmenter, photo):
    """Ultralytics' predictor set-up calls torch.set_num_threads(cores - 1); ours is kept."""
    import torch
    from ultralytics.utils import NUM_THREADS

    before = torch.get_num_threads()
    ours = NUM_THREADS + 1  # anything but what Ultralytics would set
    torch.set_num_threads(ours)
    try:
        segmenter.model.predictor = None  # force Ultralytics' set-up again
        segmenter.segment(photo)
        assert torch.get_num_threads() == ours
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ Ultralytics' private hook
def test_grid_predictor_hook_is_called(photo):
    """low_res_predictor's construct_result is what Ultralytics calls: the Results carries the
    network shape it sets and masks on the prototype grid (400 x 600 -> 224 x 320 -> / 4).
    (Its own Segmenter: the model keeps the last predictor class it was given.)"""
    seg = Segmenter(SegmenterConfig(random_weights=True, device="cpu", max_det=6, imgsz=320))
    cfg = seg.config
    result = seg.model.predict(
        np.ascontiguousarray(photo[:, :, ::-1]), device="cpu", imgsz=cfg.imgsz, conf=cfg.conf,
        iou=cfg.iou, max_det=cfg.max_det, verbose=False, predictor=low_res_predictor(1),
    )[0]
    assert result.net_shape == (224, 320)
    assert len(result.masks) > 0 and tuple(result.masks.data.shape[1:]) == (56, 80)


def _changed_hook(self, pred, img, orig_img, img_path, proto, extra=None):
    """A construct_result with one parameter more, as a future Ultralytics might define it."""


@pytest.mark.parametrize("change", ["signature", "missing"])
def test_grid_mode_refuses_an_ultralytics_without_the_hook(monkeypatch, change):
    """mask_resolution low/network override FastSAMPredictor.construct_result: when that private
    hook is gone or takes other arguments the load fails naming the version and the hook,
    instead of running an override Ultralytics never calls (or calls wrongly)."""
    import ultralytics
    from ultralytics.models.fastsam import FastSAMPredictor
    from ultralytics.models.yolo.detect import DetectionPredictor
    from ultralytics.models.yolo.segment import SegmentationPredictor

    if change == "signature":
        monkeypatch.setattr(SegmentationPredictor, "construct_result", _changed_hook)
    else:
        for cls in (SegmentationPredictor, DetectionPredictor):
            monkeypatch.delattr(cls, "construct_result")
    assert "construct_result" not in vars(FastSAMPredictor)  # inherited, so patched above
    for resolution in ("low", "network"):
        with pytest.raises(SfsError, match=f"ultralytics {ultralytics.__version__}.*construct_result"):
            Segmenter(SegmenterConfig(random_weights=True, device="cpu", mask_resolution=resolution))
    Segmenter(SegmenterConfig(random_weights=True, device="cpu"))  # "full" does not use the hook


def test_grid_mode_fails_loudly_when_the_hook_is_not_called(monkeypatch, photo):
    """Same signature but no longer called (the hook renamed upstream): segment() says so
    instead of failing on a missing attribute or returning full-resolution masks as grid ones."""
    from ultralytics.models.yolo.segment import SegmentationPredictor

    seg = Segmenter(SegmenterConfig(random_weights=True, device="cpu", max_det=4, imgsz=320,
                                    mask_resolution="low"))
    grid_class = low_res_predictor(1)
    monkeypatch.setattr(grid_class, "construct_result", SegmentationPredictor.construct_result)
    with pytest.raises(SfsError, match="construct_result was not called"):
        seg.segment(photo)


def test_ultralytics_without_the_restricted_loader_is_refused(monkeypatch, tmp_path, segmenter):
    """Checkpoints are pickles: an Ultralytics without SAFE_LOAD (before 8.4.75) would load
    them unrestricted, so loading stops with the version named."""
    from ultralytics.nn import tasks

    monkeypatch.delattr(tasks, "SAFE_LOAD")
    with pytest.raises(SfsError, match="restricted checkpoint loader"):
        Segmenter(SegmenterConfig(model=str(segmenter.checkpoint), device="cpu"))
