"""The CLIP image encoder exported: the crop encoder (dynamic batch) and the dense graph.

Crop mode encodes (B, 3, S, S) crops exactly as `model.encode_image` (dynamic batch); dense
mode runs `DenseClip.tokens`, the ClearCLIP last block included, one static graph per input size
(a camera has one). Each is exported once to ONNX (the file onnxruntime and tensorrt run) and, for openvino,
converted to OpenVINO IR; with `int8` the dense graph gets an int8 copy (quantize.py), the crop
encoder stays f32. The text encoder stays on torch: its outputs are cached per vocabulary.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sfs_ros.core.backends import require
from sfs_ros.core.backends.cache import ExportKey, Progress, build, log
from sfs_ros.core.backends.sessions import Run, open_session
from sfs_ros.core.dense_clip import DenseClip

if TYPE_CHECKING:
    from sfs_ros.core.labeler import Labeler

#: ONNX opset of the CLIP graphs (scaled_dot_product_attention needs >= 14).
OPSET = 17


class _CropGraph(torch.nn.Module):
    """The pooled, projected image embedding (B, D), not normalised (= encode_image)."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


class _DenseGraph(torch.nn.Module):
    """DenseClip.tokens for one input size (positional embeddings resized at export)."""

    def __init__(self, dense: DenseClip) -> None:
        super().__init__()
        self.visual = dense.visual
        self.dense = dense

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.dense.tokens(pixels)


def _export(graph: torch.nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str],
            axes: dict[str, dict[int, str]], backend: str) -> Callable[[Path], Path]:
    """`make` for cache.build: ONNX of `graph` as loaded (the labeler's device and dtype),
    converted to OpenVINO IR for openvino. The MHA fast-path switch is process-wide for the
    seconds of the export: other torch threads run the plain (slower) attention meanwhile."""

    def make(folder: Path) -> Path:
        onnx_path = folder / "model.onnx"
        fastpath = torch.backends.mha.get_fastpath_enabled()
        # nn.MultiheadAttention's fused inference kernel has no ONNX form: trace the plain ops
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with torch.no_grad():
                torch.onnx.export(graph, inputs, str(onnx_path), input_names=names,
                                  output_names=["features"], dynamic_axes=axes,
                                  opset_version=OPSET, dynamo=False)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        if backend != "openvino":
            return onnx_path
        import openvino as ov

        ir = folder / "model.xml"
        ov.save_model(ov.convert_model(onnx_path), ir, compress_to_fp16=False)
        onnx_path.unlink()
        return ir

    return make


class ExportedCrops:
    """`encode_image` on the backend: (B, 3, S, S) -> (B, D) on the labeler's device."""

    def __init__(self, run: Run, path: Path) -> None:
        self.run = run
        self.path = path  # the exported file

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.run(pixels.cpu().numpy())[0]  # the labeler's dtype, as exported
        return torch.from_numpy(out).to(pixels.device)


class ExportedDense:
    """`DenseClip.__call__` on the backend. One static graph per patch grid: torch's
    MultiheadAttention traces the sequence length as a constant, and a camera's frames all
    have one size, so the graph of a new grid is exported (or taken from the cache) on first use."""

    def __init__(self, labeler: Labeler, dense: DenseClip, progress: Progress) -> None:
        self.labeler = labeler
        self.dense = dense
        self.patch = dense.patch
        self.progress = progress
        self._runs: dict[tuple[int, int], tuple[Run, Path]] = {}

    def prepare(self, gh: int, gw: int) -> Path:
        """Open the graph of the (gh, gw) grid, exported first when missing; its file."""
        if (gh, gw) not in self._runs:
            lab = self.labeler
            pixels = torch.zeros(1, 3, gh * self.patch, gw * self.patch, device=lab.device,
                                 dtype=lab.dtype)
            make = _export(_DenseGraph(self.dense), (pixels,), ["pixels"], {}, lab.config.backend)
            key = _key(lab, "clip-dense", f"{pixels.shape[2]}x{pixels.shape[3]}")
            path = build(key, make, lab.config.export_missing, self.progress)
            if lab.config.int8:
                size = tuple(pixels.shape[2:])
                path = _int8(lab, key, path, lambda im: lab._resized(im, size), self.progress)
            self._runs[gh, gw] = open_session(path, lab.config.backend, lab.device), path
        return self._runs[gh, gw][1]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        gh, gw = self.dense.grid(pixels)
        self.prepare(gh, gw)
        out = self._runs[gh, gw][0](pixels.cpu().numpy())[0]
        return torch.from_numpy(out[0]).to(pixels.device).reshape(gh, gw, -1)


def _key(labeler: Labeler, network: str, size: str) -> ExportKey:
    cfg = labeler.config
    return ExportKey(network, cfg.clip_model, labeler.weights_id, size, cfg.backend,
                     f"torch{torch.__version__}-opset{OPSET}")


def _int8(labeler: Labeler, key: ExportKey, f32_xml: Path,
          prepare: Callable[[np.ndarray], torch.Tensor], progress: Progress) -> Path:
    """The int8 copy of the dense graph (quantize.py), calibrated on the `prepare(image)` inputs."""
    from sfs_ros.core.backends.quantize import quantized

    def inputs_of(images: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [prepare(im).float().cpu().numpy() for im in images]

    cfg = labeler.config
    return quantized(key, f32_xml, cfg.int8_calibration, inputs_of, transformer=True,
                     allow=cfg.export_missing, progress=progress)


def exported_encoders(labeler: Labeler, dense: bool,
                      progress: Progress = log.info) -> tuple[ExportedCrops, ExportedDense | None]:
    """The labeler's image encoder on its backend: crops always (crop, hybrid, prune_topk),
    exported first when missing (config.export_missing); the dense graph when `dense`, per
    input grid on first use (`ExportedDense.prepare` builds one ahead: `sfs export`)."""
    cfg = labeler.config
    require(cfg.backend, labeler.device)
    side = labeler.crop_size
    sample = torch.zeros(2, 3, *side, device=labeler.device, dtype=labeler.dtype)
    make = _export(_CropGraph(labeler.model.visual), (sample,), ["pixels"],
                   {"pixels": {0: "batch"}, "features": {0: "batch"}}, cfg.backend)
    # f32 even with int8: int8 crops on int8 FastSAM masks kept 93% of crop-mode labels on the
    # known-answer world, under the 95% bar (f32 crops on int8 masks: 96%; BENCHMARKS.md "int8")
    path = build(_key(labeler, "clip-crop", "x".join(map(str, side))), make,
                 cfg.export_missing, progress)
    crops = ExportedCrops(open_session(path, cfg.backend, labeler.device), path)
    if not dense:
        return crops, None
    torch_dense = labeler.dense if labeler.dense is not None else DenseClip(labeler.model.visual)
    return crops, ExportedDense(labeler, torch_dense, progress)
