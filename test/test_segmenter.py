"""Segmenter: real Ultralytics FastSAM-s architecture with random weights (see conftest)."""
from __future__ import annotations

import numpy as np
import pytest

from sfs_ros.core.frame import InvalidImageError
from sfs_ros.core.segmenter import Segmenter, SegmenterConfig, boxes_from_masks
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


def test_checkpoint_in_weights_dir_is_loaded(tmp_path, monkeypatch, segmenter, photo):
    """A file put where the error message says is picked up by name (here a copy of the
    random-weight checkpoint standing in for the real FastSAM-s.pt)."""
    (tmp_path / "FastSAM-s.pt").write_bytes(segmenter.checkpoint.read_bytes())
    monkeypatch.setenv("SFS_WEIGHTS_DIR", str(tmp_path))
    seg = Segmenter(SegmenterConfig(device="cpu", max_det=6, imgsz=320))
    assert seg.checkpoint == tmp_path / "FastSAM-s.pt" and not seg.random_weights
    np.testing.assert_array_equal(seg.segment(photo).masks, segmenter.segment(photo).masks)


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
