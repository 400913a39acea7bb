"""The shapes that cross every boundary: a Frame goes into the pipeline, a Result comes out.

The node, the evaluator and the CLI all build the same `Frame` and read the same `Result`, so
none of them needs to know how the stages inside work.

Colour-order contract: `Frame.image` is always RGB (H x W x 3, uint8, C-contiguous or not).
Converting from ROS encodings (bgr8, rgba8, mono8 ...) or OpenCV's BGR happens at the edge,
once, in the code that builds the Frame; the core never guesses. (A known SSA bug fed OpenCV's
BGR arrays to a model trained on RGB; labels then silently degrade.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is handled: options/launch read this cheaply
    import torch

#: Label-image value of pixels no named mask covers (mono16). The mono8 variant uses 255.
UNLABELED = 65535
UNLABELED_MONO8 = 255
#: `Labels.class_ids` value of a mask whose best score stayed under the threshold.
UNLABELED_CLASS = -1


class SfsError(Exception):
    """Base of every error the core raises on purpose (bad input, missing weights, bad config)."""


class InvalidImageError(SfsError, ValueError):
    """An input image the core cannot use: empty, wrong dtype, wrong number of channels."""


def check_rgb_image(image: Any) -> np.ndarray:
    """Return `image` if it is a usable RGB frame, else raise InvalidImageError saying why."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f"image must be H x W x 3 (RGB), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image is empty: shape {image.shape}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"image must be uint8, got {image.dtype}")
    return image


@dataclass
class Frame:
    """One camera image plus the caller's bookkeeping, carried through untouched.

    `stamp` is opaque to the core (a ROS Time message, a float, a bag timestamp): it comes back
    in the Result so the caller can stamp its outputs like the input.
    """

    image: np.ndarray
    stamp: Any = None
    frame_id: str = ""
    source: str = ""
    seq: int = 0
    #: Capture time in seconds on the caller's clock (a ROS header stamp as float), or None.
    #: The pipeline orders a camera's frames by it, drops frames older than `max_age` and
    #: reports camera-to-output latency from it.
    time: float | None = None
    #: The caller's own bookkeeping (the evaluator's bag sample), carried through untouched.
    tag: Any = None
    #: Depth of the same scene, (Hd, Wd) float32 metres (0 / NaN / inf = no depth), or None for
    #: 2D only. Needs `intrinsics` (core/geometry.py: the depth image's own pinhole model).
    depth: np.ndarray | None = None
    intrinsics: Any = None


def tight_boxes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, 4) int32 xyxy boxes (x1, y1 exclusive) of non-empty masks, from the image rows
    (N, H) and columns (N, W) each one touches."""
    y0, y1 = rows.argmax(axis=1), rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    x0, x1 = cols.argmax(axis=1), cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int32)


@dataclass(frozen=True)
class MaskGrid:
    """Where the pixels of low-resolution masks lie in the image.

    Per axis, low-res coordinate = image coordinate * scale + offset (continuous coordinates:
    pixel i spans [i, i + 1) in both). Upsampling is nearest neighbour at image pixel centres,
    so every image pixel takes exactly one low-res pixel (`rows`, `cols`), and everything
    computed from the low-res masks here (areas, boxes, crops, pooling) is exact for the
    upsampled masks. FastSAM's grids lie over the letterboxed network input: the prototype
    grid (input / 4, mask_resolution "low") or the input itself ("network").
    """

    image_shape: tuple[int, int]  # (H, W) of the image
    shape: tuple[int, int]  # (h, w) of the low-res masks
    scale: tuple[float, float]  # (sy, sx) low-res pixels per image pixel
    offset: tuple[float, float]  # (oy, ox) low-res coordinate of image coordinate 0

    @classmethod
    def letterbox(cls, image_shape: tuple[int, int], net_shape: tuple[int, int],
                  mask_shape: tuple[int, int]) -> "MaskGrid":
        """The grid of masks over a letterboxed network input (Ultralytics' LetterBox geometry:
        uniform gain, each side rounded, padding split with the top/left rounded down)."""
        (height, width), (net_h, net_w), (h, w) = image_shape, net_shape, mask_shape
        gain = min(net_h / height, net_w / width)
        new_h, new_w = max(round(height * gain), 1), max(round(width * gain), 1)
        pad_y, pad_x = round((net_h - new_h) / 2 - 0.1), round((net_w - new_w) / 2 - 0.1)
        sy, sx = h / net_h, w / net_w  # network pixels -> mask pixels
        return cls((int(height), int(width)), (int(h), int(w)),
                   (new_h / height * sy, new_w / width * sx), (pad_y * sy, pad_x * sx))

    def _index(self, axis: int) -> np.ndarray:
        n, size = self.image_shape[axis], self.shape[axis]
        pos = (np.arange(n) + 0.5) * self.scale[axis] + self.offset[axis]
        return np.clip(np.floor(pos).astype(np.intp), 0, size - 1)

    @cached_property
    def rows(self) -> np.ndarray:
        """(H,) low-res row of each image row."""
        return self._index(0)

    @cached_property
    def cols(self) -> np.ndarray:
        """(W,) low-res column of each image column."""
        return self._index(1)

    def upsample(self, low: np.ndarray) -> np.ndarray:
        """(..., h, w) -> (..., H, W), nearest neighbour."""
        return np.take(np.take(low, self.rows, axis=-2), self.cols, axis=-1)

    def crop(self, low: np.ndarray, box) -> np.ndarray:
        """The upsampled (h, w) array inside the image-pixel box x0, y0, x1, y1 (exclusive)."""
        x0, y0, x1, y1 = (int(v) for v in box)
        return low[self.rows[y0:y1]][:, self.cols[x0:x1]]

    def pooling(self, bins: int, axis: int) -> np.ndarray:
        """(bins, h or w) float64 matrix P with P @ low = the upsampled masks averaged over
        `bins` equal image stretches along `axis`, binned like torch's adaptive average pooling
        (F.interpolate mode="area"). bins=1 without the average gives pixel counts."""
        n, size = self.image_shape[axis], self.shape[axis]
        index = self.rows if axis == 0 else self.cols
        out = np.zeros((bins, size))
        for b in range(bins):
            start, end = (b * n) // bins, -((-(b + 1) * n) // bins)
            out[b] = np.bincount(index[start:end], minlength=size) / (end - start)
        return out

    @cached_property
    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Image rows per low-res row, image columns per low-res column (int64)."""
        h, w = self.shape
        return (np.bincount(self.rows, minlength=h).astype(np.int64),
                np.bincount(self.cols, minlength=w).astype(np.int64))

    def areas(self, low: np.ndarray) -> np.ndarray:
        """(N,) int64 image-pixel areas of the upsampled (N, h, w) bool masks, exact."""
        rc, cc = self.counts
        if len(low) == 0:
            return np.zeros((0,), np.int64)
        return (low.astype(np.int64) @ cc) @ rc

    def boxes(self, low: np.ndarray) -> np.ndarray:
        """(N, 4) int32 tight xyxy image-pixel boxes of the upsampled, non-empty masks."""
        # image rows (N, H) and columns (N, W) each upsampled mask touches
        return tight_boxes(low.any(axis=2)[:, self.rows], low.any(axis=1)[:, self.cols])


class Masks:
    """FastSAM output for one frame: per-mask boolean masks over the image, with xyxy boxes
    (inclusive min, exclusive max, recomputed from the masks themselves), scores and pixel areas.

    Two representations behind one contract. Built with `Masks(masks, boxes, scores, areas)` it
    holds full-resolution (N, H, W) masks. Built with `Masks.from_low_res(low, grid, ...)` it
    holds (N, h, w) masks on a `MaskGrid` (see mask_resolution) and `masks` upsamples them
    (nearest neighbour) on first access, then keeps the result; boxes and areas are those of
    the upsampled masks, exactly, without upsampling. Consumers that can work at low resolution
    read `low_res` and `grid` and never force the full-resolution stack.

    The stack may be a numpy array or a torch tensor on any device (the segmenter hands over a
    tensor on its own device: issue #17's device-resident hand-off). Tensor consumers (labeler,
    fusion) take `stack_tensor(device)`, which never goes through numpy; the numpy forms
    (`low_res`, `masks`) are made on first access with one host copy, counted in `host_copies`.
    Boxes, scores and areas are small and always numpy.
    """

    def __init__(self, masks: np.ndarray | torch.Tensor, boxes: np.ndarray, scores: np.ndarray,
                 areas: np.ndarray) -> None:
        self._full: np.ndarray | None = None  # (N, H, W) bool
        self._low: np.ndarray | None = None  # (N, h, w) bool
        self._tensor: torch.Tensor | None = None  # the held stack (low-res when `grid`) as a tensor
        self.grid: MaskGrid | None = None
        if masks is None or isinstance(masks, np.ndarray):
            self._full = masks
        else:
            self._tensor = masks  # a torch.Tensor
        self.boxes = boxes  # (N, 4) int32 x0, y0, x1, y1
        self.scores = scores  # (N,) float32
        self.areas = areas  # (N,) int64
        self.host_copies = 0  # numpy forms made from the tensor (each one device -> host copy)

    @classmethod
    def from_low_res(cls, low: np.ndarray | torch.Tensor, grid: MaskGrid, boxes: np.ndarray,
                     scores: np.ndarray, areas: np.ndarray) -> "Masks":
        """Masks held at low resolution; boxes and areas in image pixels (see MaskGrid)."""
        if low.ndim != 3 or tuple(low.shape[1:]) != grid.shape:
            raise SfsError(f"low-res masks {tuple(low.shape)} do not match the grid {grid.shape}")
        out = cls(None, boxes, scores, areas)  # type: ignore[arg-type]
        if isinstance(low, np.ndarray):
            out._low = low
        else:
            out._tensor = low
        out.grid = grid
        return out

    def _host(self) -> np.ndarray:
        """The tensor-held stack as numpy: one device -> host copy (free for a CPU tensor)."""
        assert self._tensor is not None
        self.host_copies += 1
        return self._tensor.cpu().numpy()

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool; built from the low-res masks on first use when held at low res."""
        if self._full is None:
            if self.grid is None:
                self._full = self._host()
            else:
                self._full = self.grid.upsample(self.low_res)
        return self._full

    @property
    def low_res(self) -> np.ndarray | None:
        """(N, h, w) bool masks on `grid`, or None when held at full resolution."""
        if self._low is None and self.grid is not None:
            self._low = self._host()
        return self._low

    @property
    def held_on(self) -> torch.device | None:
        """The device the stack is held on as a tensor, or None when it is held as numpy."""
        return None if self._tensor is None else self._tensor.device

    def stack_tensor(self, device: torch.device | None = None) -> torch.Tensor:
        """The held stack, (N, h, w) on `grid` when held at low resolution (`grid` is set) else
        (N, H, W), as a bool tensor on `device` (default: where it is held, or the CPU). Held as
        a tensor it never goes through numpy (a device-to-device copy at most), and a CUDA
        tensor is recorded on the caller's current stream, so the allocator cannot hand its
        memory to the segmenter's stream while another stage's kernels still read it."""
        import torch

        if self._tensor is None:
            held = self._full if self.grid is None else self._low
            return torch.from_numpy(held).to(device or "cpu")
        out = self._tensor if device is None else self._tensor.to(device)
        if out.is_cuda:
            out.record_stream(torch.cuda.current_stream(out.device))
        return out

    @property
    def materialised(self) -> bool:
        """Whether the full-resolution stack exists (always, unless held at low resolution)."""
        return self.grid is None or self._full is not None

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the image the masks cover, without materialising them."""
        if self.grid is not None:
            return self.grid.image_shape
        full = self._full if self._tensor is None else self._tensor
        return tuple(full.shape[1:])  # type: ignore[union-attr,return-value]

    def __len__(self) -> int:
        held = self._tensor if self._tensor is not None else self._full if self.grid is None else self._low
        return int(held.shape[0])  # type: ignore[union-attr]

    def __repr__(self) -> str:
        kind = f"low-res {self.grid.shape}" if self.grid is not None else "full-res"
        where = "" if self._tensor is None else f", tensor on {self._tensor.device}"
        return f"Masks({len(self)} masks over {self.image_shape}, {kind}{where})"

    def subset(self, index: np.ndarray) -> "Masks":
        """The masks picked by an index array (or boolean mask), in that order."""
        boxes, scores, areas = self.boxes[index], self.scores[index], self.areas[index]
        if self._tensor is not None:
            import torch

            picked = self._tensor[torch.as_tensor(index, device=self._tensor.device)]
            out = (Masks(picked, boxes, scores, areas) if self.grid is None
                   else Masks.from_low_res(picked, self.grid, boxes, scores, areas))
        elif self.grid is None:
            return Masks(self._full[index], boxes, scores, areas)
        else:
            out = Masks.from_low_res(self._low[index], self.grid, boxes, scores, areas)
        if self._full is not None:
            out._full = self._full[index]
        return out

    def crop(self, i: int, box=None) -> np.ndarray:
        """Mask i inside `box` (default: its own box) as (y1 - y0, x1 - x0) bool, upsampling
        only that window when held at low resolution. A tensor-held stack copies only that
        window to host (instance records), never the whole stack."""
        x0, y0, x1, y1 = (int(v) for v in (self.boxes[i] if box is None else box))
        if self._full is not None:
            return self._full[i, y0:y1, x0:x1]
        if self._tensor is None:
            return self.grid.crop(self._low[i], (x0, y0, x1, y1))  # type: ignore[union-attr]
        if self.grid is None:
            return self._tensor[i, y0:y1, x0:x1].cpu().numpy()
        rows, cols = self.grid.rows[y0:y1], self.grid.cols[x0:x1]
        if not len(rows) or not len(cols):
            return np.zeros((len(rows), len(cols)), bool)
        r0, c0 = int(rows.min()), int(cols.min())  # the window holding every cell they name
        window = self._tensor[i, r0:int(rows.max()) + 1, c0:int(cols.max()) + 1].cpu().numpy()
        return window[rows - r0][:, cols - c0]

    def sampled(self, stride: int) -> np.ndarray:
        """(N, ~H / stride, ~W / stride) bool: the full-resolution masks at every `stride`-th
        pixel from stride // 2 (the tracker's association grid); a full-res tensor is sampled
        where it lives and only the samples come to host."""
        start = stride // 2
        if self.grid is None and self._tensor is not None and self._full is None:
            return self._tensor[:, start::stride, start::stride].cpu().numpy()
        return self.masks[:, start::stride, start::stride]

    @classmethod
    def empty(cls, height: int, width: int) -> "Masks":
        return cls(
            masks=np.zeros((0, height, width), bool),
            boxes=np.zeros((0, 4), np.int32),
            scores=np.zeros((0,), np.float32),
            areas=np.zeros((0,), np.int64),
        )


@dataclass
class Labels:
    """What the labeler says about each mask of a frame.

    class_ids is UNLABELED_CLASS where the best score stayed below the threshold; topk_ids and
    topk_scores list the best classes first (winner included) whatever the threshold said.
    `background`, when a labeler sets it (the semantic-vote mode), is the class of every pixel
    before masks are painted: pixels no labeled mask covers keep it instead of UNLABELED.
    """

    class_ids: np.ndarray  # (N,) int32
    scores: np.ndarray  # (N,) float32
    topk_ids: np.ndarray  # (N, K) int32
    topk_scores: np.ndarray  # (N, K) float32
    background: np.ndarray | None = None  # (H, W) uint16 class map, or None
    #: (N, D) float32 L2-normalised CLIP image embedding of each mask when the labeler keeps
    #: them (prompts score new texts against them without another image pass), else None.
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @classmethod
    def empty(cls, k: int = 0) -> "Labels":
        return cls(
            class_ids=np.zeros((0,), np.int32),
            scores=np.zeros((0,), np.float32),
            topk_ids=np.zeros((0, k), np.int32),
            topk_scores=np.zeros((0, k), np.float32),
        )


@dataclass
class Result:
    """Everything the pipeline made of one Frame.

    label_image holds class ids (UNLABELED where no named mask covers the pixel),
    instance_image holds 1-based mask indices (0 = no mask), or with a tracker each mask's
    track id (`Tracks.image_values`: wrapped onto 1..65535), overlay is RGB for viewers.
    Each image is None when no output asked for it was computed (the Pipeline's `outputs`):
    the label and instance images come together, from one fusion.
    `random_weights` is True when any model ran untrained: the labels are then meaningless and
    every output built from this Result must say so.
    """

    frame: Frame
    masks: Masks
    labels: Labels
    label_image: np.ndarray | None  # (H, W) uint16
    instance_image: np.ndarray | None  # (H, W) uint16
    overlay: np.ndarray | None  # (H, W, 3) uint8 RGB
    class_names: tuple[str, ...]
    vocabulary_name: str
    random_weights: bool
    #: Which class map the ids use: bumped by the labeler on every vocabulary change, and
    #: carried by LabelInfo and every InstanceArray so consumers can match them.
    vocabulary_version: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    #: Per-mask track ids, ages and smoothing when a tracker ran (core/tracker.py), else None.
    tracks: Any = None
    #: Points and per-instance 3D statistics when the frame had depth (core/geometry.py), else None.
    geometry: Any = None


@dataclass
class InstanceRecord:
    """One mask of a Result as every output describes it (message, bag, JSON)."""

    instance_id: int  # 1-based: mask index + 1, or the track id with a tracker (uint32, unwrapped)
    class_id: int  # UNLABELED_CLASS when unlabeled
    class_name: str  # "" when unlabeled
    score: float  # 0 when unlabeled
    proposals: list[tuple[int, str, float]]  # (class id, name, score), best first
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    area: int
    mask_score: float
    #: Tracking (Result.tracks): frames since birth, frames matched, label from the track's
    #: accumulated evidence. Zero / False without a tracker.
    track_age: int = 0
    track_hits: int = 0
    label_smoothed: bool = False
    #: Index of the mask in Result.masks (-1: instance_id - 1, the untracked numbering).
    index: int = -1
    #: 3D (Result.geometry): centroid and extent (metres, depth optical frame) and the number of
    #: points they come from; zeros and 0 without depth.
    centroid: tuple[float, float, float] = (0.0, 0.0, 0.0)
    extent: tuple[float, float, float] = (0.0, 0.0, 0.0)
    point_count: int = 0

    def mask_crop(self, masks: Masks) -> np.ndarray:
        """The mask inside its box as mono8 (255 inside, 0 outside)."""
        i = self.index if self.index >= 0 else self.instance_id - 1
        return masks.crop(i, self.box).astype(np.uint8) * np.uint8(255)


def instance_records(result: Result) -> list[InstanceRecord]:
    """Per-instance view of a Result, so the node, the evaluator and the CLI describe each mask
    the same way."""
    masks, labels, names = result.masks, result.labels, result.class_names
    records = []
    for i in range(len(masks)):
        class_id = int(labels.class_ids[i])
        labeled = class_id != UNLABELED_CLASS
        records.append(InstanceRecord(
            instance_id=i + 1,
            class_id=class_id,
            class_name=names[class_id] if labeled else "",
            score=float(labels.scores[i]) if labeled else 0.0,
            proposals=[(int(c), names[int(c)], float(s)) for c, s in zip(labels.topk_ids[i], labels.topk_scores[i])],
            box=tuple(int(v) for v in masks.boxes[i]),
            area=int(masks.areas[i]),
            mask_score=float(masks.scores[i]),
            index=i,
        ))
    tracks = result.tracks
    if tracks is not None:  # core/tracker.py Tracks: stable ids, track life, smoothed labels
        for i, record in enumerate(records):
            record.instance_id = int(tracks.ids[i])
            record.track_age, record.track_hits = int(tracks.ages[i]), int(tracks.hits[i])
            record.label_smoothed = bool(tracks.smoothed[i])
    geometry = result.geometry
    if geometry is not None:  # 3D of mask i (core/geometry.py: Geometry, zeros without depth)
        for i, record in enumerate(records):
            record.centroid = tuple(float(v) for v in geometry.centroids[i])
            record.extent = tuple(float(v) for v in geometry.extents[i])
            record.point_count = int(geometry.counts[i])
    return records
