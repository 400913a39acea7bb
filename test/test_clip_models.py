"""The project's own open_clip configs (core/clip_models.py) and the committed shapes CLIP head.

Known answer: the CLIP head trained on the shapes world (tools/train_shapes_clip.py) must name
ground-truth objects of held-out frames right through the normal loading path, so a colour
order, crop geometry or activation slip in the labeler shows up as wrong names.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sfs_ros.core.clip_models import read_model_configs, register_project_models
from sfs_ros.core.dense_clip import check_dense_support
from sfs_ros.core.frame import Masks, SfsError
from sfs_ros.core.labeler import Labeler, LabelerConfig
from sfs_ros.core.segmenter import boxes_from_masks
from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.core.weights import clip_quick_gelu
from sfs_ros.synth.shapes import BACKGROUND, make_scene

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sfs-shapes-clip"
CHECKPOINT = ROOT / "models" / "shapes" / "clip-shapes.pt"
TEST_SEED = 7  # held out: never used in training


def small_config(width: int) -> dict:
    """A tiny valid open_clip config (image and text towers of `width`)."""
    return {"embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": width, "head_width": 32, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 1, "layers": 1}}


def write_config(folder: Path, name: str, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(config))
    return folder


def test_project_configs_are_registered_once(tmp_path, monkeypatch):
    import open_clip

    folder = write_config(tmp_path / "cfg", "sfs-test-once", small_config(32))
    calls = []
    real = open_clip.add_model_config
    monkeypatch.setattr(open_clip, "add_model_config", lambda path: (calls.append(path), real(path)))
    assert register_project_models(folder) == ("sfs-test-once",)
    assert register_project_models(folder) == ("sfs-test-once",)
    assert len(calls) == 1  # the second call found it registered with the same content
    assert "sfs-test-once" in open_clip.list_models()


def test_checkout_config_registers_the_shapes_model():
    import open_clip

    assert MODEL in register_project_models()
    assert open_clip.get_model_config(MODEL) == read_model_configs(ROOT / "config" / "clip_models")[MODEL]


def test_name_of_another_architecture_is_refused(tmp_path):
    folder = write_config(tmp_path / "cfg", "ViT-B-32", small_config(32))
    with pytest.raises(SfsError, match="reuses the name 'ViT-B-32'"):
        register_project_models(folder)


def test_config_without_open_clip_keys_is_refused(tmp_path):
    folder = write_config(tmp_path / "cfg", "sfs-test-broken", {"embed_dim": 32, "vision_cfg": {}})
    with pytest.raises(SfsError, match="lacks text_cfg"):
        register_project_models(folder)


def test_shapes_model_loads_a_file_with_gelu_and_dense_support(tmp_path):
    """create_model(name, pretrained=FILE) restores the weights; QuickGELU 'auto' resolves off
    for a file of this model (it was trained with GELU); the image tower suits dense mode."""
    import open_clip

    register_project_models()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        source = open_clip.create_model(MODEL, pretrained=None)
    path = tmp_path / "shapes.pt"
    torch.save({k: v.half() for k, v in source.state_dict().items()}, path)
    loaded = open_clip.create_model(MODEL, pretrained=str(path))
    expected = source.visual.conv1.weight.half().float()
    assert torch.equal(loaded.visual.conv1.weight, expected)
    assert clip_quick_gelu(MODEL, str(path), "auto")[0] is False
    check_dense_support(loaded.visual)


# ---------------------------------------------------------------------- the committed model
def ground_truth(index: int) -> tuple[np.ndarray, Masks, np.ndarray]:
    """Image, ground-truth object masks plus the whole-background mask, and their class ids."""
    scene = make_scene(TEST_SEED, index)
    ids = np.array([o.instance for o in scene.objects])
    masks = np.concatenate([scene.instances[None] == ids[:, None, None],
                            (scene.labels == BACKGROUND)[None]])
    classes = np.array([o.class_id for o in scene.objects] + [BACKGROUND])
    n = len(masks)
    return scene.image, Masks(masks, boxes_from_masks(masks), np.ones(n, np.float32),
                              masks.reshape(n, -1).sum(1)), classes


@pytest.fixture(scope="module")
def frames():
    return [ground_truth(index) for index in range(4)]


def shapes_labeler(mode: str, **kw) -> Labeler:
    register_project_models()
    labeler = Labeler(LabelerConfig(clip_model=MODEL, pretrained=str(CHECKPOINT), device="cpu",
                                    mode=mode, disk_cache=False, **kw))
    labeler.set_vocabulary(load_vocabulary("shapes"))
    return labeler


def accuracy(labeler: Labeler, frames, swap_channels: bool = False) -> float:
    right = total = 0
    for image, masks, classes in frames:
        image = np.ascontiguousarray(image[:, :, ::-1]) if swap_channels else image
        right += int((labeler.label(image, masks).class_ids == classes).sum())
        total += len(classes)
    return right / total


def test_committed_shapes_clip_is_small_and_loads_with_gelu():
    assert CHECKPOINT.stat().st_size <= 20 * 2**20
    labeler = shapes_labeler("crop")
    assert labeler.quick_gelu is False and not labeler.random_weights


def test_committed_shapes_clip_names_objects_and_background(frames):
    """Crop mode (the file was trained for it; dense mode is not trained: see its manifest)."""
    assert accuracy(shapes_labeler("crop"), frames) >= 0.9


def test_committed_shapes_clip_fails_on_bgr(frames):
    """The known answer can fail: red and blue swapped, the names are wrong (colour order)."""
    assert accuracy(shapes_labeler("crop"), frames, swap_channels=True) < 0.6
