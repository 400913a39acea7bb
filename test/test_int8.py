"""int8 (option `int8`, core/backends/quantize.py) against f32 on the known-answer world.

The bar of issue #17 for shipping int8: the same masks (mean mask IoU >= 0.95 against the f32
OpenVINO graphs) and the same labels on >= 95% of the masks. Checked with the trained shapes
models (random weights would not do: their scores all sit near 0.5, so which 50 masks survive
NMS is a tie-break that any rounding reorders). Calibrated on a folder of the camera's own
frames (`int8_calibration`), as a robot would; the frames checked are other scenes.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import cv2
import numpy as np
import pytest

from sfs_ros.core.backends import installed
from sfs_ros.core.backends.quantize import calibration_id, calibration_images
from sfs_ros.core.frame import SfsError
from sfs_ros.core.segmenter import SegmenterConfig
from sfs_ros.eval.agreement import compare
from sfs_ros.synth import known_answer
from sfs_ros.synth.shapes import iter_scenes

pytestmark = pytest.mark.skipif(
    bool(known_answer.missing(semantic=False)) or not installed("openvino")
    or importlib.util.find_spec("nncf") is None,
    reason="needs models/shapes, openvino and nncf")
SIZE = (240, 320)  # the world's scale at imgsz 320


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("calibration")
    for scene in iter_scenes(31, 24, size=SIZE):
        cv2.imwrite(str(folder / f"{scene.index:03d}.png"), scene.image[:, :, ::-1])
    return str(folder)


@pytest.fixture(scope="module")
def models(calibration, tmp_path_factory):
    """(f32, int8) OpenVINO models, dense labeling, exported into a module cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SFS_EXPORT_DIR", str(tmp_path_factory.mktemp("exported")))
        common = dict(imgsz=320, backend="openvino", mask_resolution="low")
        yield (known_answer.load("dense", **common),
               known_answer.load("dense", int8=True, int8_calibration=calibration, **common))


def test_int8_graphs_are_quantised(models):
    import openvino as ov

    def quantised(path) -> bool:
        xml = path if path.suffix == ".xml" else next(path.glob("*.xml"))
        return any(op.get_type_name() == "FakeQuantize"
                   for op in ov.Core().read_model(str(xml)).get_ops())

    (f32_seg, f32_lab), (seg, lab) = models
    assert quantised(seg.exported) and not quantised(f32_seg.exported)
    assert quantised(lab.dense.prepare(224 // lab.dense.patch, 296 // lab.dense.patch))
    assert not quantised(lab.encode_image.path)  # crops stay f32 (backends/clip.py says why)


def test_int8_agrees_with_f32_on_the_known_answer_world(models):
    f32, int8 = models
    agreement = compare(f32, int8, (scene.image for scene in iter_scenes(12, 8, size=SIZE)))
    assert agreement.masks >= 40  # enough masks for the shares below to mean something
    assert agreement.mean_iou >= 0.95, f"mean mask IoU int8 vs f32 {agreement.mean_iou:.3f}"
    share = agreement.share(agreement.same_labels)
    assert share >= 0.95, f"same labels on {share:.1%} of {agreement.masks} masks"


def test_int8_reuses_its_export(models, calibration):
    (_, _), (seg, _) = models
    from sfs_ros.core.segmenter import Segmenter

    again = Segmenter(seg.config)  # the same options: the cached int8 folder, not a new one
    assert again.exported == seg.exported


def test_sfs_export_int8(models, calibration):
    """`sfs export --int8` builds (or finds) the same int8 files the models above loaded."""
    values = known_answer.options("dense", imgsz=320, backend="openvino", mask_resolution="low",
                                  int8=True, int8_calibration=calibration)
    command = [sys.executable, "-m", "sfs_ros.cli", "export", *known_answer.flags(values),
               "--frame-size", f"{SIZE[1]}x{SIZE[0]}"]
    for _ in range(2):  # the second run finds everything in the cache
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    (_, _), (seg, _) = models
    assert lines["fastsam"] == str(seg.exported)
    assert "int8" in lines["clip dense 224x296 (HxW)"] and "int8" not in lines["clip crops"]
    assert done.stdout.rstrip().endswith("0 exported, 3 cached")


def test_int8_needs_openvino():
    with pytest.raises(SfsError, match="int8 needs backend openvino"):
        SegmenterConfig(backend="onnxruntime", int8=True).validate()
    with pytest.raises(SfsError, match="int8 needs backend openvino"):
        SegmenterConfig(int8=True).validate()  # torch


def test_calibration_folder(tmp_path, calibration):
    with pytest.raises(SfsError, match="no readable images"):
        calibration_images(str(tmp_path))
    images = calibration_images(calibration)
    assert len(images) == 24 and images[0].shape == (*SIZE, 3)
    generated = calibration_images("")
    assert len(generated) == 32 and generated[0].shape == (480, 640, 3)
    assert calibration_id(calibration) == calibration_id(calibration) != calibration_id("")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    one = calibration_id(str(tmp_path))
    cv2.imwrite(str(tmp_path / "a.png"), np.ones((8, 8, 3), np.uint8))
    assert calibration_id(str(tmp_path)) != one  # keyed on the files' content, not names
