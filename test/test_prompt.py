"""core/prompt.py: points, boxes and texts select masks of a frame.

Semantics on hand-made masks (a cup on a table, a plate beside it; held at full and at low
resolution, which must answer alike), the text ranking on hand-made embeddings, bad prompts,
then the real pipeline with random weights (geometry only: labels mean nothing there) and the
labeler's embeddings and text encoding.
"""
from __future__ import annotations

import numpy as np
import pytest

from sfs_ros.core.frame import Frame, Labels, MaskGrid, Masks, Result
from sfs_ros.core.prompt import Prompt, PromptConfig, PromptError, highlight, rank_texts, same_text, select

H, W = 60, 80
# x0, y0, x1, y1 (exclusive), even so the half-resolution grid holds them exactly
TABLE, CUP, PLATE = (10, 10, 70, 50), (20, 20, 30, 30), (50, 14, 66, 46)


def _boxes_masks(boxes, height, width, scale=1):
    out = np.zeros((len(boxes), height, width), bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        out[i, y0 // scale : y1 // scale, x0 // scale : x1 // scale] = True
    return out


def scene_result(low_res: bool) -> Result:
    """Table (0), cup on the table (1), plate on the table (2)."""
    boxes = np.array([TABLE, CUP, PLATE], np.int32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    if low_res:
        grid = MaskGrid((H, W), (H // 2, W // 2), (0.5, 0.5), (0.0, 0.0))
        low = _boxes_masks(boxes, H // 2, W // 2, scale=2)
        masks = Masks.from_low_res(low, grid, grid.boxes(low), scores, grid.areas(low))
    else:
        full = _boxes_masks(boxes, H, W)
        masks = Masks(full, boxes, scores, full.sum(axis=(1, 2)).astype(np.int64))
    labels = Labels(class_ids=np.array([0, 1, 2], np.int32), scores=np.ones(3, np.float32),
                    topk_ids=np.array([[0], [1], [2]], np.int32), topk_scores=np.ones((3, 1), np.float32))
    image = np.full((H, W, 3), 128, np.uint8)
    return Result(Frame(image), masks, labels, None, None, None, ("table", "cup", "plate"),
                  "custom", False)


@pytest.fixture(params=[False, True], ids=["full-res", "low-res"])
def scene(request) -> Result:
    return scene_result(request.param)


def picked(result, prompt, config=PromptConfig()):
    return list(select(result, prompt, config=config).indices)


# ---------------------------------------------------------------------- points
def test_a_point_selects_the_smallest_mask_holding_it(scene):
    assert picked(scene, Prompt(points=((25, 25),), point_labels=(1,))) == [1]  # the cup
    assert picked(scene, Prompt(points=((12.7, 48.9),), point_labels=(1,))) == [0]  # table only
    assert picked(scene, Prompt(points=((2, 2),), point_labels=(1,))) == []  # in no mask


def test_nested_masks_largest_or_all(scene):
    point = Prompt(points=((25, 25),), point_labels=(1,))
    assert picked(scene, point, PromptConfig(point_select="largest")) == [0]
    assert sorted(picked(scene, point, PromptConfig(point_select="all"))) == [0, 1]


def test_several_foreground_points_select_several_masks_once_each(scene):
    prompt = Prompt(points=((55, 20), (25, 25), (60, 40)), point_labels=(1, 1, 1))
    assert picked(scene, prompt) == [2, 1]  # point order, the plate once


def test_a_background_point_removes_every_mask_holding_it(scene):
    every = PromptConfig(point_select="all")
    on_plate = Prompt(points=((25, 25), (55, 20)), point_labels=(1, 0))
    assert picked(scene, on_plate, every) == [1], "the table holds (55, 20): removed; the cup stays"
    on_cup = Prompt(points=((25, 25), (22, 22)), point_labels=(1, 0))
    assert picked(scene, on_cup, every) == []  # cup and table both hold the bg point
    beside = Prompt(points=((25, 25), (2, 2)), point_labels=(1, 0))
    assert picked(scene, beside, every) == [0, 1] or picked(scene, beside, every) == [1, 0]


# ---------------------------------------------------------------------- boxes
def test_a_box_equal_to_a_mask_box_selects_that_mask(scene):
    for i, box in enumerate((TABLE, CUP, PLATE)):
        sel = select(scene, Prompt(boxes=(box,)))
        assert list(sel.indices) == [i]
        assert sel.scores[0] == pytest.approx(1.0)


def test_a_box_picks_the_highest_iou_mask_and_nothing_when_it_touches_none(scene):
    assert picked(scene, Prompt(boxes=((18, 18, 33, 31),))) == [1]  # around the cup
    assert picked(scene, Prompt(boxes=((0, 52, 80, 60),))) == []


def test_a_box_with_points_is_a_region(scene):
    # "all" masks holding the point, but only those mostly inside the box: the cup
    prompt = Prompt(points=((25, 25),), point_labels=(1,), boxes=((15, 15, 35, 35),))
    assert picked(scene, prompt, PromptConfig(point_select="all")) == [1]


def test_union_mask_and_highlight(scene):
    sel = select(scene, Prompt(points=((25, 25), (55, 20)), point_labels=(1, 1)))
    expected = _boxes_masks([CUP, PLATE], H, W).any(axis=0)
    assert np.array_equal(sel.mask, expected)
    picture = highlight(sel)
    assert picture.shape == (H, W, 3)
    near = expected.copy()  # outlines are drawn on the pixel left of / above an edge too
    near[:, :-1] |= expected[:, 1:]
    near[:-1, :] |= expected[1:, :]
    assert (picture[expected] != 128).any(axis=1).all() and (picture[~near] == 128).all()
    assert [r["instance_id"] for r in sel.records()] == [2, 3]


# ---------------------------------------------------------------------- bad prompts
@pytest.mark.parametrize("prompt, words", [
    (Prompt(points=((80, 10),), point_labels=(1,)), "outside"),
    (Prompt(points=((-1, 10),), point_labels=(1,)), "outside"),
    (Prompt(points=((5, 60),), point_labels=(1,)), "outside"),
    (Prompt(points=((5, 5),), point_labels=()), "point labels"),
    (Prompt(points=((5, 5),), point_labels=(2,)), "foreground"),
    (Prompt(points=((5, 5),), point_labels=(0,)), "needs a foreground point"),
    (Prompt(), "needs a foreground point"),
    (Prompt(boxes=((10, 10, 10, 20),)), "degenerate"),
    (Prompt(boxes=((30, 10, 20, 20),)), "degenerate"),
    (Prompt(boxes=((100, 10, 120, 20),)), "outside"),
    (Prompt(texts=("  ",)), "empty"),
    (Prompt(texts=("cup",), text_threshold=1.5), "threshold"),
])
def test_bad_prompts_are_refused_with_the_reason(scene, prompt, words):
    with pytest.raises(PromptError, match=words):
        select(scene, prompt)


def test_texts_need_a_clip_labeler_and_embeddings(scene):
    with pytest.raises(PromptError, match="CLIP labeler"):
        select(scene, Prompt(texts=("cup",)))


# ---------------------------------------------------------------------- text ranking
def _unit(*rows):
    a = np.array(rows, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_rank_texts_returns_every_winning_mask_best_first():
    # axes: 0 = "red circle", 1 = "blue star" (a negative), 2 = "background" (a negative)
    text = _unit([1, 0, 0])
    negatives = _unit([0, 1, 0], [0, 0, 1])
    masks = _unit([1, 0.1, 0], [0, 1, 0], [1, 0.4, 0.2], [0.5, 0.5, 0], [0, 0.1, 1])
    matched, score, which = rank_texts(masks, text, negatives, logit_scale=10.0, threshold=0.3)
    assert list(np.flatnonzero(matched)) == [0, 2]  # mask 3 ties with the negative: no win
    assert score[0] > score[2] > 0.3 and score[1] == score[3] == score[4] == 0
    assert list(which[[0, 2]]) == [0, 0]
    matched, _, _ = rank_texts(masks[[1, 3, 4]], text, negatives, logit_scale=10.0, threshold=0.0)
    assert not matched.any(), "an empty answer is a valid answer"
    matched, score, _ = rank_texts(masks, text, negatives, logit_scale=1.0, threshold=0.0)
    assert matched[0] and score[0] < 0.6  # a flat softmax: mask 0 wins with ~0.56
    matched, _, _ = rank_texts(masks, text, negatives, logit_scale=1.0, threshold=0.6)
    assert not matched.any(), "winning is not enough: the probability must reach the threshold"


def test_rank_texts_several_texts_take_the_best_and_same_negatives_are_left_out():
    texts = _unit([1, 0, 0], [0, 1, 0])
    negatives = _unit([1, 0, 0], [0, 0, 1])  # negative 0 IS text 0 (the vocabulary's own class)
    masks = _unit([1, 0.2, 0], [0.1, 1, 0], [0, 0, 1])
    matched, _, _ = rank_texts(masks, texts, negatives, 10.0, 0.0)
    assert list(np.flatnonzero(matched)) == [1], "without exclusion text 0 ties with itself"
    same = same_text(["Red  Circle", "blue star"], texts, [("red circle",), ("grey",)], negatives)
    assert same.tolist() == [[True, False], [False, False]]
    matched, _, which = rank_texts(masks, texts, negatives, 10.0, 0.0, same=same)
    assert list(np.flatnonzero(matched)) == [0, 1] and list(which[:2]) == [0, 1]


# ---------------------------------------------------------------------- the real pipeline
@pytest.fixture(scope="module")
def processed(segmenter, labeler, photo):
    """The bundled photo through the real models (random weights)."""
    from sfs_ros.core.pipeline import Pipeline
    from sfs_ros.core.vocabulary import load_vocabulary

    labeler.set_vocabulary(load_vocabulary(["cup", "table", "spoon"]))
    pipeline = Pipeline(segmenter, labeler, on_result=lambda r: None, overlay=False)
    result = pipeline.process(Frame(photo))
    assert len(result.masks) >= 2, "the random-weight segmenter gave too few masks to test with"
    return pipeline, result


def test_the_labeler_keeps_unit_mask_embeddings_in_crop_mode(processed, labeler):
    _, result = processed
    emb = result.labels.embeddings
    assert emb.shape == (len(result.masks), labeler.encode_texts(["cup"]).shape[1])
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


def test_a_point_in_a_real_mask_selects_it_and_a_background_point_removes_it(processed):
    _, result = processed
    masks = result.masks
    for i in np.argsort(masks.areas):  # each mask at a pixel where it is the smallest holder
        ys, xs = np.nonzero(masks.masks[i])
        holders = masks.masks[:, ys, xs]  # (N, pixels)
        smaller = masks.areas <= masks.areas[i]  # equal areas: the score decides, avoid them
        smaller[i] = False
        alone = ~(holders & smaller[:, None]).any(axis=0)
        if not alone.any():
            continue
        x, y = int(xs[alone][0]), int(ys[alone][0])
        assert picked(result, Prompt(points=((x + 0.5, y + 0.5),), point_labels=(1,)))[0] == i
        removed = picked(result, Prompt(points=((x, y), (x, y)), point_labels=(1, 0)))
        assert removed == []  # every holder of the point holds the background point too
        sel = select(result, Prompt(boxes=(tuple(masks.boxes[i]),)))
        assert masks.boxes[sel.indices[0]].tolist() == masks.boxes[i].tolist()
        return
    pytest.fail("no mask is the smallest holder of any of its pixels")


def test_text_prompts_are_ranked_and_their_embeddings_cached(processed, labeler):
    pipeline, result = processed
    sel = select(result, Prompt(texts=("cup", "a wooden table")), labeler,
                 PromptConfig(text_threshold=0.0))
    assert len(sel) == len(set(sel.indices.tolist())) and set(sel.texts) <= {"cup", "a wooden table"}
    assert list(sel.scores) == sorted(sel.scores, reverse=True)
    before = labeler.text_encodings
    select(result, Prompt(texts=("cup",)), labeler)  # cached: no text encoder call either
    assert labeler.text_encodings == before


def test_a_text_over_the_tokenizer_length_is_refused(processed, labeler):
    _, result = processed
    with pytest.raises(PromptError, match="tokens"):
        select(result, Prompt(texts=("very " * 80 + "red mug",)), labeler)


def test_a_frame_without_embeddings_refuses_texts_with_the_reason(processed, labeler):
    import dataclasses

    _, result = processed
    bare = dataclasses.replace(result, labels=dataclasses.replace(result.labels, embeddings=None))
    with pytest.raises(PromptError, match="no CLIP mask embeddings"):
        select(bare, Prompt(texts=("cup",)), labeler)


def test_hybrid_and_dense_modes_keep_embeddings_too(processed, labeler, photo):
    """hybrid re-scores unsure masks with crops and keeps those masks' crop embeddings (margin
    1: every mask, so they equal crop mode's); dense pools one embedding per mask."""
    from sfs_ros.core.labeler import Labeler, LabelerConfig

    _, result = processed
    hybrid = Labeler(LabelerConfig(random_weights=True, device="cpu", threshold=0.0, mode="hybrid",
                                   hybrid_margin=1.0))
    hybrid.use(labeler.bank)
    labels = hybrid.label(photo, result.masks)
    np.testing.assert_allclose(labels.embeddings, result.labels.embeddings, atol=1e-5)
    _, dense = hybrid._dense_probs(photo, result.masks, labeler.bank.embeddings.float())
    assert dense.shape == labels.embeddings.shape
    assert np.allclose(dense.norm(dim=1).numpy(), 1.0, atol=1e-4)
