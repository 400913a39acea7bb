"""Exported inference backends: FastSAM and the CLIP image encoder outside PyTorch.

`backend` (core/options.py BACKENDS) picks how the two per-frame networks run: `torch` as
loaded, or an exported copy on OpenVINO, ONNX Runtime or TensorRT. The copies are built once
into the export cache (`cache.py`: keyed by model, weights content, input size, backend) by
`fastsam.py` (Ultralytics' own exporter, so its predictor and the low-res mask hook keep
working) and `clip.py` (the visual tower for crops, the ClearCLIP dense graph), and run through
one small session interface (`sessions.py`). `command.py` is `sfs export`.

Nothing here imports a runtime at module level: a backend's package is needed only when used,
and `require` names what is missing.
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from sfs_ros.core.frame import SfsError
from sfs_ros.core.options import BACKENDS

if TYPE_CHECKING:
    import torch

#: The Python package each exported backend runs on (pip name in requirements.txt).
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}


class BackendUnavailable(SfsError):
    """The backend asked for cannot run here (package not installed, or no CUDA device)."""


def installed(backend: str) -> bool:
    """Whether `backend` can be imported (torch always can)."""
    return backend == "torch" or importlib.util.find_spec(PACKAGES[backend]) is not None


def installed_backends() -> tuple[str, ...]:
    """The exported backends this machine has (torch excluded); tensorrt also needs CUDA."""
    import torch

    return tuple(b for b in BACKENDS[1:] if installed(b)
                 and (b != "tensorrt" or torch.cuda.is_available()))


def require(backend: str, device: torch.device) -> None:
    """Raise BackendUnavailable with what to install or change when `backend` cannot run on
    `device`; silent for torch and for a usable backend."""
    if backend not in BACKENDS:
        raise BackendUnavailable(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "tensorrt" and device.type != "cuda":
        raise BackendUnavailable(f"backend tensorrt needs CUDA + tensorrt: device is {device}; "
                                 "use backend openvino or onnxruntime on a CPU")
    if backend == "openvino" and device.type == "cuda":
        raise BackendUnavailable("backend openvino runs on the CPU here: set device cpu (a cuda "
                                 "device wants onnxruntime or tensorrt)")
    if not installed(backend):
        raise BackendUnavailable(f"backend {backend} is not installed: pip install "
                                 f"{PACKAGES[backend]} (requirements.txt), or use backend torch")
