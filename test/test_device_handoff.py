"""Device-resident hand-off (issue #17): the segmenter's mask stack stays a torch tensor on its
device through the labeler and fusion; only boxes, scores, areas and the finished images go to
host. On CPU the same code runs, so here it must give exactly what the numpy hand-off gave.

The reference in each test is today's numpy path, kept alive: the same masks held as a numpy
array (`numpy_twin`) go through the labeler's torch.from_numpy upload and fusion's numpy
painting loop. Every comparison is exact (bit-identical images, equal floats), on the
known-answer world (trained models, crop and dense, low and full mask resolution) and on a photo
with random weights.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sfs_ros.core import fusion, stream_profile
from sfs_ros.core.frame import UNLABELED_CLASS, Frame, Labels, Masks, instance_records
from sfs_ros.core.fusion import fuse
from sfs_ros.core.labeler import Labeler, LabelerConfig
from sfs_ros.core.pipeline import Pipeline
from sfs_ros.core.segmenter import Segmenter, SegmenterConfig, boxes_from_masks
from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.synth import known_answer as ka
from sfs_ros.synth.shapes import make_scene

RESOLUTIONS = ("low", "full")


def numpy_twin(masks: Masks) -> Masks:
    """The same masks held as a numpy array: the hand-off as it was before issue #17."""
    stack = masks.stack_tensor().cpu().numpy().copy()
    if masks.grid is None:
        return Masks(stack, masks.boxes, masks.scores, masks.areas)
    return Masks.from_low_res(stack, masks.grid, masks.boxes, masks.scores, masks.areas)


def reference(segmenter, labeler, image: np.ndarray):
    """(tensor-path Result, numpy-path labels, label image, instance image) of one frame."""
    result = Pipeline(segmenter, labeler, on_result=lambda r: None, overlay=False).process(Frame(image))
    twin = numpy_twin(result.masks)
    labels = labeler.label(image, twin)
    return result, twin, labels, fuse(twin, labels)


def assert_same(result, twin: Masks, labels: Labels, images) -> None:
    """The tensor path's Result equals the numpy path's outputs exactly."""
    got = result.labels
    for field in ("class_ids", "scores", "topk_ids", "topk_scores", "embeddings"):
        np.testing.assert_array_equal(getattr(got, field), getattr(labels, field), err_msg=field)
    label_image, instance_image = images
    assert result.label_image.dtype == label_image.dtype == np.uint16
    np.testing.assert_array_equal(result.label_image, label_image)
    np.testing.assert_array_equal(result.instance_image, instance_image)
    numpy_result = dataclasses.replace(result, masks=twin, labels=labels)
    records, expected = instance_records(result), instance_records(numpy_result)
    assert [dataclasses.asdict(r) for r in records] == [dataclasses.asdict(r) for r in expected]
    for record in records:  # the instance messages' mask crops (a window copy each)
        np.testing.assert_array_equal(record.mask_crop(result.masks), record.mask_crop(twin))


def assert_exact_geometry(masks: Masks, min_area: int) -> None:
    """Areas and boxes computed on the device equal the numpy formulas of the numpy path."""
    stack = masks.stack_tensor().cpu().numpy()
    if masks.grid is None:
        areas, boxes = stack.sum(axis=(1, 2), dtype=np.int64), boxes_from_masks(stack)
    else:
        areas, boxes = masks.grid.areas(stack), masks.grid.boxes(stack)
    assert masks.areas.dtype == np.int64 and masks.boxes.dtype == np.int32
    np.testing.assert_array_equal(masks.areas, areas)
    np.testing.assert_array_equal(masks.boxes, boxes)
    assert (masks.areas >= min_area).all()


def assert_never_numpy(masks: Masks) -> None:
    """The N x h x w stack crossed segmenter -> labeler -> fusion -> records as a tensor."""
    assert masks.held_on == torch.device("cpu"), "the segmenter handed over numpy masks"
    assert masks.host_copies == 0, "a stage read the stack as numpy (a host round trip on CUDA)"


# ---------------------------------------------------------------------- known-answer world
@pytest.fixture(scope="module")
def ka_models():
    if ka.missing(semantic=False):
        pytest.skip(f"trained models missing: {ka.missing(semantic=False)}")
    cache: dict[tuple[str, str], tuple] = {}

    def get(mode: str, resolution: str):
        if (mode, resolution) not in cache:
            cache[(mode, resolution)] = ka.load(mode, mask_resolution=resolution)
        return cache[(mode, resolution)]

    return get


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("mode", ["crop", "dense"])
def test_known_answer_results_unchanged(ka_models, mode, resolution):
    segmenter, labeler = ka_models(mode, resolution)
    image = make_scene(7, 0).image
    result, twin, labels, images = reference(segmenter, labeler, image)
    assert len(result.masks) >= 3 and (result.labels.class_ids != UNLABELED_CLASS).any()
    assert (result.masks.grid is None) == (resolution == "full")
    assert_exact_geometry(result.masks, segmenter.config.min_area)
    assert_never_numpy(result.masks)
    assert_same(result, twin, labels, images)
    assert_never_numpy(result.masks)  # instance records and their crops did not copy the stack


# ---------------------------------------------------------------------- random-weight photo
@pytest.fixture(scope="module", params=RESOLUTIONS)
def photo_segmenter(request):
    return Segmenter(SegmenterConfig(random_weights=True, device="cpu", max_det=8, imgsz=320,
                                     conf=0.0, mask_resolution=request.param))


@pytest.fixture(scope="module", params=["crop", "hybrid"])
def photo_labeler(request, labeler):
    """The session's random CLIP in crop mode, and a hybrid one (dense, then crops for the
    unsure masks: the path that subsets the tensor-held stack)."""
    if request.param == "crop":
        lab = labeler
    else:
        lab = Labeler(LabelerConfig(random_weights=True, device="cpu", threshold=0.0,
                                    mode="hybrid", hybrid_margin=1.0, dense_size=224))
    lab.set_vocabulary(load_vocabulary(["cup", "table", "saucer"]))
    return lab


def test_photo_results_unchanged(photo_segmenter, photo_labeler, photo):
    result, twin, labels, images = reference(photo_segmenter, photo_labeler, photo)
    assert len(result.masks) >= 3
    assert_exact_geometry(result.masks, photo_segmenter.config.min_area)
    assert_never_numpy(result.masks)
    assert_same(result, twin, labels, images)


def test_numpy_consumers_get_one_lazy_copy(photo_segmenter, photo):
    """Tracker, prompts and the semantic vote still read numpy: made once, on first access."""
    masks = photo_segmenter.segment(photo)
    assert masks.host_copies == 0
    held = masks.stack_tensor().numpy()
    if masks.grid is None:
        first = masks.masks
        assert masks.masks is first
        assert masks.low_res is None
    else:
        first = masks.low_res
        assert masks.low_res is first
        np.testing.assert_array_equal(masks.masks, masks.grid.upsample(held))
    np.testing.assert_array_equal(first, held)
    assert masks.host_copies == 1


def test_subset_crop_and_samples_match_the_numpy_form(photo_segmenter, photo):
    masks = photo_segmenter.segment(photo)
    twin = numpy_twin(masks)
    pick = np.array([2, 0])
    sub, sub_twin = masks.subset(pick), twin.subset(pick)
    assert sub.held_on is not None and len(sub) == 2
    np.testing.assert_array_equal(sub.stack_tensor().numpy(), sub_twin.stack_tensor().numpy())
    np.testing.assert_array_equal(masks.subset(masks.areas > masks.areas.min()).boxes,
                                  twin.subset(twin.areas > twin.areas.min()).boxes)
    for i in range(len(masks)):
        x0, y0, x1, y1 = (int(v) for v in masks.boxes[i])
        for box in (None, (x0 - 3, y0 - 2, x1 + 4, y1 + 1), (x0, y0, x0, y1)):  # wider, empty
            np.testing.assert_array_equal(masks.crop(i, box), twin.crop(i, box))
    np.testing.assert_array_equal(masks.sampled(3), twin.sampled(3))
    assert masks.host_copies == 0 or masks.grid is not None  # full-res samples on the device


# ---------------------------------------------------------------------- fusion on the device
def overlapping_masks(n: int, seed: int, low: bool) -> tuple[Masks, Labels]:
    """Random overlapping rectangles (ties in area included), some unlabeled, held as a
    tensor, with a background map: every rule of `fuse` has work to do; the grid has letterbox
    padding rows (no image pixels), which masks may cover."""
    from sfs_ros.core.frame import MaskGrid

    rng = np.random.default_rng(seed)
    height, width = 37, 53
    grid = MaskGrid.letterbox((height, width), (96, 96), (24, 24)) if low else None  # padded rows
    h, w = grid.shape if low else (height, width)
    stack = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        stack[i, y0:y0 + rng.integers(2, 9), x0:x0 + rng.integers(2, 9)] = True
    if n > 1:
        stack[1] = stack[0]  # same area: the stable order decides
    areas = grid.areas(stack) if low else stack.sum(axis=(1, 2), dtype=np.int64)
    boxes = grid.boxes(stack) if low else boxes_from_masks(stack)
    scores = np.ones(n, np.float32)
    tensor = torch.from_numpy(stack)
    masks = (Masks.from_low_res(tensor, grid, boxes, scores, areas) if low
             else Masks(tensor, boxes, scores, areas))
    ids = rng.integers(0, 300, n).astype(np.int32)
    ids[rng.random(n) < 0.3] = UNLABELED_CLASS
    background = rng.integers(0, 5, (height, width)).astype(np.uint16)
    labels = Labels(ids, scores, ids[:, None].copy(), scores[:, None].copy(), background=background)
    return masks, labels


@pytest.mark.parametrize("low", [False, True])
@pytest.mark.parametrize("n", [0, 1, 12, 40])
@pytest.mark.parametrize("with_background", [False, True])
@pytest.mark.parametrize("all_labeled", [False, True])
def test_fuse_on_the_device_equals_the_numpy_loop(low, n, with_background, all_labeled):
    masks, labels = overlapping_masks(n, seed=n, low=low)
    if not with_background:
        labels = dataclasses.replace(labels, background=None)
    if all_labeled:  # paint_tensor's one-pass branch
        labels = dataclasses.replace(labels, class_ids=np.abs(labels.class_ids))
    elif n > 1:
        assert (labels.class_ids == UNLABELED_CLASS).any()
    label_image, instance_image = fuse(masks, labels)
    ref_label, ref_instance = fuse(numpy_twin(masks), labels)
    assert label_image.dtype == instance_image.dtype == np.uint16
    assert label_image.shape == masks.image_shape
    np.testing.assert_array_equal(label_image, ref_label)
    np.testing.assert_array_equal(instance_image, ref_instance)
    assert masks.host_copies == 0


@pytest.mark.parametrize("low", [False, True])
@pytest.mark.parametrize("n", [0, 1, 40])
def test_areas_and_boxes_on_the_device_equal_the_numpy_formulas(monkeypatch, low, n):
    """large_masks (segment()'s filter) against MaskGrid.areas/boxes and boxes_from_masks, in
    several chunks of stack_stats, masks in the letterbox padding included."""
    from sfs_ros.core import handoff
    from sfs_ros.core.segmenter import large_masks

    masks, _ = overlapping_masks(n, seed=100 + n, low=low)
    monkeypatch.setattr(handoff, "STATS_CHUNK_CELLS", 7 * 37 * 53)
    stack = masks.stack_tensor().numpy()
    areas = masks.grid.areas(stack) if low else stack.sum(axis=(1, 2), dtype=np.int64)
    keep = areas >= 9
    kept, boxes, kept_areas, kept_mask = large_masks(masks.stack_tensor(), masks.grid, 9)
    np.testing.assert_array_equal(kept_mask, keep)
    np.testing.assert_array_equal(kept.numpy(), stack[keep])
    np.testing.assert_array_equal(kept_areas, areas[keep])
    ref = masks.grid.boxes(stack[keep]) if low else boxes_from_masks(stack[keep])
    assert boxes.dtype == np.int32 and kept_areas.dtype == np.int64
    np.testing.assert_array_equal(boxes, ref)


def test_fuse_refuses_a_non_bool_tensor():
    masks = Masks(torch.zeros((1, 4, 4), dtype=torch.uint8), np.zeros((1, 4), np.int32),
                  np.ones(1, np.float32), np.zeros(1, np.int64))
    with pytest.raises(fusion.FusionError, match="bool"):
        fuse(masks, Labels.empty(1).__class__(np.zeros(1, np.int32), np.ones(1, np.float32),
                                               np.zeros((1, 1), np.int32), np.ones((1, 1), np.float32)))


def test_everything_filtered_is_an_empty_tensor_hand_off(photo):
    segmenter = Segmenter(SegmenterConfig(random_weights=True, device="cpu", max_det=4, imgsz=320,
                                          mask_resolution="low", min_area=10**9))
    masks = segmenter.segment(photo)
    assert len(masks) == 0 and masks.boxes.shape == (0, 4)
    label_image, instance_image = fuse(masks, Labels.empty())
    assert instance_image.shape == photo.shape[:2] and not instance_image.any()


# ---------------------------------------------------------------------- Ultralytics' stage timers
def test_ultralytics_stage_timers_are_stream_profiles(segmenter, photo, monkeypatch):
    """The predictor's three ops.Profile timers are StreamProfile (current-stream sync only):
    a spy on its clock must see the predictor's six calls of a frame."""
    from ultralytics.utils import ops

    profile = stream_profile.stream_profile()
    assert ops.Profile is profile  # installed when the Segmenter loaded
    calls = []
    original = profile.time
    monkeypatch.setattr(profile, "time", lambda self: calls.append(self) or original(self))
    segmenter.segment(photo)
    assert len(calls) == 6 and all(type(c) is profile for c in calls)
    assert stream_profile.install() is profile  # idempotent


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (two streams)")
def test_stream_profile_does_not_wait_for_another_stream():
    """Ultralytics' Profile waits for the whole device; StreamProfile only for its stream: with
    a long kernel queued on another stream, its clock returns while that stream is still busy."""
    device = torch.device("cuda:0")
    busy, own = torch.cuda.Stream(device), torch.cuda.Stream(device)
    with torch.cuda.stream(busy):
        torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU cycles
    with torch.cuda.stream(own):
        stream_profile.stream_profile()(device=device).time()
    assert not busy.query(), "StreamProfile waited for another stream"
    busy.synchronize()


def test_frame_and_fusion_still_import_without_torch():
    """options (read by the launch file and tools) imports frame and fusion; the hand-off's
    torch code lives in core/handoff.py so that reading the option table stays cheap."""
    import subprocess
    import sys

    code = ("import sys, sfs_ros.core.options, sfs_ros.core.frame, sfs_ros.core.fusion; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
