"""Fusion paints largest first, keeps unlabeled masks out of the label image, and draws views."""
import numpy as np
import pytest

from sfs_ros.core.frame import UNLABELED, UNLABELED_CLASS, Labels, Masks, SfsError
from sfs_ros.core.fusion import FusionError, colorize, fuse, overlay, paint_order, to_mono8


def make_masks(stack: np.ndarray) -> Masks:
    n = len(stack)
    return Masks(
        masks=stack,
        boxes=np.zeros((n, 4), np.int32),
        scores=np.ones(n, np.float32),
        areas=stack.reshape(n, -1).sum(axis=1).astype(np.int64),
    )


def make_labels(class_ids) -> Labels:
    ids = np.asarray(class_ids, np.int32)
    return Labels(
        class_ids=ids,
        scores=np.ones(len(ids), np.float32),
        topk_ids=ids[:, None].copy(),
        topk_scores=np.ones((len(ids), 1), np.float32),
    )


def big_and_small():
    big = np.zeros((6, 8), bool)
    big[1:5, 1:7] = True
    small = np.zeros((6, 8), bool)
    small[2:4, 3:5] = True
    return big, small


def test_paint_order_largest_first_stable_ties():
    assert paint_order(np.array([5, 9, 5, 1, 9])).tolist() == [1, 4, 0, 2, 3]
    assert paint_order(np.zeros(0, np.int64)).tolist() == []


@pytest.mark.parametrize("small_first", [False, True])
def test_small_mask_inside_big_stays_visible(small_first):
    big, small = big_and_small()
    stack = np.stack([small, big] if small_first else [big, small])
    ids = [2, 1] if small_first else [1, 2]
    label, instance = fuse(make_masks(stack), make_labels(ids))
    small_index = 1 if small_first else 2
    big_index = 3 - small_index
    assert label.dtype == np.uint16 and instance.dtype == np.uint16
    assert (label[small] == 2).all() and (instance[small] == small_index).all()
    ring = big & ~small
    assert (label[ring] == 1).all() and (instance[ring] == big_index).all()
    assert (label[~big] == UNLABELED).all() and (instance[~big] == 0).all()


def test_unlabeled_mask_in_instance_image_only():
    big, small = big_and_small()
    label, instance = fuse(make_masks(np.stack([big, small])), make_labels([4, UNLABELED_CLASS]))
    assert (instance[small] == 2).all()
    assert (label[small] == 4).all()  # the labeled big mask beneath still shows
    alone, _ = fuse(make_masks(small[None]), make_labels([UNLABELED_CLASS]))
    assert (alone == UNLABELED).all()


def test_no_masks():
    label, instance = fuse(Masks.empty(4, 5), Labels.empty())
    assert label.shape == instance.shape == (4, 5)
    assert (label == UNLABELED).all() and (instance == 0).all()
    assert label.dtype == instance.dtype == np.uint16


def test_fuse_matches_brute_force_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, h, w = int(rng.integers(1, 12)), int(rng.integers(1, 15)), int(rng.integers(1, 15))
        stack = np.zeros((n, h, w), bool)
        for m in stack:  # random rectangles, so masks nest and overlap like real ones
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0:rng.integers(y0 + 1, h + 1), x0:rng.integers(x0 + 1, w + 1)] = True
        ids = rng.integers(-1, 5, n)
        masks = make_masks(stack)
        label, instance = fuse(masks, make_labels(ids))
        for y in range(h):
            for x in range(w):
                cover = [i for i in range(n) if stack[i, y, x]]
                # Winner: smallest area; among equal areas the higher index (painted later).
                top = min(cover, key=lambda i: (masks.areas[i], -i), default=None)
                named = [i for i in cover if ids[i] != UNLABELED_CLASS]
                top_named = min(named, key=lambda i: (masks.areas[i], -i), default=None)
                assert instance[y, x] == (0 if top is None else top + 1)
                assert label[y, x] == (UNLABELED if top_named is None else ids[top_named])


def test_fuse_rejects_mismatched_inputs():
    big, small = big_and_small()
    with pytest.raises(FusionError, match="2 masks"):
        fuse(make_masks(np.stack([big, small])), make_labels([1]))
    with pytest.raises(FusionError, match="bool"):
        fuse(make_masks(big[None].astype(np.uint8)), make_labels([1]))
    with pytest.raises(FusionError, match="class ids"):
        fuse(make_masks(big[None]), make_labels([-2]))


def test_to_mono8():
    label = np.array([[0, 7, UNLABELED], [254, UNLABELED, 3]], np.uint16)
    mono = to_mono8(label)
    assert mono.dtype == np.uint8
    assert mono.tolist() == [[0, 7, 255], [254, 255, 3]]
    with pytest.raises(SfsError, match="255"):
        to_mono8(np.array([[255]], np.uint16))


def test_colorize():
    palette = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)
    rgb = colorize(np.array([[1, UNLABELED, 0]], np.uint16), palette)
    assert rgb.dtype == np.uint8
    assert rgb.tolist() == [[[40, 50, 60], [0, 0, 0], [10, 20, 30]]]
    with pytest.raises(FusionError, match="no colour"):
        colorize(np.array([[2]], np.uint16), palette)


def test_overlay():
    big, small = big_and_small()
    label, instance = fuse(make_masks(np.stack([big, small])), make_labels([0, UNLABELED_CLASS]))
    palette = np.array([[200, 0, 100]], np.uint8)
    image = np.full((6, 8, 3), 100, np.uint8)
    out = overlay(image, label, instance, palette, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    boundary = np.zeros((6, 8), bool)
    boundary[:, :-1] |= instance[:, :-1] != instance[:, 1:]
    boundary[:-1] |= instance[:-1] != instance[1:]
    assert (out[boundary] == 255).all()
    untouched = (label == UNLABELED) & ~boundary
    assert untouched.any() and (out[untouched] == 100).all()
    inside = (label == 0) & ~boundary
    assert (out[inside] == [150, 50, 100]).all()
    assert np.array_equal(overlay(image, label, instance, palette, alpha=0.0)[~boundary],
                          image[~boundary])


def test_overlay_rejects_bad_alpha_and_shapes():
    label = np.full((2, 2), UNLABELED, np.uint16)
    instance = np.zeros((2, 2), np.uint16)
    image = np.zeros((2, 2, 3), np.uint8)
    palette = np.zeros((1, 3), np.uint8)
    with pytest.raises(FusionError, match="alpha"):
        overlay(image, label, instance, palette, alpha=1.5)
    with pytest.raises(FusionError, match="same height and width"):
        overlay(np.zeros((3, 2, 3), np.uint8), label, instance, palette)
