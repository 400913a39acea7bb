"""One small interface over the runtimes: an exported graph as `run(*arrays) -> [arrays]`.

Used for the graphs this package exports itself (the CLIP encoders); FastSAM runs through
Ultralytics' AutoBackend, which opens the same runtimes. Inputs and outputs are float32 numpy
arrays in the graph's order, so the callers stay runtime-agnostic.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sfs_ros.core.backends import BackendUnavailable, require

Run = Callable[..., list[np.ndarray]]


def _openvino(path: Path) -> Run:
    import openvino as ov

    # LATENCY: one request uses all cores for one frame (a robot's stream, not a batch server);
    # f32: the CPU plugin would run bf16 on avx512_bf16/AMX CPUs, off torch by more than parity allows
    compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    lock = threading.Lock()  # an infer request serves one call at a time

    def run(*inputs: np.ndarray) -> list[np.ndarray]:
        with lock:
            result = request.infer(dict(enumerate(inputs)))
            return [np.array(result[out], copy=True) for out in compiled.outputs]

    return run


def _onnxruntime(path: Path, providers: list[str]) -> Run:
    import onnxruntime as ort

    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise BackendUnavailable(f"onnxruntime {ort.__version__} lacks {', '.join(missing)} "
                                 "(install onnxruntime-gpu with TensorRT for backend tensorrt)")
    session = ort.InferenceSession(str(path), providers=providers)
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: np.ndarray) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, inputs)))

    return run


def open_session(path: Path, backend: str, device: torch.device) -> Run:
    """`path` (ONNX, or OpenVINO IR for openvino) ready to run on `device` with `backend`."""
    require(backend, device)
    if backend == "openvino":
        return _openvino(path)
    if backend == "tensorrt":  # ONNX Runtime's TensorRT provider (needs CUDA + tensorrt)
        return _onnxruntime(path, ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    cuda = device.type == "cuda"
    return _onnxruntime(path, ["CUDAExecutionProvider"] * cuda + ["CPUExecutionProvider"])
