"""Exported backends (#17) against torch on the same frames, and the export cache.

Each installed backend (openvino, onnxruntime; tensorrt needs CUDA) runs FastSAM and the CLIP
image encoder exported from the same weights as the torch models, and must agree with them:
every mask at IoU >= 0.98 with boxes within 1 px (full and low-res masks), CLIP embeddings at
cosine >= 0.999 (crops and the dense ClearCLIP graph at a size other than the export's), the
same labels on the known-answer world (trained models in models/shapes/) and on the bundled
photos. Small: imgsz 320, 240x320 frames, one export per backend in a session cache.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sfs_ros.core.backends import BackendUnavailable, installed_backends, require
from sfs_ros.core.backends.cache import ExportKey, build, cached
from sfs_ros.core.config import build_configs
from sfs_ros.core.frame import SfsError
from sfs_ros.synth import known_answer
from sfs_ros.synth.shapes import make_scene

BACKENDS = installed_backends()
pytestmark = pytest.mark.skipif(bool(known_answer.missing(semantic=False)),
                                reason="models/shapes not in this checkout")
IMGSZ = 320


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory):
    """One export cache for the whole run: each backend exports each model once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SFS_EXPORT_DIR", str(tmp_path_factory.mktemp("exported")))
        yield


def _values(mode: str = "crop", **overrides) -> dict:
    return known_answer.options(mode, imgsz=IMGSZ, **overrides)


@pytest.fixture(scope="session")
def frames() -> list[np.ndarray]:
    """Two known-answer frames (the world's scale at imgsz 320) and two bundled photos."""
    import cv2
    import skimage.data

    shapes = [make_scene(7, i, (240, 320)).image for i in range(2)]
    photos = [cv2.resize(getattr(skimage.data, n)(), (320, 240), interpolation=cv2.INTER_AREA)
              for n in ("coffee", "astronaut")]
    return shapes + photos


def _models(mode: str, backend: str, **overrides):
    return known_answer.load(mode, **{**_values(backend=backend), **overrides})


def _iou(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """IoU of every reference mask with every mask of `other` (both (N, H, W) bool)."""
    a = reference.reshape(len(reference), -1).astype(np.float32)
    b = other.reshape(len(other), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return inter / np.maximum(union, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("resolution", ["full", "low"])
def test_fastsam_masks_and_boxes_match_torch(backend, resolution, frames):
    from sfs_ros.core.segmenter import Segmenter

    reference = Segmenter(build_configs(_values(mask_resolution=resolution)).segmenter)
    exported = Segmenter(build_configs(_values(mask_resolution=resolution, backend=backend)).segmenter)
    assert exported.exported is not None and exported.describe()["backend"] == backend
    compared = 0
    for image in frames:
        want, got = reference.segment(image), exported.segment(image)
        assert len(got) == len(want)
        if resolution == "low":
            assert got.low_res is not None  # the grid path ran on the exported raw outputs
        if not len(want):
            continue
        iou = _iou(want.masks, got.masks)
        order = iou.argmax(axis=1)
        assert iou.max(axis=1).min() >= 0.98 and len(set(order)) == len(order)
        assert np.abs(got.boxes[order].astype(float) - want.boxes).max() <= 1.0
        np.testing.assert_allclose(got.scores[order], want.scores, atol=0.01)
        compared += len(want)
    assert compared >= 4  # the frames gave masks to compare


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_embeddings_match_torch(backend, frames):
    from sfs_ros.core.labeler import Labeler
    from sfs_ros.core.segmenter import Segmenter

    reference = Labeler(build_configs(_values("dense")).labeler)
    exported = Labeler(build_configs(_values("dense", backend=backend)).labeler)
    masks = Segmenter(build_configs(_values()).segmenter).segment(frames[0])
    crops = reference.make_crops(frames[0], masks)
    cosine = torch.nn.functional.cosine_similarity(
        exported.encode_image(crops), reference.model.encode_image(crops), dim=-1)
    assert cosine.min() >= 0.999
    for size in ((96, 128), (224, 296)):  # neither is the grid the dense graph was exported at
        pixels = reference._resized(frames[2], size)
        want, got = reference.dense(pixels), exported.dense(pixels)
        assert got.shape == want.shape == (size[0] // 8, size[1] // 8, want.shape[-1])
        assert torch.nn.functional.cosine_similarity(got, want, dim=-1).min() >= 0.999


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["crop", "dense"])
def test_same_labels_as_torch(backend, mode, frames):
    torch_models = _models(mode, "torch", mask_resolution="low")
    backend_models = _models(mode, backend, mask_resolution="low")
    labelled = 0
    for image in frames:
        results = []
        for segmenter, labeler in (torch_models, backend_models):
            masks = segmenter.segment(image)
            results.append(labeler.label(image, masks).class_ids)
        np.testing.assert_array_equal(results[1], results[0])
        labelled += int((results[0] >= 0).sum())
    assert labelled >= 4


def test_backend_that_cannot_run_here_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match="needs CUDA \\+ tensorrt"):
        require("tensorrt", torch.device("cpu"))
    with pytest.raises(BackendUnavailable, match="openvino runs on the CPU"):
        require("openvino", torch.device("cuda:0"))


@pytest.mark.skipif(not BACKENDS, reason="no exported backend installed")
def test_missing_export_with_export_missing_off_names_sfs_export():
    with pytest.raises(SfsError, match="sfs export"):
        _models("crop", BACKENDS[0], export_missing=False, imgsz=IMGSZ + 32)  # never exported


def test_cache_builds_once_and_keys_on_weights(tmp_path):
    made = []

    def make(folder):
        made.append(folder)
        (folder / "m.onnx").write_text("x")
        return folder / "m.onnx"

    key = ExportKey("fastsam", "m", "file:abc", "320", "onnxruntime", "v1")
    first = build(key, make, allow=True, progress=lambda line: None)
    assert build(key, make, allow=True) == first == cached(key) and len(made) == 1
    other = ExportKey("fastsam", "m", "file:abd", "320", "onnxruntime", "v1")
    assert other.folder != key.folder and cached(other) is None
    assert not list(key.folder.parent.glob("*.tmp*"))  # no half export left behind


def test_per_model_devices():
    configs = build_configs(_values(device="cpu", clip_device="cuda:1", semantic_device="cuda:0",
                                    labeling_mode="semantic-hybrid"))
    assert (configs.segmenter.device, configs.labeler.device, configs.semantic.device) == (
        "cpu", "cuda:1", "cuda:0")
    configs = build_configs(_values(device="cuda:2", labeling_mode="semantic-hybrid"))
    assert configs.labeler.device == configs.semantic.device == "cuda:2"


@pytest.mark.skipif(not BACKENDS, reason="no exported backend installed")
def test_sfs_export_builds_then_reuses():
    flags = known_answer.flags(_values(labeling_mode="dense", backend=BACKENDS[0]))
    command = [sys.executable, "-m", "sfs_ros.cli", "export", *flags]
    env = {**os.environ}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "cached" in second.stdout and "exporting" not in second.stderr
    assert second.stdout.count("\n") >= 3  # fastsam, clip crop, clip dense
    refused = subprocess.run([sys.executable, "-m", "sfs_ros.cli", "export", *flags[:-2],
                              "--backend", "torch"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "torch" in refused.stderr
