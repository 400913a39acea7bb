"""FastSAM exported with Ultralytics' own exporter and run by its own predictor.

Keeping Ultralytics' predictor keeps everything `core/segmenter.py` relies on: the letterbox,
NMS, box scaling and `FastSAMPredictor.construct_result`, which the low-res mask path overrides
to read the raw prototypes. An exported graph yields the same two raw outputs as the torch
model (detections with mask coefficients, prototypes), so that hook sees the same `pred` and
`proto`. Exported with dynamic shapes: the predictor then letterboxes a 640x480 frame to
640x480 as it does for torch (a static graph would pad it to 640x640: other pixels, more work).
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sfs_ros.core.backends import require
from sfs_ros.core.backends.cache import ExportKey, Progress, build, log
from sfs_ros.core.weights import file_fingerprint

if TYPE_CHECKING:
    from sfs_ros.core.segmenter import SegmenterConfig

#: Ultralytics export format per backend.
FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "engine"}


def exported_fastsam(checkpoint: Path, config: SegmenterConfig, device: torch.device,
                     progress: Progress = log.info) -> tuple[Any, Path]:
    """(FastSAM model on the exported file, that file) for `config.backend`, exported from
    `checkpoint` first when the cache lacks it (config.export_missing)."""
    import ultralytics

    from sfs_ros.core.segmenter import _load_checkpoint, _restore_threads

    require(config.backend, device)
    half = config.half and device.type == "cuda"
    key = ExportKey("fastsam", Path(checkpoint).stem, f"file:{file_fingerprint(checkpoint)}",
                    str(config.imgsz), config.backend,
                    f"ultralytics{ultralytics.__version__}-torch{torch.__version__}-half{half}")

    def make(folder: Path) -> Path:
        copy = folder / "fastsam.pt"  # Ultralytics writes the export next to its source
        shutil.copyfile(checkpoint, copy)
        out = _load_checkpoint(copy).export(
            format=FORMATS[config.backend], imgsz=config.imgsz, dynamic=True, half=half,
            device=str(device), verbose=False)
        copy.unlink()
        return Path(out)

    from ultralytics import FastSAM

    with _restore_threads(torch.get_num_threads()):  # the exporter's device setup lowers it
        path = build(key, make, config.export_missing, progress)
        if config.int8:
            path = _int8(key, path, config, progress)
        return FastSAM(str(path)), path


def _int8(f32_key: ExportKey, f32_path: Path, config: SegmenterConfig, progress: Progress) -> Path:
    """The int8 copy of the OpenVINO export folder `f32_path` (quantize.py), built once per
    calibration set. Calibration inputs come from Ultralytics' own preprocessing (letterbox,
    scaling) run by the f32 model's predictor, so they are what inference feeds the graph."""
    import numpy as np
    from ultralytics import FastSAM

    from sfs_ros.core.backends.quantize import FASTSAM_F32_TYPES, quantized

    def inputs_of(images: list[np.ndarray]) -> list[np.ndarray]:
        f32 = FastSAM(str(f32_path))
        bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]  # Ultralytics takes BGR
        f32.predict(bgr[0], imgsz=config.imgsz, device="cpu", verbose=False)  # sets the predictor up
        return [f32.predictor.preprocess([im]).numpy() for im in bgr]

    def layout(folder: Path) -> Path:  # Ultralytics recognises the "*_openvino_model" folder
        shutil.copytree(f32_path, folder / f32_path.name)
        return folder / f32_path.name / f32_xml.name  # the copied .bin is overwritten

    f32_xml = next(f32_path.glob("*.xml"))
    return quantized(f32_key, f32_xml, config.int8_calibration, inputs_of, transformer=False,
                     allow=config.export_missing, progress=progress,
                     f32_types=FASTSAM_F32_TYPES, layout=layout).parent


_F32_PREDICTORS: dict[tuple[type, Path], type] = {}


def backend_predictor(backend: str, base: type, exported: Path) -> type:
    """The predictor class for `backend`: the Segmenter's `base`, except on
    openvino, whose CPU plugin runs bf16 by default on CPUs with avx512_bf16/AMX (masks and
    scores then drift from torch's): that one recompiles `exported` with f32 inference."""
    if backend != "openvino":
        return base
    if (base, exported) not in _F32_PREDICTORS:

        class F32OpenVINOPredictor(base):  # type: ignore[valid-type,misc]
            def setup_model(self, model: Any, verbose: bool = True) -> None:
                super().setup_model(model, verbose)
                _pin_f32(self.model, exported)

        F32OpenVINOPredictor.__name__ = F32OpenVINOPredictor.__qualname__ = f"F32{base.__name__}"
        _F32_PREDICTORS[base, exported] = F32OpenVINOPredictor
    return _F32_PREDICTORS[base, exported]


def _pin_f32(autobackend: Any, exported: Path) -> None:
    """Recompile Ultralytics' OpenVINO model (AutoBackend.backend) with f32 inference."""
    import openvino as ov

    from sfs_ros.core.segmenter import _ultralytics_error

    backend = getattr(autobackend, "backend", None)
    compile_model = getattr(backend, "compile_model", None)
    if not isinstance(compile_model, functools.partial) or not hasattr(backend, "ov_compiled_model"):
        raise _ultralytics_error("its OpenVINO backend has no compile_model/ov_compiled_model, "
                                 "which backend openvino recompiles for f32")
    config = {**compile_model.keywords.get("config", {}), "INFERENCE_PRECISION_HINT": "f32"}
    backend.compile_model = functools.partial(compile_model, config=config)
    xml = exported if exported.suffix == ".xml" else next(exported.glob("*.xml"))
    backend.ov_compiled_model = backend.compile_model(ov.Core().read_model(str(xml)))
    precision = backend.ov_compiled_model.get_property("INFERENCE_PRECISION_HINT")
    if precision != ov.Type.f32:
        raise _ultralytics_error(f"OpenVINO kept {precision} inference after asking for f32")
