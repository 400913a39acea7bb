"""CLIP head: real open_clip ViT-B-32 with random weights (see conftest).

Random weights cannot say whether a label is right; these tests check what must hold for any
weights: batching, caching, thresholds, synonyms, the colour-independent crop geometry.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sfs_ros.core.frame import UNLABELED_CLASS, InvalidImageError, Masks, SfsError
from sfs_ros.core.labeler import Labeler, LabelerConfig
from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.core.weights import WeightsMissingError

VOCAB = ["cup", "table", "spoon, teaspoon"]


@pytest.fixture(scope="module")
def masks(segmenter, photo) -> Masks:
    return segmenter.segment(photo)


def subset(masks: Masks, idx) -> Masks:
    return masks.subset(np.asarray(idx))


def test_batch_equals_one_mask_at_a_time(labeler, photo, masks):
    bank = labeler.encode_vocabulary(load_vocabulary(VOCAB))
    batch = labeler.label(photo, masks, bank)
    assert len(batch) == len(masks) > 1
    for i in range(len(masks)):
        one = labeler.label(photo, subset(masks, [i]), bank)
        np.testing.assert_allclose(one.topk_scores[0], batch.topk_scores[i], rtol=1e-4, atol=1e-6)
        assert one.class_ids[0] == batch.class_ids[i]


def test_outputs_shapes_and_probabilities(labeler, photo, masks):
    bank = labeler.encode_vocabulary(load_vocabulary(VOCAB))
    out = labeler.label(photo, masks, bank)
    n = len(masks)
    assert out.class_ids.shape == (n,) and out.topk_ids.shape == (n, 3)
    assert out.class_ids.dtype == np.int32 and out.scores.dtype == np.float32
    assert ((out.topk_scores > 0) & (out.topk_scores <= 1)).all()
    assert (np.diff(out.topk_scores, axis=1) <= 0).all()  # best first
    # threshold 0 in the fixture: every mask takes its best class
    np.testing.assert_array_equal(out.class_ids, out.topk_ids[:, 0])


def test_threshold_leaves_masks_unlabeled(labeler, photo, masks):
    bank = labeler.encode_vocabulary(load_vocabulary(VOCAB))
    base = labeler.label(photo, masks, bank)
    cut = float(np.median(base.scores))
    labeler.threshold = cut
    try:
        out = labeler.label(photo, masks, bank)
    finally:
        labeler.threshold = 0.0
    below = base.scores < cut
    assert below.any() and (~below).any()
    assert (out.class_ids[below] == UNLABELED_CLASS).all()
    np.testing.assert_array_equal(out.class_ids[~below], base.class_ids[~below])
    np.testing.assert_array_equal(out.topk_ids, base.topk_ids)  # proposals kept either way


def test_text_cache_hit_and_one_reencode_on_change(labeler, tmp_path, monkeypatch):
    monkeypatch.setenv("SFS_CACHE_DIR", str(tmp_path))  # an empty disk cache
    # and an empty memory cache: the session's labeler may have met these classes in another file
    monkeypatch.setattr(labeler, "_memory_cache", {})
    vocab_a = load_vocabulary(["road", "car"])
    vocab_b = load_vocabulary(["road", "car", "bus"])
    before = labeler.text_encodings
    first = labeler.encode_vocabulary(vocab_a)
    again = labeler.encode_vocabulary(load_vocabulary(["road", "car"]))
    assert labeler.text_encodings == before + 1
    torch.testing.assert_close(first.embeddings, again.embeddings)
    labeler.encode_vocabulary(vocab_b)
    assert labeler.text_encodings == before + 2
    labeler.encode_vocabulary(vocab_a)  # switching back costs nothing
    assert labeler.text_encodings == before + 2


def test_synonyms_and_templates_form_one_ensemble(labeler):
    """A class "spoon, teaspoon" is the normalised sum of its name x template prompt embeddings."""
    both = labeler.encode_vocabulary(load_vocabulary(["cup", "spoon, teaspoon"])).embeddings[1]
    prompts = [t.format(n) for n in ("spoon", "teaspoon") for t in labeler.config.templates]
    with torch.inference_mode():
        each = labeler.model.encode_text(labeler.tokenizer(prompts)).float()
    expected = torch.nn.functional.normalize(torch.nn.functional.normalize(each, dim=-1).sum(0), dim=0)
    torch.testing.assert_close(both, expected, rtol=1e-4, atol=1e-5)
    spoon = labeler.encode_vocabulary(load_vocabulary(["spoon"])).embeddings[0]
    assert not torch.allclose(both, spoon)


def test_crops_grey_outside_mask_and_image(labeler):
    """Pixels outside the mask fade to grey; parts of the window beyond the image are grey."""
    image = np.full((64, 64, 3), 255, np.uint8)  # white frame
    mask = np.zeros((1, 64, 64), bool)
    mask[0, 0:32, 0:32] = True  # top-left quadrant, at the image corner
    m = Masks(mask, np.array([[0, 0, 32, 32]], np.int32), np.ones(1, np.float32), np.array([1024]))
    crops = labeler.make_crops(image, m)
    crops = crops * labeler.std + labeler.mean  # back to [0, 1] RGB
    s = len(labeler.config.scales)
    assert crops.shape == (s, 3, *labeler.crop_size)
    tight = crops[0]
    assert torch.allclose(tight[:, 20:200, 20:200], torch.ones(1), atol=1e-3)  # all mask: white
    wide = crops[1]  # 1.5x window: reaches beyond the image on the top/left
    corner = wide[:, :10, :10]
    assert torch.allclose(corner, torch.full_like(corner, 0.5), atol=1e-3)
    inside_ctx = wide[:, -10:, -10:]  # image but outside the mask: mostly grey, a bit of white
    keep = 1 - labeler.config.background_blend
    assert torch.allclose(inside_ctx, torch.full_like(inside_ctx, 0.5 + 0.5 * keep), atol=1e-3)


def test_empty_masks_and_bad_input(labeler, photo):
    bank = labeler.encode_vocabulary(load_vocabulary(VOCAB))
    out = labeler.label(photo, Masks.empty(*photo.shape[:2]), bank)
    assert len(out) == 0 and out.topk_ids.shape == (0, 3)
    with pytest.raises(InvalidImageError):
        labeler.label(photo[:, :, 0], Masks.empty(*photo.shape[:2]), bank)
    with pytest.raises(SfsError, match="do not match"):
        labeler.label(photo, Masks.empty(10, 10), bank)


def test_missing_clip_weights_name_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("SFS_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsMissingError) as err:
        Labeler(LabelerConfig(device="cpu", pretrained="laion2b_s34b_b79k"))
    assert "ViT-B-32/laion2b_s34b_b79k" in str(err.value) and "--random-weights" in str(err.value)
    with pytest.raises(WeightsMissingError, match="neither an open_clip pretrained tag"):
        Labeler(LabelerConfig(device="cpu", pretrained=str(tmp_path / "missing.bin")))
    with pytest.raises(WeightsMissingError, match="no model named"):
        Labeler(LabelerConfig(device="cpu", clip_model="ViT-Nope"))


def test_empty_vocabulary_is_rejected(labeler):
    from sfs_ros.core.vocabulary import VocabularyError

    with pytest.raises(VocabularyError):
        labeler.encode_vocabulary(load_vocabulary([]))


# ---------------------------------------------------------------------------- dense mode
@pytest.fixture(scope="module")
def dense_labeler(labeler):
    """Dense mode over the same random CLIP weights as the crop-mode fixture."""
    lab = Labeler(LabelerConfig(random_weights=True, device="cpu", threshold=0.0, mode="dense",
                                dense_size=224))
    lab.set_vocabulary(load_vocabulary(VOCAB))
    return lab


def test_dense_trunk_matches_open_clip_forward(dense_labeler):
    """Our re-implementation of the ViT up to the last block is open_clip's own: with the
    unmodified last block, the class token gives exactly encode_image."""
    torch.manual_seed(1)
    pixels = torch.randn(1, 3, 224, 224)
    dense = dense_labeler.dense
    with torch.inference_mode():
        x, gh, gw = dense.trunk(pixels)
        x = dense.visual.transformer.resblocks[-1](x)
        ours = dense.visual.ln_post(x[:, 0]) @ dense.visual.proj
        theirs = dense_labeler.model.encode_image(pixels)
    assert (gh, gw) == dense.train_grid
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_dense_features_any_aspect_ratio(dense_labeler):
    feats = dense_labeler.dense(torch.randn(1, 3, 160, 320))
    assert feats.shape == (5, 10, dense_labeler.model.visual.output_dim)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(5, 10))


def test_dense_batch_equals_one_mask_at_a_time(dense_labeler, photo, masks):
    batch = dense_labeler.label(photo, masks)
    for i in range(len(masks)):
        one = dense_labeler.label(photo, subset(masks, [i]))
        np.testing.assert_allclose(one.topk_scores[0], batch.topk_scores[i], rtol=1e-4, atol=1e-6)


def test_hybrid_margin_extremes_equal_dense_and_crop(labeler, dense_labeler, photo, masks):
    bank = dense_labeler.bank
    hybrid = Labeler(LabelerConfig(random_weights=True, device="cpu", threshold=0.0, mode="hybrid",
                                   dense_size=224, hybrid_margin=0.0))
    never = hybrid.label(photo, masks, bank)  # margin 0: no mask is unsure
    np.testing.assert_allclose(never.topk_scores, dense_labeler.label(photo, masks, bank).topk_scores, rtol=1e-5)
    hybrid.config = LabelerConfig(random_weights=True, device="cpu", mode="hybrid", hybrid_margin=1.01)
    always = hybrid.label(photo, masks, bank)  # margin > 1: every mask goes to crops
    np.testing.assert_allclose(always.topk_scores, labeler.label(photo, masks, bank).topk_scores, rtol=1e-4)


# ---------------------------------------------------------------------------- pruning
def test_pruning_with_k_at_least_vocabulary_is_identical(labeler, photo, masks):
    vocab = load_vocabulary("cityscapes")
    bank = labeler.encode_vocabulary(vocab)
    plain = labeler.label(photo, masks, bank)
    pruned_lab = Labeler(LabelerConfig(random_weights=True, device="cpu", threshold=0.0, prune_topk=len(vocab)))
    pruned = pruned_lab.label(photo, masks, pruned_lab.encode_vocabulary(vocab))
    np.testing.assert_array_equal(pruned.topk_ids, plain.topk_ids)
    np.testing.assert_allclose(pruned.topk_scores, plain.topk_scores, rtol=1e-5)


def test_pruning_scores_only_candidate_classes_and_remembers_winners(photo, masks):
    lab = Labeler(LabelerConfig(random_weights=True, device="cpu", threshold=0.0, prune_topk=4,
                                topk=10, mode="dense", dense_size=224))
    bank = lab.set_vocabulary(load_vocabulary("cityscapes"))
    candidates = lab._candidate_classes(photo, bank)
    assert candidates.numel() == 4
    out = lab.label(photo, masks, bank)
    assert out.topk_ids.shape[1] == 4  # only the candidates were scored
    assert set(out.topk_ids.ravel().tolist()) <= set(candidates.tolist())
    winners = set(out.class_ids.tolist())
    assert lab._recent[-1] == winners
    assert winners <= set(lab._candidate_classes(photo, bank).tolist())


def test_bad_labeling_mode_is_rejected():
    with pytest.raises(SfsError, match="labeling mode"):
        Labeler(LabelerConfig(random_weights=True, mode="semantic"))


def test_text_embeddings_survive_a_restart_on_disk(labeler, tmp_path, monkeypatch):
    """A second Labeler (a restarted node) reads the embeddings from disk: no text encoding."""
    monkeypatch.setenv("SFS_CACHE_DIR", str(tmp_path))
    vocab = load_vocabulary(["forklift", "pallet", "shelf"])
    first = labeler.encode_vocabulary(vocab)
    assert len(list((tmp_path / "text").glob("*.pt"))) == 1
    restarted = Labeler(LabelerConfig(random_weights=True, device="cpu"))
    again = restarted.encode_vocabulary(vocab)
    assert restarted.text_encodings == 0
    torch.testing.assert_close(again.embeddings, first.embeddings)
    other = Labeler(LabelerConfig(random_weights=True, device="cpu", templates=("a {}.",)))
    other.encode_vocabulary(vocab)  # other templates: another key, encoded afresh
    assert other.text_encodings == 1 and len(list((tmp_path / "text").glob("*.pt"))) == 2


def test_non_contiguous_rgb_views_are_accepted(labeler, photo, masks):
    """The Frame contract allows any uint8 view (e.g. a BGR->RGB flip with negative strides)."""
    bank = labeler.encode_vocabulary(load_vocabulary(VOCAB))
    flipped = np.ascontiguousarray(photo[:, :, ::-1])[:, :, ::-1]  # same pixels, negative stride
    np.testing.assert_allclose(labeler.label(flipped, masks, bank).topk_scores,
                               labeler.label(photo, masks, bank).topk_scores, rtol=1e-5)


# ---------------------------------------------------------------------------- local checkpoints
SMALL_CLIP = "ViT-S-32"  # the smallest CLIP ViT open_clip registers: a 125 MB fp16 checkpoint


def save_random_clip(path, seed: int) -> None:
    """A real open_clip checkpoint file: the state_dict of a seeded random SMALL_CLIP (fp16)."""
    import open_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(SMALL_CLIP, pretrained=None)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "my_clip.bin"
    save_random_clip(path, seed=0)
    return path


def activations(labeler: Labeler) -> set[str]:
    """Activation modules the loaded CLIP actually holds (the transformer MLPs of both towers)."""
    from open_clip.transformer import QuickGELU

    acts = {type(m).__name__ for m in labeler.model.modules() if isinstance(m, (torch.nn.GELU, QuickGELU))}
    assert acts  # the towers have MLPs: an empty set would make the checks below vacuous
    return acts


def file_labeler(path, quick_gelu: str = "auto") -> Labeler:
    return Labeler(LabelerConfig(clip_model=SMALL_CLIP, pretrained=str(path), quick_gelu=quick_gelu,
                                 device="cpu", threshold=0.0))


@pytest.mark.parametrize("setting, quick, why", [
    ("true", True, "forced by clip_quick_gelu=true"),
    ("false", False, "forced by clip_quick_gelu=false"),
    ("auto", False, "OpenAI weights need clip_quick_gelu=true"),  # a plain file: nothing tells
])
def test_local_checkpoint_quick_gelu(checkpoint, caplog, setting, quick, why):
    """Defect: a checkpoint file always ran GELU, OpenAI weights included; now it is settable
    and the model really holds the activation decided (and the log says which and why)."""
    with caplog.at_level("INFO", logger="sfs_ros.labeler"):
        lab = file_labeler(checkpoint, setting)
    assert lab.quick_gelu is quick
    assert activations(lab) == ({"QuickGELU"} if quick else {"GELU"})
    said = [r.getMessage() for r in caplog.records if r.name == "sfs_ros.labeler" and "QuickGELU" in r.getMessage()]
    assert said and said[0].startswith(f"QuickGELU {'on' if quick else 'off'}: ") and why in said[0]


def test_checkpoint_in_an_openai_hf_cache_repo_runs_quick_gelu(checkpoint, tmp_path):
    """auto: a file inside a Hugging Face cache repository named *.openai is OpenAI's weights."""
    snapshot = tmp_path / "hub" / "models--someone--clip_vit_small.openai" / "snapshots" / "0abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").symlink_to(checkpoint)
    lab = file_labeler(snapshot / "open_clip_pytorch_model.bin")
    assert lab.quick_gelu is True and activations(lab) == {"QuickGELU"}


def test_quick_gelu_auto_rules():
    """The auto rules that need no file: tag cfg, model name, open_clip's release file names."""
    from sfs_ros.core.weights import clip_quick_gelu

    assert clip_quick_gelu("ViT-B-32", "openai") == (True, "pretrained tag openai says so")
    assert clip_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")[0] is False
    assert clip_quick_gelu("ViT-B-32-quickgelu", "/nowhere/x.bin")[0] is True
    assert clip_quick_gelu("ViT-B-32", "/nowhere/ViT-B-32.pt")[0] is True  # OpenAI's release name
    hub = "/c/hub/models--timm--vit_base_patch32_clip_224.openai/snapshots/1/open_clip_model.safetensors"
    assert clip_quick_gelu("ViT-B-32", hub)[0] is True
    assert clip_quick_gelu("ViT-B-32", "/nowhere/finetuned.bin")[0] is False
    with pytest.raises(SfsError, match="contradicts"):
        LabelerConfig(clip_model="ViT-B-32-quickgelu", quick_gelu="false").validate()
    with pytest.raises(SfsError, match="clip_quick_gelu"):
        LabelerConfig(quick_gelu="yes").validate()


def test_text_cache_keys_on_checkpoint_content(tmp_path, monkeypatch):
    """Defect: the disk cache was keyed on the checkpoint's path, so a file replaced by other
    weights at the same path reused the old weights' text embeddings."""
    monkeypatch.setenv("SFS_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "weights" / "clip.bin"
    save_random_clip(path, seed=0)
    vocab = load_vocabulary(["road", "car"])
    first = file_labeler(path, "false")
    old = first.encode_vocabulary(vocab).embeddings
    same = file_labeler(path, "false")  # a restart, file untouched: disk cache hit
    torch.testing.assert_close(same.encode_vocabulary(vocab).embeddings, old)
    assert (first.text_encodings, same.text_encodings) == (1, 0)
    quick = file_labeler(path, "true")  # the activation changes the text tower's output
    quick.encode_vocabulary(vocab)
    assert quick.text_encodings == 1
    save_random_clip(path, seed=1)  # other weights, same path and size
    replaced = file_labeler(path, "false")
    new = replaced.encode_vocabulary(vocab).embeddings
    assert replaced.text_encodings == 1
    assert not torch.allclose(new, old)


# ---------------------------------------------------------------------------- crop sampling
def test_large_window_crop_averages_fine_pattern(labeler):
    """Defect: roi_align sampled 2 x 2 points per output pixel however large the window, so a
    crop of a large box aliased fine texture. Adaptive sampling averages every source pixel.

    The pattern is a grid of 1-px white dots every 3 px (mean 1/9). A 1344-px window gives 6 x 6
    source pixels per output pixel: adaptive sampling reads all 36 (two whole periods: exactly
    1/9); two samples per axis land on pixels 1 and 4 of each 6, which are both dot rows and
    columns, so every output pixel comes out white. (A 1-px checkerboard would not show it: its
    half-pixel bilinear samples average to grey by symmetry.)"""
    side = 6 * labeler.crop_size[0]
    dots = np.zeros((side, side, 3), np.uint8)
    dots[1::3, 1::3] = 255
    whole = Masks(np.ones((1, side, side), bool), np.array([[0, 0, side, side]], np.int32),
                  np.ones(1, np.float32), np.array([side * side]))

    def crop() -> torch.Tensor:  # scale 1.0 crop (the window is the image), back to [0, 1]
        return (labeler.make_crops(dots, whole) * labeler.std + labeler.mean)[0]

    torch.testing.assert_close(crop(), torch.full_like(crop(), 1 / 9), rtol=0, atol=1e-3)
    labeler.crop_sampling_ratio = 2
    try:
        aliased = crop()
    finally:
        labeler.crop_sampling_ratio = -1
    assert (aliased - 1 / 9).abs().mean() > 0.5


# ---------------------------------------------------------------------------- templates
def test_templates_use_the_core_check():
    """Defect: "{} {}" passed the '{}'-in-template check and ended in an IndexError at format time."""
    from sfs_ros.core import labeler as labeler_module
    from sfs_ros.core import vocabulary

    with pytest.raises(SfsError, match="exactly once"):
        LabelerConfig(templates=("{} {}",)).validate()
    with pytest.raises(SfsError, match="exactly once"):
        LabelerConfig(templates=("a {0.x}",)).validate()
    assert labeler_module.DEFAULT_TEMPLATES is vocabulary.DEFAULT_TEMPLATES


def test_encode_vocabulary_checks_templates(labeler):
    with pytest.raises(SfsError, match="exactly once"):
        labeler.encode_vocabulary(load_vocabulary(["cup"]), templates=("{} and {}",))
