"""FastSAM "everything" mode: every instance mask in an RGB frame.

FastSAM is a YOLOv8-seg network trained class-agnostic (one class, "object"), so the
segmentation stage is Ultralytics' predictor with FastSAM's defaults: no prompts, all masks
above `conf` after NMS at `iou`. Naming the masks is the labeler's job.

Colour order: `segment()` takes RGB (the Frame contract). Ultralytics treats numpy input as
OpenCV BGR, so the channel flip happens here, in exactly one place.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from sfs_ros.core import stream_profile
from sfs_ros.core.nms import prefiltering_predictor
from sfs_ros.core.device import new_stream, on_stream, resolve_device
from sfs_ros.core.frame import MaskGrid, Masks, SfsError, check_rgb_image, tight_boxes
from sfs_ros.core.handoff import grid_index, stack_stats, tight_boxes_tensor
from sfs_ros.core.options import MASK_RESOLUTIONS, int8_problem
from sfs_ros.core.weights import cache_dir, fastsam_architecture, resolve_fastsam

# Ultralytics must never try the network (downloads, pip installs, telemetry) on a robot.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")
# Checkpoints are pickles: load them with Ultralytics' restricted loader (torch weights_only plus
# an allow-list of its model classes), so a tampered .pt cannot run code. Read when ultralytics
# is imported; `_load_checkpoint` covers a process that imported it before this module.
os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "1")

log = logging.getLogger("sfs_ros.segmenter")

#: MASK_RESOLUTIONS (core/options.py): "full": Ultralytics upsamples every mask to the image.
#: Otherwise masks stay on a grid over the letterboxed network input, painted there and upsampled
#: once: "low" = FastSAM's prototype grid (network input / 4), "network" = the network input itself
#: (prototype logits upsampled x4 bilinear first, as Ultralytics' non-retina path does; pays off
#: for frames larger than imgsz). Grid modes override a private Ultralytics hook (PREDICTOR_HOOK).
GRID_FACTORS = {"low": 1, "network": 4}
#: The private Ultralytics method the grid predictor overrides, with the parameters it must have.
#: It is not public API, so requirements.txt pins the minor release range it was written for and
#: `check_predictor_hook` refuses any Ultralytics whose hook differs: an override Ultralytics
#: does not call (or calls with other arguments) would otherwise yield wrong masks silently.
PREDICTOR_HOOK = ("construct_result", ("self", "pred", "img", "orig_img", "img_path", "proto"))
#: The Ultralytics range PREDICTOR_HOOK and the restricted loader (tasks.SAFE_LOAD) were checked
#: against; named in the errors below (requirements.txt and setup.py pin the same range).
ULTRALYTICS_RANGE = ">=8.4.75,<8.5"
#: Key random_fastsam_checkpoint stores in the checkpoint dict (plain data the restricted loader
#: reads): a random-init file keeps reporting random_weights wherever it is copied or passed.
RANDOM_MARKER = "sfs_ros_random_weights"


@dataclass(frozen=True)
class SegmenterConfig:
    """FastSAM options; defaults are FastSAM's own "everything" settings except max_det."""

    model: str = "FastSAM-s"  # FastSAM-s, FastSAM-x, or a path to any YOLOv8-seg checkpoint
    imgsz: int = 640
    conf: float = 0.4
    iou: float = 0.9
    max_det: int = 100
    retina_masks: bool = True  # masks from full-resolution prototypes (sharper, slower)
    # "full": every mask upsampled to the image size by Ultralytics (bilinear on the logits).
    # "low": masks stay on FastSAM's prototype grid (network input / 4); fusion paints there and
    # upsamples the label and instance images once (nearest), full-size masks only on demand.
    # "network": the same on the network input grid (4x finer than "low"; see MASK_RESOLUTIONS).
    # retina_masks only matters for "full".
    mask_resolution: str = "full"
    half: bool = False  # fp16, CUDA only
    device: str = "auto"
    min_area: int = 100  # masks smaller than this many pixels are dropped
    random_weights: bool = False
    backend: str = "torch"  # options.BACKENDS; others run an exported copy (core/backends/)
    export_missing: bool = True  # export a backend model missing from the cache on load
    int8: bool = False  # openvino only: the NNCF-quantised copy (core/backends/quantize.py)
    int8_calibration: str = ""  # folder of calibration images; empty: generated frames

    def validate(self) -> None:
        if not 32 <= self.imgsz <= 4096 or self.imgsz % 32:
            raise SfsError(f"imgsz must be a multiple of 32 in [32, 4096], got {self.imgsz}")
        if not 0.0 <= self.conf <= 1.0 or not 0.0 <= self.iou <= 1.0:
            raise SfsError(f"conf and iou must lie in [0, 1], got conf={self.conf} iou={self.iou}")
        if self.max_det < 1 or self.min_area < 1:
            raise SfsError(f"max_det and min_area must be >= 1, got {self.max_det}, {self.min_area}")
        problem = int8_problem(self.backend, self.int8)
        if problem:
            raise SfsError(problem)
        if self.mask_resolution not in MASK_RESOLUTIONS:
            raise SfsError(f"mask_resolution must be one of {MASK_RESOLUTIONS}, "
                           f"got {self.mask_resolution!r}")


def random_fastsam_checkpoint(model: str, seed: int = 0) -> Path:
    """Save (once) an untrained FastSAM-shaped checkpoint with the architecture of `model`.

    Ultralytics' FastSAM only loads checkpoint files, so the random network is built from the
    YOLOv8-seg config with one class and saved. Its class-head bias is zeroed so scores sit at
    0.5: an untrained head otherwise scores ~1e-5 and no mask would pass `conf`, leaving the
    rest of the pipeline unexercised. The masks are arbitrary shapes, never real objects.
    """
    from ultralytics import YOLO
    from ultralytics.nn.tasks import SegmentationModel

    arch = fastsam_architecture(model)
    # "-marked": files cached before RANDOM_MARKER existed are not reused
    path = cache_dir() / "random" / f"{Path(arch).stem}-nc1-seed{seed}-marked.pt"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yolo = YOLO(arch)
        yolo.model = SegmentationModel(arch, nc=1, verbose=False)
        yolo.model.args = {"task": "segment"}
        yolo.model.task = "segment"
        for branch in yolo.model.model[-1].cv3:
            torch.nn.init.zeros_(branch[-1].bias)
        yolo.ckpt = {**(yolo.ckpt or {}), RANDOM_MARKER: True}  # Model.save writes ckpt's keys
    tmp = path.with_suffix(f".tmp{os.getpid()}.pt")
    yolo.save(tmp)
    tmp.replace(path)  # atomic: parallel test workers never read half a file
    return path


def _ultralytics_error(what: str) -> SfsError:
    """One wording for an installed Ultralytics that lacks what this module relies on."""
    import ultralytics

    return SfsError(f"ultralytics {ultralytics.__version__}: {what}; sfs_ros needs ultralytics"
                    f"{ULTRALYTICS_RANGE} (requirements.txt)")


def _load_checkpoint(checkpoint: Path) -> Any:
    """FastSAM from a checkpoint file, refusing any that holds more than model classes."""
    from ultralytics import FastSAM
    from ultralytics.nn import tasks

    if not hasattr(tasks, "SAFE_LOAD"):  # without it torch_safe_load(safe_only=) is not restricted
        raise _ultralytics_error("no restricted checkpoint loader (ultralytics.nn.tasks.SAFE_LOAD)")
    try:
        if not tasks.SAFE_LOAD:  # ultralytics was imported before the variable was set
            tasks.torch_safe_load(str(checkpoint), safe_only=True)
        return FastSAM(str(checkpoint))
    except (TypeError, RuntimeError, pickle.UnpicklingError, KeyError, AttributeError) as exc:
        raise SfsError(
            f"FastSAM checkpoint {checkpoint} could not be loaded safely ({type(exc).__name__}: "
            f"{str(exc).strip()[:300]}); only Ultralytics checkpoints are accepted"
        ) from exc


@contextlib.contextmanager
def _restore_threads(count: int) -> Iterator[None]:
    """Keep the process's torch CPU thread count: Ultralytics' predictor sets it to
    cores - 1 on its first call, which halved the CLIP stage's speed on 2-core machines."""
    try:
        yield
    finally:
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes (x1, y1 exclusive) of non-empty boolean masks (N, H, W)."""
    return tight_boxes(masks.any(axis=2), masks.any(axis=1))


def large_masks(stack: torch.Tensor, grid: MaskGrid | None, min_area: int
                ) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """The masks of a (N, h, w) bool stack (on `grid`, or full resolution when None) covering at
    least `min_area` image pixels, left on the stack's device, with their (n, 4) int32 boxes and
    (n,) int64 areas and the (N,) keep mask, which are all that comes to host (issue #17)."""
    areas, rows, cols = stack_stats(stack, grid.counts if grid is not None else None)
    keep = areas >= min_area
    if grid is not None:  # the image rows and columns each upsampled mask touches
        grid_rows, grid_cols = grid_index(grid, stack.device)
        rows, cols = rows.index_select(1, grid_rows), cols.index_select(1, grid_cols)
    boxes = tight_boxes_tensor(rows[keep], cols[keep])
    return stack[keep], boxes, areas[keep].cpu().numpy(), keep.cpu().numpy()


def is_random_checkpoint(model: Any) -> bool:
    """Whether a loaded Ultralytics model came from random_fastsam_checkpoint (RANDOM_MARKER)."""
    return bool((getattr(model, "ckpt", None) or {}).get(RANDOM_MARKER, False))


def check_predictor_hook() -> None:
    """Raise SfsError unless FastSAMPredictor's PREDICTOR_HOOK takes exactly the parameters the
    grid predictor's override expects (called at load time by the grid modes)."""
    from ultralytics.models.fastsam import FastSAMPredictor

    name, expected = PREDICTOR_HOOK
    hook = getattr(FastSAMPredictor, name, None)
    if not callable(hook):
        raise _ultralytics_error(f"FastSAMPredictor.{name} is missing, and mask_resolution "
                                 f"low/network override it (use mask_resolution full)")
    found = tuple(inspect.signature(hook).parameters)
    if found != expected:
        raise _ultralytics_error(
            f"FastSAMPredictor.{name}({', '.join(found)}) changed, mask_resolution low/network "
            f"override {name}({', '.join(expected)}) (use mask_resolution full)")


_GRID_PREDICTORS: dict[int, type] = {}


def low_res_predictor(factor: int = 1) -> type:
    """FastSAM's predictor with the masks left on a grid over the network input, `factor` times
    the prototype grid (1: the prototypes themselves, no upsampling; 4: the network input).

    Same NMS, same boxes (scaled to the image), same mask logits (bilinear-upsampled by
    `factor`) thresholded at 0 and cropped to the box (by cell centre), as Ultralytics'
    `process_mask`; each Results carries `net_shape`, the letterboxed network input (h, w) the
    MaskGrid is derived from. Checks the hook first (check_predictor_hook), on every call.
    """
    check_predictor_hook()
    if factor not in _GRID_PREDICTORS:
        import torch.nn.functional as F
        from ultralytics.engine.results import Results
        from ultralytics.utils import ops

        class GridFastSAMPredictor(prefiltering_predictor()):  # type: ignore[misc]
            def construct_result(self, pred, img, orig_img, img_path, proto):
                masks = None
                if pred.shape[0]:
                    c, mh, mw = proto.shape
                    logits = (pred[:, 6:] @ proto.float().view(c, -1)).view(-1, mh, mw)
                    if factor > 1:
                        logits = F.interpolate(logits[None], scale_factor=factor, mode="bilinear")[0]
                    ih, iw = img.shape[2:]
                    gh, gw = logits.shape[1:]
                    ratios = pred.new_tensor([gw / iw, gh / ih, gw / iw, gh / ih])
                    # crop by cell centre (i + 0.5 inside the box), which is what the full path's
                    # crop at image resolution amounts to; Ultralytics' crop_mask tests the left
                    # edge, which at 4-8 image pixels per cell shrinks every mask by half a cell
                    masks = ops.crop_mask(logits.gt_(0.0).byte(), pred[:, :4] * ratios - 0.5)
                    keep = masks.amax((-2, -1)) > 0
                    pred, masks = pred[keep], masks[keep]
                pred[:, :4] = ops.scale_boxes(img.shape[2:], pred[:, :4], orig_img.shape)
                result = Results(orig_img, path=img_path, names=self.model.names, boxes=pred[:, :6], masks=masks)
                result.net_shape = tuple(int(v) for v in img.shape[2:])
                return result

        GridFastSAMPredictor.__name__ = GridFastSAMPredictor.__qualname__ = f"GridFastSAMPredictor{factor}"
        _GRID_PREDICTORS[factor] = GridFastSAMPredictor
    return _GRID_PREDICTORS[factor]


def _net_shape(result: Any) -> tuple[int, int]:
    """The network input shape the grid predictor's hook stored; SfsError if it never ran."""
    shape = getattr(result, "net_shape", None)
    if shape is None:
        raise _ultralytics_error(f"FastSAMPredictor.{PREDICTOR_HOOK[0]} was not called, so the "
                                 "masks are not on the grid mask_resolution low/network expects")
    return shape


class Segmenter:
    """Loads FastSAM once and turns RGB frames into Masks on its own CUDA stream."""

    def __init__(self, config: SegmenterConfig = SegmenterConfig()) -> None:
        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        self.half = config.half and self.device.type == "cuda"
        if config.random_weights:
            checkpoint = random_fastsam_checkpoint(config.model)
            log.warning("FastSAM runs with RANDOM weights (%s): masks are meaningless", checkpoint)
        else:
            checkpoint = resolve_fastsam(config.model)
        self.checkpoint = checkpoint
        self.model = _load_checkpoint(checkpoint)
        self._random_weights = config.random_weights or is_random_checkpoint(self.model)
        if self._random_weights and not config.random_weights:
            log.warning("FastSAM checkpoint %s holds RANDOM weights (saved by --random-weights): "
                        "masks are meaningless, outputs are marked random_weights", checkpoint)
        grid = config.mask_resolution != "full"
        self.predictor = (low_res_predictor(GRID_FACTORS[config.mask_resolution]) if grid
                          else prefiltering_predictor())  # core/nms.py: the same NMS, stopped early
        self.exported: Path | None = None  # the exported model run instead (`backend`)
        if config.backend != "torch":
            from sfs_ros.core.backends.fastsam import backend_predictor, exported_fastsam

            self.model, self.exported = exported_fastsam(checkpoint, config, self.device)
            self.predictor = backend_predictor(config.backend, self.predictor, self.exported)
        self.stream = new_stream(self.device)
        stream_profile.install()  # Ultralytics' stage timers wait for this stream, not the device

    @property
    def random_weights(self) -> bool:
        """True when the network is untrained: asked for, or the checkpoint says so (RANDOM_MARKER)."""
        return self._random_weights

    def describe(self) -> dict:
        """The settings in effect and the checkpoint file, for reports and summaries (the
        counterpart of MaskLabeler.describe)."""
        return {**asdict(self.config), "checkpoint": str(self.checkpoint),
                "exported": str(self.exported) if self.exported else None}

    def segment(self, image: np.ndarray) -> Masks:
        """All masks of an RGB image over the image, min_area filtering applied.

        mask_resolution "full": (N, H, W) masks from Ultralytics. "low" / "network": masks on
        the prototype / network-input grid (Masks.from_low_res); areas and boxes are those of the
        nearest-upsampled masks, so min_area applies to the pixel counts the label image shows.
        """
        image = check_rgb_image(image)
        h, w = image.shape[:2]
        cfg = self.config
        low = cfg.mask_resolution != "full"
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        threads = torch.get_num_threads()  # Ultralytics' device setup lowers it to cores - 1
        with on_stream(self.stream), torch.inference_mode(), _restore_threads(threads):
            result = self.model.predict(
                bgr,
                device=self.device,
                imgsz=cfg.imgsz,
                conf=cfg.conf,
                iou=cfg.iou,
                max_det=cfg.max_det,
                retina_masks=cfg.retina_masks,
                half=self.half,
                verbose=False,
                predictor=self.predictor,
            )[0]
            if result.masks is None or len(result.masks) == 0:
                return Masks.empty(h, w)
            # the stack stays a tensor on this device (issue #17: no numpy round trip between
            # stages); areas, the min_area filter and boxes are computed here, on this stream,
            # and only the (N,) / (N, 4) numbers come to host
            data = torch.as_tensor(result.masks.data)
            if low:
                stack = data.bool()
            else:
                if data.shape[-2:] != (h, w):
                    # Without retina masks the prototypes live in the letterboxed network input.
                    from ultralytics.utils.ops import scale_masks

                    data = scale_masks(data[None].float(), (h, w))[0]
                stack = data > 0.5
            scores = result.boxes.conf.float().cpu().numpy().astype(np.float32)
            grid = MaskGrid.letterbox((h, w), _net_shape(result), tuple(stack.shape[1:])) if low else None
            stack, boxes, areas, keep = large_masks(stack, grid, cfg.min_area)
            scores = scores[keep]
        if grid is not None:
            return Masks.from_low_res(stack, grid, boxes, scores, areas)
        return Masks(masks=stack, boxes=boxes, scores=scores, areas=areas)
