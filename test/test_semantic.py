"""Semantic-vote mode: real SegFormer-B0 (random weights, 128 px input) + the per-mask vote.

Random weights cannot say whether a class is right; these tests check what must hold for any
weights: the vote equals a brute-force per-mask mode (ties: lower class id), the background keeps
the model's argmax, the hybrid fallback boundary, and the weight/vocabulary errors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sfs_ros.core import fusion
from sfs_ros.core.frame import UNLABELED, UNLABELED_CLASS, Frame, Labels, Masks, SfsError
from sfs_ros.core.pipeline import Pipeline
from sfs_ros.core.semantic import (
    HybridLabeler,
    SemanticConfig,
    SemanticVoteLabeler,
    checkpoint_vocabulary,
    extend_vocabulary,
    vote,
)
from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.core.weights import WeightsMissingError

CITYSCAPES_B0 = "nvidia/segformer-b0-finetuned-cityscapes-1024-1024"


@pytest.fixture(scope="module")
def semantic() -> SemanticVoteLabeler:
    """Real SegFormer-B0 architecture with 19 Cityscapes outputs, random weights, 128 px input."""
    config = SemanticConfig(CITYSCAPES_B0, device="cpu", input_size=128, random_weights=True)
    return SemanticVoteLabeler(config)


@pytest.fixture(scope="module")
def masks(segmenter, photo) -> Masks:
    return segmenter.segment(photo)


def make_masks(stack: np.ndarray) -> Masks:
    """Masks with boxes and areas computed from the stack (what CLIP crops need)."""
    boxes = []
    for m in stack:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if xs.size else [0, 0, 1, 1])
    n = len(stack)
    return Masks(stack, np.array(boxes, np.int32).reshape(n, 4), np.ones(n, np.float32),
                 stack.reshape(n, -1).sum(1).astype(np.int64))


def brute_force(stack: np.ndarray, semantic: np.ndarray, num_classes: int, topk: int):
    """One mask at a time: counts per class, ranked by (-count, class id): lower id wins ties."""
    ids, shares, top_ids, top_shares = [], [], [], []
    for m in stack:
        values = semantic[m]
        counts = np.array([(values == c).sum() for c in range(num_classes)])
        ranked = sorted(range(num_classes), key=lambda c: (-counts[c], c))[:topk]
        area = max(values.size, 1)
        ids.append(ranked[0] if values.size else UNLABELED_CLASS)
        shares.append(counts[ranked[0]] / area)
        top_ids.append(ranked)
        top_shares.append([counts[c] / area for c in ranked])
    return np.array(ids), np.array(shares), np.array(top_ids), np.array(top_shares)


# ---------------------------------------------------------------------------------- vote()
@pytest.mark.parametrize("seed", range(5))
def test_vote_equals_brute_force_mode(seed):
    rng = np.random.default_rng(seed)
    h, w, k = 24, 32, 5
    # blocky map with few classes: many equal counts, so the tie rule is exercised
    semantic = np.kron(rng.integers(0, k, (6, 8)), np.ones((4, 4), int)).astype(np.uint8)
    stack = rng.random((12, h, w)) < rng.uniform(0.01, 0.6, (12, 1, 1))
    stack[0] = False  # an empty mask
    stack[1] = True  # the whole frame
    stack[2] = False
    stack[2, 0, 0:8] = True  # two 4-pixel blocks: an exact tie
    got = vote(stack, semantic, k, topk=3)
    want = brute_force(stack, semantic, k, 3)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_allclose(got[3], want[3], rtol=1e-6)
    assert got[0].dtype == np.int32 and got[1].dtype == np.float32
    assert got[0][0] == UNLABELED_CLASS and got[1][0] == 0.0


def test_vote_tie_lower_class_id_wins():
    semantic = np.array([[3, 3, 1, 1, 2]])
    stack = np.array([[[True, True, True, True, False]]])
    ids, shares, top_ids, top_shares = vote(stack, semantic, 4, topk=4)
    assert ids.tolist() == [1] and shares.tolist() == [0.5]
    assert top_ids.tolist() == [[1, 3, 0, 2]]  # zero-count classes ranked by id too
    np.testing.assert_allclose(top_shares, [[0.5, 0.5, 0.0, 0.0]])


def test_vote_edge_cases():
    semantic = np.zeros((4, 4), np.int32)
    ids, shares, top_ids, top_shares = vote(np.zeros((0, 4, 4), bool), semantic, 3, topk=5)
    assert ids.shape == (0,) and top_ids.shape == (0, 3)  # k = min(topk, num_classes)
    with pytest.raises(SfsError, match="must lie in"):
        vote(np.ones((1, 4, 4), bool), semantic + 3, 3)
    with pytest.raises(SfsError, match="bool"):
        vote(np.ones((1, 4, 4), np.uint8), semantic, 3)
    with pytest.raises(SfsError, match="integer"):
        vote(np.ones((1, 4, 4), bool), semantic.astype(float), 3)


# ---------------------------------------------------------------------------------- fusion
def test_fuse_keeps_background_outside_masks():
    background = np.arange(6 * 8).reshape(6, 8).astype(np.uint16) % 5
    big = np.zeros((6, 8), bool)
    big[1:5, 1:7] = True
    small = np.zeros((6, 8), bool)
    small[2:4, 3:5] = True
    labels = Labels(np.array([7, UNLABELED_CLASS], np.int32), np.ones(2, np.float32),
                    np.zeros((2, 1), np.int32), np.ones((2, 1), np.float32), background=background)
    label, instance = fusion.fuse(make_masks(np.stack([big, small])), labels)
    np.testing.assert_array_equal(label[~big], background[~big])  # outside all masks
    assert (label[big] == 7).all()  # the unlabeled small mask does not erase the big one
    assert (instance[small] == 2).all() and (instance[~big] == 0).all()
    assert label.dtype == np.uint16 and labels.background is background  # input untouched
    with pytest.raises(fusion.FusionError, match="background"):
        fusion.fuse(make_masks(np.stack([big])), Labels(
            np.array([1], np.int32), np.ones(1, np.float32), np.zeros((1, 1), np.int32),
            np.ones((1, 1), np.float32), background=background[:5]))


# ---------------------------------------------------------------------------------- labeler
def test_label_on_photo_votes_over_model_argmax(semantic, photo, masks):
    out = semantic.label(photo, masks)
    n, k = len(masks), semantic.config.topk
    assert n > 1 and semantic.num_classes == 19 and semantic.vocabulary.name == "cityscapes"
    assert out.class_ids.shape == (n,) and out.class_ids.dtype == np.int32
    assert out.scores.shape == (n,) and out.scores.dtype == np.float32
    assert out.topk_ids.shape == (n, k) and out.topk_scores.dtype == np.float32
    assert out.background.shape == photo.shape[:2] and out.background.dtype == np.uint16
    # background == the model's own argmax, computed here from the logits
    with torch.inference_mode():
        logits = semantic.model(pixel_values=semantic.preprocess(photo)).logits
        assert logits.shape[2:] == (32, 32)  # 128 px square input, stride 4
        up = F.interpolate(logits.float(), photo.shape[:2], mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(out.background, up[0].argmax(0).numpy())
    want = brute_force(masks.masks, out.background.astype(int), 19, k)
    np.testing.assert_array_equal(out.class_ids, want[0])
    np.testing.assert_allclose(out.scores, want[1], rtol=1e-6)
    assert ((out.scores > 0) & (out.scores <= 1)).all()


def test_pipeline_label_image_has_no_unlabeled_pixel(segmenter, semantic, photo):
    result = Pipeline(segmenter, semantic, lambda r: None).process(Frame(photo))
    assert result.class_names == load_vocabulary("cityscapes").names
    assert result.label_image.max() < 19 and not (result.label_image == UNLABELED).any()
    assert result.overlay.shape == photo.shape and result.random_weights


def test_threshold_leaves_weak_votes_unlabeled(semantic, photo, masks):
    base = semantic.label(photo, masks)
    cut = float(np.median(base.scores))
    semantic.threshold = cut
    try:
        out = semantic.label(photo, masks)
    finally:
        semantic.threshold = 0.0
    below = base.scores < cut
    assert below.any() and (out.class_ids[below] == UNLABELED_CLASS).all()
    np.testing.assert_array_equal(out.class_ids[~below], base.class_ids[~below])


def test_set_vocabulary_only_accepts_the_checkpoint_classes(semantic):
    with pytest.raises(SfsError, match="checkpoint's own 19 classes"):
        semantic.set_vocabulary(load_vocabulary("ade20k"))
    with pytest.raises(SfsError):
        semantic.set_vocabulary(load_vocabulary(["road", "car"]))
    assert semantic.set_vocabulary(load_vocabulary("cityscapes")).vocabulary.name == "cityscapes"


def test_checkpoint_label_map_picks_the_preset():
    ade = list(load_vocabulary("ade20k").names)
    hf = dict(enumerate(ade))  # HF's ADE20K map words 10 of 150 classes differently
    hf.update({7: "bed ", 8: "windowpane", 37: "bathtub", 38: "railing", 87: "streetlight",
               89: "television receiver", 90: "airplane", 92: "apparel", 109: "swimming pool",
               113: "waterfall", 138: "ashcan"})
    assert checkpoint_vocabulary(hf) == load_vocabulary("ade20k")
    assert checkpoint_vocabulary(dict(enumerate(ade[::-1]))).name == "custom"  # reordered
    custom = checkpoint_vocabulary({0: "floor", 1: "robot"})
    assert custom.names == ("floor", "robot") and custom.name == "custom"


# ---------------------------------------------------------------------------------- weights
def test_missing_checkpoint_names_id_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    model_id = "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"
    with pytest.raises(WeightsMissingError) as err:
        SemanticVoteLabeler(SemanticConfig(model_id, device="cpu"))
    text = str(err.value)
    assert model_id in text and str(tmp_path) in text and "--random-weights" in text
    with pytest.raises(WeightsMissingError, match="neither an existing model folder"):
        SemanticVoteLabeler(SemanticConfig(str(tmp_path / "nope"), device="cpu"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsMissingError, match="no config.json"):
        SemanticVoteLabeler(SemanticConfig(str(tmp_path / "empty"), device="cpu"))


def test_local_folder_round_trips_saved_weights(semantic, tmp_path, photo):
    """Weights this test saves (save_pretrained of the random model) load back through the real
    local-folder path (safetensors, local files only) and predict the same; no pretrained file."""
    folder = tmp_path / "segformer"
    semantic.model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    loaded = SemanticVoteLabeler(SemanticConfig(str(folder), device="cpu", input_size=128))
    assert not loaded.random_weights and loaded.vocabulary == semantic.vocabulary
    np.testing.assert_array_equal(loaded.predict(photo), semantic.predict(photo))
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsMissingError, match="could not be loaded"):
        SemanticVoteLabeler(SemanticConfig(str(folder), device="cpu"))


def test_config_validation_and_defaults():
    assert SemanticConfig().size == 512 and SemanticConfig(CITYSCAPES_B0).size == 1024
    b5_ade = SemanticConfig("nvidia/segformer-b5-finetuned-ade-640-640")
    assert b5_ade.random_spec() == ("b5", "ade20k") and b5_ade.size == 640
    for bad in (dict(min_vote_share=1.5), dict(threshold=-0.1), dict(resize="crop"),
                dict(architecture="b9"), dict(label_set="coco"), dict(topk=0)):
        with pytest.raises(SfsError):
            SemanticConfig(**bad).validate()


# ---------------------------------------------------------------------------------- hybrid
class Recording:
    """The real CLIP labeler; remembers the masks it was asked to name."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def label(self, image, masks, bank=None, cancelled=lambda: False):
        self.seen.append(masks.masks.copy())
        return self.inner.label(image, masks, bank, cancelled)


def test_hybrid_falls_back_exactly_below_min_vote_share(semantic, labeler, monkeypatch):
    # four 4-pixel masks on rows 0, 2, 4, 6 with winning shares 1.0, 0.75, 0.5, 0.25
    rows = [[1, 1, 1, 1], [2, 2, 2, 3], [4, 4, 5, 6], [7, 8, 9, 10]]
    sem_map = np.zeros((8, 8), np.int32)
    stack = np.zeros((4, 8, 8), bool)
    for i, row in enumerate(rows):
        sem_map[2 * i, :4] = row
        stack[i, 2 * i, :4] = True
    monkeypatch.setattr(semantic, "predict", lambda image: sem_map)
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    m = make_masks(stack)
    vocab = extend_vocabulary(semantic.vocabulary, ["robot", "forklift"])
    assert vocab.names[:19] == semantic.vocabulary.names
    assert vocab.names[19:] == ("robot", "forklift")
    bank = labeler.encode_vocabulary(vocab)
    clip = Recording(labeler)
    hybrid = HybridLabeler(semantic, clip, min_vote_share=0.5)
    plain = semantic.label(image, m)
    np.testing.assert_array_equal(plain.scores, [1.0, 0.75, 0.5, 0.25])
    np.testing.assert_array_equal(plain.class_ids, [1, 2, 4, 7])  # 0.25: four-way tie, 7 wins

    out = hybrid.label(image, m, bank)
    assert len(clip.seen) == 1 and (clip.seen[0] == stack[[3]]).all()  # only share 0.25 < 0.5
    named = labeler.label(image, make_masks(stack[[3]]), bank)
    np.testing.assert_array_equal(out.class_ids, [1, 2, 4, named.class_ids[0]])
    assert out.scores[3] == named.scores[0] and 0 <= out.class_ids[3] < len(vocab)
    np.testing.assert_array_equal(out.background, sem_map)

    hybrid.min_vote_share = 0.75  # 0.75 stays (not below), 0.5 and 0.25 fall back
    clip.seen.clear()
    hybrid.label(image, m, bank)
    assert (clip.seen[0] == stack[[2, 3]]).all()
    hybrid.min_vote_share = 0.0  # nothing is below 0: CLIP is never called
    clip.seen.clear()
    np.testing.assert_array_equal(hybrid.label(image, m, bank).class_ids, plain.class_ids)
    assert clip.seen == [] and hybrid.random_weights


def test_hybrid_vocabulary_must_start_with_checkpoint_classes(semantic, labeler):
    hybrid = HybridLabeler(semantic, labeler)
    assert hybrid.min_vote_share == semantic.config.min_vote_share
    with pytest.raises(SfsError, match="must start with the checkpoint's 19 classes"):
        hybrid.set_vocabulary(load_vocabulary(["robot", "road"]))
    with pytest.raises(SfsError, match="already in"):
        extend_vocabulary(semantic.vocabulary, ["car"])


def test_hybrid_threshold_is_clips_probability_cut(semantic, labeler):
    """Defect 5: score_threshold means one thing per mode. In semantic-hybrid it is CLIP's
    probability cut for the masks CLIP names (reported in LabelInfo), not min_vote_share."""
    hybrid = HybridLabeler(semantic, labeler, min_vote_share=0.4)
    before = labeler.threshold
    try:
        hybrid.threshold = 0.33
        assert labeler.threshold == 0.33 and hybrid.threshold == 0.33
        assert hybrid.min_vote_share == 0.4
        assert hybrid.threshold_kind == "clip_probability"
        assert semantic.threshold_kind == "vote_share"
        assert hybrid.describe()["clip"]["threshold"] == 0.33
    finally:
        labeler.threshold = before


def test_every_labeler_implements_the_one_interface(semantic, labeler):
    import inspect

    from sfs_ros.core.labeling import MaskLabeler

    members = {n for n in vars(MaskLabeler) if not n.startswith("_")} | set(MaskLabeler.__annotations__)
    assert {"label", "set_vocabulary", "prepare_vocabulary", "use", "threshold", "bank"} <= members
    hybrid = HybridLabeler(semantic, labeler)
    for each in (labeler, semantic, hybrid):
        for name in members:  # static lookup: `bank` raises until a vocabulary is set
            try:
                inspect.getattr_static(each, name)
            except AttributeError:
                pytest.fail(f"{type(each).__name__} lacks {name}")
    assert labeler.fixed_vocabulary(("robot",)) is None
    assert semantic.fixed_vocabulary() == semantic.vocabulary
    assert hybrid.fixed_vocabulary(("robot",)).names[-1] == "robot"


def test_vocabulary_versions_grow_and_prepare_has_no_side_effect(semantic):
    current = semantic.bank
    prepared = semantic.prepare_vocabulary(semantic.vocabulary)
    assert semantic.bank is current and prepared.version > current.version
    semantic.use(prepared)
    assert semantic.bank is prepared
