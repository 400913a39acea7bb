"""int8: NNCF post-training quantisation of the OpenVINO exports (option `int8`): FastSAM and
the dense CLIP graph (the crop encoder stays f32: backends/clip.py says why).

On a CPU with VNNI the int8 graphs run 2-3x faster than f32 (BENCHMARKS.md, "int8"). NNCF
only needs sample inputs to calibrate activation ranges, no labels: `calibration_images` gives
them, from the `int8_calibration` folder (a robot's own frames are the best sample) or, by
default, generated frames (the shapes world) and photos bundled with scikit-image. Each network
turns those images into its own input (the predictor's letterbox, CLIP's resize and
normalisation), so calibration sees exactly what inference will.

Kept in f32 (ignored scope): in FastSAM the element-wise tail of the head (box decoding, the
sigmoid scores: Multiply/Subtract/Sigmoid), where int8 rounding moves boxes and reorders
near-equal scores; in CLIP what NNCF's transformer rules (ModelType.TRANSFORMER, with
SmoothQuant) keep out of int8, such as softmax and layer norms. Agreement with f32 is checked
on the known-answer world (test_int8.py, bench/int8.py) and reported in BENCHMARKS.md.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from sfs_ros.core.backends.cache import ExportKey, Progress, build
from sfs_ros.core.frame import SfsError

#: Calibration frames used (NNCF's statistics converge well before; each costs one forward pass).
CALIBRATION_FRAMES = 32
#: World seed of the generated calibration frames (the tests and ACCURACY.md use others).
CALIBRATION_SEED = 101
#: scikit-image photos added to the generated frames.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "retina")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Bumped when how the calibration inputs are made changes (part of the cache key).
RECIPE = 2
#: FastSAM operations left in f32 (see the module docstring).
FASTSAM_F32_TYPES = ("Multiply", "Subtract", "Sigmoid")


def _photos(size: tuple[int, int]) -> list[np.ndarray]:
    import cv2
    import skimage.data

    out = []
    for name in PHOTOS:
        rgb = getattr(skimage.data, name)()
        out.append(cv2.resize(rgb[..., :3], size[::-1], interpolation=cv2.INTER_AREA))
    return out


def calibration_images(folder: str = "", size: tuple[int, int] = (480, 640)) -> list[np.ndarray]:
    """RGB calibration images: up to CALIBRATION_FRAMES from `folder` (sorted, any size), or
    generated ones at `size` (height, width): shapes-world frames plus the bundled photos."""
    if folder:
        import cv2

        images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in _calibration_files(folder)]
        images = [im[:, :, ::-1].copy() for im in images if im is not None]
        if not images:
            raise SfsError(f"int8_calibration {folder!r}: no readable images "
                           f"({', '.join(IMAGE_SUFFIXES)}) in that folder")
        return images
    from sfs_ros.synth.shapes import iter_scenes

    photos = _photos(size)
    scenes = iter_scenes(CALIBRATION_SEED, CALIBRATION_FRAMES - len(photos), size=size)
    return [s.image for s in scenes] + photos


def _calibration_files(folder: str) -> list[Path]:
    """The images of `folder` calibration reads: the first CALIBRATION_FRAMES, sorted by name."""
    if not Path(folder).is_dir():
        return []
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:CALIBRATION_FRAMES]


def calibration_id(folder: str = "") -> str:
    """What the calibration depends on, for the export cache key: the names and contents of the
    files it reads from `folder`, or the generator's settings (and nncf's version)."""
    digest = hashlib.sha1(f"nncf{importlib.metadata.version('nncf')}-recipe{RECIPE}".encode())
    if folder and Path(folder).is_dir():
        for path in _calibration_files(folder):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    else:
        digest.update(f"{folder}|generated|{CALIBRATION_SEED}|{CALIBRATION_FRAMES}|{PHOTOS}".encode())
    return digest.hexdigest()[:12]


def require_nncf() -> None:
    """NNCF is what quantises; a clear error when it is missing."""
    import importlib.util

    from sfs_ros.core.backends import BackendUnavailable

    if importlib.util.find_spec("nncf") is None:
        raise BackendUnavailable("int8 needs nncf (pip install nncf, requirements.txt) to quantise "
                                 "the OpenVINO models once; or set int8 false")


def quantize_ir(xml: Path, out_xml: Path, inputs: Sequence[np.ndarray], *, transformer: bool,
                f32_types: Sequence[str] = ()) -> Path:
    """Quantise the OpenVINO IR `xml` on `inputs` (one network input array each) into `out_xml`
    (`quantized` has checked that nncf is installed)."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # its INFO lines list every ignored node; progress stays
    model = ov.Core().read_model(str(xml))
    kwargs: dict = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {
        "preset": nncf.QuantizationPreset.MIXED}
    if f32_types:
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=list(f32_types))
    quantized = nncf.quantize(model, nncf.Dataset(list(inputs)), subset_size=len(inputs), **kwargs)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


def int8_key(f32: ExportKey, calibration: str) -> ExportKey:
    """The cache key of the int8 copy of the export `f32`, calibrated on `calibration`."""
    return replace(f32, backend=f"{f32.backend}-int8",
                   versions=f"{f32.versions}-calib{calibration_id(calibration)}")


def quantized(f32: ExportKey, f32_xml: Path, calibration: str,
              inputs_of: Callable[[list[np.ndarray]], list[np.ndarray]], *, transformer: bool,
              allow: bool, progress: Progress, f32_types: Sequence[str] = (),
              layout: Callable[[Path], Path] = lambda folder: folder / "model.xml") -> Path:
    """The int8 copy of the OpenVINO IR `f32_xml` (export key `f32`), from the cache or
    quantised now on `inputs_of(calibration images)`; `layout(folder)` names the IR to write
    (FastSAM keeps Ultralytics' folder around it)."""
    require_nncf()

    def make(folder: Path) -> Path:
        inputs = inputs_of(calibration_images(calibration))
        out = layout(folder)
        return quantize_ir(f32_xml, out, inputs, transformer=transformer, f32_types=f32_types)

    return build(int8_key(f32, calibration), make, allow, progress)
