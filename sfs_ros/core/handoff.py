"""The torch side of the device-resident hand-off (issue #17): what the stages compute on the
mask stack where the segmenter left it (CPU or CUDA), so that only small results go to host.

`Masks` (core/frame.py) holds the stack as a tensor; `segmenter.large_masks` filters it with
`stack_stats` and `tight_boxes_tensor`, `fusion.fuse` paints it with `paint_tensor`. Every
function here gives exactly what its numpy counterpart gives (MaskGrid.areas / boxes,
frame.tight_boxes, fuse's painting loop); test/test_device_handoff.py holds them to it. Kept out
of core/frame.py and core/fusion.py, which must import without torch (options, launch file).
"""
from __future__ import annotations

import numpy as np
import torch

from sfs_ros.core.frame import UNLABELED, UNLABELED_CLASS, MaskGrid

#: Mask cells one chunk of `stack_stats` converts to float32 at once (64 MiB), bounding memory.
STATS_CHUNK_CELLS = 1 << 24


def stack_stats(stack: torch.Tensor, counts: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(areas (N,) int64, rows touched (N, h) bool, columns touched (N, w) bool) of a (N, h, w)
    bool tensor, on its device. `counts` (MaskGrid.counts: image rows per row, image columns per
    column) weights each cell by the image pixels it stands for; None: one each.

    Chosen for CPU speed (torch's CPU sums of bool over the last axis are ~10x slower than
    numpy's; maxima of uint8 and sums over the middle axis are not): rows and columns touched are
    uint8 maxima; full resolution counts pixels per column (int16 while h < 32768, exact);
    weighted (low-res) row sums are float32 matrix-vector products in chunks, exact (integer
    sums below 2^24, inputs exact even under TF32).
    """
    n, h, w = stack.shape
    cells = stack.view(torch.uint8)
    rows, cols = cells.amax(dim=2) > 0, cells.amax(dim=1) > 0
    if counts is None:  # full resolution: no float copy of the large stack
        per_column = cells.sum(dim=1, dtype=torch.int16 if h < 1 << 15 else torch.int32)
        return per_column.sum(dim=1, dtype=torch.int64), rows, cols
    rc, cc = (torch.from_numpy(np.asarray(c, np.float32)).to(stack.device) for c in counts)
    chunk = max(1, STATS_CHUNK_CELLS // max(1, h * w))
    per_row = torch.cat([stack[start:start + chunk].to(torch.float32) @ cc  # image pixels per row
                         for start in range(0, max(n, 1), chunk)])
    areas = (per_row.to(torch.float64) @ rc.to(torch.float64)).round().to(torch.int64)
    return areas, rows, cols


def tight_boxes_tensor(rows: torch.Tensor, cols: torch.Tensor) -> np.ndarray:
    """`tight_boxes` of bool tensors on any device; only the (N, 4) boxes come to host."""
    rows, cols = rows.to(torch.uint8), cols.to(torch.uint8)  # argmax: first maximum, not on bool
    y0, y1 = rows.argmax(dim=1), rows.shape[1] - rows.flip(1).argmax(dim=1)
    x0, x1 = cols.argmax(dim=1), cols.shape[1] - cols.flip(1).argmax(dim=1)
    return torch.stack([x0, y0, x1, y1], dim=1).cpu().numpy().astype(np.int32)


def grid_index(grid: MaskGrid, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's `rows` and `cols` (low-res cell of each image row / column) on `device`."""
    return (torch.from_numpy(grid.rows).to(device, torch.int64),
            torch.from_numpy(grid.cols).to(device, torch.int64))


def paint_tensor(stack: torch.Tensor, class_ids: np.ndarray, order: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`fusion.fuse`'s painting of a (N, H, W) or low-res (N, h, w) bool tensor in paint `order`,
    on its device: the numpy loop's rule with masked_fill_ (elementwise: no per-mask pixel count
    that would stop the stream, as boolean indexing does on CUDA). Only the painted images come
    to host (a low-res pair is upsampled there, 16x fewer pixels to copy), as int32 (CUDA's
    torch.uint16 support is partial) made uint16 on host. When every mask is labeled the top
    mask is the top labeled mask, so the label image is a lookup of the instance image on host:
    one painting pass and one image copied instead of two."""
    instance = torch.zeros(stack.shape[1:], dtype=torch.int32, device=stack.device)
    for i in order.tolist():
        instance.masked_fill_(stack[i], i + 1)
    labeled = class_ids != UNLABELED_CLASS
    if labeled.all():
        instance_image = instance.cpu().numpy().astype(np.uint16)
        class_of = np.concatenate([[UNLABELED], class_ids]).astype(np.uint16)  # index + 1 -> class
        return class_of[instance_image], instance_image
    label = torch.full_like(instance, UNLABELED)
    for i in order[labeled[order]].tolist():
        label.masked_fill_(stack[i], int(class_ids[i]))
    both = torch.stack([label, instance]).cpu().numpy().astype(np.uint16)
    return both[0], both[1]
